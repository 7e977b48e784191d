//! Background duties every worker shares (running them on several workers is harmless):
//! re-pushing PostgreSQL's claimable jobs to Redis (so a Redis that lost its data loses no job),
//! recovering jobs whose worker stopped renewing its lease, promoting retries whose backoff has
//! passed, and killing what dead workers on this host left running (their units).

use std::time::Duration;

use otter_core::db::{jobs, workers};
use otter_core::isolation::UnitKind;
use otter_core::model::{JobId, ProjectId, WorkspaceId};
use tokio_util::sync::CancellationToken;

use crate::Ctx;

/// How often due retries are moved to the ready set.
const PROMOTE_EVERY: Duration = Duration::from_secs(1);
/// Most jobs re-pushed in one reconcile pass.
const RECONCILE_BATCH: i64 = 10_000;

pub(crate) async fn run(ctx: Ctx, shutdown: CancellationToken) {
    let mut beat = tokio::time::interval(ctx.config.renew_interval());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile = tokio::time::interval(ctx.config.reconcile_interval);
    let mut promote = tokio::time::interval(PROMOTE_EVERY);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    promote.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = reconcile.tick() => reconcile_once(&ctx).await,
            _ = beat.tick() => heartbeat(&ctx).await,
            _ = promote.tick() => {
                if let Err(e) = ctx.queue.promote_due().await {
                    tracing::debug!(error = %e, "could not promote due retries");
                }
            }
        }
    }
}

/// Tells PostgreSQL this worker is alive, how many jobs it runs, and whether it claims.
pub(crate) async fn heartbeat(ctx: &Ctx) {
    let concurrency = ctx.config.worker_concurrency;
    let disk = ctx.disk.state();
    let beat = workers::WorkerBeat {
        id: &ctx.config.worker_id,
        hostname: &otter_core::config::hostname(),
        pid: std::process::id() as i32,
        concurrency: concurrency as i32,
        running: ctx.controls.running() as i32,
        disk_free_bytes: disk.free_bytes.map(|b| b.min(i64::MAX as u64) as i64),
        claims_paused: disk.paused.as_deref(),
    };
    if let Err(e) = workers::beat(&ctx.pool, &beat).await {
        tracing::debug!(error = %e, "worker heartbeat failed");
    }
}

/// One pass: kill what dead workers on this host left, recover expired leases, then make sure
/// every claimable job is in Redis. The first pass runs as the worker starts.
pub(crate) async fn reconcile_once(ctx: &Ctx) {
    for unit in ctx
        .isolation
        .sweep(&[UnitKind::Run, UnitKind::App, UnitKind::Task])
        .await
    {
        tracing::warn!(%unit, "killed the processes of a run whose worker died");
    }
    match jobs::recover_expired(&ctx.pool).await {
        Ok(recovered) => {
            for (id, requeued) in recovered {
                tracing::warn!(job_id = %id, requeued, "recovered a job whose worker stopped renewing its lease");
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease recovery failed"),
    }
    match jobs::claimable(&ctx.pool, None, RECONCILE_BATCH).await {
        Ok(entries) => {
            if let Err(e) = ctx.queue.push(&entries).await {
                tracing::warn!(error = %e, "could not re-push claimable jobs to Redis");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list claimable jobs"),
    }
}

/// Pushes the workspace's next claimable job (after one of its jobs ended). Only one: the
/// workspace runs one job at a time, and each end pushes the next; pushing them all made every
/// other one a wasted claim.
pub(crate) async fn push_workspace(ctx: &Ctx, workspace_id: WorkspaceId) {
    let listed = jobs::claimable(&ctx.pool, Some(workspace_id), 1).await;
    push_listed(ctx, listed, &format!("workspace {workspace_id}")).await;
}

/// Pushes the jobs just listed (`listed`, the next jobs of `whose`), saying what failed.
async fn push_listed(
    ctx: &Ctx,
    listed: Result<Vec<jobs::QueueEntry>, otter_core::DbError>,
    whose: &str,
) {
    match listed {
        Ok(entries) => {
            if let Err(e) = ctx.queue.push(&entries).await {
                tracing::warn!(error = %e, "could not push the next jobs of {whose}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list the next jobs of {whose}"),
    }
}

/// How many of a project's next jobs the end of one of its runs pushes (those its limit held
/// back were dropped from Redis; a few, since others of them may wait for their workspace).
const PROJECT_PUSH: i64 = 8;

/// Pushes a project's next claimable jobs after one of its runs ended, if it has a limit on its
/// running jobs (`max_running` or `OTTER_PROJECT_MAX_RUNNING`), which may have held them back.
pub(crate) async fn push_project(ctx: &Ctx, project_id: ProjectId) {
    let max = ctx.config.project_max_running;
    let listed = jobs::claimable_in_project(&ctx.pool, project_id, max, PROJECT_PUSH).await;
    push_listed(ctx, listed, &format!("project {project_id}")).await;
}

/// Pushes one job again with its current place in claim order.
pub(crate) async fn push_job(ctx: &Ctx, id: JobId) {
    match jobs::queue_entry(&ctx.pool, id).await {
        Ok(Some(entry)) => {
            if let Err(e) = ctx.queue.push(&[entry]).await {
                tracing::warn!(error = %e, job_id = %id, "could not push the job");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, job_id = %id, "could not read the job"),
    }
}
