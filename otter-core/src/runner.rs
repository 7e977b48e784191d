//! Runs one child process (vibe, `setup.sh` or a command) the way Otter needs: argv only (never
//! a shell string), inside a [`Unit`] (as the job user, with a built environment, dying with
//! Otter; see [`crate::isolation`]), stdin from /dev/null, stdout and stderr read concurrently
//! and split into lines that go to an unbounded channel (so the pipes are never held up by the
//! database), and an end that leaves no process of the unit behind.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::isolation::{Child, Unit};
use crate::model::OutputStream;
use crate::output::{LineSplitter, MAX_LINE_BYTES};

mod spill;

pub use spill::{LINE_OVERHEAD_BYTES, MAX_LINE_CHARGE, SpillSpec, line_cost};

/// One line of a child's output.
#[derive(Debug)]
pub struct Line {
    /// Which stream it belongs to.
    pub stream: OutputStream,
    /// The line, without its newline, lossily decoded.
    pub text: String,
    /// The line's share of the output budget ([`RunSpec::output_budget`], [`line_cost`] permits:
    /// its text and what a waiting line costs beyond it); the consumer drops it
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
    /// The unit it runs in: who it runs as, and where every process it starts is found again.
    pub unit: Arc<Unit>,
    /// Variables set on top of the unit's child environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// How stdout lines are tagged.
    pub stdout_as: OutputStream,
    /// How stderr lines are tagged.
    pub stderr_as: OutputStream,
    /// A hard bound on the run, after which the group is killed.
    pub timeout: Option<Duration>,
    /// How long the child may go without printing anything (on either stream) before it is
    /// taken for hung and its group is stopped, as on cancel ([`RunOutcome::Silent`]). `None`:
    /// no bound.
    pub silence: Option<Duration>,
    /// SIGTERM to SIGKILL delay when the run is stopped.
    pub kill_grace: Duration,
    /// Bytes of output that may wait in the channel at once: one permit a byte of text, plus
    /// [`LINE_OVERHEAD_BYTES`] a line (what a line costs beyond its text), so that a flood of
    /// empty lines is bounded like one of long ones. At least [`MAX_LINE_CHARGE`]. The pipes are
    /// read as fast as the child writes while the consumer keeps up; if it cannot (the database
    /// is behind or down), the lines past the budget go to the spill file ([`RunSpec::spill`]),
    /// or, without one, reading pauses until the budget has room, so the child blocks instead of
    /// output being dropped or memory growing without bound. `None`: unbounded.
    pub output_budget: Option<Arc<Semaphore>>,
    /// Where lines past the output budget wait on disk, so that the child is not held up
    /// while the consumer catches up (see `runner/spill.rs`). `None`: the reader waits instead.
    pub spill: Option<SpillSpec>,
    /// Whether processes the child left in its unit are killed when it exits (vibe, commands:
    /// yes; setup.sh: no, starting the app in the background is its purpose).
    pub reap_group_on_exit: bool,
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
    /// Stopped because the child printed nothing for this long ([`RunSpec::silence`]).
    Silent(Duration),
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

/// Runs `spec`, sending each output line to `lines`, until it exits, `cancel` fires, the
/// timeout passes or it has been silent too long. On cancel, timeout or silence every process of the unit gets SIGTERM, then SIGKILL
/// after `kill_grace`. Returns once the child is reaped, the pipes are done (read to their end,
/// or cut off 2 s after the child exited) and every line read has been sent.
pub async fn run<T>(
    spec: &RunSpec,
    lines: mpsc::UnboundedSender<T>,
    cancel: &CancellationToken,
) -> Result<RunOutcome, RunnerError>
where
    T: From<Line> + Send + 'static,
{
    let unit = &spec.unit;
    let mut child = unit
        .start(&spec.program, &spec.args, &spec.cwd, &spec.env)
        .map_err(|source| RunnerError::Spawn {
            program: spec.program.display().to_string(),
            source,
        })?;
    let pid = child.id();

    let stop_reading = CancellationToken::new();
    let activity = Arc::new(Activity::new());
    let [stdout, stderr] = child.take_output();
    let pumps = [
        stdout.map(|out| pump(out, spec.stdout_as, &lines, spec, &stop_reading, &activity)),
        stderr.map(|err| pump(err, spec.stderr_as, &lines, spec, &stop_reading, &activity)),
    ];
    let (readers, forwarders): (Vec<_>, Vec<_>) = pumps.into_iter().flatten().unzip();
    let forwarders: Vec<_> = forwarders.into_iter().flatten().collect();
    drop(lines);
    let readers = async {
        for reader in readers {
            let _ = reader.await;
        }
    };
    tokio::pin!(readers);

    let deadline = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };

