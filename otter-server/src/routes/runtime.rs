//! `/v1/runtime`: the runtime container of a workspace (DESIGN.md §7): status, start, stop,
//! restart, logs, an interactive shell over WebSocket, and the cleanup of containers whose
//! workspace is gone. The Docker work is `otter_core::runtime`'s; this module maps it to HTTP.
//!
//! With `OTTER_RUNTIME_ENABLED=false` every route answers 503 `unavailable`, saying so.
//!
//! The shell (`GET /v1/runtime/workspaces/{id}/shell/ws`) speaks this protocol:
//! - server → client: first a text frame `{"type":"ready","exec_id":"…"}`, then the terminal's
//!   output as binary frames, and at the end `{"type":"exit","exit_code":n}` and a close frame;
//! - client → server: binary frames are typed input; a text frame is a JSON control message,
//!   `{"type":"input","data":"ls\n"}` or `{"type":"resize","cols":120,"rows":40}`, and any
//!   other text is typed input as it is.
//!
//! Closing the socket ends the shell: it is hung up (SIGHUP, then SIGKILL), as a terminal would.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use otter_core::db::{jobs, workspaces};
use otter_core::model::{Workspace, WorkspaceId};
use otter_core::runtime::{
    BuildSummary, CleanupReport, ExecSession, LogLine, Runtime, RuntimeAction, RuntimeError,
    RuntimeInfo, RuntimeOutcome, StartOptions, TermSize,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{AppError, AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/runtime/workspaces/{id}", get(get_runtime))
        .route("/v1/runtime/workspaces/{id}/start", post(start_runtime))
        .route("/v1/runtime/workspaces/{id}/stop", post(stop_runtime))
        .route("/v1/runtime/workspaces/{id}/restart", post(restart_runtime))
        .route("/v1/runtime/workspaces/{id}/logs", get(get_runtime_logs))
        .route(
            "/v1/runtime/workspaces/{id}/shell/ws",
            get(open_runtime_shell),
        )
        .route("/v1/runtime/cleanup", post(cleanup_runtime))
}

/// The runtime, or 503 when it is disabled.
pub(crate) fn runtime(state: &AppState) -> Result<Arc<Runtime>> {
    state
        .runtime
        .clone()
        .ok_or_else(|| RuntimeError::Disabled.into())
}

/// A runtime's state as the API shows it: the container's, plus the preferred preview URL.
#[derive(Debug, Serialize)]
struct RuntimeView {
    #[serde(flatten)]
    info: RuntimeInfo,
    /// The URL to show: the one posted for the workspace's newest job that has one, else the
    /// runtime URL.
    preview_url: Option<String>,
    /// `job` or `runtime`: where `preview_url` comes from.
    preview_url_source: Option<&'static str>,
    /// The URL posted for one of the workspace's jobs, if any.
    job_preview_url: Option<String>,
}

impl RuntimeView {
    async fn of(state: &AppState, info: RuntimeInfo) -> Result<Self> {
        let job_preview_url = jobs::latest_preview_url(&state.db, info.workspace_id).await?;
        let (preview_url, preview_url_source) = match (&job_preview_url, &info.runtime_url) {
            (Some(url), _) => (Some(url.clone()), Some("job")),
            (None, Some(url)) => (Some(url.clone()), Some("runtime")),
            (None, None) => (None, None),
        };
        Ok(Self {
            info,
            preview_url,
            preview_url_source,
            job_preview_url,
        })
    }
}

/// The answer to `start`, `restart` and `stop`.
#[derive(Debug, Serialize)]
struct OutcomeView {
    action: RuntimeAction,
    #[serde(flatten)]
    runtime: RuntimeView,
    build: Option<BuildSummary>,
}

impl OutcomeView {
    async fn of(state: &AppState, outcome: RuntimeOutcome) -> Result<Self> {
        Ok(Self {
            action: outcome.action,
            runtime: RuntimeView::of(state, outcome.runtime).await?,
            build: outcome.build,
        })
    }
}

async fn workspace(state: &AppState, id: WorkspaceId) -> Result<Workspace> {
    Ok(workspaces::get(&state.db, id).await?)
}

async fn get_runtime(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
) -> Result<AppJson<RuntimeView>> {
    let runtime = runtime(&state)?;
    workspace(&state, id).await?;
    let info = runtime.status(id).await?;
    Ok(AppJson(RuntimeView::of(&state, info).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    /// The app's main port inside the container, when the image does not `EXPOSE` it.
    port: Option<u16>,
}

async fn start_runtime(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppQuery(q): AppQuery<StartQuery>,
) -> Result<AppJson<OutcomeView>> {
    build_and_run(&state, id, q, false).await
}

async fn restart_runtime(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppQuery(q): AppQuery<StartQuery>,
) -> Result<AppJson<OutcomeView>> {
    build_and_run(&state, id, q, true).await
}

/// Start (idempotent) or restart (always rebuilds) a workspace's container.
async fn build_and_run(
    state: &AppState,
    id: WorkspaceId,
    q: StartQuery,
    restart: bool,
) -> Result<AppJson<OutcomeView>> {
    let runtime = runtime(state)?;
    let ws = workspace(state, id).await?;
    let options = StartOptions { port: q.port };
    let outcome = if restart {
        runtime.restart(&state.db, &ws, options).await?
    } else {
        runtime.start(&state.db, &ws, options).await?
    };
    Ok(AppJson(OutcomeView::of(state, outcome).await?))
}

async fn stop_runtime(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
) -> Result<AppJson<OutcomeView>> {
    let runtime = runtime(&state)?;
    workspace(&state, id).await?;
    let outcome = runtime.stop(id).await?;
    Ok(AppJson(OutcomeView::of(&state, outcome).await?))
}

/// Lines of log returned when `?tail=` is not given.
const DEFAULT_TAIL: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// The last this many lines (default 200, at most `OTTER_RUNTIME_MAX_LOG_LINES`).
    tail: Option<usize>,
}

#[derive(Debug, Serialize)]
struct LogsView {
    workspace_id: WorkspaceId,
    /// The number of lines asked for, after the cap.
    tail: usize,
    /// `OTTER_RUNTIME_MAX_LOG_LINES`.
    max_log_lines: usize,
    lines: Vec<LogLine>,
}

async fn get_runtime_logs(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppQuery(q): AppQuery<LogsQuery>,
) -> Result<AppJson<LogsView>> {
    let runtime = runtime(&state)?;
    let tail = q.tail.unwrap_or(DEFAULT_TAIL);
    if tail == 0 {
        return Err(AppError::Validation("tail must be at least 1".to_owned()));
    }
    workspace(&state, id).await?;
    let (lines, tail) = runtime.logs(id, tail).await?;
    Ok(AppJson(LogsView {
        workspace_id: id,
        tail,
        max_log_lines: runtime.settings().max_log_lines,
        lines,
    }))
}

async fn cleanup_runtime(State(state): State<AppState>) -> Result<AppJson<CleanupReport>> {
    let runtime = runtime(&state)?;
    Ok(AppJson(runtime.cleanup_orphans(&state.db).await?))
}

/// The command a shell runs when the client names none: bash when the image has it, else sh.
const DEFAULT_SHELL: &[&str] = &[
    "/bin/sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellQuery {
    /// The shell to run (an absolute path), instead of bash-or-sh.
    shell: Option<String>,
    /// The terminal's initial width.
    cols: Option<u16>,
    /// The terminal's initial height.
    rows: Option<u16>,
    /// A browser's bearer token (checked by the authentication layer, unused here).
    #[serde(rename = "access_token")]
    _access_token: Option<String>,
}

async fn open_runtime_shell(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppQuery(q): AppQuery<ShellQuery>,
    upgrade: std::result::Result<
        WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response> {
    let runtime = runtime(&state)?;
    let upgrade = upgrade.map_err(|_| {
        AppError::Validation(
            "this endpoint is a WebSocket: connect with an Upgrade: websocket request".to_owned(),
        )
    })?;
    let command = match q.shell {
        None => DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect(),
        Some(shell) if shell.starts_with('/') && shell.len() <= 256 && !shell.contains('\0') => {
            vec![shell]
        }
        Some(_) => {
            return Err(AppError::Validation(
                "shell must be an absolute path, e.g. /bin/sh".to_owned(),
            ));
        }
    };
    let size = match (q.cols, q.rows) {
        (Some(cols), Some(rows)) => Some(TermSize { cols, rows }),
        (None, None) => None,
        _ => {
            return Err(AppError::Validation("cols and rows go together".to_owned()));
        }
    };
    workspace(&state, id).await?;
    // Opened before the upgrade, so that a stopped container is a plain 409, not a socket
    // that closes at once.
    let session = runtime.open_shell(id, command, size).await?;
    tracing::info!(workspace_id = %id, exec_id = %session.id, "runtime shell opened");
    let shutdown = state.shutdown.clone();
    Ok(upgrade.on_upgrade(move |socket: WebSocket| async move {
        let ExecSession {
            id: exec_id,
            pid,
            output,
            input,
        } = session;
        let control = DockerShell {
            runtime: runtime.clone(),
            exec_id: exec_id.clone(),
        };
        let (sink, stream) = socket.split();
        tokio::select! {
            () = pump_shell(sink, stream, output, input, control) => {}
            () = shutdown.cancelled() => {}
        }
        // Closing the socket ends the shell (the engine would keep it running).
        if let Err(e) = runtime.hang_up_shell(id, &exec_id, pid).await {
            tracing::warn!(workspace_id = %id, %exec_id, error = %e, "shell not ended");
        }
        tracing::info!(workspace_id = %id, %exec_id, "runtime shell closed");
    }))
}

/// How long a quiet shell socket waits before it sends a ping (the SSE stream's keep-alive
/// period too).
const SHELL_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// What the shell pump needs besides the terminal's bytes (a trait so that tests can run the
/// pump without Docker).
pub(crate) trait ShellControl: Send + Sync + 'static {
    /// The exec's id.
    fn exec_id(&self) -> &str;
    /// Resizes the terminal.
    fn resize(&self, size: TermSize) -> impl Future<Output = ()> + Send;
    /// The shell's exit code, once it ended.
    fn exit_code(&self) -> impl Future<Output = Option<i64>> + Send;
}

struct DockerShell {
    runtime: Arc<Runtime>,
    exec_id: String,
}

impl ShellControl for DockerShell {
    fn exec_id(&self) -> &str {
        &self.exec_id
    }

    async fn resize(&self, size: TermSize) {
        if let Err(e) = self.runtime.resize_shell(&self.exec_id, size).await {
            tracing::debug!(exec_id = %self.exec_id, error = %e, "shell resize failed");
        }
    }

    async fn exit_code(&self) -> Option<i64> {
        // The engine records the exit code a moment after the output ends.
        for _ in 0..20 {
            match self.runtime.shell_state(&self.exec_id).await {
                Ok(state) if !state.running => return state.exit_code,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
                Err(_) => return None,
            }
        }
        None
    }
}

/// A control message of the client.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Input { data: String },
    Resize { cols: u16, rows: u16 },
}

/// Runs one shell session: terminal output to the socket, socket input to the terminal. Two
/// tasks; when one ends (the shell exited, or the client went away) the other is aborted, and
/// dropping the terminal's ends closes it.
pub(crate) async fn pump_shell<Tx, Rx, E, Out, In, C>(
    mut sink: Tx,
    mut stream: Rx,
    mut output: Out,
    mut input: In,
    control: C,
) where
    Tx: Sink<Message> + Unpin + Send + 'static,
    Rx: Stream<Item = std::result::Result<Message, E>> + Unpin + Send + 'static,
    E: Send + 'static,
    Out: Stream<Item = std::result::Result<Bytes, RuntimeError>> + Unpin + Send + 'static,
    In: AsyncWrite + Unpin + Send + 'static,
    C: ShellControl,
{
    let control = Arc::new(control);
    let ready = json!({ "type": "ready", "exec_id": control.exec_id() }).to_string();
    if sink.send(Message::Text(ready.into())).await.is_err() {
        return;
    }
    // A JoinSet aborts what is left of its tasks when dropped: when the pump's future is
    // dropped (shutdown), neither direction lingers.
    let mut tasks = tokio::task::JoinSet::new();
    let to_client_control = control.clone();
    tasks.spawn(async move {
        // A ping whenever the terminal is quiet this long, so that proxies in front, which
        // close connections silent for a minute or so, keep the socket open.
        let mut keep_alive = tokio::time::interval_at(
            tokio::time::Instant::now() + SHELL_KEEP_ALIVE,
            SHELL_KEEP_ALIVE,
        );
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let chunk = tokio::select! {
                chunk = output.next() => chunk,
                _ = keep_alive.tick() => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(Ok(bytes)) = chunk else { break };
            keep_alive.reset();
            if sink.send(Message::Binary(bytes)).await.is_err() {
                return;
            }
        }
        let exit_code = to_client_control.exit_code().await;
        let exit = json!({ "type": "exit", "exit_code": exit_code }).to_string();
        let _ = sink.send(Message::Text(exit.into())).await;
        let _ = sink.send(Message::Close(None)).await;
    });
    tasks.spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let data: Bytes = match message {
                Message::Binary(data) => data,
                Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Input { data }) => Bytes::from(data),
                    Ok(ClientMessage::Resize { cols, rows }) => {
                        control.resize(TermSize { cols, rows }).await;
                        continue;
                    }
                    Err(_) => Bytes::from(text.as_str().to_owned()),
                },
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if input.write_all(&data).await.is_err() || input.flush().await.is_err() {
                break;
            }
        }
        let _ = input.shutdown().await;
    });
    // The first direction to end ends the session.
    let _ = tasks.join_next().await;
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::channel::mpsc;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[derive(Default)]
    struct FakeShell {
        resizes: Mutex<Vec<TermSize>>,
    }

    impl ShellControl for Arc<FakeShell> {
        fn exec_id(&self) -> &str {
            "exec-1"
        }

        async fn resize(&self, size: TermSize) {
            self.resizes.lock().unwrap().push(size);
        }

        async fn exit_code(&self) -> Option<i64> {
            Some(3)
        }
    }

    fn text(m: &Message) -> serde_json::Value {
        match m {
            Message::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pump_forwards_both_ways_and_reports_the_exit() {
        let (sink_tx, mut sink_rx) = mpsc::unbounded::<Message>();
        let (client_tx, client_rx) = mpsc::unbounded::<std::result::Result<Message, ()>>();
        let (out_tx, out_rx) = mpsc::unbounded::<std::result::Result<Bytes, RuntimeError>>();
        let (terminal, mut shell_side) = tokio::io::duplex(1024);
        let fake = Arc::new(FakeShell::default());
        let pump = tokio::spawn(pump_shell(
            sink_tx,
            client_rx,
            out_rx,
            terminal,
            fake.clone(),
        ));

        let ready = sink_rx.next().await.unwrap();
        assert_eq!(text(&ready)["type"], "ready");
        assert_eq!(text(&ready)["exec_id"], "exec-1");

        client_tx
            .unbounded_send(Ok(Message::Binary(Bytes::from_static(b"ls\n"))))
            .unwrap();
        client_tx
            .unbounded_send(Ok(Message::Text(
                r#"{"type":"input","data":"pwd\n"}"#.into(),
            )))
            .unwrap();
        client_tx
            .unbounded_send(Ok(Message::Text(
                r#"{"type":"resize","cols":100,"rows":30}"#.into(),
            )))
            .unwrap();
        client_tx
            .unbounded_send(Ok(Message::Text("echo raw\n".into())))
            .unwrap();
        let mut typed = vec![0u8; 16];
        tokio::time::timeout(Duration::from_secs(5), shell_side.read_exact(&mut typed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(typed, b"ls\npwd\necho raw\n");
        assert_eq!(
            fake.resizes.lock().unwrap().as_slice(),
            &[TermSize {
                cols: 100,
                rows: 30
            }]
        );

        out_tx
            .unbounded_send(Ok(Bytes::from_static(b"hi\r\n")))
            .unwrap();
        assert_eq!(
            sink_rx.next().await.unwrap(),
            Message::Binary(Bytes::from_static(b"hi\r\n"))
        );
        drop(out_tx); // the shell exited
        let exit = sink_rx.next().await.unwrap();
        assert_eq!(text(&exit)["type"], "exit");
        assert_eq!(text(&exit)["exit_code"], 3);
        assert!(matches!(sink_rx.next().await, Some(Message::Close(_))));
        tokio::time::timeout(Duration::from_secs(5), pump)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_shell_socket_is_kept_alive_with_pings() {
        let (sink_tx, mut sink_rx) = mpsc::unbounded::<Message>();
        let (_client_tx, client_rx) = mpsc::unbounded::<std::result::Result<Message, ()>>();
        let (out_tx, out_rx) = mpsc::unbounded::<std::result::Result<Bytes, RuntimeError>>();
        let (terminal, _shell_side) = tokio::io::duplex(1024);
        let _pump = tokio::spawn(pump_shell(
            sink_tx,
            client_rx,
            out_rx,
            terminal,
            Arc::new(FakeShell::default()),
        ));
        let start = tokio::time::Instant::now();
        assert_eq!(text(&sink_rx.next().await.unwrap())["type"], "ready");
        // Nothing to send: a ping every period (the paused clock jumps to each).
        for n in 1..=3 {
            assert_eq!(sink_rx.next().await, Some(Message::Ping(Bytes::new())));
            assert_eq!(start.elapsed(), SHELL_KEEP_ALIVE * n);
        }
        // Output pushes the next ping back.
        tokio::time::advance(SHELL_KEEP_ALIVE / 2).await;
        out_tx.unbounded_send(Ok(Bytes::from_static(b"x"))).unwrap();
        assert_eq!(
            sink_rx.next().await,
            Some(Message::Binary(Bytes::from_static(b"x")))
        );
        let output_at = start.elapsed();
        assert_eq!(sink_rx.next().await, Some(Message::Ping(Bytes::new())));
        assert_eq!(start.elapsed(), output_at + SHELL_KEEP_ALIVE);
    }

    #[tokio::test]
    async fn closing_the_socket_closes_the_terminal() {
        let (sink_tx, mut sink_rx) = mpsc::unbounded::<Message>();
        let (client_tx, client_rx) = mpsc::unbounded::<std::result::Result<Message, ()>>();
        let (_out_tx, out_rx) = mpsc::unbounded::<std::result::Result<Bytes, RuntimeError>>();
        let (terminal, mut shell_side) = tokio::io::duplex(1024);
        let pump = tokio::spawn(pump_shell(
            sink_tx,
            client_rx,
            out_rx,
            terminal,
            Arc::new(FakeShell::default()),
        ));
        sink_rx.next().await.unwrap();
        client_tx.unbounded_send(Ok(Message::Close(None))).unwrap();
        // The pump ends although the shell's output never ended, and the terminal sees EOF.
        tokio::time::timeout(Duration::from_secs(5), pump)
            .await
            .unwrap()
            .unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), shell_side.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }
}
