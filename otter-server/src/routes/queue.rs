//! `GET /v1/queue`: queued jobs in the order they will be claimed; `PATCH /v1/queue/{id}`
//! `{"priority": n}` moves a queued job.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, patch};
use otter_core::db::{Page, jobs};
use otter_core::model::{Job, JobId};
use otter_core::service;
use serde::Deserialize;

use super::PageQuery;
use crate::error::{AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/queue", get(list_queue))
        .route("/v1/queue/{id}", patch(update_queue_entry))
}

async fn list_queue(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<AppJson<Page<Job>>> {
    Ok(AppJson(jobs::list_queue(&state.db, q.page()?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueUpdate {
    priority: i32,
}

async fn update_queue_entry(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
    AppJson(body): AppJson<QueueUpdate>,
) -> Result<AppJson<Job>> {
    Ok(AppJson(
        service::reprioritize_job(&state.db, &state.queue, id, body.priority).await?,
    ))
}
