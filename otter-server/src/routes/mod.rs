//! The API's routes, one module per resource; each exposes `router()`.

mod audit;
mod changes;
mod commands;
mod console;
mod events;
mod files;
mod health;
mod jobs;
mod metrics;
mod openapi;
mod preview;
mod projects;
mod prompts;
mod queue;
mod runtime;
mod webhooks;
mod workspace_delete;
mod workspaces;

use axum::Router;
use otter_core::db::PageRequest;
use serde::Deserialize;

use crate::error::AppError;
use crate::state::AppState;

/// Every route of the API (authentication and the other layers are added by [`crate::app`]).
pub(crate) fn v1() -> Router<AppState> {
    Router::new()
        .merge(projects::router())
        .merge(workspaces::router())
        .merge(prompts::router())
        .merge(jobs::router())
        .merge(changes::router())
        .merge(events::router())
        .merge(queue::router())
        .merge(runtime::router())
        .merge(workspace_delete::router())
        .merge(files::router())
        .merge(commands::router())
        .merge(metrics::router())
        .merge(audit::router())
        .merge(webhooks::router())
}

/// Routes that also accept the job token of the job they name (vibe posting its preview URL).
pub(crate) fn job_scoped() -> Router<AppState> {
    preview::router()
}

/// The paths of [`public`].
pub(crate) const PUBLIC_PATHS: [&str; 7] = [
    "/healthz",
    "/openapi.json",
    "/",
    "/jobs/{id}",
    "/workspaces",
    "/workspaces/{id}",
    "/console/{file}",
];

/// Routes outside `/v1` (open even when tokens are required): health, the OpenAPI document and
/// the web console (which holds no data: it calls `/v1` with the token the user gives it).
pub(crate) fn public() -> Router<AppState> {
    health::router()
        .merge(openapi::router())
        .merge(console::router())
}

/// `?limit=&offset=` of a list.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct PageQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

impl PageQuery {
    pub(crate) fn page(&self) -> Result<PageRequest, AppError> {
        page(self.limit, self.offset)
    }
}

/// A bounded page from a query's `limit` and `offset`. Query structs list both fields
/// themselves: `#[serde(flatten)]` loses the types of query-string values.
pub(crate) fn page(limit: Option<i64>, offset: Option<i64>) -> Result<PageRequest, AppError> {
    Ok(PageRequest::new(limit, offset)?)
}

/// `?session_id=` of a list (a vibe session: a conversation): 1 to 200 characters, none a
/// control character (PostgreSQL cannot even compare a NUL).
pub(crate) fn session_filter(session_id: Option<String>) -> Result<Option<String>, AppError> {
    match session_id {
        Some(id)
            if id.is_empty() || id.chars().count() > 200 || id.chars().any(char::is_control) =>
        {
            Err(AppError::Validation(
                "session_id must be 1 to 200 characters, without control characters".to_owned(),
            ))
        }
        other => Ok(other),
    }
}
