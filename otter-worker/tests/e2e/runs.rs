//! Runs of the stand-in through the whole pipeline: invocation, success, each failure exit,
//! setup.sh, floods and noise.

use std::time::Duration;

use otter_testkit::TestApp;
use serde_json::{Value, json};

use crate::harness::{
    Worker, app_with_worker, events, finished, kinds, lines, process_gone, recorded_run, scenario,
    submit,
};

/// The exact stdout lines of a successful `tools` run, as vibe 3.0.3 prints them.
const FINAL_TEXT: &str =
    "I created `hello.txt` and ran `cat hello.txt`; it printed \"Hello from the mock LLM\". Done.";

#[tokio::test]
async fn a_prompt_runs_to_success_with_every_line_in_order() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
    let job = submit(
        &app,
        &ws,
        "Create hello.txt containing a greeting, then show its contents with cat.",
        json!({}),
    )
    .await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["attempts"], 1);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    assert_eq!(job["output"]["final_text"], FINAL_TEXT);
    assert_eq!(job["output"]["outcome"], "finished");
    // The model export.json names (the stand-in's default, as in the capture).
    assert_eq!(job["output"]["model"], "mock", "{job}");
    assert!(
        job["output"]["cost"].as_f64().is_some_and(|c| c > 0.0),
        "{job}"
    );
    assert!(
        job["output"]["usage"]["total_tokens"]
            .as_i64()
            .is_some_and(|t| t > 0),
        "{job}"
    );

    let events = events(&app, &job).await;
    let kinds = kinds(&events);
    assert_eq!(kinds.first(), Some(&"job_queued"));
    assert_eq!(kinds.get(1), Some(&"job_started"));
    assert_eq!(kinds.last(), Some(&"job_succeeded"));
    // seq counts 1, 2, 3, … and ids only grow.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_i64(), Some(i as i64 + 1));
    }
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64())
    );
    // Every stdout line is a vibe entry, parsed, in the order vibe printed it.
    let stdout: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "output_chunk" && e["payload"]["stream"] == "stdout")
        .collect();
    let entry_kinds: Vec<String> = stdout
        .iter()
        .map(|e| {
            let entry = &e["payload"]["entry"];
            format!(
                "{}:{}",
                entry["type"].as_str().unwrap_or("?"),
                entry["role"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        entry_kinds,
        ["message:user", "effect:", "effect:", "message:assistant"]
    );
    for e in &stdout {
        let raw: Value = serde_json::from_str(e["payload"]["text"].as_str().unwrap()).unwrap();
        assert_eq!(
            raw, e["payload"]["entry"],
            "the raw line and the parsed entry agree"
        );
    }
    // stderr lines are kept too.
    assert!(!lines(&events, "stderr").is_empty());
    // The tool effects really happened in the workspace.
    let hello = std::path::Path::new(ws["path"].as_str().unwrap()).join("hello.txt");
    assert_eq!(
        std::fs::read_to_string(hello).unwrap(),
        "Hello from the mock LLM\n"
    );

    // Finished jobs are history.
    let (_, history) = app
        .get(&format!(
            "/v1/history?workspace_id={}&status=succeeded",
            ws["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(history["total"], 1);
    assert_eq!(history["items"][0]["id"], job["id"]);
    let (_, failed) = app.get("/v1/history?status=failed").await;
    assert_eq!(failed["total"], 0);
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["total"], 0);
}

#[tokio::test]
async fn vibe_is_invoked_as_the_design_says() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let extra = format!(
        "{},OTTER_TEST_EXTRA=forwarded",
        scenario(
            "tools",
            &[&format!("FAKE_VIBE_RECORD={}", record.display())]
        )
    );
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &extra),
            ("OTTER_VIBE_MODEL", "mistral-large-3"),
            ("OTTER_VIBE_PROVIDER", "mistral"),
            ("MISTRAL_API_KEY", "sk-test-key"),
            ("OTTER_API_BASE_URL", "http://otter.example:8080"),
        ],
    )
    .await;
    let prompt = "-rf Say \"hi\" --output json; $(rm -rf /) `and` 'quotes'";
    let job = submit(&app, &ws, prompt, json!({})).await;
    let job = finished(&app, &job).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let recorded = recorded_run(&record);
    let argv: Vec<&str> = recorded["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let job_id = job["id"].as_str().unwrap();
    let home = ws["vibe_home"].as_str().unwrap();
    let run_dir = format!("{home}/runs/{job_id}-1");
    assert_eq!(
        argv,
        [
            format!("--prompt={prompt}").as_str(),
            "--output",
            "streaming",
            "--trust",
            "--auto-approve",
            "--output-dir",
            run_dir.as_str()
        ]
    );
    assert_eq!(recorded["cwd"], ws["path"]);
    assert_eq!(recorded["stdin"], "/dev/null");
    let env = &recorded["env"];
    assert_eq!(env["VIBE_HOME"], home);
    assert_eq!(env["MISTRAL_API_KEY"], "sk-test-key");
    for var in ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"] {
        assert_eq!(env[var], "mistral-large-3", "{var}");
    }
    assert_eq!(env["VIBE_PROVIDER"], "mistral");
    assert_eq!(job["output"]["model"], "mistral-large-3", "{job}");
    assert_eq!(env["OTTER_TEST_EXTRA"], "forwarded");
    // Otter's own secrets never reach vibe: only the variables it sets on purpose.
    assert_eq!(env["DATABASE_URL"], Value::Null);
    assert_eq!(env["REDIS_URL"], Value::Null);
    let mut otter_vars: Vec<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("OTTER_"))
        .collect();
    otter_vars.sort_unstable();
    assert_eq!(
        otter_vars,
        [
            "OTTER_API_BASE_URL",
            "OTTER_API_TOKEN",
            "OTTER_JOB_ID",
            "OTTER_TEST_EXTRA"
        ]
    );
    assert_eq!(env["OTTER_JOB_ID"], job["id"]);
    // vibe runs in its own process group.
    assert_eq!(recorded["pid"], recorded["pgid"]);
    // Otter's instructions reach vibe's system prompt through VIBE_HOME/AGENTS.md.
    let agents = recorded["agents_md"].as_str().unwrap();
    assert!(agents.contains(job_id), "{agents}");
    assert!(
        agents.contains(&format!(
            "http://otter.example:8080/v1/jobs/{job_id}/preview-url"
        )),
        "{agents}"
    );
    assert!(agents.contains("setup.sh") && agents.contains("Dockerfile"));
    // The user's prompt is passed unchanged and shows first in the history.
    let events = events(&app, &job).await;
    let first = events.iter().find(|e| e["kind"] == "output_chunk").unwrap();
    assert_eq!(first["payload"]["entry"]["content"][0]["text"], prompt);
    // export.json landed in the run directory.
    assert!(std::path::Path::new(&run_dir).join("export.json").is_file());
}

