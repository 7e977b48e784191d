//! What a job changed, and undo, on the real stack: the worker's checkpoints before and after a
//! run of the stand-in's `change-set` scenario (it adds `added.txt`, edits `edited.txt`, deletes
//! `deleted.txt`), the change list, the diff (`git apply -R` takes it), the workspace's own git
//! repository left as it was, and restores to before and after.

use std::path::{Path, PathBuf};
use std::process::Command;

use otter_testkit::{TestApp, assert_error, eventually, give_to_job_user};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{JOB_WAIT, Worker, events, finished, scenario, status_is, submit};

const EDITED_BEFORE: &str = "line 1\nline 2\nline 3\n";
const EDITED_AFTER: &str = "line 1\nline two\nline 3\nline 4\n";
const DELETED: &str = "gone 1\ngone 2\n";
const ADDED: &str = "a file the job added\n";

/// Runs `args` in `dir` as this process's user; panics with its output when it fails.
fn run(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `git` in `dir`, whoever owns it.
fn git(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["git", "-c", "safe.directory=*"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&run(dir, &all)).into_owned()
}

/// The workspace as the job finds it: `edited.txt` and `deleted.txt`, committed in a git
/// repository of its own, and given to the job user (as an operator does for an existing folder).
fn prepare(dir: &Path) {
    std::fs::write(dir.join("edited.txt"), EDITED_BEFORE).unwrap();
    std::fs::write(dir.join("deleted.txt"), DELETED).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "edited.txt", "deleted.txt"]);
    git(
        dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "first",
        ],
    );
    git(dir, &["branch", "feature"]);
    give_to_job_user(dir);
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// What the workspace's own repository is.
#[derive(Debug, PartialEq, Eq)]
struct Repository {
    head: String,
    branches: String,
    index: Vec<u8>,
    files: Vec<(PathBuf, Vec<u8>)>,
}

/// HEAD, the branches, the index's bytes, and every file of `.git`.
fn repository_state(dir: &Path) -> Repository {
    Repository {
        head: git(dir, &["rev-parse", "HEAD"]),
        branches: git(dir, &["branch", "--list", "-v"]),
        index: std::fs::read(dir.join(".git/index")).unwrap(),
        files: snapshot(&dir.join(".git")),
    }
}

/// A server and a worker that both cap checkpointed files at `OTTER_CHECKPOINT_MAX_FILE_BYTES`
/// = 1000, a workspace prepared by [`prepare`], and a finished `change-set` job.
async fn changed_workspace(more: &[&str]) -> (TestApp, Value, Worker, PathBuf, Value) {
    let cap = [("OTTER_CHECKPOINT_MAX_FILE_BYTES", "1000")];
    let app = TestApp::spawn_with(&cap).await;
    let ws = app.workspace("ws").await;
    let dir = PathBuf::from(ws["path"].as_str().unwrap());
    prepare(&dir);
    let extra = scenario("change-set", more);
    let worker = Worker::start(&app, &[cap[0], ("OTTER_VIBE_EXTRA_ENV", extra.as_str())]).await;
    let job = submit(&app, &ws, "Add, edit and delete a file.", json!({})).await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    (app, ws, worker, dir, job)
}

/// `GET path` as text, with its status and content type.
async fn get_text(app: &TestApp, path: &str) -> (StatusCode, String, String, Value) {
    let resp = app
        .builder(Method::GET, path)
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let content_type = otter_testkit::content_type(&resp);
    let truncated = resp
        .headers()
        .get("x-otter-diff-truncated")
        .and_then(|v| v.to_str().ok())
        .map_or(Value::Null, |v| json!(v));
    (status, content_type, resp.text().await.unwrap(), truncated)
}

