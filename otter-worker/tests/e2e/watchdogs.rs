//! The watchdogs of a run (issue 19): a run that prints nothing for its silence bound is
//! stopped with everything it started and retried; a vibe that answered and reported its end
//! but does not exit is ended after the exit grace, and the job ends as vibe reported.

use std::time::Duration;

use otter_testkit::{TestApp, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    JOB_WAIT, Worker, WorkerProcess, events, finished, kinds, metrics_with, payload_of,
    process_gone, read_pid, recorded_run, scenario, submit,
};

/// The payloads of `events` of `kind`.
fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| &e["payload"])
        .collect()
}

#[tokio::test]
async fn a_silent_run_is_stopped_with_all_it_started_and_retried() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let pidfile = app.env.dir.join("grandchild.pid");
    let _worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario(
                    "grandchild",
                    &[&format!("FAKE_VIBE_PIDFILE={}", pidfile.display())],
                ),
            ),
            // The worker's bound is far off: the job's own `limits.silence_secs` decides.
            ("OTTER_SILENCE_TIMEOUT", "1h"),
            ("OTTER_CANCEL_GRACE", "1s"),
            ("OTTER_RETRY_BASE_DELAY", "100ms"),
        ],
    )
    .await;
    let job = submit(
        &app,
        &ws,
        "print nothing",
        json!({ "max_attempts": 2, "limits": { "silence_secs": 2 } }),
    )
    .await;
    assert_eq!(job["limits"]["silence_secs"], 2, "{job}");
    let first_grandchild = read_pid(&pidfile).await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("silent: printed nothing for 2s"),
        "{error}"
    );

    let events = events(&app, &job).await;
    let silent = of_kind(&events, "job_silent");
    assert_eq!(silent.len(), 2, "one per attempt: {:?}", kinds(&events));
    for (n, payload) in silent.iter().enumerate() {
        assert_eq!(payload["attempt"], n as u64 + 1, "{payload}");
        assert_eq!(payload["limit_secs"], 2, "{payload}");
        assert!(payload["quiet_secs"].as_u64().unwrap() >= 2, "{payload}");
    }
    let retry = of_kind(&events, "job_retry_scheduled");
    assert_eq!(retry.len(), 1, "{:?}", kinds(&events));
    assert_eq!(retry[0]["reason"], "silent", "{}", retry[0]);
    assert_eq!(retry[0]["attempt_counted"], true, "{}", retry[0]);
    let failed = of_kind(&events, "job_failed");
    assert_eq!(failed[0]["reason"], "silent", "{}", failed[0]);
    assert_eq!(kinds(&events).last(), Some(&"job_failed"));

    // Its whole process group went, as on cancel: the first attempt's grandchild too.
    let last_grandchild = read_pid(&pidfile).await;
    for pid in [first_grandchild, last_grandchild] {
        eventually(
            JOB_WAIT,
            "the silent run's processes to be gone",
            || async move { process_gone(pid).then_some(()) },
        )
        .await;
    }
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_job_that_does_not_set_a_bound_gets_the_workers_and_zero_turns_it_off() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let _worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario("slow", &["FAKE_VIBE_SLEEP_MS=2500"]),
            ),
            ("OTTER_SILENCE_TIMEOUT", "1s"),
            ("OTTER_CANCEL_GRACE", "1s"),
        ],
    )
    .await;
    // 2.5 s between answers: silent for longer than the worker's second.
    let bounded = submit(&app, &ws, "slow", json!({ "max_attempts": 1 })).await;
    let bounded = finished(&app, &bounded).await;
    assert_eq!(bounded["status"], "failed", "{bounded}");
    assert!(
        bounded["error"].as_str().unwrap().starts_with("silent"),
        "{bounded}"
    );
    let off = submit(
        &app,
        &ws,
        "slow",
        json!({ "limits": { "silence_secs": 0 } }),
    )
    .await;
    let off = finished(&app, &off).await;
    assert_eq!(off["status"], "succeeded", "{off}");
}

