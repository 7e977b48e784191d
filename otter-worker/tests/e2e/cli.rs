//! `scripts/otter-cli.sh` against a running server and worker.

use std::process::{Command, Output};

use otter_testkit::TestApp;
use serde_json::{Value, json};

use crate::harness::{Worker, scenario};

fn cli(app: &TestApp, args: &[&str]) -> Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/otter-cli.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        .env("OTTER_URL", &app.base)
        .env_remove("OTTER_TOKEN")
        .env_remove("OTTER_API_TOKEN")
        .output()
        .expect("run otter-cli.sh")
}

fn ok_json(app: &TestApp, args: &[&str]) -> Value {
    let out = cli(app, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_whole_flow() {
    let app = TestApp::spawn().await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;

    let smoke = cli(&app, &["smoke"]);
    assert!(
        smoke.status.success(),
        "{}",
        String::from_utf8_lossy(&smoke.stderr)
    );
    assert!(String::from_utf8_lossy(&smoke.stdout).contains("ok  GET /v1/queue"));

    let project = ok_json(
        &app,
        &["projects", "create", "demo", "a \"quoted\" description"],
    );
    assert_eq!(project["description"], "a \"quoted\" description");
    assert_eq!(ok_json(&app, &["projects", "list"])["total"], 1);

    let dir = app.env.dir.join("cli-ws");
    let ws = ok_json(
        &app,
        &[
            "workspaces",
            "create",
            dir.to_str().unwrap(),
            "cli",
            "--project",
            project["id"].as_str().unwrap(),
            "--create",
        ],
    );
    assert_eq!(ws["name"], "cli");
    assert_eq!(ok_json(&app, &["workspaces", "list"])["total"], 1);

    // --follow prints the run as it happens and exits 0 when the job succeeds.
    let out = cli(
        &app,
        &[
            "prompt",
            "Create hello.txt",
            "--workspace",
            ws["id"].as_str().unwrap(),
            "--follow",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("user: Create hello.txt"), "{stdout}");
    assert!(stdout.contains("[file_write]"), "{stdout}");
    assert!(
        stdout.contains("assistant: I created `hello.txt`"),
        "{stdout}"
    );
    assert!(stdout.contains("succeeded]"), "{stdout}");

    let history = ok_json(&app, &["history", "--status", "succeeded"]);
    assert_eq!(history["total"], 1);
    let id = history["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(ok_json(&app, &["jobs", "show", &id])["status"], "succeeded");
    assert!(
        ok_json(&app, &["jobs", "events", &id])["total"]
            .as_i64()
            .unwrap()
            > 4
    );
    assert_eq!(ok_json(&app, &["queue", "list", "5", "0"])["total"], 0);

    // Errors: the API's message and exit 1; bad usage exits 2.
    let out = cli(&app, &["jobs", "cancel", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&app, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command"));
    let out = cli(&app, &["jobs", "show"]);
    assert_eq!(out.status.code(), Some(2));
    let help = cli(&app, &["help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("prompt <text>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_when_otter_is_unreachable() {
    let app = TestApp::spawn().await;
    let out = Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/otter-cli.sh"))
        .args(["queue", "list"])
        .env("OTTER_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_follows_up_in_the_same_session_with_limits_a_model_and_a_budget() {
    let app = TestApp::spawn().await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
    let project = ok_json(&app, &["projects", "create", "demo", "--budget", "3"]);
    assert_eq!(project["budget_usd"], 3.0);
    let project_id = project["id"].as_str().unwrap().to_owned();
    let dir = app.env.dir.join("cli-ws");
    let ws = ok_json(
        &app,
        &[
            "workspaces",
            "create",
            dir.to_str().unwrap(),
            "cli",
            "--project",
            &project_id,
            "--create",
        ],
    );
    let ws_id = ws["id"].as_str().unwrap();
    let out = cli(&app, &["prompt", "first", "--workspace", ws_id, "--follow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = ok_json(&app, &["history"])["items"][0].clone();

    let second = ok_json(
        &app,
        &[
            "prompt",
            "then",
            "--follow-up",
            first["id"].as_str().unwrap(),
            "--model",
            "mock",
            "--max-turns",
            "4",
            "--max-price",
            "0.5",
            "--max-tokens",
            "90000",
            "--time-limit",
            "60",
        ],
    );
    assert_eq!(second["parent_job_id"], first["id"]);
    assert_eq!(second["session_id"], first["session_id"]);
    assert_eq!(second["model"], "mock");
    assert_eq!(
        second["limits"],
        json!({"max_turns": 4, "max_price_usd": 0.5, "max_tokens": 90000, "time_limit_secs": 60,
               "silence_secs": null})
    );
    let second = crate::harness::finished(&app, &second).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let session = first["session_id"].as_str().unwrap();
    let conversation = ok_json(&app, &["history", "--session", session]);
    assert_eq!(conversation["total"], 2, "{conversation}");

    let usage = ok_json(&app, &["projects", "usage", &project_id]);
    assert_eq!(usage["jobs"], 2);
    let spent = ok_json(&app, &["projects", "budget", &project_id, "0"]);
    assert_eq!(spent["budget_usd"], 0.0);
    let out = cli(&app, &["prompt", "more", "--workspace", ws_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("budget"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let none = ok_json(&app, &["projects", "budget", &project_id, "none"]);
    assert_eq!(none["budget_usd"], Value::Null);

    // The running jobs' limit, set and removed the same way.
    let limited = ok_json(&app, &["projects", "create", "fair", "--max-running", "2"]);
    assert_eq!(limited["max_running"], 2);
    let limited_id = limited["id"].as_str().unwrap();
    let one = ok_json(&app, &["projects", "max-running", limited_id, "1"]);
    assert_eq!(one["max_running"], 1);
    let unlimited = ok_json(&app, &["projects", "max-running", limited_id, "none"]);
    assert_eq!(unlimited["max_running"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_a_job_s_changes_and_diff_and_restores_its_workspace() {
    let app = TestApp::spawn().await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
    let ws = app.workspace("ws").await;
    let dir = std::path::PathBuf::from(ws["path"].as_str().unwrap());
    let job =
        otter_testkit::jobs::submit(&app, &ws, "Create hello.txt", serde_json::json!({})).await;
    let job = otter_testkit::jobs::finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap();

    let changes = ok_json(&app, &["jobs", "changes", id]);
    assert_eq!(changes["total"], 1, "{changes}");
    assert_eq!(changes["items"][0]["path"], "hello.txt");
    for args in [
        vec!["jobs", "diff", id],
        vec!["jobs", "diff", id, "hello.txt"],
    ] {
        let out = cli(&app, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let diff = String::from_utf8_lossy(&out.stdout);
        assert!(
            diff.starts_with("diff --git a/hello.txt b/hello.txt\nnew file mode"),
            "{diff}"
        );
        assert!(diff.ends_with("+Hello from the mock LLM\n"), "{diff}");
    }
    let out = cli(&app, &["jobs", "diff", id, "not there é.txt"]);
    assert!(out.status.success() && out.stdout.is_empty());

    let restored = ok_json(&app, &["jobs", "restore", id, "before"]);
    assert_eq!(
        restored["removed"],
        serde_json::json!(["hello.txt"]),
        "{restored}"
    );
    assert!(!dir.join("hello.txt").exists());
    let restored = ok_json(&app, &["jobs", "restore", id, "after"]);
    assert_eq!(
        restored["restored"],
        serde_json::json!(["hello.txt"]),
        "{restored}"
    );
    assert!(dir.join("hello.txt").exists());
    let out = cli(&app, &["jobs", "restore", id, "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_webhooks() {
    let app = TestApp::spawn_with(&[
        ("OTTER_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("OTTER_WEBHOOK_RETRY_BASE", "50ms"),
    ])
    .await;
    let receiver = otter_testkit::Receiver::start(vec![]).await;
    let hook = ok_json(
        &app,
        &[
            "webhooks",
            "create",
            &receiver.url,
            "job_queued",
            "job_failed",
            "--description",
            "ci",
        ],
    );
    assert_eq!(hook["events"], json!(["job_queued", "job_failed"]));
    assert_eq!(hook["description"], "ci");
    let id = hook["id"].as_str().unwrap();
    assert!(hook["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(ok_json(&app, &["webhooks", "list"])["total"], 1);
    assert!(
        ok_json(&app, &["webhooks", "show", id])
            .get("secret")
            .is_none()
    );
    let rotated = ok_json(&app, &["webhooks", "rotate-secret", id]);
    assert_ne!(rotated["secret"], hook["secret"]);
    let ws = app.workspace("ws").await;
    app.submit(&ws, "hello").await;
    let delivery =
        otter_testkit::eventually(std::time::Duration::from_secs(30), "a delivery", || async {
            ok_json(&app, &["webhooks", "deliveries", id])["items"][0]
                .as_object()
                .filter(|d| d["status"] == "succeeded")
                .cloned()
        })
        .await;
    let again = ok_json(
        &app,
        &[
            "webhooks",
            "redeliver",
            id,
            delivery["id"].as_str().unwrap(),
        ],
    );
    // Due now: pending, unless the sender was quicker than the read-back.
    assert!(
        again["status"] == "pending" || again["status"] == "succeeded",
        "{again}"
    );
    let out = cli(&app, &["webhooks", "delete", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok_json(&app, &["webhooks", "list"])["total"], 0);
    let bad = cli(
        &app,
        &[
            "webhooks",
            "create",
            "http://169.254.169.254/",
            "job_failed",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HTTP 400"));
}
