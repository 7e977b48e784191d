//! Runtime containers against the machine's real Docker engine: build from a workspace's
//! Dockerfile, run, preview over HTTP, logs, a shell over WebSocket, restart, stop, delete and
//! the cleanup of orphans; and the clear 503 when the runtime is disabled.
//!
//! The engine cannot pull images, so the test app is built `FROM scratch` with the statically
//! linked busybox of Debian's `busybox-static` (scripts/test.sh installs it) and serves HTTP with
//! `busybox httpd`. Every container, image and network gets a name unique to its test and is
//! removed by [`DockerCleanup`] even when the test fails. Where no Docker engine answers at all,
//! the Docker tests fail, saying so: they never pass without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use otter_testkit::{TestApp, assert_error, eventually};

use crate::logs::Logs;

/// Where Debian's busybox-static puts its binary.
const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// How long a build, or an app coming up, may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Names unique to one test, and the removal of everything Docker holds under them.
struct DockerCleanup {
    id: String,
    container_prefix: String,
    image_prefix: String,
    network: String,
    /// Containers made by the test itself under other names.
    extra_containers: Vec<String>,
}

impl DockerCleanup {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self {
            container_prefix: format!("otter-test-{id}"),
            image_prefix: format!("otter-test/{id}"),
            network: format!("otter-test-{id}"),
            extra_containers: Vec::new(),
            id,
        }
    }

    /// The runtime settings of a test app.
    fn vars(&self) -> Vec<(&str, &str)> {
        vec![
            ("OTTER_RUNTIME_ENABLED", "true"),
            ("OTTER_RUNTIME_CONTAINER_PREFIX", &self.container_prefix),
            ("OTTER_RUNTIME_IMAGE_PREFIX", &self.image_prefix),
            ("OTTER_RUNTIME_NETWORK", &self.network),
            ("OTTER_RUNTIME_DEFAULT_HOST", "http://127.0.0.1"),
            ("OTTER_RUNTIME_MAX_LOG_LINES", "50"),
        ]
    }
}

fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let mut containers: Vec<String> = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("name={}", self.container_prefix),
            "--format",
            "{{.Names}}",
        ])
        .unwrap_or_default()
        .lines()
        .filter(|n| n.starts_with(&self.container_prefix))
        .map(str::to_owned)
        .collect();
        containers.extend(self.extra_containers.iter().cloned());
        for name in &containers {
            let _ = docker(&["rm", "-f", "-v", name]);
        }
        let images: Vec<String> = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .unwrap_or_default()
            .lines()
            .filter(|i| i.starts_with(&self.image_prefix))
            .map(str::to_owned)
            .collect();
        for image in &images {
            let _ = docker(&["rmi", "-f", image]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// A test app with the runtime enabled; fails the test when no Docker engine answers.
async fn docker_app(cleanup: &DockerCleanup) -> TestApp {
    let app = TestApp::spawn_with(&cleanup.vars()).await;
    let runtime = app.state.runtime.clone().expect("the runtime is enabled");
    match runtime.ping().await {
        Ok(()) => app,
        Err(e) => otter_testkit::prerequisite_missing(
            "the runtime container tests",
            &format!("no Docker engine answers ({e}); they need one (DESIGN.md §9)"),
        ),
    }
}

/// Whether an ELF executable has no program interpreter (is statically linked).
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3) // PT_INTERP
    })
}

fn static_busybox() -> PathBuf {
    BUSYBOX_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| is_static_elf(p))
        .expect(
            "a statically linked busybox is needed to build test images without a registry: \
             install Debian's busybox-static (scripts/test.sh does: apt-get install busybox-static)",
        )
}

/// Writes a busybox httpd app into `dir`: it prints `otter-app-started`, then serves `marker`
/// at `/`. The test's id in a label keeps its image layers its own.
fn write_app(dir: &Path, test_id: &str, marker: &str) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::copy(static_busybox(), dir.join("busybox")).unwrap();
    std::fs::write(dir.join("www/index.html"), format!("{marker}\n")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             LABEL otter.test={test_id}\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             COPY www /www\n\
             EXPOSE 8080\n\
             CMD [\"/bin/sh\", \"-c\", \"echo otter-app-started; exec httpd -f -v -p 8080 -h /www\"]\n"
        ),
    )
    .unwrap();
}

async fn fetch(url: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    resp.text().await.ok()
}

