//! The `shell_sessions` table: where the next command of a shell session starts (the persistent
//! `cd` of the command endpoints), kept in PostgreSQL so that any server replica can continue a
//! session.
//!
//! A session runs one command at a time. Taking it for a command is a conditional update that
//! sets a hold (`busy_token`, `busy_until`); a second command while the hold stands is refused,
//! and a hold whose server died lapses at `busy_until` by itself.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::DbError;
use crate::model::WorkspaceId;

/// Identifies a shell session.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ShellSessionId(pub Uuid);

impl ShellSessionId {
    /// A new random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for ShellSessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for ShellSessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A shell session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ShellSession {
    /// The session's id.
    pub id: ShellSessionId,
    /// The workspace its commands run in.
    pub workspace_id: WorkspaceId,
    /// Canonical absolute directory the next command starts in (inside the workspace).
    pub cwd: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When a command last used it.
    pub last_used_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, workspace_id, cwd, created_at, last_used_at";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Creates a session of `workspace_id` starting in `cwd`, already held by `holder` for `hold`.
#[tracing::instrument(skip_all, fields(workspace_id = %workspace_id), err(level = "debug"))]
pub async fn create_held(
    pool: &PgPool,
    workspace_id: WorkspaceId,
    cwd: &str,
    holder: Uuid,
    hold: Duration,
) -> Result<ShellSession, DbError> {
    let result = sqlx::query_as::<_, ShellSession>(&format!(
        "INSERT INTO shell_sessions (id, workspace_id, cwd, busy_token, busy_until)
         VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond')
         RETURNING {COLUMNS}"
    ))
    .bind(ShellSessionId::new())
    .bind(workspace_id)
    .bind(cwd)
    .bind(holder)
    .bind(millis(hold))
    .fetch_one(pool)
    .await;
    match result.map_err(DbError::from) {
        Err(e) if e.is_constraint("shell_sessions_workspace_id_fkey") => {
            Err(DbError::NotFound("workspace"))
        }
        other => other,
    }
}

/// Takes session `id` of `workspace_id` for one command: held by `holder` for `hold`. A session
/// of another workspace, or one running a command, is a conflict; an unknown one is not found.
#[tracing::instrument(skip_all, fields(shell_session_id = %id), err(level = "debug"))]
pub async fn acquire(
    pool: &PgPool,
    id: ShellSessionId,
    workspace_id: WorkspaceId,
    holder: Uuid,
    hold: Duration,
) -> Result<ShellSession, DbError> {
    let taken = sqlx::query_as::<_, ShellSession>(&format!(
        "UPDATE shell_sessions
            SET busy_token = $3, busy_until = now() + $4 * interval '1 millisecond', last_used_at = now()
          WHERE id = $1 AND workspace_id = $2 AND (busy_token IS NULL OR busy_until < now())
          RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(workspace_id)
    .bind(holder)
    .bind(millis(hold))
    .fetch_optional(pool)
    .await?;
    if let Some(session) = taken {
        return Ok(session);
    }
    let found: Option<(WorkspaceId,)> =
        sqlx::query_as("SELECT workspace_id FROM shell_sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    match found {
        None => Err(DbError::NotFound("shell session")),
        Some((owner,)) if owner != workspace_id => Err(DbError::Conflict(format!(
            "shell session {id} belongs to another workspace ({owner})"
        ))),
        Some(_) => Err(DbError::Conflict(format!(
            "shell session {id} is running another command; wait for it to finish"
        ))),
    }
}

/// Ends `holder`'s hold on session `id`, storing the directory the next command starts in.
/// `Ok(false)` means the hold had lapsed and another command took the session: nothing changed.
#[tracing::instrument(skip_all, fields(shell_session_id = %id), err)]
pub async fn release(
    pool: &PgPool,
    id: ShellSessionId,
    holder: Uuid,
    cwd: &str,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE shell_sessions SET cwd = $3, busy_token = NULL, busy_until = NULL, last_used_at = now()
          WHERE id = $1 AND busy_token = $2",
    )
    .bind(id)
    .bind(holder)
    .bind(cwd)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends `holder`'s hold on session `id` without changing its directory: its command's server
/// died, and the next command should not have to wait for the hold to lapse. `Ok(false)`: the
/// hold was gone already.
#[tracing::instrument(skip_all, fields(shell_session_id = %id), err)]
pub async fn abandon(pool: &PgPool, id: ShellSessionId, holder: Uuid) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE shell_sessions SET busy_token = NULL, busy_until = NULL
          WHERE id = $1 AND busy_token = $2",
    )
    .bind(id)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One session.
pub async fn get(pool: &PgPool, id: ShellSessionId) -> Result<ShellSession, DbError> {
    sqlx::query_as::<_, ShellSession>(&format!(
        "SELECT {COLUMNS} FROM shell_sessions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(DbError::NotFound("shell session"))
}

/// Deletes the sessions of `workspace_id` that no command used for `idle` and that are not
/// running one. Returns how many went.
pub async fn prune(
    pool: &PgPool,
    workspace_id: WorkspaceId,
    idle: Duration,
) -> Result<u64, DbError> {
    let done = sqlx::query(
        "DELETE FROM shell_sessions
          WHERE workspace_id = $1 AND last_used_at < now() - $2 * interval '1 millisecond'
            AND (busy_token IS NULL OR busy_until < now())",
    )
    .bind(workspace_id)
    .bind(millis(idle))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
