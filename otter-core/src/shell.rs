//! Shell commands in a workspace, for the command endpoints (DESIGN.md §6): `sh -c <command>`
//! run through [`crate::runner`] in a unit of its own (as the job user when the server is root,
//! with none of Otter's secrets in its environment, and a timeout that kills every process it
//! started; see [`crate::isolation`]), with capped output and an optional shell session whose
//! working directory persists between commands (`cd` sticks), stored in PostgreSQL so that any
//! server replica can continue it.
//!
//! # Output caps
//!
//! Each stream keeps at most `OTTER_COMMAND_MAX_OUTPUT_BYTES` bytes (default
//! [`MAX_OUTPUT_BYTES`]) and `OTTER_COMMAND_MAX_OUTPUT_LINES` lines (default
//! [`MAX_OUTPUT_LINES`]); the answer says `truncated`. Past a cap the command is not stopped:
//! its output is still read, and dropped, until it exits or its timeout kills it. A command is
//! run for what it does (a build, an install); cutting it short because it talks a lot would
//! leave that half done, and a command that never stops talking is ended by its timeout like
//! one that never stops. Memory stays bounded either way: what was kept, plus the lines read but
//! not yet looked at, which the runner's in-flight budget bounds by their real cost
//! ([`crate::runner::line_cost`]).
//!
//! This is not a sandbox: a command can read and write whatever its user can. What is
//! guaranteed is that it cannot read the server's secrets, that nothing it starts outlives it
//! (nor the server), and that a session's *next* command never starts outside its workspace
//! root.
//!
//! # How the session learns where a command ended
//!
//! The command runs as the body of a small script whose first line is
//! `trap 'pwd -P >/tmp/otter-cwd-<random>' EXIT`: when the shell exits (normally or through
//! `exit`), it writes its physical working directory to a fresh file (created by Otter with
//! `O_EXCL`, mode 0600, given to the command's user, outside the workspace, and read back
//! without following a symlink). The server holds a lock on the file while the command runs:
//! a file nobody holds is a dead server's, and [`recover`] removes it. The command's stdout and stderr play no part,
//! so nothing it prints can move the session. A command that removes the trap, `exec`s another
//! program, is killed or times out leaves the file empty, and the session keeps its directory.
//! A command that writes the file itself can only pick a directory it could have `cd`'d to: the
//! path read back is canonicalized and stored only when it is a directory inside the workspace
//! root; otherwise the session keeps its directory and the answer carries a `warning`. Before
//! each command the stored directory is resolved again and, if it no longer lies inside the
//! root (a symlink swapped in since), the command starts in the root, with a `warning`.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::db::DbError;
use crate::db::shell_sessions::{self, ShellSession, ShellSessionId};
use crate::files::{self, FilesError};
use crate::isolation::{Isolation, IsolationError, Unit, UnitKind, UnitName, create_locked_file};
use crate::model::{OutputStream, Workspace, WorkspaceId};
use crate::runner::{self, Line, RunOutcome, RunSpec, RunnerError};

/// Longest command accepted, in bytes (Linux refuses single arguments above 128 KiB).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Bytes of output kept per stream when `OTTER_COMMAND_MAX_OUTPUT_BYTES` is unset; the rest is
/// dropped and `truncated` set.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Lines of output kept per stream when `OTTER_COMMAND_MAX_OUTPUT_LINES` is unset.
pub const MAX_OUTPUT_LINES: usize = 100_000;
/// Timeout when the request names none.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Longest timeout a request may ask for.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Output read from the pipes but not yet looked at by the collector, counted as the runner
/// counts it (text and per-line overhead): bounds memory when a command floods its output
/// faster than it is consumed. At least [`runner::MAX_LINE_CHARGE`].
const OUTPUT_IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// SIGTERM to SIGKILL delay when a command times out.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How much longer than the command's own bound a session stays held, so that a hold only
/// lapses when its server died.
const HOLD_MARGIN: Duration = Duration::from_secs(30);
/// A workspace's sessions unused this long are deleted when it starts a new one.
pub const SESSION_IDLE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a command was refused or could not run.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The request is not acceptable; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The workspace's directory cannot be used.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The database refused or failed (an unknown session is `NotFound`, a busy one `Conflict`).
    #[error(transparent)]
    Db(#[from] DbError),
    /// `sh` could not be started.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// The command's unit could not be made.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    /// The server is shutting down; the command was stopped.
    #[error("the command was stopped because the server is shutting down")]
    Cancelled,
    /// An unexpected failure (a task panicked, a temporary file could not be made).
    #[error("{0}")]
    Internal(String),
}

