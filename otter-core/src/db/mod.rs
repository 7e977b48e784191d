//! PostgreSQL repositories. PostgreSQL is the source of truth for every job's state; each state
//! change is one transaction that also writes its event (DESIGN.md §3).
//!
//! Queries are runtime-checked (`sqlx::query_as`) rather than compile-time checked macros, so that
//! building Otter never needs a live database or a prepared `.sqlx/` cache.

pub mod audit;
pub mod checkpoints;
pub mod events;
pub mod idempotency;
pub mod jobs;
pub mod projects;
pub mod retention;
pub mod shell_sessions;
pub mod webhooks;
pub mod workers;
pub mod workspaces;

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;
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
    /// Whether the database could not be reached or went away: no connection to be had, a
    /// broken socket, or PostgreSQL closing the connection (shutting down, restarting, a backend
    /// terminated: SQLSTATE classes 08 and 57P). The same request can succeed a moment later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Sqlx(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => true,
            DbError::Sqlx(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        }
    }

    /// Whether the error is a violation of the named constraint.
    pub fn is_constraint(&self, name: &str) -> bool {
        match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => e.constraint() == Some(name),
            _ => false,
        }
    }
}

/// `text` as PostgreSQL can store it. The one character it cannot hold, NUL, neither in
/// `text` nor in `jsonb` (as `\u0000`), becomes U+FFFD, as an invalid byte does when output is
/// decoded: a vibe line, an error or an export holding one is stored, where the write would
/// otherwise fail on every retry and hold the run. The API refuses NUL in what clients send.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `value` as PostgreSQL can store it: [`storable`] applied to every string and key.
pub fn storable_json(value: &Value) -> Cow<'_, Value> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn scrub(value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(storable(&s).into_owned()),
            Value::Array(items) => Value::Array(items.into_iter().map(scrub).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (storable(&k).into_owned(), scrub(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    if has_nul(value) {
        Cow::Owned(scrub(value.clone()))
    } else {
        Cow::Borrowed(value)
    }
}

/// Runs the read `op` until it succeeds, for at most `within`, waiting 100 ms, 200 ms, … (at
/// most 2 s) between tries. For reads that must not fail on a blip (a connection cut, a database
/// restarting) because their caller already holds something: the read-back of a committed claim,
/// the workspace of a run. `NotFound` and `Conflict` are answers, not blips: returned at once.
pub async fn retry_read<T, F, Fut>(within: Duration, mut op: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e @ (DbError::Sqlx(_) | DbError::Migrate(_)))
                if tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database read failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// How long a pooled connection may sit unused before it is checked (one round trip) when it is
/// taken again. sqlx checks every connection on every acquire by default: one more round trip
/// per statement, which PostgreSQL's backend and the caller both pay. A connection in steady use
/// has just answered; one idle for longer may have been cut (PostgreSQL restarted) and is
/// checked, and a broken one is replaced before the caller sees it.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The pool settings of every Otter process: at most `max_connections`, waiting at most 10 s for
/// one, connections checked when idle for [`CHECK_IDLE_AFTER`].
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Opens a pool on `OTTER_DATABASE_URL`; fails fast (within `acquire_timeout`) when the database
/// cannot be reached, with an error that says so.
pub async fn connect(config: &Config) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = config.database_url.expose().parse()?;
    let pool = pool_options(config.db_max_connections)
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
    pub fn new(limit: Option<i64>, offset: Option<i64>) -> Result<Self, PageError> {
        let limit = limit.unwrap_or(50);
        let offset = offset.unwrap_or(0);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(PageError::Limit);
        }
        if offset < 0 {
            return Err(PageError::NegativeOffset);
        }
        Ok(Self { limit, offset })
    }
}

/// Why [`PageRequest::new`] refused a `limit` or an `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `limit` is not within 1..=[`PageRequest::MAX_LIMIT`].
    #[error("limit must be between 1 and {}", PageRequest::MAX_LIMIT)]
    Limit,
    /// `offset` is below 0.
    #[error("offset must not be negative")]
    NegativeOffset,
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_read_is_retried_through_a_blip_but_not_past_an_answer_or_its_time() {
        let tries = AtomicU32::new(0);
        let got = retry_read(Duration::from_secs(10), || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(DbError::Sqlx(sqlx::Error::PoolTimedOut)),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        let tries = AtomicU32::new(0);
        let got: Result<(), _> = retry_read(Duration::from_secs(10), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(DbError::NotFound("workspace"))
        })
        .await;
        assert!(matches!(got, Err(DbError::NotFound(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 1, "an answer is not retried");

        let tries = AtomicU32::new(0);
        let got: Result<(), _> = retry_read(Duration::from_millis(250), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(DbError::Sqlx(sqlx::Error::PoolTimedOut))
        })
        .await;
        assert!(matches!(got, Err(DbError::Sqlx(_))));
        assert_eq!(
            tries.load(Ordering::SeqCst),
            2,
            "tries at 0 and 100 ms; the next (300 ms) is past 250 ms"
        );
    }
}
