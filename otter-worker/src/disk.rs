//! The disk guard (`OTTER_MIN_FREE_DISK`): a worker whose workspace filesystems are nearly full
//! claims nothing more, so that a run never starts on a disk it would fill (and fail half-way,
//! with a checkpoint or an event spill that cannot be written). Prompts are still accepted and
//! wait, queued; the worker claims again as soon as space comes back. Why it does not claim is in
//! its log, and in its heartbeat for `/metrics` and `/healthz`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use otter_core::Config;

/// The filesystems a worker writes runs to, and the least free space it claims with.
#[derive(Debug)]
pub(crate) struct DiskGuard {
    /// `OTTER_VIBE_HOME_BASE` (homes, run directories, spill files, and by default the
    /// checkpoints), `OTTER_CHECKPOINT_DIR`, and where workspaces live (`OTTER_ALLOWED_ROOTS`,
    /// `OTTER_DEFAULT_WORKSPACE_PATH`).
    paths: Vec<PathBuf>,
    /// `OTTER_MIN_FREE_DISK` (0: the guard is off).
    min_free: u64,
    /// What the last look found, for the heartbeat.
    state: Mutex<DiskState>,
}

/// What the guard last found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DiskState {
    /// The least free space of the watched filesystems, in bytes (`None`: none could be read).
    pub(crate) free_bytes: Option<u64>,
    /// Why claims are paused, if they are.
    pub(crate) paused: Option<String>,
}

impl DiskGuard {
    pub(crate) fn new(config: &Config) -> Self {
        let mut paths = vec![config.vibe_home_base.clone()];
        paths.extend(config.checkpoint_dir.clone());
        paths.extend(config.allowed_roots.iter().cloned());
        paths.extend(config.default_workspace_path.clone());
        paths.dedup();
        Self {
            paths,
            min_free: config.min_free_disk,
            state: Mutex::new(DiskState::default()),
        }
    }

    /// Looks at the filesystems again: `Some(why)` when claims must pause. Logs each change.
    pub(crate) fn check(&self) -> Option<String> {
        let mut least: Option<(u64, &Path)> = None;
        for path in &self.paths {
            match free_bytes(path) {
                Ok(free) if least.is_none_or(|(l, _)| free < l) => least = Some((free, path)),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot read free disk space")
                }
            }
        }
        let paused = least
            .filter(|(free, _)| self.min_free > 0 && *free < self.min_free)
            .map(|(free, path)| {
                format!(
                    "disk_low: {} has {} free, less than OTTER_MIN_FREE_DISK ({})",
                    path.display(),
                    human(free),
                    human(self.min_free)
                )
            });
        let now = DiskState {
            free_bytes: least.map(|(free, _)| free),
            paused: paused.clone(),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (&state.paused, &paused) {
            (None, Some(why)) => {
                tracing::warn!(reason = %why, "claiming nothing until disk space comes back")
            }
            (Some(_), None) => tracing::info!(
                free_bytes = now.free_bytes,
                "disk space is back above OTTER_MIN_FREE_DISK; claiming again"
            ),
            _ => {}
        }
        *state = now;
        paused
    }

    /// What the last look found.
    pub(crate) fn state(&self) -> DiskState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Bytes an unprivileged user may still write on `path`'s filesystem (its nearest existing
/// ancestor's, for a path not made yet).
fn free_bytes(path: &Path) -> nix::Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let stat = nix::sys::statvfs::statvfs(existing)?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// `n` bytes for a person: `812.0 MiB`.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }

    #[test]
    fn a_path_not_made_yet_is_measured_on_its_parents_filesystem() {
        let root = free_bytes(Path::new("/")).expect("/");
        assert!(root > 0);
        assert!(free_bytes(Path::new("/no/such/dir/anywhere")).is_ok());
    }
}
