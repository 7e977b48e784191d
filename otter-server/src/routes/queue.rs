//! `GET /v1/queue`: queued jobs in the order they will be claimed (`?session_id=`: of one vibe
//! session); `PATCH /v1/queue/{id}`
//! `{"priority": n}` moves a queued job.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, patch};
use otter_core::db::{Page, jobs};
use otter_core::model::{Job, JobId};
use otter_core::service;
use serde::{Deserialize, Serialize};

use crate::error::{AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/queue", get(list_queue))
        .route("/v1/queue/{id}", patch(update_queue_entry))
}

#[derive(Debug, Deserialize)]
struct QueueQuery {
    session_id: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// The queue, and the rate limit gates that hold it (a shut gate's jobs wait for it to open).
#[derive(Debug, Serialize)]
struct QueueView {
    #[serde(flatten)]
    page: Page<Job>,
    rate_limits: Vec<jobs::RateLimitGate>,
}

async fn list_queue(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<QueueQuery>,
) -> Result<AppJson<QueueView>> {
    let session_id = super::session_filter(q.session_id)?;
    let page = super::page(q.limit, q.offset)?;
    let (page, rate_limits) = tokio::try_join!(
        jobs::list_queue(&state.db, session_id.as_deref(), page),
        jobs::rate_limit_gates(&state.db),
    )?;
    Ok(AppJson(QueueView { page, rate_limits }))
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
