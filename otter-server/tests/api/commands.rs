//! The command endpoints: `POST /v1/workspaces/{id}/command` and `POST /v1/workspaces/command`,
//! shell sessions whose `cd` persists (in PostgreSQL, across replicas), timeouts, output caps and
//! the environment a command sees (the hostile cases are in `attacks.rs`).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use otter_testkit::{TestApp, assert_error, eventually};

/// Runs `command` in workspace `id`, in `session` when given; panics unless the answer is 200.
async fn run(app: &TestApp, id: &str, command: &str, session: Option<&Value>) -> Value {
    let mut body = json!({ "command": command });
    if let Some(session) = session {
        body["shell_session_id"] = session.clone();
    }
    let (status, result) = app
        .post(&format!("/v1/workspaces/{id}/command"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{command}: {result}");
    result
}

fn path_of(ws: &Value) -> PathBuf {
    PathBuf::from(ws["path"].as_str().expect("path"))
}

#[tokio::test]
async fn a_command_returns_its_exit_code_output_and_cwd() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();

    let result = run(
        &app,
        id,
        "echo out; echo err >&2; printf 'no newline'; exit 3",
        None,
    )
    .await;
    assert_eq!(result["exit_code"], 3);
    assert_eq!(result["stdout"], "out\nno newline\n");
    assert_eq!(result["stderr"], "err\n");
    assert_eq!(result["cwd"], ws["path"]);
    assert_eq!(result["workspace_id"], ws["id"]);
    assert_eq!(result["truncated"], false);
    assert_eq!(result["timed_out"], false);
    assert_eq!(result["signal"], Value::Null);
    assert_eq!(result["warning"], Value::Null);
    assert!(result["duration_ms"].is_u64());
    assert!(
        result["shell_session_id"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );

    // It ran in the workspace, as a shell.
    let result = run(&app, id, "pwd; touch made-here && ls", None).await;
    assert_eq!(
        result["stdout"],
        format!("{}\nmade-here\n", ws["path"].as_str().unwrap())
    );
    assert!(path_of(&ws).join("made-here").is_file());

    // A syntax error is the shell's answer, not an API error.
    let result = run(&app, id, "echo (", None).await;
    assert_eq!(result["exit_code"], 2);
    assert!(result["stderr"].as_str().unwrap().contains("Syntax error"));
}

#[tokio::test]
async fn cd_persists_within_a_session_and_only_there() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let root = ws["path"].as_str().unwrap().to_owned();

    let first = run(&app, id, "mkdir -p app/src && cd app/src", None).await;
    assert_eq!(first["exit_code"], 0);
    assert_eq!(first["cwd"], format!("{root}/app/src"));
    let session = first["shell_session_id"].clone();

    let second = run(&app, id, "pwd; cd ..", Some(&session)).await;
    assert_eq!(second["stdout"], format!("{root}/app/src\n"));
    assert_eq!(second["cwd"], format!("{root}/app"));
    assert_eq!(second["shell_session_id"], session);

    // `exit` keeps what the command did before it; a failing command too.
    let third = run(&app, id, "cd src; exit 7", Some(&session)).await;
    assert_eq!(third["exit_code"], 7);
    assert_eq!(third["cwd"], format!("{root}/app/src"));
    let fourth = run(&app, id, "cd /nonexistent", Some(&session)).await;
    assert_ne!(fourth["exit_code"], 0);
    assert_eq!(fourth["cwd"], format!("{root}/app/src"));
    assert_eq!(fourth["warning"], Value::Null);

    // A symlink inside the workspace may be entered; the session stores the real directory.
    let fifth = run(
        &app,
        id,
        "ln -s app/src ../../shortcut && cd ../../shortcut",
        Some(&session),
    )
    .await;
    assert_eq!(fifth["exit_code"], 0, "{fifth}");
    assert_eq!(fifth["cwd"], format!("{root}/app/src"));

    // Output printed by the command does not move the session.
    let spoof = run(&app, id, "cd ..; echo /; echo /tmp >&2", Some(&session)).await;
    assert_eq!(spoof["cwd"], format!("{root}/app"));

    // Without the id, a command starts at the root in a new session.
    let fresh = run(&app, id, "pwd", None).await;
    assert_eq!(fresh["stdout"], format!("{root}\n"));
    assert_ne!(fresh["shell_session_id"], session);
}

#[tokio::test]
async fn sessions_live_in_postgres_so_any_replica_continues_them() {
    let app = TestApp::spawn().await;
    let other = app.replica().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let first = run(&app, id, "mkdir deep && cd deep", None).await;
    let session = first["shell_session_id"].clone();
    let next = run(&other, id, "pwd", Some(&session)).await;
    assert_eq!(
        next["stdout"],
        format!("{}/deep\n", ws["path"].as_str().unwrap())
    );
    assert_ne!(app.base, other.base);
}

#[tokio::test]
async fn session_ids_are_checked() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let other = app.workspace("other").await;
    let id = ws["id"].as_str().unwrap();
    let session = run(&app, id, "true", None).await["shell_session_id"].clone();

    // A session of another workspace.
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{}/command", other["id"].as_str().unwrap()),
            json!({ "command": "pwd", "shell_session_id": session }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("another workspace"), "{message}");

    // An unknown one, and one that is not a UUID.
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{id}/command"),
            json!({ "command": "pwd", "shell_session_id": uuid::Uuid::new_v4() }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("shell session"), "{message}");
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{id}/command"),
            json!({ "command": "pwd", "shell_session_id": "main" }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn a_session_runs_one_command_at_a_time() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let root = path_of(&ws);
    let session = run(&app, &id, "true", None).await["shell_session_id"].clone();

    let slow = {
        let client = app.builder(
            reqwest::Method::POST,
            &format!("/v1/workspaces/{id}/command"),
        );
        let body = json!({ "command": "touch started; sleep 2", "shell_session_id": session });
        tokio::spawn(async move { client.json(&body).send().await })
    };
    eventually(
        Duration::from_secs(10),
        "the first command to start",
        || {
            let started = root.join("started").exists();
            async move { started.then_some(()) }
        },
    )
    .await;
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{id}/command"),
            json!({ "command": "touch second", "shell_session_id": session }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("running another command"), "{message}");
    assert!(!root.join("second").exists(), "the refused command ran");

    // Other sessions of the workspace are not held up.
    let other = run(&app, &id, "echo free", None).await;
    assert_eq!(other["stdout"], "free\n");

    let first = slow.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let after = run(&app, &id, "touch second", Some(&session)).await;
    assert_eq!(after["exit_code"], 0);
    assert!(root.join("second").exists());
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let root = path_of(&ws);

    let started = std::time::Instant::now();
    let (status, result) = app
        .post(
            &format!("/v1/workspaces/{id}/command"),
            json!({
                "command": "sleep 300 & echo $! > bg.pid; sh -c 'echo $$ > child.pid; sleep 300'",
                "timeout_secs": 1
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["timed_out"], true);
    assert_eq!(result["exit_code"], Value::Null);
    assert!(started.elapsed() < Duration::from_secs(10));
    for file in ["bg.pid", "child.pid"] {
        let pid = std::fs::read_to_string(root.join(file)).unwrap();
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        eventually(Duration::from_secs(5), "the process to be gone", || {
            let gone = !proc.exists()
                || std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z "));
            async move { gone.then_some(()) }
        })
        .await;
    }

    // Background processes do not outlive a command that exits normally either.
    let result = run(&app, id, "sleep 300 & echo $!", None).await;
    let pid = result["stdout"].as_str().unwrap().trim().to_owned();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    eventually(
        Duration::from_secs(5),
        "the background process to be gone",
        || {
            let gone = !proc.exists()
                || std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z "));
            async move { gone.then_some(()) }
        },
    )
    .await;

    for timeout in [0, 601] {
        let (status, body) = app
            .post(
                &format!("/v1/workspaces/{id}/command"),
                json!({ "command": "true", "timeout_secs": timeout }),
            )
            .await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("timeout_secs"), "{message}");
    }
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn output_is_capped_and_flagged() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let cap = otter_core::shell::MAX_OUTPUT_BYTES;
    let result = run(
        &app,
        id,
        "head -c 3000000 /dev/zero | tr '\\0' 'a'; echo; echo small >&2",
        None,
    )
    .await;
    assert_eq!(result["truncated"], true);
    assert_eq!(result["exit_code"], 0);
    let stdout = result["stdout"].as_str().unwrap();
    assert!(
        stdout.len() <= cap && stdout.len() > cap - 10,
        "{}",
        stdout.len()
    );
    assert_eq!(result["stderr"], "small\n");
}

#[tokio::test]
async fn otters_secrets_are_not_in_a_commands_environment() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    // The test process has DATABASE_URL and REDIS_URL (scripts/env.sh), like a server would.
    assert!(std::env::var("DATABASE_URL").is_ok());
    let result = run(&app, id, "env", None).await;
    let env = result["stdout"].as_str().unwrap();
    for line in env.lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(
            !name.starts_with("OTTER_") && name != "DATABASE_URL" && name != "REDIS_URL",
            "{line}"
        );
    }
    assert!(env.contains(&format!("VIBE_HOME={}", ws["vibe_home"].as_str().unwrap())));
}

