//! `/v1/projects`: create, list and read projects.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use otter_core::db::{Page, projects};
use otter_core::model::{Project, ProjectId};
use serde::Deserialize;

use super::PageQuery;
use crate::error::{AppError, AppJson, AppPath, AppQuery, Result};
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
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::Validation(
            "name must be 1 to 200 characters".to_owned(),
        ));
    }
    if body.description.as_ref().is_some_and(|d| d.len() > 10_000) {
        return Err(AppError::Validation(
            "description must be at most 10000 characters".to_owned(),
        ));
    }
    let project = projects::insert(&state.db, name, body.description.as_deref()).await?;
    tracing::info!(project_id = %project.id, "project created");
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
