//! Figures 1, 2, 3, 5 and 7: dispatch latency, job throughput, output ingest, API, idle cost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;

use otter_core::db::jobs;
use otter_core::model::{NewEvent, OutputStream};
use otter_core::vibe::parse_line;

use crate::Opts;
use crate::common::{
    Row, Section, Stack, Target, WorkerSpec, cpu_ticks, pct, rss_bytes, unix_ns, vibe_args,
};
use crate::cpu::{Meter, Part, PerUnit, Pids};

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_owned(), v.to_string())
}

/// Reads `<job> <ns>` lines.
fn read_started(path: &std::path::Path) -> HashMap<String, u128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (job, ns) = l.split_once(' ')?;
            Some((job.to_owned(), ns.parse().ok()?))
        })
        .collect()
}

/// Spawns the stand-in directly `n` times, `parallel` at a time, reading its stdout to the end
/// and reaping it. Returns (spawns per second, spawn→started latencies in ms).
async fn raw_spawns(
    n: usize,
    parallel: usize,
    env: &[(String, String)],
    dir: &std::path::Path,
) -> Result<(f64, Vec<f64>)> {
    let vibe = crate::common::bin("otter-fake-vibe")?;
    let started_file = dir.join(format!("raw-started-{}", unix_ns()));
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let next = next.clone();
        let vibe = vibe.clone();
        let env = env.to_vec();
        let started_file = started_file.clone();
        let dir = dir.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let out = dir.join(format!("raw-run-{i}"));
                std::fs::create_dir_all(&out)?;
                let key = format!("raw-{i}");
                let t0 = unix_ns();
                let mut child = tokio::process::Command::new(&vibe)
                    .args(vibe_args(&out))
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env("OTTER_JOB_ID", &key)
                    .env("FAKE_VIBE_STARTED_FILE", &started_file)
                    .env("MISTRAL_API_KEY", "bench")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .process_group(0)
                    .spawn()?;
                let mut stdout = child.stdout.take().context("stdout")?;
                let mut stderr = child.stderr.take().context("stderr")?;
                let mut a = Vec::new();
                let mut b = Vec::new();
                let (r1, r2) = tokio::join!(stdout.read_to_end(&mut a), stderr.read_to_end(&mut b));
                r1?;
                r2?;
                child.wait().await?;
                lat.push((key, t0));
            }
        }));
    }
    let mut t0s = Vec::new();
    for t in tasks {
        t0s.extend(t.await??);
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    let started = read_started(&started_file);
    let lat = t0s
        .iter()
        .filter_map(|(k, t0)| started.get(k).map(|s| (*s as f64 - *t0 as f64) / 1e6))
        .collect();
    Ok((rate, lat))
}