/// A command to run.
#[derive(Debug, Clone, Default)]
pub struct CommandRequest {
    /// The shell command (`sh -c`).
    pub command: String,
    /// The session to continue; a new one is started when `None`.
    pub shell_session_id: Option<ShellSessionId>,
    /// Seconds before the command's process group is killed (1..=600, default 60).
    pub timeout_secs: Option<u64>,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    /// The workspace it ran in.
    pub workspace_id: WorkspaceId,
    /// The session to pass back to continue in `cwd`.
    pub shell_session_id: ShellSessionId,
    /// The shell's exit code; `null` when it was killed by a signal or timed out.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did (not the timeout's).
    pub signal: Option<i32>,
    /// Whether the timeout ended it (its whole process group was killed).
    pub timed_out: bool,
    /// Its standard output, decoded as UTF-8 (invalid bytes replaced), one `\n` after each line.
    pub stdout: String,
    /// Its standard error, likewise.
    pub stderr: String,
    /// Whether either stream was cut at its cap of bytes or of lines (see the module's
    /// documentation).
    pub truncated: bool,
    /// The directory the session's next command starts in (canonical, inside the workspace).
    pub cwd: String,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// Something the client should know: the session's directory was not where it was left, or
    /// the command ended outside the workspace and the session kept its directory.
    pub warning: Option<String>,
}

/// Runs `req` in `workspace`. `shutdown` stops it (and every process it started). When the
/// returned future is dropped (the client went away), the command is stopped too and the
/// session released: nothing it started outlives it.
pub async fn run_command(
    pool: &PgPool,
    config: &Config,
    isolation: &Arc<Isolation>,
    workspace: &Workspace,
    req: CommandRequest,
    shutdown: &CancellationToken,
) -> Result<CommandResult, ShellError> {
    let command = check_command(&req.command)?;
    let timeout = check_timeout(req.timeout_secs)?;
    let root = {
        let config = config.clone();
        let stored = workspace.path.clone();
        blocking(move || files::open_root(&config, &stored)).await??
    };
    let holder = Uuid::new_v4();
    let hold = timeout + KILL_GRACE + HOLD_MARGIN;
    let session = match req.shell_session_id {
        Some(id) => shell_sessions::acquire(pool, id, workspace.id, holder, hold).await?,
        None => {
            if let Err(e) = shell_sessions::prune(pool, workspace.id, SESSION_IDLE_TTL).await {
                tracing::debug!(error = %e, "pruning idle shell sessions failed");
            }
            shell_sessions::create_held(pool, workspace.id, &workspace.path, holder, hold).await?
        }
    };
    // From here on the session is held: the rest runs in its own task, which always releases it,
    // even when this future is dropped (the guard then stops the command).
    let cancel = shutdown.child_token();
    let _stop_when_dropped = cancel.clone().drop_guard();
    let execution = Execution {
        pool: pool.clone(),
        isolation: isolation.clone(),
        workspace_id: workspace.id,
        vibe_home: workspace.vibe_home.clone(),
        root,
        session,
        holder,
        command,
        timeout,
        caps: Caps {
            bytes: config.command_max_output_bytes,
            lines: config.command_max_output_lines,
        },
        cancel,
    };
    tokio::spawn(execution.run())
        .await
        .map_err(|e| ShellError::Internal(format!("the command task failed: {e}")))?
}

/// Checks a request's command: not blank, not too long, no NUL.
fn check_command(command: &str) -> Result<String, ShellError> {
    if command.trim().is_empty() {
        return Err(ShellError::Invalid("command must not be empty".to_owned()));
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err(ShellError::Invalid(format!(
            "command is longer than {MAX_COMMAND_BYTES} bytes"
        )));
    }
    if command.contains('\0') {
        return Err(ShellError::Invalid(
            "command must not contain NUL bytes".to_owned(),
        ));
    }
    Ok(command.to_owned())
}

