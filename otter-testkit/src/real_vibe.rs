//! The real vibe for the tests that run it: [`ensure_vibe`] installs it with
//! `scripts/install_mistral_vibe.sh` (a no-op once the venv in `~/.cache/otter` holds the wanted
//! version; from PyPI the first time), and [`job_user_for`] says which user can run it. A failed
//! install fails the test: it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The vibe version the test runs (the one `fixtures/vibe-3.0.3` was captured from).
pub const VIBE_VERSION: &str = "3.0.3";

/// The repository root (this package's parent directory).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the package lies inside the repository")
        .to_path_buf()
}

/// Runs the install script and returns the path of the installed `vibe` (`OTTER_VIBE_BIN`).
pub async fn ensure_vibe() -> PathBuf {
    let root = repo_root();
    let script = root.join("scripts/install_mistral_vibe.sh");
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(&script)
        .arg("--version")
        .arg(VIBE_VERSION)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The test links vibe inside the cache, not into the user's ~/.local/bin.
    if std::env::var_os("OTTER_BIN_DIR").is_none() {
        cmd.env("OTTER_BIN_DIR", home.join(".cache/otter/bin"));
    }
    let started = std::time::Instant::now();
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "installing the real vibe {VIBE_VERSION} failed ({}).\n\
         This test needs mistral-vibe from PyPI (network access to pypi.org the first time; later \
         runs use the venv cached in ~/.cache/otter/vibe-venv) and CPython >= 3.12. Run \
         `scripts/install_mistral_vibe.sh` by hand to see the details.\n\
         --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    let bin = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Set: OTTER_VIBE_BIN="))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("the install script did not print OTTER_VIBE_BIN:\n{stdout}\n{stderr}")
        });
    assert!(bin.is_file(), "{} does not exist", bin.display());
    eprintln!(
        "real vibe: {} ({}, checked in {:.1}s)",
        bin.display(),
        stdout.lines().next().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    bin
}

/// `OTTER_JOB_USER` for a worker running `vibe`: the default `otter-job`, unless the tests run as
/// root and that user cannot run this vibe. The install script puts it in root's home, on a
/// CPython from pyenv there (the system's is too old), which the job user cannot reach; these
/// tests are about the vibe contract, so they then run it as root, saying so. The job user's
/// protections are proven with the stand-in (otter-worker/tests/e2e/isolation.rs); an operator installs vibe
/// where the job user can run it (docs/runbook.md).
pub fn job_user_for(vibe: &Path) -> &'static str {
    let Some(user) =
        otter_core::isolation::JobUser::resolve("otter-job").expect("the job user otter-job")
    else {
        return "otter-job";
    };
    let runs = std::process::Command::new("runuser")
        .args(["-u", &user.name, "--"])
        .arg(vibe)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        "otter-job"
    } else {
        eprintln!(
            "{} is out of otter-job's reach (installed in root's home): vibe runs as root here",
            vibe.display()
        );
        "root"
    }
}