/// Figure 1: `POST /v1/prompts` answered → the stand-in's process started, one idle worker.
pub(crate) async fn dispatch(opts: &Opts) -> Result<Section> {
    let mut p50 = Row::new("Dispatch latency p50", "ms", Target::Max(5.0), "≤ 5 ms")
        .raw("spawn → started, stand-in run directly");
    let mut p99 = Row::new("Dispatch latency p99", "ms", Target::Max(25.0), "≤ 25 ms")
        .raw("spawn → started, stand-in run directly");
    let mut fair50 = Row::new(
        "Dispatch latency p50, fair shares",
        "ms",
        Target::Max(5.0),
        "≤ 5 ms",
    )
    .raw("a job without a project, same run");
    let mut fair99 = Row::new(
        "Dispatch latency p99, fair shares",
        "ms",
        Target::Max(25.0),
        "≤ 25 ms",
    )
    .raw("a job without a project, same run");
    let n = opts.jobs;
    for run in 0..opts.runs {
        let dir = std::env::temp_dir().join(format!("otter-bench-dispatch-{}", unix_ns()));
        std::fs::create_dir_all(&dir)?;
        // The stand-in runs as the job user when the bench (so the worker) is root: it must be
        // able to write its start times here.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        let started_file = dir.join("started");
        let stand_in = vec![
            kv("FAKE_VIBE_SCENARIO", "exit:0"),
            kv("FAKE_VIBE_STARTED_FILE", started_file.display()),
        ];
        let stack = Stack::start(&[WorkerSpec {
            concurrency: 1,
            env: stand_in.clone(),
        }])
        .await?;
        let ws = stack.workspace("dispatch").await?;
        let fair_ws = fair_shares_workspace(&stack).await?;
        // Jobs without a project and jobs of the limited project, alternately.
        let (mut plain, mut fair) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..2 * (n + 20) {
            let of_project = i % 2 == 1;
            let id = stack
                .submit(if of_project { &fair_ws } else { &ws })
                .await?;
            let at = unix_ns();
            // Wait until the job has ended and the worker is idle again.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1::uuid")
                        .bind(&id)
                        .fetch_one(&stack.pool)
                        .await?;
                if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("dispatch job {id} did not finish");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            if i >= 40 {
                if of_project { &mut fair } else { &mut plain }.push((id, at));
            }
        }
        let started = read_started(&started_file);
        let latencies = |answered: &[(String, u128)]| -> Result<Vec<f64>> {
            let lat: Vec<f64> = answered
                .iter()
                .filter_map(|(id, at)| started.get(id).map(|s| (*s as f64 - *at as f64) / 1e6))
                .collect();
            if lat.len() != n {
                bail!("only {} of {n} stand-in starts recorded", lat.len());
            }
            Ok(lat)
        };
        let (mut lat, mut fair_lat) = (latencies(&plain)?, latencies(&fair)?);
        let (_, mut raw) = raw_spawns(n.min(500), 1, &stand_in, &dir).await?;
        p50.otter.push(pct(&mut lat, 50.0));
        p99.otter.push(pct(&mut lat, 99.0));
        p50.raw.push(pct(&mut raw, 50.0));
        p99.raw.push(pct(&mut raw, 99.0));
        fair50.otter.push(pct(&mut fair_lat, 50.0));
        fair99.otter.push(pct(&mut fair_lat, 99.0));
        fair50.raw.push(p50.otter[run]);
        fair99.raw.push(p99.otter[run]);
        eprintln!(
            "[dispatch] run {run}: p50 {:.2} ms p99 {:.2} ms (raw {:.2}/{:.2}); fair shares p50 {:.2} ms p99 {:.2} ms",
            p50.otter[run],
            p99.otter[run],
            p50.raw[run],
            p99.raw[run],
            fair50.otter[run],
            fair99.otter[run]
        );
        drop(stack);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Section {
        title: "1. Dispatch latency".into(),
        rows: vec![p50, p99, fair50, fair99],
        notes: vec![
            format!(
                "{n} jobs per run, one at a time, one worker (concurrency 1) idle in its blocking pop; stand-in `exit:0`. \
                 Otter: time from the HTTP response of `POST /v1/prompts` (taken by the client) to the first instruction of the stand-in's `main` \
                 (`FAKE_VIBE_STARTED_FILE`). Raw: the same stand-in spawned directly by the bench (`tokio::process`, `process_group(0)`), from just before `spawn()` to its `main` \
                 (up to 500 spawns per run). Latency is the stand-in's own start cost plus Otter's path: enqueue → Redis `BZPOPMIN` wake-up → claim transaction → workspace read, `AGENTS.md` write → spawn."
            ),
            format!(
                "Fair shares: {n} more jobs per run, submitted alternately with those, to a workspace of a project with `max_running: 1` \
                 that also holds {FAIR_BACKLOG} paused queued jobs: each submit probes the project's last turn, each claim locks the project's row \
                 and counts its running jobs. Its raw column is the job without a project of the same run (its ratio is what fair shares cost)."
            ),
        ],
    })
}

/// Queued jobs the fair-shares project of figure 1 holds (paused: never claimed).
const FAIR_BACKLOG: i64 = 1000;

