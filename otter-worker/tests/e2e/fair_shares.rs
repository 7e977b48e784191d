//! Fair shares between projects, end to end: a project's `max_running` (or the workers'
//! `OTTER_PROJECT_MAX_RUNNING`) over several workers, and a project flooding the queue while
//! another has one job.

use chrono::{DateTime, Utc};
use otter_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Worker, finished, scenario, submit};

async fn project(app: &TestApp, body: Value) -> String {
    let (status, project) = app.post("/v1/projects", body).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    project["id"].as_str().unwrap().to_owned()
}

/// A workspace of `project` on a fresh directory.
async fn workspace(app: &TestApp, project: &str, name: &str) -> Value {
    let dir = app.env.dir.join(name);
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({ "name": name, "path": dir.display().to_string(), "create": true,
                    "project_id": project }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    ws
}

fn time(job: &Value, field: &str) -> DateTime<Utc> {
    job[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} of {job}"))
        .parse()
        .unwrap()
}

/// Asserts that no two of `jobs` (finished) ran at once.
fn never_overlap(jobs: &[Value]) {
    let mut runs: Vec<(DateTime<Utc>, DateTime<Utc>)> = jobs
        .iter()
        .map(|j| (time(j, "started_at"), time(j, "finished_at")))
        .collect();
    runs.sort();
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two jobs of the project ran at once: {pair:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_running_one_never_lets_two_of_a_projects_jobs_overlap() {
    let app = TestApp::spawn().await;
    // One project limits itself; the other gets the workers' default.
    let own = project(&app, json!({ "name": "own", "max_running": 1 })).await;
    let defaulted = project(&app, json!({ "name": "defaulted" })).await;
    let slow = scenario("slow", &["FAKE_VIBE_SLEEP_MS=300"]);
    let env = [
        ("OTTER_VIBE_EXTRA_ENV", slow.as_str()),
        ("OTTER_WORKER_CONCURRENCY", "3"),
        ("OTTER_PROJECT_MAX_RUNNING", "1"),
    ];
    // Two workers with room for three jobs each: only the limit keeps the jobs apart.
    let _workers = [
        Worker::start(&app, &env).await,
        Worker::start(&app, &env).await,
    ];
    let mut submitted = Vec::new();
    for (p, name) in [(&own, "own"), (&defaulted, "defaulted")] {
        for i in 0..4 {
            let ws = workspace(&app, p, &format!("{name}-{i}")).await;
            submitted.push((name, submit(&app, &ws, "go", json!({})).await));
        }
    }
    let mut ended: Vec<(&str, Value)> = Vec::new();
    for (name, job) in &submitted {
        let job = finished(&app, job).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(
            job["attempts"], 1,
            "held back without using an attempt: {job}"
        );
        ended.push((name, job));
    }
    for name in ["own", "defaulted"] {
        let jobs: Vec<Value> = ended
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, j)| j.clone())
            .collect();
        never_overlap(&jobs);
    }
    // The project says its limit; the other says it has none of its own.
    let (_, p) = app.get(&format!("/v1/projects/{own}")).await;
    assert_eq!(p["max_running"], 1);
    let (_, p) = app.get(&format!("/v1/projects/{defaulted}")).await;
    assert_eq!(p["max_running"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_job_project_is_served_while_another_floods_the_queue() {
    let app = TestApp::spawn().await;
    let flood = project(&app, json!({ "name": "flood" })).await;
    let single = project(&app, json!({ "name": "single" })).await;
    let flood_ws = workspace(&app, &flood, "flood").await;
    let single_ws = workspace(&app, &single, "single").await;
    let mut flooded = Vec::new();
    for i in 0..200 {
        flooded.push(submit(&app, &flood_ws, &format!("flood {i}"), json!({})).await);
    }
    let lone = submit(&app, &single_ws, "just one", json!({})).await;
    // Its turn is now; the flood's last job's is 199 turns on.
    assert!(
        time(&lone, "queue_at") < time(&flooded[1], "queue_at"),
        "{lone}"
    );

    // One worker, one job at a time: claim order is all that decides.
    let text = scenario("text", &[]);
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", text.as_str())]).await;
    let lone = finished(&app, &lone).await;
    assert_eq!(lone["status"], "succeeded", "{lone}");
    let lone_started = time(&lone, "started_at");
    let (status, page) = app
        .get(&format!(
            "/v1/jobs?workspace_id={}&limit=500",
            flood_ws["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let before: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["started_at"]
                .as_str()
                .is_some_and(|s| s.parse::<DateTime<Utc>>().unwrap() < lone_started)
        })
        .collect();
    // The flood's first job (submitted first) may run before it; no other.
    assert!(
        before.len() <= 1,
        "{} of the flood's jobs ran before the one-job project's",
        before.len()
    );
    // Priority still wins over the turns: the flood's job moved up runs next.
    let last = flooded.last().unwrap();
    let (status, moved) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/queue/{}", last["id"].as_str().unwrap()),
            Some(json!({ "priority": 10 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let patched = Utc::now();
    let moved = finished(&app, last).await;
    assert_eq!(moved["status"], "succeeded", "{moved}");
    let moved_started = time(&moved, "started_at");
    let (_, page) = app
        .get(&format!(
            "/v1/jobs?workspace_id={}&limit=500",
            flood_ws["id"].as_str().unwrap()
        ))
        .await;
    // Only what had started (or been taken) by the time it moved went before it.
    for job in page["items"].as_array().unwrap() {
        if let Some(started) = job["started_at"].as_str() {
            let started: DateTime<Utc> = started.parse().unwrap();
            assert!(
                started >= moved_started || started <= patched,
                "a job of priority 0 started after the move, before the moved one: {job}"
            );
        }
    }
}
