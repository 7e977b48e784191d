//! Follow-ups (`parent_job_id`), limits and a model per job, project budgets: what the API
//! accepts and refuses, before any run (no worker here; the runs are the e2e tests').

use otter_testkit::{TestApp, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn prompt(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/v1/prompts", body).await
}

#[tokio::test]
async fn a_bad_limit_is_a_400_naming_the_field_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let cases = [
        (json!({"max_turns": 0}), "limits.max_turns"),
        (json!({"max_turns": -3}), "max_turns"),
        (json!({"max_turns": 1.5}), "max_turns"),
        (json!({"max_turns": "7"}), "max_turns"),
        (json!({"max_tokens": 0}), "limits.max_tokens"),
        (json!({"time_limit_secs": 0}), "limits.time_limit_secs"),
        (
            json!({"time_limit_secs": 9_007_199_254_740_993_u64}),
            "limits.time_limit_secs",
        ),
        (json!({"max_price_usd": 0}), "limits.max_price_usd"),
        (json!({"max_price_usd": -0.5}), "limits.max_price_usd"),
        (json!({"max_price_usd": "cheap"}), "max_price_usd"),
        (json!({"max_steps": 3}), "max_steps"),
        (json!([1, 2]), "limits"),
    ];
    for (limits, field) in cases {
        let (status, body) = prompt(
            &app,
            json!({"prompt": "p", "workspace_id": ws["id"], "limits": limits}),
        )
        .await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains(field), "{limits}: {message}");
    }
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["total"], 0, "no job was written: {queue}");
}

