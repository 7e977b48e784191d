//! One run of one job: write Otter's instructions to the workspace's `VIBE_HOME/AGENTS.md`, run
//! vibe (DESIGN.md §4), stream its lines, read `export.json`, map the exit code (DESIGN.md §3),
//! run `setup.sh` after a success, and record the end, all fenced by the run's lease.
//!
//! Vibe and `setup.sh` run in one unit ([`otter_core::isolation`]) named after the attempt:
//! before it is made, any other run of the workspace still on this host (a lost one) is
//! killed, and when the run ends nothing of it is left but what a successful `setup.sh`
//! started, which is kept on purpose. Everything the worker does in the workspace's
//! `VIBE_HOME`, which the job can write, it does with the job user's rights.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otter_core::db::jobs::{self, Finish, Lease, LeaseRenewal, RunEnd};
use otter_core::db::{retry_read, workspaces};
use otter_core::isolation::{Isolation, Unit, UnitName};
use otter_core::model::{Job, JobOutput, NewEvent, OutputStream, Workspace, kinds};
use otter_core::runner::{self, Line, RunOutcome, RunSpec, RunnerError, SpillSpec};
use otter_core::vibe::{RunExport, parse_export};
use otter_core::{Config, demo, instructions, workspace};
use serde_json::json;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::control::{RunControl, StopCause};
use crate::sink::{self, OUTPUT_BUDGET_BYTES, SPILL_MAX_BYTES, SinkItem};
use crate::{Ctx, maintenance};

