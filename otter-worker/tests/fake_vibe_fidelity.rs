//! The stand-in against the real CLI: `otter-fake-vibe` is run for every case captured from
//! vibe 3.0.3 (`otter-core/tests/data/vibe-fixtures/vibe-3.0.3/cases/`, described in its
//! `README.md`), with the capture's command line, and must give what the real CLI gave:
//!
//! * the entries on stdout, in order, each as `type:role-or-kind` and, for effects and
//!   callbacks, their final status (`--output streaming` and `json`; the answer itself for
//!   `text`);
//! * the exit code, and stderr's lines (ports and the working directory aside);
//! * the keys of `export.json`, at every depth (or no `export.json` where vibe wrote none).
//!
//! [`CASES`] says which scenario reproduces each capture; a capture without a row fails
//! `every_capture_has_a_scenario`.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long one run may take; the longest capture (`time-limit`) stops itself after 5 s.
const RUN_WAIT: Duration = Duration::from_secs(30);

/// The key the capture's mock provider was given.
const MOCK_KEY: &str = "mock-key-123";

/// How the stand-in reproduces one capture.
struct Case {
    /// The directory under `cases/`.
    name: &'static str,
    /// `FAKE_VIBE_SCENARIO`.
    scenario: &'static str,
    /// More environment, as the capture had it.
    env: &'static [(&'static str, &'static str)],
    /// Whether `MOCK_API_KEY` is set (the capture's `missing-api-key` ran without it).
    key: bool,
    /// Whether the workspace holds an `AGENTS.md` (`untrusted-project-config`).
    agents_md: bool,
    /// Whether the run is ended with SIGTERM once the first entry is out (`sigterm`).
    sigterm: bool,
}

impl Case {
    const fn new(name: &'static str, scenario: &'static str) -> Self {
        Self {
            name,
            scenario,
            env: &[],
            key: true,
            agents_md: false,
            sigterm: false,
        }
    }

    const fn env(mut self, env: &'static [(&'static str, &'static str)]) -> Self {
        self.env = env;
        self
    }
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../otter-core/tests/data/vibe-fixtures/vibe-3.0.3/cases")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capture's command line, one argument a line.
fn argv(case: &Path) -> Vec<String> {
    read(&case.join("argv"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `--output` format an argv asks for (`text` when it asks for none, as vibe's default).
fn output_format(argv: &[String]) -> &str {
    argv.iter()
        .position(|a| a == "--output")
        .and_then(|at| argv.get(at + 1))
        .map_or("text", String::as_str)
}

/// Each entry of a stdout as `type:role-or-kind`, with `/status` for effects and callbacks;
/// for `text` output, the text itself.
fn shape(stdout: &str, format: &str) -> Vec<String> {
    let entries: Vec<Value> = match format {
        "streaming" => stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(Value::is_object)
            .collect(),
        "json" if !stdout.is_empty() => serde_json::from_str::<Vec<Value>>(stdout)
            .unwrap_or_else(|e| panic!("json output is not an array ({e}): {stdout}")),
        "json" => Vec::new(),
        _ => return stdout.lines().map(str::to_owned).collect(),
    };
    entries
        .iter()
        .map(|e| {
            let kind = e["role"]
                .as_str()
                .or_else(|| e["detail"]["kind"].as_str())
                .or_else(|| e["kind"].as_str())
                .unwrap_or("");
            let mut label = format!("{}:{kind}", e["type"].as_str().unwrap_or("?"));
            if let Some(status) = e["state"]["status"].as_str() {
                label.push('/');
                label.push_str(status);
            }
            label
        })
        .collect()
}

/// Every key path of a JSON value: `a.b` for objects, `a[].b` for the objects in arrays.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = format!("{prefix}.{key}");
                key_paths(value, &path, out);
                out.insert(path);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// The key paths of `<dir>/export.json`, or `None` when there is none.
fn export_keys(dir: &Path) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(dir.join("export.json")).ok()?;
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}/export.json is not JSON ({e})", dir.display()));
    let mut keys = BTreeSet::new();
    key_paths(&value, "", &mut keys);
    Some(keys)
}

/// What a run gave: exit code, stdout, stderr, and the export's key paths.
struct Outcome {
    exit_code: i32,
    stdout: String,
    stderr: Vec<String>,
    export: Option<BTreeSet<String>>,
}

/// A scratch layout like the capture's: `<tmp>/workspace` is the cwd, `<tmp>/export` is where
/// `--output-dir ../export` points, `<tmp>/home` and `<tmp>/vibe_home` are `HOME` and
/// `VIBE_HOME`.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("otter-fidelity-{}", uuid::Uuid::new_v4()));
        for sub in ["workspace", "home", "vibe_home"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the scratch directories");
        }
        Self(dir)
    }

    fn workspace(&self) -> PathBuf {
        self.0.join("workspace")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the stand-in in `scratch` as `case` describes, with `argv`.
fn run_fake(scratch: &Scratch, case: &Case, argv: &[String]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_otter-fake-vibe"));
    command
        .args(argv)
        .current_dir(scratch.workspace())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", scratch.0.join("home"))
        .env("VIBE_HOME", scratch.0.join("vibe_home"))
        .env("TERM", "dumb")
        .env("NO_COLOR", "1")
        .env("FAKE_VIBE_SCENARIO", case.scenario)
        .envs(case.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if case.key {
        command.env("MOCK_API_KEY", MOCK_KEY);
    }
    let mut child = command.spawn().expect("start otter-fake-vibe");
    let stdout = child.stdout.take().expect("the stand-in's stdout");
    let mut stderr = child.stderr.take().expect("the stand-in's stderr");
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut all);
        all
    });
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(());
        }
        all
    });
    if case.sigterm {
        lines
            .recv_timeout(RUN_WAIT)
            .unwrap_or_else(|e| panic!("{}: no first entry before SIGTERM ({e})", case.name));
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "{}: kill -TERM failed", case.name);
    }
    let exit_code = wait_with_deadline(child, case.name);
    let stdout = reader.join().expect("the stdout reader");
    let stderr = stderr.join().expect("the stderr reader");
    Outcome {
        exit_code,
        stdout,
        stderr: stderr_lines(&stderr, &scratch.workspace()),
        export: export_keys(&scratch.0.join("export")),
    }
}

