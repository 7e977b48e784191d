//! Follow-ups in the same vibe session, limits and models per job, project budgets, through the
//! whole pipeline with the stand-in (which keeps its sessions in the workspace's `VIBE_HOME`
//! and answers `--resume` as vibe 3.0.3 does).

use otter_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Worker, finished, scenario, submit};

/// Every run the stand-in recorded (`FAKE_VIBE_RECORD`), in order.
fn recorded_runs(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the stand-in's record")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// A run's arguments.
fn argv(run: &Value) -> Vec<&str> {
    run["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .map(|a| a.as_str().expect("an argument"))
        .collect()
}

/// The value after `flag` in `argv`.
fn flag<'a>(argv: &[&'a str], flag: &str) -> Option<&'a str> {
    let at = argv.iter().position(|a| *a == flag)?;
    argv.get(at + 1).copied()
}

fn id(job: &Value) -> &str {
    job["id"].as_str().expect("a job id")
}

#[tokio::test]
async fn a_follow_up_is_given_resume_with_its_parents_session_id() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let extra = scenario(
        "tools",
        &[&format!("FAKE_VIBE_RECORD={}", record.display())],
    );
    let worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &extra)]).await;

    let first = submit(&app, &ws, "Write a greeting to a file.", json!({})).await;
    let first = finished(&app, &first).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let session = first["session_id"]
        .as_str()
        .expect("vibe's session id")
        .to_owned();
    assert_eq!(first["output"]["export"]["session_id"], session.as_str());
    assert_eq!(first["parent_job_id"], Value::Null);
    worker.stop().await;

    // Queued while no worker runs: the follow-up already carries its parent's session.
    let (status, second) = app
        .post(
            "/v1/prompts",
            json!({"prompt": "Now say goodbye in the same file.", "parent_job_id": id(&first)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["session_id"], session.as_str());
    assert_eq!(second["workspace_id"], ws["id"]);
    let (_, queue) = app.get(&format!("/v1/queue?session_id={session}")).await;
    assert_eq!(queue["total"], 1, "{queue}");
    assert_eq!(queue["items"][0]["id"], second["id"]);
    let (_, queue) = app.get("/v1/queue?session_id=another").await;
    assert_eq!(queue["total"], 0);

    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &extra)]).await;
    let second = finished(&app, &second).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["parent_job_id"], first["id"]);
    assert_eq!(
        second["session_id"],
        session.as_str(),
        "vibe kept the session"
    );

    let runs = recorded_runs(&record);
    assert_eq!(runs.len(), 2);
    assert_eq!(
        flag(&argv(&runs[0]), "--resume"),
        None,
        "a first turn is new"
    );
    let follow_up = argv(&runs[1]);
    assert_eq!(
        flag(&follow_up, "--resume"),
        Some(session.as_str()),
        "{follow_up:?}"
    );
    assert!(
        !follow_up.iter().any(|a| *a == "-c" || *a == "--continue"),
        "never -c: {follow_up:?}"
    );
    // The session went on: the second turn's input counted the first one.
    let tokens = |job: &Value| job["output"]["usage"]["input_tokens"].as_i64().unwrap();
    assert!(tokens(&second) > tokens(&first), "{second}");

    // The conversation, newest first.
    let (_, history) = app.get(&format!("/v1/history?session_id={session}")).await;
    assert_eq!(history["total"], 2, "{history}");
    assert_eq!(history["items"][0]["id"], second["id"]);
    assert_eq!(history["items"][1]["id"], first["id"]);
    let (_, none) = app.get("/v1/history?session_id=another").await;
    assert_eq!(none["total"], 0);
}

#[tokio::test]
async fn a_follow_up_of_a_running_job_waits_for_it() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let extra = scenario(
        "slow",
        &[
            "FAKE_VIBE_SLEEP_MS=300",
            &format!("FAKE_VIBE_RECORD={}", record.display()),
        ],
    );
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &extra),
            ("OTTER_WORKER_CONCURRENCY", "2"),
        ],
    )
    .await;
    let first = submit(&app, &ws, "first", json!({})).await;
    crate::harness::status_is(&app, &first, "running").await;
    let (status, second) = app
        .post(
            "/v1/prompts",
            json!({"prompt": "then", "parent_job_id": id(&first), "priority": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["status"], "queued");
    assert_eq!(
        second["session_id"],
        Value::Null,
        "the parent has not ended yet"
    );

    let second = finished(&app, &second).await;
    let first = finished(&app, &first).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(second["status"], "succeeded", "{second}");
    let at = |job: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str().expect(field)).expect("a time")
    };
    assert!(
        at(&second, "started_at") >= at(&first, "finished_at"),
        "the follow-up started after its parent ended: {first} {second}"
    );
    let runs = recorded_runs(&record);
    assert_eq!(runs.len(), 2);
    assert_eq!(
        flag(&argv(&runs[1]), "--resume"),
        first["session_id"].as_str()
    );
    assert_eq!(second["session_id"], first["session_id"]);
}

#[tokio::test]
async fn a_follow_up_waits_for_a_queued_parent_even_when_it_comes_first() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    // Both queued before any worker runs; the follow-up ranks first in claim order.
    let first = submit(&app, &ws, "first", json!({"priority": 0})).await;
    let second = submit(
        &app,
        &ws,
        "then",
        json!({"priority": 100, "parent_job_id": first["id"]}),
    )
    .await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("text", &[]))]).await;
    let second = finished(&app, &second).await;
    let first = finished(&app, &first).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let at = |job: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str().expect(field)).expect("a time")
    };
    assert!(
        at(&second, "started_at") >= at(&first, "finished_at"),
        "{first} {second}"
    );
    assert_eq!(second["session_id"], first["session_id"]);
}

