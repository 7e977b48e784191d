//! Bounded memory, whatever the output or the client (issue 14): pages of stored events are cut
//! by bytes and say so, a stream whose client stops reading holds at most a page (replay) or
//! nothing but the feed's window (live), and a command's answer keeps at most its caps of bytes
//! and lines while the command runs to its end.

use std::time::Duration;

use futures::StreamExt;
use otter_core::db::events::{self, EventFilter};
use otter_core::feed::WINDOW_BYTES;
use otter_core::model::{JobId, NewEvent, OutputStream};
use otter_core::{EventFeed, StreamItem};
use otter_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The page cap of these tests (`OTTER_EVENT_PAGE_MAX_BYTES`).
const PAGE_BYTES: usize = 256 * 1024;
/// Their lines.
const LINE_BYTES: usize = 100 * 1024;

async fn app() -> TestApp {
    TestApp::spawn_with(&[("OTTER_EVENT_PAGE_MAX_BYTES", &PAGE_BYTES.to_string())]).await
}

/// A queued job (no worker runs it): its first event is `job_queued`.
async fn job(app: &TestApp) -> JobId {
    let ws = app.workspace("ws").await;
    app.submit(&ws, "p").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Appends `n` lines of [`LINE_BYTES`] to `job`, `line <i> xxx…`, ten to a transaction.
async fn write_lines(app: &TestApp, job: JobId, n: usize) {
    for from in (0..n).step_by(10) {
        let batch: Vec<NewEvent> = (from..(from + 10).min(n))
            .map(|i| {
                let mut text = format!("line {i} ");
                text.extend(std::iter::repeat_n('x', LINE_BYTES - text.len()));
                NewEvent::output(OutputStream::Stdout, text, None)
            })
            .collect();
        let mut tx = app.state.db.begin().await.unwrap();
        events::append(&mut tx, job, &batch).await.unwrap();
        tx.commit().await.unwrap();
    }
}

/// The number in `line <i> …`.
fn line_no(text: &str) -> usize {
    text.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap()
}

/// The bytes of an event's payload as sent.
fn payload_bytes(event: &Value) -> usize {
    serde_json::to_string(&event["payload"]).unwrap().len()
}

#[tokio::test]
async fn a_page_of_events_stops_at_its_byte_cap_says_so_and_the_next_one_goes_on() {
    let app = app().await;
    let job = job(&app).await;
    write_lines(&app, job, 20).await;

    let mut after = 0;
    let mut texts = Vec::new();
    let mut truncated = Vec::new();
    loop {
        let (status, page) = app
            .get(&format!("/v1/jobs/{job}/events?after={after}&limit=1000"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            assert_eq!(page["truncated"], false);
            break;
        }
        truncated.push(page["truncated"] == true);
        let bytes: usize = items.iter().map(payload_bytes).sum();
        assert!(
            bytes <= PAGE_BYTES,
            "a page of {} events holds {bytes} bytes",
            items.len()
        );
        assert_eq!(page["total"], 21);
        for item in items {
            if let Some(text) = item["payload"]["text"].as_str() {
                texts.push(line_no(text));
                assert_eq!(text.len(), LINE_BYTES);
            }
        }
        after = items.last().unwrap()["id"].as_i64().unwrap();
    }
    assert_eq!(
        texts,
        (0..20).collect::<Vec<_>>(),
        "every line once, in order"
    );
    // Every page but the last was cut by bytes, far below the count allowed, and said so.
    assert!(
        truncated.len() >= 20 * LINE_BYTES / PAGE_BYTES,
        "{truncated:?}"
    );
    let (last, cut) = truncated.split_last().unwrap();
    assert!(cut.iter().all(|t| *t) && !last, "{truncated:?}");
}

#[tokio::test]
async fn an_event_larger_than_the_cap_comes_alone() {
    let app = TestApp::spawn_with(&[("OTTER_EVENT_PAGE_MAX_BYTES", "65536")]).await;
    let job = job(&app).await;
    write_lines(&app, job, 3).await;
    let first = events::page_after(
        &app.state.db,
        &EventFilter {
            job_id: Some(job),
            ..Default::default()
        },
        0,
        1000,
        65536,
    )
    .await
    .unwrap();
    // `job_queued`, then nothing more fits.
    assert_eq!(first.events.len(), 1);
    assert!(first.truncated && first.more(1000));
    let (status, page) = app
        .get(&format!(
            "/v1/jobs/{job}/events?after={}",
            first.events[0].id
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one line of 100 KiB, alone");
    assert_eq!(page["truncated"], true);
}

/// Opens `clients` streams of `job` on `feed` and takes the first event of each (`job_queued`):
/// then they stop reading, as a client that stalls.
async fn stalled_streams(
    feed: &EventFeed,
    job: JobId,
    clients: usize,
) -> Vec<impl futures::Stream<Item = Result<StreamItem, otter_core::DbError>> + use<>> {
    let filter = EventFilter {
        job_id: Some(job),
        ..Default::default()
    };
    let mut streams = Vec::new();
    for _ in 0..clients {
        let mut stream = Box::pin(feed.stream(filter, 0));
        let first = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the first event")
            .expect("an item")
            .expect("no error");
        assert!(matches!(first, StreamItem::Event(e) if e.kind == "job_queued"));
        streams.push(stream);
    }
    streams
}

/// Reads `stream` until it has handed on lines `0..n`; they must come once each, in order.
async fn drain_lines(
    mut stream: impl futures::Stream<Item = Result<StreamItem, otter_core::DbError>> + Unpin,
    n: usize,
) {
    let mut seen = Vec::new();
    while seen.len() < n {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the next event")
            .expect("an item")
            .expect("no error");
        if let StreamItem::Event(e) = item {
            let event = e.event().expect("the event's JSON");
            seen.push(line_no(event.payload["text"].as_str().unwrap()));
        }
    }
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stalled_replay_holds_at_most_the_rest_of_one_page() {
    let app = app().await;
    let job = job(&app).await;
    // 100 lines of 100 KiB: many pages, of which a stalled replay may hold one.
    let lines = 100;
    write_lines(&app, job, lines).await;
    let feed = app.state.feed.clone();
    let clients = 10;
    let streams = stalled_streams(&feed, job, clients).await;
    // Each has read its first page and handed on one event of it. The feed's own window may
    // hold the lines too, if it had not moved past them before the streams came.
    let page = PAGE_BYTES + 4096;
    let bound = WINDOW_BYTES + clients * page;
    let held = feed.held_bytes();
    assert!(
        held <= bound,
        "{clients} stalled replays hold {held} bytes, more than {bound}"
    );
    // Nothing was lost: a stalled stream that reads again gets every line, in order.
    let mut streams = streams.into_iter();
    drain_lines(streams.next().unwrap(), lines).await;
    drop(streams);
}

#[tokio::test]
async fn stalled_live_streams_hold_nothing_but_the_feeds_window_and_lose_nothing() {
    let app = app().await;
    let job = job(&app).await;
    let feed = app.state.feed.clone();
    let streams = stalled_streams(&feed, job, 10).await;
    let mut reader = Box::pin(feed.stream(
        EventFilter {
            job_id: Some(job),
            ..Default::default()
        },
        0,
    ));
    // Twice the window: what the broadcast would keep for the stalled streams.
    let lines = 2 * WINDOW_BYTES / LINE_BYTES;
    write_lines(&app, job, lines).await;
    // Once a reader has had them all, the feed has broadcast them all.
    let first = tokio::time::timeout(WAIT, reader.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(StreamItem::Event(e))) if e.kind == "job_queued"));
    drain_lines(&mut reader, lines).await;
    let bound = WINDOW_BYTES + 2 * (LINE_BYTES + 4096);
    let held = feed.held_bytes();
    assert!(
        held <= bound,
        "10 stalled live streams hold {held} bytes, more than {bound}"
    );
    // The lines that left the window are read back from the database, in order.
    let mut streams = streams.into_iter();
    drain_lines(streams.next().unwrap(), lines).await;
}

/// Runs `command` in a fresh workspace of `app`; panics unless the answer is 200.
async fn command(app: &TestApp, name: &str, command: &str) -> (Value, std::path::PathBuf) {
    let ws = app.workspace(name).await;
    let (status, result) = app
        .post(
            &format!("/v1/workspaces/{}/command", ws["id"].as_str().unwrap()),
            serde_json::json!({ "command": command }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    (result, ws["path"].as_str().unwrap().into())
}

#[tokio::test]
async fn a_commands_output_is_capped_by_lines_and_by_bytes_and_it_runs_to_its_end() {
    let app = TestApp::spawn_with(&[
        ("OTTER_COMMAND_MAX_OUTPUT_LINES", "1000"),
        ("OTTER_COMMAND_MAX_OUTPUT_BYTES", "4096"),
    ])
    .await;
    // 8 M empty lines: 1000 are kept, the rest read and dropped, and the command goes on.
    let (result, dir) = command(
        &app,
        "lines",
        r"head -c 8000000 /dev/zero | tr '\0' '\n'; echo done >&2; touch finished",
    )
    .await;
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["truncated"], true);
    assert_eq!(result["stdout"], "\n".repeat(1000));
    assert_eq!(result["stderr"], "done\n");
    assert!(dir.join("finished").exists(), "it ran to its end");

    // Long lines: 4096 bytes kept.
    let (result, _) = command(&app, "bytes", "yes 0123456789 | head -c 1000000").await;
    assert_eq!(result["truncated"], true);
    let stdout = result["stdout"].as_str().unwrap();
    assert!(
        stdout.len() <= 4096 && stdout.len() > 4000,
        "{}",
        stdout.len()
    );
    assert!(stdout.starts_with("0123456789\n0123456789\n"));
}
