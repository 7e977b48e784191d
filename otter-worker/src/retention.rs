//! The purge of `OTTER_RETENTION`, every `OTTER_RETENTION_INTERVAL` (the first pass at start).
//! It takes the jobs that ended longer ago, [`JOB_BATCH`] at a time, and for each one deletes its
//! `output_chunk` events in batches of [`DELETE_BATCH`] (each a short statement of its own, with
//! a pause between them so that live runs' writes always come first) and its run directories.
//! Then, every [`SWEEP_ROUND`] jobs, it sweeps the checkpoint store of each of their workspaces
//! once: those jobs' checkpoints go, with every object only they held (`Checkpoints::sweep`, which waits at most
//! [`SWEEP_WAIT`] for a take or a restore of that workspace). Last, the jobs are marked
//! `events_purged`. A job whose workspace could not be swept is not marked, and is purged again
//! by the next pass. Several workers may purge at once: each step is harmless to repeat.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use otter_core::checkpoint::{CheckpointError, Swept};
use otter_core::db::retention::{self, Purgeable};
use otter_core::model::{JobId, WorkspaceId};
use tokio_util::sync::CancellationToken;

use crate::Ctx;

/// Events deleted by one statement.
const DELETE_BATCH: i64 = 2000;
/// Jobs taken by one look.
const JOB_BATCH: i64 = 100;
/// Jobs whose workspaces are swept together.
const SWEEP_ROUND: usize = 5_000;
/// The pause between two deletes.
const BREATHE: Duration = Duration::from_millis(5);
/// How long a sweep waits for a checkpoint of the workspace being taken to end.
const SWEEP_WAIT: Duration = Duration::from_secs(30);

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    /// Jobs marked `events_purged`.
    pub(crate) jobs: u64,
    /// `output_chunk` events.
    pub(crate) events: u64,
    /// Checkpoints, objects and their bytes.
    pub(crate) swept: Swept,
}

pub(crate) async fn run(ctx: Ctx, keep: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.retention_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            purged = purge_once(&ctx, keep) => match purged {
                Ok(p) if p == Purged::default() => {}
                Ok(p) => tracing::info!(
                    jobs = p.jobs,
                    events = p.events,
                    checkpoints = p.swept.checkpoints,
                    objects = p.swept.objects,
                    bytes = p.swept.bytes,
                    "purged jobs past OTTER_RETENTION"
                ),
                Err(e) => tracing::warn!(error = %e, "purging past OTTER_RETENTION failed; trying again next time"),
            },
        }
    }
}

/// One pass: every job that ended more than `keep` ago, in rounds of up to [`SWEEP_ROUND`]
/// jobs: their lines and run directories, then one sweep of each of their workspaces (a
/// workspace's store is read whole by a sweep: once a round, not once a batch), then the marks.
pub(crate) async fn purge_once(ctx: &Ctx, keep: Duration) -> Result<Purged, otter_core::DbError> {
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let mut purged = Purged::default();
    // Where the pass goes on: past the jobs taken, also those it could not finish (their
    // workspace's store was busy), which the next pass takes again.
    let mut after = None;
    loop {
        let mut round: BTreeMap<WorkspaceId, Vec<JobId>> = BTreeMap::new();
        let mut taken = 0;
        while taken < SWEEP_ROUND {
            let batch = retention::purgeable(&ctx.pool, cutoff, after, JOB_BATCH).await?;
            let Some(last) = batch.last() else {
                break;
            };
            after = Some(last.next());
            taken += batch.len();
            for job in &batch {
                purged.events += purge_lines(ctx, job).await?;
                round.entry(job.workspace_id).or_default().push(job.id);
            }
        }
        if round.is_empty() {
            return Ok(purged);
        }
        for (workspace, jobs) in round {
            match sweep(ctx, workspace, &jobs, cutoff.into()).await? {
                Ok(swept) => {
                    purged.swept += swept;
                    for job in jobs {
                        if retention::mark_purged(&ctx.pool, job).await? {
                            purged.jobs += 1;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(workspace_id = %workspace, error = %e, jobs = jobs.len(), "could not sweep the workspace's checkpoints; its jobs are purged again next time");
                }
            }
        }
    }
}

/// A job's `output_chunk` events and run directories. Returns the events deleted.
async fn purge_lines(ctx: &Ctx, job: &Purgeable) -> Result<u64, otter_core::DbError> {
    let mut deleted = 0;
    loop {
        let n = retention::delete_output_batch(&ctx.pool, job.id, DELETE_BATCH).await?;
        deleted += n;
        if n < DELETE_BATCH as u64 {
            break;
        }
        tokio::time::sleep(BREATHE).await;
    }
    let runs = Path::new(&job.vibe_home).join("runs");
    let dirs: Vec<_> = (1..=job.attempts.max(1))
        .map(|attempt| runs.join(format!("{}-{attempt}", job.id)))
        .collect();
    let removed = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            // remove_dir_all does not follow the links the job may have left in it.
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
        Ok(())
    })
    .await;
    if let Ok(Err(e)) | Err(e) = removed.map_err(|e| e.to_string()) {
        tracing::warn!(job_id = %job.id, error = %e, "could not remove a purged job's run directory");
    }
    Ok(deleted)
}

/// Sweeps `workspace`'s checkpoint store of the checkpoints of `purging` (and of any other
/// checkpoint no job needs, taken before `older_than`).
async fn sweep(
    ctx: &Ctx,
    workspace: WorkspaceId,
    purging: &[JobId],
    older_than: std::time::SystemTime,
) -> Result<Result<Swept, CheckpointError>, otter_core::DbError> {
    let keep: HashSet<_> = retention::kept_checkpoints(&ctx.pool, workspace, purging).await?;
    let store = ctx.checkpoints.clone();
    let swept =
        tokio::task::spawn_blocking(move || store.sweep(workspace, &keep, older_than, SWEEP_WAIT))
            .await
            .unwrap_or_else(|e| {
                Err(CheckpointError::Damaged(format!(
                    "the sweep's task failed: {e}"
                )))
            });
    Ok(swept)
}
