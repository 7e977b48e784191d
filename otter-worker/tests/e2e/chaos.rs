//! Failure tests with real processes: a worker killed with SIGKILL mid-job, three worker
//! processes sharing one queue, Redis losing everything (also while a job is parked on a rate
//! limit), PostgreSQL unreachable during a run.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use otter_testkit::{SseClient, TestApp, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    JOB_WAIT, Worker, WorkerProcess, app_with_worker, events, finished, kinds, lines, payload_of,
    scenario, status_is, submit,
};

/// How often each job started: every job must have run exactly once.
async fn starts(app: &TestApp, job: &Value) -> usize {
    kinds(&events(app, job).await)
        .iter()
        .filter(|k| **k == "job_started")
        .count()
}

#[tokio::test]
async fn a_worker_killed_mid_job_is_recovered_and_its_events_kept() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let timing = [
        ("OTTER_LEASE_TTL", "2s"),
        ("OTTER_RECONCILE_INTERVAL", "300ms"),
    ];
    let slow = scenario("slow", &["FAKE_VIBE_SLEEP_MS=1500"]);
    let mut doomed = WorkerProcess::spawn(
        &app,
        "doomed",
        &[timing[0], timing[1], ("OTTER_VIBE_EXTRA_ENV", &slow)],
    );
    let job = submit(&app, &ws, "interrupted", json!({})).await;
    status_is(&app, &job, "running").await;
    // Wait for the first output line, then kill the worker without warning.
    let path = format!("/v1/jobs/{}/events", job["id"].as_str().unwrap());
    eventually(JOB_WAIT, "the first output line", || async {
        let (_, page) = app.get(&path).await;
        page["items"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "output_chunk")
            .then_some(())
    })
    .await;
    doomed.kill9();
    let killed_at = Instant::now();

    let survivor = [
        timing[0],
        timing[1],
        ("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[])),
    ];
    let survivor = WorkerProcess::spawn(&app, "survivor", &survivor);
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    let recovered_in = killed_at.elapsed();
    // Lease TTL (2 s) + reconcile interval + the second run itself, with room for a busy machine.
    assert!(
        recovered_in < Duration::from_secs(20),
        "recovery took {recovered_in:?}"
    );

    let events = events(&app, &job).await;
    let kinds = kinds(&events);
    let first_start = kinds.iter().position(|k| *k == "job_started").unwrap();
    let lost = events
        .iter()
        .position(|e| e["kind"] == "job_retry_scheduled")
        .expect("recovered");
    let second_start = kinds.iter().rposition(|k| *k == "job_started").unwrap();
    assert_eq!(events[lost]["payload"]["reason"], "worker_lost");
    assert_eq!(events[lost]["payload"]["worker_id"], "doomed");
    assert!(
        first_start < lost && lost < second_start,
        "never two runs at once: {kinds:?}"
    );
    assert_eq!(events[first_start]["payload"]["worker_id"], "doomed");
    assert_eq!(events[second_start]["payload"]["worker_id"], "survivor");
    // The first run's lines written before the crash are still there.
    assert!(
        events[first_start..lost]
            .iter()
            .any(|e| e["kind"] == "output_chunk")
    );
    drop(survivor);
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_job_whose_worker_died_on_its_last_attempt_fails_as_worker_lost() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let extra = [
        ("OTTER_LEASE_TTL", "1s"),
        ("OTTER_RECONCILE_INTERVAL", "300ms"),
        ("OTTER_VIBE_EXTRA_ENV", "FAKE_VIBE_SCENARIO=hang"),
    ];
    let mut doomed = WorkerProcess::spawn(&app, "doomed", &extra);
    let job = submit(&app, &ws, "once", json!({ "max_attempts": 1 })).await;
    status_is(&app, &job, "running").await;
    doomed.kill9();
    // Any worker recovers it; this one has nothing else to do.
    let _other = Worker::start(
        &app,
        &[
            ("OTTER_LEASE_TTL", "1s"),
            ("OTTER_RECONCILE_INTERVAL", "300ms"),
        ],
    )
    .await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"], "worker_lost");
    assert_eq!(kinds(&events(&app, &job).await).last(), Some(&"job_failed"));
    // The quiet vibe of the dead worker died with it (no broken pipe would have stopped it).
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn three_worker_processes_run_sixty_jobs_each_exactly_once() {
    const JOBS: usize = 60;
    let app = TestApp::spawn().await;
    let mut workspaces = Vec::new();
    for i in 0..12 {
        workspaces.push(app.workspace(&format!("ws{i}")).await);
    }
    let extra = [
        ("OTTER_WORKER_CONCURRENCY", "3"),
        ("OTTER_VIBE_EXTRA_ENV", "FAKE_VIBE_SCENARIO=text"),
    ];
    let _workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&app, &format!("w{i}"), &extra))
        .collect();
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        jobs.push(
            submit(
                &app,
                &workspaces[i % workspaces.len()],
                &format!("job {i}"),
                json!({}),
            )
            .await,
        );
    }
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        let done = finished(&app, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        let events = events(&app, job).await;
        let started: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] == "job_started")
            .collect();
        assert_eq!(started.len(), 1, "job ran exactly once");
        *by_worker
            .entry(
                started[0]["payload"]["worker_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert_eq!(by_worker.values().sum::<usize>(), JOBS);
    assert!(by_worker.len() > 1, "the work was shared: {by_worker:?}");
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["total"], 0);
}

