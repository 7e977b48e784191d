//! Starting a worker beside a `TestApp`, submitting prompts and waiting for jobs.

use std::sync::Arc;
use std::time::Duration;

use otter_core::isolation::Isolation;
use otter_testkit::{TestApp, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The vibe stand-in built with this package, where the job user can run it.
pub(crate) fn fake_vibe() -> String {
    otter_testkit::reachable_by_jobs(env!("CARGO_BIN_EXE_otter-fake-vibe"))
}

/// How long a job of the stand-in may take in these tests.
pub(crate) const JOB_WAIT: Duration = Duration::from_secs(60);

/// A worker running in this process until dropped.
pub(crate) struct Worker {
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker on `app`'s database and queue, running the stand-in with `scenario`
    /// and the extra variables `extra` (e.g. `OTTER_VIBE_EXTRA_ENV`).
    pub(crate) async fn start(app: &TestApp, extra: &[(&str, &str)]) -> Self {
        let vibe = fake_vibe();
        let mut vars = vec![
            ("OTTER_VIBE_BIN", vibe.as_str()),
            ("OTTER_RETRY_BASE_DELAY", "100ms"),
        ];
        vars.extend_from_slice(extra);
        let config = app.env.config(&vars);
        let isolation = Arc::new(Isolation::from_config(&config).expect("isolation"));
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            otter_worker::run(Arc::new(config), isolation, token)
                .await
                .expect("worker ran");
        });
        Self {
            shutdown,
            handle: Some(handle),
        }
    }
}

impl Worker {
    /// Stops the worker as SIGTERM would (no new claims; running jobs get the shutdown grace)
    /// and waits for it to exit.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("worker task");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An `otter-worker` process on `app`'s database and queue; killed when dropped.
pub(crate) struct WorkerProcess {
    pub(crate) child: std::process::Child,
}

impl WorkerProcess {
    pub(crate) fn spawn(app: &TestApp, name: &str, extra: &[(&str, &str)]) -> Self {
        Self::spawn_as(app, name, extra, None)
    }

    /// Like [`WorkerProcess::spawn`], as the user `ids` (uid, gid) when given (the test must be
    /// root for that).
    pub(crate) fn spawn_as(
        app: &TestApp,
        name: &str,
        extra: &[(&str, &str)],
        ids: Option<(u32, u32)>,
    ) -> Self {
        use std::os::unix::process::CommandExt;
        let vibe = fake_vibe();
        let mut vars = vec![
            ("OTTER_VIBE_BIN", vibe.as_str()),
            ("OTTER_WORKER_ID", name),
            ("OTTER_RETRY_BASE_DELAY", "100ms"),
        ];
        vars.extend_from_slice(extra);
        let log =
            std::fs::File::create(app.env.dir.join(format!("{name}.log"))).expect("worker log");
        // Where that user can run it.
        let program = otter_testkit::reachable_by_jobs(env!("CARGO_BIN_EXE_otter-worker"));
        let mut command = std::process::Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(app.env.vars(&vars))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().expect("start otter-worker");
        Self { child }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().expect("reap the worker");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `OTTER_VIBE_EXTRA_ENV` selecting a stand-in scenario (plus more `KEY=VALUE` pairs).
pub(crate) fn scenario(name: &str, more: &[&str]) -> String {
    let mut pairs = vec![format!("FAKE_VIBE_SCENARIO={name}")];
    pairs.extend(more.iter().map(|s| (*s).to_owned()));
    pairs.join(",")
}

/// Submits a prompt to `workspace` and returns the job.
pub(crate) async fn submit(app: &TestApp, workspace: &Value, prompt: &str, extra: Value) -> Value {
    let mut body = json!({ "prompt": prompt, "workspace_id": workspace["id"] });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, job) = app.post("/v1/prompts", body).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job
}

/// Waits until the job is in a final state and returns it.
pub(crate) async fn finished(app: &TestApp, job: &Value) -> Value {
    let path = format!("/v1/jobs/{}", job["id"].as_str().expect("job id"));
    eventually(JOB_WAIT, "the job to finish", || async {
        let (_, job) = app.get(&path).await;
        matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
        .then_some(job)
    })
    .await
}

/// All stored events of a job, oldest first.
pub(crate) async fn events(app: &TestApp, job: &Value) -> Vec<Value> {
    let (status, page) = app
        .get(&format!(
            "/v1/jobs/{}/events?limit=1000",
            job["id"].as_str().expect("job id")
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut items = page["items"].as_array().cloned().unwrap_or_default();
    let total = page["total"].as_i64().unwrap_or_default() as usize;
    while items.len() < total {
        let after = items
            .last()
            .map(|e| e["id"].as_i64().unwrap_or_default())
            .unwrap_or_default();
        let (_, page) = app
            .get(&format!(
                "/v1/jobs/{}/events?limit=1000&after={after}",
                job["id"].as_str().unwrap()
            ))
            .await;
        let more = page["items"].as_array().cloned().unwrap_or_default();
        assert!(!more.is_empty(), "events stopped short of the total");
        items.extend(more);
    }
    items
}

/// The kinds of `events`, in order.
pub(crate) fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default())
        .collect()
}

/// The `output_chunk` texts of one stream.
pub(crate) fn lines<'a>(events: &'a [Value], stream: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["kind"] == "output_chunk" && e["payload"]["stream"] == stream)
        .map(|e| e["payload"]["text"].as_str().unwrap_or_default())
        .collect()
}

/// Waits until the job has the given status.
pub(crate) async fn status_is(app: &TestApp, job: &Value, status: &str) -> Value {
    let path = format!("/v1/jobs/{}", job["id"].as_str().expect("job id"));
    eventually(JOB_WAIT, &format!("the job to be {status}"), || async {
        let (_, job) = app.get(&path).await;
        (job["status"] == status).then_some(job)
    })
    .await
}

/// Whether `pid` no longer runs (gone, or a zombie waiting for its reaper).
pub(crate) fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Reads a pid the stand-in wrote, waiting for the file.
pub(crate) async fn read_pid(path: &std::path::Path) -> u32 {
    eventually(JOB_WAIT, "the pid file", || async {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await
}

/// The first run the stand-in recorded in `path` (its `FAKE_VIBE_RECORD`).
pub(crate) fn recorded_run(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the stand-in's record");
    serde_json::from_str(text.lines().next().expect("a recorded run")).expect("a JSON record")
}

/// A server, a workspace named `ws`, and a worker running the stand-in's `name` scenario with
/// `more` knobs: how most tests begin.
pub(crate) async fn app_with_worker(name: &str, more: &[&str]) -> (TestApp, Value, Worker) {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario(name, more))]).await;
    (app, ws, worker)
}
