//! Paths checked at the moment they are used (issue 14, parts 6 and 7): a workspace created
//! through a link makes nothing outside the allowed roots, a symlinked allowed root is the same
//! root, names over the filesystem's limit, sockets, devices and files swapped while they are
//! read all get a clear 4xx, never a 500; and client errors are not logged at error level.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use otter_testkit::{TestApp, assert_error};

use crate::logs::Logs;

/// A scratch directory holding an allowed root `allowed` and beside it `outside`; both
/// canonical. Removed when dropped.
struct Scratch {
    base: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let base =
            std::env::temp_dir().join(format!("otter-paths-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(base.join("allowed")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        Self {
            base: base.canonicalize().unwrap(),
        }
    }

    fn allowed(&self) -> PathBuf {
        self.base.join("allowed")
    }

    fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    /// Every path under `outside`, for "nothing was made there".
    fn outside_entries(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                out.push(entry.path());
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.outside(), &mut out);
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

async fn create(app: &TestApp, path: &str) -> (StatusCode, Value) {
    app.post("/v1/workspaces", json!({ "path": path, "create": true }))
        .await
}

#[tokio::test]
async fn creating_through_a_link_out_of_the_roots_makes_nothing_outside() {
    let scratch = Scratch::new();
    let allowed = scratch.allowed();
    let app = TestApp::spawn_with(&[("OTTER_ALLOWED_ROOTS", allowed.to_str().unwrap())]).await;
    use std::os::unix::fs::symlink;
    symlink(scratch.outside(), allowed.join("escape")).unwrap();
    symlink("../outside", allowed.join("escape-rel")).unwrap();
    std::fs::create_dir_all(allowed.join("sub")).unwrap();
    symlink("../../outside", allowed.join("sub/up")).unwrap();
    symlink("escape", allowed.join("chain")).unwrap();
    // A dangling link whose target lies outside: creating "through" it would make the target.
    symlink(
        scratch.outside().join("made-by-link"),
        allowed.join("dangling"),
    )
    .unwrap();

    for path in [
        "escape/new/dir",
        "escape/new",
        "escape-rel/new/dir",
        "sub/up/new",
        "chain/new",
        "dangling",
        "dangling/below",
    ] {
        let raw = format!("{}/{path}", allowed.display());
        let (status, body) = create(&app, &raw).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(
            message.contains("outside the allowed roots"),
            "{path}: {message}"
        );
        assert!(
            scratch.outside_entries().is_empty(),
            "{path} made {:?} outside the roots",
            scratch.outside_entries()
        );
    }
    let (_, list) = app.get("/v1/workspaces").await;
    assert_eq!(list["total"], 0, "{list}");

    // A link that stays inside the root is followed, and the workspace's path is the real one.
    std::fs::create_dir_all(allowed.join("real")).unwrap();
    symlink("real", allowed.join("inner")).unwrap();
    let (status, ws) = create(&app, &format!("{}/inner/made/here", allowed.display())).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert_eq!(
        ws["path"],
        allowed.join("real/made/here").display().to_string()
    );
    assert!(allowed.join("real/made/here").is_dir());
    // An existing directory with `create` is simply registered.
    let (status, ws) = create(&app, &format!("{}/sub", allowed.display())).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    // A file where a directory is wanted is a 400 too, not a 500.
    std::fs::write(allowed.join("file"), "x").unwrap();
    for path in ["file", "file/below"] {
        let (status, body) = create(&app, &format!("{}/{path}", allowed.display())).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("not a directory"), "{path}: {message}");
    }
}