/// Waits for the child's exit code; after [`RUN_WAIT`] kills it and fails the test.
fn wait_with_deadline(mut child: std::process::Child, name: &str) -> i32 {
    let pid = child.id().to_string();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait().map(|s| s.code().unwrap_or(-1)));
    });
    match done.recv_timeout(RUN_WAIT) {
        Ok(code) => code.expect("wait for the stand-in"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{name}: the stand-in did not exit within {RUN_WAIT:?}");
        }
    }
}

/// Where the capture ran (its scratch directories were renamed to `/srv/capture/<case>`).
fn capture_cwd(dir: &Path) -> PathBuf {
    Path::new("/srv/capture")
        .join(dir.file_name().expect("a case name"))
        .join("workspace")
}

/// stderr's lines with what differs from run to run made neutral: the working directory,
/// and the port of the chat-completions server.
fn stderr_lines(stderr: &str, cwd: &Path) -> Vec<String> {
    let cwd = cwd.to_string_lossy();
    stderr
        .lines()
        .map(|line| {
            let line = line.replace(cwd.as_ref(), "<cwd>");
            match line.split_once("http://127.0.0.1:") {
                Some((head, tail)) => {
                    let rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
                    format!("{head}http://127.0.0.1:<port>{rest}")
                }
                None => line,
            }
        })
        .collect()
}

/// What the capture has: its exit code, stdout and export key paths.
fn captured(dir: &Path) -> Outcome {
    Outcome {
        exit_code: read(&dir.join("exit_code"))
            .trim()
            .parse()
            .expect("exit_code is a number"),
        stdout: std::fs::read_to_string(dir.join("stdout")).unwrap_or_default(),
        stderr: stderr_lines(&read(&dir.join("stderr")), &capture_cwd(dir)),
        export: export_keys(dir),
    }
}

