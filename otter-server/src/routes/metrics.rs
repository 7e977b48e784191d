//! `GET /metrics`: Prometheus text format (queue depth, paused and running jobs, outcomes and
//! durations, events written, SSE clients, worker heartbeats). Needs a token when
//! `OTTER_API_TOKENS` is set, like the API (Prometheus sends one with `authorization`).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::Result;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(get_metrics))
}

async fn get_metrics(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let snapshot = otter_core::metrics::snapshot(&state.db).await?;
    let body = otter_core::metrics::render(&snapshot, state.feed.subscribers());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}
