//! `/v1/workspaces`: register, list and read workspaces.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use otter_core::db::{Page, workspaces};
use otter_core::model::{ProjectId, Workspace, WorkspaceId};
use otter_core::service::{self, CreateWorkspace};
use serde::Deserialize;

use crate::error::{AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/workspaces",
            get(list_workspaces).post(create_workspace),
        )
        .route("/v1/workspaces/{id}", get(get_workspace))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWorkspaceBody {
    project_id: Option<ProjectId>,
    name: Option<String>,
    path: String,
    /// Create the directory when missing (default false).
    #[serde(default)]
    create: bool,
}

async fn create_workspace(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateWorkspaceBody>,
) -> Result<(StatusCode, AppJson<Workspace>)> {
    let workspace = service::create_workspace(
        &state.db,
        &state.config,
        CreateWorkspace {
            project_id: body.project_id,
            name: body.name.as_deref(),
            path: &body.path,
            create: body.create,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, AppJson(workspace)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    project_id: Option<ProjectId>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list_workspaces(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<AppJson<Page<Workspace>>> {
    Ok(AppJson(
        workspaces::list(&state.db, q.project_id, super::page(q.limit, q.offset)?).await?,
    ))
}

async fn get_workspace(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
) -> Result<AppJson<Workspace>> {
    Ok(AppJson(workspaces::get(&state.db, id).await?))
}