/// The differences between a capture and the stand-in's run, one a line.
fn differences(format: &str, real: &Outcome, fake: &Outcome) -> Vec<String> {
    let mut diffs = Vec::new();
    if real.exit_code != fake.exit_code {
        diffs.push(format!(
            "exit code: real {}, stand-in {}",
            real.exit_code, fake.exit_code
        ));
    }
    if real.stderr != fake.stderr {
        diffs.push(format!(
            "stderr: real {:?}, stand-in {:?}",
            real.stderr, fake.stderr
        ));
    }
    let (real_shape, fake_shape) = (shape(&real.stdout, format), shape(&fake.stdout, format));
    if real_shape != fake_shape {
        diffs.push(format!(
            "entries ({format}): real {real_shape:?}, stand-in {fake_shape:?}"
        ));
    }
    match (&real.export, &fake.export) {
        (Some(real), Some(fake)) if real != fake => diffs.push(format!(
            "export.json keys: only real {:?}, only stand-in {:?}",
            real.difference(fake).collect::<Vec<_>>(),
            fake.difference(real).collect::<Vec<_>>()
        )),
        (Some(_), None) => diffs.push("export.json: the stand-in wrote none".to_owned()),
        (None, Some(_)) => diffs.push("export.json: the real CLI wrote none".to_owned()),
        _ => {}
    }
    diffs
}

fn assert_faithful(case: &Case) {
    let name = case.name;
    let dir = cases_dir().join(name);
    let argv = argv(&dir);
    let scratch = Scratch::new();
    if case.agents_md {
        std::fs::write(scratch.workspace().join("AGENTS.md"), "# Project notes\n")
            .expect("write AGENTS.md");
    }
    let fake = run_fake(&scratch, case, &argv);
    let diffs = differences(output_format(&argv), &captured(&dir), &fake);
    assert!(
        diffs.is_empty(),
        "case {name} (scenario {}): the stand-in differs from vibe 3.0.3:\n  {}",
        case.scenario,
        diffs.join("\n  ")
    );
}

/// `continue`: three runs in one `VIBE_HOME`, each captured as `stdout.turn<N>-<format>[-c]`
/// (`-c` continues the last session); the capture's `argv` and `stderr` are the last run's,
/// and every run printed the same stderr. Each run is the capture's prompt (its last user
/// message) in that format, with `--trust`.
#[test]
fn continue_goes_on_with_the_last_session() {
    let dir = cases_dir().join("continue");
    let case = Case::new("continue", "text");
    let scratch = Scratch::new();
    let mut turns: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("the continue case")
        .map(|e| e.expect("a directory entry").path())
        .filter_map(|p| {
            let name = p
                .file_name()?
                .to_str()?
                .strip_prefix("stdout.turn")?
                .to_owned();
            Some((name, p))
        })
        .collect();
    turns.sort();
    assert_eq!(turns.len(), 3, "continue: three captured runs");
    let stderr = stderr_lines(&read(&dir.join("stderr")), &capture_cwd(&dir));
    let mut diffs = Vec::new();
    for (turn, path) in &turns {
        let format = ["streaming", "json", "text"]
            .into_iter()
            .find(|f| turn.contains(f))
            .expect("a format in the file name");
        let stdout = read(path);
        let prompt = last_user_text(&stdout, format);
        let mut argv: Vec<String> = ["--prompt", &prompt, "--output", format, "--trust"]
            .map(str::to_owned)
            .into();
        if turn.ends_with("-c") {
            argv.push("-c".to_owned());
        }
        let fake = run_fake(&scratch, &case, &argv);
        let real = Outcome {
            exit_code: 0,
            stdout,
            stderr: stderr.clone(),
            export: None,
        };
        diffs.extend(
            differences(format, &real, &fake)
                .into_iter()
                .map(|d| format!("turn {turn}: {d}")),
        );
    }
    assert!(
        diffs.is_empty(),
        "case continue (scenario text): the stand-in differs from vibe 3.0.3:\n  {}",
        diffs.join("\n  ")
    );
}

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../otter-core/tests/data/vibe-captures/vibe-3.0.3/resume")
}

