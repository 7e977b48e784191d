//! # otter-core
//!
//! The library under Otter's server and workers, usable on its own: domain types
//! ([`model`]), configuration ([`config`]), PostgreSQL repositories ([`db`]), the Redis queue
//! ([`queue`]), the live event feed ([`feed`]), the process runner ([`runner`]), vibe's output
//! formats ([`vibe`]), workspace filesystem safety ([`workspace`]) and Otter's instructions to
//! vibe ([`instructions`]). It knows nothing of HTTP.

pub mod config;
pub mod db;
pub mod feed;
pub mod instructions;
pub mod model;
pub mod queue;
pub mod runner;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vibe;
pub mod workspace;

pub use config::{Config, ConfigError, Secret};
pub use db::DbError;
pub use feed::{EventFeed, StreamItem};
pub use queue::{Queue, QueueError};

/// Otter's migrations (the `migrations/` folder at the repository root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
