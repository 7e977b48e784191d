//! A follow-up with the real vibe: the second job resumes the first job's session
//! (`--resume <session id>`), and the scripted model receives the first turn (the user's prompt
//! and the assistant's answer) before the follow-up's prompt.

use otter_demo_model::script::FINAL_TEXT;
use otter_testkit::jobs::{events, finished, submit};
use otter_testkit::real_vibe;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{PROMPT, RealStack, SHAPE, entries, shape, stderr, text};

/// The second turn's prompt.
const FOLLOW_UP: &str = "Now say goodbye in the same file.";

/// A message's text, whether vibe sent its content as a string or as parts.
fn content(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        parts => text(&json!({ "content": parts })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_resumes_the_session_and_the_model_sees_the_first_turn() {
    let vibe = real_vibe::ensure_vibe().await;
    let RealStack {
        llm,
        scratch,
        app,
        ws,
        _worker,
    } = RealStack::start(&vibe).await;

    let first = finished(&app, &submit(&app, &ws, PROMPT, json!({})).await).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let session = first["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the first turn has a session id: {first:#}"))
        .to_owned();
    let first_turn = llm.requests().len();

    let (status, second) = app
        .post(
            "/v1/prompts",
            json!({"prompt": FOLLOW_UP, "parent_job_id": first["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["session_id"], session.as_str());
    let second = finished(&app, &second).await;
    let events = events(&app, &second).await;
    let requests = llm.requests();
    let context = format!(
        "job: {second:#}\nvibe's stderr: {:#?}\nrequests: {}",
        stderr(&events),
        requests.len()
    );
    assert_eq!(second["status"], "succeeded", "{context}");
    assert_eq!(
        second["session_id"],
        session.as_str(),
        "vibe kept the session"
    );
    assert_eq!(second["parent_job_id"], first["id"]);
    // Streaming prints only the new turn.
    let entries = entries(&events);
    assert_eq!(shape(&entries), SHAPE, "{context}");
    assert_eq!(text(entries[0]), FOLLOW_UP);

    // Every request of the follow-up carries the first turn before the new prompt: the user's
    // first prompt, the assistant's answer to it, then the follow-up.
    let follow_up = &requests[first_turn..];
    assert!(!follow_up.is_empty(), "{context}");
    for (i, request) in follow_up.iter().enumerate() {
        let messages = request.body["messages"].as_array().expect("messages");
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap_or("?"))
            .collect();
        let users: Vec<(usize, String)> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m["role"] == "user")
            .map(|(at, m)| (at, content(m)))
            .collect();
        assert_eq!(users.len(), 2, "request {i}: {roles:?}");
        assert_eq!(users[0].1, PROMPT, "request {i}: the first turn's prompt");
        assert_eq!(users[1].1, FOLLOW_UP, "request {i}: the follow-up");
        let answered = messages[users[0].0..users[1].0]
            .iter()
            .any(|m| m["role"] == "assistant" && content(m) == FINAL_TEXT);
        assert!(
            answered,
            "request {i}: the first turn's answer precedes the follow-up: {roles:?}"
        );
    }
    eprintln!(
        "real vibe follow-up: {} requests in the second turn, roles of its first: {:?}",
        follow_up.len(),
        follow_up[0].body["messages"]
            .as_array()
            .map(|m| m.iter().map(|m| m["role"].clone()).collect::<Vec<_>>())
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
