//! The locked front door: with `OTTER_API_TOKENS` set, every `/v1` route (the SSE stream and the
//! workspace endpoints included) answers 401 without the right bearer token, `/healthz` stays
//! open, tokens never reach the logs, and request bodies are bounded. Without tokens the server
//! refuses a non-loopback address unless `OTTER_ALLOW_UNAUTHENTICATED=true`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use otter_testkit::{SseClient, TestApp, TestEnv, assert_error};

/// Every route of `/v1`, with ids that exist, so that only the token decides the answer.
async fn every_v1_route(app: &TestApp) -> Vec<(Method, String, Option<Value>)> {
    let (_, project) = app.post("/v1/projects", json!({ "name": "p" })).await;
    let ws = app.workspace("ws").await;
    let (status, job) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "hi", "workspace_id": ws["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let (p, w, j) = (
        project["id"].as_str().unwrap().to_owned(),
        ws["id"].as_str().unwrap().to_owned(),
        job["id"].as_str().unwrap().to_owned(),
    );
    vec![
        (Method::GET, "/v1/projects".to_owned(), None),
        (
            Method::POST,
            "/v1/projects".to_owned(),
            Some(json!({ "name": "x" })),
        ),
        (Method::GET, format!("/v1/projects/{p}"), None),
        (Method::GET, "/v1/workspaces".to_owned(), None),
        (
            Method::POST,
            "/v1/workspaces".to_owned(),
            Some(
                json!({ "path": app.env.dir.join("new-ws").display().to_string(), "create": true }),
            ),
        ),
        (Method::GET, format!("/v1/workspaces/{w}"), None),
        (Method::GET, format!("/v1/workspaces/{w}/tree"), None),
        (Method::GET, format!("/v1/workspaces/{w}/file?path=x"), None),
        (
            Method::POST,
            format!("/v1/workspaces/{w}/command"),
            Some(json!({ "command": "touch unauthorized-ran" })),
        ),
        (
            Method::POST,
            "/v1/workspaces/command".to_owned(),
            Some(json!({ "command": "touch unauthorized-ran", "workspace_id": w })),
        ),
        (
            Method::POST,
            "/v1/prompts".to_owned(),
            Some(json!({ "prompt": "x", "workspace_id": w })),
        ),
        (Method::GET, format!("/v1/jobs/{j}"), None),
        (Method::GET, format!("/v1/jobs/{j}/events"), None),
        (Method::POST, format!("/v1/jobs/{j}/pause"), None),
        (Method::POST, format!("/v1/jobs/{j}/resume"), None),
        (Method::POST, format!("/v1/jobs/{j}/cancel"), None),
        (
            Method::POST,
            format!("/v1/jobs/{j}/preview-url"),
            Some(json!({ "preview_url": "http://localhost:1/" })),
        ),
        (Method::GET, "/v1/history".to_owned(), None),
        (Method::GET, "/v1/queue".to_owned(), None),
        (
            Method::PATCH,
            format!("/v1/queue/{j}"),
            Some(json!({ "priority": 7 })),
        ),
        (Method::GET, "/v1/events/stream".to_owned(), None),
        (Method::GET, format!("/v1/events/stream?job_id={j}"), None),
    ]
}

#[tokio::test]
async fn every_v1_route_requires_a_valid_bearer_token() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "first-token, second-token")]).await;
    let routes = every_v1_route(&app).await;
    let ws_dir = app.env.dir.join("ws");
    let before = app.get("/v1/queue").await.1;

    for (method, path, body) in &routes {
        let builders = [
            app.builder_as(None, method.clone(), path),
            app.builder_as(Some("wrong-token"), method.clone(), path),
            app.builder_as(Some("first-tokenX"), method.clone(), path),
            app.builder_as(None, method.clone(), path)
                .header("authorization", "Basic Zmlyc3QtdG9rZW46"),
            app.builder_as(None, method.clone(), path)
                .header("authorization", "first-token"),
            app.builder_as(None, method.clone(), path)
                .header("x-api-key", "first-token"),
        ];
        for builder in builders {
            let (status, headers, answer) = app.send(builder, body.clone()).await;
            let message = assert_error(status, &answer, StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(
                message.contains("bearer token"),
                "{method} {path}: {message}"
            );
            assert_eq!(
                headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{method} {path}"
            );
        }
    }
    // Nothing any refused request asked for happened.
    assert!(!ws_dir.join("unauthorized-ran").exists());
    assert_eq!(app.get("/v1/queue").await.1, before);
    let (_, projects) = app.get("/v1/projects").await;
    assert_eq!(projects["total"], 1);

    // Each configured token opens every route.
    for token in ["first-token", "second-token"] {
        for (method, path, body) in &routes {
            if path.contains("/events/stream") {
                continue; // an open stream; checked below
            }
            let (status, answer) = app
                .request_as(Some(token), method.clone(), path, body.clone())
                .await;
            assert_ne!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {answer}"
            );
            assert!(
                !status.is_server_error(),
                "{method} {path}: {status} {answer}"
            );
        }
    }
    assert!(ws_dir.join("unauthorized-ran").exists());
}

