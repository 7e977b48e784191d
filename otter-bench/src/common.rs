//! What every benchmark shares: a fresh environment (database, Redis queue name, directories),
//! the real `otter-server` and `otter-worker` release binaries run as processes, the vibe
//! stand-in, statistics and the result rows written to `docs/benchmarks.md`.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use otter_core::testing::TestEnv;
use sqlx::PgPool;

/// Unix time in nanoseconds (comparable across processes of this machine).
pub(crate) fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Where the release binaries are: next to this one.
pub(crate) fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("binary directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} missing: build with `cargo build --release -p otter-server -p otter-worker -p otter-bench`",
            path.display()
        );
    }
    Ok(path)
}

/// A child process, killed and reaped when dropped.
pub(crate) struct Proc {
    child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One worker process to start.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerSpec {
    pub(crate) concurrency: usize,
    pub(crate) env: Vec<(String, String)>,
}

/// A running Otter: fresh database and queue, the server, and workers.
pub(crate) struct Stack {
    pub(crate) env: TestEnv,
    pub(crate) base: String,
    pub(crate) pool: PgPool,
    pub(crate) http: reqwest::Client,
    pub(crate) server: Proc,
    pub(crate) workers: Vec<Proc>,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Stack {
    /// Fresh database (migrated) and queue; starts the server (and waits for `/healthz`) and the
    /// workers.
    pub(crate) async fn start(workers: &[WorkerSpec]) -> Result<Self> {
        let env = TestEnv::new().await;
        // Otter's own pool settings, so that the database-alone row makes the same round trips.
        let pool = otter_core::db::pool_options(16)
            .connect(&env.database_url)
            .await?;
        otter_core::db::migrate(&pool).await?;
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let listen = format!("127.0.0.1:{port}");
        let server = spawn(
            &env,
            "otter-server",
            &[
                ("OTTER_LISTEN_ADDR", listen.as_str()),
                ("OTTER_DB_MAX_CONNECTIONS", "16"),
            ],
            &[],
        )?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "otter-server did not become healthy; see {}",
                    env.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut stack = Self {
            env,
            base,
            pool,
            http,
            server,
            workers: Vec::new(),
        };
        for (i, spec) in workers.iter().enumerate() {
            stack.add_worker(spec, i)?;
        }
        Ok(stack)
    }

    pub(crate) fn add_worker(&mut self, spec: &WorkerSpec, i: usize) -> Result<()> {
        let concurrency = spec.concurrency.to_string();
        let id = format!("bench-worker-{i}");
        // Where the job user (when the worker is root) can run it.
        let vibe =
            otter_core::testing::reachable_by_jobs(&bin("otter-fake-vibe")?.display().to_string());
        // Since issue 14 vibe's environment is built, not inherited: the stand-in's knobs
        // (FAKE_VIBE_*) reach it through OTTER_VIBE_EXTRA_ENV, as an operator's would.
        let knobs: Vec<String> = spec
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("FAKE_VIBE_"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let knobs = knobs.join(",");
        let mut extra: Vec<(&str, &str)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if !knobs.is_empty() {
            extra.push(("OTTER_VIBE_EXTRA_ENV", knobs.as_str()));
        }
        let proc = spawn(
            &self.env,
            "otter-worker",
            &[
                ("OTTER_WORKER_CONCURRENCY", concurrency.as_str()),
                ("OTTER_WORKER_ID", id.as_str()),
                ("OTTER_VIBE_BIN", vibe.as_str()),
                ("OTTER_DB_MAX_CONNECTIONS", "16"),
                ("OTTER_LISTEN_ADDR", "127.0.0.1:0"),
            ],
            &extra,
        )?;
        self.workers.push(proc);
        Ok(())
    }

    /// Creates a workspace through the API.
    pub(crate) async fn workspace(&self, name: &str) -> Result<String> {
        self.workspace_of(name, None).await
    }

    /// Creates a workspace named `name` in `project` (if any); returns its id.
    pub(crate) async fn workspace_of(&self, name: &str, project: Option<&str>) -> Result<String> {
        let path = self.env.dir.join("ws").join(name);
        let body =
            serde_json::json!({"name": name, "path": path, "create": true, "project_id": project});
        post_for_id(&self.http, &format!("{}/v1/workspaces", self.base), &body).await
    }

    /// Submits a prompt; returns the job id.
    pub(crate) async fn submit(&self, workspace: &str) -> Result<String> {
        submit(&self.http, &self.base, workspace).await
    }

    /// Waits until `n` jobs have reached `status`.
    pub(crate) async fn wait_status(&self, status: &str, n: i64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = $1")
                .bind(status)
                .fetch_one(&self.pool)
                .await?;
            if count >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {count} of {n} jobs reached {status} in {limit:?}");
            }
            // Not faster: each poll counts rows, on the same cores as what it measures.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// `POST /v1/prompts`; returns the job id.
pub(crate) async fn submit(http: &reqwest::Client, base: &str, workspace: &str) -> Result<String> {
    let body = serde_json::json!({"prompt": "benchmark", "workspace_id": workspace});
    post_for_id(http, &format!("{base}/v1/prompts"), &body).await
}

/// POSTs `body` and returns the `id` of what it created.
pub(crate) async fn post_for_id(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<String> {
    let r: serde_json::Value = http
        .post(url)
        .json(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["id"]
        .as_str()
        .with_context(|| format!("no id from {url}"))?
        .to_owned())
}

fn spawn(env: &TestEnv, name: &str, vars: &[(&str, &str)], extra: &[(&str, &str)]) -> Result<Proc> {
    let mut all: HashMap<String, String> = env.vars(vars);
    all.insert("OTTER_ALLOW_UNAUTHENTICATED".into(), "true".into());
    all.insert("RUST_LOG".into(), "warn".into());
    for (k, v) in extra {
        all.insert((*k).to_owned(), (*v).to_owned());
    }
    let log = File::create(env.dir.join(format!("{name}-{}.log", unix_ns())))?;
    let child = Command::new(bin(name)?)
        .envs(all)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc { child })
}

/// The arguments the worker gives vibe (for the raw spawn measurements).
pub(crate) fn vibe_args(out_dir: &std::path::Path) -> Vec<String> {
    [
        "--prompt",
        "benchmark",
        "--output",
        "streaming",
        "--trust",
        "--auto-approve",
        "--output-dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([out_dir.display().to_string()])
    .collect()
}

/// Resident set size of a process, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Result<f64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024.0)
}

/// Peak resident set size of a process (VmHWM), in bytes.
pub(crate) fn hwm_bytes(pid: u32) -> Result<f64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024.0)
}

/// Resets a process's peak resident set size to its current one (`clear_refs` 5), so that the
/// next [`hwm_bytes`] is the peak from now on. Best effort: without the right to write the file,
/// the peak also covers what came before.
pub(crate) fn reset_hwm(pid: u32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("[bench] cannot reset the peak RSS of {pid}: {e}");
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| field.to_owned())?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("{field} value"))?
        .parse()?)
}