    let silence = async {
        match spec.silence {
            Some(limit) => activity.quiet_for(limit).await,
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
            stop(unit, &mut child, spec.kill_grace).await?;
            RunOutcome::Cancelled
        }
        () = deadline => {
            stop(unit, &mut child, spec.kill_grace).await?;
            RunOutcome::TimedOut
        }
        quiet = silence => {
            stop(unit, &mut child, spec.kill_grace).await?;
            RunOutcome::Silent(quiet)
        }
    };
    unit.reaped(pid);

    if spec.reap_group_on_exit {
        // Whatever the child left in its unit must not outlive the run.
        unit.kill().await;
    }
    if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut readers)
        .await
        .is_err()
    {
        // setup.sh's app holds them: stop reading, so that the consumer sees the end of the
        // run's output. What was read is still handed on.
        tracing::debug!("pipes still open after the child exited; stopped reading them");
        stop_reading.cancel();
        readers.await;
    }
    // Lines that went to the spill file are handed on before the run counts as over (what the
    // caller sends next must come after them). Only the consumer sets the pace here.
    for forwarder in forwarders {
        let _ = forwarder.await;
    }
    Ok(outcome)
}

/// SIGTERM to every process of the unit, SIGKILL to all of them after `grace` if the child has
/// not exited, then reap it.
async fn stop(unit: &Unit, child: &mut Child, grace: Duration) -> std::io::Result<()> {
    unit.signal(Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        unit.kill().await;
        child.wait().await?;
    }
    // What ignored SIGTERM while the child exited.
    unit.kill().await;
    Ok(())
}

/// When a run's child last printed something, for the silence bound ([`RunSpec::silence`]).
struct Activity {
    started: tokio::time::Instant,
    /// Milliseconds from `started` to the last read that returned output.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Output was just read.
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Returns once nothing has been read for `limit`, with how long it has been quiet.
    async fn quiet_for(&self, limit: Duration) -> Duration {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = last.elapsed();
            if quiet >= limit {
                return quiet;
            }
            tokio::time::sleep_until(last + limit).await;
        }
    }
}

/// Reads `reader` to its end (or until `stop`), splitting it into lines handed on to `lines`
/// (see `spill`). Returns the reader task and the forwarder of its spilled lines, if it may
/// spill.
fn pump<R, T>(
    mut reader: R,
    stream: OutputStream,
    lines: &mpsc::UnboundedSender<T>,
    spec: &RunSpec,
    stop: &CancellationToken,
    activity: &Arc<Activity>,
) -> (
    tokio::task::JoinHandle<()>,
    Option<tokio::task::JoinHandle<()>>,
)
where
    R: AsyncRead + Unpin + Send + 'static,
    T: From<Line> + Send + 'static,
{
    let (mut outlet, forwarder) = spill::outlet(
        stream,
        lines.clone(),
        spec.output_budget.clone(),
        spec.spill.clone(),
    );
    let stop = stop.clone();
    let activity = activity.clone();
    let reader = tokio::spawn(async move {
        let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Only the wait for the pipe is cut short, never the handing on of what was read.
            let read = tokio::select! {
                read = reader.read(&mut buf) => read,
                () = stop.cancelled() => break,
            };
            match read {
                Ok(0) => break,
                Ok(n) => {
                    activity.touch();
                    if !outlet.offer(splitter.push(&buf[..n])).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a child's output failed");
                    break;
                }
            }
        }
        if let Some(text) = splitter.finish() {
            outlet.offer(vec![text]).await;
        }
    });
    (reader, forwarder)
}
