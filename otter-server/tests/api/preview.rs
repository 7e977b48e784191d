//! `POST /v1/jobs/{id}/preview-url`: a checked URL stored on the job, with its `preview_url_set`
//! event, in any job state; bad URLs get a 400 and change nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use otter_testkit::{TestApp, assert_error};

async fn queued_job(app: &TestApp) -> Value {
    let ws = app.workspace("ws").await;
    app.submit(&ws, "build it").await
}

async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let (_, page) = app.get(&format!("/v1/jobs/{id}/events")).await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_preview_url_is_stored_with_its_event() {
    let app = TestApp::spawn().await;
    let job = queued_job(&app).await;
    let id = job["id"].as_str().unwrap();

    let (status, updated) = app
        .post(
            &format!("/v1/jobs/{id}/preview-url"),
            json!({ "preview_url": "http://localhost:3000" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["id"], job["id"]);
    assert_eq!(updated["preview_url"], "http://localhost:3000/");
    assert_eq!(updated["status"], "queued");
    let (_, read) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(read["preview_url"], "http://localhost:3000/");

    let events = events(&app, id).await;
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "preview_url_set");
    assert_eq!(last["seq"], 2);
    assert_eq!(
        last["payload"],
        json!({ "preview_url": "http://localhost:3000/" })
    );

    // Any state: here after the job was cancelled; a new URL replaces the old one.
    let (status, _) = app.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, updated) = app
        .post(
            &format!("/v1/jobs/{id}/preview-url"),
            json!({ "preview_url": "https://demo.example.com:8443/app?x=1" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["status"], "cancelled");
    assert_eq!(
        updated["preview_url"],
        "https://demo.example.com:8443/app?x=1"
    );
}

#[tokio::test]
async fn bad_preview_urls_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let job = queued_job(&app).await;
    let id = job["id"].as_str().unwrap();
    let path = format!("/v1/jobs/{id}/preview-url");
    let long = format!("http://host/{}", "a".repeat(2048));
    for (body, needle) in [
        (json!({ "preview_url": "ftp://host/" }), "http or https"),
        (
            json!({ "preview_url": "javascript:alert(1)" }),
            "http or https",
        ),
        (
            json!({ "preview_url": "file:///etc/passwd" }),
            "http or https",
        ),
        (json!({ "preview_url": "localhost:3000" }), "http"),
        (json!({ "preview_url": "http://" }), "valid URL"),
        (
            json!({ "preview_url": "http://user:pw@host:1/" }),
            "credentials",
        ),
        (json!({ "preview_url": "http://ho st/" }), "whitespace"),
        (json!({ "preview_url": "http://host/\n" }), "whitespace"),
        (json!({ "preview_url": "" }), "empty"),
        (json!({ "preview_url": long }), "2048"),
        (json!({ "preview_url": 5 }), "preview_url"),
        (json!({}), "preview_url"),
        (
            json!({ "preview_url": "http://h/", "extra": true }),
            "extra",
        ),
    ] {
        let (status, answer) = app.post(&path, body.clone()).await;
        let message = assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (_, read) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(read["preview_url"], Value::Null);
    assert_eq!(events(&app, id).await.len(), 1, "no event was written");

    let (status, body) = app
        .post(
            &format!("/v1/jobs/{}/preview-url", uuid::Uuid::new_v4()),
            json!({ "preview_url": "http://localhost:1/" }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("job"), "{message}");
    let (status, body) = app
        .post(
            "/v1/jobs/nope/preview-url",
            json!({ "preview_url": "http://localhost:1/" }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
}