/// A workspace of a project with `max_running: 1` whose other workspace holds
/// [`FAIR_BACKLOG`] paused jobs, far into their turns.
async fn fair_shares_workspace(stack: &Stack) -> Result<String> {
    let project = crate::common::post_for_id(
        &stack.http,
        &format!("{}/v1/projects", stack.base),
        &serde_json::json!({"name": "fair", "max_running": 1}),
    )
    .await?;
    let mut workspaces = Vec::new();
    for name in ["fair", "fair-backlog"] {
        workspaces.push(stack.workspace_of(name, Some(&project)).await?);
    }
    sqlx::query(
        "INSERT INTO jobs (id, workspace_id, project_id, prompt, priority, max_attempts, paused,
                           queue_at)
         SELECT gen_random_uuid(), $1::uuid, $2::uuid, 'backlog', 0, 1, true,
                now() + g * interval '1 hour'
         FROM generate_series(1, $3) g",
    )
    .bind(&workspaces[1])
    .bind(&project)
    .bind(FAIR_BACKLOG)
    .execute(&stack.pool)
    .await?;
    Ok(workspaces.swap_remove(0))
}

/// The stand-in's stdout lines for `env` (run once), as the sink stores them.
fn stand_in_events(env: &[(String, String)], dir: &std::path::Path) -> Result<Vec<NewEvent>> {
    let out = dir.join("floor-lines");
    std::fs::create_dir_all(&out)?;
    let run = std::process::Command::new(crate::common::bin("otter-fake-vibe")?)
        .args(vibe_args(&out))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("OTTER_JOB_ID", "floor")
        .env("MISTRAL_API_KEY", "bench")
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| NewEvent::output(OutputStream::Stdout, l.to_owned(), parse_line(l)))
        .collect())
}

/// Otter's database work for `n` jobs and nothing else, `parallel` at a time: per job the three
/// statements a worker and the server make (submit, claim, and the finish carrying the
/// stand-in's lines as its last batch), called in-process on the stack's database. Jobs per second.
async fn pg_floor(stack: &Stack, n: usize, parallel: usize, lines: Vec<NewEvent>) -> Result<f64> {
    let mut wss = Vec::new();
    for i in 0..parallel {
        let id: otter_core::model::WorkspaceId =
            stack.workspace(&format!("floor{i}")).await?.parse()?;
        wss.push(otter_core::db::workspaces::get(&stack.pool, id).await?);
    }
    // Encoded once, as the sink encodes each line before its batch is written.
    let lines = Arc::new(otter_core::db::events::encode(&lines));
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for ws in wss {
        let (pool, next, lines) = (stack.pool.clone(), next.clone(), lines.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let new = jobs::NewJob {
                    workspace: &ws,
                    prompt: "benchmark",
                    priority: 0,
                    max_attempts: 3,
                    parent_job_id: None,
                    limits: Default::default(),
                    model: None,
                };
                let job = jobs::insert(&pool, &new).await?;
                let jobs::Claim::Claimed { lease, .. } = jobs::claim(
                    &pool,
                    job.id,
                    &jobs::Claimant::new("floor", Duration::from_secs(30)),
                )
                .await?
                else {
                    bail!("floor job {} not claimed", job.id);
                };
                let finish = jobs::Finish {
                    // A job this short has all its lines in its last batch.
                    events: lines.to_vec(),
                    ..jobs::Finish::new(jobs::RunEnd::Succeeded, Some(0))
                };
                jobs::finish(&pool, &lease, &finish).await?;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / began.elapsed().as_secs_f64())
}

/// Medians over the jobs of the database: queued → started, started → last output line, last
/// line → end, from the events' `created_at`.
async fn job_phases(pool: &sqlx::PgPool) -> Result<String> {
    let (wait, run, end): (f64, f64, f64) = sqlx::query_as(
        "WITH t AS (
            SELECT job_id,
                   min(created_at) FILTER (WHERE kind = 'job_queued') AS queued,
                   min(created_at) FILTER (WHERE kind = 'job_started') AS started,
                   max(created_at) FILTER (WHERE kind = 'output_chunk') AS last_line,
                   max(created_at) FILTER (WHERE kind = 'job_succeeded') AS ended
            FROM events GROUP BY job_id)
         SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started - queued)) * 1000,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM last_line - started)) * 1000,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended - last_line)) * 1000
         FROM t",
    )
    .fetch_one(pool)
    .await?;
    let phases = format!(
        "queued → started {wait:.1} ms, started → last line {run:.1} ms, last line → end {end:.1} ms"
    );
    eprintln!("[throughput] {phases}");
    Ok(phases)
}

