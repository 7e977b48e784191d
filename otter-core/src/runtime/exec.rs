//! Interactive shells in a runtime container: `docker exec` with a TTY, its input as a byte
//! writer and its output as a byte stream, terminal resizing, and hanging up.
//!
//! With a TTY the engine sends the terminal's bytes raw (no stdout/stderr framing), so the
//! output is passed on as it comes; it may split a UTF-8 character, which terminals handle.
//!
//! Hanging up: the engine has no call that ends an exec, and closing its connection leaves the
//! process running. So the shell is started through a `/bin/sh -c` wrapper that first prints
//! its own PID in an OSC escape sequence (`ESC ] otter-shell-pid ; <pid> BEL`, which terminals
//! ignore and this module strips), then `exec`s the shell, which keeps that PID. [`hang_up`]
//! sends that PID SIGHUP (and SIGKILL if it lingers) through a second exec, like a terminal
//! hang-up: the shell ends, and the kernel hangs up its foreground job.
//!
//! [`Runtime`]'s shell calls (open, resize, hang up, state) are here too: they check the
//! container, then call these.

use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptions;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use super::{Runtime, RuntimeError, is_status};
use crate::model::WorkspaceId;

/// Start of the escape sequence that carries the shell's PID.
const PID_MARK: &[u8] = b"\x1b]otter-shell-pid;";

/// How long the PID may take to arrive before the output is passed on without it.
const PID_WAIT: Duration = Duration::from_secs(5);

/// How long a hung-up shell gets before SIGKILL.
const HANG_UP_GRACE: Duration = Duration::from_secs(2);

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TermSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// An open shell: write to `input`, read `output`; [`crate::runtime::Runtime::hang_up_shell`]
/// ends it.
pub struct ExecSession {
    /// The exec's id (for resizing, inspecting and hanging up).
    pub id: String,
    /// The shell's PID inside the container, when the wrapper could report it.
    pub pid: Option<u32>,
    /// The terminal's output.
    pub output: Pin<Box<dyn Stream<Item = Result<Bytes, RuntimeError>> + Send>>,
    /// The terminal's input.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// A shell's process, as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ShellState {
    /// Whether it still runs (false when the engine no longer knows the exec).
    pub running: bool,
    /// Its exit code, once it ended.
    pub exit_code: Option<i64>,
}

/// `command` behind the wrapper that reports the PID (see the module docs).
fn wrapped(command: Vec<String>) -> Vec<String> {
    let mut argv = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        r#"printf '\033]otter-shell-pid;%s\007' "$$"; exec "$@""#.to_owned(),
        "otter-shell".to_owned(),
    ];
    argv.extend(command);
    argv
}

pub(super) async fn open(
    docker: &Docker,
    container: &str,
    command: Vec<String>,
    size: Option<TermSize>,
) -> Result<ExecSession, DockerError> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(wrapped(command)),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(true),
                env: Some(vec!["TERM=xterm-256color".to_owned()]),
                ..Default::default()
            },
        )
        .await?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: true,
                output_capacity: None,
            }),
        )
        .await?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(DockerError::DockerStreamError {
            error: "the engine started the shell detached".to_owned(),
        });
    };
    if let Some(size) = size {
        // The process may not have started yet; a failed first resize is not fatal.
        if let Err(e) = resize(docker, &exec.id, size).await {
            tracing::debug!(exec_id = %exec.id, error = %e, "first resize failed");
        }
    }
    let mut output = output.map(|item| {
        item.map(bollard::container::LogOutput::into_bytes)
            .map_err(|e| RuntimeError::Docker(e.to_string()))
    });
    // Read up to the PID (the wrapper prints it first), keeping whatever else came.
    let mut head: Vec<u8> = Vec::new();
    let mut ended: Option<Result<Bytes, RuntimeError>> = None;
    let deadline = tokio::time::Instant::now() + PID_WAIT;
    let mut pid = None;
    while pid.is_none() && head.len() < 4096 {
        match tokio::time::timeout_at(deadline, output.next()).await {
            Ok(Some(Ok(chunk))) => {
                head.extend_from_slice(&chunk);
                pid = take_pid(&mut head);
            }
            Ok(Some(Err(e))) => {
                ended = Some(Err(e));
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut first: Vec<Result<Bytes, RuntimeError>> = Vec::new();
    if !head.is_empty() {
        first.push(Ok(Bytes::from(head)));
    }
    first.extend(ended);
    Ok(ExecSession {
        id: exec.id,
        pid,
        output: Box::pin(futures::stream::iter(first).chain(output)),
        input,
    })
}

/// Finds, parses and removes the PID escape sequence from `buf`.
fn take_pid(buf: &mut Vec<u8>) -> Option<u32> {
    let start = buf.windows(PID_MARK.len()).position(|w| w == PID_MARK)?;
    let digits_at = start + PID_MARK.len();
    let end = digits_at + buf[digits_at..].iter().position(|b| *b == 0x07)?;
    let pid = std::str::from_utf8(&buf[digits_at..end]).ok()?.parse().ok();
    buf.drain(start..=end);
    pid
}

pub(super) async fn resize(docker: &Docker, id: &str, size: TermSize) -> Result<(), DockerError> {
    docker
        .resize_exec(
            id,
            ResizeExecOptions {
                h: i32::from(size.rows.max(1)),
                w: i32::from(size.cols.max(1)),
            },
        )
        .await
}

pub(super) async fn state(docker: &Docker, id: &str) -> Result<ShellState, DockerError> {
    match docker.inspect_exec(id).await {
        Ok(exec) => {
            let running = exec.running.unwrap_or(false);
            Ok(ShellState {
                running,
                exit_code: if running { None } else { exec.exit_code },
            })
        }
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(ShellState {
            running: false,
            exit_code: None,
        }),
        Err(e) => Err(e),
    }
}

/// Ends a shell that still runs: SIGHUP to its PID, SIGKILL after [`HANG_UP_GRACE`].
pub(super) async fn hang_up(
    docker: &Docker,
    container: &str,
    id: &str,
    pid: u32,
) -> Result<(), DockerError> {
    for signal in ["HUP", "KILL"] {
        if !state(docker, id).await?.running {
            return Ok(());
        }
        signal_in(docker, container, pid, signal).await?;
        let deadline = tokio::time::Instant::now() + HANG_UP_GRACE;
        while tokio::time::Instant::now() < deadline {
            if !state(docker, id).await?.running {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn signal_in(
    docker: &Docker,
    container: &str,
    pid: u32,
    signal: &str,
) -> Result<(), DockerError> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec![
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    format!("kill -{signal} {pid}"),
                ]),
                ..Default::default()
            },
        )
        .await?;
    docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: true,
                tty: false,
                output_capacity: None,
            }),
        )
        .await?;
    Ok(())
}

