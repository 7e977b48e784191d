//! `POST /v1/jobs/{id}/preview-url` `{"preview_url": "http://host:port"}`: where the app a job
//! built can be seen. Allowed in any job state (vibe posts it while running, an operator may
//! post it later); stored on the job with a `preview_url_set` event.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use otter_core::model::{Job, JobId};
use otter_core::preview::{self, PreviewUrl};
use serde::Deserialize;

use crate::error::{AppJson, AppPath, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/jobs/{id}/preview-url", post(set_preview_url))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    preview_url: String,
}

async fn set_preview_url(
    State(state): State<AppState>,
    AppPath(id): AppPath<JobId>,
    AppJson(body): AppJson<PreviewBody>,
) -> Result<AppJson<Job>> {
    let url = PreviewUrl::parse(&body.preview_url)?;
    let job = preview::set_preview_url(&state.db, id, &url).await?;
    tracing::info!(job_id = %id, preview_url = url.as_str(), "preview URL set");
    Ok(AppJson(job))
}
