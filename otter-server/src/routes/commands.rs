//! `POST /v1/workspaces/{id}/command` and `POST /v1/workspaces/command`: run a shell command in
//! a workspace, optionally continuing a shell session whose `cd` persists
//! (`otter_core::shell` runs it; this module maps HTTP to it).

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use otter_core::db::shell_sessions::ShellSessionId;
use otter_core::db::workspaces;
use otter_core::model::WorkspaceId;
use otter_core::service;
use otter_core::shell::{self, CommandRequest, CommandResult};
use serde::Deserialize;

use crate::error::{AppJson, AppPath, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{id}/command", post(command_in_workspace))
        .route("/v1/workspaces/command", post(command))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    command: String,
    shell_session_id: Option<ShellSessionId>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandAnywhereBody {
    /// The workspace; the default one (`OTTER_DEFAULT_WORKSPACE_PATH`) when absent.
    workspace_id: Option<WorkspaceId>,
    command: String,
    shell_session_id: Option<ShellSessionId>,
    timeout_secs: Option<u64>,
}

async fn command_in_workspace(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppJson(body): AppJson<CommandBody>,
) -> Result<AppJson<CommandResult>> {
    let workspace = workspaces::get(&state.db, id).await?;
    run(&state, &workspace, body).await
}

async fn command(
    State(state): State<AppState>,
    AppJson(body): AppJson<CommandAnywhereBody>,
) -> Result<AppJson<CommandResult>> {
    let workspace = service::resolve_workspace(&state.db, &state.config, body.workspace_id).await?;
    let body = CommandBody {
        command: body.command,
        shell_session_id: body.shell_session_id,
        timeout_secs: body.timeout_secs,
    };
    run(&state, &workspace, body).await
}

async fn run(
    state: &AppState,
    workspace: &otter_core::model::Workspace,
    body: CommandBody,
) -> Result<AppJson<CommandResult>> {
    let req = CommandRequest {
        command: body.command,
        shell_session_id: body.shell_session_id,
        timeout_secs: body.timeout_secs,
    };
    let result = shell::run_command(
        &state.db,
        &state.config,
        &state.isolation,
        workspace,
        req,
        &state.shutdown,
    )
    .await?;
    Ok(AppJson(result))
}
