//! What a job changed, and undo: the change list and the diff between the checkpoints the worker
//! took before the job's run and after it ended, and a restore of the workspace's files to
//! either. The checkpoints themselves are [`crate::checkpoint`]'s; which ones are a job's is
//! [`crate::db::checkpoints`]'.
//!
//! A restore holds its workspace ([`WorkspaceHold`]) from before it looks at the files until its
//! event is written: no job of the workspace can start meanwhile, and none may be running when
//! it begins (a conflict). Its file work runs in a task of its own, so a client that goes away
//! mid-request does not leave it half done with the hold released.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use sqlx::{Connection as _, PgPool};

use super::ServiceError;
use crate::checkpoint::{Change, CheckpointId, Checkpoints, Diff, LeftAlone};
use crate::config::Config;
use crate::db::checkpoints::{self, JobCheckpoints, WorkspaceHold};
use crate::db::{DbError, events, jobs, workspaces};
use crate::isolation::Isolation;
use crate::model::{Job, JobId, JobStatus, NewEvent, kinds};
use crate::queue::Queue;
use crate::workspace;

/// Longest `path` a diff may be asked for, in bytes.
pub const MAX_DIFF_PATH_BYTES: usize = 4096;

/// The two checkpoints of a finished job, or the conflict that says why there are none.
async fn pair(pool: &PgPool, id: JobId) -> Result<(Job, JobCheckpoints), ServiceError> {
    let job = jobs::get(pool, id).await?;
    let recorded = checkpoints::get(pool, id).await?;
    let conflict = |msg: String| Err(ServiceError::Db(DbError::Conflict(msg)));
    if job.events_purged {
        return Err(ServiceError::Gone(format!(
            "job {id} ended before OTTER_RETENTION: its checkpoints were deleted with its lines \
             (its output keeps the summary of what it changed)"
        )));
    }
    match (&job.status, recorded) {
        (JobStatus::Running, _) => conflict(format!(
            "job {id} is running: what it changed is known once it ends"
        )),
        (JobStatus::Queued, None) => conflict(format!(
            "job {id} has not run yet: it has no checkpoints, so no changes"
        )),
        (_, None) => conflict(format!(
            "job {id} never ran (or ran before Otter took checkpoints): it has no checkpoints, \
             so no changes"
        )),
        (_, Some(c)) => Ok((job, c)),
    }
}

/// The checkpoint `which` of `recorded`, or the conflict that says why it is missing.
fn checkpoint_of(
    id: JobId,
    recorded: &JobCheckpoints,
    which: RestoreTo,
) -> Result<CheckpointId, ServiceError> {
    let (found, name) = match which {
        RestoreTo::Before => (recorded.before_id, "before its run"),
        RestoreTo::After => (recorded.after_id, "after its run"),
    };
    found.ok_or_else(|| {
        let why = recorded
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        ServiceError::Db(DbError::Conflict(format!(
            "job {id} has no checkpoint {name} (it could not be taken{why})"
        )))
    })
}

/// The paths job `id` added, modified or deleted (setup.sh's work included), in path order:
/// empty when it changed nothing; a conflict when it never ran, still runs, or a checkpoint of
/// it could not be taken.
pub async fn job_changes(
    pool: &PgPool,
    store: &Checkpoints,
    id: JobId,
) -> Result<Vec<Change>, ServiceError> {
    let (_, recorded) = pair(pool, id).await?;
    let before = checkpoint_of(id, &recorded, RestoreTo::Before)?;
    let after = checkpoint_of(id, &recorded, RestoreTo::After)?;
    let store = store.clone();
    let changes =
        tokio::task::spawn_blocking(move || store.changes(recorded.workspace_id, before, after))
            .await??;
    Ok(changes)
}

/// The unified diff of what job `id` changed (of `path` alone when given), cut after
/// `max_bytes` with a line that says so. The same conflicts as [`job_changes`].
pub async fn job_diff(
    pool: &PgPool,
    store: &Checkpoints,
    id: JobId,
    path: Option<&str>,
    max_bytes: usize,
) -> Result<Diff, ServiceError> {
    if let Some(path) = path
        && (path.is_empty() || path.contains('\0') || path.len() > MAX_DIFF_PATH_BYTES)
    {
        return Err(ServiceError::Invalid(format!(
            "path must be a workspace-relative path of 1 to {MAX_DIFF_PATH_BYTES} bytes \
             without NUL"
        )));
    }
    let (_, recorded) = pair(pool, id).await?;
    let before = checkpoint_of(id, &recorded, RestoreTo::Before)?;
    let after = checkpoint_of(id, &recorded, RestoreTo::After)?;
    let store = store.clone();
    let path = path.map(str::to_owned);
    let diff = tokio::task::spawn_blocking(move || {
        store.diff(
            recorded.workspace_id,
            before,
            after,
            path.as_deref(),
            max_bytes,
        )
    })
    .await??;
    Ok(diff)
}

