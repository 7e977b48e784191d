//! # otter-server
//!
//! Otter's HTTP API over `otter-core`: projects, workspaces, prompts, jobs, the queue, history
//! and the SSE event stream. [`app`] builds the router (used by `main` and the tests), [`serve`]
//! runs it until shutdown.

mod audit;
mod connections;
mod error;
mod idempotency;
mod routes;
mod startup;
mod state;

pub use error::AppError;
pub use startup::{StartupError, app, build_state, serve, serve_on};
pub use state::AppState;
