//! The queue lifecycle with a worker: cancel of a running job kills its whole process group,
//! one running job per workspace, time limits, and graceful shutdown.

use std::time::Duration;

use otter_testkit::{TestApp, assert_error, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    JOB_WAIT, Worker, events, finished, kinds, process_gone, read_pid, recorded_run, scenario,
    status_is, submit,
};

#[tokio::test]
async fn cancelling_a_running_job_stops_vibe_and_everything_it_started() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let pidfile = app.env.dir.join("grandchild.pid");
    let record = app.env.dir.join("record.jsonl");
    let _worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario(
                    "grandchild",
                    &[
                        &format!("FAKE_VIBE_PIDFILE={}", pidfile.display()),
                        &format!("FAKE_VIBE_RECORD={}", record.display()),
                    ],
                ),
            ),
            ("OTTER_CANCEL_GRACE", "2s"),
        ],
    )
    .await;
    let job = submit(&app, &ws, "run forever", json!({})).await;
    let id = job["id"].as_str().unwrap();
    let running = status_is(&app, &job, "running").await;
    assert!(running["worker_id"].is_string(), "{running}");
    assert!(running["lease_expires_at"].is_string(), "{running}");
    let grandchild = read_pid(&pidfile).await;
    let recorded = recorded_run(&record);
    let vibe = recorded["pid"].as_u64().unwrap() as u32;
    assert!(!process_gone(vibe) && !process_gone(grandchild));

    // A running job can be neither paused nor resumed.
    for action in ["pause", "resume"] {
        let (status, body) = app
            .post(&format!("/v1/jobs/{id}/{action}"), json!({}))
            .await;
        assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    }

    let (status, accepted) = app.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["cancel_requested"], true);
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    for pid in [vibe, grandchild] {
        eventually(
            Duration::from_secs(10),
            "every process of the job to be gone",
            || async move { process_gone(pid).then_some(()) },
        )
        .await;
    }
    let events = events(&app, &job).await;
    assert_eq!(kinds(&events).last(), Some(&"job_cancelled"));
    // vibe got SIGTERM and said so (the stand-in, like vibe 3.0.3, prints "Stopped: terminated").
    assert!(
        events
            .iter()
            .any(|e| e["payload"]["text"] == "Stopped: terminated"),
        "vibe's own shutdown line was kept"
    );
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn one_workspace_runs_one_job_at_a_time_without_holding_up_others() {
    let app = TestApp::spawn().await;
    let busy = app.workspace("busy").await;
    let other = app.workspace("other").await;
    let _worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario("slow", &["FAKE_VIBE_SLEEP_MS=700"]),
            ),
            ("OTTER_WORKER_CONCURRENCY", "3"),
        ],
    )
    .await;
    let a1 = submit(&app, &busy, "a1", json!({})).await;
    let a2 = submit(&app, &busy, "a2", json!({})).await;
    let b = submit(&app, &other, "b", json!({})).await;
    let (a1, a2, b) = (
        finished(&app, &a1).await,
        finished(&app, &a2).await,
        finished(&app, &b).await,
    );
    for job in [&a1, &a2, &b] {
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let time = |job: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str().unwrap()).unwrap()
    };
    assert!(
        time(&a2, "started_at") >= time(&a1, "finished_at"),
        "a2 waited for a1"
    );
    assert!(
        time(&b, "started_at") < time(&a1, "finished_at"),
        "b ran beside a1"
    );
}

#[tokio::test]
async fn a_job_over_its_time_limit_is_stopped() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let _worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario("hang", &[&format!("FAKE_VIBE_RECORD={}", record.display())]),
            ),
            ("OTTER_JOB_TIMEOUT", "2s"),
        ],
    )
    .await;
    let job = finished(&app, &submit(&app, &ws, "hang", json!({})).await).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 3);
    assert!(job["error"].as_str().unwrap().contains("deadline"), "{job}");
    let recorded = recorded_run(&record);
    let argv: Vec<&str> = recorded["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.windows(2).any(|w| w == ["--time-limit", "2"]),
        "{argv:?}"
    );
}