#[tokio::test]
async fn the_event_stream_needs_the_token_too() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "stream-token")]).await;
    let ws = app.workspace("ws").await;
    let (_, job) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "hi", "workspace_id": ws["id"] }),
        )
        .await;
    let path = format!("/v1/events/stream?job_id={}", job["id"].as_str().unwrap());
    let (status, _, body) = app
        .send(app.builder_as(None, Method::GET, &path), None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // With the token (which the testkit's SSE client sends) the history arrives.
    let mut sse = SseClient::connect(&app, &path, None).await;
    let first = sse.next(Duration::from_secs(10)).await.expect("an event");
    assert_eq!(first.event.as_deref(), Some("job_queued"));
}

#[tokio::test]
async fn healthz_stays_open_and_the_scheme_is_case_insensitive() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "tok")]).await;
    let (status, body) = app.request_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for header in ["bearer tok", "BEARER tok", "Bearer   tok  "] {
        let (status, _, body) = app
            .send(
                app.builder_as(None, Method::GET, "/v1/projects")
                    .header("authorization", header),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{header}: {body}");
    }
    // CORS preflights carry no credentials and are answered before authentication.
    let resp = app
        .builder_as(None, Method::OPTIONS, "/v1/projects")
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

#[tokio::test]
async fn an_oversized_body_gets_a_json_413() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "tok")]).await;
    let ws = app.workspace("ws").await;
    let big = json!({ "prompt": "x".repeat(2 * 1024 * 1024), "workspace_id": ws["id"] });
    let (status, body) = app.post("/v1/prompts", big.clone()).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // Without the token it is a 401 (authentication comes before the body is read).
    let (status, body) = app
        .request_as(None, Method::POST, "/v1/prompts", Some(big))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["total"], 0);
}

/// An `otter-server` process on `listen`, with `extra` variables, its stdout captured.
pub(crate) struct ServerProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
}

