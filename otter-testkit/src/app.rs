//! [`TestApp`]: a real server on 127.0.0.1 over a fresh PostgreSQL database and a private Redis
//! queue, with typed request helpers; and [`assert_error`], the API's error shape.

use std::sync::Arc;
use std::time::Duration;

use otter_core::Config;
use otter_core::isolation::Isolation;
use otter_core::testing::TestEnv;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::processes_naming;

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
        crate::jobs::submit(self, workspace, prompt, json!({})).await
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

/// The `Content-Type` of `resp`, empty when it has none.
pub fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
