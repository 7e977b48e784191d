//! End to end with the REAL vibe CLI (mistral-vibe 3.0.3, installed by
//! `scripts/install_mistral_vibe.sh` into `~/.cache/otter/vibe-venv`): a real server and worker
//! (in this process) run a prompt through the real `vibe`, which talks to the project's own
//! scripted chat-completions server on 127.0.0.1 (DESIGN.md §9): the demo model
//! (`otter-demo-model`, run in-process). Two ways to point vibe at it:
//!
//! * here, a template home with a custom provider, the way an operator points vibe at any model
//!   (`OTTER_VIBE_HOME_TEMPLATE`, fixtures/vibe-3.0.3/README.md);
//! * in [`demo`], `OTTER_DEMO=true`, with no template and no API key.
//!
//! The harness (installing vibe, a worker beside the server, the job helpers) is
//! `otter_testkit`'s. If vibe cannot be installed (no PyPI, no CPython >= 3.12) the tests fail,
//! saying so.

mod demo;
mod follow_up;

use std::path::{Path, PathBuf};
use std::time::Instant;

use otter_demo_model::DemoModel;
use otter_demo_model::script::{COMMAND, FILE_CONTENT, FILE_NAME, FINAL_TEXT, REASONING};
use otter_testkit::jobs::{events, finished, submit};
use otter_testkit::{TestApp, Worker, real_vibe};
use serde_json::{Value, json};

/// The fixture's prompt.
const PROMPT: &str = "Create hello.txt containing a greeting, then show its contents with cat.";

/// The API key vibe must send, passed through `OTTER_VIBE_EXTRA_ENV`.
const MOCK_KEY: &str = "mock-key-123";

/// The model name the template's config.toml declares (what vibe asks the provider for).
const TEMPLATE_MODEL: &str = "mock-model";

/// The entries every run of the scripted conversation prints, `type:role-or-kind`.
const SHAPE: [&str; 5] = [
    "message:user",
    "reasoning:",
    "effect:file_write",
    "effect:shell",
    "message:assistant",
];

/// Writes a template vibe home whose `config.toml` makes the scripted server the active model
/// (the fixture README's config, telemetry and update checks off).
fn write_template(dir: &Path, api_base: &str) -> PathBuf {
    let template = dir.join("vibe-template");
    std::fs::create_dir_all(&template).expect("create the template home");
    let config = format!(
        r#"active_model = "mock"
enable_telemetry = false
enable_update_checks = false
enable_auto_update = false
enable_notifications = false
enable_connectors = false
experimental_enable_model_catalog = false

[experiments]
enable = false

[session_logging]
generate_titles = false

[[providers]]
name = "mock"
api_base = "{api_base}"
api_key_env_var = "MOCK_API_KEY"
backend = "generic"
api_style = "openai"

[[models]]
name = "{TEMPLATE_MODEL}"
provider = "mock"
alias = "mock"
temperature = 0.2
input_price = 1.0
output_price = 3.0
max_context_length = 131072
"#
    );
    std::fs::write(template.join("config.toml"), config).expect("write config.toml");
    template
}

/// The parsed vibe entries of the job's stdout, in order.
fn entries(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "output_chunk" && e["payload"]["stream"] == "stdout")
        .map(|e| &e["payload"]["entry"])
        .collect()
}

/// Each entry as `type:role` or `type:kind`.
fn shape(entries: &[&Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap_or("?"),
                e["role"]
                    .as_str()
                    .or_else(|| e["detail"]["kind"].as_str())
                    .unwrap_or("")
            )
        })
        .collect()
}

/// vibe's stderr lines.
fn stderr(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["kind"] == "output_chunk" && e["payload"]["stream"] == "stderr")
        .filter_map(|e| e["payload"]["text"].as_str())
        .collect()
}

/// Checks the scripted conversation's entries: the user's prompt, the reasoning, the file write,
/// the shell command and the final answer, each completed.
fn assert_scripted_entries(entries: &[&Value], prompt: &str, context: &str) {
    assert_eq!(shape(entries), SHAPE, "{context}");
    assert_eq!(text(entries[0]), prompt);
    assert_eq!(entries[1]["text"], REASONING, "{}", entries[1]);
    let write = entries[2];
    assert_eq!(write["state"]["status"], "completed", "{write}");
    assert_eq!(write["detail"]["input"]["content"], FILE_CONTENT, "{write}");
    let shell = entries[3];
    assert_eq!(shell["state"]["status"], "completed", "{shell}");
    assert_eq!(shell["detail"]["input"]["command"], COMMAND, "{shell}");
    assert_eq!(
        shell["state"]["outputText"],
        format!("{FILE_CONTENT}done\n"),
        "{shell}"
    );
    assert_eq!(text(entries[4]), FINAL_TEXT);
}

