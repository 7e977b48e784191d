//! The `otter-demo-model` binary as an operator runs it: it reads `OTTER_DEMO_MODEL_LISTEN`,
//! answers `/healthz` and chat completions, refuses bad input with a 4xx JSON error, plays a
//! rate-limited provider when `OTTER_DEMO_MODEL_RATE_LIMIT` says so, stops cleanly (exit 0) on
//! SIGTERM and SIGINT, and refuses a bad setting at start, naming it.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_otter-demo-model");

/// How long the binary may take to start or to stop.
const DEADLINE: Duration = Duration::from_secs(20);

fn command(listen: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("OTTER_DEMO_MODEL_LISTEN", listen)
        .env("OTTER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Starts the binary on a free port and returns it with the address its first log line names.
async fn start() -> (Child, String) {
    start_with(&[]).await
}

/// [`start`] with more variables set.
async fn start_with(env: &[(&str, &str)]) -> (Child, String) {
    let mut child = command("127.0.0.1:0")
        .envs(env.iter().copied())
        .spawn()
        .expect("spawn otter-demo-model");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(addr) = entry["addr"].as_str() {
                return addr.to_owned();
            }
        }
        panic!("otter-demo-model exited without saying where it listens")
    })
    .await
    .expect("otter-demo-model did not start in time");
    // Keep draining the log so the binary never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

async fn stops_cleanly_on(signal: Signal) {
    let (mut child, addr) = start().await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), 200);

    let answer: Value = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({ "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .expect("POST /v1/chat/completions")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(answer["model"], "otter-demo", "{answer}");

    let refused = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"messages\": ")
        .send()
        .await
        .expect("POST a broken body");
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.expect("a JSON error");
    assert_eq!(error["error"]["code"], "invalid_request", "{error}");

    let pid = Pid::from_raw(child.id().expect("a pid") as i32);
    kill(pid, signal).expect("signal otter-demo-model");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("otter-demo-model did not stop on {signal}"))
        .expect("wait for otter-demo-model");
    assert!(status.success(), "{signal}: {status}");
}

#[tokio::test]
async fn it_serves_and_stops_cleanly_on_sigterm() {
    stops_cleanly_on(Signal::SIGTERM).await;
}

#[tokio::test]
async fn it_serves_and_stops_cleanly_on_sigint() {
    stops_cleanly_on(Signal::SIGINT).await;
}

#[tokio::test]
async fn a_bad_listen_address_stops_it_at_start_naming_the_variable() {
    let out = tokio::time::timeout(DEADLINE, command("localhost:eighty").output())
        .await
        .expect("otter-demo-model did not exit in time")
        .expect("run otter-demo-model");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTTER_DEMO_MODEL_LISTEN") && stderr.contains("localhost:eighty"),
        "{stderr}"
    );
}

#[tokio::test]
async fn it_plays_a_rate_limited_provider_when_told_to() {
    let (_child, addr) = start_with(&[
        ("OTTER_DEMO_MODEL_RATE_LIMIT", "first"),
        ("OTTER_DEMO_MODEL_RETRY_AFTER", "2"),
    ])
    .await;
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({ "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    let refused = post().await.expect("the first POST");
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let error: Value = refused.json().await.expect("a JSON error");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded", "{error}");
    let served = post().await.expect("the second POST");
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn a_bad_rate_limit_stops_it_at_start_naming_the_variable() {
    for (var, value) in [
        ("OTTER_DEMO_MODEL_RATE_LIMIT", "sometimes"),
        ("OTTER_DEMO_MODEL_RETRY_AFTER", "soon"),
    ] {
        let out = tokio::time::timeout(DEADLINE, command("127.0.0.1:0").env(var, value).output())
            .await
            .expect("otter-demo-model did not exit in time")
            .expect("run otter-demo-model");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var) && stderr.contains(value), "{stderr}");
    }
}