#[tokio::test]
async fn a_follow_up_whose_parent_left_no_session_fails_saying_so() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    // The parent fails before vibe starts a session (a configuration error), after the
    // follow-up was accepted.
    let first = submit(&app, &ws, "first", json!({"max_attempts": 1})).await;
    let second = submit(&app, &ws, "then", json!({"parent_job_id": first["id"]})).await;
    let _worker = Worker::start(
        &app,
        &[("OTTER_VIBE_EXTRA_ENV", &scenario("missing-key", &[]))],
    )
    .await;
    let first = finished(&app, &first).await;
    assert_eq!(first["status"], "failed", "{first}");
    assert_eq!(first["session_id"], Value::Null);
    let second = finished(&app, &second).await;
    assert_eq!(second["status"], "failed", "{second}");
    assert_eq!(second["attempts"], 1, "not retried: {second}");
    let error = second["error"].as_str().unwrap();
    assert!(error.contains("without a vibe session"), "{error}");
}

#[tokio::test]
async fn limits_and_the_model_arrive_as_flags_and_a_limit_stop_fails_with_vibes_reason() {
    // Defaults are the server's: applied at submit, shown on the job.
    let app = TestApp::spawn_with(&[("OTTER_DEFAULT_MAX_TOKENS", "50000")]).await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let extra = scenario(
        "turn-limit",
        &[&format!("FAKE_VIBE_RECORD={}", record.display())],
    );
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &extra),
            ("OTTER_VIBE_MODEL", "mock"),
        ],
    )
    .await;
    let job = submit(
        &app,
        &ws,
        "loop",
        json!({"limits": {"max_turns": 3, "max_price_usd": 2.5, "time_limit_secs": 120},
               "model": "mock-b"}),
    )
    .await;
    assert_eq!(job["limits"]["max_tokens"], 50000, "{job}");
    let job = finished(&app, &job).await;
    let runs = recorded_runs(&record);
    let args = argv(&runs[0]);
    assert_eq!(flag(&args, "--max-turns"), Some("3"), "{args:?}");
    assert_eq!(flag(&args, "--max-price"), Some("2.5"));
    assert_eq!(flag(&args, "--max-tokens"), Some("50000"), "the default");
    assert_eq!(flag(&args, "--time-limit"), Some("120"));
    assert_eq!(runs[0]["env"]["VIBE_ACTIVE_MODEL"], "mock-b");
    assert_eq!(job["output"]["model"], "mock-b", "{job}");
    // The stand-in loops until its turn limit: vibe's reason, as for any stop on a limit.
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 3);
    assert_eq!(job["output"]["outcome"], "turn_limit");
    assert!(
        job["error"].as_str().unwrap().contains("turn_limit"),
        "{job}"
    );
    assert_eq!(job["output"]["export"]["steps"], 3, "{job}");
}

#[tokio::test]
async fn a_run_gets_at_most_the_remaining_budget_and_a_spent_budget_refuses_prompts() {
    let app = TestApp::spawn().await;
    let (status, project) = app
        .post("/v1/projects", json!({"name": "p", "budget_usd": 0.02}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project_id = project["id"].as_str().unwrap().to_owned();
    let dir = app.env.dir.join("ws");
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({"project_id": project_id, "path": dir.display().to_string(), "create": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let record = app.env.dir.join("record.jsonl");
    let extra = scenario(
        "tools",
        &[&format!("FAKE_VIBE_RECORD={}", record.display())],
    );
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &extra)]).await;

    // The whole budget is less than the job's own limit.
    let first = submit(&app, &ws, "one", json!({"limits": {"max_price_usd": 5}})).await;
    let first = finished(&app, &first).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let cost = first["output"]["cost"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < 0.02, "{first}");
    let (_, usage) = app.get(&format!("/v1/projects/{project_id}/usage")).await;
    assert_eq!(usage["spent_usd"].as_f64(), Some(cost), "{usage}");
    assert_eq!(usage["jobs"], 1);
    assert_eq!(
        usage["prompt_tokens"],
        first["output"]["usage"]["input_tokens"]
    );
    assert_eq!(
        usage["completion_tokens"],
        first["output"]["usage"]["output_tokens"]
    );
    let remaining = usage["remaining_usd"].as_f64().unwrap();
    assert!((remaining - (0.02 - cost)).abs() < 1e-9, "{usage}");

    // What is left is less than a run costs: vibe stops it on its price limit.
    let second = submit(&app, &ws, "two", json!({})).await;
    let second = finished(&app, &second).await;
    assert_eq!(second["status"], "failed", "{second}");
    assert_eq!(second["output"]["outcome"], "price_limit", "{second}");

    let runs = recorded_runs(&record);
    let price = |run: &Value| {
        flag(&argv(run), "--max-price")
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(price(&runs[0]), 0.02, "the budget, below the job's 5 USD");
    assert!((price(&runs[1]) - remaining).abs() < 1e-9, "what was left");

    let (_, usage) = app.get(&format!("/v1/projects/{project_id}/usage")).await;
    assert_eq!(usage["remaining_usd"], 0.0, "{usage}");
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({"prompt": "three", "workspace_id": ws["id"]}),
        )
        .await;
    otter_testkit::assert_error(status, &body, StatusCode::CONFLICT, "budget_exhausted");
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["total"], 0);
}
