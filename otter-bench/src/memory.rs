//! Figure 8 (issue 14, "Hardening", part 3): bounded memory, whatever the output. Each row is
//! one hostile case, run against a fresh `otter-server` (and `otter-worker`) process, and
//! reports how much the process grew: its peak (VmHWM, or the largest VmRSS sampled while the
//! case lasts) minus its VmRSS just before, and what it still holds afterwards.
//!
//! - **Worker flood:** vibe prints `--flood-lines` empty lines as fast as it can (a script in
//!   place of vibe: `head -c N /dev/zero | tr '\0' '\n'`). The worker reads them all at once,
//!   far faster than PostgreSQL stores them, so what waits is bounded only by the run's output
//!   budget. Sampled for `--flood-secs`, then the stack is stopped (storing millions of rows
//!   is the ingest figure's business, not this one's).
//! - **Command floods:** `POST /v1/workspaces/{id}/command` with
//!   `head -c 8000000 /dev/zero | tr '\0' '\n'` (8 M empty lines) and with `yes` until its
//!   5 s timeout.
//! - **Stalled SSE clients:** a job with 300 lines of 256 KiB; ten clients open its stream
//!   (`GET /v1/events/stream?job_id=`) and never read (4 KiB receive buffers), once after the
//!   lines were written (replay) and once before (live broadcast).
//! - **One page:** `GET /v1/jobs/{id}/events?limit=1000` of that job, read whole.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use otter_core::db::events;
use otter_core::model::{JobId, NewEvent, OutputStream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::Opts;
use crate::common::{Row, Section, Stack, Target, WorkerSpec, hwm_bytes, reset_hwm, rss_bytes};

/// Lines and their size in the SSE cases.
const BIG_LINES: usize = 300;
const BIG_LINE_BYTES: usize = 256 * 1024;
/// Stalled clients in the SSE cases.
const STALLED: usize = 10;

/// Runs figure 8.
pub(crate) async fn run(opts: &Opts) -> Result<Section> {
    // One row per case: its peak, against the bound it must stay within; then what the
    // process still held once the case was over.
    let case = |name: &str, bound: f64| {
        (
            Row::new(name, "MB", Target::Max(bound), &format!("≤ {bound} MB")),
            Row::new(
                &format!("{name}: kept after"),
                "MB",
                Target::Info,
                "reported",
            ),
        )
    };
    let mut cases = [
        case(
            &format!("worker: vibe prints {} empty lines", opts.flood_lines),
            150.0,
        ),
        case("server: command printing 8 M empty lines", 40.0),
        case("server: command `yes` for 5 s", 40.0),
        case(
            &format!("server: {STALLED} stalled SSE clients, replay of 300 × 256 KiB lines"),
            100.0,
        ),
        case(
            &format!("server: {STALLED} stalled SSE clients, 300 × 256 KiB lines written live"),
            100.0,
        ),
        case("server: one `GET …/events?limit=1000` of them", 40.0),
    ];
    let runs = opts.memory_runs.max(1);
    for run in 0..runs {
        for (i, (peak_row, kept_row)) in cases.iter_mut().enumerate() {
            let (peak, kept) = match i {
                0 => worker_flood(opts).await?,
                1 => command_flood(r"head -c 8000000 /dev/zero | tr '\0' '\n'", 60).await?,
                2 => command_flood("yes", 5).await?,
                3 => stalled_clients(false).await?,
                4 => stalled_clients(true).await?,
                _ => one_page().await?,
            };
            report(run, &peak_row.metric, peak, kept);
            peak_row.otter.push(peak);
            kept_row.otter.push(kept);
        }
    }
    let rows = cases.into_iter().flat_map(|(a, b)| [a, b]).collect();
    Ok(Section {
        title: "8. Bounded memory (issue 14)".into(),
        rows,
        notes: vec![format!(
            "Each case runs against fresh release `otter-server`/`otter-worker` processes. Otter's figure: the process's peak \
             (VmHWM, or for the stalled clients the largest VmRSS sampled over 6 s) minus its VmRSS just before the case; \
             \"kept after\": VmRSS 2 s after the case ended (clients gone, command answered), minus the same baseline. \
             Worker flood: a script in place of vibe prints the lines with `head -c N /dev/zero | tr '\\0' '\\n'`; the worker \
             is sampled for {} s, then stopped. SSE: 10 raw HTTP/1.1 clients with 4 KiB receive buffers send the request and \
             never read. Runs: {runs}.",
            opts.flood_secs
        )],
    })
}

fn report(run: usize, what: &str, peak: f64, kept: f64) {
    eprintln!("[memory] run {run}: {what}: peak +{peak:.1} MB, kept +{kept:.1} MB");
}

/// VmRSS in MB.
fn rss_mb(pid: u32) -> Result<f64> {
    Ok(rss_bytes(pid)? / 1e6)
}

/// Peak growth and what is kept, of the worker while vibe floods empty lines.
async fn worker_flood(opts: &Opts) -> Result<(f64, f64)> {
    let mut stack = Stack::start(&[]).await?;
    let script = stack.env.dir.join("flood-vibe.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'vibe 3.0.3'; exit 0; }}\nhead -c {} /dev/zero | tr '\\0' '\\n'\n",
            opts.flood_lines
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let spec = WorkerSpec {
        concurrency: 1,
        env: vec![("OTTER_VIBE_BIN".into(), script.display().to_string())],
    };
    stack.add_worker(&spec, 0)?;
    let ws = stack.workspace("flood").await?;
    // The worker is up and idle (it asked `vibe --version` at start).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = stack.workers[0].pid();
    reset_hwm(pid);
    let before = rss_mb(pid)?;
    stack.submit(&ws).await?;
    let until = Instant::now() + Duration::from_secs(opts.flood_secs);
    let mut peak = before;
    while Instant::now() < until {
        peak = peak.max(rss_mb(pid)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = peak.max(hwm_bytes(pid)? / 1e6);
    let now = rss_mb(pid)?;
    Ok((peak - before, now - before))
}

/// Peak growth and what is kept, of the server while one command floods its output.
async fn command_flood(command: &str, timeout_secs: u64) -> Result<(f64, f64)> {
    let stack = Stack::start(&[]).await?;
    let ws = stack.workspace("cmd").await?;
    // One small command first, so that what every command costs is in the baseline.
    let url = format!("{}/v1/workspaces/{ws}/command", stack.base);
    stack
        .http
        .post(&url)
        .json(&serde_json::json!({"command": "true"}))
        .send()
        .await?
        .error_for_status()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = stack.server.pid();
    reset_hwm(pid);
    let before = rss_mb(pid)?;
    let answer: serde_json::Value = stack
        .http
        .post(&url)
        .json(&serde_json::json!({"command": command, "timeout_secs": timeout_secs}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let peak = hwm_bytes(pid)? / 1e6;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = rss_mb(pid)?;
    eprintln!(
        "[memory] `{command}`: stdout {} bytes, truncated {}, exit {}, timed out {}",
        answer["stdout"].as_str().map_or(0, str::len),
        answer["truncated"],
        answer["exit_code"],
        answer["timed_out"]
    );
    Ok((peak - before, kept - before))
}

/// A queued job (no worker runs it) of a fresh stack.
async fn job(stack: &Stack) -> Result<JobId> {
    let ws = stack.workspace("sse").await?;
    stack.submit(&ws).await?.parse().context("job id")
}

/// Appends 300 lines of 256 KiB to `job`, ten to a transaction.
async fn write_big_lines(stack: &Stack, job: JobId) -> Result<()> {
    let line = "x".repeat(BIG_LINE_BYTES);
    for _ in 0..BIG_LINES / 10 {
        let batch: Vec<NewEvent> = (0..10)
            .map(|_| NewEvent::output(OutputStream::Stdout, line.clone(), None))
            .collect();
        let mut tx = stack.pool.begin().await?;
        events::append(&mut tx, job, &batch).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A client that asks for `path` and never reads the answer.
async fn stalled_client(base: &str, path: &str) -> Result<TcpStream> {
    let addr = base.trim_start_matches("http://");
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(addr.parse()?).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    Ok(stream)
}

/// Peak growth and what is kept, of the server while ten clients stall on a job's stream of
/// big lines: written before they connect (`live` false: they replay them) or after.
async fn stalled_clients(live: bool) -> Result<(f64, f64)> {
    let stack = Stack::start(&[]).await?;
    let job = job(&stack).await?;
    if !live {
        write_big_lines(&stack, job).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = stack.server.pid();
    let before = rss_mb(pid)?;
    let path = format!("/v1/events/stream?job_id={job}");
    let mut clients = Vec::new();
    for _ in 0..STALLED {
        clients.push(stalled_client(&stack.base, &path).await?);
    }
    if live {
        // Connected and replayed (one event): now the lines come through the live feed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        write_big_lines(&stack, job).await?;
    }
    let until = Instant::now() + Duration::from_secs(6);
    let mut peak = before;
    while Instant::now() < until {
        peak = peak.max(rss_mb(pid)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(clients);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = rss_mb(pid)?;
    Ok((peak - before, kept - before))
}

/// Peak growth and what is kept, of the server answering one page of a job of big lines.
async fn one_page() -> Result<(f64, f64)> {
    let stack = Stack::start(&[]).await?;
    let job = job(&stack).await?;
    write_big_lines(&stack, job).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = stack.server.pid();
    reset_hwm(pid);
    let before = rss_mb(pid)?;
    let body = stack
        .http
        .get(format!("{}/v1/jobs/{job}/events?limit=1000", stack.base))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let peak = hwm_bytes(pid)? / 1e6;
    let page: serde_json::Value = serde_json::from_slice(&body)?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    if items == 0 {
        bail!("the page was empty");
    }
    eprintln!(
        "[memory] one page: {items} events, {} bytes, truncated {}",
        body.len(),
        page["truncated"]
    );
    drop(body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = rss_mb(pid)?;
    Ok((peak - before, kept - before))
}
