//! A hostile client against the workspace endpoints: `..` in every spelling, absolute paths,
//! symlinks that leave the root, NUL bytes, over-long paths, shell sessions that `cd` out, no or
//! a wrong token, an oversized body. Each is refused with a clear 4xx, and each test checks that
//! nothing outside the workspace root was read (a canary file's secret never appears in an
//! answer) or written (a file the attack would create outside does not exist).

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use otter_testkit::{TestApp, assert_error};

/// A workspace under an allowed root, and beside it a directory the client must never reach.
struct Arena {
    app: TestApp,
    id: String,
    root: PathBuf,
    outside: PathBuf,
    /// The content of `outside/<canary_name>`: must never appear in an answer.
    secret: String,
    /// The name of the canary file: must never appear in a listing.
    canary_name: String,
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Some(scratch) = self.outside.parent() {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

impl Arena {
    async fn new(extra: &[(&str, &str)]) -> Self {
        let base = std::env::temp_dir()
            .join(format!("otter-attack-{}", uuid::Uuid::new_v4().simple()))
            .join("allowed");
        std::fs::create_dir_all(&base).unwrap();
        let base = base.canonicalize().unwrap();
        let outside = base.parent().unwrap().join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        let secret = format!("OTTER-CANARY-{}", uuid::Uuid::new_v4().simple());
        let canary_name = format!("canary-{}.txt", uuid::Uuid::new_v4().simple());
        std::fs::write(outside.join(&canary_name), &secret).unwrap();
        std::fs::write(outside.join("secret.txt"), &secret).unwrap();
        std::fs::write(outside.join("dir/secret.txt"), &secret).unwrap();

        let mut vars = vec![("OTTER_ALLOWED_ROOTS", base.to_str().unwrap())];
        vars.extend_from_slice(extra);
        let app = TestApp::spawn_with(&vars).await;
        let root = base.join("ws");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("ok.txt"), "fine").unwrap();
        // Commands run as the job user when the server is root.
        otter_testkit::give_to_job_user(&root);
        let (status, ws) = app
            .post(
                "/v1/workspaces",
                json!({ "name": "ws", "path": root.to_str().unwrap() }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ws}");

        // Symlinks the workspace's own processes could have made.
        use std::os::unix::fs::symlink;
        symlink(outside.join("secret.txt"), root.join("link-file")).unwrap();
        symlink("../../outside/secret.txt", root.join("link-rel")).unwrap();
        symlink(&outside, root.join("link-dir")).unwrap();
        symlink("../../../outside", root.join("sub/link-up")).unwrap();
        symlink("hop", root.join("chain")).unwrap();
        symlink(outside.join("dir"), root.join("hop")).unwrap();
        symlink("../ws/ok.txt", root.join("out-and-back")).unwrap();
        symlink("/etc/passwd", root.join("passwd")).unwrap();
        Self {
            id: ws["id"].as_str().unwrap().to_owned(),
            app,
            root,
            outside,
            secret,
            canary_name,
        }
    }

    /// GETs `path_and_query` exactly as written (no client-side normalization of the query).
    async fn get_raw(&self, path_and_query: &str) -> (StatusCode, Value, String) {
        let resp = self
            .app
            .builder(Method::GET, path_and_query)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value, text)
    }

    /// Asserts that `text` shows nothing from outside the root.
    fn assert_nothing_leaked(&self, what: &str, text: &str) {
        assert!(
            !text.contains(&self.secret),
            "{what} leaked the canary: {text}"
        );
        assert!(
            !text.contains(&self.canary_name),
            "{what} listed outside: {text}"
        );
        assert!(!text.contains("root:x:0:0"), "{what} leaked /etc/passwd");
    }

    async fn command(&self, command: &str, session: Option<&Value>) -> Value {
        let mut body = json!({ "command": command });
        if let Some(session) = session {
            body["shell_session_id"] = session.clone();
        }
        let (status, result) = self
            .app
            .post(&format!("/v1/workspaces/{}/command", self.id), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{command}: {result}");
        self.assert_nothing_leaked(command, &result.to_string());
        result
    }
}

/// Every spelling of "a path outside the root" for the file endpoint (URL-encoded as sent).
const FILE_ATTACKS: &[&str] = &[
    // `..`, plain and URL-encoded, and double-encoded (refused rather than trusted to stay
    // literal), with every separator.
    "../outside/secret.txt",
    "../../etc/passwd",
    "..%2Foutside%2Fsecret.txt",
    "%2e%2e/outside/secret.txt",
    "%2E%2E%2Foutside%2Fsecret.txt",
    "%252e%252e%252foutside%252fsecret.txt",
    "%25252e%25252e/outside/secret.txt",
    "..%5Coutside%5Csecret.txt",
    "..\\outside\\secret.txt",
    "sub%2F..%5C..%5Coutside%5Csecret.txt",
    "sub/../../outside/secret.txt",
    "sub/./../..//outside/secret.txt",
    "./../outside/secret.txt",
    "sub/%2e%2e/%2e%2e/outside/secret.txt",
    "ok.txt/../../outside/secret.txt",
    // Absolute paths.
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "//etc/passwd",
    // NUL bytes.
    "ok.txt%00",
    "..%00/outside/secret.txt",
    "%00",
    // Symlinks that leave the root: to a file, to a directory, relative, chained, through a
    // subdirectory, out and back in.
    "link-file",
    "link-rel",
    "link-dir/secret.txt",
    "link-dir/dir/secret.txt",
    "sub/link-up/secret.txt",
    "chain/secret.txt",
    "out-and-back",
    "passwd",
];

#[tokio::test]
async fn file_reads_never_leave_the_root() {
    let arena = Arena::new(&[]).await;
    let id = &arena.id;
    // The outside file itself, by its absolute path.
    let absolute = format!(
        "{}/secret.txt",
        arena.outside.display().to_string().replace('/', "%2F")
    );
    let mut attacks: Vec<String> = FILE_ATTACKS.iter().map(|s| (*s).to_owned()).collect();
    attacks.push(absolute);
    for attack in &attacks {
        let (status, body, text) = arena
            .get_raw(&format!("/v1/workspaces/{id}/file?path={attack}"))
            .await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(
            [
                "..",
                "absolute",
                "NUL",
                "outside the workspace",
                "separator",
                "encoded"
            ]
            .iter()
            .any(|n| message.contains(n)),
            "{attack}: {message}"
        );
        arena.assert_nothing_leaked(attack, &text);
    }
    // The legitimate neighbour works, so the refusals above were about the path.
    let (status, body, _) = arena
        .get_raw(&format!("/v1/workspaces/{id}/file?path=ok.txt"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["content"], "fine");
}

#[tokio::test]
async fn listings_never_leave_the_root() {
    let arena = Arena::new(&[]).await;
    let id = &arena.id;
    for attack in [
        "..",
        "../outside",
        "%2e%2e",
        "%2E%2E%2F",
        "%252e%252e",
        "sub/../..",
        "..%5C",
        "/",
        "%2F",
        "/tmp",
        "link-dir",
        "link-dir/dir",
        "sub/link-up",
        "chain",
        "hop",
        "sub%00",
    ] {
        let (status, body, text) = arena
            .get_raw(&format!("/v1/workspaces/{id}/tree?path={attack}"))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        arena.assert_nothing_leaked(attack, &text);
    }
    // The whole tree, as deep as allowed: the links are listed, never entered.
    let (status, tree, text) = arena
        .get_raw(&format!("/v1/workspaces/{id}/tree?depth=16"))
        .await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    arena.assert_nothing_leaked("the whole tree", &text);
    let link = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "link-dir")
        .expect("link-dir listed");
    assert_eq!(link["kind"], "symlink");
    assert!(link.get("children").is_none());
}

#[tokio::test]
async fn very_long_paths_are_refused() {
    let arena = Arena::new(&[]).await;
    let id = &arena.id;
    for (path, needle) in [
        ("a/".repeat(2100), "longer than 4096"),
        ("a".repeat(300), "too long"),
        (format!("sub/{}", "b".repeat(256)), "too long"),
    ] {
        for endpoint in ["file", "tree"] {
            let (status, body, text) = arena
                .get_raw(&format!("/v1/workspaces/{id}/{endpoint}?path={path}"))
                .await;
            let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
            assert!(message.contains(needle), "{endpoint}: {message}");
            arena.assert_nothing_leaked(endpoint, &text);
        }
    }
}

#[tokio::test]
async fn a_shell_session_never_starts_a_command_outside_the_root() {
    let arena = Arena::new(&[]).await;
    let root = &arena.root;
    let outside = arena.outside.display().to_string();
    let parent = root.parent().unwrap().to_path_buf();
    let session = arena.command("true", None).await["shell_session_id"].clone();

    // `cd` out by every route: to /, to the parent, to an absolute path, through symlinks (made
    // before or by the command itself), and by spoofing the shell's own `pwd`.
    for (n, attack) in [
        "cd /".to_owned(),
        "cd ..".to_owned(),
        "cd ../..".to_owned(),
        format!("cd {outside}"),
        "cd link-dir".to_owned(),
        "cd sub/link-up".to_owned(),
        "ln -s ../../outside made-link && cd made-link".to_owned(),
        format!("pwd() {{ echo {outside}; }}"),
        "cd sub; cd /tmp".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let result = arena.command(attack, Some(&session)).await;
        assert_eq!(
            result["cwd"],
            root.display().to_string(),
            "{attack}: {result}"
        );
        let warning = result["warning"].as_str().unwrap_or_default();
        assert!(
            warning.contains("outside the workspace"),
            "{attack}: {result}"
        );

        // The next command runs in the root: it cannot read the canary by a relative path, and
        // what it writes lands inside.
        let marker = format!("written-{n}");
        let next = arena
            .command(
                &format!("pwd; cat secret.txt dir/secret.txt; touch {marker}"),
                Some(&session),
            )
            .await;
        assert_eq!(
            next["stdout"].as_str().unwrap().lines().next(),
            Some(root.to_str().unwrap()),
            "{attack}: {next}"
        );
        assert!(root.join(&marker).is_file(), "{attack}");
        for place in [Path::new("/"), &arena.outside, &parent, Path::new("/tmp")] {
            assert!(
                !place.join(&marker).exists(),
                "{attack}: wrote into {place:?}"
            );
        }
        std::fs::remove_file(root.join(marker)).unwrap();
    }
}

#[tokio::test]
async fn a_session_directory_swapped_for_a_symlink_is_not_followed() {
    let arena = Arena::new(&[]).await;
    let root = &arena.root;
    std::fs::create_dir_all(root.join("work")).unwrap();
    let first = arena.command("cd work", None).await;
    assert_eq!(first["cwd"], root.join("work").display().to_string());
    let session = first["shell_session_id"].clone();

    // Between two commands, the session's directory becomes a link out of the workspace.
    std::fs::remove_dir(root.join("work")).unwrap();
    std::os::unix::fs::symlink(&arena.outside, root.join("work")).unwrap();
    let next = arena
        .command("pwd; cat secret.txt; touch swapped", Some(&session))
        .await;
    assert_eq!(
        next["stdout"].as_str().unwrap().lines().next(),
        root.to_str()
    );
    assert!(
        next["warning"]
            .as_str()
            .is_some_and(|w| w.contains("no longer lies inside")),
        "{next}"
    );
    assert_eq!(next["cwd"], root.display().to_string());
    assert!(!arena.outside.join("swapped").exists());
    assert!(root.join("swapped").is_file());

    // Likewise when the directory was removed.
    std::fs::create_dir_all(root.join("gone")).unwrap();
    let gone = arena.command("cd gone", Some(&session)).await;
    assert_eq!(gone["cwd"], root.join("gone").display().to_string());
    std::fs::remove_dir(root.join("gone")).unwrap();
    let after = arena.command("pwd", Some(&session)).await;
    assert_eq!(after["stdout"], format!("{}\n", root.display()));
    assert!(after["warning"].is_string());
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_before_anything_runs() {
    let arena = Arena::new(&[("OTTER_API_TOKENS", "right-token")]).await;
    let id = &arena.id;
    let escape = arena.outside.join("token-attack");
    let inside = arena.root.join("token-attack");
    let command = format!("touch {} {}", escape.display(), inside.display());
    for token in [
        None,
        Some("wrong-token"),
        Some("right-token-but-longer"),
        Some(""),
    ] {
        for (method, path, body) in [
            (
                Method::POST,
                format!("/v1/workspaces/{id}/command"),
                Some(json!({ "command": command })),
            ),
            (
                Method::POST,
                "/v1/workspaces/command".to_owned(),
                Some(json!({ "command": command, "workspace_id": id })),
            ),
            (
                Method::GET,
                format!("/v1/workspaces/{id}/file?path=link-file"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/workspaces/{id}/file?path=ok.txt"),
                None,
            ),
            (Method::GET, format!("/v1/workspaces/{id}/tree"), None),
        ] {
            let (status, headers, body) = arena
                .app
                .send(arena.app.builder_as(token, method, &path), body)
                .await;
            assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(headers["www-authenticate"], "Bearer");
            let text = body.to_string();
            arena.assert_nothing_leaked(&path, &text);
            assert!(!text.contains("fine"), "{path}: {text}");
        }
    }
    assert!(
        !escape.exists() && !inside.exists(),
        "a refused command ran"
    );
    // The right token runs it (here the command may write outside: it is not a sandbox).
    let (status, result) = arena
        .app
        .post(
            &format!("/v1/workspaces/{id}/command"),
            json!({ "command": format!("touch {}", inside.display()) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert!(inside.exists());
}

#[tokio::test]
async fn an_oversized_body_is_a_413_and_runs_nothing() {
    let arena = Arena::new(&[]).await;
    let marker = arena.root.join("big-ran");
    let command = format!(
        "touch {}; # {}",
        marker.display(),
        "x".repeat(2 * 1024 * 1024)
    );
    let body = json!({ "command": command });
    // Announced by Content-Length.
    let (status, body_json) = arena
        .app
        .post(
            &format!("/v1/workspaces/{}/command", arena.id),
            body.clone(),
        )
        .await;
    assert_error(
        status,
        &body_json,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // And streamed without a length.
    let bytes = serde_json::to_vec(&body).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let (status, _, body_json) = arena
        .app
        .send(
            arena
                .app
                .builder(Method::POST, "/v1/workspaces/command")
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
            None,
        )
        .await;
    assert_error(
        status,
        &body_json,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert!(!marker.exists(), "the oversized command ran");
}