fn check_timeout(secs: Option<u64>) -> Result<Duration, ShellError> {
    let secs = secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(ShellError::Invalid(format!(
            "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ShellError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShellError::Internal(format!("filesystem task failed: {e}")))
}

/// One command of a held session.
struct Execution {
    pool: PgPool,
    isolation: Arc<Isolation>,
    workspace_id: WorkspaceId,
    vibe_home: String,
    root: PathBuf,
    session: ShellSession,
    holder: Uuid,
    command: String,
    timeout: Duration,
    caps: Caps,
    cancel: CancellationToken,
}

impl Execution {
    async fn run(self) -> Result<CommandResult, ShellError> {
        let root = self.root.clone();
        let stored = PathBuf::from(&self.session.cwd);
        let isolation = self.isolation.clone();
        let prepared = blocking(move || -> Result<_, ShellError> {
            let (start, warning) = start_dir(&root, &stored);
            let marker = CwdFile::create(&isolation)
                .map_err(|e| ShellError::Internal(format!("creating the cwd file: {e}")))?;
            Ok((start, warning, marker))
        })
        .await
        .and_then(|r| r);
        let unit_name = UnitName::command(self.workspace_id, self.session.id, self.holder);
        let prepared = match prepared {
            Ok(prepared) => Unit::create(&self.isolation, unit_name)
                .await
                .map(|unit| (prepared, unit))
                .map_err(ShellError::from),
            Err(e) => Err(e),
        };
        let ((start, mut warnings, marker), unit) = match prepared {
            Ok(((start, warning, marker), unit)) => {
                ((start, Vec::from_iter(warning), marker), unit)
            }
            Err(e) => {
                self.release(&self.session.cwd.clone()).await;
                return Err(e);
            }
        };
        let start_str = start.display().to_string();

        let spec = RunSpec {
            program: PathBuf::from("sh"),
            args: vec![OsString::from("-c"), script(&self.command, &marker.path)],
            cwd: start.clone(),
            unit: unit.clone(),
            env: vec![("VIBE_HOME".to_owned(), self.vibe_home.clone())],
            stdout_as: OutputStream::Stdout,
            stderr_as: OutputStream::Stderr,
            timeout: Some(self.timeout),
            silence: None,
            kill_grace: KILL_GRACE,
            output_budget: Some(Arc::new(Semaphore::new(OUTPUT_IN_FLIGHT_BYTES))),
            // The caller reads the output as it comes; a command that outruns it may wait.
            spill: None,
            // Nothing a command starts outlives it.
            reap_group_on_exit: true,
        };
        let started = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel::<Line>();
        let (outcome, (stdout, stderr)) =
            tokio::join!(runner::run(&spec, tx, &self.cancel), collect(rx, self.caps));
        // Whatever the command left (the runner has killed it already unless it failed).
        unit.close().await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match outcome {
            Ok(RunOutcome::Cancelled) => {
                self.release(&start_str).await;
                return Err(ShellError::Cancelled);
            }
            Ok(outcome) => outcome,
            Err(e) => {
                self.release(&start_str).await;
                return Err(e.into());
            }
        };

        let root = self.root.clone();
        let (next, warning) = blocking(move || end_dir(&root, &start, &marker))
            .await
            .unwrap_or_else(|e| (None, Some(e.to_string())));
        warnings.extend(warning);
        let cwd = next.unwrap_or(start_str);
        if !self.release(&cwd).await {
            warnings.push(
                "the session's directory could not be saved; the next command may start elsewhere"
                    .to_owned(),
            );
        }
        let (exit_code, signal, timed_out) = match outcome {
            RunOutcome::Exited(code) => (Some(code), None, false),
            RunOutcome::Signalled(sig) => (None, Some(sig), false),
            // A command has no silence bound; were one set, it would be a timeout too.
            RunOutcome::TimedOut | RunOutcome::Silent(_) => (None, None, true),
            RunOutcome::Cancelled => (None, None, false),
        };
        tracing::info!(
            workspace_id = %self.workspace_id,
            shell_session_id = %self.session.id,
            exit_code = ?exit_code,
            timed_out,
            duration_ms,
            "command ran"
        );
        Ok(CommandResult {
            workspace_id: self.workspace_id,
            shell_session_id: self.session.id,
            exit_code,
            signal,
            timed_out,
            truncated: stdout.truncated || stderr.truncated,
            stdout: stdout.text,
            stderr: stderr.text,
            cwd,
            duration_ms,
            warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        })
    }

    /// Ends the hold, storing `cwd`; `false` when that failed (the hold then lapses by itself).
    async fn release(&self, cwd: &str) -> bool {
        match shell_sessions::release(&self.pool, self.session.id, self.holder, cwd).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(shell_session_id = %self.session.id, "shell session hold lapsed before the command ended");
                false
            }
            Err(e) => {
                tracing::warn!(shell_session_id = %self.session.id, error = %e, "releasing a shell session failed");
                false
            }
        }
    }
}

/// Where a session's command starts: its stored directory if that still resolves to a
/// directory inside `root`, else the root (with a warning).
fn start_dir(root: &Path, stored: &Path) -> (PathBuf, Option<String>) {
    match inside(root, stored) {
        Some(dir) => (dir, None),
        None => (
            root.to_path_buf(),
            Some(format!(
                "the session's directory {} no longer lies inside the workspace (or is gone); \
                 the command ran in the workspace root",
                stored.display()
            )),
        ),
    }
}

/// Where the session goes next: the directory the command ended in, if it learned one and it is
/// a directory inside `root`. `None` keeps the session where it was (with a warning why).
fn end_dir(root: &Path, start: &Path, marker: &CwdFile) -> (Option<String>, Option<String>) {
    let Some(ended) = marker.read() else {
        return (
            None,
            Some(format!(
                "the command's final directory is unknown (it was killed, timed out or replaced \
                 the shell); the session stays in {}",
                start.display()
            )),
        );
    };
    match inside(root, &ended) {
        Some(dir) => (Some(dir.display().to_string()), None),
        None => (
            None,
            Some(format!(
                "the command ended in {}, outside the workspace {}; the session stays in {}",
                ended.display(),
                root.display(),
                start.display()
            )),
        ),
    }
}

/// `path` canonicalized, if it is a directory inside `root` (and valid UTF-8, as stored).
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let canonical = path.canonicalize().ok()?;
    (canonical.starts_with(root) && canonical.is_dir() && canonical.to_str().is_some())
        .then_some(canonical)
}

