//! The test's processes: which still run, and who owns a directory.

/// The living processes (pid and command line) whose environment, command line or working
/// directory contains `marker`; zombies and this process excluded.
pub fn processes_naming(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let needle = marker.as_bytes();
    let has = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
        if state.is_empty() || state.starts_with('Z') || state.starts_with('X') {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if has(&environ) || has(&cmdline) || has(cwd.as_bytes()) {
            let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, shown));
        }
    }
    found
}

/// What an operator does to an existing directory before registering it as a workspace when
/// Otter runs as root (Otter gives away only what it creates itself): `chown -R otter-job:` it.
/// Nothing to do when the tests do not run as root.
pub fn give_to_job_user(dir: &std::path::Path) {
    if otter_core::isolation::JobUser::resolve("otter-job")
        .expect("as root, the job user otter-job must exist")
        .is_none()
    {
        return;
    }
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg("otter-job:")
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown -R otter-job: {}", dir.display());
}