/// Which of a job's checkpoints a restore puts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreTo {
    /// As the files were before the job's run.
    Before,
    /// As they were after it ended.
    After,
}

impl RestoreTo {
    /// `before` or `after`; anything else is invalid, naming the field.
    pub fn parse(text: &str) -> Result<Self, ServiceError> {
        match text {
            "before" => Ok(Self::Before),
            "after" => Ok(Self::After),
            other => Err(ServiceError::Invalid(format!(
                "to must be \"before\" or \"after\" (got {other:?})"
            ))),
        }
    }
}

/// What a restore did: the answer of `POST /v1/jobs/{id}/restore`, and its event's payload.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The job whose checkpoint was restored.
    pub job_id: JobId,
    /// Which of its checkpoints.
    pub to: RestoreTo,
    /// The checkpoint restored.
    pub checkpoint_id: CheckpointId,
    /// The checkpoint taken of the files just before the restore: restoring it undoes this one
    /// (it becomes the workspace's newest).
    pub undo_checkpoint_id: CheckpointId,
    /// Files written back (added back, or changed back).
    pub restored: Vec<String>,
    /// Files removed (not in the checkpoint restored).
    pub removed: Vec<String>,
    /// Paths left alone, with why: files over the size cap, then or now, and files that could
    /// not be put back. Ignored paths (`.gitignore`, `.git/`, `node_modules/`, …) are never
    /// touched and not listed.
    pub left_alone: Vec<LeftAlone>,
}

/// Puts the files of job `id`'s workspace back as they were before (or after) the job. Refused
/// (conflict) while a job of the workspace is running or starting, or another restore of it is
/// in progress, and when the job has no such checkpoint. Records a `workspace_restored` event
/// on the job, whose payload is the answer; then the workspace's queued jobs may run again.
pub async fn restore_job(
    pool: &PgPool,
    queue: &Queue,
    config: &Config,
    isolation: Arc<Isolation>,
    store: &Checkpoints,
    id: JobId,
    to: RestoreTo,
) -> Result<RestoreReport, ServiceError> {
    let (job, recorded) = pair(pool, id).await?;
    let target = checkpoint_of(id, &recorded, to)?;
    let workspace = workspaces::get(pool, job.workspace_id).await?;
    let (pool, queue, config, store) = (pool.clone(), queue.clone(), config.clone(), store.clone());
    // A task of its own: dropping the request must not stop a restore half way.
    let task = tokio::spawn(async move {
        let mut hold = WorkspaceHold::take(&pool, workspace.id).await?;
        let result = restore_held(
            &mut hold, &config, isolation, &store, &workspace, id, to, target,
        )
        .await;
        hold.release().await;
        if let Ok(entries) = jobs::claimable(&pool, Some(workspace.id), 1).await
            && let Err(e) = queue.push(&entries).await
        {
            tracing::warn!(workspace_id = %workspace.id, error = %e, "could not push the workspace's next job after a restore; the reconciler will");
        }
        result
    });
    task.await?
}

#[allow(clippy::too_many_arguments)]
async fn restore_held(
    hold: &mut WorkspaceHold,
    config: &Config,
    isolation: Arc<Isolation>,
    store: &Checkpoints,
    workspace: &crate::model::Workspace,
    id: JobId,
    to: RestoreTo,
    target: CheckpointId,
) -> Result<RestoreReport, ServiceError> {
    let restored = {
        let (config, store, path, ws) = (
            config.clone(),
            store.clone(),
            workspace.path.clone(),
            workspace.id,
        );
        tokio::task::spawn_blocking(move || -> Result<_, ServiceError> {
            // As a run checks it: a directory replaced by a link since it was registered would
            // have the restore write elsewhere.
            let root = workspace::open_registered(&config, &path)?;
            Ok(store.restore(&isolation, ws, root.path(), target)?)
        })
        .await??
    };
    let report = RestoreReport {
        job_id: id,
        to,
        checkpoint_id: target,
        undo_checkpoint_id: restored.checkpoint_id,
        restored: restored.written,
        removed: restored.removed,
        left_alone: restored.left_alone,
    };
    let event = NewEvent::new(
        kinds::WORKSPACE_RESTORED,
        json!({
            "to": report.to,
            "checkpoint_id": report.checkpoint_id,
            "undo_checkpoint_id": report.undo_checkpoint_id,
            "restored": report.restored.len(),
            "removed": report.removed.len(),
            "left_alone": report.left_alone,
        }),
    );
    let mut tx = hold.conn().begin().await.map_err(DbError::from)?;
    events::lock_job(&mut tx, id).await?;
    events::append(&mut tx, id, &[event]).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(job_id = %id, workspace_id = %workspace.id, to = ?to, restored = report.restored.len(), removed = report.removed.len(), "workspace restored");
    Ok(report)
}