#[tokio::test]
async fn a_vibe_that_hangs_after_its_answer_is_ended_and_the_job_succeeds() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let _worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario(
                    "setup",
                    &[
                        "FAKE_VIBE_HANG_AFTER_ANSWER=1",
                        &format!("FAKE_VIBE_RECORD={}", record.display()),
                    ],
                ),
            ),
            ("OTTER_EXIT_GRACE", "1s"),
            ("OTTER_CANCEL_GRACE", "1s"),
        ],
    )
    .await;
    let job = finished(
        &app,
        &submit(&app, &ws, "answer, then hang", json!({})).await,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["exit_code"], Value::Null, "vibe never exited: {job}");
    let output = &job["output"];
    assert_eq!(output["forced_exit"], true, "{job}");
    assert_eq!(output["outcome"], "finished", "{job}");
    assert!(
        output["final_text"].as_str().unwrap().ends_with("Done."),
        "{job}"
    );

    let events = events(&app, &job).await;
    let kinds = kinds(&events);
    let forced = of_kind(&events, "job_forced_exit");
    assert_eq!(forced.len(), 1, "{kinds:?}");
    assert_eq!(forced[0]["grace_secs"], 1, "{}", forced[0]);
    assert_eq!(forced[0]["outcome"], "finished", "{}", forced[0]);
    // setup.sh still ran, after vibe was ended.
    let at = |kind: &str| kinds.iter().position(|k| *k == kind).expect(kind);
    assert!(at("job_forced_exit") < at("setup_started"), "{kinds:?}");
    assert!(at("setup_finished") < at("job_succeeded"), "{kinds:?}");
    assert_eq!(
        of_kind(&events, "setup_finished")[0]["outcome"],
        "succeeded"
    );
    let vibe = recorded_run(&record)["pid"].as_u64().unwrap() as u32;
    eventually(
        Duration::from_secs(10),
        "the stuck vibe to be gone",
        || async move { process_gone(vibe).then_some(()) },
    )
    .await;
}

/// A small tmpfs, unmounted when dropped (the test runs as root, as scripts/test.sh does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount(8)");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: the disk guard's test needs root (scripts/test.sh runs as root)",
            path.display()
        );
        Self(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_worker_short_of_disk_claims_nothing_until_space_comes_back() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    // The homes (run directories, spill, checkpoints) on a 16 MiB filesystem.
    let disk = Tmpfs::mount(app.env.dir.join("small-disk"), "16m");
    let homes = disk.0.join("homes");
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 12 << 20]).unwrap();
    // A worker process, for its log (one JSON object a line).
    let _worker = WorkerProcess::spawn(
        &app,
        "short-of-disk",
        &[
            ("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[])),
            ("OTTER_VIBE_HOME_BASE", homes.to_str().unwrap()),
            ("OTTER_MIN_FREE_DISK", "8MiB"),
            ("OTTER_LEASE_TTL", "3s"),
            ("OTTER_LOG_FORMAT", "json"),
        ],
    );
    let log = app.env.dir.join("short-of-disk.log");
    let logged = |message: &'static str| {
        let log = log.clone();
        async move {
            eventually(JOB_WAIT, message, || async {
                std::fs::read_to_string(&log)
                    .ok()?
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|l| l["message"] == message)
            })
            .await
        }
    };
    metrics_with(
        &app,
        "otter_worker_claims_paused{worker_id=\"short-of-disk\",reason=\"disk_low\"} 1",
    )
    .await;
    let said = logged("claiming nothing until disk space comes back").await;
    assert_eq!(said["level"], "WARN", "{said}");
    assert!(
        said["reason"].as_str().unwrap().starts_with("disk_low: "),
        "{said}"
    );
    // The prompt is accepted, and waits.
    let job = submit(&app, &ws, "wait for room", json!({})).await;
    let (_, health) = app.get("/healthz").await;
    assert_eq!(health["status"], "ok", "{health}");
    let paused = &health["workers_not_claiming"][0];
    assert_eq!(paused["worker_id"], "short-of-disk", "{health}");
    let reason = paused["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("disk_low: ") && reason.contains("OTTER_MIN_FREE_DISK"),
        "{reason}"
    );
    assert!(
        paused["disk_free_bytes"].as_u64().unwrap() < 8 << 20,
        "{health}"
    );
    // Not a wait for a condition but a window in which a claiming worker would have claimed it
    // many times over (it pops every 2 s at most, and was idle): it stays queued.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, still) = app
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(still["status"], "queued", "{still}");
    assert_eq!(still["attempts"], 0, "{still}");

    std::fs::remove_file(&filler).unwrap();
    let done = finished(&app, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let said = logged("disk space is back above OTTER_MIN_FREE_DISK; claiming again").await;
    assert!(said["free_bytes"].as_u64().unwrap() >= 8 << 20, "{said}");
    let text = metrics_with(
        &app,
        "otter_worker_claims_paused{worker_id=\"short-of-disk\"} 0",
    )
    .await;
    assert!(text.contains("otter_worker_disk_free_bytes{worker_id=\"short-of-disk\"}"));
    let (_, health) = app.get("/healthz").await;
    assert_eq!(health["workers_not_claiming"], json!([]), "{health}");
}

