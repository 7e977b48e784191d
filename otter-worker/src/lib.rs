//! # otter-worker
//!
//! Otter's queue consumer. A worker process takes job ids from Redis, makes each claim real in
//! PostgreSQL, runs vibe in the job's workspace (then `setup.sh`), writes every output line as an
//! event and records the result. Any number of workers, on any number of machines, share one
//! PostgreSQL and one Redis; nothing here assumes it is the only one. Vibe and `setup.sh` run
//! contained and, when the worker is root, as the job user ([`otter_core::isolation`]).

mod control;
mod disk;
mod job;
mod maintenance;
mod retention;
mod sink;

use std::sync::Arc;
use std::time::Duration;

use otter_core::db::jobs::{self, Claim, Claimant};
use otter_core::isolation::Isolation;
use otter_core::{Config, Queue, db};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one blocking pop waits before the loop looks around again.
const POP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a worker that claims nothing for lack of disk space looks again.
const DISK_RECHECK: Duration = Duration::from_secs(2);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// PostgreSQL is unreachable or failed.
    #[error("PostgreSQL (OTTER_DATABASE_URL): {0}")]
    Db(#[from] otter_core::DbError),
    /// Redis is unreachable or failed.
    #[error("Redis (OTTER_REDIS_URL): {0}")]
    Queue(#[from] otter_core::QueueError),
}

/// What every job task of this worker shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) config: Arc<Config>,
    pub(crate) pool: PgPool,
    pub(crate) queue: Queue,
    pub(crate) controls: control::Controls,
    /// How Otter's instructions reach this vibe (decided once from `vibe --version`).
    pub(crate) instructions: otter_core::vibe::InstructionsVia,
    /// Who runs the jobs, and how their processes are kept track of.
    pub(crate) isolation: Arc<Isolation>,
    /// Where the checkpoints of workspaces' files go (`OTTER_CHECKPOINT_DIR`).
    pub(crate) checkpoints: otter_core::checkpoint::Checkpoints,
    /// Whether the workspace filesystems have room for another run (`OTTER_MIN_FREE_DISK`).
    pub(crate) disk: Arc<disk::DiskGuard>,
    /// The rate limit gate of this worker's model provider and key
    /// (`db::jobs::rate_limit_gate`), shared with every worker that uses the same.
    pub(crate) gate: Arc<str>,
}