#[tokio::test]
async fn a_job_that_adds_edits_and_deletes_a_file_shows_exactly_those_three_with_a_diff_that_applies_in_reverse()
 {
    let cap = [("OTTER_CHECKPOINT_MAX_FILE_BYTES", "1000")];
    let app = TestApp::spawn_with(&cap).await;
    let ws = app.workspace("ws").await;
    let dir = PathBuf::from(ws["path"].as_str().unwrap());
    prepare(&dir);
    let repository = repository_state(&dir);
    let extra = scenario("change-set", &[]);
    let _worker = Worker::start(&app, &[cap[0], ("OTTER_VIBE_EXTRA_ENV", extra.as_str())]).await;
    let job = submit(&app, &ws, "Add, edit and delete a file.", json!({})).await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("added.txt")).unwrap(),
        ADDED
    );
    assert!(!dir.join("deleted.txt").exists());

    // The summary in the output: 3 files, +1 (added) +2 -1 (edited) -2 (deleted).
    let output = &job["output"];
    assert_eq!(
        (
            &output["files_changed"],
            &output["additions"],
            &output["deletions"]
        ),
        (&json!(3), &json!(3), &json!(3)),
        "{job}"
    );

    let (status, changes) = app.get(&format!("/v1/jobs/{id}/changes")).await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert_eq!(changes["total"], 3, "{changes}");
    let items: Vec<(&str, &str, i64, i64, bool)> = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["additions"].as_i64().unwrap(),
                c["deletions"].as_i64().unwrap(),
                c["binary"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("added.txt", "added", 1, 0, false),
            ("deleted.txt", "deleted", 0, 2, false),
            ("edited.txt", "modified", 2, 1, false),
        ],
        "exactly the three files the job touched, and nothing of .git"
    );

    // The diff, applied in reverse to a copy of the workspace as the job left it, gives back
    // the workspace as it was.
    let (status, content_type, diff, truncated) =
        get_text(&app, &format!("/v1/jobs/{id}/diff")).await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert!(content_type.starts_with("text/x-diff"), "{content_type}");
    assert_eq!(truncated, json!("false"));
    let copy = app.env.dir.join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::write(copy.join("added.txt"), ADDED).unwrap();
    std::fs::write(copy.join("edited.txt"), EDITED_AFTER).unwrap();
    let patch = app.env.dir.join("job.diff");
    std::fs::write(&patch, &diff).unwrap();
    run(&copy, &["git", "apply", "-R", patch.to_str().unwrap()]);
    assert!(!copy.join("added.txt").exists(), "{diff}");
    assert_eq!(
        std::fs::read_to_string(copy.join("edited.txt")).unwrap(),
        EDITED_BEFORE
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("deleted.txt")).unwrap(),
        DELETED
    );

    // One file's diff.
    let (status, _, one, _) = get_text(&app, &format!("/v1/jobs/{id}/diff?path=edited.txt")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert!(
        one.starts_with("diff --git a/edited.txt b/edited.txt"),
        "{one}"
    );
    assert!(
        !one.contains("added.txt") && !one.contains("deleted.txt"),
        "{one}"
    );
    let (status, _, none, _) = get_text(&app, &format!("/v1/jobs/{id}/diff?path=other.txt")).await;
    assert_eq!((status, none.as_str()), (StatusCode::OK, ""));

    // A capped diff says where it was cut.
    let (status, _, cut, truncated) =
        get_text(&app, &format!("/v1/jobs/{id}/diff?max_bytes=120")).await;
    assert_eq!(status, StatusCode::OK, "{cut}");
    assert_eq!(truncated, json!("true"));
    let last = cut.lines().last().unwrap();
    assert!(
        last.starts_with("# otter: diff cut here at 120 bytes") && last.contains("of 3 files"),
        "{cut}"
    );
    let (status, body) = app.get(&format!("/v1/jobs/{id}/diff?max_bytes=0")).await;
    assert!(
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input").contains("max_bytes")
    );

    // The workspace's own repository is exactly as it was: HEAD, branches, index, every file.
    assert_eq!(
        repository_state(&dir),
        repository,
        "checkpoints touched .git"
    );
}

