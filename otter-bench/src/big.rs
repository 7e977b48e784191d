//! Figure 6: big tables. The same requests and the same claim are timed on an almost empty
//! database and then, in the same run, after filling it with queued jobs and stored events.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use otter_core::db::jobs::{self, Claim};
use otter_core::model::JobId;
use sqlx::PgPool;

use crate::Opts;
use crate::common::{Row, Section, Stack, Target, pct};

/// Events per finished job in the filled history.
const EVENTS_PER_JOB: usize = 1000;
/// Samples per timing.
const SAMPLES: usize = 30;

struct Timings {
    queue: f64,
    history: f64,
    replay: f64,
    claim: f64,
}

async fn time_get(stack: &Stack, path: &str) -> Result<f64> {
    let mut lat = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let r = stack
            .http
            .get(format!("{}{path}", stack.base))
            .send()
            .await?
            .error_for_status()?;
        let _ = r.bytes().await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(pct(&mut lat, 50.0))
}

/// Replays one job's events over SSE until `event: end`.
async fn time_replay(stack: &Stack, job: &str) -> Result<f64> {
    let mut lat = Vec::new();
    for _ in 0..SAMPLES / 3 {
        let t = Instant::now();
        let r = stack
            .http
            .get(format!("{}/v1/events/stream?job_id={job}", stack.base))
            .send()
            .await?
            .error_for_status()?;
        let mut body = r.bytes_stream();
        let mut tail = String::new();
        let mut events = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            tail.push_str(&String::from_utf8_lossy(&chunk));
            events += tail.matches("\nid:").count();
            if tail.contains("event: end") {
                break;
            }
            let keep = tail.len().saturating_sub(16);
            tail = tail.split_off(keep);
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = events;
    }
    Ok(pct(&mut lat, 50.0))
}

/// A queued job in a workspace of its own (so the claim is not refused as "workspace busy").
async fn queued_job(pool: &PgPool, i: usize) -> Result<JobId> {
    let (id,): (JobId,) = sqlx::query_as(
        "WITH w AS (INSERT INTO workspaces (id, name, path, vibe_home)
                    VALUES (gen_random_uuid(), 'claim', '/tmp/otter-bench-claim/' || $1 || '-' || gen_random_uuid(), '/tmp/x')
                    RETURNING id)
         INSERT INTO jobs (id, workspace_id, prompt, max_attempts, created_at)
         SELECT gen_random_uuid(), w.id, 'claim', 3, now() - interval '1 hour' FROM w RETURNING id",
    )
    .bind(i.to_string())
    .fetch_one(pool)
    .await?;
    Ok(id)
}

async fn time_claim(pool: &PgPool) -> Result<f64> {
    let mut lat = Vec::new();
    for i in 0..SAMPLES {
        let id = queued_job(pool, i).await?;
        let t = Instant::now();
        let claim = jobs::claim(
            pool,
            id,
            &jobs::Claimant::new("bench-claimer", Duration::from_secs(60)),
        )
        .await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(matches!(claim, Claim::Claimed { .. }), "claim refused");
    }
    Ok(pct(&mut lat, 50.0))
}

async fn measure(stack: &Stack, replay_job: &str) -> Result<Timings> {
    Ok(Timings {
        queue: time_get(stack, "/v1/queue?limit=50").await?,
        history: time_get(stack, "/v1/history?limit=50").await?,
        replay: time_replay(stack, replay_job).await?,
        claim: time_claim(&stack.pool).await?,
    })
}

/// Finished jobs with `per_job` events each, in one workspace. Returns the first job's id.
async fn fill_history(pool: &PgPool, ws: &str, jobs_n: usize, per_job: usize) -> Result<String> {
    let mut first = None;
    // At most 65,536 events per transaction (an event id holds the transaction's id).
    let chunk = 50usize;
    let mut done = 0;
    while done < jobs_n {
        let n = chunk.min(jobs_n - done);
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO jobs (id, workspace_id, prompt, status, max_attempts, attempts, created_at, started_at, finished_at, exit_code)
             SELECT gen_random_uuid(), $1::uuid, 'history', 'succeeded', 3, 1, now() - interval '2 hours',
                    now() - interval '2 hours', now() - g * interval '1 second', 0
             FROM generate_series(1, $2) g RETURNING id",
        )
        .bind(ws)
        .bind(n as i64)
        .fetch_all(pool)
        .await?;
        first.get_or_insert(ids[0]);
        sqlx::query(
            "INSERT INTO events (id, job_id, workspace_id, seq, kind, payload)
             SELECT ((pg_current_xact_id()::text::bigint - otter_event_xid_base()) << 16)
                        + row_number() OVER (ORDER BY j, g) - 1,
                    j, $2::uuid, g,
                    CASE WHEN g = $3 THEN 'job_succeeded' ELSE 'output_chunk' END,
                    jsonb_build_object('stream', 'stdout', 'text', 'line ' || g || ' of a stored benchmark job, about the size of a real one')
             FROM unnest($1::uuid[]) j, generate_series(1, $3) g
             ORDER BY j, g",
        )
        .bind(&ids)
        .bind(ws)
        .bind(per_job as i64)
        .execute(pool)
        .await?;
        done += n;
        if done % 2000 == 0 || done == jobs_n {
            eprintln!(
                "[big] {done}/{jobs_n} finished jobs, {} events",
                done * per_job
            );
        }
    }
    Ok(first.context("no job")?.to_string())
}

