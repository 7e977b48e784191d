//! `--probe`: a job trying to reach Otter's secrets, reporting what it managed.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

/// The variables that hold Otter's secrets.
const SECRETS: [&str; 5] = [
    "OTTER_API_TOKENS",
    "OTTER_DATABASE_URL",
    "DATABASE_URL",
    "OTTER_REDIS_URL",
    "REDIS_URL",
];

/// `"read"`, or why it could not be.
fn try_read(path: &str) -> Value {
    match std::fs::File::open(path).and_then(|mut f| {
        let mut buf = vec![0u8; 64];
        f.read(&mut buf)
    }) {
        Ok(_) => json!("read"),
        Err(e) => json!(e.to_string()),
    }
}

fn env_of(pid: &str) -> Option<Vec<(String, String)>> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        bytes
            .split(|&b| b == 0)
            .filter_map(|e| {
                let e = String::from_utf8_lossy(e);
                let (k, v) = e.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

/// `METHOD path` on the API at `base` with `token`; the status, or 0 when it failed.
fn call(base: &str, method: &str, path: &str, token: &str, body: &str) -> u16 {
    let Some(host) = base.strip_prefix("http://") else {
        return 0;
    };
    let host = host.split('/').next().unwrap_or_default();
    let Ok(mut stream) = TcpStream::connect(host) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn report() -> Value {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let own_env: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("OTTER_") || SECRETS.contains(&k.as_str()))
        .collect();
    let mut pids = vec![std::os::unix::process::parent_id().to_string()];
    pids.extend(
        std::env::var("FAKE_VIBE_PROBE_PIDS")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
    );
    let per_pid: serde_json::Map<String, Value> = pids
        .iter()
        .map(|pid| {
            let tried = json!({
                "environ": try_read(&format!("/proc/{pid}/environ")),
                "mem": try_read(&format!("/proc/{pid}/mem")),
            });
            (pid.clone(), tried)
        })
        .collect();
    let files: serde_json::Map<String, Value> = std::env::var("FAKE_VIBE_PROBE_FILES")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(|p| (p.to_owned(), try_read(p)))
        .collect();
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let mut tokens = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        for (name, value) in env_of(&pid).unwrap_or_default() {
            if SECRETS.contains(&name.as_str()) {
                if name == "OTTER_API_TOKENS" {
                    tokens.extend(value.split(',').map(|t| t.trim().to_owned()));
                }
                found.push(json!({ "pid": pid, "name": name, "value": value }));
            }
        }
    }
    let base = std::env::var("OTTER_API_BASE_URL").unwrap_or_default();
    let job_token = std::env::var("OTTER_API_TOKEN").unwrap_or_default();
    let workspace = json!({ "command": "id", "workspace_id": null }).to_string();
    let mut api = Vec::new();
    let mut attempt = |token: &str, kind: &str| {
        api.push(json!({ "call": "GET /v1/projects", "token": kind,
            "status": call(&base, "GET", "/v1/projects", token, "") }));
        api.push(
            json!({ "call": "POST /v1/workspaces/command", "token": kind,
            "status": call(&base, "POST", "/v1/workspaces/command", token, &workspace) }),
        );
    };
    attempt(&job_token, "job");
    for token in tokens.iter().filter(|t| !t.is_empty()) {
        attempt(token, "found");
    }
    if let Ok(job) = std::env::var("OTTER_JOB_ID") {
        let body = json!({ "preview_url": "http://127.0.0.1:9/probed" }).to_string();
        api.push(json!({ "call": "POST /v1/jobs/{id}/preview-url", "token": "job",
            "status": call(&base, "POST", &format!("/v1/jobs/{job}/preview-url"), &job_token, &body) }));
    }
    json!({
        "uid": uid,
        "own_env": own_env,
        "pids": per_pid,
        "files": files,
        "found": found,
        "api": api,
    })
}