/// What the cwd files' names start with, in the temporary directory.
const CWD_FILE_PREFIX: &str = "otter-cwd-";

/// The file the shell writes its final directory to: created fresh (`O_EXCL`, mode 0600) in the
/// temporary directory, given to the command's user, locked by this server while the command
/// runs, removed when dropped.
struct CwdFile {
    path: PathBuf,
    /// Held open and locked: read back through this descriptor, never by name again (the
    /// command could put a symlink or a FIFO in its place), and a file nobody holds is a dead
    /// server's.
    file: Flock<File>,
}

impl CwdFile {
    fn create(isolation: &Isolation) -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("{CWD_FILE_PREFIX}{}", Uuid::new_v4().simple()));
        // Made, locked and given away under a hidden name `recover` does not look at, so that a
        // server starting meanwhile never sees it unlocked.
        let file = create_locked_file(&path, isolation.job_user())?;
        Ok(Self { path, file })
    }

    /// The directory written, without the newline `pwd` adds; `None` if nothing was.
    fn read(&self) -> Option<PathBuf> {
        let mut bytes = vec![0; files::MAX_PATH_BYTES + 2];
        let mut len = 0;
        while len < bytes.len() {
            match self.file.read_at(&mut bytes[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(_) => return None,
            }
        }
        bytes.truncate(len);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        (!bytes.is_empty() && bytes.len() <= files::MAX_PATH_BYTES)
            .then(|| PathBuf::from(OsString::from_vec(bytes)))
    }
}

impl Drop for CwdFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Cleans what a server killed on this host (SIGKILL, a crash) left behind: the processes of its
/// commands (killed), their sessions' holds (released now rather than when they lapse) and its
/// cwd files. Harmless beside live servers, whose commands are locked: servers run it at start
/// and then every few seconds.
pub async fn recover(pool: &PgPool, isolation: &Isolation) {
    for name in isolation.sweep(&[UnitKind::Command]).await {
        let Some((session, holder)) = name.command_hold() else {
            continue;
        };
        match shell_sessions::abandon(pool, session, holder).await {
            Ok(true) => {
                tracing::warn!(shell_session_id = %session, "released the session of a command whose server died")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(shell_session_id = %session, error = %e, "could not release the session of a command whose server died")
            }
        }
    }
    let _ = tokio::task::spawn_blocking(remove_dead_cwd_files).await;
}