#[tokio::test]
async fn jobs_survive_redis_forgetting_them() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(submit(&app, &ws, &format!("job {i}"), json!({})).await);
    }
    // What FLUSHALL does to this queue (without disturbing other tests on the same Redis).
    let mut redis = redis_conn(&app.env.redis_url).await;
    let _: () = redis::cmd("DEL")
        .arg(app.state.queue.ready_key())
        .arg(app.state.queue.delayed_key())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(app.state.queue.ready_len().await.unwrap(), 0);

    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_RECONCILE_INTERVAL", "300ms"),
            ("OTTER_VIBE_EXTRA_ENV", "FAKE_VIBE_SCENARIO=text"),
        ],
    )
    .await;
    for job in &jobs {
        assert_eq!(finished(&app, job).await["status"], "succeeded");
        assert_eq!(starts(&app, job).await, 1);
    }
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A private redis-server without persistence, restartable on the same port, in a scratch
/// directory of its own (removed with it).
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("otter-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts it empty.
    fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/services.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[tokio::test]
async fn a_redis_restart_without_persistence_loses_no_job() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(&[("OTTER_REDIS_URL", &url)]).await;
    let ws = app.workspace("ws").await;
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_REDIS_URL", &url),
            ("OTTER_RECONCILE_INTERVAL", "500ms"),
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario("slow", &["FAKE_VIBE_SLEEP_MS=100"]),
            ),
        ],
    )
    .await;
    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(submit(&app, &ws, &format!("job {i}"), json!({})).await);
    }
    status_is(&app, &jobs[0], "running").await;

    // Redis dies and comes back empty while four jobs wait.
    redis.kill();
    let (status, health) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert!(
        health["redis"].as_str().unwrap().starts_with("error"),
        "{health}"
    );
    // PostgreSQL is the source of truth: a prompt is still accepted while Redis is down.
    jobs.push(submit(&app, &ws, "submitted while Redis was down", json!({})).await);
    redis.restart();

    for job in &jobs {
        let done = finished(&app, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(starts(&app, job).await, 1, "ran exactly once");
    }
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

/// A job parked on a rate limit waits in Redis's delayed set, but its gate and its `run_after`
/// are PostgreSQL's: Redis coming back empty loses neither the job nor the gate.
#[tokio::test]
async fn a_redis_restart_while_a_job_is_parked_keeps_the_job_and_its_gate() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(&[("OTTER_REDIS_URL", &url)]).await;
    let (ws, other_ws) = (app.workspace("ws").await, app.workspace("other").await);
    let limited = app.env.dir.join("rate-limited");
    std::fs::write(&limited, "").unwrap();
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_REDIS_URL", &url),
            ("OTTER_RECONCILE_INTERVAL", "300ms"),
            ("OTTER_RATE_LIMIT_BACKOFF", "6s"),
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario(
                    "rate-limit",
                    &[&format!("FAKE_VIBE_RATE_LIMIT_FILE={}", limited.display())],
                ),
            ),
        ],
    )
    .await;
    let parked = submit(&app, &ws, "hit the limit", json!({ "max_attempts": 1 })).await;
    let id = parked["id"].as_str().unwrap().to_owned();
    let until = payload_of(&app, &parked, "job_rate_limited").await["until"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(&limited).unwrap();

    // Redis dies and comes back empty while the job is parked: its wake-up is gone.
    redis.restart();
    let (status, queue) = app.get("/v1/queue").await;
    assert_eq!(status, StatusCode::OK, "{queue}");
    let gates = queue["rate_limits"].as_array().unwrap();
    assert_eq!(gates.len(), 1, "the gate is still shut: {queue}");
    assert_eq!(gates[0]["until"], until.as_str(), "{queue}");
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["attempts"], 0, "{job}");
    // A job submitted after the restart waits for the same gate. (In another workspace: the end
    // of a run pushes its workspace's next job, which would bring the parked one back too.)
    let later = submit(
        &app,
        &other_ws,
        "after the restart",
        json!({ "max_attempts": 1 }),
    )
    .await;

    let until = chrono::DateTime::parse_from_rfc3339(&until).unwrap();
    for job in [&parked, &later] {
        let done = finished(&app, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        let started =
            chrono::DateTime::parse_from_rfc3339(done["started_at"].as_str().unwrap()).unwrap();
        assert!(started >= until, "no run before the gate opened: {done}");
    }
    assert_eq!(
        starts(&app, &parked).await,
        2,
        "the limited run, then one more"
    );
    assert_eq!(starts(&app, &later).await, 1, "it never ran into the limit");
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["rate_limits"], json!([]), "{queue}");
}

