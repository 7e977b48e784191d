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
