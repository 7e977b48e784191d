//! `otter-bench`: Otter's benchmark suite (issue 7). Each figure measures Otter and, in the same
//! run, the raw limit it is compared with, over several runs, and reports medians and spreads.
//! The benchmarks are not tests: they assert no timings.
//!
//! ```text
//! otter-bench <dispatch|throughput|ingest|sse|api|big|idle|memory|checkpoint|sweep|all> [--runs N] [--out FILE] [flags]
//! ```
//!
//! Flags (how long a run of the defaults takes is in docs/benchmarks.md, "Figures that were code
//! comments"):
//! `--runs 3`, `--jobs 1000` (dispatch), `--throughput-jobs 300`, `--lines 1000000` and
//! `--ingest-runs 3` (ingest: one flood of a million lines),
//! `--api-secs 4`, `--api-rate 1000`, `--idle-secs 10`, `--queued 100000`,
//! `--events 10000000` (big: the issue's size),
//! `--clients 10000`, `--sse-jobs 100`, `--sse-rate 200`,
//! `--sse-secs 20`, `--memory-runs 1`, `--flood-lines 5000000`, `--flood-secs 10` (memory),
//! `--checkpoint-files 10000`, `--checkpoint-mb 100` (checkpoint; the files also for sweep).
//! `--out FILE` writes the Markdown tables there (else stdout).
//!
//! Every benchmark gets a fresh PostgreSQL database and its own Redis queue name
//! (`otter_core::testing::TestEnv`: `DATABASE_URL` and `REDIS_URL` must be set, as
//! `scripts/env.sh` does) and runs the release `otter-server`, `otter-worker` and
//! `otter-fake-vibe` found next to this binary.

/// `--help`: the flags and their defaults, as in the crate documentation above.
const USAGE: &str = "
otter-bench <dispatch|throughput|ingest|sse|api|big|idle|memory|checkpoint|sweep|all> [--runs N] [--out FILE] [flags]

Flags and defaults: --runs 3, --jobs 1000 (dispatch), --throughput-jobs 300, --lines 1000000,
--ingest-runs 3, --api-secs 4, --api-rate 1000, --idle-secs 10, --queued 100000,
--events 10000000, --clients 10000, --sse-jobs 100, --sse-rate 200, --sse-secs 20,
--memory-runs 1, --flood-lines 5000000, --flood-secs 10, --checkpoint-files 10000,
--checkpoint-mb 100.
--out FILE writes the Markdown tables there (else stdout). DATABASE_URL and REDIS_URL must be
set (source scripts/env.sh); scripts/bench.sh runs the whole suite and writes docs/benchmarks.md.
";

mod big;
mod checkpoint;
mod common;
mod cpu;
mod figs;
mod memory;
mod sse;

use anyhow::{Result, bail};

use common::Section;

/// Command-line settings.
#[derive(Clone, Debug)]
pub(crate) struct Opts {
    pub(crate) runs: usize,
    pub(crate) jobs: usize,
    pub(crate) throughput_jobs: usize,
    pub(crate) lines: usize,
    pub(crate) ingest_runs: usize,
    pub(crate) api_secs: u64,
    pub(crate) api_rate: f64,
    pub(crate) idle_secs: u64,
    pub(crate) queued: usize,
    pub(crate) events: usize,
    pub(crate) clients: usize,
    pub(crate) sse_jobs: usize,
    pub(crate) sse_rate: f64,
    pub(crate) sse_secs: u64,
    pub(crate) memory_runs: usize,
    pub(crate) flood_lines: usize,
    pub(crate) flood_secs: u64,
    pub(crate) checkpoint_files: usize,
    pub(crate) checkpoint_mb: usize,
    pub(crate) out: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            runs: 3,
            jobs: 1000,
            throughput_jobs: 300,
            lines: 1_000_000,
            ingest_runs: 3,
            api_secs: 4,
            api_rate: 1000.0,
            idle_secs: 10,
            queued: 100_000,
            events: 10_000_000,
            clients: 10_000,
            sse_jobs: 100,
            sse_rate: 200.0,
            sse_secs: 20,
            memory_runs: 1,
            flood_lines: 5_000_000,
            flood_secs: 10,
            checkpoint_files: 10_000,
            checkpoint_mb: 100,
            out: None,
        }
    }
}