#[tokio::test]
async fn a_restore_to_before_brings_back_the_deleted_file_and_removes_the_added_one_and_can_be_undone()
 {
    let (app, _ws, _worker, dir, job) = changed_workspace(&[]).await;
    let id = job["id"].as_str().unwrap();
    // A file over the cap, made after the job: a restore leaves it alone and says so.
    std::fs::write(dir.join("big.bin"), vec![b'x'; 2000]).unwrap();
    let repository = repository_state(&dir);

    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/restore"), json!({ "to": "before" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["to"], "before");
    assert_eq!(body["removed"], json!(["added.txt"]), "{body}");
    assert_eq!(
        body["restored"],
        json!(["deleted.txt", "edited.txt"]),
        "{body}"
    );
    let left: Vec<&str> = body["left_alone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["big.bin"], "{body}");
    assert!(!dir.join("added.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("deleted.txt")).unwrap(),
        DELETED
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("edited.txt")).unwrap(),
        EDITED_BEFORE
    );
    assert_eq!(std::fs::read(dir.join("big.bin")).unwrap().len(), 2000);
    assert_eq!(repository_state(&dir), repository, "a restore touched .git");

    // The event, once, with the answer's figures.
    let events = events(&app, &job).await;
    let restored: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "workspace_restored")
        .collect();
    assert_eq!(restored.len(), 1, "{events:?}");
    let payload = &restored[0]["payload"];
    assert_eq!(payload["to"], "before");
    assert_eq!(payload["checkpoint_id"], body["checkpoint_id"]);
    assert_eq!(payload["undo_checkpoint_id"], body["undo_checkpoint_id"]);
    assert_eq!(
        (&payload["restored"], &payload["removed"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(payload["left_alone"], body["left_alone"]);

    // And back to after.
    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/restore"), json!({ "to": "after" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["removed"], json!(["deleted.txt"]), "{body}");
    assert_eq!(
        body["restored"],
        json!(["added.txt", "edited.txt"]),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("added.txt")).unwrap(),
        ADDED
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("edited.txt")).unwrap(),
        EDITED_AFTER
    );
    assert!(!dir.join("deleted.txt").exists());
    // The change list is the job's, whatever was restored since.
    let (_, changes) = app.get(&format!("/v1/jobs/{id}/changes")).await;
    assert_eq!(changes["total"], 3, "{changes}");
}

#[tokio::test]
async fn a_restore_is_refused_while_a_job_of_the_workspace_runs() {
    // Each model answer of the stand-in waits 1 s: the second job runs for a while.
    let (app, ws, _worker, dir, job) = changed_workspace(&["FAKE_VIBE_SLEEP_MS=1000"]).await;
    let id = job["id"].as_str().unwrap();
    let second = submit(&app, &ws, "Again.", json!({})).await;
    status_is(&app, &second, "running").await;
    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/restore"), json!({ "to": "before" }))
        .await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("running"), "{message}");
    assert!(
        dir.join("added.txt").exists(),
        "a refused restore changes nothing"
    );
    let second_id = second["id"].as_str().unwrap();
    let (status, body) = app
        .post(&format!("/v1/jobs/{second_id}/cancel"), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    finished(&app, &second).await;
    // Once it ended, the restore goes ahead.
    let (status, body) = eventually(JOB_WAIT, "the restore to be accepted", || async {
        let (status, body) = app
            .post(&format!("/v1/jobs/{id}/restore"), json!({ "to": "before" }))
            .await;
        (status != StatusCode::CONFLICT).then_some((status, body))
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        std::fs::read_to_string(dir.join("deleted.txt")).unwrap(),
        DELETED
    );
}

#[tokio::test]
async fn a_checkpoint_that_cannot_be_taken_leaves_the_job_s_result_and_says_why() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    // A store under a file: no checkpoint can be written.
    let blocked = app.env.dir.join("not-a-dir");
    std::fs::write(&blocked, "").unwrap();
    let store = blocked.join("store").display().to_string();
    let extra = scenario("tools", &[]);
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_CHECKPOINT_DIR", store.as_str()),
            ("OTTER_VIBE_EXTRA_ENV", extra.as_str()),
        ],
    )
    .await;
    let job = submit(&app, &ws, "Create hello.txt.", json!({})).await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["output"]["files_changed"].is_null(), "{job}");
    let events = events(&app, &job).await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "checkpoint_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["payload"]["stage"], "before");
    assert!(failed[0]["payload"]["error"].is_string());
    let id = job["id"].as_str().unwrap();
    for path in [
        format!("/v1/jobs/{id}/changes"),
        format!("/v1/jobs/{id}/diff"),
    ] {
        let (status, body) = app.get(&path).await;
        let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(message.contains("could not be taken"), "{message}");
    }
}

#[tokio::test]
async fn a_job_that_changed_nothing_has_an_empty_change_list() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let dir = PathBuf::from(ws["path"].as_str().unwrap());
    prepare(&dir);
    let extra = scenario("text", &[]);
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", extra.as_str())]).await;
    let job = submit(&app, &ws, "Just answer.", json!({})).await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let output = &job["output"];
    assert_eq!(
        (
            &output["files_changed"],
            &output["additions"],
            &output["deletions"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{job}"
    );
    let id = job["id"].as_str().unwrap();
    let (status, changes) = app.get(&format!("/v1/jobs/{id}/changes")).await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert_eq!(changes, json!({ "items": [], "total": 0 }));
    let (status, _, diff, truncated) = get_text(&app, &format!("/v1/jobs/{id}/diff")).await;
    assert_eq!(
        (status, diff.as_str(), truncated),
        (StatusCode::OK, "", json!("false"))
    );
    // Nothing to undo, nothing done.
    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/restore"), json!({ "to": "before" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["restored"], &body["removed"], &body["left_alone"]),
        (&json!([]), &json!([]), &json!([]))
    );
}
