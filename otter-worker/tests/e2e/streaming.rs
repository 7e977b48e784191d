//! Watching a running job over SSE: live delivery, and a client that reconnects mid-run.

use std::collections::BTreeSet;
use std::time::Duration;

use otter_testkit::{SseClient, TestApp};
use serde_json::json;

use crate::harness::{JOB_WAIT, Worker, app_with_worker, events, finished, scenario, submit};

#[tokio::test]
async fn a_watcher_sees_the_whole_run_live_then_the_end() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let job = submit(&app, &ws, "hello", json!({})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    // Watch before any worker runs: history first, then everything live.
    let mut sse = SseClient::connect(&app, &format!("/v1/events/stream?job_id={id}"), None).await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
    let mut frames = Vec::new();
    loop {
        let frame = sse
            .next(JOB_WAIT)
            .await
            .expect("stream stays open until the end");
        if frame.event.as_deref() == Some("end") {
            break;
        }
        frames.push(frame);
    }
    assert!(
        sse.next(Duration::from_secs(5)).await.is_none(),
        "the stream closes after `end`"
    );
    let stored = events(&app, &finished(&app, &job).await).await;
    let streamed: Vec<i64> = frames.iter().map(|f| f.id_num().unwrap()).collect();
    let ids: Vec<i64> = stored.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(
        streamed, ids,
        "the stream delivered exactly the stored events, in order"
    );
    for (frame, event) in frames.iter().zip(&stored) {
        assert_eq!(frame.event.as_deref(), event["kind"].as_str());
        assert_eq!(&frame.json(), event);
    }

    // A late watcher of the finished job gets its history and the end.
    let mut late = SseClient::connect(&app, &format!("/v1/events/stream?job_id={id}"), None).await;
    let mut count = 0;
    while let Some(frame) = late.next(JOB_WAIT).await {
        if frame.event.as_deref() == Some("end") {
            break;
        }
        count += 1;
    }
    assert_eq!(count, stored.len());
}

#[tokio::test]
async fn a_client_reconnecting_mid_run_gets_every_later_event_once() {
    let (app, ws, _worker) = app_with_worker("slow", &["FAKE_VIBE_SLEEP_MS=400"]).await;
    let job = submit(&app, &ws, "slowly", json!({})).await;
    let path = format!("/v1/events/stream?job_id={}", job["id"].as_str().unwrap());

    // Read until the first output line, then drop the connection in the middle of the run.
    let mut first = SseClient::connect(&app, &path, None).await;
    let mut seen = Vec::new();
    loop {
        let frame = first.next(JOB_WAIT).await.unwrap();
        seen.push(frame.id_num().unwrap());
        if frame.event.as_deref() == Some("output_chunk") {
            break;
        }
    }
    drop(first);
    let (_, running) = app
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        running["status"], "running",
        "the run is still going when the client reconnects"
    );

    let mut second = SseClient::connect(&app, &path, seen.last().copied()).await;
    loop {
        let frame = second.next(JOB_WAIT).await.unwrap();
        if frame.event.as_deref() == Some("end") {
            break;
        }
        seen.push(frame.id_num().unwrap());
    }
    let stored: Vec<i64> = events(&app, &job)
        .await
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, stored, "every event exactly once, in order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());
}