/// CPU per job of one throughput configuration, one entry per run.
#[derive(Default)]
struct CpuRuns {
    otter: Vec<PerUnit>,
    raw: Vec<PerUnit>,
    floor: Vec<PerUnit>,
}

/// The median of each part (and of the total and busy fraction) over runs.
fn median_cpu(runs: &[PerUnit]) -> PerUnit {
    let med = |f: &dyn Fn(&PerUnit) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        pct(&mut v, 50.0)
    };
    let parts = runs.first().map_or_else(Vec::new, |r| {
        r.parts
            .iter()
            .map(|(p, _)| (*p, med(&|u: &PerUnit| u.part(*p))))
            .collect()
    });
    PerUnit {
        parts,
        total: med(&|u: &PerUnit| u.total),
        busy: med(&|u: &PerUnit| u.busy),
    }
}

/// Figure 2: jobs/s, stand-in printing 20 lines, 1 and 3 workers (concurrency 8 each).
pub(crate) async fn throughput(opts: &Opts) -> Result<Section> {
    let lines = 18; // + the user message and the final answer = 20 lines
    let n = opts.throughput_jobs;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for workers in [1usize, 3] {
        let mut row = Row::new(
            &format!("Jobs/s, {workers} worker(s) × concurrency 8"),
            "jobs/s",
            Target::RatioMin(0.5),
            "≥ 0.5 × raw",
        )
        .raw("spawn+reap, 8 in parallel");
        let mut cpu_row = Row::new(
            &format!("CPU time per job, all processes, {workers} worker(s)"),
            "ms",
            Target::Info,
            "≤ 2 × raw for 0.5 ×",
        )
        .raw("per spawn+reap");
        let mut ceiling = Row::new(
            &format!("Ceiling from the stand-ins' and PostgreSQL's CPU alone, {workers} worker(s)"),
            "jobs/s",
            Target::Info,
            "reported",
        )
        .raw("spawn+reap, 8 in parallel");
        let mut cpu = CpuRuns::default();
        let mut per_job_events = Vec::new();
        let mut phases = Vec::new();
        let mut floor = Row::new(
            "Otter's database work alone, 8 in parallel",
            "jobs/s",
            Target::Info,
            "reported",
        )
        .raw("spawn+reap, 8 in parallel");
        for run in 0..opts.runs {
            let dir = std::env::temp_dir().join(format!("otter-bench-tp-{}", unix_ns()));
            std::fs::create_dir_all(&dir)?;
            let stand_in = vec![
                kv("FAKE_VIBE_SCENARIO", "flood"),
                kv("FAKE_VIBE_LINES", lines),
            ];
            let spec = WorkerSpec {
                concurrency: 8,
                env: stand_in.clone(),
            };
            let stack = Stack::start(&vec![spec; workers]).await?;
            let mut wss = Vec::new();
            for i in 0..64 {
                wss.push(stack.workspace(&format!("tp{i}")).await?);
            }
            let meter = Meter::start(Pids {
                server: Some(stack.server.pid()),
                workers: stack.workers.iter().map(|w| w.pid()).collect(),
            })?;
            let began = Instant::now();
            let next = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let http = stack.http.clone();
                let base = stack.base.clone();
                let wss = wss.clone();
                let next = next.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= n {
                            return Ok::<_, anyhow::Error>(());
                        }
                        crate::common::submit(&http, &base, &wss[i % wss.len()]).await?;
                    }
                }));
            }
            for t in tasks {
                t.await??;
            }
            stack
                .wait_status("succeeded", n as i64, Duration::from_secs(600))
                .await?;
            let rate = n as f64 / began.elapsed().as_secs_f64();
            let otter_cpu = meter.per_unit(n)?;
            let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&stack.pool)
                .await?;
            per_job_events.push(events as f64 / n as f64);
            phases.push(job_phases(&stack.pool).await?);
            drop(stack);
            let meter = Meter::start(Pids::default())?;
            let (raw, _) = raw_spawns(n, 8, &stand_in, &dir).await?;
            let raw_cpu = meter.per_unit(n)?;
            if workers == 1 {
                let floor_stack = Stack::start(&[]).await?;
                let lines = stand_in_events(&stand_in, &dir)?;
                let meter = Meter::start(Pids::default())?;
                let floor_rate = pg_floor(&floor_stack, n, 8, lines).await?;
                cpu.floor.push(meter.per_unit(n)?);
                drop(floor_stack);
                floor.otter.push(floor_rate);
                floor.raw.push(raw);
                eprintln!("[throughput] database work alone: {floor_rate:.0} jobs/s");
            }
            row.otter.push(rate);
            row.raw.push(raw);
            cpu_row.otter.push(otter_cpu.total);
            cpu_row.raw.push(raw_cpu.total);
            // The most Otter could do if its stand-ins and PostgreSQL had the cores to
            // themselves: a job costs at least their CPU time.
            let needed = otter_cpu.part(Part::StandIns) + otter_cpu.part(Part::PostgreSql);
            ceiling
                .otter
                .push(crate::cpu::cores() * 1000.0 / needed.max(f64::EPSILON));
            ceiling.raw.push(raw);
            eprintln!(
                "[throughput] {workers} worker(s) run {run}: {rate:.0} jobs/s, raw {raw:.0}/s; CPU per job {}; raw per spawn {}",
                otter_cpu.describe(),
                raw_cpu.describe()
            );
            cpu.otter.push(otter_cpu);
            cpu.raw.push(raw_cpu);
            let _ = std::fs::remove_dir_all(&dir);
        }
        notes.push(format!(
            "{workers} worker(s): {n} jobs per run over 64 workspaces, submitted by 16 concurrent clients; timed from the first submit until all {n} are `succeeded` \
             (every event is stored before a job is marked succeeded); {:.0} events stored per job (the stand-in's 20 stdout lines plus lifecycle events).",
            per_job_events.iter().sum::<f64>() / per_job_events.len().max(1) as f64
        ));
        notes.push(format!(
            "{workers} worker(s), where a job's time goes (medians of the jobs' event times, per run): {}.",
            phases.join("; ")
        ));
        notes.push(format!(
            "{workers} worker(s), CPU time per job (medians over runs; all cores): Otter {}; raw, per spawn+reap {}{}.",
            median_cpu(&cpu.otter).describe(),
            median_cpu(&cpu.raw).describe(),
            if cpu.floor.is_empty() {
                String::new()
            } else {
                format!("; database work alone {}", median_cpu(&cpu.floor).describe())
            }
        ));
        rows.push(row);
        if workers == 1 {
            rows.push(floor);
        }
        rows.push(cpu_row);
        rows.push(ceiling);
    }
    notes.push(
        "Database work alone: the same number of jobs, 8 at a time, each making only Otter's three database statements (`jobs::insert`, `jobs::claim`, \
         `jobs::finish` carrying the stand-in's 20 lines parsed as the sink does, as the worker's last batch), called in-process on a fresh database \
         with no server work, no worker and no process: the rate PostgreSQL alone allows this machine for the durable writes of a job. When the spawns and these \
         writes share the same cores, each job costs both, so Otter cannot exceed 1 / (1/database + 1/raw) jobs/s; the analysis below computes that bound.".into(),
    );
    notes.push(
        "Raw: the same stand-in (`flood`, 18 effects = 20 stdout lines, same arguments) spawned, its stdout and stderr read to the end and reaped by the bench, 8 at a time, same count, right after Otter's part of the run.".into(),
    );
    notes.push(
        "CPU time per job: user + system time from /proc over the stretch being timed, divided by the jobs (or spawns) done, summed over both cores. \
         Stand-ins: the processes the worker (or, raw, the bench) reaped; PostgreSQL: every `postgres` process plus the backends that exited; \
         kernel and other: the machine's busy time (/proc/stat, steal excluded) not in any of these. Background work of PostgreSQL (autovacuum, checkpoints) counts in whichever stretch it falls in. \
         Reaching 0.5 × the raw rate on saturated cores needs at most 2 × the raw CPU time per job. \
         Ceiling: the rate the cores would allow if a job cost only its stand-in's and PostgreSQL's CPU time in Otter's run (cores / (stand-ins + PostgreSQL)), \
         with no worker, server, Redis or load generator at all.".into(),
    );
    Ok(Section {
        title: "2. Job throughput".into(),
        rows,
        notes,
    })
}

