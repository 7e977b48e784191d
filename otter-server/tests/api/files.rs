//! The file explorer endpoints: `GET /v1/workspaces/{id}/tree` and `GET /v1/workspaces/{id}/file`
//! (the hostile spellings are in `attacks.rs`).

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;

use otter_testkit::{TestApp, assert_error};

/// A workspace with a few files; returns its id and directory.
async fn explorer_workspace(app: &TestApp) -> (String, PathBuf) {
    let ws = app.workspace("explorer").await;
    let dir = PathBuf::from(ws["path"].as_str().expect("path"));
    std::fs::create_dir_all(dir.join("src/nested/deeper")).unwrap();
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("README.md"), "# Hello\n").unwrap();
    std::fs::write(dir.join("b.txt"), "b").unwrap();
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(dir.join("src/nested/deeper/leaf.txt"), "leaf").unwrap();
    std::fs::write(
        dir.join("assets/logo.png"),
        [0x89, b'P', b'N', b'G', 0, 0, 1],
    )
    .unwrap();
    std::os::unix::fs::symlink("src/main.rs", dir.join("main-link")).unwrap();
    (ws["id"].as_str().unwrap().to_owned(), dir)
}

fn names(entries: &Value) -> Vec<&str> {
    entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test]
async fn the_tree_lists_directories_first_with_metadata() {
    let app = TestApp::spawn().await;
    let (id, _) = explorer_workspace(&app).await;

    let (status, tree) = app.get(&format!("/v1/workspaces/{id}/tree")).await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    assert_eq!(tree["path"], "");
    assert_eq!(tree["truncated"], false);
    assert_eq!(
        names(&tree["entries"]),
        ["assets", "src", "b.txt", "main-link", "README.md"]
    );
    let entries = tree["entries"].as_array().unwrap();
    assert_eq!(entries[0]["kind"], "directory");
    assert_eq!(entries[0]["path"], "assets");
    assert!(entries[0].get("children").is_none(), "depth 1 only");
    let readme = &entries[4];
    assert_eq!(readme["kind"], "file");
    assert_eq!(readme["size"], 8);
    assert!(readme["modified"].as_str().is_some_and(|t| t.contains('T')));
    assert_eq!(entries[3]["kind"], "symlink");
    assert_eq!(tree["entry_count"], 5);

    // Deeper, and from a subdirectory.
    let (status, tree) = app
        .get(&format!("/v1/workspaces/{id}/tree?path=src&depth=2"))
        .await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    assert_eq!(tree["path"], "src");
    assert_eq!(names(&tree["entries"]), ["nested", "main.rs"]);
    let nested = &tree["entries"][0];
    assert_eq!(nested["path"], "src/nested");
    let deeper = &nested["children"][0];
    assert_eq!(deeper["path"], "src/nested/deeper");
    assert!(
        deeper.get("children").is_none(),
        "depth 2 from src stops at src/nested/deeper: {tree}"
    );
    let (_, three) = app
        .get(&format!("/v1/workspaces/{id}/tree?path=src&depth=3"))
        .await;
    assert_eq!(
        three["entries"][0]["children"][0]["children"][0]["path"],
        "src/nested/deeper/leaf.txt"
    );
    assert_eq!(three["entry_count"], 4);
    // `./src/` is the same directory.
    let (_, again) = app
        .get(&format!("/v1/workspaces/{id}/tree?path=./src/&depth=2"))
        .await;
    assert_eq!(again["entries"], tree["entries"]);
}

#[tokio::test]
async fn a_file_is_returned_as_text_or_flagged_binary() {
    let app = TestApp::spawn().await;
    let (id, _) = explorer_workspace(&app).await;

    let (status, file) = app
        .get(&format!("/v1/workspaces/{id}/file?path=src/main.rs"))
        .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(file["path"], "src/main.rs");
    assert_eq!(file["name"], "main.rs");
    assert_eq!(file["content"], "fn main() {}\n");
    assert_eq!(file["binary"], false);
    assert_eq!(file["size"], 13);
    assert!(file["modified"].is_string());

    // A symlink inside the workspace is followed.
    let (status, linked) = app
        .get(&format!("/v1/workspaces/{id}/file?path=main-link"))
        .await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    assert_eq!(linked["content"], file["content"]);

    let (status, png) = app
        .get(&format!("/v1/workspaces/{id}/file?path=assets/logo.png"))
        .await;
    assert_eq!(status, StatusCode::OK, "{png}");
    assert_eq!(png["binary"], true);
    assert_eq!(png["content"], Value::Null);
    assert_eq!(png["size"], 7);
}