/// CPU time (user + system) of a process, in clock ticks (1/100 s).
pub(crate) fn cpu_ticks(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').context("stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// The `p`-th percentile (0..=100) of `values` (sorted here).
pub(crate) fn pct(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// What a figure must reach.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// Otter's median at most this.
    Max(f64),
    /// Otter's median at least this.
    Min(f64),
    /// The median ratio Otter / raw at least this.
    RatioMin(f64),
    /// The median ratio Otter / raw at most this.
    RatioMax(f64),
    /// Reported only.
    Info,
}

/// One line of a figure's table: Otter's value and the raw limit, one entry per run.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) metric: String,
    pub(crate) unit: &'static str,
    pub(crate) otter: Vec<f64>,
    pub(crate) raw_label: String,
    pub(crate) raw: Vec<f64>,
    pub(crate) target: Target,
    pub(crate) target_text: String,
}

impl Row {
    pub(crate) fn new(metric: &str, unit: &'static str, target: Target, target_text: &str) -> Self {
        Self {
            metric: metric.to_owned(),
            unit,
            otter: Vec::new(),
            raw_label: String::new(),
            raw: Vec::new(),
            target,
            target_text: target_text.to_owned(),
        }
    }

    pub(crate) fn raw(mut self, label: &str) -> Self {
        label.clone_into(&mut self.raw_label);
        self
    }

    fn ratios(&self) -> Vec<f64> {
        self.otter
            .iter()
            .zip(&self.raw)
            .map(|(o, r)| o / r)
            .collect()
    }

    /// Whether the target is met (None: nothing to check or no data).
    pub(crate) fn met(&self) -> Option<bool> {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            pct(&mut v, 50.0)
        };
        if self.otter.is_empty() {
            return None;
        }
        match self.target {
            Target::Max(t) => Some(median(&self.otter) <= t),
            Target::Min(t) => Some(median(&self.otter) >= t),
            Target::RatioMin(t) => {
                let r = self.ratios();
                (!r.is_empty()).then(|| median(&r) >= t)
            }
            Target::RatioMax(t) => {
                let r = self.ratios();
                (!r.is_empty()).then(|| median(&r) <= t)
            }
            Target::Info => None,
        }
    }

    /// The row in Markdown.
    pub(crate) fn markdown(&self) -> String {
        let spread = |v: &[f64], unit: &str| {
            if v.is_empty() {
                return "—".to_owned();
            }
            let mut v = v.to_vec();
            let med = pct(&mut v, 50.0);
            let (lo, hi) = (v[0], v[v.len() - 1]);
            format!("{} {unit} [{}–{}]", fmt(med), fmt(lo), fmt(hi))
        };
        let raw = if self.raw.is_empty() {
            "—".to_owned()
        } else {
            format!("{}: {}", self.raw_label, spread(&self.raw, self.unit))
        };
        let ratios = self.ratios();
        let ratio = if ratios.is_empty() {
            "—".to_owned()
        } else {
            spread(&ratios, "×")
        };
        let met = match self.met() {
            Some(true) => "**met**",
            Some(false) => "**missed**",
            None => "—",
        };
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            self.metric,
            spread(&self.otter, self.unit),
            raw,
            ratio,
            self.target_text,
            met
        )
    }
}

/// A number with sensible precision.
pub(crate) fn fmt(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "n/a".to_owned()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One figure's section of the report.
#[derive(Clone, Debug, Default)]
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

impl Section {
    pub(crate) fn markdown(&self) -> String {
        let mut s = format!(
            "### {}\n\n| Metric | Otter: median [min–max] | Raw limit, same run | Ratio Otter/raw | Target | Result |\n|---|---|---|---|---|---|\n",
            self.title
        );
        for row in &self.rows {
            s.push_str(&row.markdown());
            s.push('\n');
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s.push_str("- ");
                s.push_str(n);
                s.push('\n');
            }
        }
        s.push('\n');
        s
    }
}
