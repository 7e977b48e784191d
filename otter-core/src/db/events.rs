//! The `events` table: the append-only log every client reads.
//!
//! All writes go through the SQL function `otter_append_events` (see the first migration), which
//! serialises writers so that ids become visible in increasing order: a reader holding cursor N
//! may move past N without ever missing a smaller id committed later.

use sqlx::{PgConnection, PgPool};

use super::DbError;
use crate::model::{Event, JobId, NewEvent, ProjectId, WorkspaceId};

const COLUMNS: &str = "id, job_id, workspace_id, project_id, seq, kind, payload, created_at";

/// Which events a reader wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this job's events.
    pub job_id: Option<JobId>,
    /// Only this workspace's events.
    pub workspace_id: Option<WorkspaceId>,
    /// Only this project's events.
    pub project_id: Option<ProjectId>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.job_id.is_none_or(|id| event.job_id == id)
            && self.workspace_id.is_none_or(|id| event.workspace_id == id)
            && self
                .project_id
                .is_none_or(|id| event.project_id == Some(id))
    }
}

/// Appends `events` to `job_id`'s log, in order, inside the caller's transaction (the ids become
/// visible when it commits). Returns the `(id, seq)` given to each.
pub async fn append(
    conn: &mut PgConnection,
    job_id: JobId,
    events: &[NewEvent],
) -> Result<Vec<(i64, i64)>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let payloads: Vec<sqlx::types::Json<&serde_json::Value>> = events
        .iter()
        .map(|e| sqlx::types::Json(&e.payload))
        .collect();
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, seq FROM otter_append_events($1, $2, $3)")
            .bind(job_id)
            .bind(&kinds)
            .bind(&payloads)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows)
}

/// A job's events after `after` (an event id), oldest first, at most `limit`.
pub async fn list_for_job(
    pool: &PgPool,
    job_id: JobId,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, DbError> {
    Ok(sqlx::query_as::<_, Event>(&format!(
        "SELECT {COLUMNS} FROM events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(job_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Events matching `filter` after `after`, oldest first, at most `limit`.
pub async fn list_after(
    pool: &PgPool,
    filter: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, DbError> {
    Ok(sqlx::query_as::<_, Event>(&format!(
        "SELECT {COLUMNS} FROM events
         WHERE id > $1
           AND ($2::uuid IS NULL OR job_id = $2)
           AND ($3::uuid IS NULL OR workspace_id = $3)
           AND ($4::uuid IS NULL OR project_id = $4)
         ORDER BY id LIMIT $5"
    ))
    .bind(after)
    .bind(filter.job_id)
    .bind(filter.workspace_id)
    .bind(filter.project_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The newest event id (0 when there are none).
pub async fn head(pool: &PgPool) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
            .fetch_one(pool)
            .await?,
    )
}

/// How many events a job has.
pub async fn count_for_job(pool: &PgPool, job_id: JobId) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM events WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(pool)
            .await?,
    )
}