#[tokio::test]
async fn a_file_over_the_cap_is_a_413() {
    let app = TestApp::spawn().await;
    let (id, dir) = explorer_workspace(&app).await;
    let cap = otter_core::files::MAX_FILE_BYTES as usize;
    std::fs::write(dir.join("exact.txt"), "a".repeat(cap)).unwrap();
    std::fs::write(dir.join("big.txt"), "a".repeat(cap + 1)).unwrap();

    let (status, body) = app
        .get(&format!("/v1/workspaces/{id}/file?path=big.txt"))
        .await;
    let message = assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert!(message.contains("big.txt"), "{message}");
    let (status, body) = app
        .get(&format!("/v1/workspaces/{id}/file?path=exact.txt"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["size"], cap);
}

#[tokio::test]
async fn wrong_kinds_and_missing_things_get_clear_4xx() {
    let app = TestApp::spawn().await;
    let (id, dir) = explorer_workspace(&app).await;

    for (path, status, code, needle) in [
        (
            format!("/v1/workspaces/{id}/file?path=src"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "is a directory",
        ),
        (
            format!("/v1/workspaces/{id}/file"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "path",
        ),
        (
            format!("/v1/workspaces/{id}/tree?path=README.md"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "not a directory",
        ),
        (
            format!("/v1/workspaces/{id}/file?path=nope.txt"),
            StatusCode::NOT_FOUND,
            "not_found",
            "nope.txt",
        ),
        (
            format!("/v1/workspaces/{id}/tree?path=src/nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "src/nope",
        ),
        (
            format!("/v1/workspaces/{id}/file?path=README.md/x"),
            StatusCode::NOT_FOUND,
            "not_found",
            "README.md/x",
        ),
        (
            format!("/v1/workspaces/{id}/tree?depth=0"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "depth",
        ),
        (
            format!("/v1/workspaces/{id}/tree?depth=99"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "depth",
        ),
        (
            format!("/v1/workspaces/{id}/tree?depth=x"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "depth",
        ),
        (
            format!("/v1/workspaces/{id}/tree?colour=red"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "colour",
        ),
        (
            format!("/v1/workspaces/{}/tree", uuid::Uuid::new_v4()),
            StatusCode::NOT_FOUND,
            "not_found",
            "workspace",
        ),
        (
            "/v1/workspaces/not-a-uuid/file?path=a".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "",
        ),
    ] {
        let (got, body) = app.get(&path).await;
        let message = assert_error(got, &body, status, code);
        assert!(message.contains(needle), "{path}: {message}");
    }

    // A FIFO is refused at once (opening it must not block the server).
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let (status, body) = app
        .get(&format!("/v1/workspaces/{id}/file?path=pipe"))
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("not a regular file"), "{message}");

    // A file the server may not read is a 403, not a 500 (unless the tests run as root).
    let secret = dir.join("locked.txt");
    std::fs::write(&secret, "locked").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&secret).is_err() {
        let (status, body) = app
            .get(&format!("/v1/workspaces/{id}/file?path=locked.txt"))
            .await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
}

#[tokio::test]
async fn a_workspace_whose_directory_was_replaced_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (id, dir) = explorer_workspace(&app).await;
    let elsewhere = app.env.mkdir("elsewhere");
    std::fs::write(elsewhere.join("secret.txt"), "ELSEWHERE-SECRET").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let (status, body) = app.get(&format!("/v1/workspaces/{id}/tree")).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");

    // Its path now leads elsewhere through a symlink: still refused, nothing from there shown.
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    for path in [
        format!("/v1/workspaces/{id}/tree"),
        format!("/v1/workspaces/{id}/file?path=secret.txt"),
    ] {
        let (status, body) = app.get(&path).await;
        let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(message.contains("replaced"), "{message}");
        assert!(!body.to_string().contains("ELSEWHERE-SECRET"));
    }
}

#[tokio::test]
async fn a_large_directory_is_listed_within_the_entry_limit() {
    let app = TestApp::spawn().await;
    let (id, dir) = explorer_workspace(&app).await;
    let many = dir.join("many");
    std::fs::create_dir_all(&many).unwrap();
    let limit = otter_core::files::MAX_TREE_ENTRIES;
    for i in 0..limit + 10 {
        std::fs::write(many.join(format!("f{i:05}")), "").unwrap();
    }
    let (status, tree) = app
        .get(&format!("/v1/workspaces/{id}/tree?path=many"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tree["truncated"], true);
    assert_eq!(tree["entries"].as_array().unwrap().len(), limit);
    assert_eq!(tree["entry_count"], limit);

    // Breadth first: a huge subdirectory does not crowd out its siblings at the top level.
    let (status, tree) = app.get(&format!("/v1/workspaces/{id}/tree?depth=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tree["truncated"], true);
    assert!(names(&tree["entries"]).contains(&"README.md"));
    assert!(tree["entry_count"].as_u64().unwrap() <= limit as u64);
}