#[tokio::test]
async fn a_rate_limit_parks_the_job_without_an_attempt_and_holds_the_providers_other_jobs() {
    let app = TestApp::spawn().await;
    let (first_ws, other_ws) = (app.workspace("first").await, app.workspace("other").await);
    let limited = app.env.dir.join("rate-limited");
    std::fs::write(&limited, "").unwrap();
    let _worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario(
                    "rate-limit",
                    &[&format!("FAKE_VIBE_RATE_LIMIT_FILE={}", limited.display())],
                ),
            ),
            ("OTTER_RATE_LIMIT_BACKOFF", "4s"),
            ("OTTER_WORKER_CONCURRENCY", "2"),
        ],
    )
    .await;
    let first = submit(
        &app,
        &first_ws,
        "hit the limit",
        json!({ "max_attempts": 1 }),
    )
    .await;
    let id = first["id"].as_str().unwrap().to_owned();
    let limit = payload_of(&app, &first, "job_rate_limited").await;
    // The provider answers again; the gate stays shut until its time.
    std::fs::remove_file(&limited).unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(limit["until"].as_str().unwrap()).unwrap();
    assert_eq!(limit["provider"], "mistral", "{limit}");
    assert_eq!(limit["source"], "backoff", "{limit}");
    assert_eq!(limit["hits"], 1, "{limit}");
    assert!(
        limit["message"]
            .as_str()
            .unwrap()
            .contains("429 Too Many Requests"),
        "{limit}"
    );

    let (_, parked) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(parked["status"], "queued", "{parked}");
    assert_eq!(
        parked["attempts"], 0,
        "the attempt is not counted: {parked}"
    );
    assert_eq!(parked["error"], "rate_limited", "{parked}");
    let run_after =
        chrono::DateTime::parse_from_rfc3339(parked["run_after"].as_str().unwrap()).unwrap();
    assert!(
        (run_after - until).num_milliseconds().abs() < 5,
        "{parked} {limit}"
    );

    // Another job of the same provider waits for the gate instead of hitting the limit.
    let other = submit(
        &app,
        &other_ws,
        "wait for the gate",
        json!({ "max_attempts": 1 }),
    )
    .await;
    let (_, queue) = app.get("/v1/queue").await;
    let gates = queue["rate_limits"].as_array().unwrap();
    assert_eq!(gates.len(), 1, "{queue}");
    assert_eq!(gates[0]["provider"], "mistral", "{queue}");
    assert_eq!(gates[0]["until"], limit["until"], "{queue}");
    metrics_with(&app, "otter_rate_limit_gates_shut 1").await;
    metrics_with(
        &app,
        "otter_rate_limit_gate_opens_at_seconds{provider=\"mistral\"",
    )
    .await;

    let (first, other) = (finished(&app, &first).await, finished(&app, &other).await);
    for job in [&first, &other] {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        let started =
            chrono::DateTime::parse_from_rfc3339(job["started_at"].as_str().unwrap()).unwrap();
        assert!(
            started >= until,
            "no run started before the gate opened: {job}"
        );
    }
    // Only the limited job ever ran into the limit.
    let other_events = events(&app, &other).await;
    assert_eq!(
        kinds(&other_events)
            .iter()
            .filter(|k| **k == "job_started")
            .count(),
        1
    );
    assert!(of_kind(&other_events, "job_rate_limited").is_empty());
    let first_events = events(&app, &first).await;
    let retry = of_kind(&first_events, "job_retry_scheduled");
    assert_eq!(retry[0]["reason"], "rate_limited", "{}", retry[0]);
    assert_eq!(retry[0]["attempt_counted"], false, "{}", retry[0]);
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["rate_limits"], json!([]), "{queue}");
}

/// The checkpoint store of workspace `ws` (`OTTER_CHECKPOINT_DIR/<workspace>`, as the test
/// environment sets it).
fn checkpoint_store(app: &TestApp, ws: &Value) -> std::path::PathBuf {
    app.env
        .dir
        .join("vibe-homes")
        .join(".checkpoints")
        .join(ws["id"].as_str().unwrap())
}