/// Runs `job` under `lease` to its end, or until `control` stops it: a user's cancel ends it
/// `cancelled`, the end of the shutdown grace gives it back to the queue without losing an
/// attempt, a lost lease ends the run without writing anything more.
pub(crate) async fn run(ctx: &Ctx, job: Job, lease: Lease, control: &RunControl) {
    let job_id = job.id;
    let workspace_id = job.workspace_id;
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
    // The workspace is free again: its next job (or this one, retrying) can be claimed.
    maintenance::push_workspace(ctx, workspace_id).await;
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

    let (tx, rx) = mpsc::unbounded_channel::<SinkItem>();
    let sink = tokio::spawn(sink::run(ctx.pool.clone(), *lease, rx));

    let run_dir = run_dir(&workspace, lease);
    let run = async {
        match prepare(ctx, job, lease, &workspace, &run_dir, &unit).await {
            Ok(spec) => runner::run(&spec, tx.clone(), cancel)
                .await
                .map_err(|e| match e {
                    RunnerError::Spawn { program, source } => {
                        format!("could not start vibe (OTTER_VIBE_BIN={program}): {source}")
                    }
                    other @ RunnerError::Wait(_) => other.to_string(),
                }),
            Err(e) => Err(e),
        }
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

    let mut finish = match outcome {
        Err(e) => failed(e, false, None),
        Ok(outcome) => decide(config, outcome, export.as_ref(), control.cause()),
    };

    if matches!(finish.end, RunEnd::Succeeded) && !cancel.is_cancelled() {
        let setup = run_setup(config, &workspace, &unit, &tx, cancel);
        finish.details = tokio::select! {
            details = setup => details,
            never = &mut renewal => match never {},
        };
        // What setup.sh started is the app: it stays, in a unit of its own.
        let app = UnitName::app(workspace.id, job.id, lease.attempt);
        if let Err(e) = unit.keep(app).await {
            tracing::warn!(job_id = %job.id, error = %e, "could not keep what setup.sh started");
        }
    }
    // Nothing else of the run may outlive it.
    unit.close().await;

    drop(tx);
    let report = sink.await.unwrap_or_default();
    if report.lease_lost || control.cause() == Some(StopCause::LeaseLost) {
        // Nothing more may be written; `finish` will find the lease gone and do nothing.
        tracing::warn!(job_id = %job.id, "run ended without its lease");
    }
    // Say why: export.json's error, else vibe's last `Error:` line.
    let reason = export
        .as_ref()
        .and_then(|e| e.error.as_ref())
        .and_then(|e| e.message.clone())
        .or_else(|| {
            report
                .stderr_tail
                .iter()
                .rev()
                .find(|l| l.starts_with("Error:"))
                .cloned()
        });
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
    finish.output = Some(output(export.as_ref(), report.transcript.final_text()));
    finish.events = report.tail;
    finish
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

/// When the first renewal comes at the latest. It also catches a cancel requested between the
/// claim and the run's registration for cancel notifications; a short job ends before it and
/// costs no renewal.
const FIRST_RENEWAL: Duration = Duration::from_secs(1);

/// How Otter's instructions reach vibe (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InstructionsVia {
    /// `$VIBE_HOME/AGENTS.md`, which vibe 3.x puts into its system prompt; the user's prompt goes
    /// to `--prompt` unchanged.
    AgentsMd,
    /// A prefix of the prompt, for older vibe that does not read that file.
    PromptPrefix,
}

impl InstructionsVia {
    /// Asks `vibe --version` (run the way jobs run it: as the job user, in a unit of its own):
    /// 3.x and later read `AGENTS.md`, older versions get the prefix. When the version cannot be
    /// told (vibe missing, odd output), `AGENTS.md` is assumed: jobs will say what is wrong with
    /// vibe when they run it.
    pub(crate) async fn detect(config: &Config, isolation: &Arc<Isolation>) -> Self {
        let output = match version(config, isolation).await {
            Ok(output) => output,
            Err(e) => {
                tracing::warn!(vibe = %config.vibe_bin.display(), error = %e, "cannot run `vibe --version`");
                return Self::AgentsMd;
            }
        };
        let via = Self::for_version(&output);
        tracing::info!(version = output.trim(), instructions = ?via, "vibe found");
        via
    }

    /// The way for a `--version` output such as `vibe 3.0.3`.
    fn for_version(output: &str) -> Self {
        let major = output
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .find(|word| word.contains('.'))
            .and_then(|version| version.split('.').next())
            .and_then(|major| major.parse::<u32>().ok());
        match major {
            Some(major) if major < 3 => Self::PromptPrefix,
            _ => Self::AgentsMd,
        }
    }
}

/// What `vibe --version` prints on stdout.
async fn version(config: &Config, isolation: &Arc<Isolation>) -> Result<String, String> {
    let unit = Unit::create(isolation, UnitName::task())
        .await
        .map_err(|e| e.to_string())?;
    let spec = RunSpec {
        program: config.vibe_bin.clone(),
        args: vec!["--version".into()],
        cwd: std::env::temp_dir(),
        unit: unit.clone(),
        env: config.vibe_extra_env.clone(),
        stdout_as: OutputStream::Stdout,
        stderr_as: OutputStream::Stderr,
        timeout: Some(Duration::from_secs(20)),
        kill_grace: Duration::from_secs(1),
        output_budget: None,
        spill: None,
        reap_group_on_exit: true,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let outcome = runner::run(&spec, tx, &CancellationToken::new()).await;
    unit.close().await;
    let mut stdout = String::new();
    while let Ok(line) = rx.try_recv() {
        if line.stream == OutputStream::Stdout {
            stdout.push_str(&line.text);
            stdout.push('\n');
        }
    }
    match outcome {
        Ok(RunOutcome::TimedOut) => Err("it did not answer within 20 s".to_owned()),
        Ok(_) => Ok(stdout),
        Err(e) => Err(e.to_string()),
    }
}

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

/// Makes the run directory and writes the instructions (as the job user, in its `VIBE_HOME`),
/// then builds vibe's command line.
async fn prepare(
    ctx: &Ctx,
    job: &Job,
    lease: &Lease,
    workspace: &Workspace,
    run_dir: &Path,
    unit: &Arc<Unit>,
) -> Result<RunSpec, String> {
    let config = &ctx.config;
    // Checked now, as the file and command APIs check it: a directory replaced by a link or
    // moved out of OTTER_ALLOWED_ROOTS since it was registered would have vibe work elsewhere.
    let root = workspace::open_registered(config, &workspace.path)
        .map_err(|e| format!("the workspace cannot be used: {e}"))?;
    let instructions = instructions::render(job.id, &config.api_base_url);
    let prepared = {
        let (isolation, home, run_dir) = (
            ctx.isolation.clone(),
            PathBuf::from(&workspace.vibe_home),
            run_dir.to_path_buf(),
        );
        let (instructions, spill) = (instructions.clone(), spill_spec(config).dir);
        let config = config.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            // A home made before Otter switched users, or by a server of another user.
            isolation.give_tree(&home).map_err(|e| e.to_string())?;
            isolation.as_job(|| {
                std::fs::create_dir_all(&run_dir)
                    .map_err(|e| format!("creating {}: {e}", run_dir.display()))?;
                // The home may predate this worker's configuration (OTTER_DEMO turned on or off
                // since).
                workspace::refresh_vibe_config(&config, &home).map_err(|e| e.to_string())?;
                let agents = home.join("AGENTS.md");
                // Written in both ways: a vibe that reads it is told, one that does not loses
                // nothing.
                std::fs::write(&agents, &instructions)
                    .map_err(|e| format!("writing {}: {e}", agents.display()))
            })?;
            // Best effort: without it, a run whose output outpaces the database waits instead.
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&spill);
            Ok(())
        })
        .await
        .map_err(|e| format!("preparing the run failed: {e}"))?
    };
    prepared?;
    let prompt = match ctx.instructions {
        InstructionsVia::AgentsMd => job.prompt.clone(),
        InstructionsVia::PromptPrefix => instructions::prefixed(&instructions, &job.prompt),
    };
    // One argument, whose length the server checked at submit (`instructions::max_prompt_bytes`).
    let mut args: Vec<OsString> = vec![instructions::prompt_argument(&prompt).into()];
    args.extend(
        [
            "--output",
            "streaming",
            "--trust",
            "--auto-approve",
            "--output-dir",
        ]
        .map(OsString::from),
    );
    args.push(run_dir.as_os_str().to_owned());
    let mut timeout = None;
    if let Some(limit) = config.job_timeout {
        args.push("--time-limit".into());
        args.push(limit.as_secs().max(1).to_string().into());
        // vibe stops itself at the limit; the hard kill is the backstop.
        timeout = Some(limit + config.cancel_grace + Duration::from_secs(30));
    }

    let mut env = vec![("VIBE_HOME".to_owned(), workspace.vibe_home.clone())];
    if let Some(key) = &config.mistral_api_key {
        env.push(("MISTRAL_API_KEY".to_owned(), key.expose().to_owned()));
    }
    if config.demo {
        // The demo model, whatever OTTER_VIBE_MODEL says, and its dummy key.
        env.extend(demo::vibe_env());
    } else {
        if let Some(model) = &config.vibe_model {
            // vibe 3.x reads only VIBE_ACTIVE_MODEL; older versions the other two (DESIGN.md §4).
            for name in ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"] {
                env.push((name.to_owned(), model.clone()));
            }
        }
        if let Some(provider) = &config.vibe_provider {
            env.push(("VIBE_PROVIDER".to_owned(), provider.clone()));
        }
    }
    env.push(("OTTER_JOB_ID".to_owned(), job.id.to_string()));
    // Good only for posting this job's preview URL while this run lasts.
    env.push(("OTTER_API_TOKEN".to_owned(), lease.job_token.to_string()));
    env.push(("OTTER_API_BASE_URL".to_owned(), config.api_base_url.clone()));
    env.extend(config.vibe_extra_env.iter().cloned());

    Ok(RunSpec {
        program: config.vibe_bin.clone(),
        args,
        cwd: root.path().to_path_buf(),
        unit: unit.clone(),
        env,
        stdout_as: OutputStream::Stdout,
        stderr_as: OutputStream::Stderr,
        timeout,
        kill_grace: config.cancel_grace,
        output_budget: Some(Arc::new(Semaphore::new(OUTPUT_BUDGET_BYTES))),
        spill: Some(spill_spec(config)),
        reap_group_on_exit: true,
    })
}

