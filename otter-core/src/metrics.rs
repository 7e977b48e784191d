//! Otter's metrics in the Prometheus text format. The figures come from PostgreSQL (so every
//! server replica reports the same queue) plus what only this process knows (its SSE clients).

use std::fmt::Write as _;

use sqlx::PgPool;

use crate::db::DbError;

/// Upper bounds (seconds) of the job duration histogram.
const DURATION_BUCKETS: [f64; 9] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0];

/// A worker as the metrics show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    /// Its id.
    pub id: String,
    /// Jobs it runs now.
    pub running: i32,
    /// Its concurrency.
    pub concurrency: i32,
    /// Seconds since its last heartbeat.
    pub age_seconds: f64,
    /// The least free space of its workspace filesystems, in bytes, as of its heartbeat.
    pub disk_free_bytes: Option<i64>,
    /// Why it claims nothing (`disk_low: …`), if it does not.
    pub claims_paused: Option<String>,
}

impl WorkerRow {
    /// The kind of reason it claims nothing (`disk_low`), if it does not: the label of
    /// `otter_worker_claims_paused` (the whole reason changes with every look at the disk).
    pub fn paused_kind(&self) -> Option<&str> {
        self.claims_paused
            .as_deref()
            .map(|why| why.split(':').next().unwrap_or(why))
    }
}

/// The workers seen in the last 10 minutes.
pub async fn workers(pool: &PgPool) -> Result<Vec<WorkerRow>, DbError> {
    Ok(sqlx::query_as::<_, WorkerRow>(
        "SELECT id, running, concurrency, extract(epoch FROM now() - last_seen_at)::float8 AS age_seconds,
                disk_free_bytes, claims_paused
         FROM workers WHERE last_seen_at > now() - interval '10 minutes' ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

/// The figures of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Queued, unpaused jobs.
    pub queue_depth: i64,
    /// Paused jobs.
    pub paused: i64,
    /// Running jobs.
    pub running: i64,
    /// Finished jobs by status (`succeeded`, `failed`, `cancelled`).
    pub finished: Vec<(String, i64)>,
    /// Cumulative counts of finished runs per duration bucket, then the total count and sum.
    pub duration_buckets: Vec<i64>,
    /// Finished jobs with a duration.
    pub duration_count: i64,
    /// Sum of their durations, seconds.
    pub duration_sum: f64,
    /// Events written so far (the highest event id).
    pub events_written: i64,
    /// Workers seen recently, with their heartbeats.
    pub workers: Vec<WorkerRow>,
    /// The rate limit gates shut now.
    pub rate_limits: Vec<crate::db::jobs::RateLimitGate>,
}

/// Reads the figures from PostgreSQL.
pub async fn snapshot(pool: &PgPool) -> Result<Snapshot, DbError> {
    let (queue_depth, paused, running): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued' AND NOT paused),
                count(*) FILTER (WHERE status = 'queued' AND paused),
                count(*) FILTER (WHERE status = 'running')
         FROM jobs WHERE status IN ('queued', 'running')",
    )
    .fetch_one(pool)
    .await?;
    let finished: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.status, count(j.id) FROM unnest(ARRAY['succeeded', 'failed', 'cancelled']) AS s(status)
         LEFT JOIN jobs j ON j.status = s.status GROUP BY s.status ORDER BY s.status",
    )
    .fetch_all(pool)
    .await?;
    let bounds: Vec<f64> = DURATION_BUCKETS.to_vec();
    let (duration_buckets, duration_count, duration_sum): (Vec<i64>, i64, f64) = sqlx::query_as(
        "WITH d AS (
            SELECT extract(epoch FROM finished_at - started_at)::float8 AS secs FROM jobs
            WHERE finished_at IS NOT NULL AND started_at IS NOT NULL)
         SELECT ARRAY(SELECT (SELECT count(*) FROM d WHERE secs <= b) FROM unnest($1::float8[]) AS b),
                (SELECT count(*) FROM d), coalesce((SELECT sum(secs) FROM d), 0)",
    )
    .bind(&bounds)
    .fetch_one(pool)
    .await?;
    let events_written: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
        .fetch_one(pool)
        .await?;
    let workers = workers(pool).await?;
    let rate_limits = crate::db::jobs::rate_limit_gates(pool).await?;
    Ok(Snapshot {
        queue_depth,
        paused,
        running,
        finished,
        duration_buckets,
        duration_count,
        duration_sum,
        events_written,
        workers,
        rate_limits,
    })
}