#[tokio::test]
async fn with_otter_demo_vibe_is_pointed_at_the_demo_model_whatever_else_is_set() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let extra = scenario(
        "tools",
        &[&format!("FAKE_VIBE_RECORD={}", record.display())],
    );
    let _worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &extra),
            ("OTTER_DEMO", "true"),
            ("OTTER_DEMO_MODEL_URL", "http://demo.example:8090/v1"),
            ("OTTER_VIBE_MODEL", "mistral-large-3"),
            ("OTTER_VIBE_PROVIDER", "mistral"),
        ],
    )
    .await;
    let job = finished(&app, &submit(&app, &ws, "hi", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let env = &recorded_run(&record)["env"];
    for var in ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"] {
        assert_eq!(env[var], otter_core::demo::MODEL, "{var}");
    }
    assert_eq!(env["VIBE_PROVIDER"], Value::Null);
    assert_eq!(
        env[otter_core::demo::API_KEY_VAR],
        otter_core::demo::API_KEY
    );
    assert_eq!(job["output"]["model"], otter_core::demo::MODEL, "{job}");
    let config = std::fs::read_to_string(
        std::path::Path::new(ws["vibe_home"].as_str().unwrap()).join("config.toml"),
    )
    .unwrap();
    assert!(
        config.contains("api_base = \"http://demo.example:8090/v1\""),
        "{config}"
    );
}