/// Runs a worker until `shutdown` is cancelled. On shutdown it stops claiming, lets running jobs
/// finish within `OTTER_SHUTDOWN_GRACE`, then stops them and puts them back in the queue. Jobs
/// run as `isolation` says (`Isolation::from_config`).
pub async fn run(
    config: Arc<Config>,
    isolation: Arc<Isolation>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    if !config.api_tokens.is_empty() {
        tracing::warn!(
            "OTTER_API_TOKENS is set, but the worker needs no API token: remove it from the \
             worker's environment (jobs never get it, but nothing should hold a secret it does not use)"
        );
    }
    let pool = db::connect(&config).await?;
    db::migrate(&pool).await?;
    let queue = Queue::connect(config.redis_url.expose(), &config.queue_name).await?;
    // Blocking pops get their own connection: they would hold up every other command on a
    // shared one.
    let popper = Queue::connect_with_timeout(
        config.redis_url.expose(),
        &config.queue_name,
        POP_TIMEOUT + Duration::from_secs(5),
    )
    .await?;
    let ctx = Ctx {
        config: config.clone(),
        pool,
        queue,
        controls: control::Controls::default(),
        instructions: otter_core::vibe::InstructionsVia::detect(&config, &isolation).await,
        isolation: isolation.clone(),
        checkpoints: otter_core::checkpoint::Checkpoints::from_config(&config),
        disk: Arc::new(disk::DiskGuard::new(&config)),
        gate: {
            let (provider, key) = config.model_provider();
            jobs::rate_limit_gate(provider, key).into()
        },
    };
    tracing::info!(
        worker_id = %config.worker_id,
        concurrency = config.worker_concurrency,
        queue = %config.queue_name,
        vibe = %config.vibe_bin.display(),
        job_user = isolation.job_user().map_or("(the worker's own)", |u| u.name.as_str()),
        containment = ?isolation.containment(),
        "worker started"
    );
    if config.demo {
        tracing::warn!(
            model = otter_core::demo::MODEL,
            url = %config.demo_model_url,
            "OTTER_DEMO is on: every run uses the scripted demo model, not a real model"
        );
        if config.vibe_model.is_some() || config.vibe_provider.is_some() {
            tracing::warn!(
                "OTTER_VIBE_MODEL and OTTER_VIBE_PROVIDER are ignored while OTTER_DEMO is on"
            );
        }
    }

    let tracker = TaskTracker::new();
    // Cancelled only when the shutdown grace has run out: stops the jobs still running.
    let stop_jobs = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(config.worker_concurrency));
    tracker.spawn(maintenance::run(ctx.clone(), shutdown.clone()));
    if let Some(keep) = config.retention {
        tracker.spawn(retention::run(ctx.clone(), keep, shutdown.clone()));
    }
    // Cancel requests are listened for until the last job has ended.
    let listening = CancellationToken::new();
    tokio::spawn(control::listen(
        ctx.pool.clone(),
        ctx.controls.clone(),
        listening.clone(),
    ));

    let claimant = Claimant {
        worker_id: &config.worker_id,
        lease_ttl: config.lease_ttl,
        project_max_running: config.project_max_running,
        gate: Some(&ctx.gate),
    };
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        // A disk nearly full: claim nothing (the jobs wait, queued) until space comes back.
        let was_paused = ctx.disk.state().paused.is_some();
        let paused = ctx.disk.check().is_some();
        if paused != was_paused {
            maintenance::heartbeat(&ctx).await;
        }
        if paused {
            drop(permit);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(DISK_RECHECK) => continue,
            }
        }
        let popped = tokio::select! {
            () = shutdown.cancelled() => break,
            popped = popper.pop(POP_TIMEOUT) => popped,
        };
        let id = match popped {
            Ok(Some(id)) => id,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not take from the queue; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        match jobs::claim(&ctx.pool, id, &claimant).await {
            Ok(Claim::Claimed { job, lease }) => {
                tracing::info!(job_id = %id, attempt = lease.attempt, workspace_id = %job.workspace_id, "job claimed");
                let ctx = ctx.clone();
                let control = control::RunControl::new(&stop_jobs);
                ctx.controls.register(id, control.clone());
                tracker.spawn(async move {
                    job::run(&ctx, *job, lease, &control).await;
                    ctx.controls.remove(id);
                    drop(permit);
                });
            }
            Ok(Claim::WorkspaceBusy) => {
                tracing::debug!(job_id = %id, "workspace busy; the job waits for the running one");
            }
            Ok(Claim::ProjectBusy) => {
                tracing::debug!(job_id = %id, "project at its max_running; the job waits for one of its runs to end");
            }
            Ok(Claim::RateLimited(until)) => {
                // The provider's limit holds every job of this worker: give the job back and
                // take nothing until the gate opens.
                tracing::info!(job_id = %id, gate = %ctx.gate, until = %until, "model provider rate limited; claiming nothing until the gate opens");
                maintenance::push_job(&ctx, id).await;
                drop(permit);
                let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Ok(Claim::NotYet(at)) => {
                tracing::debug!(job_id = %id, run_after = %at, "job is backing off");
                maintenance::push_job(&ctx, id).await;
            }
            Ok(Claim::NotClaimable) => tracing::debug!(job_id = %id, "dropped a stale delivery"),
            Err(e) => {
                // The job stays queued in PostgreSQL, and the reconciler puts it back. A dead
                // connection (PostgreSQL restarted) is dropped by the pool, so such a job is put
                // back at once; if the database is really down that fails too. Any other error
                // waits for the reconciler, rather than looping on the same job.
                tracing::warn!(job_id = %id, error = %e, "claim failed");
                if e.is_unavailable() {
                    maintenance::push_job(&ctx, id).await;
                }
            }
        }
    }

    tracing::info!(
        grace_secs = config.shutdown_grace.as_secs_f64(),
        "worker stopping: no new claims"
    );
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown grace over; stopping running jobs and putting them back in the queue"
        );
        stop_jobs.cancel();
        tracker.wait().await;
    }
    listening.cancel();
    if let Err(e) = otter_core::db::workers::remove(&ctx.pool, &config.worker_id).await {
        tracing::debug!(error = %e, "could not remove this worker's heartbeat row");
    }
    tracing::info!("worker stopped");
    Ok(())
}
