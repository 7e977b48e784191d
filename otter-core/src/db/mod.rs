//! PostgreSQL repositories. PostgreSQL is the source of truth for every job's state; each state
//! change is one transaction that also writes its event (DESIGN.md §3).
//!
//! Queries are runtime-checked (`sqlx::query_as`) rather than compile-time checked macros, so that
//! building Otter never needs a live database or a prepared `.sqlx/` cache.

pub mod events;
pub mod jobs;
pub mod projects;
pub mod shell_sessions;
pub mod workers;
pub mod workspaces;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Config;

/// Errors of the repositories.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with the current state (a unique key, a state transition).
    #[error("{0}")]
    Conflict(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// Whether the error is a violation of the named constraint.
    pub fn is_constraint(&self, name: &str) -> bool {
        match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => e.constraint() == Some(name),
            _ => false,
        }
    }
}

/// Opens a pool on `OTTER_DATABASE_URL`; fails fast (within `acquire_timeout`) when the database
/// cannot be reached, with an error that says so.
pub async fn connect(config: &Config) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = config.database_url.expose().parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Applies the migrations under `migrations/` (idempotent; concurrent callers are serialised by
/// sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    crate::MIGRATOR.run(pool).await?;
    events::rebase_ids(pool).await?;
    Ok(())
}

/// Whether PostgreSQL answers.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// A page of a list: the rows and the total count of rows matching the filter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Rows matching the filter, over all pages.
    pub total: i64,
}

/// `limit`/`offset` of a list request, already bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows per page (1..=500).
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

impl PageRequest {
    /// Largest page a client may ask for.
    pub const MAX_LIMIT: i64 = 500;

    /// A page request; `None` where the client gave no value.
    pub fn new(limit: Option<i64>, offset: Option<i64>) -> Result<Self, String> {
        let limit = limit.unwrap_or(50);
        let offset = offset.unwrap_or(0);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(format!("limit must be between 1 and {}", Self::MAX_LIMIT));
        }
        if offset < 0 {
            return Err("offset must not be negative".to_owned());
        }
        Ok(Self { limit, offset })
    }
}
