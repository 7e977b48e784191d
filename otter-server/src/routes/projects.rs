//! `/v1/projects`: create, list, read projects and set their budget; what a project's jobs
//! cost (`/v1/projects/{id}/usage`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use otter_core::db::{Page, projects};
use otter_core::model::{Project, ProjectId, ProjectUsage};
use otter_core::service;
use serde::Deserialize;

use super::PageQuery;
use crate::error::{AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/projects", get(list_projects).post(create_project))
        .route("/v1/projects/{id}", get(get_project).patch(update_project))
        .route("/v1/projects/{id}/usage", get(get_project_usage))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    name: String,
    description: Option<String>,
    budget_usd: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateProject {
    /// Required: a number sets the budget, `null` removes it.
    #[serde(deserialize_with = "present")]
    budget_usd: Option<f64>,
}

/// A field that must be present, `null` allowed (serde treats a missing `Option` as `None`
/// unless it has a `deserialize_with`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    Option::<f64>::deserialize(d)
}

async fn create_project(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateProject>,
) -> Result<(StatusCode, AppJson<Project>)> {
    let project = service::create_project(
        &state.db,
        &body.name,
        body.description.as_deref(),
        body.budget_usd,
    )
    .await?;
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

async fn update_project(
    State(state): State<AppState>,
    AppPath(id): AppPath<ProjectId>,
    AppJson(body): AppJson<UpdateProject>,
) -> Result<AppJson<Project>> {
    Ok(AppJson(
        service::set_project_budget(&state.db, id, body.budget_usd).await?,
    ))
}

async fn get_project_usage(
    State(state): State<AppState>,
    AppPath(id): AppPath<ProjectId>,
) -> Result<AppJson<ProjectUsage>> {
    Ok(AppJson(projects::usage(&state.db, id).await?))
}
