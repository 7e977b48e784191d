//! Retention (`OTTER_RETENTION`): what jobs that ended long ago give up. Their `output_chunk`
//! events go in small batches, each one short statement, so that no lock or transaction of the
//! purge is held long enough to hold up a live run's writes (events are only ever appended, and
//! the purge deletes rows no writer touches: the lines of jobs that ended); their checkpoints go
//! from the store ([`kept_checkpoints`] says which the sweep must keep); then the job is marked
//! `events_purged`. The row, the output, the lifecycle events and the change summary stay.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::DbError;
use crate::checkpoint::CheckpointId;
use crate::model::{JobId, WorkspaceId};

/// A job the purge may take: ended before the cutoff, not purged yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Purgeable {
    /// The job.
    pub id: JobId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Its workspace's `VIBE_HOME`, where its run directories are (`runs/<job>-<attempt>`).
    pub vibe_home: String,
    /// Its runs so far (one run directory each, at most).
    pub attempts: i32,
    /// When it ended: with `id`, where the next look goes on ([`Purgeable::next`]).
    pub finished_at: DateTime<Utc>,
}

impl Purgeable {
    /// Where a look that ended with this job goes on.
    pub fn next(&self) -> (DateTime<Utc>, JobId) {
        (self.finished_at, self.id)
    }
}

/// Up to `limit` jobs that ended before `ended_before` and are not purged yet, oldest first,
/// after `after` (a [`Purgeable::next`]: the pass goes on past the jobs it has taken, purged
/// or not).
pub async fn purgeable(
    pool: &PgPool,
    ended_before: DateTime<Utc>,
    after: Option<(DateTime<Utc>, JobId)>,
    limit: i64,
) -> Result<Vec<Purgeable>, DbError> {
    let (after_at, after_id) = after.unzip();
    Ok(sqlx::query_as(
        "SELECT j.id, j.workspace_id, w.vibe_home, j.attempts, j.finished_at
         FROM jobs j JOIN workspaces w ON w.id = j.workspace_id
         WHERE j.finished_at IS NOT NULL AND NOT j.events_purged AND j.finished_at < $1
           AND j.status IN ('succeeded', 'failed', 'cancelled')
           AND ($2::timestamptz IS NULL OR (j.finished_at, j.id) > ($2, $3))
         ORDER BY j.finished_at, j.id LIMIT $4",
    )
    .bind(ended_before)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The checkpoints of `workspace` that a job still needs: those of every job not purged, but
/// for the jobs of `purging` (whose checkpoints go).
pub async fn kept_checkpoints(
    pool: &PgPool,
    workspace: WorkspaceId,
    purging: &[JobId],
) -> Result<HashSet<CheckpointId>, DbError> {
    let purging: Vec<Uuid> = purging.iter().map(|id| id.0).collect();
    let rows: Vec<(Option<CheckpointId>, Option<CheckpointId>)> = sqlx::query_as(
        "SELECT c.before_id, c.after_id FROM job_checkpoints c JOIN jobs j ON j.id = c.job_id
         WHERE c.workspace_id = $1 AND NOT j.events_purged AND NOT (j.id = ANY ($2))",
    )
    .bind(workspace)
    .bind(&purging)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .flat_map(|(before, after)| [before, after])
        .flatten()
        .collect())
}

/// Deletes up to `batch` of `job`'s `output_chunk` events, if it has ended; returns how many.
pub async fn delete_output_batch(pool: &PgPool, job: JobId, batch: i64) -> Result<u64, DbError> {
    Ok(sqlx::query(
        "DELETE FROM events WHERE id IN (
             SELECT e.id FROM events e JOIN jobs j ON j.id = e.job_id
             WHERE e.job_id = $1 AND e.kind = 'output_chunk' AND j.finished_at IS NOT NULL
             LIMIT $2)",
    )
    .bind(job)
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Marks `job` purged, if it still has ended (a job that has ended is never run again).
pub async fn mark_purged(pool: &PgPool, job: JobId) -> Result<bool, DbError> {
    Ok(sqlx::query(
        "UPDATE jobs SET events_purged = true WHERE id = $1 AND finished_at IS NOT NULL",
    )
    .bind(job)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}
