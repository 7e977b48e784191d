//! `/v1/jobs`: list jobs of any status; `/v1/jobs/{id}`: read a job, its stored events, pause,
//! resume and cancel it; and `/v1/history` (finished jobs).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use otter_core::db::Page;
use otter_core::db::events::{self, EventFilter, RawEvent};
use otter_core::db::jobs::{self, HistoryFilter, JobFilter};
use otter_core::model::{Job, JobId, JobStatus, ProjectId, WorkspaceId};
use otter_core::service;
use serde::Deserialize;

use crate::error::{AppError, AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/events", get(list_job_events))
        .route("/v1/jobs/{id}/pause", post(pause_job))
        .route("/v1/jobs/{id}/resume", post(resume_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/history", get(list_history))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    /// One status, or several separated by commas (`queued,running`).
    status: Option<String>,
    workspace_id: Option<WorkspaceId>,
    project_id: Option<ProjectId>,
    session_id: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Jobs of any status, newest first: what a console lists as running and queued work.
async fn list_jobs(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<JobsQuery>,
) -> Result<AppJson<Page<Job>>> {
    let mut statuses = Vec::new();
    for name in q.status.as_deref().unwrap_or_default().split(',') {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let status = JobStatus::parse(name).ok_or_else(|| {
            AppError::Validation(format!(
                "status must be queued, running, succeeded, failed or cancelled, or several \
                 of them separated by commas (got {name:?})"
            ))
        })?;
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    let filter = JobFilter {
        statuses,
        workspace_id: q.workspace_id,
        project_id: q.project_id,
        session_id: super::session_filter(q.session_id)?,
    };
    Ok(AppJson(
        jobs::list_jobs(&state.db, &filter, super::page(q.limit, q.offset)?).await?,
    ))
}

async fn get_job(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
) -> Result<AppJson<Job>> {
    Ok(AppJson(jobs::get(&state.db, id).await?))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Only events with an id above this.
    after: Option<i64>,
    /// At most this many (1..=1000, default 1000).
    limit: Option<i64>,
}

/// Largest page of events, by count (by bytes: `OTTER_EVENT_PAGE_MAX_BYTES`).
const MAX_EVENTS: i64 = 1000;

/// A page of a job's events.
#[derive(Debug, serde::Serialize)]
struct EventsPage {
    /// Oldest first.
    items: Vec<RawEvent>,
    /// All of the job's events, whatever `after` is.
    total: i64,
    /// The page stopped at its byte cap before `limit`: more events follow.
    truncated: bool,
}

async fn list_job_events(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
    AppQuery(q): AppQuery<EventsQuery>,
) -> Result<AppJson<EventsPage>> {
    let limit = q.limit.unwrap_or(MAX_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(AppError::Validation(format!(
            "limit must be between 1 and {MAX_EVENTS}"
        )));
    }
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(AppError::Validation(
            "after must not be negative".to_owned(),
        ));
    }
    // 404 for an unknown job rather than an empty list.
    jobs::get(&state.db, id).await?;
    let filter = EventFilter {
        job_id: Some(id),
        ..Default::default()
    };
    let max_bytes = state.config.event_page_max_bytes;
    let page = events::page_after(&state.db, &filter, after, limit, max_bytes).await?;
    let total = events::count_for_job(&state.db, id).await?;
    Ok(AppJson(EventsPage {
        items: page.events,
        total,
        truncated: page.truncated,
    }))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    status: Option<String>,
    workspace_id: Option<WorkspaceId>,
    session_id: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list_history(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<HistoryQuery>,
) -> Result<AppJson<Page<Job>>> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => match JobStatus::parse(s) {
            Some(st) if st.is_terminal() => Some(st),
            _ => {
                return Err(AppError::Validation(format!(
                    "status must be one of succeeded, failed, cancelled (got {s:?})"
                )));
            }
        },
    };
    let filter = HistoryFilter {
        status,
        workspace_id: q.workspace_id,
        session_id: super::session_filter(q.session_id)?,
    };
    Ok(AppJson(
        jobs::list_history(&state.db, filter, super::page(q.limit, q.offset)?).await?,
    ))
}

async fn pause_job(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
) -> Result<AppJson<Job>> {
    Ok(AppJson(
        service::pause_job(&state.db, &state.queue, id).await?,
    ))
}

async fn resume_job(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
) -> Result<AppJson<Job>> {
    Ok(AppJson(
        service::resume_job(&state.db, &state.queue, id).await?,
    ))
}

/// 200 with the cancelled job, or 202 while the worker of a running job stops it.
async fn cancel_job(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
) -> Result<(StatusCode, AppJson<Job>)> {
    let job = service::cancel_job(&state.db, &state.queue, id).await?;
    let status = if job.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, AppJson(job)))
}
