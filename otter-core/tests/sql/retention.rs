//! The purge of `OTTER_RETENTION` (`db::retention`): only the `output_chunk` events of jobs that
//! ended before the cutoff go, in batches, while another job's run goes on writing; the row,
//! output and lifecycle events stay, and the job shows `events_purged`.

use std::time::Duration;

use chrono::Utc;
use otter_core::checkpoint::CheckpointId;
use otter_core::db::checkpoints::{self, AfterCheckpoint};
use otter_core::db::jobs::{self, Claim, Finish, Lease, NewJob, RunEnd};
use otter_core::db::{events, retention, workspaces};
use otter_core::model::{JobId, NewEvent, OutputStream};
use sqlx::PgPool;

use super::queued_job;

async fn claimed(pool: &PgPool, id: JobId) -> Lease {
    match jobs::claim(pool, id, &jobs::Claimant::new("w", Duration::from_secs(60)))
        .await
        .unwrap()
    {
        Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed: {other:?}"),
    }
}

fn lines(from: usize, n: usize) -> Vec<otter_core::db::events::EncodedEvent> {
    let lines: Vec<NewEvent> = (from..from + n)
        .map(|i| NewEvent::output(OutputStream::Stdout, format!("line {i}"), None))
        .collect();
    events::encode(&lines)
}

async fn count(pool: &PgPool, id: JobId, kind: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE job_id = $1 AND ($2::text IS NULL OR kind = $2)",
    )
    .bind(id)
    .bind(kind)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn the_purge_takes_only_ended_jobs_lines_while_a_run_writes(pool: PgPool) {
    // An ended job with 5,000 lines and an output.
    let old = queued_job(&pool, 1).await.id;
    let lease = claimed(&pool, old).await;
    for batch in 0..5 {
        assert!(
            jobs::append_run_events(
                &pool,
                &lease,
                batch + 1,
                &lines(batch as usize * 1000, 1000)
            )
            .await
            .unwrap()
        );
    }
    let mut finish = Finish::new(RunEnd::Succeeded, Some(0));
    finish.output = Some(otter_core::model::JobOutput {
        final_text: Some("done".into()),
        ..Default::default()
    });
    jobs::finish(&pool, &lease, &finish).await.unwrap();
    let lifecycle = count(&pool, old, None).await - count(&pool, old, Some("output_chunk")).await;
    assert_eq!(count(&pool, old, Some("output_chunk")).await, 5000);

    // A running job that keeps writing while the purge goes on.
    let live = queued_job(&pool, 1).await.id;
    let live_lease = claimed(&pool, live).await;
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for batch in 0..50 {
                assert!(
                    jobs::append_run_events(
                        &pool,
                        &live_lease,
                        batch + 1,
                        &lines(batch as usize * 20, 20)
                    )
                    .await
                    .unwrap()
                );
            }
        })
    };
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    let due = retention::purgeable(&pool, cutoff, None, 100)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|p| p.id).collect::<Vec<_>>(),
        [old],
        "only the ended job"
    );
    let mut deleted = 0;
    loop {
        let n = retention::delete_output_batch(&pool, old, 700)
            .await
            .unwrap();
        assert!(n <= 700);
        deleted += n;
        // Never the running job's lines, even when asked.
        assert_eq!(
            retention::delete_output_batch(&pool, live, 700)
                .await
                .unwrap(),
            0
        );
        if n == 0 {
            break;
        }
    }
    assert!(retention::mark_purged(&pool, old).await.unwrap());
    assert!(!retention::mark_purged(&pool, live).await.unwrap());
    writer.await.unwrap();

    assert_eq!(deleted, 5000);
    assert_eq!(count(&pool, old, Some("output_chunk")).await, 0);
    assert_eq!(
        count(&pool, old, None).await,
        lifecycle,
        "lifecycle events stay"
    );
    assert_eq!(
        count(&pool, live, Some("output_chunk")).await,
        1000,
        "the live run lost nothing"
    );
    let job = jobs::get(&pool, old).await.unwrap();
    assert!(job.events_purged);
    assert_eq!(job.output.unwrap().final_text.as_deref(), Some("done"));
    assert!(
        retention::purgeable(&pool, cutoff, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!jobs::get(&pool, live).await.unwrap().events_purged);
}

/// A run of `id` that records `before` and, when given, ends recording `after`.
async fn run_with_checkpoints(
    pool: &PgPool,
    id: JobId,
    before: CheckpointId,
    after: Option<CheckpointId>,
) {
    let lease = claimed(pool, id).await;
    checkpoints::record_before(pool, &lease, Some(before), None)
        .await
        .unwrap();
    if let Some(after) = after {
        let mut finish = Finish::new(RunEnd::Succeeded, Some(0));
        finish.checkpoint = Some(AfterCheckpoint {
            checkpoint: Some(after),
            ..Default::default()
        });
        jobs::finish(pool, &lease, &finish).await.unwrap();
    }
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn the_sweep_keeps_the_checkpoints_of_every_job_not_purged_but_those_being_purged(
    pool: PgPool,
) {
    let a = queued_job(&pool, 1).await;
    let ws = workspaces::get(&pool, a.workspace_id).await.unwrap();
    let another = |prompt| NewJob {
        workspace: &ws,
        prompt,
        priority: 0,
        max_attempts: 1,
        parent_job_id: None,
        limits: Default::default(),
        model: None,
    };
    let b = jobs::insert(&pool, &another("b")).await.unwrap();
    let c = jobs::insert(&pool, &another("c")).await.unwrap();
    let id = || CheckpointId(uuid::Uuid::new_v4());
    let (a1, a2, b1, b2, c1) = (id(), id(), id(), id(), id());
    run_with_checkpoints(&pool, a.id, a1, Some(a2)).await;
    run_with_checkpoints(&pool, b.id, b1, Some(b2)).await;
    // `c` is running: it has only its checkpoint from before.
    run_with_checkpoints(&pool, c.id, c1, None).await;
    // Another workspace's job is not this workspace's to keep.
    let elsewhere = queued_job(&pool, 1).await.id;
    run_with_checkpoints(&pool, elsewhere, id(), Some(id())).await;

    let kept = retention::kept_checkpoints(&pool, ws.id, &[a.id])
        .await
        .unwrap();
    assert_eq!(kept, [b1, b2, c1].into_iter().collect());
    assert!(retention::mark_purged(&pool, b.id).await.unwrap());
    let kept = retention::kept_checkpoints(&pool, ws.id, &[a.id])
        .await
        .unwrap();
    assert_eq!(kept, [c1].into_iter().collect(), "a purged job keeps none");

    // A job the pass could not finish (not marked) is gone past: the pass goes on after it,
    // and the next pass takes it again.
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    let ids = |due: &[retention::Purgeable]| due.iter().map(|p| p.id).collect::<Vec<_>>();
    let due = retention::purgeable(&pool, cutoff, None, 100)
        .await
        .unwrap();
    assert_eq!(ids(&due), [a.id, elsewhere]);
    let rest = retention::purgeable(&pool, cutoff, Some(due[0].next()), 100)
        .await
        .unwrap();
    assert_eq!(ids(&rest), [elsewhere]);
    let again = retention::purgeable(&pool, cutoff, None, 100)
        .await
        .unwrap();
    assert_eq!(ids(&again), [a.id, elsewhere]);
}