/// Maps how vibe ended to how the job ends (DESIGN.md §3).
fn decide(
    config: &Config,
    outcome: RunOutcome,
    export: Option<&RunExport>,
    stopped: Option<StopCause>,
) -> Finish {
    let reason = export
        .and_then(|e| e.outcome.clone())
        .unwrap_or_else(|| "unknown".to_owned());
    match outcome {
        RunOutcome::Exited(0) => Finish::new(RunEnd::Succeeded, Some(0)),
        RunOutcome::Exited(1) => failed(
            "vibe configuration error (exit 1)".to_owned(),
            false,
            Some(1),
        ),
        RunOutcome::Exited(2) => failed(
            "vibe infrastructure error (exit 2)".to_owned(),
            true,
            Some(2),
        ),
        RunOutcome::Exited(3) => failed(format!("vibe stopped early: {reason}"), false, Some(3)),
        RunOutcome::Exited(code) => {
            failed(format!("vibe exited with code {code}"), true, Some(code))
        }
        RunOutcome::Signalled(sig) => {
            failed(format!("vibe was killed by signal {sig}"), true, None)
        }
        RunOutcome::TimedOut => failed(
            format!(
                "timed out after {}s (OTTER_JOB_TIMEOUT)",
                config.job_timeout.map(|t| t.as_secs()).unwrap_or_default()
            ),
            false,
            None,
        ),
        RunOutcome::Cancelled if stopped == Some(StopCause::LeaseLost) => {
            failed("worker_lost".to_owned(), true, None)
        }
        RunOutcome::Cancelled if stopped == Some(StopCause::Shutdown) => Finish {
            // Given back on shutdown: not the job's fault, so the attempt is not counted.
            details: json!({ "reason": "worker_shutdown" }),
            ..Finish::new(
                RunEnd::Released {
                    reason: "worker_shutdown".to_owned(),
                },
                None,
            )
        },
        RunOutcome::Cancelled => Finish::new(RunEnd::Cancelled, None),
    }
}