/// The text of a `message` entry.
fn text(entry: &Value) -> String {
    entry["content"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_vibe_runs_a_prompt_against_a_scripted_model() {
    let vibe = real_vibe::ensure_vibe().await;
    let started = Instant::now();

    let RealStack {
        llm,
        scratch,
        app,
        ws,
        _worker,
    } = RealStack::start(&vibe).await;

    let job = submit(&app, &ws, PROMPT, json!({})).await;
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let job = finished(&app, &job).await;
    let events = events(&app, &job).await;
    let stderr = stderr(&events);
    let requests = llm.requests();
    let context = format!(
        "job: {job:#}\nvibe's stderr: {stderr:#?}\nrequests to the scripted model: {}",
        requests.len()
    );

    // The run succeeded, and vibe's tools really acted in the workspace.
    assert_eq!(job["status"], "succeeded", "{context}");
    assert_eq!(job["exit_code"], 0, "{context}");
    let written = Path::new(ws["path"].as_str().expect("workspace path")).join(FILE_NAME);
    assert_eq!(
        std::fs::read_to_string(&written).unwrap_or_else(|e| panic!("{}: {e}", written.display())),
        FILE_CONTENT
    );

    // Every stdout line is one of vibe's real entries: the user's prompt, the model's
    // reasoning, a file write, a shell command, the final answer.
    let entries = entries(&events);
    assert_scripted_entries(&entries, PROMPT, &context);

    // The job's output: the final text, and usage and cost from export.json.
    let output = &job["output"];
    assert_eq!(output["final_text"], FINAL_TEXT, "{context}");
    assert_eq!(output["outcome"], "finished", "{context}");
    assert!(
        output["usage"]["total_tokens"]
            .as_i64()
            .is_some_and(|t| t > 0),
        "{context}"
    );
    assert!(
        output["cost"].as_f64().is_some_and(|c| c > 0.0),
        "{context}"
    );
    assert_eq!(output["export"]["vibe_version"], real_vibe::VIBE_VERSION);
    // The model vibe ran, by the alias the template gave it.
    assert_eq!(output["model"], "mock", "{context}");

    // What vibe sent: three streamed requests for the template's model with the key Otter passed on,
    // and Otter's instructions (AGENTS.md, naming this job) in the system message.
    assert_eq!(requests.len(), 3, "{context}");
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {MOCK_KEY}").as_str())
        );
        assert_eq!(request.body["model"], TEMPLATE_MODEL);
        assert_eq!(request.body["stream"], true);
        let messages = request.body["messages"].as_array().expect("messages");
        assert_eq!(messages[0]["role"], "system", "request {i}");
        let system = messages[0]["content"].as_str().unwrap_or_default();
        assert!(
            system.contains(&format!("Instructions from Otter (job {job_id})"))
                && system.contains(&format!("Job ID: {job_id}")),
            "request {i}: the system message lacks Otter's instructions for job {job_id}:\n{system}"
        );
        assert_eq!(messages[1]["role"], "user");
        assert_eq!(
            messages[1]["content"], PROMPT,
            "the prompt reaches vibe unchanged"
        );
        assert_eq!(
            messages.iter().filter(|m| m["role"] == "tool").count(),
            i,
            "request {i} carries the results of the tool calls before it"
        );
    }

    eprintln!(
        "real vibe run: {} entries, {} requests, {:.1}s; stderr: {stderr:?}",
        entries.len(),
        requests.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The real vibe at `vibe` against the scripted model: the model server, a server whose
/// template home points vibe at it, a workspace, and one worker running vibe as the job user.
pub(crate) struct RealStack {
    pub(crate) llm: DemoModel,
    /// Holds the template home; the test removes it at its end.
    pub(crate) scratch: PathBuf,
    pub(crate) app: TestApp,
    pub(crate) ws: Value,
    pub(crate) _worker: Worker,
}

impl RealStack {
    pub(crate) async fn start(vibe: &Path) -> Self {
        let llm = DemoModel::start(([127, 0, 0, 1], 0).into())
            .await
            .expect("start the demo model");
        let scratch = tempdir();
        let template = write_template(&scratch, &llm.api_base());
        let template_var = template.display().to_string();
        let vibe_var = vibe.display().to_string();
        let extra_env = format!("MOCK_API_KEY={MOCK_KEY}");
        let app = TestApp::spawn_with(&[("OTTER_VIBE_HOME_TEMPLATE", &template_var)]).await;
        let ws = app.workspace("ws").await;
        let _worker = Worker::start(
            &app,
            &vibe_var,
            &[
                ("OTTER_JOB_USER", real_vibe::job_user_for(vibe)),
                ("OTTER_VIBE_HOME_TEMPLATE", &template_var),
                ("OTTER_VIBE_EXTRA_ENV", &extra_env),
            ],
        )
        .await;
        Self {
            llm,
            scratch,
            app,
            ws,
            _worker,
        }
    }
}

/// A fresh scratch directory (for the template home).
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otter-real-vibe-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}