/// The top-level keys of `<dir>/export.json`.
fn top_keys(dir: &Path) -> BTreeSet<String> {
    let value: Value = serde_json::from_str(&read(&dir.join("export.json"))).expect("JSON");
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// `resume` (otter-core/tests/data/vibe-captures/vibe-3.0.3/resume, made against the demo
/// model, so the entries of a turn are not compared, only what `--resume` changes): a first
/// turn, a second with `--resume <its session id>` that keeps the id and prints only the new
/// turn, and `--resume` of an unknown id (exit 1, `Session not found`, nothing on stdout,
/// outcome `usage_error`).
#[test]
fn resume_goes_on_with_the_named_session_and_refuses_an_unknown_one() {
    let case = Case::new("resume", "tools");
    let scratch = Scratch::new();
    let export_dir = scratch.0.join("export");
    let export_of = || -> Value {
        serde_json::from_str(&read(&export_dir.join("export.json"))).expect("export.json")
    };
    let with_export = |dir: &str| {
        let mut argv = argv(&captures_dir().join(dir));
        argv.extend(["--output-dir".to_owned(), "../export".to_owned()]);
        argv
    };
    let stderr_of = |dir: &str| {
        stderr_lines(
            &read(&captures_dir().join(dir).join("stderr")),
            Path::new("/"),
        )
    };
    let code_of = |dir: &str| -> i32 {
        read(&captures_dir().join(dir).join("exit_code"))
            .trim()
            .parse()
            .expect("a number")
    };

    let first = run_fake(&scratch, &case, &with_export("turn1"));
    assert_eq!(first.exit_code, code_of("turn1"));
    assert_eq!(first.stderr, stderr_of("turn1"));
    let session = export_of()["session_id"]
        .as_str()
        .expect("the first turn's session id")
        .to_owned();
    assert_eq!(
        top_keys(&export_dir),
        top_keys(&captures_dir().join("turn1"))
    );

    let mut argv = with_export("turn2");
    let at = argv.iter().position(|a| a == "SESSION_1").expect("the id");
    argv[at] = session.clone();
    let second = run_fake(&scratch, &case, &argv);
    assert_eq!(second.exit_code, code_of("turn2"));
    assert_eq!(second.stderr, stderr_of("turn2"));
    assert_eq!(
        export_of()["session_id"],
        session.as_str(),
        "the id is kept"
    );
    let users: Vec<String> = shape(&second.stdout, "streaming")
        .into_iter()
        .filter(|e| e == "message:user")
        .collect();
    assert_eq!(users.len(), 1, "streaming prints only the new turn");
    assert_eq!(
        last_user_text(&second.stdout, "streaming"),
        last_user_text(&read(&captures_dir().join("turn2/stdout")), "streaming")
    );

    let unknown = run_fake(&scratch, &case, &with_export("unknown"));
    let real = captures_dir().join("unknown");
    assert_eq!(unknown.exit_code, code_of("unknown"));
    assert_eq!(unknown.stderr, stderr_of("unknown"));
    assert_eq!(unknown.stdout, read(&real.join("stdout")));
    assert_eq!(unknown.export, export_keys(&real), "export.json's keys");
    let export = export_of();
    assert_eq!(export["outcome"], "usage_error");
    assert_eq!(export["session_id"], Value::Null);
}

/// The text of the last user message in a streaming or json stdout.
fn last_user_text(stdout: &str, format: &str) -> String {
    let entries: Vec<Value> = if format == "json" {
        serde_json::from_str(stdout).expect("a json array")
    } else {
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("an entry"))
            .collect()
    };
    entries
        .iter()
        .rev()
        .find(|e| e["role"] == "user")
        .and_then(|e| e["content"][0]["text"].as_str())
        .expect("a user message")
        .to_owned()
}

#[test]
fn every_capture_has_a_scenario() {
    let mut captures: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("the 3.0.3 cases")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    captures.sort();
    let mut covered: Vec<String> = CASES.iter().map(|c| c.name.to_owned()).collect();
    covered.push("continue".to_owned());
    covered.sort();
    assert_eq!(
        captures, covered,
        "every 3.0.3 capture needs a row in CASES (and every row a capture)"
    );
}

/// Declares [`CASES`], every capture with the scenario that reproduces it (the command line is
/// the capture's own `argv`), and one test per case. `continue` is three runs and has its own test.
macro_rules! cases {
    ($($test:ident: $case:expr),* $(,)?) => {
        const CASES: &[Case] = &[$($case),*];
        $(
            #[test]
            fn $test() {
                assert_faithful(&$case);
            }
        )*
    };
}