/// Runs figure 6.
pub(crate) async fn run(opts: &Opts) -> Result<Section> {
    let rows_spec = [
        ("`GET /v1/queue` first page", Target::Max(50.0), "≤ 50 ms"),
        ("`GET /v1/history` first page", Target::Max(50.0), "≤ 50 ms"),
        (
            "One job's event replay (SSE, 1,000 events, to `end`)",
            Target::Max(50.0),
            "≤ 50 ms",
        ),
        (
            "Claim one job (`jobs::claim`)",
            Target::RatioMax(1.2),
            "big/empty ≤ 1.2",
        ),
    ];
    let mut rows: Vec<Row> = rows_spec
        .iter()
        .map(|(m, t, tt)| Row::new(m, "ms", *t, tt).raw("same, almost empty database"))
        .collect();
    let mut fill_secs = Vec::new();
    // The tables take long to fill: one filled database serves all runs of the big side.
    let stack = Stack::start(&[]).await?;
    let ws = stack.workspace("big").await?;
    let small_job = fill_history(&stack.pool, &ws, 1, EVENTS_PER_JOB).await?;
    // A few queued jobs so the queue page is not empty.
    sqlx::query(
        "INSERT INTO jobs (id, workspace_id, prompt, max_attempts)
         SELECT gen_random_uuid(), $1::uuid, 'queued', 3 FROM generate_series(1, 10)",
    )
    .bind(&ws)
    .execute(&stack.pool)
    .await?;
    sqlx::query("ANALYZE").execute(&stack.pool).await?;
    let mut small = Vec::new();
    for _ in 0..opts.runs {
        small.push(measure(&stack, &small_job).await?);
    }
    let t = Instant::now();
    let history_jobs = opts.events / EVENTS_PER_JOB;
    fill_history(
        &stack.pool,
        &ws,
        history_jobs.saturating_sub(1),
        EVENTS_PER_JOB,
    )
    .await?;
    sqlx::query(
        "INSERT INTO jobs (id, workspace_id, prompt, max_attempts, priority, created_at)
         SELECT gen_random_uuid(), $1::uuid, 'queued', 3, (g % 3) - 1, now() - g * interval '1 millisecond'
         FROM generate_series(1, $2) g",
    )
    .bind(&ws)
    .bind(opts.queued as i64)
    .execute(&stack.pool)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&stack.pool).await?;
    fill_secs.push(t.elapsed().as_secs_f64());
    let (jobs_n, events_n): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'queued'), (SELECT count(*) FROM events)",
    )
    .fetch_one(&stack.pool)
    .await?;
    // The replayed job: one in the middle of the history.
    let mid_job: String = sqlx::query_scalar(
        "SELECT id::text FROM jobs WHERE status = 'succeeded' ORDER BY finished_at DESC OFFSET $1 LIMIT 1",
    )
    .bind((history_jobs / 2) as i64)
    .fetch_one(&stack.pool)
    .await?;
    for (run, s) in small.iter().enumerate() {
        let b = measure(&stack, &mid_job).await?;
        for (row, (big, small)) in rows.iter_mut().zip([
            (b.queue, s.queue),
            (b.history, s.history),
            (b.replay, s.replay),
            (b.claim, s.claim),
        ]) {
            row.otter.push(big);
            row.raw.push(small);
        }
        eprintln!(
            "[big] run {run}: queue {:.1} ms, history {:.1} ms, replay {:.1} ms, claim {:.2} ms (empty: {:.1}/{:.1}/{:.1}/{:.2})",
            b.queue, b.history, b.replay, b.claim, s.queue, s.history, s.replay, s.claim
        );
    }
    Ok(Section {
        title: "6. Big tables".into(),
        rows,
        notes: vec![format!(
            "Measured with {jobs_n} queued jobs and {events_n} stored events ({} finished jobs × {EVENTS_PER_JOB} events, inserted by SQL, then `VACUUM ANALYZE`; filling took {:.0} s). \
             The raw column is the same request on the same server before the fill (10 queued jobs, 1 finished job with {EVENTS_PER_JOB} events). \
             Each figure is the median of {SAMPLES} requests ({} replays); the replay reads the whole SSE stream of a job from the middle of the history to its `end`. \
             Claim: `otter_core::db::jobs::claim` called in-process on a queued job of its own workspace.",
            history_jobs,
            fill_secs.iter().sum::<f64>(),
            SAMPLES / 3
        )],
    })
}
