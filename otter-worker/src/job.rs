//! One run of one job, orchestrated: write Otter's instructions to the workspace's
//! `VIBE_HOME/AGENTS.md`, run vibe, have its lines stored, read `export.json`, run `setup.sh`
//! after a success, and record the end, all fenced by the run's lease. What vibe is told and
//! what its answers mean (argv, environment, instructions channel, exit codes, transcript) is
//! [`otter_core::vibe`]'s.
//!
//! Vibe and `setup.sh` run in one unit ([`otter_core::isolation`]) named after the attempt:
//! before it is made, any other run of the workspace still on this host (a lost one) is
//! killed, and when the run ends nothing of it is left but what a successful `setup.sh`
//! started, which is kept on purpose. Everything the worker does in the workspace's
//! `VIBE_HOME`, which the job can write, it does with the job user's rights.
//!
//! Before vibe starts and after the run ends (`setup.sh` included), the worker takes a
//! checkpoint of the workspace's files ([`otter_core::checkpoint`], on a blocking thread, as the
//! job user) and records it on the job (`db::checkpoints`, fenced by the lease) with the summary
//! of what changed, before the run's end is recorded. A checkpoint that cannot be taken never
//! costs the job its result: it is logged, a `checkpoint_failed` event says why, and the job's
//! changes are then unknown (its change list answers 409).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otter_core::checkpoint::{CheckpointId, Summary};
use otter_core::db::checkpoints::{self, AfterCheckpoint, BeforeRecorded};
use otter_core::db::jobs::{self, Finish, Lease, LeaseRenewal, RunEnd};
use otter_core::db::{projects, retry_read, workspaces};
use otter_core::isolation::{Isolation, IsolationError, Unit, UnitName};
use otter_core::model::{Job, JobLimits, NewEvent, OutputStream, Workspace, kinds};
use otter_core::output::Item;
use otter_core::runner::{self, RunOutcome, RunSpec, RunnerError, SpillSpec};
use otter_core::vibe::{self, Decision, Invocation, RunExport, RunRequest, Verdict, parse_export};
use otter_core::workspace::WorkspaceError;
use otter_core::{Config, instructions, workspace};
use serde_json::json;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::control::{RunControl, StopCause};
use crate::sink::{self, OUTPUT_BUDGET_BYTES, SPILL_MAX_BYTES};
use crate::{Ctx, maintenance};