/// Removes the cwd files in the temporary directory that no live server holds.
fn remove_dead_cwd_files() {
    let dir = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(CWD_FILE_PREFIX) {
            continue;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(entry.path());
        if let Ok(file) = opened
            && Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The script `sh -c` runs: an EXIT trap that records the final directory, then the command.
fn script(command: &str, cwd_file: &Path) -> OsString {
    let mut record = b"pwd -P >".to_vec();
    record.extend(sh_quote(cwd_file.as_os_str().as_bytes()));
    let mut script = b"trap ".to_vec();
    script.extend(sh_quote(&record));
    script.extend(b" EXIT\n");
    script.extend(command.as_bytes());
    OsString::from_vec(script)
}

/// `s` as one single-quoted shell word.
fn sh_quote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// How much of each stream is kept.
#[derive(Debug, Clone, Copy)]
struct Caps {
    bytes: usize,
    lines: usize,
}

/// One stream's kept output: at most `caps.bytes` bytes and `caps.lines` lines.
#[derive(Debug)]
struct Captured {
    caps: Caps,
    text: String,
    lines: usize,
    truncated: bool,
}

impl Captured {
    fn new(caps: Caps) -> Self {
        Self {
            caps,
            text: String::new(),
            lines: 0,
            truncated: false,
        }
    }

    fn push(&mut self, line: &str) {
        if self.truncated {
            return;
        }
        if self.lines == self.caps.lines {
            self.truncated = true;
            return;
        }
        self.lines += 1;
        let room = self.caps.bytes - self.text.len();
        if line.len() < room {
            self.text.push_str(line);
            self.text.push('\n');
        } else {
            let mut cut = room.min(line.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&line[..cut]);
            self.truncated = true;
        }
    }
}

/// Reads the runner's lines to the end, keeping at most `caps` of each stream (the rest is read
/// and dropped, so the command never blocks on a full pipe).
async fn collect(mut rx: mpsc::UnboundedReceiver<Line>, caps: Caps) -> (Captured, Captured) {
    let (mut stdout, mut stderr) = (Captured::new(caps), Captured::new(caps));
    while let Some(line) = rx.recv().await {
        match line.stream {
            OutputStream::Stderr => stderr.push(&line.text),
            OutputStream::Stdout | OutputStream::Setup | OutputStream::Runtime => {
                stdout.push(&line.text)
            }
        }
    }
    (stdout, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote(b"a'b"), b"'a'\\''b'".to_vec());
        for word in ["plain", "x y'z", "$(touch /tmp/no)", "'", "a\nb"] {
            let mut script = OsString::from("printf %s ");
            script.push(OsString::from_vec(sh_quote(word.as_bytes())));
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    const CAPS: Caps = Caps {
        bytes: MAX_OUTPUT_BYTES,
        lines: MAX_OUTPUT_LINES,
    };

    #[test]
    fn output_is_capped_on_a_character_boundary() {
        let mut c = Captured::new(CAPS);
        c.push(&"a".repeat(MAX_OUTPUT_BYTES - 2));
        assert!(!c.truncated);
        c.push("éé");
        assert!(c.truncated);
        assert!(c.text.len() <= MAX_OUTPUT_BYTES);
        c.push("more");
        assert!(!c.text.ends_with("more"));
    }

    #[test]
    fn output_is_capped_by_lines_too() {
        let mut c = Captured::new(Caps {
            bytes: 100,
            lines: 3,
        });
        for _ in 0..3 {
            c.push("");
        }
        assert!(!c.truncated);
        assert_eq!(c.text, "\n\n\n");
        c.push("");
        assert!(c.truncated);
        assert_eq!((c.text.as_str(), c.lines), ("\n\n\n", 3));
        // Bytes still count: a line that does not fit is cut.
        let mut c = Captured::new(Caps { bytes: 4, lines: 3 });
        c.push("abcdef");
        assert!(c.truncated);
        assert_eq!(c.text, "abcd");
    }

    #[test]
    fn requests_are_checked() {
        assert!(check_command("  ").is_err());
        assert!(check_command("a\0b").is_err());
        assert!(check_command(&"x".repeat(MAX_COMMAND_BYTES + 1)).is_err());
        assert!(check_command("ls").is_ok());
        assert_eq!(check_timeout(None).ok(), Some(Duration::from_secs(60)));
        assert!(check_timeout(Some(0)).is_err());
        assert!(check_timeout(Some(601)).is_err());
    }

    #[tokio::test]
    async fn the_script_records_where_the_shell_ended() {
        let dir = std::env::temp_dir()
            .canonicalize()
            .expect("tmp")
            .join(format!("otter-shell-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        let own_user = Isolation::new(None, &crate::config::CgroupRoot::None, "shell-tests")
            .expect("isolation");
        let marker = CwdFile::create(&own_user).expect("cwd file");
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script("cd sub && echo moved; exit 3", &marker.path))
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("sh");
        assert_eq!(status.code(), Some(3));
        assert_eq!(marker.read(), Some(dir.join("sub")));
        let (next, warning) = end_dir(&dir, &dir, &marker);
        assert_eq!(next, Some(dir.join("sub").display().to_string()));
        assert!(warning.is_none());

        std::fs::write(&marker.path, "/\n").expect("write");
        let (next, warning) = end_dir(&dir.join("sub"), &dir, &marker);
        assert!(next.is_none());
        assert!(warning.expect("warning").contains("outside"));
        let path = marker.path.clone();
        drop(marker);
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).ok();
    }
}