#[tokio::test]
async fn jobs_past_retention_lose_their_lines_and_run_directories_but_keep_the_rest() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[])),
            ("OTTER_RETENTION", "1s"),
            ("OTTER_RETENTION_INTERVAL", "1s"),
        ],
    )
    .await;
    let job = finished(
        &app,
        &submit(&app, &ws, "then forget the lines", json!({})).await,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let run_dir = std::path::Path::new(ws["vibe_home"].as_str().unwrap())
        .join("runs")
        .join(format!("{id}-1"));
    let purged = eventually(JOB_WAIT, "the job's lines purged", || async {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        (job["events_purged"] == true).then_some(job)
    })
    .await;
    assert_eq!(
        purged["output"]["final_text"], job["output"]["final_text"],
        "{purged}"
    );
    assert_eq!(
        purged["output"]["files_changed"], job["output"]["files_changed"],
        "{purged}"
    );
    assert!(!run_dir.exists(), "{} was removed", run_dir.display());
    let events = events(&app, &purged).await;
    let kinds = kinds(&events);
    assert!(!kinds.contains(&"output_chunk"), "{kinds:?}");
    for kind in ["job_queued", "job_started", "job_succeeded"] {
        assert!(kinds.contains(&kind), "{kind} kept: {kinds:?}");
    }

    // Its checkpoints went with its lines: the store keeps only the workspace's latest (the
    // next checkpoint's stat cache), and what the job changed is gone for good.
    let store = checkpoint_store(&app, &ws);
    let latest = std::fs::read_to_string(store.join("latest")).unwrap();
    let manifests: Vec<String> = std::fs::read_dir(store.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(manifests, [format!("{}.json", latest.trim())]);
    for (status, body) in [
        app.get(&format!("/v1/jobs/{id}/changes")).await,
        app.get(&format!("/v1/jobs/{id}/diff")).await,
        app.post(&format!("/v1/jobs/{id}/restore"), json!({ "to": "before" }))
            .await,
    ] {
        assert_eq!(status, StatusCode::GONE, "{body}");
        assert_eq!(body["error"]["code"], "gone", "{body}");
    }

    // The next job of the workspace starts from that store, and what it changed is known.
    let next = finished(&app, &submit(&app, &ws, "and again", json!({})).await).await;
    assert_eq!(next["status"], "succeeded", "{next}");
    assert!(next["output"]["files_changed"].is_number(), "{next}");
}

/// A job of a workspace that ended (its lines and checkpoints written), with its workspace's
/// checkpoint store and that store's lock, held as by a checkpoint in progress: a sweep must wait.
struct PurgeBlocked {
    job: Value,
    id: String,
    store: std::path::PathBuf,
    held: nix::fcntl::Flock<std::fs::File>,
}

impl PurgeBlocked {
    async fn new(app: &TestApp) -> Self {
        let ws = app.workspace("ws").await;
        let runner = Worker::start(app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
        let job = finished(app, &submit(app, &ws, "soon forgotten", json!({})).await).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        runner.stop().await;
        let id = job["id"].as_str().unwrap().to_owned();
        let store = checkpoint_store(app, &ws);
        let lock = std::fs::File::open(store.join("lock")).unwrap();
        let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        Self {
            job,
            id,
            store,
            held,
        }
    }

    /// Waits for the purge to delete the job's lines, then checks that it is not marked and
    /// its checkpoints are still there (the sweep waits for the lock).
    async fn lines_gone_but_not_marked(&self, app: &TestApp) {
        eventually(JOB_WAIT, "the job's lines deleted", || async {
            let events = events(app, &self.job).await;
            (!kinds(&events).contains(&"output_chunk")).then_some(())
        })
        .await;
        let (_, still) = app.get(&format!("/v1/jobs/{}", self.id)).await;
        assert_eq!(still["events_purged"], false, "{still}");
        let (status, changes) = app.get(&format!("/v1/jobs/{}/changes", self.id)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "its checkpoints are still there: {changes}"
        );
    }

    /// Lets the sweep in, then waits for the job to be marked, with only the workspace's
    /// latest checkpoint left.
    async fn release_and_see_it_purged(self, app: &TestApp) {
        drop(self.held);
        eventually(JOB_WAIT, "the job purged once swept", || async {
            let (_, job) = app.get(&format!("/v1/jobs/{}", self.id)).await;
            (job["events_purged"] == true).then_some(())
        })
        .await;
        let manifests = std::fs::read_dir(self.store.join("checkpoints"))
            .unwrap()
            .count();
        assert_eq!(
            manifests, 1,
            "only the workspace's latest checkpoint is left"
        );
    }
}

const PURGE_NOW: [(&str, &str); 2] = [
    ("OTTER_RETENTION", "1s"),
    ("OTTER_RETENTION_INTERVAL", "1s"),
];

#[tokio::test]
async fn a_purge_marks_a_job_only_once_its_workspaces_checkpoints_are_swept() {
    let app = TestApp::spawn().await;
    let blocked = PurgeBlocked::new(&app).await;
    let _purger = Worker::start(&app, &PURGE_NOW).await;
    // Its lines go first; the mark waits for the sweep.
    blocked.lines_gone_but_not_marked(&app).await;
    blocked.release_and_see_it_purged(&app).await;
}

#[tokio::test]
async fn a_worker_killed_in_the_middle_of_a_purge_leaves_it_for_the_next() {
    let app = TestApp::spawn().await;
    let blocked = PurgeBlocked::new(&app).await;
    let mut doomed = WorkerProcess::spawn(&app, "doomed-purger", &PURGE_NOW);
    blocked.lines_gone_but_not_marked(&app).await;
    // SIGKILL while its sweep waits for the store: lines gone, checkpoints and mark not.
    doomed.kill9();
    let _next = Worker::start(&app, &PURGE_NOW).await;
    blocked.release_and_see_it_purged(&app).await;
}