fn failed(error: String, retryable: bool, exit_code: Option<i32>) -> Finish {
    Finish::new(RunEnd::Failed { error, retryable }, exit_code)
}

/// The job's output row from export.json and the transcript.
fn output(export: Option<&RunExport>, final_text: Option<&str>) -> JobOutput {
    JobOutput {
        final_text: final_text.map(str::to_owned),
        usage: export.and_then(|e| e.usage.clone()),
        cost: export.and_then(|e| e.cost_usd),
        outcome: export.and_then(|e| e.outcome.clone()),
        stop_reason: export.and_then(|e| e.stop_reason.clone()),
        export: export.and_then(|e| serde_json::to_value(e).ok()),
        model: export.and_then(|e| e.model.clone()),
    }
}

/// Runs `setup.sh` if vibe left one, in the run's unit, streaming its lines; returns details
/// for the final event.
async fn run_setup(
    config: &Config,
    workspace: &Workspace,
    unit: &Arc<Unit>,
    tx: &mpsc::UnboundedSender<SinkItem>,
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
    let _ = tx.send(SinkItem::Event(NewEvent::new(
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
        Ok(RunOutcome::TimedOut) => json!({ "exit_code": null, "outcome": "timed_out" }),
        Ok(RunOutcome::Cancelled) => json!({ "exit_code": null, "outcome": "cancelled" }),
        Err(e) => json!({ "exit_code": null, "outcome": "failed", "error": e.to_string() }),
    };
    let mut finished = result.clone();
    finished["path"] = json!(script.display().to_string());
    let _ = tx.send(SinkItem::Event(NewEvent::new(
        kinds::SETUP_FINISHED,
        finished,
    )));
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

#[cfg(test)]
mod tests {
    use super::InstructionsVia;

    #[test]
    fn the_version_decides_how_instructions_are_handed_over() {
        for (output, want) in [
            ("vibe 3.0.3\n", InstructionsVia::AgentsMd),
            ("vibe 4.1.0", InstructionsVia::AgentsMd),
            ("vibe 2.26.1\n", InstructionsVia::PromptPrefix),
            ("mistral-vibe 1.3.5", InstructionsVia::PromptPrefix),
            ("", InstructionsVia::AgentsMd),
            ("garbage", InstructionsVia::AgentsMd),
        ] {
            assert_eq!(InstructionsVia::for_version(output), want, "{output:?}");
        }
    }
}
