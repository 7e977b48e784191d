//! `/metrics` reports the queue, outcomes, durations, events, SSE clients and worker heartbeats.

use otter_testkit::{SseClient, TestApp};
use serde_json::json;

use crate::harness::{Worker, finished, metrics_with, scenario, submit};

/// The value of one sample line (`name{labels} value`), if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(key, _)| key == name_and_labels)
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test]
async fn metrics_report_the_queue_outcomes_and_workers() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    // Paused before any worker runs, so it stays queued.
    let waiting = submit(&app, &ws, "paused one", json!({})).await;
    app.post(
        &format!("/v1/jobs/{}/pause", waiting["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[])),
            ("OTTER_WORKER_ID", "metrics-worker"),
            ("OTTER_LEASE_TTL", "3s"),
        ],
    )
    .await;
    let job = finished(&app, &submit(&app, &ws, "one", json!({})).await).await;
    assert_eq!(job["status"], "succeeded");
    let _watcher = SseClient::connect(&app, "/v1/events/stream", None).await;

    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    // The heartbeat after the run says the worker is idle again.
    let text = metrics_with(
        &app,
        "otter_worker_running_jobs{worker_id=\"metrics-worker\"} 0",
    )
    .await;
    // Every sample line is `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(key.starts_with("otter_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    assert_eq!(sample(&text, "otter_queue_depth"), Some(0.0));
    assert_eq!(sample(&text, "otter_jobs_paused"), Some(1.0));
    assert_eq!(sample(&text, "otter_jobs_running"), Some(0.0));
    assert_eq!(
        sample(&text, "otter_jobs_finished{status=\"succeeded\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "otter_jobs_finished{status=\"failed\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "otter_job_duration_seconds_count"), Some(1.0));
    assert_eq!(
        sample(&text, "otter_job_duration_seconds_bucket{le=\"+Inf\"}"),
        Some(1.0)
    );
    assert!(sample(&text, "otter_events_written").is_some_and(|n| n >= 6.0));
    assert!(sample(&text, "otter_sse_clients").is_some_and(|n| n >= 1.0));
    assert_eq!(sample(&text, "otter_workers"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "otter_worker_running_jobs{worker_id=\"metrics-worker\"}"
        ),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "otter_worker_heartbeat_age_seconds{worker_id=\"metrics-worker\"}"
        )
        .is_some_and(|a| a < 60.0)
    );
}
