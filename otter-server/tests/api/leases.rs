//! The lease fences of the job's SQL functions (migrations 13–15): a worker whose lease was
//! recovered writes nothing more, a retried batch is stored once, the finish writes the last
//! lines before its closing event, and two reconcilers recover an expired lease once.

use std::time::Duration;

use otter_core::db::events;
use otter_core::db::jobs::{self, Claim, Finish, Lease, RunEnd};
use otter_core::model::{JobId, NewEvent, OutputStream};
use otter_testkit::TestApp;
use serde_json::json;

async fn queued_job(app: &TestApp) -> JobId {
    let ws = app.workspace("ws").await;
    app.submit(&ws, "p").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Claims `id` with a lease that has already expired when the claim commits.
async fn claim_expired(app: &TestApp, id: JobId) -> Lease {
    match jobs::claim(&app.state.db, id, "w", Duration::ZERO)
        .await
        .unwrap()
    {
        Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed: {other:?}"),
    }
}

async fn kinds(app: &TestApp, id: JobId) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM events WHERE job_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_worker_whose_lease_was_recovered_writes_nothing_more() {
    let app = TestApp::spawn().await;
    let id = queued_job(&app).await;
    let stale = claim_expired(&app, id).await;
    assert_eq!(
        jobs::recover_expired(&app.state.db).await.unwrap(),
        vec![(id, true)]
    );
    let current = match jobs::claim(&app.state.db, id, "w2", Duration::from_secs(30))
        .await
        .unwrap()
    {
        Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed again: {other:?}"),
    };
    let before = kinds(&app, id).await;

    let line = events::encode(&[NewEvent::output(OutputStream::Stdout, "late".into(), None)]);
    assert!(
        !jobs::append_run_events(&app.state.db, &stale, 1, &line)
            .await
            .unwrap()
    );
    let finish = Finish {
        end: RunEnd::Succeeded,
        exit_code: Some(0),
        output: None,
        retry_delay: Duration::ZERO,
        details: json!({}),
        // The run's last lines go with its end, or not at all.
        events: events::encode(&[NewEvent::output(OutputStream::Stdout, "last".into(), None)]),
    };
    assert!(
        jobs::finish(&app.state.db, &stale, &finish)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        kinds(&app, id).await,
        before,
        "the stale lease wrote nothing"
    );
    let job = jobs::get(&app.state.db, id).await.unwrap();
    assert_eq!(job.status.as_str(), "running");
    assert_eq!(job.worker_id.as_deref(), Some("w2"));

    // The current holder still writes.
    assert!(
        jobs::append_run_events(&app.state.db, &current, 1, &line)
            .await
            .unwrap()
    );
    // The same batch again (its answer lost, the worker retries): acknowledged, not stored twice.
    assert!(
        jobs::append_run_events(&app.state.db, &current, 1, &line)
            .await
            .unwrap()
    );
    let done = jobs::finish(&app.state.db, &current, &finish)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.as_str(), "succeeded");
    let after = kinds(&app, id).await;
    assert_eq!(
        after[before.len()..],
        ["output_chunk", "output_chunk", "job_succeeded"],
        "the batch, then the finish's last line before its closing event"
    );
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'text' FROM events WHERE job_id = $1 AND kind = 'output_chunk' ORDER BY id",
    )
    .bind(id)
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(texts, ["late", "last"]);
}

#[tokio::test]
async fn two_reconcilers_recover_an_expired_lease_once() {
    let app = TestApp::spawn().await;
    let id = queued_job(&app).await;
    claim_expired(&app, id).await;
    let (a, b) = tokio::join!(
        jobs::recover_expired(&app.state.db),
        jobs::recover_expired(&app.state.db)
    );
    let recovered = a.unwrap().len() + b.unwrap().len();
    assert_eq!(recovered, 1);
    let retries = kinds(&app, id)
        .await
        .iter()
        .filter(|k| *k == "job_retry_scheduled")
        .count();
    assert_eq!(retries, 1);
}

#[tokio::test]
async fn a_run_whose_output_holds_a_nul_is_stored_with_u_fffd_in_its_place() {
    // PostgreSQL stores NUL neither in `text` nor in `jsonb`. Whatever vibe prints or leaves
    // (a raw NUL byte, `\u0000` in a JSON line, an error, an answer, an export) is stored with
    // U+FFFD instead, and the run ends, rather than its writes failing on every retry.
    let app = TestApp::spawn().await;
    let id = queued_job(&app).await;
    let lease = match jobs::claim(&app.state.db, id, "w", Duration::from_secs(30))
        .await
        .unwrap()
    {
        Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed: {other:?}"),
    };
    let json_line = r#"{"type":"message","role":"assistant","content":"x\u0000y"}"#;
    let batch = events::encode(&[
        NewEvent::output(OutputStream::Stdout, "raw\0byte".into(), None),
        NewEvent::output(
            OutputStream::Stdout,
            json_line.into(),
            otter_core::vibe::parse_line(json_line),
        ),
    ]);
    assert!(
        jobs::append_run_events(&app.state.db, &lease, 1, &batch)
            .await
            .unwrap()
    );
    let finish = Finish {
        end: RunEnd::Failed {
            error: "vibe failed: Error: bad\0thing".into(),
            retryable: false,
        },
        exit_code: Some(1),
        output: Some(otter_core::model::JobOutput {
            final_text: Some("fin\0al".into()),
            usage: Some(json!({"note": "u\0"})),
            cost: None,
            outcome: Some("error".into()),
            stop_reason: None,
            export: Some(json!({"k\0": ["v\0"]})),
            model: None,
        }),
        retry_delay: Duration::ZERO,
        details: json!({"setup": {"error": "s\0"}}),
        events: events::encode(&[NewEvent::output(
            OutputStream::Stderr,
            "last\0line".into(),
            None,
        )]),
    };
    let status = jobs::finish(&app.state.db, &lease, &finish).await.unwrap();
    assert_eq!(
        status.map(|s| s.as_str().to_owned()).as_deref(),
        Some("failed")
    );

    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        job["error"], "vibe failed: Error: bad\u{FFFD}thing",
        "{job}"
    );
    assert_eq!(job["output"]["final_text"], "fin\u{FFFD}al", "{job}");
    assert_eq!(job["output"]["export"], json!({"k\u{FFFD}": ["v\u{FFFD}"]}));
    let (_, page) = app.get(&format!("/v1/jobs/{id}/events")).await;
    let items = page["items"].as_array().unwrap();
    let texts: Vec<&str> = items
        .iter()
        .filter(|e| e["kind"] == "output_chunk")
        .map(|e| e["payload"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "raw\u{FFFD}byte",
            r#"{"type":"message","role":"assistant","content":"x\u0000y"}"#,
            "last\u{FFFD}line"
        ]
    );
    let entry = items
        .iter()
        .find_map(|e| e["payload"].get("entry"))
        .expect("the JSON line's entry");
    assert_eq!(entry["content"], "x\u{FFFD}y");
    let end = items.last().unwrap();
    assert_eq!(end["kind"], "job_failed");
    assert_eq!(end["payload"]["setup"]["error"], "s\u{FFFD}");
}