/// Figure 3: one run flooding N lines; lines stored/s against `COPY` of the same rows.
pub(crate) async fn ingest(opts: &Opts) -> Result<Section> {
    let mut row = Row::new(
        "Lines stored per second",
        "lines/s",
        Target::RatioMin(0.5),
        "≥ 0.5 × COPY",
    )
    .raw("COPY of the same rows");
    let mut stall = Row::new(
        "Longest blocked write of the stand-in's stdout",
        "ms",
        Target::Max(100.0),
        "≤ 100 ms",
    );
    let lines = opts.lines;
    for run in 0..opts.ingest_runs.max(1) {
        let stall_file = std::env::temp_dir().join(format!("otter-bench-stall-{}", unix_ns()));
        let stack = Stack::start(&[WorkerSpec {
            concurrency: 1,
            env: vec![
                kv("FAKE_VIBE_SCENARIO", "flood"),
                kv("FAKE_VIBE_LINES", lines),
                kv("FAKE_VIBE_STALL_FILE", stall_file.display()),
            ],
        }])
        .await?;
        let ws = stack.workspace("ingest").await?;
        let id = stack.submit(&ws).await?;
        stack
            .wait_status("succeeded", 1, Duration::from_secs(1200))
            .await?;
        let (count, secs): (i64, f64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE job_id = $1::uuid),
                    extract(epoch FROM finished_at - started_at)::float8
             FROM jobs WHERE id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&stack.pool)
        .await?;
        let otter = count as f64 / secs;
        // Raw: the same rows, COPY'd into a table shaped like `events` (same indexes).
        let mut conn = stack.pool.acquire().await?;
        let mut out = conn
            .copy_out_raw(&format!(
                "COPY (SELECT id, job_id, workspace_id, project_id, seq, kind, payload FROM events WHERE job_id = '{id}') TO STDOUT"
            ))
            .await?;
        let mut data = Vec::new();
        while let Some(chunk) = out.try_next().await? {
            data.extend_from_slice(&chunk);
        }
        drop(out);
        sqlx::query("CREATE TABLE bench_copy (LIKE events INCLUDING ALL)")
            .execute(&mut *conn)
            .await?;
        let began = Instant::now();
        let mut copy = conn
            .copy_in_raw(
                "COPY bench_copy (id, job_id, workspace_id, project_id, seq, kind, payload) FROM STDIN",
            )
            .await?;
        for chunk in data.chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        let copied = copy.finish().await?;
        let raw = copied as f64 / began.elapsed().as_secs_f64();
        let stalled_us: f64 = std::fs::read_to_string(&stall_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0.0);
        row.otter.push(otter);
        row.raw.push(raw);
        stall.otter.push(stalled_us / 1000.0);
        eprintln!(
            "[ingest] run {run}: {count} events in {secs:.2} s = {otter:.0}/s, COPY {raw:.0}/s, longest write {:.1} ms",
            stalled_us / 1000.0
        );
        drop(conn);
        drop(stack);
        let _ = std::fs::remove_file(&stall_file);
    }
    Ok(Section {
        title: "3. Output ingest".into(),
        rows: vec![row, stall],
        notes: vec![format!(
            "One job per run whose stand-in (`flood`, `FAKE_VIBE_LINES={lines}`) prints {lines} effect lines as fast as it can (flushed every 64 lines). \
             Otter: events stored for the job / (finished_at − started_at) of the job, i.e. including spawn and finish. \
             Raw: the same rows (id, job_id, workspace_id, project_id, seq, kind, payload) copied out and `COPY`'d back into a table `LIKE events INCLUDING ALL` (same indexes), one connection, in the same run. \
             Stall: the stand-in measures every `write`+`flush` of its stdout (`FAKE_VIBE_STALL_FILE`); a reader that stops reading shows up as a long blocked write."
        )],
    })
}