impl ServerProcess {
    pub(crate) fn start(env: &TestEnv, listen: &str, extra: &[(&str, &str)]) -> Self {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_otter-server")),
            env,
            listen,
            extra,
        )
    }

    /// Like [`ServerProcess::start`], with at most `files` open file descriptors (soft and hard
    /// limit, so that the server cannot raise it).
    pub(crate) fn start_with_file_limit(
        env: &TestEnv,
        listen: &str,
        extra: &[(&str, &str)],
        files: u32,
    ) -> Self {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"ulimit -n "$1" && exec "$0""#)
            .arg(env!("CARGO_BIN_EXE_otter-server"))
            .arg(files.to_string());
        Self::spawn(command, env, listen, extra)
    }

    fn spawn(mut command: Command, env: &TestEnv, listen: &str, extra: &[(&str, &str)]) -> Self {
        let mut child = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("OTTER_DATABASE_URL", &env.database_url)
            .env("OTTER_REDIS_URL", &env.redis_url)
            .env("OTTER_QUEUE_NAME", &env.queue_name)
            .env(
                "OTTER_VIBE_HOME_BASE",
                env.dir.join("vibe-homes").display().to_string(),
            )
            .env("OTTER_LISTEN_ADDR", listen)
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .envs(extra.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start otter-server");
        let (tx, lines) = std::sync::mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the "listening" line and returns the address it names.
    pub(crate) fn listening(&mut self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_else(|_| panic!("otter-server did not listen: {:#?}", self.log));
            self.log.push(line.clone());
            if line.contains("otter-server listening")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
            {
                return addr.to_owned();
            }
        }
    }

    /// Stops the process and returns everything it printed.
    pub(crate) fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let env = TestEnv::new().await;
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let mut server = ServerProcess::start(
        &env,
        "127.0.0.1:0",
        &[("OTTER_API_TOKENS", &format!("{token},other-{token}"))],
    );
    let base = format!("http://{}", server.listening());
    let client = reqwest::Client::new();
    let dir = env.mkdir("ws");
    let ok = client
        .post(format!("{base}/v1/workspaces"))
        .bearer_auth(&token)
        .json(&json!({ "path": dir.display().to_string() }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    let ws: Value = ok.json().await.unwrap();
    let ran = client
        .post(format!(
            "{base}/v1/workspaces/{}/command",
            ws["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .json(&json!({ "command": "echo hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), StatusCode::OK);
    for credential in [
        format!("Bearer {wrong}"),
        format!("Bearer {token}x"),
        wrong.clone(),
    ] {
        let refused = client
            .get(format!("{base}/v1/projects"))
            .header("authorization", credential)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = client
        .get(format!("{base}/v1/events/stream"))
        .header("authorization", format!("Bearer {wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let log = server.stop();
    // The logs were captured at trace level and cover the requests...
    assert!(log.contains("/v1/workspaces"), "{log}");
    assert!(log.contains("command ran"), "{log}");
    // ...and hold no token, right or wrong.
    for secret in [&token, &wrong] {
        assert!(!log.contains(secret.as_str()), "a token was logged:\n{log}");
    }
}

#[tokio::test]
async fn a_public_address_needs_tokens_or_an_explicit_opt_out() {
    let env = TestEnv::new().await;
    // With tokens, or with the explicit opt-out, a public address is served.
    for extra in [
        [("OTTER_API_TOKENS", "tok")],
        [("OTTER_ALLOW_UNAUTHENTICATED", "true")],
    ] {
        let mut server = ServerProcess::start(&env, "0.0.0.0:0", &extra);
        let addr = server.listening();
        assert!(addr.starts_with("0.0.0.0:"), "{addr}");
        server.stop();
    }
    // Without either it is refused, naming the way out.
    let stderr = refused_start(
        &env,
        &[
            ("OTTER_LISTEN_ADDR", "0.0.0.0:0"),
            ("OTTER_ALLOW_UNAUTHENTICATED", "false"),
        ],
    );
    assert!(
        stderr.contains("OTTER_API_TOKENS") && stderr.contains("OTTER_ALLOW_UNAUTHENTICATED"),
        "{stderr}"
    );
}

#[tokio::test]
async fn browsers_may_pass_the_token_in_the_query_of_the_streaming_routes_only() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "browser-token")]).await;
    let status_of = |path: String| {
        let app = &app;
        async move {
            // The status only: a stream's body never ends.
            app.client
                .get(format!("{}{path}", app.base))
                .send()
                .await
                .expect("request sent")
                .status()
        }
    };
    // The SSE stream (EventSource cannot send headers).
    assert_eq!(
        status_of("/v1/events/stream?access_token=browser-token".to_owned()).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of("/v1/events/stream?access_token=wrong".to_owned()).await,
        StatusCode::UNAUTHORIZED
    );
    // The shell WebSocket: past authentication (the runtime is off here, so 503 says so).
    let ws = uuid::Uuid::new_v4();
    assert_eq!(
        status_of(format!(
            "/v1/runtime/workspaces/{ws}/shell/ws?access_token=browser-token"
        ))
        .await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status_of(format!(
            "/v1/runtime/workspaces/{ws}/shell/ws?access_token=wrong"
        ))
        .await,
        StatusCode::UNAUTHORIZED
    );
    // Everywhere else the query is not a credential.
    assert_eq!(
        status_of("/v1/queue?access_token=browser-token".to_owned()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of("/metrics?access_token=browser-token".to_owned()).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Sends `method path` with `host` as its `Host` header; returns the status and the body.
async fn with_host(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    host: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, body) = app
        .send(
            app.builder_as(token, method, path).header("host", host),
            body,
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn without_tokens_only_loopback_and_allowed_host_names_are_answered() {
    let app =
        TestApp::spawn_with(&[("OTTER_ALLOWED_HOSTS", "otter-server, otter.example:8443")]).await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let ws_dir = app.env.dir.join("ws");
    let port = app.base.rsplit(':').next().unwrap().to_owned();

    // A web page that made its own name resolve to 127.0.0.1 (DNS rebinding) gets nothing.
    for host in [
        "rebind.evil.example".to_owned(),
        format!("rebind.evil.example:{port}"),
        "localhost.evil.example".to_owned(),
        "127.0.0.1.nip.io".to_owned(),
        "otter-server.evil.example".to_owned(),
        "otter.example".to_owned(),
        "otter.example:8080".to_owned(),
        "127.0.0.2".to_owned(),
        "[::2]".to_owned(),
        "evil:notaport".to_owned(),
    ] {
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/workspaces/command".to_owned(),
                Some(json!({ "command": "touch rebound", "workspace_id": id })),
            ),
            (
                Method::POST,
                format!("/v1/workspaces/{id}/command"),
                Some(json!({ "command": "touch rebound" })),
            ),
            (Method::GET, "/v1/projects".to_owned(), None),
            (Method::GET, "/openapi.json".to_owned(), None),
            (Method::GET, "/v1/no-such-route".to_owned(), None),
            (Method::PUT, "/v1/queue".to_owned(), None),
        ] {
            let (status, answer) = with_host(&app, None, method, &path, &host, body).await;
            let message = assert_error(
                status,
                &answer,
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
            );
            assert!(
                message.contains(&format!("{host:?}")) && message.contains("OTTER_ALLOWED_HOSTS"),
                "{host}: {message}"
            );
        }
    }
    assert!(!ws_dir.join("rebound").exists(), "a rebound command ran");
    // Nor does it learn a route's methods.
    let (status, headers, _) = app
        .send(
            app.builder_as(None, Method::PUT, "/v1/queue")
                .header("host", "rebind.evil.example"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(headers.get("allow").is_none(), "{headers:?}");
    // The target of an absolute-form request line counts too.
    let mut stream = tokio::net::TcpStream::connect(app.base.strip_prefix("http://").unwrap())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            b"GET http://rebind.evil.example/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");

    // Loopback names, any port and any case, and the allowed names are answered.
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        format!("LocalHost:{port}"),
        "localhost.".to_owned(),
        "[::1]:8080".to_owned(),
        "otter-server:8080".to_owned(),
        "otter-server".to_owned(),
        "otter.example:8443".to_owned(),
    ] {
        let (status, answer) = with_host(
            &app,
            None,
            Method::POST,
            "/v1/workspaces/command",
            &host,
            Some(json!({ "command": "true", "workspace_id": id })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{host}: {answer}");
    }
    // `/healthz` answers any name (health checks call it by address or by service name).
    let (status, answer) = with_host(
        &app,
        None,
        Method::GET,
        "/healthz",
        "rebind.evil.example",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // With tokens the page has no token to send, and the host is not checked.
    let locked = TestApp::spawn_with(&[("OTTER_API_TOKENS", "tok")]).await;
    let (status, answer) = with_host(
        &locked,
        Some("tok"),
        Method::GET,
        "/v1/projects",
        "otter.example.com",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = with_host(
        &locked,
        None,
        Method::GET,
        "/v1/projects",
        "rebind.evil.example",
        None,
    )
    .await;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_token_list_without_a_token_stops_the_server() {
    let env = TestEnv::new().await;
    let stderr = refused_start(
        &env,
        &[
            ("OTTER_LISTEN_ADDR", "127.0.0.1:0"),
            ("OTTER_API_TOKENS", " , "),
        ],
    );
    assert!(
        stderr.contains("OTTER_API_TOKENS") && stderr.contains("no token"),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_a_token_a_wrong_method_is_the_same_401_as_an_unknown_route() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "tok")]).await;
    let job = uuid::Uuid::new_v4();
    let (status, unknown_headers, unknown) = app
        .send(app.builder_as(None, Method::GET, "/v1/no-such-thing"), None)
        .await;
    assert_error(status, &unknown, StatusCode::UNAUTHORIZED, "unauthorized");
    for (method, path) in [
        (Method::PUT, "/v1/queue".to_owned()),
        (Method::DELETE, "/v1/prompts".to_owned()),
        (Method::PATCH, "/v1/projects".to_owned()),
        (Method::GET, format!("/v1/jobs/{job}/preview-url")),
        (Method::DELETE, format!("/v1/jobs/{job}")),
        (Method::POST, "/metrics".to_owned()),
    ] {
        for token in [None, Some("wrong")] {
            let (status, headers, body) = app
                .send(app.builder_as(token, method.clone(), &path), None)
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body, unknown, "{method} {path}");
            assert!(
                headers.get("allow").is_none(),
                "{method} {path}: {headers:?}"
            );
            assert_eq!(
                headers.get("www-authenticate"),
                unknown_headers.get("www-authenticate")
            );
        }
        // With the token: the 405, in the JSON shape, with `Allow`.
        let (status, headers, body) = app
            .send(app.builder_as(Some("tok"), method.clone(), &path), None)
            .await;
        assert_error(
            status,
            &body,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
        assert!(headers.get("allow").is_some(), "{method} {path}");
    }
    // The open routes keep their 405 for everyone.
    let (status, headers, body) = app
        .send(app.builder_as(None, Method::POST, "/healthz"), None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_eq!(headers["allow"], "GET,HEAD");
}

#[tokio::test]
async fn the_preview_route_checks_the_token_before_the_path_and_a_job_token_opens_only_it() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "admin")]).await;
    let ws = app.workspace("ws").await;
    let job = app.submit(&ws, "serve it").await;
    let id = job["id"].as_str().unwrap().to_owned();
    let lease = match otter_core::db::jobs::claim(
        &app.state.db,
        id.parse().unwrap(),
        &otter_core::db::jobs::Claimant::new("test-worker", Duration::from_secs(60)),
    )
    .await
    .unwrap()
    {
        otter_core::db::jobs::Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed: {other:?}"),
    };
    let job_token = lease.job_token.to_string();
    let body = json!({ "preview_url": "http://127.0.0.1:3000" });

    // A path that names no job: 401 for anyone without an API token, a 400 for its holder.
    for token in [None, Some("wrong"), Some(job_token.as_str())] {
        for path in [
            "/v1/jobs/not-a-uuid/preview-url",
            "/v1/jobs/%FF%FE/preview-url",
        ] {
            let (status, answer) = app
                .request_as(token, Method::POST, path, Some(body.clone()))
                .await;
            assert_error(status, &answer, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    let (status, answer) = app
        .request_as(
            Some("admin"),
            Method::POST,
            "/v1/jobs/not-a-uuid/preview-url",
            Some(body.clone()),
        )
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");

    // The job token opens exactly its own job's preview-url route, with its one method.
    let other = uuid::Uuid::new_v4();
    for (method, path) in [
        (Method::POST, format!("/v1/jobs/{other}/preview-url")),
        (Method::GET, format!("/v1/jobs/{id}/preview-url")),
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::POST, format!("/v1/jobs/{id}/cancel")),
        (Method::GET, "/v1/no-such-thing".to_owned()),
    ] {
        let (status, answer) = app
            .request_as(Some(&job_token), method.clone(), &path, Some(body.clone()))
            .await;
        assert_error(status, &answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (status, answer) = app
        .request_as(
            Some(&job_token),
            Method::POST,
            &format!("/v1/jobs/{id}/preview-url"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["preview_url"], "http://127.0.0.1:3000/");
}

/// Starts the server binary on `env`'s backends with `vars` (nothing else inherited), expects it
/// to refuse to start, and returns what it printed on stderr.
/// Runs `otter-server` on `env` with `vars` and returns its stderr; it must refuse to start.
pub(crate) fn refused_start(env: &TestEnv, vars: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_otter-server"))
        .env_clear()
        .env("OTTER_DATABASE_URL", &env.database_url)
        .env("OTTER_REDIS_URL", &env.redis_url)
        .env("OTTER_QUEUE_NAME", &env.queue_name)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server started with {vars:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
