//! The job state machine's SQL functions (migrations 13–15 and `20261202000030`), through their
//! typed wrappers in `otter_core::db::jobs`: the lease fences, the one retry rule, the queue
//! controls' answers, and the one payload shape of each event that ends a run.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use otter_core::db::jobs::{self, Claim, Finish, Lease, LeaseRenewal, RunEnd};
use otter_core::db::{DbError, events};
use otter_core::model::{Job, JobId, JobStatus, NewEvent, OutputStream};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::queued_job;

async fn claim(pool: &PgPool, id: JobId, worker: &str, ttl: Duration) -> Lease {
    match jobs::claim(pool, id, &jobs::Claimant::new(worker, ttl))
        .await
        .unwrap()
    {
        Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed: {other:?}"),
    }
}

/// Claims `id` with a lease that has already expired when the claim commits.
async fn claim_expired(pool: &PgPool, id: JobId) -> Lease {
    claim(pool, id, "w", Duration::ZERO).await
}

async fn events_of(pool: &PgPool, id: JobId) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT kind, payload FROM events WHERE job_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn kinds(pool: &PgPool, id: JobId) -> Vec<String> {
    events_of(pool, id)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// The last event of `id`, which must be of `kind`: its payload.
async fn last_event(pool: &PgPool, id: JobId, kind: &str) -> Value {
    let (last, payload) = events_of(pool, id).await.pop().unwrap();
    assert_eq!(last, kind, "{payload}");
    payload
}

fn keys(payload: &Value) -> BTreeSet<&str> {
    payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// The one shape of `job_retry_scheduled` (docs/api.md, "Event kinds"), whichever path wrote it;
/// `next_attempt_at` is the job's `run_after`.
fn assert_retry_shape(payload: &Value, job: &Job) {
    assert_eq!(
        keys(payload),
        BTreeSet::from([
            "attempt",
            "attempt_counted",
            "error",
            "exit_code",
            "max_attempts",
            "next_attempt_at",
            "reason",
            "worker_id"
        ]),
        "{payload}"
    );
    let next: DateTime<Utc> = payload["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(next, job.run_after, "{payload}");
    assert_eq!(payload["max_attempts"], job.max_attempts);
    assert!(
        payload["attempt"].is_i64() && payload["error"].is_string(),
        "{payload}"
    );
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_run_that_exited_2_is_retried_after_its_delay(pool: PgPool) {
    let job = queued_job(&pool, 3).await;
    let lease = claim(&pool, job.id, "w", Duration::from_secs(30)).await;
    let finish = Finish {
        retry_delay: Duration::from_secs(60),
        ..Finish::new(
            RunEnd::Failed {
                error: "vibe exited with code 2".into(),
                retryable: true,
            },
            Some(2),
        )
    };
    let status = jobs::finish(&pool, &lease, &finish).await.unwrap();
    assert_eq!(status, Some(JobStatus::Queued));
    let job = jobs::get(&pool, job.id).await.unwrap();
    assert_eq!((job.attempts, job.exit_code), (1, Some(2)));
    assert!(job.run_after > Utc::now() + chrono::Duration::seconds(50));
    let payload = last_event(&pool, job.id, "job_retry_scheduled").await;
    assert_retry_shape(&payload, &job);
    assert_eq!(payload["attempt"], 1);
    assert_eq!(payload["exit_code"], 2);
    assert_eq!(payload["error"], "vibe exited with code 2");
    assert_eq!(payload["attempt_counted"], true);
    assert_eq!(payload["reason"], "run_failed");
    assert!(matches!(
        jobs::claim(
            &pool,
            job.id,
            &jobs::Claimant::new("w", Duration::from_secs(30))
        )
        .await
        .unwrap(),
        Claim::NotYet(_)
    ));
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_lost_worker_s_job_is_retried_at_once(pool: PgPool) {
    let job = queued_job(&pool, 3).await;
    claim_expired(&pool, job.id).await;
    assert_eq!(
        jobs::recover_expired(&pool).await.unwrap(),
        vec![(job.id, true)]
    );
    let job = jobs::get(&pool, job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(
        (job.attempts, job.error.as_deref()),
        (1, Some("worker_lost"))
    );
    let payload = last_event(&pool, job.id, "job_retry_scheduled").await;
    assert_retry_shape(&payload, &job);
    assert_eq!(payload["attempt"], 1);
    assert_eq!(payload["exit_code"], Value::Null);
    assert_eq!(payload["error"], "worker_lost");
    assert_eq!(payload["attempt_counted"], true);
    assert_eq!(payload["reason"], "worker_lost");
    claim(&pool, job.id, "w2", Duration::from_secs(30)).await;
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_handed_back_job_is_retried_at_once_without_counting_the_attempt(pool: PgPool) {
    let job = queued_job(&pool, 1).await;
    let lease = claim(&pool, job.id, "w", Duration::from_secs(30)).await;
    // As the worker hands a job back on shutdown.
    let finish = Finish {
        details: json!({ "reason": "worker_shutdown" }),
        ..Finish::new(
            RunEnd::Released {
                reason: "worker_shutdown".into(),
            },
            None,
        )
    };
    let status = jobs::finish(&pool, &lease, &finish).await.unwrap();
    assert_eq!(status, Some(JobStatus::Queued));
    let job = jobs::get(&pool, job.id).await.unwrap();
    assert_eq!(job.attempts, 0, "the attempt is not counted");
    let payload = last_event(&pool, job.id, "job_retry_scheduled").await;
    assert_retry_shape(&payload, &job);
    assert_eq!(payload["attempt"], 1);
    assert_eq!(payload["error"], "worker_shutdown");
    assert_eq!(payload["attempt_counted"], false);
    assert_eq!(payload["reason"], "worker_shutdown");
    // Its only attempt is still there.
    claim(&pool, job.id, "w2", Duration::from_secs(30)).await;
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_failure_with_no_attempt_left_ends_the_job_failed(pool: PgPool) {
    let failed_keys = BTreeSet::from(["attempt", "error", "exit_code", "reason", "worker_id"]);
    // A retryable run with its last attempt spent.
    let job = queued_job(&pool, 1).await;
    let lease = claim(&pool, job.id, "w", Duration::from_secs(30)).await;
    let failure = RunEnd::Failed {
        error: "vibe exited with code 2".into(),
        retryable: true,
    };
    let status = jobs::finish(&pool, &lease, &Finish::new(failure, Some(2)))
        .await
        .unwrap();
    assert_eq!(status, Some(JobStatus::Failed));
    let payload = last_event(&pool, job.id, "job_failed").await;
    assert_eq!(keys(&payload), failed_keys);
    assert_eq!(payload["exit_code"], 2);

    // A lost worker's job with its last attempt spent.
    let job = queued_job(&pool, 1).await;
    claim_expired(&pool, job.id).await;
    assert_eq!(
        jobs::recover_expired(&pool).await.unwrap(),
        vec![(job.id, false)]
    );
    let payload = last_event(&pool, job.id, "job_failed").await;
    assert_eq!(keys(&payload), failed_keys);
    assert_eq!(payload["error"], "worker_lost");
    assert!(
        jobs::get(&pool, job.id)
            .await
            .unwrap()
            .finished_at
            .is_some()
    );

    // A failure another attempt cannot help, attempts remaining.
    let job = queued_job(&pool, 3).await;
    let lease = claim(&pool, job.id, "w", Duration::from_secs(30)).await;
    let failure = RunEnd::Failed {
        error: "vibe stopped early".into(),
        retryable: false,
    };
    let status = jobs::finish(&pool, &lease, &Finish::new(failure, Some(3)))
        .await
        .unwrap();
    assert_eq!(status, Some(JobStatus::Failed));
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_requested_cancel_wins_over_every_end_but_success(pool: PgPool) {
    let cancelled_keys = BTreeSet::from(["attempt", "error", "exit_code", "while", "worker_id"]);
    let ends = [
        RunEnd::Failed {
            error: "vibe exited with code 2".into(),
            retryable: true,
        },
        RunEnd::Released {
            reason: "worker_shutdown".into(),
        },
        RunEnd::Cancelled,
    ];
    for end in ends {
        let job = queued_job(&pool, 3).await;
        let lease = claim(&pool, job.id, "w", Duration::from_secs(30)).await;
        assert!(jobs::cancel(&pool, job.id).await.unwrap().cancel_requested);
        assert_eq!(
            jobs::renew_lease(&pool, &lease, Duration::from_secs(30))
                .await
                .unwrap(),
            LeaseRenewal::CancelRequested
        );
        let status = jobs::finish(&pool, &lease, &Finish::new(end.clone(), None))
            .await
            .unwrap();
        assert_eq!(status, Some(JobStatus::Cancelled), "{end:?}");
        let payload = last_event(&pool, job.id, "job_cancelled").await;
        assert_eq!(keys(&payload), cancelled_keys, "{end:?}");
        assert_eq!(payload["error"], "cancelled");
        assert_eq!(payload["while"], "running");
    }
    // A lost worker's job whose cancel was requested.
    let job = queued_job(&pool, 3).await;
    claim_expired(&pool, job.id).await;
    jobs::cancel(&pool, job.id).await.unwrap();
    assert_eq!(
        jobs::recover_expired(&pool).await.unwrap(),
        vec![(job.id, false)]
    );
    let payload = last_event(&pool, job.id, "job_cancelled").await;
    assert_eq!(keys(&payload), cancelled_keys);
    // A run that succeeded before it could stop.
    let job = queued_job(&pool, 3).await;
    let lease = claim(&pool, job.id, "w", Duration::from_secs(30)).await;
    jobs::cancel(&pool, job.id).await.unwrap();
    let finish = Finish {
        details: json!({ "setup": null }),
        ..Finish::new(RunEnd::Succeeded, Some(0))
    };
    let status = jobs::finish(&pool, &lease, &finish).await.unwrap();
    assert_eq!(status, Some(JobStatus::Succeeded));
    let payload = last_event(&pool, job.id, "job_succeeded").await;
    assert_eq!(
        keys(&payload),
        BTreeSet::from(["attempt", "error", "exit_code", "setup", "worker_id"])
    );
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn queue_controls_change_a_queued_job_and_answer_conflicts(pool: PgPool) {
    let missing = JobId::new();
    assert!(matches!(
        jobs::pause(&pool, missing).await,
        Err(DbError::NotFound("job"))
    ));
    assert!(matches!(
        jobs::set_priority(&pool, missing, 1).await,
        Err(DbError::NotFound("job"))
    ));
    assert!(matches!(
        jobs::cancel(&pool, missing).await,
        Err(DbError::NotFound("job"))
    ));
    let conflict = |r: Result<Job, DbError>| match r {
        Err(DbError::Conflict(message)) => message,
        other => panic!("not a conflict: {other:?}"),
    };

    let job = queued_job(&pool, 3).await;
    assert!(jobs::pause(&pool, job.id).await.unwrap().paused);
    assert!(jobs::pause(&pool, job.id).await.unwrap().paused);
    assert_eq!(
        jobs::set_priority(&pool, job.id, 5).await.unwrap().priority,
        5
    );
    assert_eq!(
        jobs::set_priority(&pool, job.id, 5).await.unwrap().priority,
        5
    );
    assert!(!jobs::resume(&pool, job.id).await.unwrap().paused);
    assert!(!jobs::resume(&pool, job.id).await.unwrap().paused);
    let events = events_of(&pool, job.id).await;
    assert_eq!(
        events,
        [
            (
                "job_queued".to_owned(),
                json!({"priority": 0, "max_attempts": 3})
            ),
            ("job_paused".to_owned(), json!({})),
            (
                "job_priority_changed".to_owned(),
                json!({"from": 0, "to": 5})
            ),
            ("job_resumed".to_owned(), json!({})),
        ],
        "a control that changes nothing writes nothing"
    );

    let lease = claim(&pool, job.id, "w", Duration::from_secs(30)).await;
    assert_eq!(
        conflict(jobs::pause(&pool, job.id).await),
        "only a queued job can be paused; this one is running"
    );
    assert_eq!(
        conflict(jobs::set_priority(&pool, job.id, 1).await),
        "only a queued job can be moved; this one is running"
    );
    let finish = Finish::new(RunEnd::Succeeded, Some(0));
    jobs::finish(&pool, &lease, &finish).await.unwrap();
    assert_eq!(
        conflict(jobs::resume(&pool, job.id).await),
        "only a paused job can be resumed; this one is succeeded"
    );
    assert_eq!(
        conflict(jobs::cancel(&pool, job.id).await),
        "the job has already finished (succeeded)"
    );

    let job = queued_job(&pool, 3).await;
    jobs::pause(&pool, job.id).await.unwrap();
    let cancelled = jobs::cancel(&pool, job.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.error.as_deref(), Some("cancelled"));
    let payload = last_event(&pool, job.id, "job_cancelled").await;
    assert_eq!(
        payload,
        json!({"attempt": 0, "exit_code": null, "error": "cancelled", "while": "queued", "worker_id": null})
    );
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_renewed_lease_holds_until_it_is_recovered(pool: PgPool) {
    let job = queued_job(&pool, 3).await;
    let lease = claim_expired(&pool, job.id).await;
    let ttl = Duration::from_secs(30);
    // Renewed before a reconciler saw it expired: held again.
    assert_eq!(
        jobs::renew_lease(&pool, &lease, ttl).await.unwrap(),
        LeaseRenewal::Held
    );
    assert_eq!(jobs::recover_expired(&pool).await.unwrap(), vec![]);
    let renewed = jobs::get(&pool, job.id)
        .await
        .unwrap()
        .lease_expires_at
        .unwrap();
    assert!(renewed > Utc::now() + chrono::Duration::seconds(20));
    sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(job.id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        jobs::recover_expired(&pool).await.unwrap(),
        vec![(job.id, true)]
    );
    assert_eq!(
        jobs::renew_lease(&pool, &lease, ttl).await.unwrap(),
        LeaseRenewal::Lost
    );
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_worker_whose_lease_was_recovered_writes_nothing_more(pool: PgPool) {
    let id = queued_job(&pool, 3).await.id;
    let stale = claim_expired(&pool, id).await;
    assert_eq!(
        jobs::recover_expired(&pool).await.unwrap(),
        vec![(id, true)]
    );
    let current = claim(&pool, id, "w2", Duration::from_secs(30)).await;
    let before = kinds(&pool, id).await;

    let line = events::encode(&[NewEvent::output(OutputStream::Stdout, "late".into(), None)]);
    assert!(
        !jobs::append_run_events(&pool, &stale, 1, &line)
            .await
            .unwrap()
    );
    let finish = Finish {
        // The run's last lines go with its end, or not at all.
        events: events::encode(&[NewEvent::output(OutputStream::Stdout, "last".into(), None)]),
        ..Finish::new(RunEnd::Succeeded, Some(0))
    };
    assert!(
        jobs::finish(&pool, &stale, &finish)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        kinds(&pool, id).await,
        before,
        "the stale lease wrote nothing"
    );
    let job = jobs::get(&pool, id).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.worker_id.as_deref(), Some("w2"));

    // The current holder still writes.
    assert!(
        jobs::append_run_events(&pool, &current, 1, &line)
            .await
            .unwrap()
    );
    // The same batch again (its answer lost, the worker retries): acknowledged, not stored twice.
    assert!(
        jobs::append_run_events(&pool, &current, 1, &line)
            .await
            .unwrap()
    );
    let done = jobs::finish(&pool, &current, &finish).await.unwrap();
    assert_eq!(done, Some(JobStatus::Succeeded));
    let after = kinds(&pool, id).await;
    assert_eq!(
        after[before.len()..],
        ["output_chunk", "output_chunk", "job_succeeded"],
        "the batch, then the finish's last line before its closing event"
    );
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'text' FROM events WHERE job_id = $1 AND kind = 'output_chunk' ORDER BY id",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(texts, ["late", "last"]);
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn two_reconcilers_recover_an_expired_lease_once(pool: PgPool) {
    let id = queued_job(&pool, 3).await.id;
    claim_expired(&pool, id).await;
    let (a, b) = tokio::join!(jobs::recover_expired(&pool), jobs::recover_expired(&pool));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
    let retries = kinds(&pool, id)
        .await
        .iter()
        .filter(|k| *k == "job_retry_scheduled")
        .count();
    assert_eq!(retries, 1);
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_run_whose_output_holds_a_nul_is_stored_with_u_fffd_in_its_place(pool: PgPool) {
    // PostgreSQL stores NUL neither in `text` nor in `jsonb`. Whatever vibe prints or leaves
    // (a raw NUL byte, `\u0000` in a JSON line, an error, an answer, an export) is stored with
    // U+FFFD instead, and the run ends, rather than its writes failing on every retry.
    let id = queued_job(&pool, 1).await.id;
    let lease = claim(&pool, id, "w", Duration::from_secs(30)).await;
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
        jobs::append_run_events(&pool, &lease, 1, &batch)
            .await
            .unwrap()
    );
    let finish = Finish {
        output: Some(otter_core::model::JobOutput {
            final_text: Some("fin\0al".into()),
            usage: Some(json!({"note": "u\0"})),
            cost: None,
            outcome: Some("error".into()),
            stop_reason: None,
            export: Some(json!({"k\0": ["v\0"]})),
            model: None,
            ..Default::default()
        }),
        details: json!({"setup": {"error": "s\0"}}),
        events: events::encode(&[NewEvent::output(
            OutputStream::Stderr,
            "last\0line".into(),
            None,
        )]),
        ..Finish::new(
            RunEnd::Failed {
                error: "vibe failed: Error: bad\0thing".into(),
                retryable: false,
            },
            Some(1),
        )
    };
    let status = jobs::finish(&pool, &lease, &finish).await.unwrap();
    assert_eq!(status, Some(JobStatus::Failed));

    let job = jobs::get(&pool, id).await.unwrap();
    assert_eq!(
        job.error.as_deref(),
        Some("vibe failed: Error: bad\u{FFFD}thing")
    );
    let output = job.output.unwrap();
    assert_eq!(output.final_text.as_deref(), Some("fin\u{FFFD}al"));
    assert_eq!(output.usage, Some(json!({"note": "u\u{FFFD}"})));
    assert_eq!(output.export, Some(json!({"k\u{FFFD}": ["v\u{FFFD}"]})));
    let events = events_of(&pool, id).await;
    let texts: Vec<&str> = events
        .iter()
        .filter(|(kind, _)| kind == "output_chunk")
        .map(|(_, payload)| payload["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "raw\u{FFFD}byte",
            r#"{"type":"message","role":"assistant","content":"x\u0000y"}"#,
            "last\u{FFFD}line"
        ]
    );
    let entry = events
        .iter()
        .find_map(|(_, payload)| payload.get("entry"))
        .expect("the JSON line's entry");
    assert_eq!(entry["content"], "x\u{FFFD}y");
    assert_eq!(events.last().unwrap().0, "job_failed");
}
