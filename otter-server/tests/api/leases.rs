//! The lease fences of the job's SQL functions (migrations 13–15): a worker whose lease was
//! recovered writes nothing more, a retried batch is stored once, the finish writes the last
//! lines before its closing event, and two reconcilers recover an expired lease once.

use std::time::Duration;

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

    let line = [NewEvent::output(OutputStream::Stdout, "late".into(), None)];
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
        events: vec![NewEvent::output(OutputStream::Stdout, "last".into(), None)],
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
