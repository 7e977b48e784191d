//! `OTTER_DEMO=true` with the real vibe: no template, no API key, only the demo model. The
//! workspace is made by a server that has the demo off, so its `VIBE_HOME` predates the demo,
//! as an existing workspace's would; the worker brings it up to date before the run, and takes
//! the demo out again when a worker without it runs the next job.

use std::path::Path;
use std::time::Instant;

use otter_core::demo;
use otter_demo_model::DemoModel;
use otter_demo_model::script::{FILE_CONTENT, FILE_NAME, FINAL_TEXT};
use otter_testkit::jobs::{events, finished, submit};
use otter_testkit::{TestApp, Worker, real_vibe};
use serde_json::json;

use crate::{assert_scripted_entries, entries, stderr};

/// Any prompt: the demo model plays its script whatever it is asked.
const PROMPT: &str = "Build me a todo app with a REST API.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_otter_demo_the_real_vibe_runs_against_the_demo_model_without_a_key() {
    let vibe = real_vibe::ensure_vibe().await;
    let started = Instant::now();
    let model = DemoModel::start(([127, 0, 0, 1], 0).into())
        .await
        .expect("start the demo model");
    let api_base = model.api_base();
    let vibe_var = vibe.display().to_string();

    // The server has the demo off: the workspace's home is made without it.
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let config_toml = Path::new(ws["vibe_home"].as_str().expect("vibe_home")).join("config.toml");
    let read_config = || std::fs::read_to_string(&config_toml).expect("read config.toml");
    assert!(!read_config().contains(demo::MODEL), "{}", read_config());

    // No template, no MISTRAL_API_KEY, no OTTER_VIBE_EXTRA_ENV: only the demo settings.
    let worker = Worker::start(
        &app,
        &vibe_var,
        &[
            ("OTTER_JOB_USER", real_vibe::job_user_for(&vibe)),
            ("OTTER_DEMO", "true"),
            ("OTTER_DEMO_MODEL_URL", &api_base),
        ],
    )
    .await;
    let job = finished(&app, &submit(&app, &ws, PROMPT, json!({})).await).await;
    let events = events(&app, &job).await;
    let stderr = stderr(&events);
    let requests = model.requests();
    let context = format!(
        "job: {job:#}\nvibe's stderr: {stderr:#?}\nrequests to the demo model: {}",
        requests.len()
    );

    assert_eq!(job["status"], "succeeded", "{context}");
    assert_eq!(job["exit_code"], 0, "{context}");
    let entries = entries(&events);
    assert_scripted_entries(&entries, PROMPT, &context);
    let written = Path::new(ws["path"].as_str().expect("workspace path")).join(FILE_NAME);
    assert_eq!(
        std::fs::read_to_string(&written).unwrap_or_else(|e| panic!("{}: {e}", written.display())),
        FILE_CONTENT
    );

    // Usage is reported, the run costs nothing, and the output names the demo model.
    let output = &job["output"];
    assert_eq!(output["final_text"], FINAL_TEXT, "{context}");
    assert_eq!(output["outcome"], "finished", "{context}");
    for field in ["input_tokens", "output_tokens", "total_tokens"] {
        assert!(
            output["usage"][field].as_i64().is_some_and(|t| t > 0),
            "{field}: {context}"
        );
    }
    assert_eq!(output["cost"].as_f64(), Some(0.0), "{context}");
    assert_eq!(output["model"], demo::MODEL, "{context}");
    assert_eq!(output["export"]["model"], demo::MODEL, "{context}");

    // vibe asked the demo model for the demo model, with the dummy key the worker gave it.
    assert_eq!(requests.len(), 3, "{context}");
    for request in &requests {
        assert_eq!(request.body["model"], demo::MODEL);
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {}", demo::API_KEY).as_str())
        );
    }
    // The workspace's home now carries the demo entry, pointing at this demo model.
    let with_demo = read_config();
    assert!(
        with_demo.contains(&format!("api_base = \"{api_base}\"")),
        "{with_demo}"
    );
    eprintln!(
        "real vibe demo run: {} entries, {:.1}s; stderr: {stderr:?}",
        entries.len(),
        started.elapsed().as_secs_f64()
    );

    // Off means off: a worker without OTTER_DEMO takes the entry out before its run, and vibe,
    // given no key (an empty MISTRAL_API_KEY hides any the test runner has), fails at once
    // instead of reaching the demo model.
    worker.stop().await;
    let _worker = Worker::start(
        &app,
        &vibe_var,
        &[
            ("OTTER_JOB_USER", real_vibe::job_user_for(&vibe)),
            ("OTTER_VIBE_EXTRA_ENV", "MISTRAL_API_KEY="),
        ],
    )
    .await;
    let job = finished(&app, &submit(&app, &ws, PROMPT, json!({})).await).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["exit_code"], 1, "{job:#}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("MISTRAL_API_KEY")),
        "{job:#}"
    );
    assert_ne!(job["output"]["model"], demo::MODEL, "{job:#}");
    assert_eq!(
        model.requests().len(),
        3,
        "the demo model was not asked again"
    );
    let without = read_config();
    assert!(!without.contains(demo::MODEL), "{without}");
}