#[tokio::test]
async fn output_written_while_postgres_is_unreachable_is_not_lost() {
    let (app, ws, _worker) = app_with_worker("slow", &["FAKE_VIBE_SLEEP_MS=700"]).await;
    let job = submit(&app, &ws, "through an outage", json!({})).await;
    status_is(&app, &job, "running").await;

    // Cut this test's database off: no new connections, existing ones killed.
    let db_name = app.env.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&db_name)
        .execute(&admin)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself, not a wait for a condition
    sqlx::query(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .unwrap();

    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = events(&app, &job).await;
    let stdout = lines(&events, "stdout");
    assert_eq!(
        stdout.len(),
        4,
        "every line of the run was stored: {stdout:?}"
    );
    let seqs: HashSet<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs.len(), events.len());
    assert_eq!(
        starts(&app, &job).await,
        1,
        "{:#?}",
        events
            .iter()
            .map(|e| (&e["kind"], &e["payload"]))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn sigterm_stops_a_worker_process_cleanly_and_gives_its_job_back() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let extra = [
        ("OTTER_VIBE_EXTRA_ENV", "FAKE_VIBE_SCENARIO=hang"),
        ("OTTER_SHUTDOWN_GRACE", "1s"),
        ("OTTER_CANCEL_GRACE", "1s"),
    ];
    let mut worker = WorkerProcess::spawn(&app, "terminated", &extra);
    let job = submit(&app, &ws, "long", json!({})).await;
    status_is(&app, &job, "running").await;
    let pid = nix::unistd::Pid::from_raw(worker.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = eventually(JOB_WAIT, "the worker to exit", || {
        let exited = worker.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "a clean exit: {status:?}");
    let (_, back) = app
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(back["status"], "queued", "{back}");
    assert_eq!(back["attempts"], 0);
    app.assert_no_processes_left().await;
}

/// A private PostgreSQL + Redis pair, started by the project's own `scripts/services.sh` in a
/// scratch state directory on free ports, so that a test can restart them without touching the
/// servers other tests use.
struct PrivateServices {
    env: Vec<(String, String)>,
    state_dir: std::path::PathBuf,
}

impl PrivateServices {
    fn start() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let state_dir =
            std::env::temp_dir().join(format!("otter-services-{}", uuid::Uuid::new_v4().simple()));
        let env = vec![
            (
                "OTTER_STATE_DIR".to_owned(),
                state_dir.display().to_string(),
            ),
            ("OTTER_PG_PORT".to_owned(), free().to_string()),
            ("OTTER_REDIS_PORT".to_owned(), free().to_string()),
        ];
        let services = Self { env, state_dir };
        services.run("start");
        services
    }

    fn run(&self, action: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .output()
            .expect("run scripts/services.sh");
        assert!(
            out.status.success(),
            "services.sh {action} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn port(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| k == name).unwrap().1
    }

    fn database_url(&self) -> String {
        format!(
            "postgres://otter:otter@127.0.0.1:{}/otter",
            self.port("OTTER_PG_PORT")
        )
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port("OTTER_REDIS_PORT"))
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_a_restart_of_postgres_and_redis() {
    let services = tokio::task::spawn_blocking(PrivateServices::start)
        .await
        .unwrap();
    let (db, redis) = (services.database_url(), services.redis_url());
    let app =
        TestApp::spawn_with(&[("OTTER_DATABASE_URL", &db), ("OTTER_REDIS_URL", &redis)]).await;
    let ws = app.workspace("ws").await;
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_DATABASE_URL", &db),
            ("OTTER_REDIS_URL", &redis),
            ("OTTER_RECONCILE_INTERVAL", "500ms"),
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario("slow", &["FAKE_VIBE_SLEEP_MS=1500"]),
            ),
        ],
    )
    .await;
    let job = submit(&app, &ws, "through a restart", json!({})).await;
    let waiting = submit(&app, &ws, "queued across the restart", json!({})).await;
    status_is(&app, &job, "running").await;
    // A watcher of the waiting job, connected before the restart: everything that job does
    // happens after it, so it reaches the watcher only if the server's live feed reconnected.
    let path = format!(
        "/v1/events/stream?job_id={}",
        waiting["id"].as_str().unwrap()
    );
    let mut watcher = SseClient::connect(&app, &path, None).await;
    // Its replay (the job_queued event) is read before the restart: a stream whose first read
    // meets a database going down ends with `event: error`, for the client to reconnect.
    let first = watcher.next(JOB_WAIT).await.expect("the replay");
    assert_eq!(first.event.as_deref(), Some("job_queued"));
    let mut watched = vec![first.id_num().unwrap()];

    // Both servers go down and come back (fast shutdown: every connection is cut).
    let services = tokio::task::spawn_blocking(move || {
        services.run("stop");
        services.run("start");
        services
    })
    .await
    .unwrap();

    for job in [&job, &waiting] {
        let done = finished(&app, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(starts(&app, job).await, 1, "ran exactly once");
        let events = events(&app, job).await;
        assert_eq!(
            lines(&events, "stdout").len(),
            4,
            "every line of the run was stored"
        );
    }
    loop {
        let frame = watcher
            .next(JOB_WAIT)
            .await
            .expect("the stream stays open until the end");
        if frame.event.as_deref() == Some("end") {
            break;
        }
        watched.push(frame.id_num().unwrap());
    }
    let stored: Vec<i64> = events(&app, &waiting)
        .await
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        watched, stored,
        "the watcher got every event, once, in order"
    );
    let (status, health) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    drop(app);
    tokio::task::spawn_blocking(move || drop(services))
        .await
        .unwrap();
}

