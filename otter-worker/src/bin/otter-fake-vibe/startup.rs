//! At startup: `FAKE_VIBE_STARTED_FILE`, `FAKE_VIBE_RECORD`, and the grandchild.

use std::env;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::out::err_line;
use crate::scenario::{Knobs, env_string};

fn own_pgid() -> Option<i64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Appends `<job id> <unix ns>` to `$FAKE_VIBE_STARTED_FILE` (benchmarks' dispatch latency).
pub(crate) fn record_start() {
    let Some(path) = env::var_os("FAKE_VIBE_STARTED_FILE").filter(|p| !p.is_empty()) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let job = env::var("OTTER_JOB_ID").unwrap_or_else(|_| "-".to_owned());
    let _ = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{job} {now}\n").as_bytes()));
}

/// Appends one line to `$FAKE_VIBE_RECORD` telling how this process was started.
pub(crate) fn record_invocation(argv: &[String]) {
    let Some(path) = env::var_os("FAKE_VIBE_RECORD").filter(|p| !p.is_empty()) else {
        return;
    };
    let mut vars = serde_json::Map::new();
    for name in [
        "VIBE_HOME",
        "MISTRAL_API_KEY",
        "VIBE_MODEL",
        "MISTRAL_MODEL",
        "VIBE_PROVIDER",
        "VIBE_ACTIVE_MODEL",
        "DATABASE_URL",
        "REDIS_URL",
    ] {
        vars.insert(name.to_owned(), env_string(name).into());
    }
    for (name, value) in env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("OTTER_") {
            vars.insert(
                name.into_owned(),
                value.to_string_lossy().into_owned().into(),
            );
        }
    }
    let agents_md = env::var_os("VIBE_HOME")
        .and_then(|home| fs::read_to_string(Path::new(&home).join("AGENTS.md")).ok());
    let record = serde_json::json!({
        "argv": argv,
        "cwd": env::current_dir().ok().map(|d| d.to_string_lossy().into_owned()),
        "env": vars,
        "agents_md": agents_md,
        "stdin": fs::read_link("/proc/self/fd/0").ok().map(|p| p.to_string_lossy().into_owned()),
        "pid": std::process::id(),
        "ppid": std::os::unix::process::parent_id(),
        "pgid": own_pgid(),
    });
    let mut line = record.to_string();
    line.push('\n');
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        err_line(&format!(
            "otter-fake-vibe: cannot append to FAKE_VIBE_RECORD {}: {e}",
            Path::new(&path).display()
        ));
    }
}

/// Starts `sh -c 'sleep N'` in our process group (no setsid: killing the group must
/// reach it), reaped by a thread if it dies first, and writes its pid to the pidfile.
pub(crate) fn spawn_grandchild(knobs: &Knobs) -> Result<(), String> {
    let mut command = Command::new("sh");
    match &knobs.grandchild_script {
        Some(script) => command.arg(script),
        None => command
            .arg("-c")
            .arg(format!("sleep {}", knobs.grandchild_secs)),
    };
    command.stdin(Stdio::null());
    if !knobs.grandchild_inherit {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start the grandchild: {e}"))?;
    if knobs.grandchild_script.is_some() {
        let _ = child.wait();
        return Ok(());
    }
    let pid = child.id();
    // Never joined: if we exit first, the grandchild lives on as an orphan.
    let _reaper = std::thread::Builder::new()
        .name("grandchild-reaper".to_owned())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Some(pidfile) = &knobs.pidfile {
        let temp = pidfile.with_extension("tmp-fake-vibe");
        fs::write(&temp, format!("{pid}\n"))
            .and_then(|()| fs::rename(&temp, pidfile))
            .map_err(|e| {
                format!(
                    "could not write FAKE_VIBE_PIDFILE {}: {e}",
                    pidfile.display()
                )
            })?;
    }
    Ok(())
}