/// Renders a snapshot (and this process's SSE client count) as Prometheus text.
pub fn render(s: &Snapshot, sse_clients: usize) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let plain = |v: String| vec![(String::new(), v)];
    metric(
        "otter_queue_depth",
        "gauge",
        "Queued jobs waiting to be claimed (paused ones excluded).",
        &plain(s.queue_depth.to_string()),
    );
    metric(
        "otter_jobs_paused",
        "gauge",
        "Queued jobs that are paused.",
        &plain(s.paused.to_string()),
    );
    metric(
        "otter_jobs_running",
        "gauge",
        "Jobs running now.",
        &plain(s.running.to_string()),
    );
    let finished: Vec<(String, String)> = s
        .finished
        .iter()
        .map(|(status, n)| (format!("{{status=\"{status}\"}}"), n.to_string()))
        .collect();
    metric(
        "otter_jobs_finished",
        "gauge",
        "Finished jobs kept in the database, by final status (deleting jobs lowers it).",
        &finished,
    );
    let mut buckets: Vec<(String, String)> = DURATION_BUCKETS
        .iter()
        .zip(&s.duration_buckets)
        .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n.to_string()))
        .collect();
    buckets.push((
        "_bucket{le=\"+Inf\"}".to_owned(),
        s.duration_count.to_string(),
    ));
    buckets.push(("_sum".to_owned(), s.duration_sum.to_string()));
    buckets.push(("_count".to_owned(), s.duration_count.to_string()));
    metric(
        "otter_job_duration_seconds",
        "histogram",
        "Duration of finished jobs' last run.",
        &buckets,
    );
    metric(
        "otter_events_written",
        "gauge",
        "Events written so far (the highest event id).",
        &plain(s.events_written.to_string()),
    );
    metric(
        "otter_sse_clients",
        "gauge",
        "SSE clients of this server process.",
        &plain(sse_clients.to_string()),
    );
    metric(
        "otter_workers",
        "gauge",
        "Workers that sent a heartbeat in the last 10 minutes.",
        &plain(s.workers.len().to_string()),
    );
    let ages: Vec<(String, String)> = s
        .workers
        .iter()
        .map(|w| {
            (
                format!("{{worker_id=\"{}\"}}", escape(&w.id)),
                format!("{:.3}", w.age_seconds),
            )
        })
        .collect();
    metric(
        "otter_worker_heartbeat_age_seconds",
        "gauge",
        "Seconds since each worker's last heartbeat.",
        &ages,
    );
    let running: Vec<(String, String)> = s
        .workers
        .iter()
        .map(|w| {
            (
                format!("{{worker_id=\"{}\"}}", escape(&w.id)),
                w.running.to_string(),
            )
        })
        .collect();
    metric(
        "otter_worker_running_jobs",
        "gauge",
        "Jobs each worker runs now.",
        &running,
    );
    let free: Vec<(String, String)> = s
        .workers
        .iter()
        .filter_map(|w| {
            let free = w.disk_free_bytes?;
            Some((
                format!("{{worker_id=\"{}\"}}", escape(&w.id)),
                free.to_string(),
            ))
        })
        .collect();
    metric(
        "otter_worker_disk_free_bytes",
        "gauge",
        "Free space of each worker's least free workspace filesystem.",
        &free,
    );
    let paused: Vec<(String, String)> = s
        .workers
        .iter()
        .map(|w| match w.paused_kind() {
            Some(kind) => (
                format!(
                    "{{worker_id=\"{}\",reason=\"{}\"}}",
                    escape(&w.id),
                    escape(kind)
                ),
                "1".to_owned(),
            ),
            None => (
                format!("{{worker_id=\"{}\"}}", escape(&w.id)),
                "0".to_owned(),
            ),
        })
        .collect();
    metric(
        "otter_worker_claims_paused",
        "gauge",
        "1 for each worker that claims nothing now, with why (disk_low: less free space than OTTER_MIN_FREE_DISK).",
        &paused,
    );
    let gates: Vec<(String, String)> = s
        .rate_limits
        .iter()
        .map(|g| {
            (
                format!(
                    "{{provider=\"{}\",gate=\"{}\"}}",
                    escape(&g.provider),
                    escape(&g.gate)
                ),
                format!("{:.3}", g.until.timestamp_millis() as f64 / 1000.0),
            )
        })
        .collect();
    metric(
        "otter_rate_limit_gates_shut",
        "gauge",
        "Model providers (and keys) rate limited now: their jobs wait for the gate to open.",
        &plain(s.rate_limits.len().to_string()),
    );
    metric(
        "otter_rate_limit_gate_opens_at_seconds",
        "gauge",
        "When each shut gate opens (Unix time).",
        &gates,
    );
    out
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