const FIGURES: [&str; 10] = [
    "dispatch",
    "throughput",
    "ingest",
    "sse",
    "api",
    "big",
    "idle",
    "memory",
    "checkpoint",
    "sweep",
];

fn parse(args: &[String]) -> Result<(Vec<String>, Opts)> {
    let mut opts = Opts::default();
    let mut figures = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(flag) = arg.strip_prefix("--") {
            let Some(value) = it.next() else {
                bail!("--{flag} needs a value");
            };
            match flag {
                "runs" => opts.runs = value.parse()?,
                "jobs" => opts.jobs = value.parse()?,
                "throughput-jobs" => opts.throughput_jobs = value.parse()?,
                "lines" => opts.lines = value.parse()?,
                "ingest-runs" => opts.ingest_runs = value.parse()?,
                "api-secs" => opts.api_secs = value.parse()?,
                "api-rate" => opts.api_rate = value.parse()?,
                "idle-secs" => opts.idle_secs = value.parse()?,
                "queued" => opts.queued = value.parse()?,
                "events" => opts.events = value.parse()?,
                "clients" => opts.clients = value.parse()?,
                "sse-jobs" => opts.sse_jobs = value.parse()?,
                "sse-rate" => opts.sse_rate = value.parse()?,
                "sse-secs" => opts.sse_secs = value.parse()?,
                "memory-runs" => opts.memory_runs = value.parse()?,
                "flood-lines" => opts.flood_lines = value.parse()?,
                "flood-secs" => opts.flood_secs = value.parse()?,
                "checkpoint-files" => opts.checkpoint_files = value.parse()?,
                "checkpoint-mb" => opts.checkpoint_mb = value.parse()?,
                "out" => opts.out = Some(value.clone()),
                other => bail!("unknown flag --{other}"),
            }
        } else if arg == "all" {
            // The order of the issue's list; SSE near the end (it needs the most memory), then
            // issue 14's bounded-memory cases.
            figures.extend(
                [
                    "dispatch",
                    "throughput",
                    "ingest",
                    "api",
                    "big",
                    "idle",
                    "sse",
                    "memory",
                    "checkpoint",
                    "sweep",
                ]
                .iter()
                .map(|s| (*s).to_owned()),
            );
        } else if FIGURES.contains(&arg.as_str()) {
            figures.push(arg.clone());
        } else {
            bail!("unknown benchmark {arg}; one of {FIGURES:?} or all");
        }
    }
    if figures.is_empty() {
        bail!(
            "usage: otter-bench <{}|all> [--runs N] [--out FILE] ...",
            FIGURES.join("|")
        );
    }
    opts.runs = opts.runs.max(1);
    Ok((figures, opts))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        // The crate documentation is the usage text.
        println!("{}", USAGE.trim());
        return Ok(());
    }
    let (figures, opts) = parse(&args)?;
    let mut sections: Vec<Section> = Vec::new();
    for figure in &figures {
        eprintln!("[otter-bench] {figure} …");
        let started = std::time::Instant::now();
        let result = match figure.as_str() {
            "dispatch" => figs::dispatch(&opts).await,
            "throughput" => figs::throughput(&opts).await,
            "ingest" => figs::ingest(&opts).await,
            "api" => figs::api(&opts).await,
            "idle" => figs::idle(&opts).await,
            "big" => big::run(&opts).await,
            "sse" => sse::run(&opts).await,
            "memory" => memory::run(&opts).await,
            "checkpoint" => checkpoint::run(&opts).await,
            "sweep" => checkpoint::sweep(&opts).await,
            _ => unreachable!("checked by parse"),
        };
        let mut section = match result {
            Ok(section) => section,
            Err(e) => {
                eprintln!("[otter-bench] {figure} failed: {e:#}");
                Section {
                    title: format!("{figure}: FAILED"),
                    rows: Vec::new(),
                    notes: vec![format!("The benchmark failed: {e:#}")],
                }
            }
        };
        section.notes.push(format!(
            "Wall time of this benchmark: {:.0} s.",
            started.elapsed().as_secs_f64()
        ));
        sections.push(section);
        // Written after every figure, so a late failure keeps the earlier tables.
        if let Some(path) = &opts.out {
            std::fs::write(path, markdown(&sections))?;
        }
    }
    if opts.out.is_none() {
        print!("{}", markdown(&sections));
    }
    Ok(())
}

fn markdown(sections: &[Section]) -> String {
    sections.iter().map(Section::markdown).collect()
}