#[tokio::test]
async fn the_workspace_less_endpoint_uses_the_named_or_the_default_workspace() {
    let default_dir =
        std::env::temp_dir().join(format!("otter-default-{}", uuid::Uuid::new_v4().simple()));
    let app = TestApp::spawn_with(&[(
        "OTTER_DEFAULT_WORKSPACE_PATH",
        default_dir.to_str().unwrap(),
    )])
    .await;
    let (status, result) = app
        .post("/v1/workspaces/command", json!({ "command": "pwd" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let canonical = default_dir.canonicalize().unwrap();
    assert_eq!(result["stdout"], format!("{}\n", canonical.display()));

    let ws = app.workspace("named").await;
    let (status, named) = app
        .post(
            "/v1/workspaces/command",
            json!({ "command": "mkdir x && cd x", "workspace_id": ws["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{named}");
    assert_eq!(named["workspace_id"], ws["id"]);
    let (status, again) = app
        .post(
            "/v1/workspaces/command",
            json!({ "command": "pwd", "workspace_id": ws["id"], "shell_session_id": named["shell_session_id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["stdout"],
        format!("{}/x\n", ws["path"].as_str().unwrap())
    );

    // Its session belongs to the named workspace, not the default one.
    let (status, body) = app
        .post(
            "/v1/workspaces/command",
            json!({ "command": "pwd", "shell_session_id": named["shell_session_id"] }),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    std::fs::remove_dir_all(default_dir).ok();

    // Without a default workspace the field is required.
    let plain = TestApp::spawn().await;
    let (status, body) = plain
        .post("/v1/workspaces/command", json!({ "command": "pwd" }))
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("workspace_id"), "{message}");
}

#[tokio::test]
async fn bad_command_requests_get_clear_4xx() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let path = format!("/v1/workspaces/{id}/command");
    for (body, needle) in [
        (json!({}), "command"),
        (json!({ "command": "  " }), "command"),
        (json!({ "command": "echo a\u{0}b" }), "NUL"),
        (
            json!({ "command": "x".repeat(otter_core::shell::MAX_COMMAND_BYTES + 1) }),
            "command",
        ),
        (json!({ "command": "ls", "cwd": "/" }), "cwd"),
        (json!({ "command": 5 }), "command"),
        (
            json!({ "command": "ls", "timeout_secs": -1 }),
            "timeout_secs",
        ),
    ] {
        let (status, resp) = app.post(&path, body.clone()).await;
        let message = assert_error(status, &resp, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{}/command", uuid::Uuid::new_v4()),
            json!({ "command": "ls" }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_command_of_a_client_that_went_away_is_stopped() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let root = path_of(&ws);
    let session = run(&app, id, "true", None).await["shell_session_id"].clone();

    let request = app
        .builder(
            reqwest::Method::POST,
            &format!("/v1/workspaces/{id}/command"),
        )
        .timeout(Duration::from_secs(3))
        .json(&json!({
            "command": "echo $$ > sh.pid; sleep 300",
            "shell_session_id": session,
        }));
    assert!(request.send().await.is_err(), "the client gave up");
    let pid_file = root.join("sh.pid");
    let pid = eventually(Duration::from_secs(5), "the command to start", || {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|p| p.ends_with('\n'));
        async move { pid }
    })
    .await;
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    eventually(Duration::from_secs(10), "the command to be stopped", || {
        let gone = !proc.exists()
            || std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z "));
        async move { gone.then_some(()) }
    })
    .await;
    // And its session is free again.
    let next = eventually(
        Duration::from_secs(10),
        "the session to be released",
        || {
            let app = &app;
            let session = session.clone();
            async move {
                let (status, body) = app
                    .post(
                        &format!("/v1/workspaces/{id}/command"),
                        json!({ "command": "echo again", "shell_session_id": session }),
                    )
                    .await;
                (status == StatusCode::OK).then_some(body)
            }
        },
    )
    .await;
    assert_eq!(next["stdout"], "again\n");
    app.assert_no_processes_left().await;
}
