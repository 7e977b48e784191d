//! The event-id contract of the SQL functions (migration 12, `otter_insert_events`): ids follow
//! transaction ids, so readers of more than one job take only ids below the horizon; a writer
//! takes the job's lock before its first write; new ids stay above stored ones after the
//! transaction ids restart lower (DESIGN.md §5, invariant 6).

use std::time::Duration;

use otter_core::db::events::{self, EventFilter, PAGE_MAX_BYTES};
use otter_core::model::{JobId, NewEvent, OutputStream};
use sqlx::PgPool;

use super::queued_job;

/// How long an id may take to become final while other tests' transactions run.
const WAIT: Duration = Duration::from_secs(20);

async fn write_line(pool: &PgPool, job: JobId, text: &str) {
    let mut tx = pool.begin().await.unwrap();
    let line = NewEvent::output(OutputStream::Stdout, text.into(), None);
    events::append(&mut tx, job, &[line]).await.unwrap();
    tx.commit().await.unwrap();
}

/// An event id comes from its transaction's id, and transactions commit in any order: here the
/// older transaction (smaller ids) commits after the newer one. Readers of more than one job
/// hold the newer event back until the older transaction has ended, then read both in id order;
/// a reader of the newer event's own job need not wait.
#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn an_older_transaction_committing_last_is_neither_skipped_nor_reordered(pool: PgPool) {
    let (older_job, newer_job) = (queued_job(&pool, 1).await.id, queued_job(&pool, 1).await.id);
    // Start after the jobs' `job_queued` events, once they are final (a transaction anywhere in
    // the cluster, another test's, holds the horizon back while it runs).
    let queued: i64 = sqlx::query_scalar("SELECT max(id) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let head = otter_testkit::eventually(WAIT, "the job_queued events to become final", || async {
        let head = events::head(&pool).await.unwrap();
        (head >= queued).then_some(head)
    })
    .await;

    let mut older = pool.begin().await.unwrap();
    let older_ids = events::append(
        &mut older,
        older_job,
        &[NewEvent::output(OutputStream::Stdout, "older".into(), None)],
    )
    .await
    .unwrap();
    write_line(&pool, newer_job, "newer").await;
    let newer_id: i64 = sqlx::query_scalar("SELECT max(id) FROM events WHERE job_id = $1")
        .bind(newer_job)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(older_ids[0].0 < newer_id, "ids follow transaction ids");

    // While the older transaction runs, the newer event is stored but not final.
    let all = EventFilter::default();
    let page = events::page_after(&pool, &all, head, 100, PAGE_MAX_BYTES)
        .await
        .unwrap();
    assert!(page.events.iter().all(|e| e.id < older_ids[0].0));
    assert!(
        page.pending,
        "the newer event waits for the older transaction"
    );
    let own = EventFilter {
        job_id: Some(newer_job),
        ..Default::default()
    };
    let page = events::page_after(&pool, &own, head, 100, PAGE_MAX_BYTES)
        .await
        .unwrap();
    assert_eq!(page.events.last().map(|e| e.id), Some(newer_id));

    older.commit().await.unwrap();
    // Once final (another test's transaction anywhere in the cluster may still hold the horizon
    // back for a moment), both lines come, in id order, nothing skipped.
    let ids = otter_testkit::eventually(WAIT, "both lines to become final", || async {
        let page = events::page_after(&pool, &all, head, 100, PAGE_MAX_BYTES)
            .await
            .unwrap();
        (!page.pending && page.events.iter().any(|e| e.id == newer_id)).then(|| {
            page.events
                .iter()
                .filter(|e| e.kind == otter_core::model::kinds::OUTPUT_CHUNK)
                .map(|e| e.id)
                .collect::<Vec<i64>>()
        })
    })
    .await;
    assert_eq!(ids, vec![older_ids[0].0, newer_id]);
}

/// A transaction that writes before it takes the job's event lock could commit a job's events
/// out of id order; it is refused, and nothing of it is kept.
#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn writing_before_taking_the_job_lock_is_refused(pool: PgPool) {
    let job = queued_job(&pool, 1).await.id;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE jobs SET priority = 5 WHERE id = $1")
        .bind(job)
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = events::append(
        &mut tx,
        job,
        &[NewEvent::output(OutputStream::Stdout, "x".into(), None)],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("before the transaction's first write"),
        "{err}"
    );
    drop(tx);
    let (priority,): (i32,) = sqlx::query_as("SELECT priority FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(priority, 0);
}

/// After a dump is restored into a new cluster, transaction ids start low again: startup moves
/// the id base so that new events still get ids above every stored one.
#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn new_ids_stay_above_stored_ones_when_transaction_ids_restart_lower(pool: PgPool) {
    let job = queued_job(&pool, 1).await.id;
    // What a restore into a younger cluster looks like: stored ids far above the next one.
    sqlx::query("UPDATE event_ids SET xid_base = xid_base + 1000000")
        .execute(&pool)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT max(id) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    otter_core::db::migrate(&pool).await.unwrap();
    write_line(&pool, job, "new").await;
    let newest: i64 = sqlx::query_scalar("SELECT max(id) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(newest > stored, "{newest} > {stored}");
    // And it becomes final (once transactions older than it, in any database, have ended).
    otter_testkit::eventually(
        Duration::from_secs(20),
        "the new id to become final",
        || async { (events::head(&pool).await.unwrap() >= newest).then_some(()) },
    )
    .await;
}
