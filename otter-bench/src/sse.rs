//! Figure 4: SSE fan-out. N clients each follow one of J running jobs on
//! `GET /v1/events/stream?job_id=`, plus one unfiltered client; a producer appends events to the
//! jobs at a fixed total rate through `otter_append_events` (as a worker's sink does), each
//! carrying its send time and its number within its job. The load generator is this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use otter_core::db::events;
use otter_core::model::{JobId, NewEvent, kinds};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::Opts;
use crate::common::{Row, Section, Stack, Target, pct, rss_bytes, unix_ns};

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    events: usize,
    in_order: bool,
    ended: bool,
    latencies_ms: Vec<f32>,
}

fn number_after(line: &str, key: &str) -> Option<u128> {
    let at = line.find(key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One SSE client (HTTP/1.0, so the body is not chunked). Stops at `event: end`, when `stop`
/// reaches zero (the unfiltered client) or when `expect` events arrived with `stop`.
async fn client(
    addr: String,
    query: String,
    connected: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    unfiltered_total: Option<Arc<AtomicUsize>>,
) -> Result<Seen> {
    let permit = gate.acquire_owned().await?;
    let mut stream = TcpStream::connect(&addr).await?;
    stream
        .write_all(
            format!("GET /v1/events/stream{query} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut lines = BufReader::new(stream).lines();
    // Status line and headers.
    let status = lines.next_line().await?.context("no status line")?;
    if !status.contains(" 200") {
        bail!("stream refused: {status}");
    }
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            break;
        }
    }
    connected.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut seen = Seen {
        in_order: true,
        ..Seen::default()
    };
    let mut next_n: u128 = 0;
    let mut last_id: u128 = 0;
    let mut event_kind_end = false;
    while let Some(line) = lines.next_line().await? {
        if let Some(kind) = line.strip_prefix("event: ") {
            event_kind_end = kind == "end";
            continue;
        }
        if let Some(id) = line.strip_prefix("id: ") {
            let id: u128 = id.trim().parse().unwrap_or(0);
            if id <= last_id {
                seen.in_order = false;
            }
            last_id = id;
            continue;
        }
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if event_kind_end {
            seen.ended = true;
            break;
        }
        let (Some(n), Some(t)) = (
            number_after(data, "\"bench_n\":"),
            number_after(data, "\"bench_t\":"),
        ) else {
            continue;
        };
        let now = unix_ns();
        seen.events += 1;
        seen.latencies_ms
            .push(((now.saturating_sub(t)) as f64 / 1e6) as f32);
        match &unfiltered_total {
            None => {
                if n != next_n {
                    seen.in_order = false;
                }
                next_n = n + 1;
            }
            Some(left) => {
                if left.fetch_sub(1, Ordering::Relaxed) <= 1 {
                    seen.ended = true;
                    break;
                }
            }
        }
    }
    Ok(seen)
}

/// Runs figure 4.
pub(crate) async fn run(opts: &Opts) -> Result<Section> {
    let mut lat_p50 = Row::new("Delivery latency p50", "ms", Target::Info, "reported");
    let mut lat_p99 = Row::new("Delivery latency p99", "ms", Target::Max(100.0), "≤ 100 ms");
    let mut complete = Row::new(
        "Clients that got every event of their job, in order",
        "%",
        Target::Min(100.0),
        "100 %",
    );
    let mut per_client = Row::new(
        "Server memory per client",
        "KB",
        Target::Max(25.0),
        "≤ 25 KB",
    );
    let mut kept = Row::new(
        "Server memory kept after the clients left",
        "MB",
        Target::Info,
        "given back",
    )
    .raw("idle before the clients");
    let mut rates = Vec::new();
    let (c, j) = (opts.clients, opts.sse_jobs.max(1));
    for run in 0..opts.runs.min(2) {
        let stack = Stack::start(&[]).await?;
        let addr = stack.base.trim_start_matches("http://").to_owned();
        // J running jobs, each in its own workspace.
        let job_ids: Vec<JobId> = sqlx::query_scalar(
            "WITH w AS (INSERT INTO workspaces (id, name, path, vibe_home)
                        SELECT gen_random_uuid(), 'sse', '/tmp/otter-bench-sse/' || gen_random_uuid(), '/tmp/x'
                        FROM generate_series(1, $1) RETURNING id)
             INSERT INTO jobs (id, workspace_id, prompt, status, max_attempts, attempts, worker_id, lease_token, lease_expires_at, started_at)
             SELECT gen_random_uuid(), w.id, 'sse', 'running', 3, 1, 'bench', gen_random_uuid(), now() + interval '1 hour', now() FROM w
             RETURNING id",
        )
        .bind(j as i64)
        .fetch_all(&stack.pool)
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = stack.server.pid();
        let idle = rss_bytes(pid)?;
        let connected = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(256));
        let total_events = (opts.sse_rate * opts.sse_secs as f64) as usize;
        let unfiltered_left = Arc::new(AtomicUsize::new(total_events));
        let mut clients = Vec::with_capacity(c + 1);
        clients.push(tokio::spawn(client(
            addr.clone(),
            String::new(),
            connected.clone(),
            gate.clone(),
            Some(unfiltered_left.clone()),
        )));
        // Give the unfiltered client its head start (it starts at the next new event).
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..c {
            clients.push(tokio::spawn(client(
                addr.clone(),
                format!("?job_id={}", job_ids[i % j]),
                connected.clone(),
                gate.clone(),
                None,
            )));
        }
        let t = Instant::now();
        while connected.load(Ordering::Relaxed) < c + 1 {
            if t.elapsed() > Duration::from_secs(300) {
                bail!(
                    "only {} of {} clients connected",
                    connected.load(Ordering::Relaxed),
                    c + 1
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_secs = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let with_clients = rss_bytes(pid)?;
        // The producer: `sse_rate` events/s over the J jobs, round robin.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.sse_rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut seq = vec![0u64; j];
        let mut peak = with_clients;
        let began = Instant::now();
        for k in 0..total_events {
            tick.tick().await;
            let job = k % j;
            let payload = serde_json::json!({"stream": "stdout", "bench_n": seq[job], "bench_t": unix_ns().to_string().parse::<u64>().unwrap_or(0)});
            seq[job] += 1;
            let mut tx = stack.pool.begin().await?;
            events::append(
                &mut tx,
                job_ids[job],
                &[NewEvent::new(kinds::OUTPUT_CHUNK, payload)],
            )
            .await?;
            tx.commit().await?;
            if k % 200 == 0 {
                peak = peak.max(rss_bytes(pid)?);
            }
        }
        let produce_secs = began.elapsed().as_secs_f64();
        rates.push(total_events as f64 / produce_secs);
        // End every job: its followers get `event: end`.
        for id in &job_ids {
            let mut tx = stack.pool.begin().await?;
            events::append(
                &mut tx,
                *id,
                &[NewEvent::new(kinds::JOB_SUCCEEDED, serde_json::json!({}))],
            )
            .await?;
            tx.commit().await?;
        }
        let mut lat: Vec<f64> = Vec::new();
        let mut ok = 0usize;
        let mut failures = 0usize;
        let mut unfiltered_events = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        for (i, h) in clients.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left.max(Duration::from_millis(1)), h).await {
                Ok(Ok(Ok(seen))) => {
                    lat.extend(seen.latencies_ms.iter().map(|l| f64::from(*l)));
                    if i == 0 {
                        unfiltered_events = seen.events;
                        if seen.events == total_events && seen.in_order {
                            ok += 1;
                        }
                    } else {
                        let job = (i - 1) % j;
                        if seen.ended && seen.in_order && seen.events as u64 == seq[job] {
                            ok += 1;
                        }
                    }
                }
                _ => failures += 1,
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss_bytes(pid)?;
        lat_p50.otter.push(pct(&mut lat, 50.0));
        lat_p99.otter.push(pct(&mut lat, 99.0));
        complete.otter.push(ok as f64 * 100.0 / (c + 1) as f64);
        per_client.otter.push((peak - idle) / c as f64 / 1e3);
        kept.otter.push((after - idle) / 1e6);
        kept.raw.push(idle / 1e6);
        eprintln!(
            "[sse] run {run}: {c}+1 clients connected in {connect_secs:.1} s; idle {:.1} MB, with clients {:.1} MB, peak {:.1} MB, after {:.1} MB; \
             p50 {:.1} ms p99 {:.1} ms; complete {ok}/{} (failures {failures}, unfiltered got {unfiltered_events}/{total_events}); produced {:.0} ev/s",
            idle / 1e6,
            with_clients / 1e6,
            peak / 1e6,
            after / 1e6,
            lat_p50.otter[run],
            lat_p99.otter[run],
            c + 1,
            rates[run]
        );
    }
    Ok(Section {
        title: "4. SSE fan-out".into(),
        rows: vec![lat_p50, lat_p99, complete, per_client, kept],
        notes: vec![format!(
            "{c} clients on `GET /v1/events/stream?job_id=…` spread over {j} running jobs, plus 1 unfiltered client; a producer appends {} events/s in total \
             (round robin over the jobs, one `otter_append_events` transaction each, as a worker's sink does) for {} s (achieved: {}), then ends every job. \
             Expected deliveries ≈ {} /s. Latency: producer's clock before the append → client's clock when the `data:` line is read (same machine, same clock). \
             Memory: server VmRSS peak during the run minus its idle RSS before the clients, per client; \"kept\" = RSS 3 s after every client left minus idle. \
             Client (this bench, tokio, raw HTTP/1.0) and server share the same 2 cores with PostgreSQL. Runs: {}.",
            opts.sse_rate,
            opts.sse_secs,
            rates
                .iter()
                .map(|r| format!("{r:.0}/s"))
                .collect::<Vec<_>>()
                .join(", "),
            (opts.sse_rate * c as f64 / j as f64) as u64 + opts.sse_rate as u64,
            opts.runs.min(2)
        )],
    })
}
