//! Runs one child process (vibe or `setup.sh`) the way Otter needs: argv only (never a shell
//! string), its own process group, stdin from /dev/null, stdout and stderr read concurrently and
//! split into lines that go to an unbounded channel (so the pipes are never held up by the
//! database), and an end that leaves no process of the group behind.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::model::OutputStream;
use crate::vibe::stream::LineSplitter;

/// Longest line kept whole; longer ones are cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One line of a child's output.
#[derive(Debug)]
pub struct Line {
    /// Which stream it belongs to.
    pub stream: OutputStream,
    /// The line, without its newline, lossily decoded.
    pub text: String,
    /// The line's share of the output budget ([`RunSpec::output_budget`]); the consumer drops it
    /// once the line is safely stored, which lets the reader take more.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Variables removed from the inherited environment (Otter's own secrets).
    pub env_remove: Vec<String>,
    /// Variables set on top.
    pub env: Vec<(String, String)>,
    /// How stdout lines are tagged.
    pub stdout_as: OutputStream,
    /// How stderr lines are tagged.
    pub stderr_as: OutputStream,
    /// A hard bound on the run, after which the group is killed.
    pub timeout: Option<Duration>,
    /// SIGTERM to SIGKILL delay when the run is stopped.
    pub kill_grace: Duration,
    /// Bytes of output that may wait in the channel at once (one permit a byte). The pipes are
    /// read as fast as the child writes while the consumer keeps up; if it cannot (the database
    /// is down), reading pauses once the budget is spent, so the child blocks instead of output
    /// being dropped or memory growing without bound. `None`: unbounded.
    pub output_budget: Option<Arc<Semaphore>>,
    /// Whether processes the child left in its group are killed when it exits (vibe: yes;
    /// setup.sh: no, starting the app in the background is its purpose).
    pub reap_group_on_exit: bool,
}

/// Otter's own variables, which a child (vibe, `setup.sh`, a command of the command endpoints)
/// must not inherit: every `OTTER_*` variable of this process (database and Redis URLs, API
/// tokens) and the unprefixed `DATABASE_URL` and `REDIS_URL`. For [`RunSpec::env_remove`].
pub fn secret_env_names() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("OTTER_") || k == "DATABASE_URL" || k == "REDIS_URL")
        .collect()
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The child exited with this code.
    Exited(i32),
    /// The child was killed by this signal (not by us).
    Signalled(i32),
    /// Stopped because `cancel` fired.
    Cancelled,
    /// Stopped because the timeout passed.
    TimedOut,
}

/// Errors starting or waiting for a child.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The program could not be started.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for the child failed.
    #[error("waiting for the child failed: {0}")]
    Wait(#[from] std::io::Error),
}

/// How long the pipes are still read after the child exited (a background process that inherited
/// them may keep them open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Runs `spec`, sending each output line to `lines`, until it exits, `cancel` fires or the
/// timeout passes. On cancel or timeout the whole process group gets SIGTERM, then SIGKILL after
/// `kill_grace`. Returns once the child is reaped and the pipes are done.
pub async fn run<T>(
    spec: &RunSpec,
    lines: mpsc::UnboundedSender<T>,
    cancel: &CancellationToken,
) -> Result<RunOutcome, RunnerError>
where
    T: From<Line> + Send + 'static,
{
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that every process it starts can be signalled at once; unlike a
        // pre_exec hook this keeps std's fast posix_spawn path.
        .process_group(0)
        .kill_on_drop(true);
    for name in &spec.env_remove {
        command.env_remove(name);
    }
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().map_err(|source| RunnerError::Spawn {
        program: spec.program.display().to_string(),
        source,
    })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));

    let stdout = child.stdout.take().map(|out| {
        pump(
            out,
            spec.stdout_as,
            lines.clone(),
            spec.output_budget.clone(),
        )
    });
    let stderr = child
        .stderr
        .take()
        .map(|err| pump(err, spec.stderr_as, lines, spec.output_budget.clone()));
    let readers = async {
        if let Some(h) = stdout {
            let _ = h.await;
        }
        if let Some(h) = stderr {
            let _ = h.await;
        }
    };
    tokio::pin!(readers);

    let deadline = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };

    let outcome = tokio::select! {
        biased;
        status = child.wait() => {
            let status = status?;
            match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(code), _) => RunOutcome::Exited(code),
                (None, Some(sig)) => RunOutcome::Signalled(sig),
                (None, None) => RunOutcome::Signalled(0),
            }
        }
        () = cancel.cancelled() => {
            stop_group(pgid, &mut child, spec.kill_grace).await?;
            RunOutcome::Cancelled
        }
        () = deadline => {
            stop_group(pgid, &mut child, spec.kill_grace).await?;
            RunOutcome::TimedOut
        }
    };

    if spec.reap_group_on_exit {
        // Whatever the child left in its group must not outlive the run.
        signal_group(pgid, Signal::SIGKILL);
    }
    if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut readers)
        .await
        .is_err()
    {
        tracing::debug!("pipes still open after the child exited; stopped reading them");
    }
    Ok(outcome)
}

/// SIGTERM to the group, SIGKILL after `grace` if the child has not exited, then reap it.
async fn stop_group(
    pgid: Option<Pid>,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> std::io::Result<()> {
    signal_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, Signal::SIGKILL);
        child.wait().await?;
    }
    // Children of the group that ignored SIGTERM while the leader exited.
    signal_group(pgid, Signal::SIGKILL);
    Ok(())
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (the group is already gone) is the normal case after a clean exit.
        let _ = killpg(pgid, signal);
    }
}

/// Reads `reader` to its end, splitting it into lines sent to `lines`.
fn pump<R, T>(
    mut reader: R,
    stream: OutputStream,
    lines: mpsc::UnboundedSender<T>,
    budget: Option<Arc<Semaphore>>,
) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    T: From<Line> + Send + 'static,
{
    tokio::spawn(async move {
        let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    for text in splitter.push(&buf[..n]) {
                        let permit = take_budget(budget.as_ref(), text.len()).await;
                        if lines
                            .send(
                                Line {
                                    stream,
                                    text,
                                    permit,
                                }
                                .into(),
                            )
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a child's output failed");
                    break;
                }
            }
        }
        if let Some(text) = splitter.finish() {
            let permit = take_budget(budget.as_ref(), text.len()).await;
            let _ = lines.send(
                Line {
                    stream,
                    text,
                    permit,
                }
                .into(),
            );
        }
    })
}

/// Waits for `len` bytes of the budget (at least one permit, at most the whole budget).
async fn take_budget(budget: Option<&Arc<Semaphore>>, len: usize) -> Option<OwnedSemaphorePermit> {
    let budget = budget?;
    let want = len.clamp(1, MAX_LINE_BYTES) as u32;
    budget.clone().acquire_many_owned(want).await.ok()
}
