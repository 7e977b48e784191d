//! `GET /v1/jobs/{id}/changes`, `GET /v1/jobs/{id}/diff` and `POST /v1/jobs/{id}/restore` for
//! jobs that have no checkpoints, and what they refuse. (Jobs that ran are the worker's
//! end-to-end tests: otter-worker/tests/e2e/changes.rs.)

use otter_testkit::{TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_job_that_never_ran_has_no_changes_and_cannot_be_restored() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let job = app.submit(&ws, "never runs: no worker").await;
    let id = job["id"].as_str().unwrap();
    for path in [
        format!("/v1/jobs/{id}/changes"),
        format!("/v1/jobs/{id}/diff"),
    ] {
        let (status, body) = app.get(&path).await;
        let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(message.contains("has not run yet"), "{path}: {message}");
    }
    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/restore"), json!({ "to": "before" }))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    // Cancelled before it ran: still none.
    let (status, _) = app.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get(&format!("/v1/jobs/{id}/changes")).await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("never ran"), "{message}");
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert!(job["output"].is_null(), "{job}");
}

#[tokio::test]
async fn a_restore_names_a_bad_to_and_an_unknown_job_is_not_found() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let job = app.submit(&ws, "never runs: no worker").await;
    let id = job["id"].as_str().unwrap();
    for body in [
        json!({ "to": "yesterday" }),
        json!({ "to": 1 }),
        json!({ "to": null }),
        json!({}),
        json!({ "to": "before", "extra": true }),
    ] {
        let (status, answer) = app
            .post(&format!("/v1/jobs/{id}/restore"), body.clone())
            .await;
        let message = assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(
            message.contains("to") || message.contains("extra"),
            "{body}: {message}"
        );
    }
    let unknown = uuid::Uuid::new_v4();
    for (status, body) in [
        app.get(&format!("/v1/jobs/{unknown}/changes")).await,
        app.get(&format!("/v1/jobs/{unknown}/diff")).await,
        app.post(
            &format!("/v1/jobs/{unknown}/restore"),
            json!({ "to": "after" }),
        )
        .await,
    ] {
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    for query in [
        "max_bytes=0",
        "max_bytes=99999999999",
        "max_bytes=x",
        "path=",
        "colour=red",
    ] {
        let (status, body) = app.get(&format!("/v1/jobs/{id}/diff?{query}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    }
}