#[tokio::test]
async fn a_configuration_error_fails_at_once_with_its_reason() {
    let (app, ws, _worker) = app_with_worker("config-error", &[]).await;
    let job = finished(&app, &submit(&app, &ws, "anything", json!({})).await).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 1);
    assert_eq!(job["attempts"], 1, "exit 1 is not retried");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("Invalid API key"), "{error}");
    assert_eq!(job["output"]["outcome"], "config_error");
    let events = events(&app, &job).await;
    let stderr = lines(&events, "stderr");
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with("Error: Invalid API key")),
        "{stderr:?}"
    );
    assert_eq!(kinds(&events).last(), Some(&"job_failed"));
    assert!(!kinds(&events).contains(&"job_retry_scheduled"));
}

#[tokio::test]
async fn an_infrastructure_error_is_retried_then_fails() {
    let (app, ws, _worker) = app_with_worker("infra-error", &[]).await;
    let job = finished(
        &app,
        &submit(&app, &ws, "anything", json!({ "max_attempts": 2 })).await,
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 2);
    assert_eq!(job["attempts"], 2);
    assert!(
        job["error"].as_str().unwrap().contains("Server error"),
        "{job}"
    );
    let events = events(&app, &job).await;
    let kinds = kinds(&events);
    assert_eq!(kinds.iter().filter(|k| **k == "job_started").count(), 2);
    let retry = events
        .iter()
        .find(|e| e["kind"] == "job_retry_scheduled")
        .expect("a retry event");
    assert_eq!(retry["payload"]["attempt"], 1);
    assert!(retry["payload"]["next_attempt_at"].is_string());
    assert_eq!(kinds.last(), Some(&"job_failed"));
}

#[tokio::test]
async fn a_run_stopped_early_fails_with_vibes_reason() {
    let (app, ws, _worker) = app_with_worker("turn-limit", &[]).await;
    let job = finished(&app, &submit(&app, &ws, "loop", json!({})).await).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 3);
    assert_eq!(job["attempts"], 1, "a limit is not retried");
    assert!(
        job["error"].as_str().unwrap().contains("turn_limit"),
        "{job}"
    );
    assert_eq!(job["output"]["outcome"], "turn_limit");
    assert_eq!(job["output"]["stop_reason"], "limit");
    assert_eq!(job["output"]["final_text"], Value::Null);
    let events = events(&app, &job).await;
    assert!(lines(&events, "stderr").contains(&"Stopped: turn_limit"));
}

