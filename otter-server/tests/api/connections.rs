//! Connections that send no request: silent ones, half-sent headers, headers sent a byte at a
//! time, and hundreds of them at once. They are closed after `OTTER_IDLE_TIMEOUT` or
//! `OTTER_HEADER_READ_TIMEOUT`, the longest waiting are shed when too many wait, and they never
//! starve a client that sends a real request, nor exhaust the server's file descriptors. A long
//! SSE stream, which is a request in progress, is never cut.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use otter_testkit::{SseClient, TestApp, TestEnv};

use crate::auth::ServerProcess;

/// Bound on every wait below; the timeouts under test are a second or two.
const DEADLINE: Duration = Duration::from_secs(30);

/// The start of a request whose headers never end.
const HALF_SENT: &[u8] = b"POST /v1/workspaces/command HTTP/1.1\r\nHost: 127.0.0.1\r\n\
    Content-Type: application/json\r\nContent-Length: 40\r\nX-Padding: aaaa";

fn addr(base: &str) -> &str {
    base.strip_prefix("http://").expect("an http base URL")
}

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(addr(base)).await.expect("connect")
}

/// Waits until the server closes `stream` (end of file, or a reset); panics after `within`.
/// Whatever the server sent before closing is returned.
async fn closed_within(stream: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all)
        .await
        .unwrap_or_else(|_| panic!("{what} still open after {within:?}"));
    received
}

