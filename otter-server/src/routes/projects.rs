//! `/v1/projects`: create, list, read projects and change their budget and running jobs'
//! limit; what a project's jobs cost (`/v1/projects/{id}/usage`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use otter_core::db::{Page, projects};
use otter_core::model::{Project, ProjectId, ProjectUsage};
use otter_core::service::{self, ProjectChange, ProjectSettings};
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
    max_running: Option<i64>,
}

/// Each field present sets its value (`null` removes it); an absent one is left as it is. At
/// least one is needed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateProject {
    #[serde(default, deserialize_with = "present")]
    budget_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    max_running: Option<Option<i64>>,
}

/// A field that is present, `null` allowed: `Some(None)` (serde, with `default`, leaves an
/// absent one `None`).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

async fn create_project(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateProject>,
) -> Result<(StatusCode, AppJson<Project>)> {
    let project = service::create_project(
        &state.db,
        &body.name,
        body.description.as_deref(),
        ProjectSettings {
            budget_usd: body.budget_usd,
            max_running: body.max_running,
        },
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
    let change = ProjectChange {
        budget_usd: body.budget_usd,
        max_running: body.max_running,
    };
    Ok(AppJson(
        service::update_project(&state.db, id, change).await?,
    ))
}

async fn get_project_usage(
    State(state): State<AppState>,
    AppPath(id): AppPath<ProjectId>,
) -> Result<AppJson<ProjectUsage>> {
    Ok(AppJson(projects::usage(&state.db, id).await?))
}
