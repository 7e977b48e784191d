//! `GET /healthz`: whether PostgreSQL and Redis answer. 200 when both do, 503 otherwise.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(get_health))
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn get_health(State(state): State<AppState>) -> impl IntoResponse {
    let (postgres, redis) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, otter_core::db::ping(&state.db)),
        tokio::time::timeout(CHECK_TIMEOUT, state.queue.ping()),
    );
    let postgres = match postgres {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let redis = match redis {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let healthy = postgres == "ok" && redis == "ok";
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if healthy { "ok" } else { "degraded" },
            "postgres": postgres,
            "redis": redis,
            "version": env!("CARGO_PKG_VERSION"),
        })),
    )
}
