//! CPU time by process over a stretch of a benchmark, read from `/proc`: where a job's time goes
//! when the two cores are saturated. Figure 2 reports it next to its rates, so the cost of each
//! part of a job (the stand-in, PostgreSQL, the worker, the server, Redis, the load generator) is
//! measured in the same run as the rate it explains.

use std::collections::HashMap;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The machine's cores, the CPU time a second of wall time holds at most.
pub(crate) fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// The processes a stretch is split into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Part {
    /// Processes the worker or the bench spawned and reaped (the vibe stand-ins).
    StandIns,
    PostgreSql,
    Worker,
    Server,
    Redis,
    /// This process: the load generator, its completion poll, in-process database calls.
    Bench,
    /// The rest of the machine's busy time: kernel threads, interrupts, anything else.
    Other,
}

impl Part {
    fn label(self) -> &'static str {
        match self {
            Self::StandIns => "stand-ins",
            Self::PostgreSql => "PostgreSQL",
            Self::Worker => "worker",
            Self::Server => "server",
            Self::Redis => "Redis",
            Self::Bench => "bench",
            Self::Other => "kernel and other",
        }
    }
}

/// `/proc/<pid>/stat`: (comm, ppid, own ticks, reaped children's ticks).
fn stat(pid: &str) -> Option<(String, u32, f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let ppid = f.get(1)?.parse().ok()?;
    Some((comm, ppid, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// Busy ticks of the whole machine (user, nice, system, irq, softirq; not idle, iowait or steal).
fn machine_busy() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().next().context("/proc/stat")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    Ok([0, 1, 2, 5, 6]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0.0))
        .sum())
}

/// The cumulative CPU ticks of each part at one instant.
#[derive(Clone, Debug, Default)]
struct Sample {
    parts: HashMap<Part, f64>,
    machine: f64,
}

/// Which processes are Otter's: the server and the workers, by pid.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pids {
    pub(crate) server: Option<u32>,
    pub(crate) workers: Vec<u32>,
}

impl Sample {
    fn take(pids: &Pids) -> Result<Self> {
        let me = std::process::id();
        let mut procs = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let name = entry?.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some(s) = stat(pid) {
                procs.push((pid.parse::<u32>().unwrap_or(0), s));
            }
        }
        let postgres: Vec<u32> = procs
            .iter()
            .filter(|(_, s)| s.0 == "postgres")
            .map(|(p, _)| *p)
            .collect();
        let mut parts: HashMap<Part, f64> = HashMap::new();
        let mut add = |part, ticks| *parts.entry(part).or_default() += ticks;
        for (pid, (comm, ppid, own, children)) in &procs {
            if *pid == me {
                add(Part::Bench, *own);
                add(Part::StandIns, *children);
            } else if pids.server == Some(*pid) {
                add(Part::Server, *own);
            } else if pids.workers.contains(pid) {
                add(Part::Worker, *own);
                add(Part::StandIns, *children);
            } else if comm == "postgres" {
                add(Part::PostgreSql, *own);
                // The postmaster: backends that exited count in its reaped children.
                if !postgres.contains(ppid) {
                    add(Part::PostgreSql, *children);
                }
            } else if comm == "redis-server" {
                add(Part::Redis, *own);
            }
        }
        Ok(Self {
            parts,
            machine: machine_busy()?,
        })
    }
}

/// CPU time per unit of work over a stretch, in milliseconds.
#[derive(Clone, Debug, Default)]
pub(crate) struct PerUnit {
    pub(crate) parts: Vec<(Part, f64)>,
    /// The machine's busy time per unit (all cores).
    pub(crate) total: f64,
    /// The machine's busy fraction over the stretch (1.0 = every core busy all the time).
    pub(crate) busy: f64,
}

impl PerUnit {
    pub(crate) fn part(&self, part: Part) -> f64 {
        self.parts
            .iter()
            .find(|(p, _)| *p == part)
            .map_or(0.0, |(_, v)| *v)
    }

    /// "6.1 ms (stand-ins 1.0, PostgreSQL 2.9, …)", parts that took no time left out.
    pub(crate) fn describe(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, v)| *v >= 0.005)
            .map(|(p, v)| format!("{} {v:.2}", p.label()))
            .collect();
        format!(
            "{:.2} ms ({}; cores {:.0} % busy)",
            self.total,
            parts.join(", "),
            self.busy * 100.0
        )
    }
}

/// Measures the CPU time of a stretch: `start` before it, `per_unit` after it.
pub(crate) struct Meter {
    pids: Pids,
    start: Sample,
    began: std::time::Instant,
}

impl Meter {
    pub(crate) fn start(pids: Pids) -> Result<Self> {
        Ok(Self {
            start: Sample::take(&pids)?,
            pids,
            began: std::time::Instant::now(),
        })
    }

    /// CPU milliseconds per unit since `start`, `units` being the work done (jobs, spawns).
    pub(crate) fn per_unit(&self, units: usize) -> Result<PerUnit> {
        let end = Sample::take(&self.pids)?;
        let wall = self.began.elapsed().as_secs_f64();
        let ms = |ticks: f64| ticks / TICKS_PER_SEC * 1000.0 / units.max(1) as f64;
        let machine = (end.machine - self.start.machine).max(0.0);
        let mut parts = Vec::new();
        let mut known = 0.0;
        for part in [
            Part::StandIns,
            Part::PostgreSql,
            Part::Worker,
            Part::Server,
            Part::Redis,
            Part::Bench,
        ] {
            let delta = (end.parts.get(&part).copied().unwrap_or(0.0)
                - self.start.parts.get(&part).copied().unwrap_or(0.0))
            .max(0.0);
            known += delta;
            parts.push((part, ms(delta)));
        }
        parts.push((Part::Other, ms((machine - known).max(0.0))));
        Ok(PerUnit {
            parts,
            total: ms(machine),
            busy: machine / TICKS_PER_SEC / (wall * cores()).max(f64::EPSILON),
        })
    }
}