#[tokio::test]
async fn setup_sh_runs_after_success_and_streams_its_lines() {
    let (app, ws, _worker) = app_with_worker("setup", &["FAKE_VIBE_SETUP_SUBDIR=myapp"]).await;
    let job = finished(&app, &submit(&app, &ws, "make an app", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = events(&app, &job).await;
    let kinds = kinds(&events);
    let started = kinds
        .iter()
        .position(|k| *k == "setup_started")
        .expect("setup_started");
    let ended = kinds
        .iter()
        .position(|k| *k == "setup_finished")
        .expect("setup_finished");
    assert!(started < ended && ended < kinds.len() - 1);
    assert!(
        events[started]["payload"]["path"]
            .as_str()
            .unwrap()
            .ends_with("myapp/setup.sh")
    );
    assert_eq!(events[ended]["payload"]["exit_code"], 0);
    let mut setup = lines(&events, "setup");
    setup.sort_unstable();
    assert_eq!(setup, ["setup line 1", "setup line 2", "setup warning"]);
    // Every setup line comes after vibe's last line.
    let last_vibe = events
        .iter()
        .rposition(|e| e["payload"]["stream"] == "stdout")
        .unwrap();
    let first_setup = events
        .iter()
        .position(|e| e["payload"]["stream"] == "setup")
        .unwrap();
    assert!(last_vibe < first_setup);
    assert_eq!(kinds.last(), Some(&"job_succeeded"));
}

/// Runs a `tools` job in a workspace whose root holds `setup.sh` = `script`; it must succeed.
/// Returns the lines setup printed, and the app and worker, still running.
async fn job_with_setup_sh(script: &str) -> (Vec<String>, (TestApp, Worker)) {
    let (app, ws, worker) = app_with_worker("tools", &[]).await;
    let root = std::path::PathBuf::from(ws["path"].as_str().unwrap());
    std::fs::write(root.join("setup.sh"), script).unwrap();
    let job = finished(&app, &submit(&app, &ws, "run setup", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = events(&app, &job).await;
    let setup = lines(&events, "setup")
        .into_iter()
        .map(str::to_owned)
        .collect();
    (setup, (app, worker))
}

#[tokio::test]
async fn an_app_setup_sh_leaves_running_with_the_pipes_open_does_not_hold_the_job() {
    // The common mistake: `setup.sh` starts the app in the background without redirecting its
    // output, so the app holds the pipes Otter reads. The job must still end, with setup's
    // lines, and the app must keep running.
    let (setup, _running) =
        job_with_setup_sh("#!/bin/sh\nsleep 300 &\necho \"app pid $!\"\n").await;
    let pid: u32 = setup
        .iter()
        .find_map(|l| l.strip_prefix("app pid "))
        .expect("setup's line")
        .parse()
        .unwrap();
    assert!(!process_gone(pid), "the app was stopped with its script");
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status();
    _running.0.assert_no_processes_left().await;
}

#[tokio::test]
async fn output_holding_nul_bytes_is_stored_and_the_job_ends() {
    // PostgreSQL cannot store a NUL: the lines are stored with U+FFFD in its place, where their
    // write used to fail on every retry and hold the job `running`.
    let (mut setup, _running) =
        job_with_setup_sh("#!/bin/sh\nprintf 'nul\\000byte\\n'\nprintf 'err\\000or\\n' >&2\n")
            .await;
    setup.sort_unstable();
    assert_eq!(setup, ["err\u{FFFD}or", "nul\u{FFFD}byte"]);
}

#[tokio::test]
async fn a_flood_of_lines_is_stored_whole_and_in_order() {
    const LINES: usize = 20_000;
    let (app, ws, _worker) = app_with_worker("flood", &[&format!("FAKE_VIBE_LINES={LINES}")]).await;
    let job = finished(&app, &submit(&app, &ws, "flood", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = events(&app, &job).await;
    let stdout = lines(&events, "stdout");
    // The user message, LINES effects, the final answer.
    assert_eq!(stdout.len(), LINES + 2);
    let numbers: Vec<usize> = events
        .iter()
        .filter_map(|e| e["payload"]["entry"]["state"]["outputText"].as_str())
        .filter_map(|t| t.trim().strip_prefix("line ").and_then(|n| n.parse().ok()))
        .collect();
    assert_eq!(numbers.len(), LINES);
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "flood lines out of order"
    );
}

#[tokio::test]
async fn lines_that_are_not_json_are_kept_raw() {
    let (app, ws, _worker) = app_with_worker("stderr-noise", &[]).await;
    let job = finished(&app, &submit(&app, &ws, "noise", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = events(&app, &job).await;
    let raw: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["kind"] == "output_chunk"
                && e["payload"]["stream"] == "stdout"
                && e["payload"].get("entry").is_none()
        })
        .collect();
    assert!(raw.len() >= 3, "junk lines kept: {}", raw.len());
    assert!(
        raw.iter()
            .any(|e| e["payload"]["text"].as_str().unwrap().contains('\u{FFFD}')),
        "invalid UTF-8 decoded lossily"
    );
    assert!(
        raw.iter()
            .any(|e| e["payload"]["text"].as_str().unwrap().len() >= 200 * 1024),
        "the long line kept whole"
    );
    assert!(
        raw.iter().any(|e| e["payload"]["text"] == ""),
        "the empty line kept"
    );
    assert_eq!(job["output"]["final_text"], FINAL_TEXT);
}

#[tokio::test]
async fn processes_vibe_leaves_behind_are_stopped() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let pidfile = app.env.dir.join("grandchild.pid");
    let _worker = Worker::start(
        &app,
        &[(
            "OTTER_VIBE_EXTRA_ENV",
            &scenario(
                "grandchild-exit",
                &[&format!("FAKE_VIBE_PIDFILE={}", pidfile.display())],
            ),
        )],
    )
    .await;
    let job = finished(
        &app,
        &submit(&app, &ws, "leave something running", json!({})).await,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    otter_testkit::eventually(
        Duration::from_secs(10),
        "the grandchild to be gone",
        || async move { process_gone(pid).then_some(()) },
    )
    .await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_missing_vibe_binary_fails_the_job_clearly() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_BIN", "/nonexistent/vibe")]).await;
    let job = finished(&app, &submit(&app, &ws, "anything", json!({})).await).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("could not start vibe") && error.contains("/nonexistent/vibe"),
        "{error}"
    );
    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn an_older_vibe_gets_the_instructions_as_a_prompt_prefix() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let extra = scenario(
        "tools",
        &[
            "FAKE_VIBE_VERSION=2.26.1",
            &format!("FAKE_VIBE_RECORD={}", record.display()),
        ],
    );
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &extra)]).await;
    let job = finished(&app, &submit(&app, &ws, "Build it", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let recorded = recorded_run(&record);
    let prompt = recorded["argv"][0]
        .as_str()
        .unwrap()
        .strip_prefix("--prompt=")
        .unwrap();
    assert!(prompt.starts_with("# Instructions from Otter"), "{prompt}");
    assert!(prompt.contains(job["id"].as_str().unwrap()));
    assert!(prompt.ends_with("\n---\n\nBuild it"), "{prompt}");
}

#[tokio::test]
async fn a_workspace_replaced_by_a_link_out_of_the_roots_is_not_run() {
    let scratch =
        std::env::temp_dir().join(format!("otter-swap-{}", uuid::Uuid::new_v4().simple()));
    let (allowed, outside) = (scratch.join("allowed"), scratch.join("outside"));
    std::fs::create_dir_all(allowed.join("ws")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let allowed = allowed.canonicalize().unwrap();
    let roots = [("OTTER_ALLOWED_ROOTS", allowed.to_str().unwrap())];
    let app = TestApp::spawn_with(&roots).await;
    let dir = allowed.join("ws");
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({ "path": dir.display().to_string() }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{ws}");
    let tools = scenario("tools", &[]);
    let _worker = Worker::start(&app, &[roots[0], ("OTTER_VIBE_EXTRA_ENV", tools.as_str())]).await;

    // After registration, the directory becomes a link out of the roots.
    std::fs::remove_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&outside, &dir).unwrap();
    let job = finished(
        &app,
        &submit(&app, &ws, "Create hello.txt", json!({})).await,
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        job["attempts"], 1,
        "not retried: it would fail the same way: {job}"
    );
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("workspace") && error.contains("replaced by a link"),
        "{error}"
    );
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "vibe ran outside the roots"
    );
    let events = events(&app, &job).await;
    assert!(lines(&events, "stdout").is_empty(), "vibe was started");

    // Put back, the workspace runs again.
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    // As an operator would, for the job user that runs vibe when the worker is root.
    otter_testkit::give_to_job_user(&dir);
    let job = finished(
        &app,
        &submit(&app, &ws, "Create hello.txt", json!({})).await,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(dir.join("hello.txt").is_file());
    std::fs::remove_dir_all(&scratch).ok();
}