impl Runtime {
    /// Opens an interactive shell (docker exec with a TTY) in the workspace's running container.
    pub async fn open_shell(
        &self,
        id: WorkspaceId,
        command: Vec<String>,
        size: Option<TermSize>,
    ) -> Result<ExecSession, RuntimeError> {
        let docker = self.docker().await?;
        let Some(container) = self.inspect(docker, id).await? else {
            return Err(RuntimeError::NoContainer(id));
        };
        if !container
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false)
        {
            return Err(RuntimeError::NotRunning(id));
        }
        open(docker, &self.container_name(id), command, size)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Resizes a shell's terminal.
    pub async fn resize_shell(&self, exec_id: &str, size: TermSize) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        resize(docker, exec_id, size)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Ends a shell that still runs (the engine keeps an exec running when its connection
    /// closes): SIGHUP, then SIGKILL after 2 s. A shell whose PID is unknown cannot be ended.
    pub async fn hang_up_shell(
        &self,
        id: WorkspaceId,
        exec_id: &str,
        pid: Option<u32>,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let Some(pid) = pid else {
            if state(docker, exec_id)
                .await
                .map_err(|e| self.classify(e))?
                .running
            {
                tracing::warn!(workspace_id = %id, %exec_id, "shell left running: its PID is unknown");
            }
            return Ok(());
        };
        match hang_up(docker, &self.container_name(id), exec_id, pid).await {
            Ok(()) => Ok(()),
            // The container is gone or stopped: so is the shell.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Whether a shell's process still runs, and its exit code once it ended.
    pub async fn shell_state(&self, exec_id: &str) -> Result<ShellState, RuntimeError> {
        let docker = self.docker().await?;
        state(docker, exec_id).await.map_err(|e| self.classify(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_taken_out_of_the_output() {
        let mut buf = b"\x1b]otter-shell-pid;42\x07/ # ".to_vec();
        assert_eq!(take_pid(&mut buf), Some(42));
        assert_eq!(buf, b"/ # ");
        let mut partial = b"\x1b]otter-shell-pid;4".to_vec();
        assert_eq!(take_pid(&mut partial), None);
        assert_eq!(partial, b"\x1b]otter-shell-pid;4");
        let mut none = b"plain".to_vec();
        assert_eq!(take_pid(&mut none), None);
    }

    #[test]
    fn the_wrapper_execs_the_command() {
        let argv = wrapped(vec!["/bin/bash".to_owned()]);
        assert_eq!(argv[0], "/bin/sh");
        assert!(argv[2].ends_with(r#"exec "$@""#));
        assert_eq!(argv[3], "otter-shell");
        assert_eq!(argv[4], "/bin/bash");
    }
}
