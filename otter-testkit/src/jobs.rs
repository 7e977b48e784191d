//! Jobs through the API: submitting a prompt, waiting for a status, reading the events.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{TestApp, eventually};

/// How long a job may take in the tests.
pub const JOB_WAIT: Duration = Duration::from_secs(60);

/// Submits `prompt` to `workspace` (a JSON from [`TestApp::workspace`]) with the fields of
/// `extra` added to the body, and returns the job.
pub async fn submit(app: &TestApp, workspace: &Value, prompt: &str, extra: Value) -> Value {
    let mut body = json!({ "prompt": prompt, "workspace_id": workspace["id"] });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, job) = app.post("/v1/prompts", body).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job
}

/// Waits until the job is in a final state and returns it.
pub async fn finished(app: &TestApp, job: &Value) -> Value {
    let path = format!("/v1/jobs/{}", job["id"].as_str().expect("job id"));
    eventually(JOB_WAIT, "the job to finish", || async {
        let (_, job) = app.get(&path).await;
        matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
        .then_some(job)
    })
    .await
}

/// Waits until the job has the given status and returns it.
pub async fn status_is(app: &TestApp, job: &Value, status: &str) -> Value {
    let path = format!("/v1/jobs/{}", job["id"].as_str().expect("job id"));
    eventually(JOB_WAIT, &format!("the job to be {status}"), || async {
        let (_, job) = app.get(&path).await;
        (job["status"] == status).then_some(job)
    })
    .await
}

/// The payload of the job's first `kind` event, once there is one.
pub async fn payload_of(app: &TestApp, job: &Value, kind: &str) -> Value {
    eventually(JOB_WAIT, &format!("a {kind} event"), || async {
        events(app, job)
            .await
            .into_iter()
            .find(|e| e["kind"] == kind)
            .map(|e| e["payload"].clone())
    })
    .await
}

/// All stored events of a job, oldest first.
pub async fn events(app: &TestApp, job: &Value) -> Vec<Value> {
    let id = job["id"].as_str().expect("job id");
    let (status, page) = app.get(&format!("/v1/jobs/{id}/events?limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut items = page["items"].as_array().cloned().unwrap_or_default();
    let total = page["total"].as_i64().unwrap_or_default() as usize;
    while items.len() < total {
        let after = items
            .last()
            .map(|e| e["id"].as_i64().unwrap_or_default())
            .unwrap_or_default();
        let (_, page) = app
            .get(&format!("/v1/jobs/{id}/events?limit=1000&after={after}"))
            .await;
        let more = page["items"].as_array().cloned().unwrap_or_default();
        assert!(!more.is_empty(), "events stopped short of the total");
        items.extend(more);
    }
    items
}

/// The kinds of `events`, in order.
pub fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default())
        .collect()
}

/// The `output_chunk` texts of one stream (`stdout` or `stderr`).
pub fn lines<'a>(events: &'a [Value], stream: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["kind"] == "output_chunk" && e["payload"]["stream"] == stream)
        .map(|e| e["payload"]["text"].as_str().unwrap_or_default())
        .collect()
}
