//! `/v1/projects`: create, list and read projects.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use otter_core::db::{Page, projects};
use otter_core::model::{Project, ProjectId};
use otter_core::service;
use serde::Deserialize;

use super::PageQuery;
use crate::error::{AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/projects", get(list_projects).post(create_project))
        .route("/v1/projects/{id}", get(get_project))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    name: String,
    description: Option<String>,
}

async fn create_project(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateProject>,
) -> Result<(StatusCode, AppJson<Project>)> {
    let project =
        service::create_project(&state.db, &body.name, body.description.as_deref()).await?;
    Ok((StatusCode::CREATED, AppJson(project)))
}

async fn list_projects(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<AppJson<Page<Project>>> {
    Ok(AppJson(projects::list(&state.db, q.page()?).await?))
}

async fn get_project(
    State(state): State<AppState>,
    AppPath(id): AppPath<ProjectId>,
) -> Result<AppJson<Project>> {
    Ok(AppJson(projects::get(&state.db, id).await?))
}
