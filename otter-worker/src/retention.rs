//! The purge of `OTTER_RETENTION`, every `OTTER_RETENTION_INTERVAL` (the first pass at start):
//! for each job that ended longer ago, its `output_chunk` events in batches of
//! [`DELETE_BATCH`] (each a short statement of its own, with a pause between them so that live
//! runs' writes always come first), then its run directories, then the mark `events_purged`.
//! Several workers may purge at once: each step is harmless to repeat.

use std::path::Path;
use std::time::Duration;

use otter_core::db::retention::{self, Purgeable};
use tokio_util::sync::CancellationToken;

use crate::Ctx;

/// Events deleted by one statement.
const DELETE_BATCH: i64 = 2000;
/// Jobs taken by one look.
const JOB_BATCH: i64 = 100;
/// The pause between two deletes.
const BREATHE: Duration = Duration::from_millis(5);

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
                Ok((0, _)) => {}
                Ok((jobs, events)) => tracing::info!(jobs, events, "purged the output of jobs past OTTER_RETENTION"),
                Err(e) => tracing::warn!(error = %e, "purging past OTTER_RETENTION failed; trying again next time"),
            },
        }
    }
}

/// One pass: every job that ended more than `keep` ago. Returns (jobs, events) purged.
pub(crate) async fn purge_once(
    ctx: &Ctx,
    keep: Duration,
) -> Result<(u64, u64), otter_core::DbError> {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let (mut jobs, mut events) = (0, 0);
    loop {
        let batch = retention::purgeable(&ctx.pool, cutoff, JOB_BATCH).await?;
        if batch.is_empty() {
            return Ok((jobs, events));
        }
        for job in batch {
            events += purge_job(ctx, &job).await?;
            jobs += 1;
        }
    }
}

async fn purge_job(ctx: &Ctx, job: &Purgeable) -> Result<u64, otter_core::DbError> {
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
    retention::mark_purged(&ctx.pool, job.id).await?;
    Ok(deleted)
}
