//! What a command of the command endpoints can reach, and that nothing it starts outlives it
//! (docs/workspace-trust-model.md): it runs as the job user when the server is root, cannot read
//! the server's environment or memory either way, and whatever it leaves running (by `setsid`,
//! `setsid -f`, a program that changes its process group) is killed at its timeout, at its end,
//! and when its server is killed with SIGKILL, whose session and cwd file are cleaned too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use otter_core::isolation::JobUser;
use otter_testkit::{TestApp, TestEnv, eventually, reachable_by_jobs};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The job user, when these tests run as root.
fn job_user() -> Option<JobUser> {
    JobUser::resolve("otter-job").expect("as root, the job user otter-job must exist")
}

async fn command(app: &TestApp, ws: &Value, body: Value) -> Value {
    let (status, result) = app
        .post(
            &format!("/v1/workspaces/{}/command", ws["id"].as_str().unwrap()),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    result
}

/// Tries each of `paths` and prints `read <path>` or `denied <path>`.
fn try_reading(paths: &[String]) -> String {
    paths
        .iter()
        .map(|p| format!("head -c1 {p} >/dev/null 2>&1 && echo 'read {p}' || echo 'denied {p}'\n"))
        .collect()
}

#[tokio::test]
async fn a_command_of_a_root_server_runs_as_the_job_user_and_reads_none_of_its_secrets() {
    let Some(user) = job_user() else {
        eprintln!("not root: see a_server_that_is_not_root_keeps_its_commands_out_of_its_process");
        return;
    };
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "admin-token")]).await;
    let ws = app.workspace("ws").await;
    let secrets = app.env.dir.join("otter.env");
    std::fs::write(&secrets, "OTTER_API_TOKENS=admin-token\n").unwrap();
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let paths = [
        "/proc/$PPID/environ".to_owned(),
        "/proc/$PPID/mem".to_owned(),
        secrets.display().to_string(),
    ];
    let result = command(
        &app,
        &ws,
        json!({ "command": format!("id -u\n{}env", try_reading(&paths)) }),
    )
    .await;
    let stdout = result["stdout"].as_str().unwrap();
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(user.uid.as_raw().to_string().as_str()),
        "{stdout}"
    );
    // $PPID is this process: the server.
    for path in &paths {
        assert!(
            stdout.contains(&format!("denied {path}")),
            "{path}: {stdout}"
        );
    }
    assert!(!stdout.contains("read /"), "{stdout}");
    for secret in ["OTTER_", "DATABASE_URL", "REDIS_URL", "admin-token"] {
        assert!(
            !stdout.contains(secret),
            "{secret} reached the command: {stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("HOME={}", user.home.display())),
        "{stdout}"
    );
    app.assert_no_processes_left().await;
}

/// `OTTER_JOB_DOCKER=true` gives the job user the group of the Docker socket, and only then:
/// without it, a root server's commands cannot use a socket that root can.
#[tokio::test]
async fn only_otter_job_docker_gives_commands_the_group_of_the_docker_socket() {
    if job_user().is_none() {
        eprintln!("not root: a command has the server's own groups");
        return;
    }
    const SOCKET_GID: u32 = 4242;
    for job_docker in [false, true] {
        let env = TestEnv::new().await;
        let socket = env.dir.join("docker.sock");
        std::fs::write(&socket, "").unwrap();
        std::os::unix::fs::chown(&socket, None, Some(SOCKET_GID)).unwrap();
        let endpoint = format!("unix://{}", socket.display());
        let app = TestApp::start(
            env,
            &[
                (
                    "OTTER_JOB_DOCKER",
                    if job_docker { "true" } else { "false" },
                ),
                ("OTTER_RUNTIME_DOCKER_SOCKET", endpoint.as_str()),
            ],
        )
        .await;
        let ws = app.workspace("ws").await;
        let result = command(&app, &ws, json!({ "command": "id -G" })).await;
        let groups: Vec<&str> = result["stdout"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            groups.contains(&SOCKET_GID.to_string().as_str()),
            job_docker,
            "OTTER_JOB_DOCKER={job_docker}: groups {groups:?}"
        );
    }
}

