//! The `job_checkpoints` table: which checkpoints of its workspace are a job's (taken before its
//! run and after it ended) and the summary of what changed between them, and the hold a restore
//! takes on a workspace so that no run starts while it writes files.
//!
//! The worker's two writes are fenced by the run's lease: `otter_record_checkpoint_before`
//! (migration `20261202000041_job_checkpoints.sql`), and the checkpoint after the run, which the
//! finish records ([`AfterCheckpoint`], migration 42), both called with named arguments. The checkpoints
//! themselves live in the checkpoint store ([`crate::checkpoint`]), outside the database.

use sqlx::{Connection as _, PgConnection, PgPool};

use super::DbError;
use super::jobs::Lease;
use crate::checkpoint::{CheckpointId, Summary};
use crate::model::{JobId, WorkspaceId};

/// A job's checkpoints, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobCheckpoints {
    /// The job.
    pub job_id: JobId,
    /// The workspace whose store holds the checkpoints.
    pub workspace_id: WorkspaceId,
    /// Taken before the job's first attempt; `None` when it could not be taken.
    pub before_id: Option<CheckpointId>,
    /// Taken after its last attempt ended; `None` until then, or when it could not be taken.
    pub after_id: Option<CheckpointId>,
    /// Why a checkpoint is missing.
    pub error: Option<String>,
}

/// What recording a run's first checkpoint found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeRecorded {
    /// Recorded (or an earlier attempt's kept): the job's before checkpoint, `None` when the
    /// first attempt's could not be taken (what the job changed is then unknown).
    Recorded(Option<CheckpointId>),
    /// The lease is gone: nothing was written.
    LeaseLost,
}

/// Records the checkpoint taken before a run (`None` with the `error` when it could not be
/// taken), fenced by `lease`. A job that has one from an earlier attempt keeps it.
#[tracing::instrument(skip_all, fields(job_id = %lease.job_id), err)]
pub async fn record_before(
    pool: &PgPool,
    lease: &Lease,
    checkpoint: Option<CheckpointId>,
    error: Option<&str>,
) -> Result<BeforeRecorded, DbError> {
    let (before, held): (Option<CheckpointId>, bool) = sqlx::query_as(
        "SELECT before_id, held FROM otter_record_checkpoint_before(p_id => $1,
                p_lease_token => $2, p_checkpoint => $3, p_error => $4)",
    )
    .bind(lease.job_id)
    .bind(lease.token)
    .bind(checkpoint)
    .bind(error.map(super::storable).as_deref())
    .fetch_one(pool)
    .await?;
    Ok(if held {
        BeforeRecorded::Recorded(before)
    } else {
        BeforeRecorded::LeaseLost
    })
}

/// The checkpoint taken after a run ended (`checkpoint` `None` with the `error` when it could
/// not be taken) and the summary of the job's changes: recorded by the run's finish
/// ([`super::jobs::Finish::checkpoint`]), under its lease check, in its one commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AfterCheckpoint {
    /// The checkpoint.
    pub checkpoint: Option<CheckpointId>,
    /// Why it, or the summary, is missing.
    pub error: Option<String>,
    /// What changed since the job's checkpoint from before its run.
    pub summary: Option<Summary>,
}

impl AfterCheckpoint {
    /// As `otter_finish_run`'s `p_checkpoint` takes it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let figure = |f: fn(&Summary) -> u64| self.summary.as_ref().map(f);
        serde_json::json!({
            "after_id": self.checkpoint,
            "error": self.error.as_deref().map(super::storable),
            "files_changed": figure(|s| s.files_changed),
            "additions": figure(|s| s.additions),
            "deletions": figure(|s| s.deletions),
        })
    }
}

/// The checkpoints of job `id`, if any were recorded (a job that never ran has none).
pub async fn get(pool: &PgPool, id: JobId) -> Result<Option<JobCheckpoints>, DbError> {
    Ok(sqlx::query_as::<_, JobCheckpoints>(
        "SELECT job_id, workspace_id, before_id, after_id, error FROM job_checkpoints
         WHERE job_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// A restore's hold on a workspace: while it is held, no job of the workspace becomes
/// `running` (the trigger `jobs_workspace_restoring` makes such a claim fail, and the worker
/// leaves the job queued). It is a session-level advisory lock on a connection of its own, not
/// a transaction: a transaction held open for the seconds a restore takes would hold back the
/// event horizon of every live stream. If the holder dies, its connection closes and the lock
/// goes with it.
pub struct WorkspaceHold {
    conn: PgConnection,
    workspace_id: WorkspaceId,
}

impl WorkspaceHold {
    /// Takes the hold on `workspace_id` if no job of it is running or starting and no other
    /// restore holds it; a conflict saying which otherwise.
    pub async fn take(pool: &PgPool, workspace_id: WorkspaceId) -> Result<Self, DbError> {
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(7305003, hashtext($1::text))")
                .bind(workspace_id)
                .fetch_one(&mut conn)
                .await?;
        if !locked {
            let _ = conn.close().await;
            return Err(DbError::Conflict(format!(
                "workspace {workspace_id} is busy: a job of it is starting, or another restore \
                 of it is in progress; retry once it is done"
            )));
        }
        // A claim in flight held the lock until it committed: its job is `running` now.
        let running: Option<JobId> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE workspace_id = $1 AND status = 'running' LIMIT 1",
        )
        .bind(workspace_id)
        .fetch_optional(&mut conn)
        .await?;
        if let Some(job) = running {
            let _ = conn.close().await;
            return Err(DbError::Conflict(format!(
                "job {job} of workspace {workspace_id} is running: a restore must wait until \
                 it ends (or cancel it: POST /v1/jobs/{job}/cancel)"
            )));
        }
        Ok(Self { conn, workspace_id })
    }

    /// The connection holding the lock, for writes that belong with the restore.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Lets runs of the workspace start again.
    pub async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(7305003, hashtext($1::text))")
            .bind(self.workspace_id)
            .execute(&mut self.conn)
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(workspace_id = %self.workspace_id, error = %e, "could not release the restore's hold; closing its connection releases it");
        }
        // Closing the session releases the lock in any case.
        let _ = self.conn.close().await;
    }
}
