//! Queue controls: priority, pause, resume, cancel, and their conflicts (409).

use otter_testkit::{TestApp, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn submit(app: &TestApp, ws: &Value, prompt: &str, priority: i32) -> Value {
    let (status, job) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": prompt, "workspace_id": ws["id"], "priority": priority }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job
}

fn prompts(queue: &Value) -> Vec<&str> {
    queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["prompt"].as_str().unwrap())
        .collect()
}

async fn kinds(app: &TestApp, job: &Value) -> Vec<String> {
    let (_, page) = app
        .get(&format!("/v1/jobs/{}/events", job["id"].as_str().unwrap()))
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn patching_the_priority_moves_a_queued_job() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let a = submit(&app, &ws, "a", 0).await;
    submit(&app, &ws, "b", 0).await;
    let c = submit(&app, &ws, "c", 0).await;
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(prompts(&queue), ["a", "b", "c"]);

    let (status, moved) = app
        .request(
            Method::PATCH,
            &format!("/v1/queue/{}", c["id"].as_str().unwrap()),
            Some(json!({ "priority": 5 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["priority"], 5);
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(prompts(&queue), ["c", "a", "b"]);
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["items"][0]["id"], c["id"]);
    let events = kinds(&app, &c).await;
    assert_eq!(events, ["job_queued", "job_priority_changed"]);

    // Redis's order follows: the next pop is c.
    let popped = app
        .state
        .queue
        .pop(std::time::Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(popped.to_string(), c["id"].as_str().unwrap());

    // Bad bodies and unknown jobs.
    let path = format!("/v1/queue/{}", a["id"].as_str().unwrap());
    let (status, body) = app
        .request(Method::PATCH, &path, Some(json!({ "priority": 100000 })))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    let (status, body) = app
        .request(Method::PATCH, &path, Some(json!({ "priority": "high" })))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/v1/queue/{}", uuid::Uuid::new_v4()),
            Some(json!({ "priority": 1 })),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn pause_keeps_a_job_queued_and_unclaimable_until_resumed() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let job = submit(&app, &ws, "later", 0).await;
    let id = job["id"].as_str().unwrap();

    let (status, paused) = app.post(&format!("/v1/jobs/{id}/pause"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["status"], "queued");
    assert_eq!(paused["paused"], true);
    // Pausing again changes nothing.
    let (status, again) = app.post(&format!("/v1/jobs/{id}/pause"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["paused"], true);
    // Still listed in the queue, marked paused; gone from Redis; not claimable even if delivered.
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["items"][0]["paused"], true);
    assert_eq!(app.state.queue.ready_len().await.unwrap(), 0);
    let claim = otter_core::db::jobs::claim(
        &app.state.db,
        id.parse().unwrap(),
        &otter_core::db::jobs::Claimant::new("test", std::time::Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert!(
        matches!(claim, otter_core::db::jobs::Claim::NotClaimable),
        "{claim:?}"
    );

    let (status, resumed) = app.post(&format!("/v1/jobs/{id}/resume"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["paused"], false);
    // Resume re-enqueues at once.
    assert_eq!(app.state.queue.ready_len().await.unwrap(), 1);
    assert_eq!(
        kinds(&app, &job).await,
        ["job_queued", "job_paused", "job_resumed"]
    );
}

#[tokio::test]
async fn cancel_of_a_queued_job_ends_it_at_once() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let job = submit(&app, &ws, "never", 0).await;
    let id = job["id"].as_str().unwrap();
    let (status, cancelled) = app.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    assert_eq!(app.state.queue.ready_len().await.unwrap(), 0);
    assert_eq!(kinds(&app, &job).await, ["job_queued", "job_cancelled"]);
    let (_, history) = app.get("/v1/history?status=cancelled").await;
    assert_eq!(history["total"], 1);

    // Every transition out of a finished job is a conflict that says why.
    for action in ["cancel", "pause", "resume"] {
        let (status, body) = app
            .post(&format!("/v1/jobs/{id}/{action}"), json!({}))
            .await;
        let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(message.contains("cancelled"), "{action}: {message}");
    }
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/v1/queue/{id}"),
            Some(json!({ "priority": 1 })),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = app
        .post(
            &format!("/v1/jobs/{}/cancel", uuid::Uuid::new_v4()),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_job_list_filters_by_status_workspace_and_project() {
    let app = TestApp::spawn().await;
    let (_, project) = app.post("/v1/projects", json!({ "name": "p" })).await;
    let ws_a = app.workspace("a").await;
    let dir_b = app.env.dir.join("b");
    let (status, ws_b) = app
        .post(
            "/v1/workspaces",
            json!({ "path": dir_b.display().to_string(), "create": true, "project_id": project["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws_b}");
    let first = submit(&app, &ws_a, "first", 0).await;
    let second = submit(&app, &ws_b, "second", 0).await;
    let third = submit(&app, &ws_a, "third", 0).await;
    let (status, _) = app
        .post(
            &format!("/v1/jobs/{}/cancel", third["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Newest first, every status.
    let (status, all) = app.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(prompts(&all), ["third", "second", "first"]);
    assert_eq!(all["total"], 3);

    let (_, queued) = app.get("/v1/jobs?status=queued").await;
    assert_eq!(prompts(&queued), ["second", "first"]);
    let (_, several) = app.get("/v1/jobs?status=cancelled,running").await;
    assert_eq!(prompts(&several), ["third"]);
    assert_eq!(several["total"], 1);

    let ws = ws_a["id"].as_str().unwrap();
    let (_, of_a) = app.get(&format!("/v1/jobs?workspace_id={ws}")).await;
    assert_eq!(prompts(&of_a), ["third", "first"]);
    let pid = project["id"].as_str().unwrap();
    let (_, of_p) = app.get(&format!("/v1/jobs?project_id={pid}")).await;
    assert_eq!(prompts(&of_p), ["second"]);
    assert_eq!(of_p["items"][0]["id"], second["id"]);

    let (_, paged) = app.get("/v1/jobs?limit=1&offset=1").await;
    assert_eq!(prompts(&paged), ["second"]);
    assert_eq!(paged["total"], 3);
    assert_eq!(first["status"], "queued");

    // No job has a vibe session yet (none ran).
    let (_, of_session) = app.get("/v1/jobs?session_id=some-session").await;
    assert_eq!(of_session["total"], 0);

    let (status, body) = app.get("/v1/jobs?status=done").await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("\"done\""), "{message}");
    let (status, body) = app.get("/v1/jobs?colour=red").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
}
