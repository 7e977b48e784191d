//! `DELETE /v1/workspaces/{id}`: forget a workspace.
//!
//! [`service::delete_workspace`] does it all: refused (409) while one of its jobs is queued or
//! running, and while it has finished jobs unless `?force=true`, which deletes them with their
//! outputs and events. Otherwise, in this order: its runtime container and image are removed
//! (when the runtime is enabled; an unreachable Docker engine refuses the delete with 503, so
//! that nothing is left running unseen), then its row (with its jobs when forced), then its own
//! `VIBE_HOME`, then its checkpoints. The workspace directory itself is never touched: it is
//! the user's.

use axum::Router;
use axum::extract::State;
use axum::routing::delete;
use otter_core::checkpoint::Checkpoints;
use otter_core::model::WorkspaceId;
use otter_core::runtime::Removed;
use otter_core::service;
use serde::{Deserialize, Serialize};

use crate::error::{AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/workspaces/{id}", delete(delete_workspace))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Delete the workspace's finished jobs (and their events) with it.
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Serialize)]
struct DeletedView {
    workspace_id: WorkspaceId,
    deleted: bool,
    jobs_deleted: u64,
    vibe_home_removed: bool,
    /// What was removed of its runtime; `null` when the runtime is disabled.
    runtime: Option<Removed>,
    /// Whether its checkpoints (what its jobs changed) were removed.
    checkpoints_removed: bool,
}

async fn delete_workspace(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppQuery(q): AppQuery<DeleteQuery>,
) -> Result<AppJson<DeletedView>> {
    let checkpoints = Checkpoints::from_config(&state.config);
    let deleted = service::delete_workspace(
        &state.db,
        state.runtime.as_deref(),
        &checkpoints,
        id,
        q.force,
    )
    .await?;
    Ok(AppJson(DeletedView {
        workspace_id: id,
        deleted: true,
        jobs_deleted: deleted.jobs_deleted,
        vibe_home_removed: deleted.vibe_home_removed,
        runtime: deleted.runtime,
        checkpoints_removed: deleted.checkpoints_removed,
    }))
}