/// Runs `job` under `lease` to its end, or until `control` stops it: a user's cancel ends it
/// `cancelled`, the end of the shutdown grace gives it back to the queue without losing an
/// attempt, a lost lease ends the run without writing anything more.
pub(crate) async fn run(ctx: &Ctx, job: Job, lease: Lease, control: &RunControl) {
    let job_id = job.id;
    let (workspace_id, job_project) = (job.workspace_id, job.project_id);
    let started = std::time::Instant::now();
    let finish = execute(ctx, &job, &lease, control).await;
    let end_label = match &finish.end {
        RunEnd::Succeeded => "succeeded",
        RunEnd::Failed {
            retryable: true, ..
        } => "failed (retryable)",
        RunEnd::Failed { .. } => "failed",
        RunEnd::Cancelled => "cancelled",
        RunEnd::Released { .. } => "given back to the queue",
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match jobs::finish(&ctx.pool, &lease, &finish).await {
            Ok(Some(status)) => {
                tracing::info!(
                    job_id = %job_id,
                    status = status.as_str(),
                    exit_code = ?finish.exit_code,
                    attempt = lease.attempt,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "job run ended: {end_label}"
                );
                break;
            }
            Ok(None) => {
                tracing::warn!(job_id = %job_id, "lease lost before the run could be recorded; another worker owns the job");
                break;
            }
            Err(e) => {
                tracing::warn!(job_id = %job_id, error = %e, "recording the run's end failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    // The workspace is free again: its next job (or this one, retrying) can be claimed; so is
    // a place of its project's, if the project has a limit.
    maintenance::push_workspace(ctx, workspace_id).await;
    if let Some(project_id) = job_project {
        maintenance::push_project(ctx, project_id).await;
    }
}

/// How a run ended, before it is recorded.
async fn execute(ctx: &Ctx, job: &Job, lease: &Lease, control: &RunControl) -> Finish {
    let config = &ctx.config;
    // A blip of the database here must not cost the job an attempt: wait it out within the
    // lease (the lease renewal is not running yet).
    let within = ctx.config.lease_ttl / 2;
    let workspace = match retry_read(within, || workspaces::get(&ctx.pool, job.workspace_id)).await
    {
        Ok(ws) => ws,
        Err(e) => return failed(format!("workspace unavailable: {e}"), true, None),
    };

    if let (Some(parent), None) = (job.parent_job_id, &job.session_id) {
        return failed(
            format!(
                "parent job {parent} ended without a vibe session to resume (vibe failed before \
                 starting one): submit the prompt as a new job instead"
            ),
            false,
            None,
        );
    }
    let limits = match run_limits(ctx, job).await {
        Ok(limits) => limits,
        Err(finish) => return finish,
    };

    // The claim is real: any other run of this workspace still on this host is a lost one, and
    // must be gone before this one starts (one running job per workspace).
    ctx.isolation.stop_runs_of(workspace.id).await;
    let unit_name = UnitName::run(workspace.id, job.id, lease.attempt);
    let unit = match Unit::create(&ctx.isolation, unit_name).await {
        Ok(unit) => unit,
        Err(e) => return failed(format!("could not prepare the run: {e}"), true, None),
    };

    let cancel = control.token();
    let renewal = renew_lease(ctx, lease, control);
    tokio::pin!(renewal);

    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    let (answered_tx, answered) = watch::channel(false);
    let sink = tokio::spawn(sink::run(ctx.pool.clone(), *lease, rx, answered_tx));

    let run_dir = run_dir(&workspace, lease);
    // Stops vibe alone (not setup.sh, which still runs) when it hangs after its answer.
    let end_vibe = cancel.child_token();
    let mut before = None;
    let run = async {
        // Taken before vibe may change a file; recorded beside the run (its commit is not
        // between the claim and vibe's start).
        let taken = take_checkpoint(ctx, &workspace).await;
        let start = async {
            let spec = prepare(ctx, job, lease, &workspace, &run_dir, &unit, &limits).await?;
            let exit_watch = watch_exit(ctx, answered, &run_dir, &end_vibe);
            tokio::select! {
                outcome = runner::run(&spec, tx.clone(), &end_vibe) => {
                    outcome.map_err(RunError::from)
                }
                never = exit_watch => match never {},
            }
        };
        let (recorded, outcome) = tokio::join!(record_before(ctx, lease, taken, &tx), start);
        before = recorded;
        outcome
    };
    // The lease renewal runs beside the run and never ends by itself.
    let outcome = tokio::select! {
        outcome = run => outcome,
        never = &mut renewal => match never {},
    };
    let export = match read_export(&ctx.isolation, &run_dir).await {
        Ok(export) => export,
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "export.json unreadable");
            None
        }
    };

    // Ended by the exit watch: vibe had answered and reported its end.
    let forced_exit = end_vibe.is_cancelled() && !cancel.is_cancelled();
    let mut finish = match outcome {
        Err(e) => failed(e.to_string(), false, None),
        Ok(_) if forced_exit => {
            tracing::warn!(job_id = %job.id, grace_secs = config.exit_grace.as_secs(), "vibe did not exit after its answer; ended it");
            let _ = tx.send(Item::Event(NewEvent::new(
                kinds::JOB_FORCED_EXIT,
                json!({
                    "attempt": lease.attempt,
                    "grace_secs": config.exit_grace.as_secs(),
                    "outcome": export.as_ref().and_then(|e| e.outcome.clone()),
                }),
            )));
            finish_of(
                vibe::decide_forced_exit(export.as_ref(), config.job_timeout),
                None,
            )
        }
        Ok(outcome) => {
            if let RunOutcome::Silent(quiet) = outcome {
                tracing::warn!(job_id = %job.id, quiet_secs = quiet.as_secs(), "vibe printed nothing for too long; stopped it");
                let _ = tx.send(Item::Event(NewEvent::new(
                    kinds::JOB_SILENT,
                    json!({
                        "attempt": lease.attempt,
                        "quiet_secs": quiet.as_secs(),
                        "limit_secs": limits.silence(config.silence_timeout).map(|d| d.as_secs()),
                    }),
                )));
            }
            let decision = vibe::decide(outcome, export.as_ref(), config.job_timeout);
            let limited = match &decision.verdict {
                Verdict::RateLimited { reset_in, message } => Some(json!({
                    "gate": &*ctx.gate,
                    "provider": config.model_provider().0,
                    "reset_ms": reset_in.map(|d| d.as_millis() as u64),
                    "backoff_ms": config.rate_limit_backoff.as_millis() as u64,
                    "message": message,
                })),
                _ => None,
            };
            let mut finish = finish_of(decision, control.cause());
            if matches!(outcome, RunOutcome::Silent(_)) {
                finish.details = json!({ "reason": vibe::SILENT });
            }
            if let Some(limit) = limited {
                tracing::warn!(job_id = %job.id, gate = %ctx.gate, "the model provider's rate limit ended the run; the job waits for the reset");
                finish.details = json!({ "reason": RATE_LIMITED, "rate_limit": limit });
            }
            finish
        }
    };

    if matches!(finish.end, RunEnd::Succeeded) && !cancel.is_cancelled() {
        let setup = run_setup(config, &workspace, &unit, &tx, cancel);
        finish.details = tokio::select! {
            details = setup => details,
            never = &mut renewal => match never {},
        };
        finish.details["forced_exit"] = json!(forced_exit);
        // What setup.sh started is the app: it stays, in a unit of its own.
        let app = UnitName::app(workspace.id, job.id, lease.attempt);
        if let Err(e) = unit.keep(app).await {
            tracing::warn!(job_id = %job.id, error = %e, "could not keep what setup.sh started");
        }
    }
    // Nothing else of the run may outlive it.
    unit.close().await;

    // What the run changed, setup.sh's work included (recorded by the finish).
    let mut checkpoint = None;
    if let Some(before) = before
        && control.cause() != Some(StopCause::LeaseLost)
    {
        let after = checkpoint_after(ctx, lease, &workspace, before, &tx);
        checkpoint = tokio::select! {
            after = after => Some(after),
            never = &mut renewal => match never {},
        };
    }

    drop(tx);
    let report = sink.await.unwrap_or_default();
    if report.lease_lost || control.cause() == Some(StopCause::LeaseLost) {
        // Nothing more may be written; `finish` will find the lease gone and do nothing.
        tracing::warn!(job_id = %job.id, "run ended without its lease");
    }
    // Say why, in vibe's words.
    let reason = report.log.failure_reason(export.as_ref());
    if let (RunEnd::Failed { error, .. }, Some(reason)) = (&mut finish.end, reason) {
        error.push_str(": ");
        error.push_str(&reason);
    }
    if matches!(
        finish.end,
        RunEnd::Failed {
            retryable: true,
            ..
        }
    ) {
        finish.retry_delay = config.retry_delay(lease.attempt);
    }
    let mut output = report.log.output(export.as_ref());
    output.forced_exit = forced_exit;
    finish.output = Some(output);
    finish.events = report.tail;
    finish.checkpoint = checkpoint;
    finish
}

/// The job's limits for this run, its price within what its project's budget leaves; a spent
/// budget fails the job (it was accepted before the budget ran out).
async fn run_limits(ctx: &Ctx, job: &Job) -> Result<JobLimits, Finish> {
    let Some(project_id) = job.project_id else {
        return Ok(job.limits);
    };
    let within = ctx.config.lease_ttl / 2;
    // A project without a budget has nothing to sum (the sum reads all its jobs' outputs).
    let Some(usage) = retry_read(within, || {
        projects::usage_if_budgeted(&ctx.pool, project_id)
    })
    .await
    .map_err(|e| failed(format!("project budget unavailable: {e}"), true, None))?
    else {
        return Ok(job.limits);
    };
    if usage.exhausted() {
        return Err(failed(
            format!(
                "budget_exhausted: project {project_id} has spent its budget ({:.4} of {:.4} USD)",
                usage.spent_usd,
                usage.budget_usd.unwrap_or_default()
            ),
            false,
            None,
        ));
    }
    Ok(job.limits.within_budget(usage.remaining_usd))
}

/// Takes a checkpoint of `workspace`'s files on a blocking thread, as the job user, in the
/// directory as registered (checked as a run checks it).
async fn take_checkpoint(ctx: &Ctx, workspace: &Workspace) -> Result<CheckpointId, String> {
    let (config, isolation, store) = (
        ctx.config.clone(),
        ctx.isolation.clone(),
        ctx.checkpoints.clone(),
    );
    let (path, id) = (workspace.path.clone(), workspace.id);
    tokio::task::spawn_blocking(move || {
        let root = workspace::open_registered(&config, &path).map_err(|e| e.to_string())?;
        store
            .take(&isolation, id, root.path())
            .map(|manifest| manifest.id)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the checkpoint's task failed: {e}"))?
}

/// Says, in an event of the run, that a checkpoint could not be taken (`stage`: `before` or
/// `after`).
fn checkpoint_failed(lease: &Lease, stage: &str, error: &str, tx: &mpsc::UnboundedSender<Item>) {
    tracing::warn!(job_id = %lease.job_id, stage, error, "checkpoint not taken; the job's changes will not be known");
    let _ = tx.send(Item::Event(NewEvent::new(
        kinds::CHECKPOINT_FAILED,
        json!({ "stage": stage, "error": error }),
    )));
}

/// Records the checkpoint taken before the run; returns the job's before checkpoint (an
/// earlier attempt's when there is one), `None` when there is none to compare the run's end
/// with.
async fn record_before(
    ctx: &Ctx,
    lease: &Lease,
    taken: Result<CheckpointId, String>,
    tx: &mpsc::UnboundedSender<Item>,
) -> Option<CheckpointId> {
    if let Err(e) = &taken {
        checkpoint_failed(lease, "before", e, tx);
    }
    let (id, error) = match &taken {
        Ok(id) => (Some(*id), None),
        Err(e) => (None, Some(e.as_str())),
    };
    match checkpoints::record_before(&ctx.pool, lease, id, error).await {
        Ok(BeforeRecorded::Recorded(before)) => before,
        Ok(BeforeRecorded::LeaseLost) => None,
        Err(e) => {
            checkpoint_failed(lease, "before", &format!("not recorded: {e}"), tx);
            None
        }
    }
}

/// Takes the checkpoint after the run, with the summary of what changed since `before`, for
/// the finish to record.
async fn checkpoint_after(
    ctx: &Ctx,
    lease: &Lease,
    workspace: &Workspace,
    before: CheckpointId,
    tx: &mpsc::UnboundedSender<Item>,
) -> AfterCheckpoint {
    let (after, error, summary) = match take_checkpoint(ctx, workspace).await {
        Ok(after) => {
            let (store, ws) = (ctx.checkpoints.clone(), workspace.id);
            let changes =
                tokio::task::spawn_blocking(move || store.changes(ws, before, after)).await;
            match changes {
                Ok(Ok(changes)) => (Some(after), None, Some(Summary::of(&changes))),
                Ok(Err(e)) => (Some(after), Some(format!("comparing: {e}")), None),
                Err(e) => (Some(after), Some(format!("comparing: {e}")), None),
            }
        }
        Err(e) => (None, Some(e), None),
    };
    if let Some(e) = &error {
        checkpoint_failed(lease, "after", e, tx);
    }
    AfterCheckpoint {
        checkpoint: after,
        error,
        summary,
    }
}

/// Renews the lease every third of its TTL, the first time after [`FIRST_RENEWAL`] at most;
/// stops the run when the lease is gone or a cancel was requested. Never returns.
async fn renew_lease(ctx: &Ctx, lease: &Lease, control: &RunControl) -> std::convert::Infallible {
    let period = ctx.config.renew_interval();
    let first = tokio::time::Instant::now() + period.min(FIRST_RENEWAL);
    let mut tick = tokio::time::interval_at(first, period);
    loop {
        tick.tick().await;
        match jobs::renew_lease(&ctx.pool, lease, ctx.config.lease_ttl).await {
            Ok(LeaseRenewal::Held) => {}
            Ok(LeaseRenewal::CancelRequested) => control.stop(StopCause::UserCancel),
            Ok(LeaseRenewal::Lost) => {
                tracing::warn!(job_id = %lease.job_id, "lease lost; stopping the run");
                control.stop(StopCause::LeaseLost);
            }
            Err(e) => {
                tracing::warn!(job_id = %lease.job_id, error = %e, "lease renewal failed; retrying")
            }
        }
    }
}

/// The exit watch (`OTTER_EXIT_GRACE`): once vibe's last stdout line is an answer
/// (`answered`, told by the sink's log) and vibe has printed nothing more on stdout for the
/// grace, and has written `export.json` (it reports its end: a 3.x answer followed by a long
/// tool call has not), vibe is ended through `end_vibe`. Never returns.
async fn watch_exit(
    ctx: &Ctx,
    mut answered: watch::Receiver<bool>,
    run_dir: &Path,
    end_vibe: &CancellationToken,
) -> std::convert::Infallible {
    let grace = ctx.config.exit_grace;
    loop {
        if answered.wait_for(|a| *a).await.is_err() {
            // The log is gone: the run's output is over.
            return std::future::pending().await;
        }
        if tokio::time::timeout(grace, answered.wait_for(|a| !*a))
            .await
            .is_ok()
        {
            continue;
        }
        // The grace is over and the answer still vibe's last word: has vibe reported its end?
        while *answered.borrow() {
            if let Ok(Some(export)) = read_export(&ctx.isolation, run_dir).await
                && export.outcome.is_some()
            {
                end_vibe.cancel();
                return std::future::pending().await;
            }
            let _ = tokio::time::timeout(EXPORT_POLL, answered.changed()).await;
        }
    }
}

/// The reason, and the queued job's error, of a run that ended on a rate limit.
const RATE_LIMITED: &str = "rate_limited";

/// How often the exit watch looks for `export.json` once the grace is over.
const EXPORT_POLL: Duration = Duration::from_secs(1);

/// When the first renewal comes at the latest. It also catches a cancel requested between the
/// claim and the run's registration for cancel notifications; a short job ends before it and
/// costs no renewal.
const FIRST_RENEWAL: Duration = Duration::from_secs(1);

/// Reads `<run_dir>/export.json` as the job user would (the job can write the run directory);
/// `Ok(None)` when vibe wrote none.
async fn read_export(
    isolation: &Arc<Isolation>,
    run_dir: &Path,
) -> Result<Option<RunExport>, String> {
    let isolation = isolation.clone();
    let path = run_dir.join("export.json");
    let bytes =
        tokio::task::spawn_blocking(move || isolation.read_job_file(&path, EXPORT_MAX_BYTES))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading export.json: {e}"))?;
    bytes
        .map(|b| parse_export(&b).map_err(|e| e.to_string()))
        .transpose()
}

/// The largest `export.json` read (the real one is a few KiB).
const EXPORT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Where vibe writes `export.json` for this attempt.
fn run_dir(workspace: &Workspace, lease: &Lease) -> PathBuf {
    Path::new(&workspace.vibe_home)
        .join("runs")
        .join(format!("{}-{}", lease.job_id, lease.attempt))
}

/// Where the output of a run's processes overflows to when the database is behind: a directory
/// of the worker's own beside the homes (not the run directory, which the job can write).
fn spill_spec(config: &Config) -> SpillSpec {
    SpillSpec {
        dir: config.vibe_home_base.join(".spill"),
        max_bytes: SPILL_MAX_BYTES,
    }
}

/// Why a run could not be prepared.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    /// The workspace directory is no longer what was registered.
    #[error("the workspace cannot be used: {0}")]
    Workspace(#[source] WorkspaceError),
    /// The `VIBE_HOME` could not be given to the job user.
    #[error(transparent)]
    Home(#[from] IsolationError),
    /// The run directory could not be made.
    #[error("creating {}: {source}", path.display())]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// vibe's configuration in the home could not be brought up to date.
    #[error(transparent)]
    VibeConfig(WorkspaceError),
    /// The instructions could not be written.
    #[error("writing {}: {source}", path.display())]
    Instructions {
        /// `$VIBE_HOME/AGENTS.md`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The preparing task panicked.
    #[error("preparing the run failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why vibe did not run to an outcome.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// The run could not be prepared.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// vibe could not be started.
    #[error("could not start vibe (OTTER_VIBE_BIN={program}): {source}")]
    Start {
        /// `OTTER_VIBE_BIN`.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for vibe failed.
    #[error(transparent)]
    Wait(RunnerError),
}

impl From<RunnerError> for RunError {
    fn from(e: RunnerError) -> Self {
        match e {
            RunnerError::Spawn { program, source } => Self::Start { program, source },
            other @ RunnerError::Wait(_) => Self::Wait(other),
        }
    }
}

/// Makes the run directory and writes the instructions (as the job user, in its `VIBE_HOME`),
/// then builds vibe's command line ([`Invocation`]).
async fn prepare(
    ctx: &Ctx,
    job: &Job,
    lease: &Lease,
    workspace: &Workspace,
    run_dir: &Path,
    unit: &Arc<Unit>,
    limits: &JobLimits,
) -> Result<RunSpec, PrepareError> {
    let config = &ctx.config;
    // Checked now, as the file and command APIs check it: a directory replaced by a link or
    // moved out of OTTER_ALLOWED_ROOTS since it was registered would have vibe work elsewhere.
    let root =
        workspace::open_registered(config, &workspace.path).map_err(PrepareError::Workspace)?;
    let instructions = instructions::render(job.id, &config.api_base_url);
    let prepared = {
        let (isolation, home, run_dir) = (
            ctx.isolation.clone(),
            PathBuf::from(&workspace.vibe_home),
            run_dir.to_path_buf(),
        );
        let (instructions, spill) = (instructions.clone(), spill_spec(config).dir);
        let config = config.clone();
        tokio::task::spawn_blocking(move || -> Result<(), PrepareError> {
            // A home made before Otter switched users, or by a server of another user.
            isolation.give_tree(&home)?;
            isolation.as_job(|| {
                std::fs::create_dir_all(&run_dir).map_err(|source| PrepareError::RunDir {
                    path: run_dir.clone(),
                    source,
                })?;
                // The home may predate this worker's configuration (OTTER_DEMO turned on or off
                // since).
                workspace::refresh_vibe_config(&config, &home).map_err(PrepareError::VibeConfig)?;
                let agents = vibe::agents_file(&home);
                std::fs::write(&agents, &instructions).map_err(|source| {
                    PrepareError::Instructions {
                        path: agents,
                        source,
                    }
                })
            })?;
            // Best effort: without it, a run whose output outpaces the database waits instead.
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&spill);
            Ok(())
        })
        .await?
    };
    prepared?;
    let prompt = ctx.instructions.prompt(&instructions, &job.prompt);
    let invocation = Invocation::new(
        config,
        &RunRequest {
            job_id: job.id,
            prompt: &prompt,
            vibe_home: &workspace.vibe_home,
            run_dir,
            job_token: &lease.job_token.to_string(),
            // A follow-up goes on with its parent's session (which a resumed run keeps); any
            // other job starts a new one, on a retry too.
            resume: job.parent_job_id.and(job.session_id.as_deref()),
            limits,
            model: job.model.as_deref(),
        },
    );
    Ok(RunSpec {
        program: invocation.program,
        args: invocation.args,
        cwd: root.path().to_path_buf(),
        unit: unit.clone(),
        env: invocation.env,
        stdout_as: OutputStream::Stdout,
        stderr_as: OutputStream::Stderr,
        timeout: invocation.timeout,
        silence: limits.silence(config.silence_timeout),
        kill_grace: config.cancel_grace,
        output_budget: Some(Arc::new(Semaphore::new(OUTPUT_BUDGET_BYTES))),
        spill: Some(spill_spec(config)),
        reap_group_on_exit: true,
    })
}

/// How the job ends, from vibe's [`Decision`] and why the worker stopped the run, if it did.
fn finish_of(decision: Decision, stopped: Option<StopCause>) -> Finish {
    match decision.verdict {
        Verdict::Succeeded => Finish::new(RunEnd::Succeeded, decision.exit_code),
        Verdict::Failed { error, retryable } => failed(error, retryable, decision.exit_code),
        // Not the job's fault: queued again for the reset (the finish's details say when), the
        // attempt not counted.
        Verdict::RateLimited { .. } => Finish::new(
            RunEnd::Released {
                reason: RATE_LIMITED.to_owned(),
            },
            decision.exit_code,
        ),
        Verdict::Stopped => match stopped {
            Some(StopCause::LeaseLost) => failed("worker_lost".to_owned(), true, None),
            Some(StopCause::Shutdown) => Finish {
                // Given back on shutdown: not the job's fault, so the attempt is not counted.
                details: json!({ "reason": "worker_shutdown" }),
                ..Finish::new(
                    RunEnd::Released {
                        reason: "worker_shutdown".to_owned(),
                    },
                    None,
                )
            },
            Some(StopCause::UserCancel) | None => Finish::new(RunEnd::Cancelled, None),
        },
    }
}

fn failed(error: String, retryable: bool, exit_code: Option<i32>) -> Finish {
    Finish::new(RunEnd::Failed { error, retryable }, exit_code)
}

/// Runs `setup.sh` if vibe left one, in the run's unit, streaming its lines; returns details
/// for the final event.
async fn run_setup(
    config: &Config,
    workspace: &Workspace,
    unit: &Arc<Unit>,
    tx: &mpsc::UnboundedSender<Item>,
    cancel: &CancellationToken,
) -> serde_json::Value {
    // vibe itself may have replaced the directory: checked again before anything runs there.
    let root = match workspace::open_registered(config, &workspace.path) {
        Ok(dir) => dir.path().to_path_buf(),
        Err(e) => {
            let error = format!("setup.sh not run: the workspace cannot be used: {e}");
            return json!({ "setup": { "exit_code": null, "outcome": "failed", "error": error } });
        }
    };
    let Some(script) = find_setup(&root) else {
        return json!({ "setup": null });
    };
    let dir = script
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.clone());
    let _ = tx.send(Item::Event(NewEvent::new(
        kinds::SETUP_STARTED,
        json!({ "path": script.display().to_string() }),
    )));
    let executable = std::fs::metadata(&script)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
        .unwrap_or(false);
    let (program, args) = if executable {
        (script.clone(), Vec::new())
    } else {
        (PathBuf::from("sh"), vec![script.as_os_str().to_owned()])
    };
    let spec = RunSpec {
        program,
        args,
        cwd: dir,
        unit: unit.clone(),
        env: vec![("VIBE_HOME".to_owned(), workspace.vibe_home.clone())],
        stdout_as: OutputStream::Setup,
        stderr_as: OutputStream::Setup,
        timeout: Some(config.setup_timeout),
        silence: None,
        kill_grace: config.cancel_grace,
        output_budget: Some(Arc::new(Semaphore::new(OUTPUT_BUDGET_BYTES))),
        spill: Some(spill_spec(config)),
        reap_group_on_exit: false,
    };
    let result = match runner::run(&spec, tx.clone(), cancel).await {
        Ok(RunOutcome::Exited(code)) => {
            json!({ "exit_code": code, "outcome": if code == 0 { "succeeded" } else { "failed" } })
        }
        Ok(RunOutcome::Signalled(sig)) => {
            json!({ "exit_code": null, "signal": sig, "outcome": "failed" })
        }
        // setup.sh has no silence bound (an app may print nothing for long).
        Ok(RunOutcome::TimedOut | RunOutcome::Silent(_)) => {
            json!({ "exit_code": null, "outcome": "timed_out" })
        }
        Ok(RunOutcome::Cancelled) => json!({ "exit_code": null, "outcome": "cancelled" }),
        Err(e) => json!({ "exit_code": null, "outcome": "failed", "error": e.to_string() }),
    };
    let mut finished = result.clone();
    finished["path"] = json!(script.display().to_string());
    let _ = tx.send(Item::Event(NewEvent::new(kinds::SETUP_FINISHED, finished)));
    json!({ "setup": result })
}

/// `setup.sh` at the workspace root, else in the most recently changed direct subfolder (the
/// project folder vibe made). Only regular files that resolve inside the workspace count.
fn find_setup(root: &Path) -> Option<PathBuf> {
    let inside = |p: &Path| -> bool {
        match (p.canonicalize(), root.canonicalize()) {
            (Ok(p), Ok(r)) => p.starts_with(r) && p.is_file(),
            _ => false,
        }
    };
    let top = root.join("setup.sh");
    if inside(&top) {
        return Some(top);
    }
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let candidate = entry.path().join("setup.sh");
        if !inside(&candidate) {
            continue;
        }
        let modified = std::fs::metadata(&candidate)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, candidate));
        }
    }
    best.map(|(_, p)| p)
}