#[tokio::test]
async fn duplicate_stale_and_garbage_deliveries_run_nothing_twice() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let job = submit(&app, &ws, "once", json!({})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let mut redis = redis_conn(&app.env.redis_url).await;
    let ready = app.state.queue.ready_key();
    // Garbage and an id that belongs to no job, next to the real one.
    let _: () = redis::cmd("ZADD")
        .arg(&ready)
        .arg(0)
        .arg("not-a-uuid")
        .arg(1)
        .arg(uuid::Uuid::new_v4().to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_WORKER_CONCURRENCY", "2"),
            ("OTTER_VIBE_EXTRA_ENV", "FAKE_VIBE_SCENARIO=text"),
        ],
    )
    .await;
    assert_eq!(finished(&app, &job).await["status"], "succeeded");
    // The finished job delivered again, twice: nothing runs.
    for _ in 0..2 {
        let _: () = redis::cmd("ZADD")
            .arg(&ready)
            .arg(0)
            .arg(&id)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    eventually(JOB_WAIT, "the stale deliveries to be consumed", || async {
        (app.state.queue.ready_len().await.ok()? == 0).then_some(())
    })
    .await;
    assert_eq!(starts(&app, &job).await, 1);
    let (_, again) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(again["status"], "succeeded");
    assert_eq!(again["attempts"], 1);
}
