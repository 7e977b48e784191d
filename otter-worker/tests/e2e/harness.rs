//! Starting workers that run the vibe stand-in beside a `TestApp`, and the stand-in's own
//! knobs. The generic pieces (the in-process worker, submitting and waiting for jobs, reading
//! their events) are `otter_testkit`'s, re-exported here.

pub(crate) use otter_testkit::jobs::{
    JOB_WAIT, events, finished, kinds, lines, payload_of, status_is, submit,
};
use otter_testkit::{TestApp, eventually};
use serde_json::Value;

/// The vibe stand-in built with this package, where the job user can run it.
pub(crate) fn fake_vibe() -> String {
    otter_testkit::reachable_by_jobs(env!("CARGO_BIN_EXE_otter-fake-vibe"))
}

/// `otter_testkit`'s in-process worker, running the stand-in; stopped when dropped.
pub(crate) struct Worker(otter_testkit::Worker);

impl Worker {
    /// A worker on `app`'s database and queue running the stand-in, with the extra settings
    /// `extra` (e.g. `OTTER_VIBE_EXTRA_ENV` choosing its scenario).
    pub(crate) async fn start(app: &TestApp, extra: &[(&str, &str)]) -> Self {
        Self(otter_testkit::Worker::start(app, &fake_vibe(), extra).await)
    }

    /// Stops the worker as SIGTERM would and waits for it to exit.
    pub(crate) async fn stop(self) {
        self.0.stop().await;
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

/// `/metrics` once it contains `needle`.
pub(crate) async fn metrics_with(app: &TestApp, needle: &str) -> String {
    eventually(JOB_WAIT, needle, || async {
        let text = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(needle).then_some(text)
    })
    .await
}