/// An `otter-server` process on a free port of 127.0.0.1; killed when dropped.
struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    fn start(env: &TestEnv, extra: &[(&str, &str)], ids: Option<(u32, u32)>) -> Self {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.dir.join("server.log"))
            .unwrap();
        let mut command = Command::new(reachable_by_jobs(env!("CARGO_BIN_EXE_otter-server")));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.vars(&[("OTTER_LISTEN_ADDR", &format!("127.0.0.1:{port}"))]))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid);
        }
        Self {
            child: command.spawn().expect("start otter-server"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn ready(&self, client: &reqwest::Client) {
        eventually(Duration::from_secs(60), "the server to answer", || async {
            let resp = client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        })
        .await;
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_server_that_is_not_root_keeps_its_commands_out_of_its_process() {
    use std::os::unix::process::CommandExt;
    let env = TestEnv::new().await;
    // As root, the server runs as the job user: a server that is not root, whose commands run
    // as its own user.
    let ids = job_user().map(|u| (u.uid.as_raw(), u.gid.as_raw()));
    let server = ServerProcess::start(&env, &[("OTTER_API_TOKENS", "admin-token")], ids);
    // The same user's process that did not make itself non-dumpable: readable.
    let mut control = Command::new("sleep");
    control
        .arg("300")
        .env("DECOY", "readable")
        .env("OTTER_TEST_DIR", &env.dir);
    if let Some((uid, gid)) = ids {
        control.uid(uid).gid(gid);
    }
    let mut control = control.spawn().unwrap();
    let client = reqwest::Client::new();
    server.ready(&client).await;
    let (status, ws) = post(
        &client,
        format!("{}/v1/workspaces", server.base),
        "admin-token",
        json!({ "path": env.dir.join("ws").display().to_string(), "create": true }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let paths = [
        format!("/proc/{}/environ", server.pid()),
        format!("/proc/{}/mem", server.pid()),
        "/proc/$PPID/environ".to_owned(),
        format!("/proc/{}/environ", control.id()),
    ];
    let (status, result) = post(
        &client,
        format!(
            "{}/v1/workspaces/{}/command",
            server.base,
            ws["id"].as_str().unwrap()
        ),
        "admin-token",
        json!({ "command": try_reading(&paths) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    for path in &paths[..3] {
        assert!(
            stdout.contains(&format!("denied {path}")),
            "{path}: {stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("read {}", paths[3])),
        "the control: {stdout}"
    );
    let _ = control.kill();
    let _ = control.wait();
}

/// Three ways out of the process group, each printing the pid that ends up sleeping: a
/// background `setsid`, `setsid -f` (which forks), and a program that moves itself to a group
/// of its own before it execs (forked by python, which prints its pid).
const ESCAPES: &str = "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!
setsid -f sh -c 'echo $$; exec sleep 300 >/dev/null 2>&1' </dev/null
python3 -c 'import os
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.execvp(\"sh\", [\"sh\", \"-c\", \"exec sleep 300 >/dev/null 2>&1\"])
print(pid, flush=True)' </dev/null
";

fn pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
    })
}

async fn all_gone(pids: &[u32], when: &str) {
    assert_eq!(pids.len(), 3, "three escaped pids: {pids:?}");
    for pid in pids {
        let pid = *pid;
        eventually(
            Duration::from_secs(10),
            &format!("{pid} to be gone {when}"),
            || async move { gone(pid).then_some(()) },
        )
        .await;
    }
}

async fn nothing_a_command_starts_outlives_it(cgroup_root: &str) {
    let app = TestApp::spawn_with(&[("OTTER_CGROUP_ROOT", cgroup_root)]).await;
    let ws = app.workspace("ws").await;

    // Its timeout, with the escapes in the background.
    let result = command(
        &app,
        &ws,
        json!({ "command": format!("{ESCAPES}sleep 300"), "timeout_secs": 2 }),
    )
    .await;
    assert_eq!(result["timed_out"], true, "{result}");
    all_gone(
        &pids(result["stdout"].as_str().unwrap()),
        "after the timeout",
    )
    .await;

    // Its end.
    let result = command(&app, &ws, json!({ "command": ESCAPES })).await;
    assert_eq!(result["exit_code"], 0, "{result}");
    all_gone(
        &pids(result["stdout"].as_str().unwrap()),
        "after the command ended",
    )
    .await;

    // `setsid` in the foreground: the shell waits for a child in a session of its own.
    let result = command(
        &app,
        &ws,
        json!({ "command": "setsid sh -c 'echo $$; exec sleep 300 >/dev/null'", "timeout_secs": 2 }),
    )
    .await;
    assert_eq!(result["timed_out"], true, "{result}");
    let pid: u32 = result["stdout"].as_str().unwrap().trim().parse().unwrap();
    eventually(
        Duration::from_secs(10),
        "the foreground setsid to be gone",
        || async move { gone(pid).then_some(()) },
    )
    .await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn nothing_a_command_starts_outlives_it_in_a_cgroup() {
    nothing_a_command_starts_outlives_it("auto").await;
}

#[tokio::test]
async fn nothing_a_command_starts_outlives_it_by_its_marker() {
    nothing_a_command_starts_outlives_it("none").await;
}

/// The cwd file a command's `trap` names (it printed its traps into `traps`).
fn cwd_file(traps: &str) -> PathBuf {
    let at = traps.find("otter-cwd-").expect("the cwd file in the trap");
    let name: String = traps[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    std::env::temp_dir().join(name)
}

async fn a_command_dies_with_its_server(cgroup_root: &str) {
    let env = TestEnv::new().await;
    let extra = [
        ("OTTER_API_TOKENS", "admin-token"),
        ("OTTER_CGROUP_ROOT", cgroup_root),
    ];
    let mut first = ServerProcess::start(&env, &extra, None);
    let client = reqwest::Client::new();
    first.ready(&client).await;
    let (status, ws) = post(
        &client,
        format!("{}/v1/workspaces", first.base),
        "admin-token",
        json!({ "path": env.dir.join("ws").display().to_string(), "create": true }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let root = PathBuf::from(ws["path"].as_str().unwrap());
    let url = |server: &ServerProcess| {
        format!(
            "{}/v1/workspaces/{}/command",
            server.base,
            ws["id"].as_str().unwrap()
        )
    };
    let (status, started) = post(
        &client,
        url(&first),
        "admin-token",
        json!({ "command": "true" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let session = started["shell_session_id"].clone();

    // A long command of the session, which leaves the group three ways and says where it is.
    let long = format!(
        "trap > traps.txt\necho $$ > sh.pid\n{{\n{ESCAPES}}} > escaped.tmp && mv escaped.tmp escaped.txt\nsleep 300"
    );
    let request = tokio::spawn({
        let (client, url) = (client.clone(), url(&first));
        let body = json!({ "command": long, "shell_session_id": session, "timeout_secs": 600 });
        async move {
            client
                .post(url)
                .bearer_auth("admin-token")
                .json(&body)
                .send()
                .await
        }
    });
    let escaped = eventually(Duration::from_secs(30), "the escapes", || async {
        std::fs::read_to_string(root.join("escaped.txt")).ok()
    })
    .await;
    let escaped = pids(&escaped);
    let sh: u32 = std::fs::read_to_string(root.join("sh.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cwd_file = cwd_file(&std::fs::read_to_string(root.join("traps.txt")).unwrap());
    assert!(cwd_file.exists(), "{}", cwd_file.display());

    first.kill9();
    let _ = request.await;
    // The shell dies with its server.
    eventually(
        Duration::from_secs(10),
        "the command's shell to die with its server",
        || async move { gone(sh).then_some(()) },
    )
    .await;

    // The next server on this host cleans what the dead one left before it answers.
    let second = ServerProcess::start(&env, &extra, None);
    second.ready(&client).await;
    all_gone(&escaped, "once the next server started").await;
    assert!(!cwd_file.exists(), "{} is left", cwd_file.display());
    let (status, next) = post(
        &client,
        url(&second),
        "admin-token",
        json!({ "command": "pwd", "shell_session_id": session }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the session is free at once: {next}"
    );
    drop(second);
    assert!(otter_testkit::processes_naming(&env.dir.display().to_string()).is_empty());
}

#[tokio::test]
async fn a_command_dies_with_its_server_in_a_cgroup() {
    a_command_dies_with_its_server("auto").await;
}

#[tokio::test]
async fn a_command_dies_with_its_server_by_its_marker() {
    a_command_dies_with_its_server("none").await;
}
