//! # otter-testkit
//!
//! Support for Otter's own integration tests: [`TestApp`] runs a real server on 127.0.0.1 over a
//! fresh PostgreSQL database and a private Redis queue, [`SseClient`] reads an SSE stream frame
//! by frame, and [`assert_error`] checks the API's error shape. Never used in production.

use std::sync::Arc;
use std::time::Duration;

use otter_core::Config;
use otter_core::isolation::Isolation;
pub use otter_core::testing::{TestEnv, reachable_by_jobs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A running server for one test.
pub struct TestApp {
    pub env: TestEnv,
    pub base: String,
    pub client: reqwest::Client,
    pub state: otter_server::AppState,
    /// The bearer token the helpers send: the first of `OTTER_API_TOKENS` when the test set it.
    pub token: Option<String>,
    extra: Vec<(String, String)>,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(extra: &[(&str, &str)]) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            otter_core::telemetry::init(otter_core::config::LogFormat::Text);
        }
        let env = TestEnv::new().await;
        Self::start(env, extra).await
    }

    /// A second server on the same database, Redis prefix and configuration (another replica).
    pub async fn replica(&self) -> Self {
        let env = TestEnv {
            database_url: self.env.database_url.clone(),
            redis_url: self.env.redis_url.clone(),
            queue_name: self.env.queue_name.clone(),
            dir: self.env.dir.clone(),
        };
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Self::start(env, &extra).await
    }

    /// A server on `env` (whose directory a test may prepare first) with `extra` settings.
    pub async fn start(env: TestEnv, extra: &[(&str, &str)]) -> Self {
        let config: Config = env.config(extra);
        let token = config.api_tokens.first().map(|t| t.expose().to_owned());
        let shutdown = CancellationToken::new();
        let isolation = Arc::new(Isolation::from_config(&config).expect(
            "isolation: as root, the job user must exist (scripts/services.sh start creates it)",
        ));
        let state = otter_server::build_state(Arc::new(config), isolation, shutdown.clone())
            .await
            .expect("server state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(otter_server::serve_on(listener, state.clone()));
        Self {
            env,
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            state,
            token,
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            shutdown,
        }
    }

    /// Sends a request with the app's token (if any); the body is JSON when given.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request_as(self.token.as_deref(), method, path, body)
            .await
    }

    /// Sends a request with `token` as its bearer token (none when `None`).
    pub async fn request_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self.send(self.builder_as(token, method, path), body).await;
        (status, value)
    }

    /// A request builder for `path` carrying the app's token (if any).
    pub fn builder(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.builder_as(self.token.as_deref(), method, path)
    }

    /// A request builder for `path` carrying `token` (none when `None`).
    pub fn builder_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends `req` (with a JSON `body` when given); returns the status, the headers and the body
    /// (as JSON when it parses, else as a string).
    pub async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    /// Creates a workspace on a fresh directory (made by Otter, so that it belongs to the job
    /// user when Otter runs as root) and returns its JSON.
    pub async fn workspace(&self, name: &str) -> Value {
        let dir = self.env.dir.join(name);
        let (status, body) = self
            .post(
                "/v1/workspaces",
                json!({ "name": name, "path": dir.display().to_string(), "create": true }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Waits (up to 10 s) until no process started for this test is left: none whose
    /// environment, command line or working directory names this test's scratch directory
    /// (every child of Otter's has `VIBE_HOME` below it; the test's own processes carry it in
    /// `OTTER_VIBE_HOME_BASE`, their arguments or their directory). Panics listing them.
    pub async fn assert_no_processes_left(&self) {
        let marker = self.env.dir.display().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_naming(&marker);
            if left.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "processes of this test are still running: {left:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submits `prompt` to `workspace` (a JSON from [`TestApp::workspace`]) and returns the job's
    /// JSON.
    pub async fn submit(&self, workspace: &Value, prompt: &str) -> Value {
        let (status, job) = self
            .post(
                "/v1/prompts",
                json!({ "prompt": prompt, "workspace_id": workspace["id"] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        job
    }
}

/// Asserts the error shape of DESIGN.md §2.7 and returns the message.
pub fn assert_error(
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    want_code: &str,
) -> String {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message is a string")
        .to_owned();
    assert!(!message.is_empty());
    message
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    /// `id:`, if any.
    pub id: Option<String>,
    /// `event:`, if any.
    pub event: Option<String>,
    /// `data:` lines joined by `\n`.
    pub data: String,
}

impl SseFrame {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The id as a number.
    pub fn id_num(&self) -> Option<i64> {
        self.id.as_deref().and_then(|id| id.parse().ok())
    }
}

/// A client reading one SSE response frame by frame.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseClient {
    /// Opens `path` on `app`, with `Last-Event-ID` when given; panics unless the answer is 200.
    pub async fn connect(app: &TestApp, path: &str, last_event_id: Option<i64>) -> Self {
        let mut req = app
            .builder(Method::GET, path)
            .timeout(Duration::from_secs(600));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("SSE request sent");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "SSE answered {}",
            resp.status()
        );
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ended; panics
    /// if none arrives within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseFrame> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut frame = SseFrame::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        frame.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        frame.event = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if frame.id.is_none() && frame.event.is_none() && data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                frame.data = data.join("\n");
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("no SSE event within the deadline");
            match chunk {
                Some(Ok(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(e)) => panic!("SSE stream failed: {e}"),
                None => return None,
            }
        }
    }
}

/// Waits until `check` returns `Some`, polling every 20 ms; panics after `within` with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The living processes (pid and command line) whose environment, command line or working
/// directory contains `marker`; zombies and this process excluded.
pub fn processes_naming(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let needle = marker.as_bytes();
    let has = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
        if state.is_empty() || state.starts_with('Z') || state.starts_with('X') {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if has(&environ) || has(&cmdline) || has(cwd.as_bytes()) {
            let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, shown));
        }
    }
    found
}

/// What an operator does to an existing directory before registering it as a workspace when
/// Otter runs as root (Otter gives away only what it creates itself): `chown -R otter-job:` it.
/// Nothing to do when the tests do not run as root.
pub fn give_to_job_user(dir: &std::path::Path) {
    if otter_core::isolation::JobUser::resolve("otter-job")
        .expect("as root, the job user otter-job must exist")
        .is_none()
    {
        return;
    }
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg("otter-job:")
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown -R otter-job: {}", dir.display());
}

/// Fails the test `test` because `what` is missing. A prerequisite the test scripts cannot
/// install (a Docker engine) is never a reason to pass: `scripts/test.sh` installs what it can
/// and refuses to start the tests without a Docker engine.
pub fn prerequisite_missing(test: &str, what: &str) -> ! {
    panic!("{test}: {what}; this test needs it (scripts/test.sh installs what it can)")
}
