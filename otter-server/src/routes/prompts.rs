//! `POST /v1/prompts`: submit a prompt (a follow-up of a job with `parent_job_id`, with
//! `limits` and a `model`); answers 201 with the queued job.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use otter_core::model::{Job, JobId, JobLimits, WorkspaceId};
use otter_core::service::{self, SubmitPrompt};
use serde::Deserialize;

use crate::error::{AppJson, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/prompts", post(create_prompt))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePrompt {
    prompt: String,
    workspace_id: Option<WorkspaceId>,
    priority: Option<i32>,
    max_attempts: Option<i32>,
    /// A follow-up of this job, in its vibe session.
    parent_job_id: Option<JobId>,
    #[serde(default)]
    limits: JobLimits,
    model: Option<String>,
}

async fn create_prompt(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreatePrompt>,
) -> Result<(StatusCode, AppJson<Job>)> {
    let job = service::submit_prompt(
        &state.db,
        &state.queue,
        &state.config,
        SubmitPrompt {
            prompt: &body.prompt,
            workspace_id: body.workspace_id,
            priority: body.priority,
            max_attempts: body.max_attempts,
            parent_job_id: body.parent_job_id,
            limits: body.limits,
            model: body.model.as_deref(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, AppJson(job)))
}