#[tokio::test]
async fn limits_and_a_model_are_kept_on_the_job_with_the_defaults_applied() {
    let app = TestApp::spawn_with(&[
        ("OTTER_DEFAULT_MAX_TURNS", "12"),
        ("OTTER_DEFAULT_MAX_PRICE_USD", "0.75"),
        ("OTTER_VIBE_MODELS", "devstral-small, mistral-medium-3.5"),
    ])
    .await;
    let ws = app.workspace("ws").await;
    let (status, job) = prompt(
        &app,
        json!({"prompt": "p", "workspace_id": ws["id"], "model": "devstral-small",
               "limits": {"max_turns": 3, "time_limit_secs": 90}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(
        job["limits"],
        json!({"max_turns": 3, "max_price_usd": 0.75, "max_tokens": null, "time_limit_secs": 90,
               "silence_secs": null})
    );
    assert_eq!(job["model"], "devstral-small");
    assert_eq!(job["parent_job_id"], Value::Null);
    assert_eq!(job["session_id"], Value::Null);
    let (_, read) = app
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(read["limits"], job["limits"]);
    assert_eq!(read["model"], job["model"]);

    for model in [json!("mistral-large-3"), json!(""), json!("a b"), json!(7)] {
        let (status, body) = prompt(
            &app,
            json!({"prompt": "p", "workspace_id": ws["id"], "model": model}),
        )
        .await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("model"), "{model}: {message}");
    }
}

#[tokio::test]
async fn a_follow_up_is_checked_against_its_parent() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let other = app.workspace("other").await;
    let parent = app.submit(&ws, "first").await;
    let parent_id = parent["id"].as_str().unwrap();

    // A parent still queued: accepted, it waits (the e2e tests run it).
    let (status, follow_up) =
        prompt(&app, json!({"prompt": "then", "parent_job_id": parent_id})).await;
    assert_eq!(status, StatusCode::CREATED, "{follow_up}");
    assert_eq!(follow_up["parent_job_id"], parent["id"]);
    assert_eq!(
        follow_up["workspace_id"], ws["id"],
        "the parent's workspace"
    );
    assert_eq!(follow_up["session_id"], Value::Null, "not known yet");

    let (status, body) = prompt(
        &app,
        json!({"prompt": "then", "parent_job_id": parent_id, "workspace_id": other["id"]}),
    )
    .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(
        message.contains("workspace_id") && message.contains("parent"),
        "{message}"
    );
    let (status, body) = prompt(
        &app,
        json!({"prompt": "then", "parent_job_id": parent_id, "workspace_id": ws["id"]}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the same workspace may be named: {body}"
    );

    let missing = uuid::Uuid::new_v4();
    let (status, body) = prompt(&app, json!({"prompt": "then", "parent_job_id": missing})).await;
    let message = assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("parent job"), "{message}");
    let (status, body) = prompt(
        &app,
        json!({"prompt": "then", "parent_job_id": "not-a-uuid"}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");

    // A parent that ended without a vibe session (cancelled before it ran) has nothing to
    // resume.
    let (status, _) = app
        .post(&format!("/v1/jobs/{parent_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = prompt(&app, json!({"prompt": "then", "parent_job_id": parent_id})).await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("no vibe session"), "{message}");
}

#[tokio::test]
async fn a_session_filter_is_checked() {
    let app = TestApp::spawn().await;
    for path in ["/v1/history", "/v1/queue"] {
        let (status, page) = app.get(&format!("{path}?session_id=nobody")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 0);
        let long = "s".repeat(201);
        for bad in [long.as_str(), "%00", "a%0Ab", ""] {
            let (status, body) = app.get(&format!("{path}?session_id={bad}")).await;
            let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
            assert!(message.contains("session_id"), "{bad}: {message}");
        }
    }
}

#[tokio::test]
async fn a_spent_project_budget_refuses_a_prompt() {
    let app = TestApp::spawn().await;
    let (status, project) = app
        .post("/v1/projects", json!({"name": "p", "budget_usd": 0}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    assert_eq!(project["budget_usd"], 0.0);
    let project_id = project["id"].as_str().unwrap().to_owned();
    let dir = app.env.dir.join("ws");
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({"project_id": project_id, "path": dir.display().to_string(), "create": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");

    let (status, usage) = app.get(&format!("/v1/projects/{project_id}/usage")).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(
        usage,
        json!({"project_id": project_id, "budget_usd": 0.0, "spent_usd": 0.0,
               "remaining_usd": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "jobs": 0})
    );
    let (status, body) = prompt(&app, json!({"prompt": "p", "workspace_id": ws["id"]})).await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "budget_exhausted");
    assert!(message.contains("budget"), "{message}");

    // Raised: prompts run again; removed: no budget at all.
    let path = format!("/v1/projects/{project_id}");
    let (status, raised) = app
        .request(Method::PATCH, &path, Some(json!({"budget_usd": 2.5})))
        .await;
    assert_eq!(status, StatusCode::OK, "{raised}");
    assert_eq!(raised["budget_usd"], 2.5);
    let (status, job) = prompt(&app, json!({"prompt": "p", "workspace_id": ws["id"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let (_, usage) = app.get(&format!("/v1/projects/{project_id}/usage")).await;
    assert_eq!(usage["remaining_usd"], 2.5);
    assert_eq!(usage["jobs"], 1);
    let (status, removed) = app
        .request(Method::PATCH, &path, Some(json!({"budget_usd": null})))
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["budget_usd"], Value::Null);
    let (_, usage) = app.get(&format!("/v1/projects/{project_id}/usage")).await;
    assert_eq!(usage["remaining_usd"], Value::Null);

    for (body, want) in [
        (json!({"budget_usd": -1}), "budget_usd"),
        (json!({"budget_usd": "lots"}), "budget_usd"),
        (json!({}), "budget_usd"),
        (json!({"budget_usd": 1, "name": "x"}), "name"),
    ] {
        let (status, err) = app.request(Method::PATCH, &path, Some(body.clone())).await;
        let message = assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains(want), "{body}: {message}");
    }
    let (status, err) = app
        .post("/v1/projects", json!({"name": "q", "budget_usd": -2}))
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_input");
    let missing = uuid::Uuid::new_v4();
    let (status, err) = app.get(&format!("/v1/projects/{missing}/usage")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
    let (status, err) = app
        .request(
            Method::PATCH,
            &format!("/v1/projects/{missing}"),
            Some(json!({"budget_usd": 1})),
        )
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
}