#[tokio::test]
async fn a_name_longer_than_the_filesystem_takes_is_a_400_naming_the_limit() {
    let scratch = Scratch::new();
    let allowed = scratch.allowed();
    let long = "n".repeat(256);
    for roots in [Some(allowed.to_str().unwrap()), None] {
        let extra: Vec<(&str, &str)> = roots
            .map(|r| ("OTTER_ALLOWED_ROOTS", r))
            .into_iter()
            .collect();
        let app = TestApp::spawn_with(&extra).await;
        for path in [
            format!("{}/{long}", allowed.display()),
            format!("{}/{long}/below", allowed.display()),
            format!("{}/ok/{long}", allowed.display()),
        ] {
            for create in [true, false] {
                let (status, body) = app
                    .post("/v1/workspaces", json!({ "path": path, "create": create }))
                    .await;
                let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
                assert!(
                    message.contains("255 bytes"),
                    "{roots:?} {create}: {message}"
                );
            }
        }
        // 255 is fine.
        let (status, ws) =
            create(&app, &format!("{}/{}", allowed.display(), "n".repeat(255))).await;
        assert_eq!(status, StatusCode::CREATED, "{ws}");
        std::fs::remove_dir(allowed.join("n".repeat(255))).unwrap();
    }

    // The file API says the same.
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    for endpoint in ["file", "tree"] {
        let (status, body) = app
            .get(&format!(
                "/v1/workspaces/{}/{endpoint}?path=a/{long}",
                ws["id"].as_str().unwrap()
            ))
            .await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("255 bytes"), "{endpoint}: {message}");
    }
}