/// Runs `f` in a closed loop from `conc` tasks for `dur`; returns (requests/s, latencies ms, errors).
async fn closed_loop<F, Fut>(conc: usize, dur: Duration, f: F) -> Result<(f64, Vec<f64>, u64)>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let began = Instant::now();
    let deadline = began + dur;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let f = f.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                if f().await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let rate = lat.len() as f64 / began.elapsed().as_secs_f64();
    Ok((rate, lat, errors.load(Ordering::Relaxed)))
}

/// Issues `f` at a fixed `rate` for `dur` (open loop); returns latencies in ms and errors.
async fn fixed_rate<F, Fut>(rate: f64, dur: Duration, f: F) -> Result<(Vec<f64>, u64)>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let n = (rate * dur.as_secs_f64()) as usize;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        tick.tick().await;
        let scheduled = Instant::now();
        let f = f.clone();
        set.spawn(async move {
            let ok = f().await.is_ok();
            (scheduled.elapsed().as_secs_f64() * 1e3, ok)
        });
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        let (l, ok) = r?;
        lat.push(l);
        if !ok {
            errors += 1;
        }
    }
    Ok((lat, errors))
}

/// Figure 5: enqueue rate; `GET /v1/jobs/{id}` against a trivial route; p99 at a fixed rate.
pub(crate) async fn api(opts: &Opts) -> Result<Section> {
    let dur = Duration::from_secs(opts.api_secs);
    let conc = 32;
    let mut enqueue = Row::new(
        "`POST /v1/prompts` enqueues/s",
        "req/s",
        Target::Min(2000.0),
        "≥ 2,000/s",
    )
    .raw("trivial route");
    let mut get_job = Row::new(
        "`GET /v1/jobs/{id}` req/s",
        "req/s",
        Target::Info,
        "vs trivial route",
    )
    .raw("trivial route");
    let mut p99 = Row::new(
        &format!("`GET /v1/jobs/{{id}}` p99 at {} req/s", opts.api_rate),
        "ms",
        Target::Info,
        "reported",
    )
    .raw("trivial route at the same rate");
    let mut errors_total = 0;
    for run in 0..opts.runs {
        let stack = Stack::start(&[]).await?;
        let ws = stack.workspace("api").await?;
        let http = stack.http.clone();
        let trivial_url = format!("{}/v1/bench-trivial-404", stack.base);
        let trivial = {
            let http = http.clone();
            let url = trivial_url.clone();
            move || {
                let http = http.clone();
                let url = url.clone();
                async move {
                    let r = http.get(&url).send().await?;
                    let _ = r.bytes().await?;
                    Ok(())
                }
            }
        };
        let post = {
            let http = http.clone();
            let base = stack.base.clone();
            let ws = ws.clone();
            move || {
                let http = http.clone();
                let base = base.clone();
                let ws = ws.clone();
                async move {
                    crate::common::submit(&http, &base, &ws).await?;
                    Ok(())
                }
            }
        };
        // Warm-up.
        closed_loop(conc, Duration::from_millis(500), trivial.clone()).await?;
        let (post_rate, _, e1) = closed_loop(conc, dur, post).await?;
        let (triv_rate, _, e2) = closed_loop(conc, dur, trivial.clone()).await?;
        let job_id = stack.submit(&ws).await?;
        let job_url = format!("{}/v1/jobs/{job_id}", stack.base);
        let get = {
            let http = http.clone();
            move || {
                let http = http.clone();
                let url = job_url.clone();
                async move {
                    let r = http.get(&url).send().await?.error_for_status()?;
                    let _ = r.bytes().await?;
                    Ok(())
                }
            }
        };
        let (get_rate, _, e3) = closed_loop(conc, dur, get.clone()).await?;
        let (triv_rate2, _, e4) = closed_loop(conc, dur, trivial.clone()).await?;
        let (mut get_lat, e5) = fixed_rate(opts.api_rate, dur, get).await?;
        let (mut triv_lat, e6) = fixed_rate(opts.api_rate, dur, trivial).await?;
        errors_total += e1 + e2 + e3 + e4 + e5 + e6;
        enqueue.otter.push(post_rate);
        enqueue.raw.push(triv_rate);
        get_job.otter.push(get_rate);
        get_job.raw.push(triv_rate2);
        p99.otter.push(pct(&mut get_lat, 99.0));
        p99.raw.push(pct(&mut triv_lat, 99.0));
        eprintln!(
            "[api] run {run}: enqueue {post_rate:.0}/s (trivial {triv_rate:.0}/s), get {get_rate:.0}/s (trivial {triv_rate2:.0}/s), p99 {:.2} ms (trivial {:.2})",
            p99.otter[run], p99.raw[run]
        );
    }
    Ok(Section {
        title: "5. API".into(),
        rows: vec![enqueue, get_job, p99],
        notes: vec![format!(
            "Closed loop, {conc} concurrent keep-alive connections from the bench's own client (reqwest) for {} s per measurement; the client shares the 2 cores with the server, PostgreSQL and Redis, so every rate is a floor. \
                 Trivial route: an unknown path of the same server (`GET /v1/bench-trivial-404`: routing, middleware, a 404 JSON body; no database). \
                 Fixed rate: an open-loop generator issuing {} req/s for {} s, latency counted from the scheduled send. Errors over all runs: {errors_total}.",
            opts.api_secs, opts.api_rate, opts.api_secs
        )],
    })
}

