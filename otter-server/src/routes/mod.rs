//! The API's routes, one module per resource; each exposes `router()`.

mod events;
mod health;
mod jobs;
mod projects;
mod prompts;
mod queue;
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
        .merge(events::router())
        .merge(queue::router())
}

/// Routes outside `/v1` (open even when tokens are required).
pub(crate) fn public() -> Router<AppState> {
    health::router()
}

/// `?limit=&offset=` of a list.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct PageQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

impl PageQuery {
    pub(crate) fn page(&self) -> Result<PageRequest, AppError> {
        PageRequest::new(self.limit, self.offset).map_err(AppError::Validation)
    }
}
