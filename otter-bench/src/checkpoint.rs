//! Figure 9 (issue 16, "What each job changed"): the cost of a checkpoint against the
//! workspace's size. A workspace of `--checkpoint-files` files (default 10,000) holding
//! `--checkpoint-mb` MB (default 100) in total; per run:
//!
//! - the first checkpoint of it (every file read, hashed and stored);
//! - an incremental one after one file changed (the worker takes one before and one after each
//!   run: this is the cost a job pays twice), against the raw floor of walking the same tree
//!   with `lstat` alone (`find -printf` over the same files);
//! - the change list between the two.
//!
//! This process's own user takes them (no job user), on the disk of `TMPDIR`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use otter_core::checkpoint::Checkpoints;
use otter_core::config::CgroupRoot;
use otter_core::isolation::Isolation;
use otter_core::model::WorkspaceId;

use crate::Opts;
use crate::common::{Row, Section, Target};

/// A short real agent turn, against which the checkpoints' share of a job is given.
const SHORT_JOB_MS: f64 = 60_000.0;

/// Runs figure 9.
pub(crate) async fn run(opts: &Opts) -> Result<Section> {
    let files = opts.checkpoint_files.max(1);
    let bytes_each = (opts.checkpoint_mb * 1_000_000 / files).max(1);
    let mut first = Row::new(
        "first checkpoint (every file read and stored)",
        "ms",
        Target::Info,
        "reported",
    );
    let mut incremental = Row::new(
        "incremental checkpoint, one file changed",
        "ms",
        Target::Max(1000.0),
        "< 1000 ms",
    )
    .raw("lstat walk (find)");
    let mut changes = Row::new(
        "change list between the two",
        "ms",
        Target::Info,
        "reported",
    );
    let mut share = Row::new(
        "share of a 60 s job (its two incremental checkpoints)",
        "%",
        Target::Info,
        "reported",
    );
    let isolation = Isolation::new(None, &CgroupRoot::None, "bench-checkpoint")?;
    for run in 0..opts.runs {
        let dir = std::env::temp_dir().join(format!(
            "otter-bench-ckpt-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let ws = dir.join("ws");
        let result = measure(&isolation, &dir, &ws, files, bytes_each);
        let _ = std::fs::remove_dir_all(&dir);
        let (a, b, floor, c) = result?;
        eprintln!(
            "[checkpoint] run {run}: first {a:.0} ms, incremental {b:.1} ms (walk {floor:.1} ms), changes {c:.1} ms"
        );
        first.otter.push(a);
        incremental.otter.push(b);
        incremental.raw.push(floor);
        changes.otter.push(c);
        share.otter.push(200.0 * b / (SHORT_JOB_MS + 2.0 * b));
    }
    Ok(Section {
        title: "9. Checkpoint cost (issue 16)".into(),
        rows: vec![first, incremental, changes, share],
        notes: vec![format!(
            "A workspace of {files} files of {bytes_each} bytes ({} MB) in {} folders, on the disk of the temporary \
             directory, checkpointed by `otter_core::checkpoint` in-process (release build). Each job pays the incremental \
             cost twice (before and after its run); the share is of a job whose vibe run takes 60 s, a short turn of a real \
             agent (the stand-in's runs take milliseconds, vibe's minutes). Runs: {}.",
            files * bytes_each / 1_000_000,
            files.div_ceil(100),
            opts.runs
        )],
    })
}

/// (first, incremental, raw walk, change list) in milliseconds.
fn measure(
    isolation: &Isolation,
    dir: &Path,
    ws: &Path,
    files: usize,
    bytes_each: usize,
) -> Result<(f64, f64, f64, f64)> {
    let content: Vec<u8> = (0..bytes_each).map(|i| b"abcdefghij\n"[i % 11]).collect();
    for i in 0..files {
        let sub = ws.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let mut own = content.clone();
        own.extend_from_slice(format!("{i}\n").as_bytes());
        std::fs::write(sub.join(format!("f{i:05}.txt")), own)?;
    }
    let checkpoints = Checkpoints::new(dir.join("store"), 64 * 1024 * 1024);
    let id = WorkspaceId::new();
    let started = Instant::now();
    let before = checkpoints.take(isolation, id, ws)?;
    let first = started.elapsed().as_secs_f64() * 1e3;
    if before.files.len() != files {
        bail!(
            "the checkpoint holds {} files, not {files}",
            before.files.len()
        );
    }
    std::fs::write(ws.join("d000/f00000.txt"), b"changed\n")?;
    let started = Instant::now();
    let after = checkpoints.take(isolation, id, ws)?;
    let incremental = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let found = Command::new("find")
        .arg(ws)
        .args(["-printf", "%s %T@ %C@ %i\n"])
        .output()
        .context("running find")?;
    let floor = started.elapsed().as_secs_f64() * 1e3;
    if !found.status.success() {
        bail!("find failed");
    }
    let started = Instant::now();
    let list = checkpoints.changes(id, before.id, after.id)?;
    let changes = started.elapsed().as_secs_f64() * 1e3;
    if list.len() != 1 {
        bail!("{} changes, not 1", list.len());
    }
    Ok((first, incremental, floor, changes))
}

/// Checkpoints of the swept store, and files each one changes.
const SWEEP_CHECKPOINTS: usize = 200;
const SWEEP_CHANGED: usize = 50;
/// Checkpoints the sweep keeps (the jobs not purged).
const SWEEP_KEPT: usize = 20;

/// Figure 10 (issue 19, part 5): the retention sweep of a checkpoint store, beside the takes of a
/// run of the same workspace. A workspace of `--checkpoint-files` files with
/// [`SWEEP_CHECKPOINTS`] checkpoints, each after [`SWEEP_CHANGED`] files changed; the sweep
/// keeps the last [`SWEEP_KEPT`]. Meanwhile incremental takes (one file changed) run one after
/// another and are timed, against the same takes without a sweep: how long a run waits for the
/// sweep's lock.
pub(crate) async fn sweep(opts: &Opts) -> Result<Section> {
    let files = opts.checkpoint_files.max(SWEEP_CHANGED);
    let mut swept = Row::new(
        "sweep of the store (forget, then delete the objects)",
        "ms",
        Target::Info,
        "reported",
    );
    let mut objects = Row::new("objects deleted by the sweep", "", Target::Info, "reported");
    let mut wait = Row::new(
        "longest take beside the sweep",
        "ms",
        Target::Info,
        "reported",
    )
    .raw("longest take alone");
    let mut extra = Row::new(
        "the longest a take waited for the sweep (beside − alone)",
        "ms",
        Target::Max(100.0),
        "≤ 100 ms",
    );
    let isolation = Isolation::new(None, &CgroupRoot::None, "bench-sweep")?;
    for run in 0..opts.runs {
        let dir = std::env::temp_dir().join(format!(
            "otter-bench-sweep-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let result = measure_sweep(&isolation, &dir, files);
        let _ = std::fs::remove_dir_all(&dir);
        let m = result?;
        eprintln!(
            "[sweep] run {run}: sweep {:.0} ms ({} checkpoints, {} objects), take max {:.1} ms beside ({} takes), {:.1} ms alone",
            m.sweep_ms, m.checkpoints, m.objects, m.beside_max, m.beside_takes, m.alone_max
        );
        swept.otter.push(m.sweep_ms);
        objects.otter.push(m.objects as f64);
        wait.otter.push(m.beside_max);
        wait.raw.push(m.alone_max);
        extra.otter.push((m.beside_max - m.alone_max).max(0.0));
    }
    Ok(Section {
        title: "10. Checkpoint sweep beside a run (issue 19)".into(),
        rows: vec![swept, objects, wait, extra],
        notes: vec![format!(
            "A workspace of {files} files of 1 kB with {SWEEP_CHECKPOINTS} checkpoints, each after {SWEEP_CHANGED} \
             files changed (one object each), on the disk of the temporary directory; `Checkpoints::sweep` keeps the last \
             {SWEEP_KEPT} and forgets the rest. Beside it, incremental checkpoints (one file changed) are taken one after \
             another and timed until it ends; alone, the same number again without it. A take and each step of the sweep \
             (the list of checkpoints, then each of the 256 folders of objects) take turns on the store's lock. Runs: {}.",
            opts.runs
        )],
    })
}

struct SweepFigures {
    sweep_ms: f64,
    checkpoints: u64,
    objects: u64,
    beside_max: f64,
    beside_takes: usize,
    alone_max: f64,
}

fn measure_sweep(isolation: &Isolation, dir: &Path, files: usize) -> Result<SweepFigures> {
    let ws = dir.join("ws");
    let path = |i: usize| ws.join(format!("d{:03}/f{i:05}.txt", i / 100));
    let content = |i: usize, turn: usize| {
        let mut text = format!("file {i}, turn {turn}\n").into_bytes();
        text.resize(1000, b'.');
        text
    };
    for i in 0..files {
        if i % 100 == 0 {
            std::fs::create_dir_all(path(i).parent().expect("a folder"))?;
        }
        std::fs::write(path(i), content(i, 0))?;
    }
    let checkpoints = Checkpoints::new(dir.join("store"), 64 * 1024 * 1024);
    let id = WorkspaceId::new();
    let mut taken = Vec::with_capacity(SWEEP_CHECKPOINTS);
    for turn in 1..=SWEEP_CHECKPOINTS {
        for k in 0..SWEEP_CHANGED {
            let i = (turn * SWEEP_CHANGED + k) % files;
            std::fs::write(path(i), content(i, turn))?;
        }
        taken.push(checkpoints.take(isolation, id, &ws)?.id);
    }
    let keep: std::collections::HashSet<_> = taken.iter().rev().take(SWEEP_KEPT).copied().collect();
    // One file changed, one incremental take: a run's checkpoint.
    let mut turn = SWEEP_CHECKPOINTS;
    let mut take_one = || -> Result<f64> {
        turn += 1;
        std::fs::write(path(0), content(0, turn))?;
        let started = Instant::now();
        checkpoints.take(isolation, id, &ws)?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    let older_than = std::time::SystemTime::now();
    let sweeper = {
        let checkpoints = checkpoints.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let swept =
                checkpoints.sweep(id, &keep, older_than, std::time::Duration::from_secs(30));
            (swept, started.elapsed().as_secs_f64() * 1e3)
        })
    };
    let mut beside = Vec::new();
    while !sweeper.is_finished() {
        beside.push(take_one()?);
    }
    let (swept, sweep_ms) = sweeper
        .join()
        .map_err(|_| anyhow::anyhow!("the sweep panicked"))?;
    let swept = swept?;
    let mut alone = Vec::new();
    for _ in 0..beside.len().max(20) {
        alone.push(take_one()?);
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Ok(SweepFigures {
        sweep_ms,
        checkpoints: swept.checkpoints,
        objects: swept.objects,
        beside_max: max(&beside),
        beside_takes: beside.len(),
        alone_max: max(&alone),
    })
}