/// Figure 7: idle RSS and CPU of the server and the worker.
pub(crate) async fn idle(opts: &Opts) -> Result<Section> {
    let mut srv_rss = Row::new("otter-server idle RSS", "MB", Target::Max(30.0), "≤ 30 MB");
    let mut wrk_rss = Row::new("otter-worker idle RSS", "MB", Target::Max(30.0), "≤ 30 MB");
    let mut srv_cpu = Row::new(
        "otter-server idle CPU",
        "%",
        Target::Max(0.5),
        "≈ 0 % (≤ 0.5 %)",
    );
    let mut wrk_cpu = Row::new(
        "otter-worker idle CPU",
        "%",
        Target::Max(0.5),
        "≈ 0 % (≤ 0.5 %)",
    );
    let secs = opts.idle_secs;
    for run in 0..opts.runs {
        let stack = Stack::start(&[WorkerSpec {
            concurrency: 8,
            env: vec![],
        }])
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (s, w) = (stack.server.pid(), stack.workers[0].pid());
        let (s0, w0) = (cpu_ticks(s)?, cpu_ticks(w)?);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let el = t.elapsed().as_secs_f64();
        let (s1, w1) = (cpu_ticks(s)?, cpu_ticks(w)?);
        srv_rss.otter.push(rss_bytes(s)? / 1e6);
        wrk_rss.otter.push(rss_bytes(w)? / 1e6);
        srv_cpu.otter.push((s1 - s0) / 100.0 / el * 100.0);
        wrk_cpu.otter.push((w1 - w0) / 100.0 / el * 100.0);
        eprintln!(
            "[idle] run {run}: server {:.1} MB {:.2} %, worker {:.1} MB {:.2} %",
            srv_rss.otter[run], srv_cpu.otter[run], wrk_rss.otter[run], wrk_cpu.otter[run]
        );
    }
    Ok(Section {
        title: "7. Idle cost".into(),
        rows: vec![srv_rss, wrk_rss, srv_cpu, wrk_cpu],
        notes: vec![format!(
            "Fresh server and worker (concurrency 8, `RUST_LOG=warn`), measured 3 s after start for {secs} s: VmRSS from /proc, CPU = (utime+stime) over wall time (1/100 s ticks, so the resolution is {:.2} %). \
             The worker's idle loop is a Redis `BZPOPMIN` with a 2 s timeout plus heartbeats and a reconciler, not a busy poll.",
            100.0 / secs as f64 / 100.0
        )],
    })
}