#[tokio::test]
async fn silent_half_sent_and_trickled_requests_are_closed() {
    let app = TestApp::spawn_with(&[
        ("OTTER_API_TOKENS", "tok"),
        ("OTTER_HEADER_READ_TIMEOUT", "1s"),
        ("OTTER_IDLE_TIMEOUT", "2s"),
    ])
    .await;
    let mut half_sent = Vec::new();
    for _ in 0..100 {
        let mut stream = connect(&app.base).await;
        stream.write_all(HALF_SENT).await.unwrap();
        half_sent.push(stream);
    }
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(connect(&app.base).await);
    }
    // Headers a byte every 100 ms: every read is recent, but the headers take too long.
    let trickled = connect(&app.base).await;
    let (mut trickled_read, mut trickled_write) = trickled.into_split();
    let writer = tokio::spawn(async move {
        for byte in HALF_SENT.iter().cycle().take(400) {
            if trickled_write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // A keep-alive connection that sent one whole request, then nothing.
    let mut kept = connect(&app.base).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();

    for (n, stream) in half_sent.iter_mut().enumerate() {
        closed_within(stream, DEADLINE, &format!("half-sent request {n}")).await;
    }
    for (n, stream) in silent.iter_mut().enumerate() {
        closed_within(stream, DEADLINE, &format!("silent connection {n}")).await;
    }
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, trickled_read.read_to_end(&mut rest))
        .await
        .expect("the trickled request still open")
        .ok();
    writer.abort();
    let answer = closed_within(&mut kept, DEADLINE, "the idle keep-alive connection").await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The server itself is fine.
    let (status, _) = app.get("/v1/projects").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn half_open_connections_do_not_starve_an_authenticated_request() {
    // Long timeouts: here only the cap on waiting connections can help.
    let app = TestApp::spawn_with(&[
        ("OTTER_API_TOKENS", "tok"),
        ("OTTER_MAX_PENDING_CONNECTIONS", "50"),
        ("OTTER_HEADER_READ_TIMEOUT", "10m"),
        ("OTTER_IDLE_TIMEOUT", "10m"),
    ])
    .await;
    let ws = app.workspace("ws").await;
    let job = app.submit(&ws, "hello").await;
    let id = job["id"].as_str().unwrap().to_owned();
    // A stream opened before the flood is a request in progress: it is never shed.
    let mut sse = SseClient::connect(&app, &format!("/v1/events/stream?job_id={id}"), None).await;
    let first = sse.next(DEADLINE).await.expect("the first event");
    assert_eq!(first.event.as_deref(), Some("job_queued"));

    let mut flood = Vec::new();
    for n in 0..300 {
        let mut stream = connect(&app.base).await;
        if n % 2 == 0 {
            stream.write_all(HALF_SENT).await.unwrap();
        }
        flood.push(stream);
    }
    // A fresh client (no pooled connection) gets through at once.
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/v1/jobs/{id}", app.base))
        .bearer_auth("tok")
        .send()
        .await
        .expect("the authenticated request is answered");
    assert_eq!(resp.status(), StatusCode::OK);
    // The longest waiting ones made room: at most 50 wait, so the first 250 were closed.
    for (n, stream) in flood.iter_mut().take(250).enumerate() {
        closed_within(stream, DEADLINE, &format!("flood connection {n}")).await;
    }
    // The stream still delivers.
    let (status, _) = app
        .request(Method::POST, &format!("/v1/jobs/{id}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let next = sse.next(DEADLINE).await.expect("the next event");
    assert_eq!(next.event.as_deref(), Some("job_paused"));
}

#[tokio::test]
async fn a_long_event_stream_outlives_the_idle_and_header_timeouts() {
    let app = TestApp::spawn_with(&[
        ("OTTER_HEADER_READ_TIMEOUT", "1s"),
        ("OTTER_IDLE_TIMEOUT", "1s"),
    ])
    .await;
    let ws = app.workspace("ws").await;
    let job = app.submit(&ws, "hello").await;
    let id = job["id"].as_str().unwrap().to_owned();
    let mut sse = SseClient::connect(&app, &format!("/v1/events/stream?job_id={id}"), None).await;
    assert_eq!(
        sse.next(DEADLINE).await.unwrap().event.as_deref(),
        Some("job_queued")
    );
    // A silent connection opened now is closed by the idle timeout: by then the stream, silent
    // too since its first event, has outlived both timeouts.
    let mut silent = connect(&app.base).await;
    closed_within(&mut silent, DEADLINE, "the silent connection").await;
    let mut half_sent = connect(&app.base).await;
    half_sent.write_all(HALF_SENT).await.unwrap();
    closed_within(&mut half_sent, DEADLINE, "the half-sent request").await;

    let (status, _) = app
        .request(Method::POST, &format!("/v1/jobs/{id}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sse.next(DEADLINE).await.unwrap().event.as_deref(),
        Some("job_paused")
    );
}

/// How many file descriptors process `pid` has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

#[tokio::test]
async fn at_a_file_limit_of_256_three_hundred_half_open_connections_starve_no_one() {
    const FILES: u32 = 256;
    let env = TestEnv::new().await;
    let mut server = ServerProcess::start_with_file_limit(
        &env,
        "127.0.0.1:0",
        &[
            ("OTTER_API_TOKENS", "tok"),
            ("RUST_LOG", "info"),
            ("OTTER_HEADER_READ_TIMEOUT", "10m"),
            ("OTTER_IDLE_TIMEOUT", "10m"),
        ],
        FILES,
    );
    let base = format!("http://{}", server.listening());
    let idle_files = open_files(server.pid());

    let mut flood = Vec::new();
    for n in 0..300 {
        let mut stream = connect(&base).await;
        if n % 2 == 0 {
            stream.write_all(HALF_SENT).await.unwrap();
        }
        flood.push(stream);
    }
    let flooded_files = open_files(server.pid());

    // Requests that need descriptors of their own (database, files, a command's pipes) work.
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let dir = env.mkdir("ws");
    // Commands run as the job user when the server is root.
    otter_testkit::give_to_job_user(&dir);
    let resp = client
        .post(format!("{base}/v1/workspaces"))
        .bearer_auth("tok")
        .json(&json!({ "path": dir.display().to_string() }))
        .send()
        .await
        .expect("the workspace request is answered");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let ws: serde_json::Value = resp.json().await.unwrap();
    for _ in 0..5 {
        let resp = client
            .post(format!(
                "{base}/v1/workspaces/{}/command",
                ws["id"].as_str().unwrap()
            ))
            .bearer_auth("tok")
            .json(&json!({ "command": "echo ok > out.txt && cat out.txt" }))
            .send()
            .await
            .expect("the command request is answered");
        assert_eq!(resp.status(), StatusCode::OK);
        let result: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(result["stdout"], "ok\n", "{result}");
    }
    let busy_files = open_files(server.pid());
    drop(flood);
    let log = server.stop();
    eprintln!(
        "descriptors of the server: {idle_files} idle, {flooded_files} with 300 half-open \
         connections, {busy_files} after the requests (limit {FILES})"
    );
    assert!(
        flooded_files < FILES as usize && busy_files < FILES as usize,
        "{flooded_files} {busy_files}"
    );
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("accept error"), "{log}");
}
