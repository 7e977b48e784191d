//! The SSE stream: filters, resume from `Last-Event-ID`, and no lost or reordered event when
//! several writers commit out of order (DESIGN.md §5, invariant 6). The event-id contract of the
//! SQL functions themselves (the horizon that holds back an id whose older neighbour is still
//! being written) is tested in otter-core/tests/sql/event_ids.rs.

use std::collections::BTreeSet;
use std::time::Duration;

use otter_core::db::events;
use otter_core::model::{JobId, NewEvent, OutputStream};
use otter_testkit::{SseClient, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn queued_job(app: &TestApp, ws: &Value) -> JobId {
    app.submit(ws, "p").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn write_lines(app: &TestApp, job: JobId, lines: std::ops::Range<usize>) {
    let batch: Vec<NewEvent> = lines
        .map(|i| NewEvent::output(OutputStream::Stdout, format!("line {i}"), None))
        .collect();
    let mut tx = app.state.db.begin().await.unwrap();
    events::append(&mut tx, job, &batch).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_job_stream_replays_history_then_follows_and_resumes() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let job = queued_job(&app, &ws).await;
    let other = queued_job(&app, &ws).await;
    write_lines(&app, job, 0..3).await;
    write_lines(&app, other, 0..2).await;

    let path = format!("/v1/events/stream?job_id={job}");
    let mut sse = SseClient::connect(&app, &path, None).await;
    let first = sse.next(WAIT).await.unwrap();
    assert_eq!(first.event.as_deref(), Some("job_queued"));
    let mut seen = vec![first.clone()];
    for _ in 0..3 {
        seen.push(sse.next(WAIT).await.unwrap());
    }
    // Live events arrive after the replay.
    write_lines(&app, job, 3..5).await;
    write_lines(&app, other, 2..4).await;
    for _ in 0..2 {
        seen.push(sse.next(WAIT).await.unwrap());
    }
    let texts: Vec<String> = seen[1..]
        .iter()
        .map(|f| f.json()["payload"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
    for frame in &seen {
        assert_eq!(frame.json()["job_id"], job.to_string());
        assert_eq!(frame.id_num(), frame.json()["id"].as_i64());
    }
    let seqs: Vec<i64> = seen
        .iter()
        .map(|f| f.json()["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    // Reconnect with Last-Event-ID from the middle: exactly the later events, once each.
    let middle = seen[2].id_num().unwrap();
    let mut resumed = SseClient::connect(&app, &path, Some(middle)).await;
    write_lines(&app, job, 5..6).await;
    let mut texts = Vec::new();
    for _ in 0..4 {
        texts.push(
            resumed.next(WAIT).await.unwrap().json()["payload"]["text"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(texts, ["line 2", "line 3", "line 4", "line 5"]);

    // `?after=` does the same as the header.
    let mut after = SseClient::connect(&app, &format!("{path}&after={middle}"), None).await;
    let frame = after.next(WAIT).await.unwrap();
    assert_eq!(frame.json()["payload"]["text"], "line 2");
}

#[tokio::test]
async fn workspace_and_project_filters_hold() {
    let app = TestApp::spawn().await;
    let (_, project) = app.post("/v1/projects", json!({ "name": "p" })).await;
    let dir = app.env.mkdir("in-project");
    let (_, ws_a) = app
        .post(
            "/v1/workspaces",
            json!({ "path": dir.display().to_string(), "project_id": project["id"] }),
        )
        .await;
    let ws_b = app.workspace("loose").await;
    let a = queued_job(&app, &ws_a).await;
    let b = queued_job(&app, &ws_b).await;

    let mut by_ws = SseClient::connect(
        &app,
        &format!(
            "/v1/events/stream?workspace_id={}&after=0",
            ws_b["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    let mut by_project = SseClient::connect(
        &app,
        &format!(
            "/v1/events/stream?project_id={}&after=0",
            project["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    write_lines(&app, a, 0..1).await;
    write_lines(&app, b, 0..1).await;
    for _ in 0..2 {
        assert_eq!(
            by_ws.next(WAIT).await.unwrap().json()["job_id"],
            b.to_string()
        );
        assert_eq!(
            by_project.next(WAIT).await.unwrap().json()["job_id"],
            a.to_string()
        );
    }
}

#[tokio::test]
async fn bad_stream_requests_are_refused() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(format!("{}/v1/events/stream", app.base))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/v1/events/stream?job_id=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .get(&format!(
            "/v1/events/stream?job_id={}",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Writers hold their transactions open for different times, so ids (which follow transaction
/// ids) are drawn in one order and committed in another. The unfiltered stream must still
/// deliver every event exactly once, in increasing id order.
#[tokio::test]
async fn concurrent_writers_lose_no_event() {
    const WRITERS: usize = 6;
    const BATCHES: usize = 25;
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let mut jobs = Vec::new();
    for _ in 0..WRITERS {
        jobs.push(queued_job(&app, &ws).await);
    }
    let head = events::head(&app.state.db).await.unwrap();
    let mut sse = SseClient::connect(&app, &format!("/v1/events/stream?after={head}"), None).await;

    let mut writers = Vec::new();
    for (w, job) in jobs.iter().copied().enumerate() {
        let pool = app.state.db.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let mut tx = pool.begin().await.unwrap();
                let batch = vec![
                    NewEvent::output(OutputStream::Stdout, format!("w{w} b{b} a"), None),
                    NewEvent::output(OutputStream::Stderr, format!("w{w} b{b} b"), None),
                ];
                events::append(&mut tx, job, &batch).await.unwrap();
                let hold = (w * 7 + b * 3) % 5;
                tokio::time::sleep(Duration::from_millis(hold as u64)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let expected = WRITERS * BATCHES * 2;
    let mut ids = Vec::with_capacity(expected);
    let mut per_job_seq: std::collections::HashMap<String, i64> = Default::default();
    while ids.len() < expected {
        let frame = sse.next(WAIT).await.expect("stream open");
        let event = frame.json();
        // The head is the present: a job_queued that was not final yet may come after it.
        if event["kind"] == "job_queued" {
            continue;
        }
        ids.push(frame.id_num().unwrap());
        let job = event["job_id"].as_str().unwrap().to_owned();
        let seq = event["seq"].as_i64().unwrap();
        let last = per_job_seq.insert(job, seq).unwrap_or(1);
        assert_eq!(seq, last + 1, "per-job seq has a gap or repeat");
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
    let stored: BTreeSet<i64> = sqlx::query_scalar::<_, i64>(
        "SELECT id FROM events WHERE id > $1 AND kind <> 'job_queued'",
    )
    .bind(head)
    .fetch_all(&app.state.db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(stored, ids.iter().copied().collect::<BTreeSet<i64>>());
}