#[tokio::test]
async fn a_stopping_worker_gives_its_job_back_without_losing_an_attempt() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &scenario("hang", &[])),
            ("OTTER_SHUTDOWN_GRACE", "1s"),
            ("OTTER_CANCEL_GRACE", "1s"),
        ],
    )
    .await;
    let job = submit(&app, &ws, "long", json!({})).await;
    status_is(&app, &job, "running").await;
    worker.stop().await;
    let (_, back) = app
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(back["status"], "queued", "{back}");
    assert_eq!(back["attempts"], 0, "the attempt is not counted");
    let events = events(&app, &back).await;
    let retry = events
        .iter()
        .find(|e| e["kind"] == "job_retry_scheduled")
        .expect("given back");
    assert_eq!(retry["payload"]["reason"], "worker_shutdown");
    assert_eq!(retry["payload"]["attempt_counted"], false);

    // Another worker picks it up and finishes it.
    let _next = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
    let done = finished(&app, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    let _ = JOB_WAIT;
}

#[tokio::test]
async fn a_stopping_worker_lets_a_short_job_finish() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario("slow", &["FAKE_VIBE_SLEEP_MS=300"]),
            ),
            ("OTTER_SHUTDOWN_GRACE", "30s"),
        ],
    )
    .await;
    let job = submit(&app, &ws, "short", json!({})).await;
    status_is(&app, &job, "running").await;
    let queued = submit(&app, &ws, "not claimed by a stopping worker", json!({})).await;
    worker.stop().await;
    let (_, done) = app
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, waiting) = app
        .get(&format!("/v1/jobs/{}", queued["id"].as_str().unwrap()))
        .await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(waiting["attempts"], 0);
}

#[tokio::test]
async fn vibe_can_post_its_own_preview_url_with_its_job_token_and_nothing_more() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "admin-token")]).await;
    let dir = app.env.mkdir("ws");
    let create = app
        .client
        .post(format!("{}/v1/workspaces", app.base))
        .bearer_auth("admin-token")
        .json(&json!({ "path": dir.display().to_string() }))
        .send()
        .await
        .unwrap();
    let ws: Value = create.json().await.unwrap();
    let record = app.env.dir.join("record.jsonl");
    let _worker = Worker::start(
        &app,
        &[(
            "OTTER_VIBE_EXTRA_ENV",
            &scenario("hang", &[&format!("FAKE_VIBE_RECORD={}", record.display())]),
        )],
    )
    .await;
    let submit = app
        .client
        .post(format!("{}/v1/prompts", app.base))
        .bearer_auth("admin-token")
        .json(&json!({ "prompt": "serve it", "workspace_id": ws["id"] }))
        .send()
        .await
        .unwrap();
    let job: Value = submit.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let recorded: Value = eventually(JOB_WAIT, "vibe to start", || async {
        let text = std::fs::read_to_string(&record).ok()?;
        serde_json::from_str(text.lines().next()?).ok()
    })
    .await;
    let token = recorded["env"]["OTTER_API_TOKEN"]
        .as_str()
        .unwrap()
        .to_owned();

    let post = |job: String, token: String| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/v1/jobs/{job}/preview-url", app.base))
                .bearer_auth(token)
                .json(&json!({ "preview_url": "http://127.0.0.1:3000" }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The job token opens exactly this job's preview-url route.
    assert_eq!(post(id.to_owned(), token.clone()).await, StatusCode::OK);
    let other = uuid::Uuid::new_v4().to_string();
    assert_eq!(post(other, token.clone()).await, StatusCode::UNAUTHORIZED);
    let read = app
        .client
        .get(format!("{}/v1/jobs/{id}", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        StatusCode::UNAUTHORIZED,
        "the job token is not an API token"
    );
    let job: Value = app
        .client
        .get(format!("{}/v1/jobs/{id}", app.base))
        .bearer_auth("admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["preview_url"], "http://127.0.0.1:3000/");

    // Once the run is over the token is worthless.
    let cancel = app
        .client
        .post(format!("{}/v1/jobs/{id}/cancel", app.base))
        .bearer_auth("admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    eventually(JOB_WAIT, "the job to be cancelled", || async {
        let job: Value = app
            .client
            .get(format!("{}/v1/jobs/{id}", app.base))
            .bearer_auth("admin-token")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (job["status"] == "cancelled").then_some(())
    })
    .await;
    assert_eq!(post(id.to_owned(), token).await, StatusCode::UNAUTHORIZED);
}