#[tokio::test]
async fn a_symlinked_allowed_root_is_the_same_root() {
    let scratch = Scratch::new();
    let link = scratch.base.join("link");
    std::os::unix::fs::symlink(scratch.allowed(), &link).unwrap();
    let default = link.join("default");
    let app = TestApp::spawn_with(&[
        ("OTTER_ALLOWED_ROOTS", link.to_str().unwrap()),
        ("OTTER_DEFAULT_WORKSPACE_PATH", default.to_str().unwrap()),
    ])
    .await;

    // The default workspace, made on first use.
    let (status, job) = app.post("/v1/prompts", json!({ "prompt": "hi" })).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let (_, default_ws) = app
        .get(&format!(
            "/v1/workspaces/{}",
            job["workspace_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        default_ws["path"],
        scratch.allowed().join("default").display().to_string()
    );

    // Paths spelled through the link and through the real directory, existing or made.
    std::fs::create_dir_all(scratch.allowed().join("existing")).unwrap();
    for (path, create) in [
        (link.join("existing"), false),
        (link.join("made/by/create"), true),
        (scratch.allowed().join("real-spelling"), true),
    ] {
        let (status, ws) = app
            .post(
                "/v1/workspaces",
                json!({ "path": path.display().to_string(), "create": create }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{path:?}: {ws}");
        let id = ws["id"].as_str().unwrap();
        std::fs::write(
            Path::new(ws["path"].as_str().unwrap()).join("f.txt"),
            "here",
        )
        .unwrap();
        let (status, file) = app
            .get(&format!("/v1/workspaces/{id}/file?path=f.txt"))
            .await;
        assert_eq!(status, StatusCode::OK, "{path:?}: {file}");
        let (status, tree) = app.get(&format!("/v1/workspaces/{id}/tree")).await;
        assert_eq!(status, StatusCode::OK, "{path:?}: {tree}");
        let (status, result) = app
            .post(
                &format!("/v1/workspaces/{id}/command"),
                json!({ "command": "cat f.txt" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path:?}: {result}");
        assert_eq!(result["stdout"], "here\n");
    }
    // The roots still hold: outside them is refused, whichever spelling.
    let (status, body) = create(&app, &scratch.outside().join("x").display().to_string()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(scratch.outside_entries().is_empty());
}

#[tokio::test]
async fn sockets_and_devices_are_refused_without_being_opened() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let dir = PathBuf::from(ws["path"].as_str().unwrap());
    let _listener = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
    // A terminal device (/dev/tty's numbers): making one needs root, as the test suite runs.
    let tty = std::process::Command::new("mknod")
        .arg(dir.join("tty"))
        .args(["c", "5", "0"])
        .status()
        .is_ok_and(|s| s.success());
    if !tty {
        otter_testkit::prerequisite_missing(
            "sockets_and_devices_are_refused_without_being_opened",
            "mknod of a character device failed (the test suite runs as root, as CI does)",
        );
    }
    let special = ["sock", "tty"];
    for name in &special {
        let (status, body) = app
            .get(&format!("/v1/workspaces/{id}/file?path={name}"))
            .await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("not a regular file"), "{name}: {message}");
    }
    // Listed as `other`, like FIFOs.
    let (status, tree) = app.get(&format!("/v1/workspaces/{id}/tree")).await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    for name in &special {
        let entry = tree["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == *name)
            .unwrap_or_else(|| panic!("{name} listed: {tree}"));
        assert_eq!(entry["kind"], "other", "{tree}");
    }
}

/// Swaps `dir/name` between a symlink to `target` and a real file or directory (`real`, made
/// beforehand) until `stop` is set, each swap one atomic exchange: the name always exists.
fn swapper(
    dir: PathBuf,
    name: &'static str,
    target: &'static str,
    real: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    std::thread::spawn(move || {
        let (place, other) = (dir.join(name), dir.join(real));
        let mut swaps = 0u64;
        while !stop.load(Ordering::Relaxed) {
            renameat2(
                AT_FDCWD,
                &place,
                AT_FDCWD,
                &other,
                RenameFlags::RENAME_EXCHANGE,
            )
            .expect("exchange");
            swaps += 1;
        }
        swaps
    })
}

#[tokio::test]
async fn files_swapped_while_they_are_read_get_a_4xx_never_a_500() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let dir = PathBuf::from(ws["path"].as_str().unwrap());
    std::fs::write(dir.join("target.txt"), "TARGET").unwrap();
    std::fs::write(dir.join("real.txt"), "REAL").unwrap();
    std::fs::create_dir_all(dir.join("target-dir")).unwrap();
    std::fs::write(dir.join("target-dir/in.txt"), "IN").unwrap();
    std::fs::create_dir_all(dir.join("real-dir")).unwrap();
    std::fs::write(dir.join("real-dir/in.txt"), "REAL IN").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swappers = [
        swapper(dir.clone(), "f", "target.txt", "real.txt", stop.clone()),
        swapper(dir.clone(), "d", "target-dir", "real-dir", stop.clone()),
    ];
    let mut seen: std::collections::BTreeMap<u16, usize> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut requests = 0;
    while requests < 3000 && tokio::time::Instant::now() < deadline {
        for path in [
            format!("/v1/workspaces/{id}/file?path=f"),
            format!("/v1/workspaces/{id}/tree?path=d"),
            format!("/v1/workspaces/{id}/file?path=d/in.txt"),
        ] {
            requests += 1;
            let (status, body) = app.get(&path).await;
            *seen.entry(status.as_u16()).or_default() += 1;
            assert!(
                !status.is_server_error(),
                "{path} answered {status} after {requests} requests: {body}"
            );
            if status.is_client_error() {
                assert!(body["error"]["message"].is_string(), "{body}");
            }
            if status == StatusCode::OK && path.ends_with("path=f") {
                assert!(
                    ["TARGET", "REAL"].contains(&body["content"].as_str().unwrap_or_default()),
                    "{body}"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps: u64 = swappers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(swaps > 100, "the files were hardly swapped ({swaps})");
    assert!(seen.get(&200).copied().unwrap_or_default() > 0, "{seen:?}");
    eprintln!("{requests} requests, {swaps} swaps: {seen:?}");
}

#[tokio::test]
async fn client_errors_are_not_logged_at_error_level() {
    let (logs, _guard) = Logs::capture();
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    let job = app.submit(&ws, "hello").await;
    let job_id = job["id"].as_str().unwrap();

    let (status, body) = app
        .post("/v1/workspaces", json!({ "path": ws["path"] }))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = app
        .request(Method::DELETE, &format!("/v1/workspaces/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, _) = app
        .post(&format!("/v1/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, body) in [
        (
            Method::POST,
            format!("/v1/jobs/{job_id}/cancel"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{job_id}/pause"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{job_id}/resume"),
            Some(json!({})),
        ),
        (
            Method::PATCH,
            format!("/v1/queue/{job_id}"),
            Some(json!({ "priority": 3 })),
        ),
        (Method::DELETE, format!("/v1/workspaces/{id}"), None),
    ] {
        let (status, body) = app.request(method, &path, body).await;
        assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    }
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "x", "workspace_id": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    let logged = logs.errors();
    assert!(
        logged.is_empty(),
        "client errors logged at ERROR: {logged:#?}"
    );
}
