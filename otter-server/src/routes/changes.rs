//! What a job changed, and undo: `GET /v1/jobs/{id}/changes` (the changed paths),
//! `GET /v1/jobs/{id}/diff` (a unified diff, `text/x-diff`) and `POST /v1/jobs/{id}/restore`
//! (`{"to": "before"|"after"}`). The work is [`service::job_changes`], [`service::job_diff`] and
//! [`service::restore_job`]'s; a job with no checkpoints (it never ran) is a 409.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use otter_core::checkpoint::{Change, Checkpoints};
use otter_core::model::JobId;
use otter_core::service::{self, RestoreReport, RestoreTo};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/changes", get(list_changes))
        .route("/v1/jobs/{id}/diff", get(get_diff))
        .route("/v1/jobs/{id}/restore", post(restore))
}

#[derive(Debug, Serialize)]
struct ChangesView {
    items: Vec<Change>,
    total: usize,
}

async fn list_changes(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
) -> Result<AppJson<ChangesView>> {
    let store = Checkpoints::from_config(&state.config);
    let items = service::job_changes(&state.db, &store, id).await?;
    Ok(AppJson(ChangesView {
        total: items.len(),
        items,
    }))
}

/// The diff's size when `max_bytes` is not given.
const DEFAULT_DIFF_BYTES: usize = 1024 * 1024;

/// The largest `max_bytes` accepted.
const MAX_DIFF_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    /// Only this path's diff.
    path: Option<String>,
    /// Cut the diff after this many bytes (default 1 MiB, at most 16 MiB).
    max_bytes: Option<usize>,
}

async fn get_diff(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
    AppQuery(q): AppQuery<DiffQuery>,
) -> Result<impl IntoResponse> {
    let max_bytes = q.max_bytes.unwrap_or(DEFAULT_DIFF_BYTES);
    if !(1..=MAX_DIFF_BYTES).contains(&max_bytes) {
        return Err(AppError::Validation(format!(
            "max_bytes must be between 1 and {MAX_DIFF_BYTES}"
        )));
    }
    let store = Checkpoints::from_config(&state.config);
    let diff = service::job_diff(&state.db, &store, id, q.path.as_deref(), max_bytes).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/x-diff; charset=utf-8".to_owned(),
            ),
            (
                header::HeaderName::from_static("x-otter-diff-truncated"),
                diff.truncated.to_string(),
            ),
        ],
        diff.text,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    /// `before` or `after`; any JSON value is taken here, so that a wrong one is refused with
    /// a message that names the field.
    to: serde_json::Value,
}

async fn restore(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
    AppJson(body): AppJson<RestoreBody>,
) -> Result<AppJson<RestoreReport>> {
    let to = match &body.to {
        serde_json::Value::String(to) => RestoreTo::parse(to)?,
        other => RestoreTo::parse(&other.to_string())?,
    };
    let store = Checkpoints::from_config(&state.config);
    let report = service::restore_job(
        &state.db,
        &state.queue,
        &state.config,
        state.isolation.clone(),
        &store,
        id,
        to,
    )
    .await?;
    Ok(AppJson(report))
}