/// Waits until the preview answers with `marker`.
async fn wait_for_preview(url: &str, marker: &str) {
    eventually(DEADLINE, &format!("{url} to serve the app"), || async {
        fetch(url).await.filter(|body| body.contains(marker))
    })
    .await;
}

fn container_exists(name: &str) -> bool {
    docker(&["container", "inspect", name]).is_some()
}

fn image_exists(name: &str) -> bool {
    docker(&["image", "inspect", name]).is_some()
}

#[tokio::test]
async fn disabled_runtime_answers_503_saying_so() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("plain").await;
    let id = ws["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/v1/runtime/workspaces/{id}")),
        (Method::POST, format!("/v1/runtime/workspaces/{id}/start")),
        (Method::POST, format!("/v1/runtime/workspaces/{id}/stop")),
        (Method::POST, format!("/v1/runtime/workspaces/{id}/restart")),
        (
            Method::GET,
            format!("/v1/runtime/workspaces/{id}/logs?tail=10"),
        ),
        (Method::GET, format!("/v1/runtime/workspaces/{id}/shell/ws")),
        (Method::POST, "/v1/runtime/cleanup".to_owned()),
    ] {
        let (status, body) = app.request(method.clone(), &path, None).await;
        let message = assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
        assert!(
            message.contains("OTTER_RUNTIME_ENABLED=false"),
            "{method} {path}: {message}"
        );
    }

    // Deleting a workspace works without the runtime, and never touches its directory.
    let dir = PathBuf::from(ws["path"].as_str().unwrap());
    let home = PathBuf::from(ws["vibe_home"].as_str().unwrap());
    let (status, body) = app
        .request(Method::DELETE, &format!("/v1/workspaces/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], true);
    assert_eq!(body["runtime"], Value::Null);
    assert_eq!(body["vibe_home_removed"], true);
    assert!(dir.is_dir(), "the workspace directory is the user's");
    assert!(!home.exists());
    let (status, _) = app.get(&format!("/v1/workspaces/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .request(Method::DELETE, &format!("/v1/workspaces/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_workspace_app_runs_is_previewed_logged_shelled_restarted_stopped_and_deleted() {
    let mut cleanup = DockerCleanup::new();
    let app = docker_app(&cleanup).await;
    let runtime = app.state.runtime.clone().unwrap();
    let ws = app.workspace("site").await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let ws_dir = PathBuf::from(ws["path"].as_str().unwrap());
    let marker = format!("hello from {}", cleanup.id);
    // vibe makes a project subfolder; its Dockerfile is found there.
    write_app(&ws_dir.join("site-app"), &cleanup.id, &marker);
    let base = format!("/v1/runtime/workspaces/{id}");
    let container = format!("{}-{id}", cleanup.container_prefix);
    let image = format!("{}-{id}", cleanup.image_prefix);
    cleanup.extra_containers.push(container.clone());

    let (status, before) = app.get(&base).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["status"], "none");
    assert_eq!(before["container_name"], container);
    assert_eq!(before["preview_url"], Value::Null);

    // A job of the workspace receives the build log as events.
    let (status, job) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "make a site", "workspace_id": id }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();

    // While the image builds, the status says so.
    let start_path = format!("{base}/start");
    let start = app.post(&start_path, json!({}));
    let watch = eventually(DEADLINE, "the status to say building", || async {
        let (_, body) = app.get(&base).await;
        (body["status"] == "building").then_some(())
    });
    let ((status, started), ()) = tokio::join!(start, watch);
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["action"], "created", "{started}");
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(started["image"], image);
    assert!(
        started["container_id"]
            .as_str()
            .is_some_and(|c| c.len() == 64)
    );
    assert_eq!(started["build"]["job_id"], job_id.as_str());
    assert!(
        started["build"]["context_dir"]
            .as_str()
            .unwrap()
            .ends_with("site-app")
    );
    let tail = started["build"]["log_tail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().contains("Successfully tagged")),
        "{started}"
    );
    let ports = started["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{started}");
    assert_eq!(ports[0]["container_port"], 8080);
    assert_eq!(ports[0]["host_ip"], "127.0.0.1");
    let url = started["runtime_url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!(
            "http://127.0.0.1:{}",
            ports[0]["host_port"].as_u64().unwrap()
        )
    );
    assert_eq!(started["preview_url"], url.as_str());
    assert_eq!(started["preview_url_source"], "runtime");
    assert_eq!(started["network"], cleanup.network);
    assert!(docker(&["network", "inspect", &cleanup.network]).is_some());
    wait_for_preview(&url, &marker).await;

    let (_, events) = app
        .get(&format!("/v1/jobs/{job_id}/events?limit=1000"))
        .await;
    let events = events["items"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"runtime_build_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"runtime_build_finished"), "{kinds:?}");
    assert_eq!(events.last().unwrap()["payload"]["ok"], true);
    assert!(
        events.iter().any(|e| e["kind"] == "output_chunk"
            && e["payload"]["stream"] == "runtime"
            && e["payload"]["text"]
                .as_str()
                .unwrap()
                .contains("Successfully built")),
        "{events:?}"
    );

    // start is idempotent.
    let (status, again) = app.post(&format!("{base}/start"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["action"], "already_running");
    assert_eq!(again["container_id"], started["container_id"]);
    assert_eq!(again["build"], Value::Null);

    // Logs hold the app's output (stdout) and httpd's request log (stderr), capped.
    let logs = eventually(DEADLINE, "the app's logs", || async {
        let (status, logs) = app.get(&format!("{base}/logs?tail=200")).await;
        assert_eq!(status, StatusCode::OK, "{logs}");
        let lines = logs["lines"].as_array().unwrap();
        let started = lines
            .iter()
            .any(|l| l["stream"] == "stdout" && l["text"] == "otter-app-started");
        let served = lines.iter().any(|l| {
            l["stream"] == "stderr" && l["text"].as_str().unwrap().contains("response:200")
        });
        (started && served).then_some(logs)
    })
    .await;
    assert_eq!(logs["tail"], 50, "capped at OTTER_RUNTIME_MAX_LOG_LINES");
    assert_eq!(logs["max_log_lines"], 50);
    let (status, body) = app.get(&format!("{base}/logs?tail=0")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");

    // The shell: echo hi reads hi; resize is accepted; closing the socket ends the exec.
    let ws_url = format!(
        "{}/v1/runtime/workspaces/{id}/shell/ws?cols=80&rows=24",
        app.base.replacen("http", "ws", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("shell WebSocket");
    let ready = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ready: Value = serde_json::from_str(ready.to_text().unwrap()).unwrap();
    assert_eq!(ready["type"], "ready");
    let exec_id = ready["exec_id"].as_str().unwrap().to_owned();
    socket
        .send(Message::Text(
            r#"{"type":"resize","cols":100,"rows":30}"#.into(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::Text(
            r#"{"type":"input","data":"echo hi\n"}"#.into(),
        ))
        .await
        .unwrap();
    let mut screen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Binary(bytes) = message {
                screen.extend_from_slice(&bytes);
                let text = String::from_utf8_lossy(&screen);
                if text.split("\r\n").any(|line| line == "hi") {
                    return;
                }
            }
        }
        panic!(
            "the shell ended before printing hi: {:?}",
            String::from_utf8_lossy(&screen)
        );
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no hi from the shell: {:?}",
            String::from_utf8_lossy(&screen)
        )
    });
    assert!(
        !String::from_utf8_lossy(&screen).contains("otter-shell-pid"),
        "the PID marker is not shown"
    );
    assert!(runtime.shell_state(&exec_id).await.unwrap().running);
    // A foreground job is hung up with its shell.
    socket
        .send(Message::Binary("sleep 321\n".into()))
        .await
        .unwrap();
    eventually(DEADLINE, "the shell's job to run", || async {
        docker(&["top", &container])
            .filter(|top| top.contains("sleep 321"))
            .map(drop)
    })
    .await;
    socket.close(None).await.unwrap();
    drop(socket);
    eventually(DEADLINE, "the shell to end with its socket", || async {
        (!runtime.shell_state(&exec_id).await.unwrap().running).then_some(())
    })
    .await;
    eventually(DEADLINE, "the shell's job to end", || async {
        docker(&["top", &container])
            .filter(|top| !top.contains("sleep 321"))
            .map(drop)
    })
    .await;

    // restart keeps it reachable (the host port may change: read it again).
    let (status, restarted) = app.post(&format!("{base}/restart"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{restarted}");
    assert_eq!(restarted["action"], "restarted", "{restarted}");
    assert_eq!(restarted["container_id"], started["container_id"]);
    assert_eq!(restarted["status"], "running");
    let url = restarted["runtime_url"].as_str().unwrap().to_owned();
    wait_for_preview(&url, &marker).await;

    // A preview URL posted for a job is preferred.
    sqlx::query("UPDATE jobs SET preview_url = 'http://nuc.lan:3000/' WHERE id = $1::uuid")
        .bind(&job_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let (_, status_body) = app.get(&base).await;
    assert_eq!(status_body["preview_url"], "http://nuc.lan:3000/");
    assert_eq!(status_body["preview_url_source"], "job");
    assert_eq!(status_body["runtime_url"], url.as_str());

    // stop → exited; stopping again does nothing; a shell needs a running container.
    let (status, stopped) = app.post(&format!("{base}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["action"], "stopped");
    assert_eq!(stopped["status"], "exited");
    assert_eq!(stopped["runtime_url"], Value::Null);
    assert!(stopped["exit_code"].is_number(), "{stopped}");
    let (_, again) = app.post(&format!("{base}/stop"), json!({})).await;
    assert_eq!(again["action"], "already_stopped");
    match tokio_tungstenite::connect_async(&ws_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 409);
        }
        other => panic!("expected a 409 handshake, got {other:?}"),
    }

    // start again brings the same container back.
    let (status, back) = app.post(&format!("{base}/start"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["action"], "started", "{back}");
    assert_eq!(back["container_id"], started["container_id"]);
    wait_for_preview(back["runtime_url"].as_str().unwrap(), &marker).await;

    // Delete: refused while a job is queued, then without force while it has history.
    let (status, body) = app
        .request(Method::DELETE, &format!("/v1/workspaces/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        container_exists(&container),
        "a refused delete keeps the container"
    );
    let (status, body) = app
        .post(&format!("/v1/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .request(Method::DELETE, &format!("/v1/workspaces/{id}"), None)
        .await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("force=true"), "{message}");
    let (status, deleted) = app
        .request(
            Method::DELETE,
            &format!("/v1/workspaces/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["jobs_deleted"], 1);
    assert_eq!(deleted["runtime"]["container"], true);
    assert_eq!(deleted["runtime"]["image"], true);
    assert!(!container_exists(&container));
    assert!(!image_exists(&image));
    assert!(
        ws_dir.join("site-app/Dockerfile").is_file(),
        "never deleted"
    );
    let (status, _) = app.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&base).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn builds_that_cannot_run_say_why() {
    let cleanup = DockerCleanup::new();
    let app = docker_app(&cleanup).await;
    let ws = app.workspace("broken").await;
    let id = ws["id"].as_str().unwrap();
    let dir = PathBuf::from(ws["path"].as_str().unwrap());

    // No Dockerfile anywhere: 409 naming where it looked.
    let (status, body) = app
        .post(&format!("/v1/runtime/workspaces/{id}/start"), json!({}))
        .await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains("Dockerfile"), "{message}");

    // A build that fails: 422 with the engine's error line and the log's tail.
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY missing-file.txt /\n",
    )
    .unwrap();
    let (status, body) = app
        .post(&format!("/v1/runtime/workspaces/{id}/start"), json!({}))
        .await;
    let message = assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "build_failed",
    );
    assert!(message.contains("missing-file.txt"), "{message}");
    let tail = body["error"]["log_tail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().contains("COPY missing-file.txt")),
        "{body}"
    );
    let (_, status_body) = app.get(&format!("/v1/runtime/workspaces/{id}")).await;
    assert_eq!(status_body["status"], "none");

    // Logs of a workspace without a container: 404; stopping it is already done (idempotent);
    // an unknown workspace: 404.
    let (status, body) = app.get(&format!("/v1/runtime/workspaces/{id}/logs")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .post(&format!("/v1/runtime/workspaces/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["action"], "already_stopped");
    assert_eq!(body["status"], "none");
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = app.get(&format!("/v1/runtime/workspaces/{unknown}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/runtime/workspaces/not-a-uuid").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn containers_of_deleted_workspaces_are_found_by_label_and_removed() {
    let mut cleanup = DockerCleanup::new();
    let app = docker_app(&cleanup).await;
    let ws = app.workspace("orphan").await;
    let id = ws["id"].as_str().unwrap().to_owned();
    write_app(
        &PathBuf::from(ws["path"].as_str().unwrap()),
        &cleanup.id,
        "orphan",
    );
    // Two starts at once: one creates the container, the other finds it running.
    let start = format!("/v1/runtime/workspaces/{id}/start");
    let ((status, started), (status2, started2)) =
        tokio::join!(app.post(&start, json!({})), app.post(&start, json!({})));
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(status2, StatusCode::OK, "{started2}");
    let mut actions = [
        started["action"].as_str().unwrap(),
        started2["action"].as_str().unwrap(),
    ];
    actions.sort_unstable();
    assert_eq!(actions, ["already_running", "created"]);
    assert_eq!(started["container_id"], started2["container_id"]);
    let started = if started["action"] == "created" {
        started
    } else {
        started2
    };
    assert_eq!(started["build"]["job_id"], Value::Null, "no job: no events");
    let container = format!("{}-{id}", cleanup.container_prefix);
    let image = format!("{}-{id}", cleanup.image_prefix);

    // A managed container of a workspace that never existed here, and two of other Otter
    // installations (another prefix, and a prefix that merely starts with ours), which must be
    // left alone.
    let ghost = uuid::Uuid::new_v4();
    let ghost_name = format!("{}-{ghost}", cleanup.container_prefix);
    let foreign_name = format!("otter-foreign-{}-{ghost}", cleanup.id);
    let lookalike_name = format!("{}-staging-{ghost}", cleanup.container_prefix);
    cleanup.extra_containers.push(foreign_name.clone());
    for name in [&ghost_name, &foreign_name, &lookalike_name] {
        docker(&[
            "create",
            "--name",
            name,
            "--label",
            "otter.managed=true",
            "--label",
            &format!("otter.workspace={ghost}"),
            &image,
        ])
        .expect("docker create");
    }

    let (status, report) = app.post("/v1/runtime/cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["containers_removed"], json!([ghost_name]));
    assert_eq!(report["containers_kept"], 1);
    assert_eq!(report["images_removed"], json!([]));
    assert!(!container_exists(&ghost_name));
    assert!(container_exists(&container));
    assert!(container_exists(&foreign_name));
    assert!(container_exists(&lookalike_name));

    // (The foreign containers go now: they use the test's image, which must go next.)
    for name in [&foreign_name, &lookalike_name] {
        docker(&["rm", "-f", name]).expect("docker rm");
    }

    // The workspace disappears behind Otter's back (e.g. deleted while Docker was down):
    // the next cleanup removes its container and image.
    sqlx::query("DELETE FROM workspaces WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let (status, report) = app.post("/v1/runtime/cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["containers_removed"], json!([container]));
    assert_eq!(report["images_removed"], json!([format!("{image}:latest")]));
    assert!(!container_exists(&container));
    assert!(!image_exists(&image));
}

#[tokio::test]
async fn an_unreachable_engine_answers_503_and_only_the_log_names_the_socket() {
    let (logs, _guard) = Logs::capture();
    let socket = "/nonexistent/otter-docker.sock";
    let app = TestApp::spawn_with(&[
        ("OTTER_RUNTIME_ENABLED", "true"),
        ("OTTER_RUNTIME_DOCKER_SOCKET", &format!("unix://{socket}")),
    ])
    .await;
    let ws = app.workspace("nodocker").await;
    let id = ws["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/v1/runtime/workspaces/{id}")),
        (Method::POST, format!("/v1/runtime/workspaces/{id}/start")),
        (Method::POST, "/v1/runtime/cleanup".to_owned()),
        // A delete that cannot remove the container refuses rather than leave it behind.
        (Method::DELETE, format!("/v1/workspaces/{id}")),
    ] {
        logs.take();
        let (status, body) = app.request(method.clone(), &path, None).await;
        let message = assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
        // A fixed message: neither the socket nor bollard's words.
        assert_eq!(
            message, "the Docker engine does not answer; retry later (the server's log says why)",
            "{method} {path}"
        );
        let records: Vec<_> = logs.take().into_iter().filter(|r| r.in_request).collect();
        assert_eq!(
            records.len(),
            1,
            "{method} {path}: logged once: {records:#?}"
        );
        assert_eq!(records[0].level, tracing::Level::WARN, "{records:?}");
        assert!(
            records[0].text.contains(socket),
            "{method} {path}: {records:?}"
        );
    }
    let (status, _) = app.get(&format!("/v1/workspaces/{id}")).await;
    assert_eq!(status, StatusCode::OK, "nothing was deleted");
}
