//! `GET /v1/queue`: queued jobs in the order they will be claimed.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use otter_core::db::{Page, jobs};
use otter_core::model::Job;

use super::PageQuery;
use crate::error::{AppJson, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/queue", get(list_queue))
}

async fn list_queue(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<AppJson<Page<Job>>> {
    Ok(AppJson(jobs::list_queue(&state.db, q.page()?).await?))
}