cases! {
    approval_denied: Case::new("approval-denied", "risky"),
    bad_output_flag: Case::new("bad-output-flag", "tools"),
    empty_prompt: Case::new("empty-prompt", "tools"),
    invalid_api_key: Case::new("invalid-api-key", "config-error"),
    json: Case::new("json", "tools"),
    missing_api_key: Case {
        key: false,
        ..Case::new("missing-api-key", "missing-key")
    },
    no_config: Case::new("no-config", "no-config"),
    no_prompt_no_tty: Case::new("no-prompt-no-tty", "tools"),
    price_limit: Case::new("price-limit", "price-limit"),
    server_error_500: Case::new("server-error-500", "infra-error")
        .env(&[("VIBE_API_RETRY_MAX_ELAPSED_TIME", "4")]),
    server_error_500_json: Case::new("server-error-500-json", "infra-error")
        .env(&[("VIBE_API_RETRY_MAX_ELAPSED_TIME", "4")]),
    sigterm: Case {
        sigterm: true,
        ..Case::new("sigterm", "hang")
    },
    streaming: Case::new("streaming", "tools"),
    streaming_quiet_stderr: Case::new("streaming-quiet-stderr", "text")
        .env(&[("MISTRAL_API_KEY", "unused-placeholder")]),
    streaming_rich: Case::new("streaming-rich", "rich"),
    streaming_timing: Case::new("streaming-timing", "slow").env(&[("FAKE_VIBE_SLEEP_MS", "100")]),
    text: Case::new("text", "tools"),
    time_limit: Case::new("time-limit", "hang"),
    token_limit: Case::new("token-limit", "token-limit"),
    turn_limit: Case::new("turn-limit", "turn-limit"),
    turn_limit_json: Case::new("turn-limit-json", "turn-limit"),
    turn_limit_text: Case::new("turn-limit-text", "turn-limit"),
    untrusted_plain: Case::new("untrusted-plain", "tools"),
    untrusted_project_config: Case {
        agents_md: true,
        ..Case::new("untrusted-project-config", "tools")
    },
}

/// `rate-limit` (otter-core/tests/data/vibe-captures/vibe-3.0.3/rate-limit, the real vibe against
/// the demo model answering 429): once its own retries are spent, vibe exits 2 with the client
/// error on stderr and export.json's `infrastructure_failure` with `error.code: "rate_limit"`,
/// whose message is stderr's error without `Error: `. The stand-in's `rate-limit` scenario ends
/// the same way (without the five minutes of retries, and with its own provider's message).
#[test]
fn a_rate_limit_ends_as_the_real_vibe_ends_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../otter-core/tests/data/vibe-captures/vibe-3.0.3/rate-limit/no-retry-after");
    let case = Case::new("rate-limit", "rate-limit");
    let scratch = Scratch::new();
    let mut argv = argv(&dir);
    argv.extend(["--output-dir".to_owned(), "../export".to_owned()]);
    let fake = run_fake(&scratch, &case, &argv);
    let real_code: i32 = read(&dir.join("exit_code")).trim().parse().unwrap();
    assert_eq!(fake.exit_code, real_code);
    let real_stderr: Vec<String> = read(&dir.join("stderr"))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(fake.stderr.len(), real_stderr.len(), "{:?}", fake.stderr);
    assert_eq!(fake.stderr[0], real_stderr[0], "the keyring notice");
    let url = "Error: Client error '429 Too Many Requests' for url 'http://127.0.0.1:";
    let more = "For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/429: ";
    for (lines, who) in [(&fake.stderr, "stand-in"), (&real_stderr, "capture")] {
        assert!(lines[1].starts_with(url), "{who}: {}", lines[1]);
        assert!(
            lines[1].ends_with("/v1/chat/completions'"),
            "{who}: {}",
            lines[1]
        );
        assert!(lines[2].starts_with(more), "{who}: {}", lines[2]);
    }
    assert_eq!(
        fake.stdout.lines().count(),
        read(&dir.join("stdout")).lines().count()
    );
    // The capture ran the demo model (`config.models.otter-demo`), the stand-in its `mock`.
    assert_eq!(
        top_keys(&scratch.0.join("export")),
        top_keys(&dir),
        "export.json's keys"
    );
    let export: Value = serde_json::from_str(&read(&scratch.0.join("export/export.json"))).unwrap();
    let real: Value = serde_json::from_str(&read(&dir.join("export.json"))).unwrap();
    for key in ["outcome", "exit_code"] {
        assert_eq!(export[key], real[key], "{key}");
    }
    assert_eq!(export["error"]["code"], real["error"]["code"]);
    assert_eq!(export["error"]["code"], "rate_limit");
    let message = export["error"]["message"].as_str().unwrap();
    assert_eq!(
        stderr_lines(&format!("Error: {message}"), &scratch.workspace()),
        fake.stderr[1..],
        "the export's message is stderr's error"
    );
}
