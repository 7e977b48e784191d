//! The vibe output parser against real captured output of vibe 3.0.3, 2.26.1 and 1.3.5.
//!
//! The captures live in `tests/data/vibe-fixtures/vibe-<version>/`; each version's `README.md`
//! explains every case. `cases/<case>/` holds `argv`, `stdout`, `stderr`, `exit_code` and,
//! for vibe ≥ 2.26, usually `export.json`.

use std::path::{Path, PathBuf};

use otter_core::output::LineSplitter;
use otter_core::vibe::export::{
    ExportError, ExportReadError, RunExport, parse_export, read_export,
};
use otter_core::vibe::stream::{
    EntryKind, Transcript, assistant_text, effect_kind, effect_status, effect_tool_name,
    entry_kind, message_text, parse_line, stop_event,
};
use serde_json::Value;

use EntryKind::{
    AssistantMessage as Assistant, Callback, Effect, Reasoning, SystemMessage as System,
    ToolResult as Tool, UserMessage as User,
};

const VERSIONS: [&str; 3] = ["vibe-3.0.3", "vibe-2.26.1", "vibe-1.3.5"];

/// The final answer of the scripted `tools` conversation, in every version.
const TOOLS_ANSWER: &str =
    "I created `hello.txt` and ran `cat hello.txt`; it printed \"Hello from the mock LLM\". Done.";
const TEXT_ANSWER: &str = "Hello! This is a plain text answer from the mock LLM.";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vibe-fixtures")
}

fn fixture(rel: &str) -> PathBuf {
    root().join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    let path = fixture(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn read_text(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap_or_else(|e| panic!("{rel} is not UTF-8: {e}"))
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The `--output` format of a stdout file: from its name (`streaming.jsonl`, `json.json`,
/// `text.txt`, `stdout.turnN-<format>...`) or, for `cases/<case>/stdout`, from the case's argv.
fn stdout_format(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    match name {
        "streaming.jsonl" => Some("streaming".to_owned()),
        "json.json" => Some("json".to_owned()),
        "text.txt" => Some("text".to_owned()),
        "stdout" => {
            let argv = std::fs::read_to_string(path.with_file_name("argv")).ok()?;
            let args: Vec<&str> = argv.lines().collect();
            let at = args.iter().position(|a| *a == "--output")?;
            args.get(at + 1).map(|f| (*f).to_owned())
        }
        _ => {
            let rest = name.strip_prefix("stdout.turn")?;
            ["streaming", "json", "text"]
                .into_iter()
                .find(|f| rest.contains(f))
                .map(str::to_owned)
        }
    }
}

/// All stdout files of all versions with their format.
fn stdout_files() -> Vec<(PathBuf, String)> {
    walk(&root())
        .into_iter()
        .filter_map(|p| stdout_format(&p).map(|f| (p, f)))
        .collect()
}

/// Parse a streaming stdout: every non-empty line must be a JSON object of a known kind.
fn entries(rel_path: &str) -> Vec<Value> {
    let text = read_text(rel_path);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{rel_path}: last line unterminated"
    );
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            parse_line(line)
                .unwrap_or_else(|| panic!("{rel_path}:{}: not a JSON object: {line}", n + 1))
        })
        .collect()
}

fn kinds(entries: &[Value]) -> Vec<EntryKind> {
    entries.iter().map(entry_kind).collect()
}

fn transcript(entries: &[Value]) -> Transcript {
    let mut transcript = Transcript::default();
    for entry in entries {
        transcript.observe(entry);
    }
    transcript
}

/// Kinds and transcript of a streaming stdout file.
fn run(rel_path: &str) -> (Vec<EntryKind>, Transcript) {
    let entries = entries(rel_path);
    (kinds(&entries), transcript(&entries))
}

fn effect_statuses(rel_path: &str) -> Vec<String> {
    entries(rel_path)
        .iter()
        .filter_map(|e| effect_status(e).map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// stdout, all versions

#[test]
fn fixtures_are_all_there() {
    for version in VERSIONS {
        assert!(fixture(version).join("README.md").is_file(), "{version}");
    }
    assert_eq!(read_text("vibe-3.0.3/VERSION").trim(), "vibe 3.0.3");
    let files = stdout_files();
    let streaming = files.iter().filter(|(_, f)| f == "streaming").count();
    let json = files.iter().filter(|(_, f)| f == "json").count();
    let text = files.iter().filter(|(_, f)| f == "text").count();
    // streaming: 3.0.3 18 cases + 2 continue turns + top level, 2.26.1 7 + 1, 1.3.5 5 + 1;
    // json: 5 + 2 + 2; text: 3 + 2 + 3. (`--output yaml` cases are none of them.)
    assert_eq!((streaming, json, text), (35, 9, 8), "{files:#?}");
}

#[test]
fn every_streaming_stdout_is_ndjson_of_known_entries() {
    let mut lines = 0;
    for (path, format) in stdout_files() {
        if format != "streaming" {
            continue;
        }
        let rel_path = rel(&path);
        for entry in entries(&rel_path) {
            lines += 1;
            let kind = entry_kind(&entry);
            assert_ne!(kind, EntryKind::Other, "{rel_path}: {entry}");
            if kind == Effect {
                let status = effect_status(&entry);
                assert!(
                    matches!(status, Some("completed" | "failed" | "cancelled")),
                    "{rel_path}: effect status {status:?}"
                );
                assert!(effect_tool_name(&entry).is_some(), "{rel_path}: {entry}");
                assert!(effect_kind(&entry).is_some(), "{rel_path}: {entry}");
            }
        }
    }
    assert_eq!(lines, 99);
}

#[test]
fn key_order_and_separators_differ_between_versions() {
    // A consumer must parse JSON, never match raw text.
    let v3 = read_text("vibe-3.0.3/streaming.jsonl");
    let v2 = read_text("vibe-2.26.1/streaming.jsonl");
    let v1 = read_text("vibe-1.3.5/streaming.jsonl");
    assert!(v3.contains(r#""type":"message""#) && !v3.contains(r#""type": "message""#));
    assert!(v2.contains(r#""type": "message""#) && !v2.contains(r#""type":"message""#));
    assert!(v1.starts_with(r#"{"role": "system""#) && !v1.contains(r#""type": "message""#));
    // Key order changes from run to run: the keys of the first effect's `state`, raw.
    let state_keys = |case: &str| -> Vec<String> {
        let text = read_text(&format!("vibe-3.0.3/cases/{case}/stdout"));
        let line = text.lines().nth(1).unwrap_or_default();
        let state = line.split(r#""state":{"#).nth(1).unwrap_or_default();
        state
            .split(r#"":"#)
            .take(3)
            .filter_map(|part| part.rsplit('"').next().map(str::to_owned))
            .collect()
    };
    assert_eq!(state_keys("streaming"), ["status", "outputText", "output"]);
    assert_eq!(
        state_keys("token-limit"),
        ["status", "outputText", "approvalSource"]
    );
}

// ---------------------------------------------------------------------------------------------
// vibe 3.0.3

#[test]
fn v3_streaming() {
    for file in [
        "vibe-3.0.3/streaming.jsonl",
        "vibe-3.0.3/cases/streaming/stdout",
    ] {
        let (kinds, t) = run(file);
        assert_eq!(kinds, [User, Effect, Effect, Assistant], "{file}");
        assert_eq!(t.entries(), 4);
        assert_eq!(
            (t.count(User), t.count(Effect), t.count(Assistant)),
            (1, 2, 1)
        );
        assert_eq!(
            (t.effects(), t.failed_effects(), t.cancelled_effects()),
            (2, 0, 0)
        );
        assert_eq!(t.final_text(), Some(TOOLS_ANSWER), "{file}");
        assert_eq!(t.stop_event(), None);
    }
    let entries = entries("vibe-3.0.3/streaming.jsonl");
    let effects: Vec<(Option<&str>, Option<&str>)> = entries
        .iter()
        .filter(|e| entry_kind(e) == Effect)
        .map(|e| (effect_kind(e), effect_tool_name(e)))
        .collect();
    assert_eq!(
        effects,
        [
            (Some("file_write"), Some("file_system.write_file")),
            (Some("shell"), Some("file_system.bash")),
        ]
    );
    assert_eq!(
        message_text(&entries[0]).as_deref(),
        Some("Create hello.txt containing a greeting, then show its contents with cat.")
    );
    assert_eq!(assistant_text(&entries[0]), None);
    assert_eq!(assistant_text(&entries[3]).as_deref(), Some(TOOLS_ANSWER));
    // The shell effect's output.
    assert_eq!(
        entries[2]
            .pointer("/state/outputText")
            .and_then(Value::as_str),
        Some("Hello from the mock LLM\ndone\n")
    );
}

#[test]
fn v3_same_conversation_in_other_cases() {
    for case in [
        "streaming-timing",
        "untrusted-plain",
        "untrusted-project-config",
    ] {
        let (kinds, t) = run(&format!("vibe-3.0.3/cases/{case}/stdout"));
        assert_eq!(kinds, [User, Effect, Effect, Assistant], "{case}");
        assert_eq!(t.final_text(), Some(TOOLS_ANSWER), "{case}");
    }
}

#[test]
fn v3_streaming_rich() {
    let (kinds, t) = run("vibe-3.0.3/cases/streaming-rich/stdout");
    assert_eq!(
        kinds,
        [
            User, Reasoning, Assistant, Effect, Reasoning, Assistant, Effect, Reasoning, Assistant
        ]
    );
    assert_eq!(
        (t.count(Reasoning), t.count(Assistant), t.effects()),
        (3, 3, 2)
    );
    assert_eq!(t.final_text(), Some(TOOLS_ANSWER));
    let entries = entries("vibe-3.0.3/cases/streaming-rich/stdout");
    let texts: Vec<String> = entries.iter().filter_map(assistant_text).collect();
    assert_eq!(
        texts,
        [
            "Next I will call write_file.",
            "Next I will call bash.",
            TOOLS_ANSWER
        ]
    );
    assert_eq!(
        entries[1].get("text").and_then(Value::as_str),
        Some("The user wants a file. I will use the tools.")
    );
    assert_eq!(assistant_text(&entries[1]), None);
}

#[test]
fn v3_approval_denied() {
    let (kinds, t) = run("vibe-3.0.3/cases/approval-denied/stdout");
    assert_eq!(kinds, [User, Callback, Effect, Assistant]);
    assert_eq!(t.count(Callback), 1);
    assert_eq!((t.effects(), t.failed_effects()), (1, 1));
    assert_eq!(t.final_text(), Some("Finished the risky step."));
    let entries = entries("vibe-3.0.3/cases/approval-denied/stdout");
    let callback = &entries[1];
    assert_eq!(
        callback.pointer("/detail/kind").and_then(Value::as_str),
        Some("approval")
    );
    assert_eq!(
        callback
            .pointer("/state/output/decision/type")
            .and_then(Value::as_str),
        Some("deny")
    );
    let effect = &entries[2];
    assert_eq!(effect_status(effect), Some("failed"));
    assert_eq!(
        effect.pointer("/state/error/code").and_then(Value::as_str),
        Some("tool_denied")
    );
    // The callback points at the effect it guards.
    assert_eq!(callback.get("relatedEntryId"), effect.get("id"));
}

#[test]
fn v3_limits_leave_no_final_answer() {
    let (kinds, t) = run("vibe-3.0.3/cases/turn-limit/stdout");
    assert_eq!(kinds, [User, Effect, Effect]);
    assert_eq!(t.count(Assistant), 0);
    assert_eq!(t.final_text(), None);
    assert_eq!(
        effect_statuses("vibe-3.0.3/cases/turn-limit/stdout"),
        ["completed", "completed"]
    );

    let (kinds, t) = run("vibe-3.0.3/cases/price-limit/stdout");
    assert_eq!(kinds, [User, Effect]);
    assert_eq!((t.effects(), t.cancelled_effects()), (1, 1));
    assert_eq!(t.final_text(), None);
    let entries = entries("vibe-3.0.3/cases/price-limit/stdout");
    assert_eq!(
        entries[1].pointer("/state/reason").and_then(Value::as_str),
        Some("client interrupt")
    );

    let (kinds, t) = run("vibe-3.0.3/cases/token-limit/stdout");
    assert_eq!(kinds, [User, Effect, Effect]);
    assert_eq!(
        effect_statuses("vibe-3.0.3/cases/token-limit/stdout"),
        ["completed", "cancelled"]
    );
    assert_eq!(t.final_text(), None);
}

#[test]
fn v3_errors_print_only_the_prompt() {
    for case in [
        "time-limit",
        "sigterm",
        "server-error-500",
        "invalid-api-key",
    ] {
        let (kinds, t) = run(&format!("vibe-3.0.3/cases/{case}/stdout"));
        assert_eq!(kinds, [User], "{case}");
        assert_eq!(t.final_text(), None, "{case}");
    }
    for case in [
        "missing-api-key",
        "no-config",
        "empty-prompt",
        "no-prompt-no-tty",
        "bad-output-flag",
        "server-error-500-json",
        "turn-limit-text",
    ] {
        assert!(
            read(&format!("vibe-3.0.3/cases/{case}/stdout")).is_empty(),
            "{case}"
        );
    }
}

#[test]
fn v3_text_only_and_continue() {
    for file in [
        "vibe-3.0.3/cases/streaming-quiet-stderr/stdout",
        "vibe-3.0.3/cases/continue/stdout.turn1-streaming",
        "vibe-3.0.3/cases/continue/stdout.turn2-streaming-c",
    ] {
        let (kinds, t) = run(file);
        assert_eq!(kinds, [User, Assistant], "{file}");
        assert_eq!(t.final_text(), Some(TEXT_ANSWER), "{file}");
        assert_eq!(t.effects(), 0);
    }
    // With `-c`, `--output json` prints the whole session: three turns, six entries.
    let session = json_array("vibe-3.0.3/cases/continue/stdout.turn3-json-c");
    assert_eq!(
        kinds(&session),
        [User, Assistant, User, Assistant, User, Assistant]
    );
    let prompts: Vec<String> = session
        .iter()
        .filter(|e| entry_kind(e) == User)
        .filter_map(message_text)
        .collect();
    assert_eq!(
        prompts,
        ["First question", "Second question", "Third question"]
    );
}

// ---------------------------------------------------------------------------------------------
// vibe 2.26.1

#[test]
fn v2_streaming() {
    for file in [
        "vibe-2.26.1/streaming.jsonl",
        "vibe-2.26.1/cases/streaming/stdout",
    ] {
        let (kinds, t) = run(file);
        assert_eq!(kinds, [User, Effect, Effect, Assistant], "{file}");
        assert_eq!((t.effects(), t.failed_effects()), (2, 0));
        assert_eq!(t.final_text(), Some(TOOLS_ANSWER), "{file}");
    }
    // 2.26 user messages have no `outcome` key, 3.0.3 ones do.
    let v2 = entries("vibe-2.26.1/streaming.jsonl");
    let v3 = entries("vibe-3.0.3/streaming.jsonl");
    assert!(v2[0].get("outcome").is_none());
    assert!(v3[0].get("outcome").is_some());
}

#[test]
fn v2_legacy_harness() {
    // The legacy harness's tool names lack the `file_system.` prefix, and its write_file
    // rejected the mock's arguments: both effects failed, yet the model's scripted answer still
    // claims success. Failed effects must be looked at, not just the final text.
    let (kinds, t) = run("vibe-2.26.1/cases/legacy-streaming/stdout");
    assert_eq!(kinds, [User, Effect, Effect, Assistant]);
    assert_eq!((t.effects(), t.failed_effects()), (2, 2));
    assert_eq!(t.final_text(), Some(TOOLS_ANSWER));
    let names: Vec<String> = entries("vibe-2.26.1/cases/legacy-streaming/stdout")
        .iter()
        .filter_map(|e| effect_tool_name(e).map(str::to_owned))
        .collect();
    assert_eq!(names, ["write_file", "bash"]);

    // On a turn limit the legacy harness prints a synthetic stop-event assistant message,
    // which is not a final answer.
    let (kinds, t) = run("vibe-2.26.1/cases/legacy-turn-limit/stdout");
    assert_eq!(kinds, [User, Effect, Effect, Assistant]);
    assert_eq!(t.final_text(), None);
    assert_eq!(t.stop_event(), Some("Turn limit of 2 reached"));
    let entries = entries("vibe-2.26.1/cases/legacy-turn-limit/stdout");
    assert_eq!(
        assistant_text(&entries[3]).as_deref(),
        Some("<vibe_stop_event>Turn limit of 2 reached</vibe_stop_event>")
    );
}

#[test]
fn v2_limits_and_errors() {
    let (kinds, t) = run("vibe-2.26.1/cases/turn-limit/stdout");
    assert_eq!(kinds, [User, Effect, Effect]);
    assert_eq!((t.final_text(), t.stop_event()), (None, None));
    for case in ["error500", "sigterm"] {
        let (kinds, t) = run(&format!("vibe-2.26.1/cases/{case}/stdout"));
        assert_eq!(kinds, [User], "{case}");
        assert_eq!(t.final_text(), None, "{case}");
    }
    assert!(read("vibe-2.26.1/cases/missing-key/stdout").is_empty());
}

// ---------------------------------------------------------------------------------------------
// vibe 1.3.5

#[test]
fn v1_streaming() {
    for file in [
        "vibe-1.3.5/streaming.jsonl",
        "vibe-1.3.5/cases/streaming/stdout",
    ] {
        let (kinds, t) = run(file);
        assert_eq!(
            kinds,
            [System, User, Assistant, Tool, Assistant, Tool, Assistant],
            "{file}"
        );
        assert_eq!((t.count(System), t.count(Tool)), (1, 2));
        // Each tool call of an assistant message counts as an effect.
        assert_eq!((t.effects(), t.failed_effects()), (2, 0));
        assert_eq!(t.final_text(), Some(TOOLS_ANSWER), "{file}");
    }
    let entries = entries("vibe-1.3.5/streaming.jsonl");
    // Assistant messages that only call tools have empty content: no text.
    assert_eq!(entries[2].get("content").and_then(Value::as_str), Some(""));
    assert_eq!(assistant_text(&entries[2]), None);
    assert_eq!(
        entries[2]
            .pointer("/tool_calls/0/function/name")
            .and_then(Value::as_str),
        Some("write_file")
    );
    assert_eq!(
        entries[3].get("tool_call_id").and_then(Value::as_str),
        Some("call_mock_1")
    );
    assert_eq!(assistant_text(&entries[6]).as_deref(), Some(TOOLS_ANSWER));
}

#[test]
fn v1_limits_and_errors() {
    let (kinds, t) = run("vibe-1.3.5/cases/turn-limit/stdout");
    assert_eq!(kinds, [System, User, Assistant, Tool, Assistant, Tool]);
    assert_eq!((t.effects(), t.final_text()), (2, None));
    // 1.x reports the stop on stderr, not stdout.
    let stderr = read_text("vibe-1.3.5/cases/turn-limit/stderr");
    assert_eq!(stop_event(&stderr), Some("Turn limit of 2 reached"));
    let stderr = read_text("vibe-1.3.5/cases/price-limit/stderr");
    assert_eq!(
        stop_event(&stderr),
        Some("Price limit exceeded: $0.0039 > $0.00")
    );

    let (kinds, t) = run("vibe-1.3.5/cases/price-limit/stdout");
    assert_eq!(kinds, [System, User, Assistant, Tool]);
    assert_eq!(t.final_text(), None);
    let (kinds, _) = run("vibe-1.3.5/cases/error500/stdout");
    assert_eq!(kinds, [System, User]);
    let (kinds, t) = run("vibe-1.3.5/cases/sigterm/stdout");
    assert_eq!((kinds, t.final_text()), (vec![System], None));
    assert_eq!(
        read_text("vibe-1.3.5/cases/sigterm/exit_code").trim(),
        "143"
    );
    for case in ["bad-output", "turn-limit-text"] {
        assert!(
            read(&format!("vibe-1.3.5/cases/{case}/stdout")).is_empty(),
            "{case}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// --output json and --output text

fn json_array(rel_path: &str) -> Vec<Value> {
    match serde_json::from_slice::<Value>(&read(rel_path)) {
        Ok(Value::Array(entries)) => entries,
        other => panic!("{rel_path}: not a JSON array: {other:?}"),
    }
}

#[test]
fn json_output_is_a_pretty_array_not_ndjson() {
    assert_eq!(parse_line("["), None);
    assert_eq!(parse_line("]"), None);
    assert_eq!(parse_line("  {"), None);
    for (path, format) in stdout_files() {
        if format != "json" {
            continue;
        }
        let rel_path = rel(&path);
        let text = read_text(&rel_path);
        if text.is_empty() {
            continue; // server-error-500-json
        }
        assert!(text.starts_with("[\n"), "{rel_path}");
        for line in text.lines() {
            assert_eq!(parse_line(line), None, "{rel_path}: {line}");
        }
        for entry in json_array(&rel_path) {
            assert_ne!(entry_kind(&entry), EntryKind::Other, "{rel_path}: {entry}");
        }
    }
    // The array holds the same entries as the streaming output of the same conversation.
    for version in VERSIONS {
        let array = json_array(&format!("{version}/json.json"));
        let streamed = entries(&format!("{version}/streaming.jsonl"));
        assert_eq!(kinds(&array), kinds(&streamed), "{version}");
        assert_eq!(
            transcript(&array).final_text(),
            Some(TOOLS_ANSWER),
            "{version}"
        );
    }
    let turn_limit = json_array("vibe-3.0.3/cases/turn-limit-json/stdout");
    assert_eq!(kinds(&turn_limit), [User, Effect, Effect]);
}

#[test]
fn text_output_is_the_final_answer() {
    for (path, format) in stdout_files() {
        if format != "text" {
            continue;
        }
        let rel_path = rel(&path);
        let text = read_text(&rel_path);
        for line in text.lines() {
            assert_eq!(parse_line(line), None, "{rel_path}");
        }
        if rel_path.contains("turn-limit") {
            assert_eq!(text, "", "{rel_path}");
        } else {
            assert_eq!(text, format!("{TOOLS_ANSWER}\n"), "{rel_path}");
        }
    }
}

#[test]
fn nothing_panics_on_any_fixture_line() {
    let files = walk(&root());
    assert_eq!(files.len(), 282);
    for path in files {
        let bytes = std::fs::read(&path).expect("fixture");
        let text = String::from_utf8_lossy(&bytes);
        let mut t = Transcript::default();
        for line in text.split('\n') {
            if let Some(entry) = parse_line(line) {
                let _ = (
                    entry_kind(&entry),
                    assistant_text(&entry),
                    message_text(&entry),
                );
                let _ = (
                    effect_status(&entry),
                    effect_kind(&entry),
                    effect_tool_name(&entry),
                );
                t.observe(&entry);
            }
            let _ = stop_event(line);
            // Every prefix of a line, too (a cut line).
            for end in (0..line.len())
                .filter(|&i| line.is_char_boundary(i))
                .step_by(97)
            {
                let _ = parse_line(&line[..end]);
            }
        }
        let _ = parse_export(&bytes);
        let _ = (t.entries(), t.final_text());
    }
}

// ---------------------------------------------------------------------------------------------
// export.json

fn export(rel_path: &str) -> RunExport {
    parse_export(&read(rel_path)).unwrap_or_else(|e| panic!("{rel_path}: {e}"))
}

#[test]
fn every_export_parses_and_agrees_with_the_exit_code() {
    let exports: Vec<PathBuf> = walk(&root())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "export.json"))
        .collect();
    assert_eq!(exports.len(), 20);
    for path in exports {
        let rel_path = rel(&path);
        let export = export(&rel_path);
        let version = rel_path
            .split('/')
            .next()
            .and_then(|v| v.strip_prefix("vibe-"));
        assert_eq!(export.vibe_version.as_deref(), version, "{rel_path}");
        assert!(export.outcome.is_some(), "{rel_path}");
        let exit_file = path.with_file_name("exit_code");
        if let Ok(exit) = std::fs::read_to_string(&exit_file) {
            assert_eq!(export.exit_code, exit.trim().parse().ok(), "{rel_path}");
        }
    }
}

#[test]
fn export_v3_finished() {
    let e = export("vibe-3.0.3/export.json");
    assert_eq!(e.outcome.as_deref(), Some("finished"));
    assert_eq!(e.stop_reason, None);
    assert_eq!(e.error, None);
    assert_eq!(e.cost_usd, Some(0.015048));
    assert_eq!(e.total_tokens(), Some(14924));
    assert_eq!(
        (e.input_tokens(), e.output_tokens()),
        (Some(14862), Some(62))
    );
    assert_eq!(
        e.usage,
        Some(serde_json::json!({
            "input_tokens": 14862, "output_tokens": 62, "cached_input_tokens": 0, "total_tokens": 14924
        }))
    );
    assert_eq!(e.steps, Some(3));
    assert_eq!(e.exit_code, Some(0));
    assert_eq!(e.vibe_version.as_deref(), Some("3.0.3"));
    // The model: the alias config.toml made active (`config.active_model`).
    assert_eq!(e.model.as_deref(), Some("mock"));
    assert_eq!(
        e.session_id.as_deref(),
        Some("fcf6b7f9-cc77-b5bc-7764-7108e36a41c5")
    );
    // The export of the streaming run names the session its stdout entries carry.
    let first = &entries("vibe-3.0.3/streaming.jsonl")[0];
    assert_eq!(
        first.get("sessionId").and_then(Value::as_str),
        e.session_id.as_deref()
    );
    assert_eq!(export("vibe-3.0.3/cases/streaming/export.json"), e);
}

#[test]
fn export_v3_limits() {
    let e = export("vibe-3.0.3/cases/turn-limit/export.json");
    assert_eq!(
        (e.outcome.as_deref(), e.stop_reason.as_deref(), e.exit_code),
        (Some("turn_limit"), Some("limit"), Some(3))
    );
    assert_eq!(
        (e.error, e.steps, e.cost_usd),
        (None, Some(2), Some(0.009916))
    );

    let e = export("vibe-3.0.3/cases/price-limit/export.json");
    assert_eq!(
        (e.outcome.as_deref(), e.stop_reason.as_deref(), e.exit_code),
        (Some("price_limit"), Some("interrupted"), Some(3))
    );
    assert_eq!(
        (e.cost_usd, e.steps, e.total_tokens()),
        (Some(0.004912), Some(1), Some(4872))
    );

    let e = export("vibe-3.0.3/cases/token-limit/export.json");
    assert_eq!(
        (e.outcome.as_deref(), e.stop_reason.as_deref(), e.exit_code),
        (Some("token_limit"), Some("interrupted"), Some(3))
    );
    assert_eq!(e.total_tokens(), Some(9848));

    let e = export("vibe-3.0.3/cases/time-limit/export.json");
    assert_eq!(
        (e.outcome.as_deref(), e.stop_reason.as_deref(), e.exit_code),
        (Some("deadline"), Some("interrupted"), Some(3))
    );
    assert_eq!((e.error, e.cost_usd), (None, Some(0.0)));

    let e = export("vibe-3.0.3/cases/sigterm/export.json");
    assert_eq!(
        (e.outcome.as_deref(), e.stop_reason.as_deref(), e.exit_code),
        (Some("terminated"), Some("interrupted"), Some(3))
    );
    assert_eq!(e.error, None);
}

#[test]
fn export_v3_errors() {
    let e = export("vibe-3.0.3/cases/invalid-api-key/export.json");
    assert_eq!(e.outcome.as_deref(), Some("config_error"));
    assert_eq!(e.exit_code, Some(1));
    assert_eq!(
        e.error,
        Some(ExportError {
            message: Some(
                "Invalid API key (from env var MOCK_API_KEY). Please check your API key and try again."
                    .to_owned()
            ),
            code: Some("invalid_api_key".to_owned()),
        })
    );

    let e = export("vibe-3.0.3/cases/server-error-500/export.json");
    assert_eq!(e.outcome.as_deref(), Some("infrastructure_failure"));
    assert_eq!(e.exit_code, Some(2));
    let error = e.error.clone().unwrap_or_default();
    assert_eq!(error.code.as_deref(), Some("backend_error"));
    assert!(
        error
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("Server error '500 Internal Server Error'")),
        "{error:?}"
    );
    assert_eq!(e.total_tokens(), Some(0));

    // Failing before the session starts: no usage, cost, steps or session id, and no code.
    for (case, var) in [
        ("missing-api-key", "MOCK_API_KEY"),
        ("no-config", "MISTRAL_API_KEY"),
    ] {
        let e = export(&format!("vibe-3.0.3/cases/{case}/export.json"));
        assert_eq!(e.outcome.as_deref(), Some("config_error"), "{case}");
        assert_eq!(
            (e.usage, e.cost_usd, e.steps, e.session_id, e.model),
            (None, None, None, None, None)
        );
        let error = e.error.unwrap_or_default();
        assert_eq!(error.code, None, "{case}");
        assert!(
            error
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with(&format!("Missing {var} environment variable"))),
            "{case}: {error:?}"
        );
    }

    // Finished runs: approval denial does not make the run fail.
    for case in [
        "approval-denied",
        "json",
        "text",
        "untrusted-project-config",
    ] {
        let e = export(&format!("vibe-3.0.3/cases/{case}/export.json"));
        assert_eq!(
            (e.outcome.as_deref(), e.error),
            (Some("finished"), None),
            "{case}"
        );
    }
}

#[test]
fn export_v2() {
    let e = export("vibe-2.26.1/cases/streaming/export.json");
    assert_eq!(e.outcome.as_deref(), Some("finished"));
    assert_eq!(
        (e.cost_usd, e.total_tokens(), e.steps),
        (Some(0.015016), Some(14892), Some(3))
    );
    assert_eq!(e.vibe_version.as_deref(), Some("2.26.1"));
    assert_eq!(e.model.as_deref(), Some("mock"));

    let e = export("vibe-2.26.1/cases/turn-limit/export.json");
    assert_eq!(
        (e.outcome.as_deref(), e.stop_reason.as_deref(), e.exit_code),
        (Some("turn_limit"), Some("limit"), Some(3))
    );
    // The legacy harness does not count steps.
    let e = export("vibe-2.26.1/cases/legacy-turn-limit/export.json");
    assert_eq!((e.outcome.as_deref(), e.steps), (Some("turn_limit"), None));

    let e = export("vibe-2.26.1/cases/error500/export.json");
    assert_eq!(e.outcome.as_deref(), Some("infrastructure_failure"));
    assert_eq!(
        e.error.and_then(|e| e.code).as_deref(),
        Some("backend_error")
    );

    let e = export("vibe-2.26.1/cases/sigterm/export.json");
    assert_eq!(
        (e.outcome.as_deref(), e.stop_reason.as_deref(), e.exit_code),
        (Some("terminated"), Some("interrupted"), Some(3))
    );
}

#[test]
fn export_truncated_is_invalid() {
    let bytes = read("vibe-3.0.3/export.json");
    for cut in [1, 10, bytes.len() / 2, bytes.len() - 2] {
        assert!(
            matches!(
                parse_export(&bytes[..cut]),
                Err(ExportReadError::Invalid(_))
            ),
            "cut at {cut}"
        );
    }
}

/// A fresh, empty directory under the system temp dir.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("otter-vibe-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("creating temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn read_export_from_run_dirs() {
    let found = read_export(&fixture("vibe-3.0.3/cases/turn-limit")).await;
    let found = found.expect("readable").expect("present");
    assert_eq!(found.outcome.as_deref(), Some("turn_limit"));

    // vibe 1.x writes no export.
    let none = read_export(&fixture("vibe-1.3.5/cases/streaming")).await;
    assert!(matches!(none, Ok(None)), "{none:?}");
    let tmp = TempDir::new();
    assert!(matches!(read_export(&tmp.0).await, Ok(None)));
    assert!(matches!(
        read_export(&tmp.0.join("no-such-dir")).await,
        Ok(None)
    ));

    std::fs::write(tmp.0.join("export.json"), b"garbage\x00{").expect("write");
    let garbage = read_export(&tmp.0).await;
    assert!(
        matches!(garbage, Err(ExportReadError::Invalid(_))),
        "{garbage:?}"
    );

    std::fs::write(tmp.0.join("export.json"), b"").expect("write");
    assert!(matches!(
        read_export(&tmp.0).await,
        Err(ExportReadError::Invalid(_))
    ));

    // Not a file: an I/O error, not "missing".
    let other = TempDir::new();
    std::fs::create_dir(other.0.join("export.json")).expect("mkdir");
    let io = read_export(&other.0).await;
    assert!(matches!(io, Err(ExportReadError::Io(_))), "{io:?}");
    assert!(io.is_err_and(|e| e.to_string().starts_with("reading export.json: ")));
}

// ---------------------------------------------------------------------------------------------
// LineSplitter

fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut splitter = LineSplitter::new(max);
    let mut lines = Vec::new();
    for chunk in chunks {
        lines.extend(splitter.push(chunk));
    }
    lines.extend(splitter.finish());
    lines
}

#[test]
fn line_splitter_contract() {
    // Lines split across pushes.
    assert_eq!(
        split(1024, &[b"{\"a\"", b":1}\n{\"b", b"\":2}\n"]),
        ["{\"a\":1}", "{\"b\":2}"]
    );
    // `\r\n`, with the `\r` and `\n` in different pushes too.
    assert_eq!(
        split(1024, &[b"one\r\ntwo\r", b"\nthree\n"]),
        ["one", "two", "three"]
    );
    // A multibyte char split between chunks decodes correctly; invalid bytes become U+FFFD.
    let euro = "\u{20ac}".as_bytes();
    assert_eq!(
        split(
            1024,
            &[b"a", &euro[..1], &euro[1..2], &[euro[2], 0xff], b"b\n"]
        ),
        ["a\u{20ac}\u{fffd}b"]
    );
    // An over-long line is cut into pieces of at most max_line bytes, on char boundaries.
    let long = format!("{}\n", "x".repeat(10));
    assert_eq!(split(4, &[long.as_bytes()]), ["xxxx", "xxxx", "xx"]);
    assert_eq!(
        split(4, &["ab\u{20ac}\u{20ac}\n".as_bytes()]),
        ["ab", "\u{20ac}", "\u{20ac}"]
    );
    // A final line without newline comes at EOF, once.
    let mut splitter = LineSplitter::new(1024);
    assert_eq!(splitter.push(b"done\npartial"), ["done"]);
    assert_eq!(splitter.finish().as_deref(), Some("partial"));
    assert_eq!(splitter.finish(), None);
    // Empty lines are preserved.
    assert_eq!(split(1024, &[b"\n\na\n\r\n", b"\n"]), ["", "", "a", "", ""]);
    assert_eq!(split(1024, &[b""]), Vec::<String>::new());
}

#[test]
fn line_splitter_on_fixtures_any_chunking() {
    for (path, _) in stdout_files() {
        let bytes = std::fs::read(&path).expect("fixture");
        let text = String::from_utf8_lossy(&bytes);
        let mut expected: Vec<&str> = text.split('\n').collect();
        if expected.last() == Some(&"") {
            expected.pop();
        }
        for chunk in [1, 3, 7, 64, 4096, usize::MAX] {
            let chunks: Vec<&[u8]> = bytes.chunks(chunk.min(bytes.len().max(1))).collect();
            assert_eq!(
                split(1 << 20, &chunks),
                expected,
                "{} by {chunk}",
                rel(&path)
            );
        }
        // With a small max_line, pieces stay small and lose nothing.
        let chunks: Vec<&[u8]> = bytes.chunks(5).collect();
        let pieces = split(100, &chunks);
        assert!(pieces.iter().all(|p| p.len() <= 100));
        assert_eq!(pieces.concat(), expected.concat(), "{}", rel(&path));
        // Feeding the split lines to a transcript gives what the file gives.
        let mut whole = Transcript::default();
        let mut streamed = Transcript::default();
        for line in &expected {
            whole.observe_line(line);
        }
        for line in split(1 << 20, &chunks) {
            streamed.observe_line(&line);
        }
        assert_eq!(whole.entries(), streamed.entries());
        assert_eq!(whole.final_text(), streamed.final_text());
    }
}

/// The captured 429 ends (otter-core/tests/data/vibe-captures/vibe-3.0.3/rate-limit) read as
/// rate limits, with the reset time the provider's message gives ("Please try again in 2s.")
/// when it gives one; the run that got past one 429 is a plain success.
#[test]
fn the_captured_rate_limits_park_and_the_reset_time_is_read_from_the_message() {
    use otter_core::runner::RunOutcome;
    use otter_core::vibe::{Verdict, decide, parse_export};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vibe-captures/vibe-3.0.3/rate-limit");
    let end = |case: &str| {
        let export = parse_export(&std::fs::read(dir.join(case).join("export.json")).unwrap())
            .expect("export.json");
        let code: i32 = std::fs::read_to_string(dir.join(case).join("exit_code"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        decide(RunOutcome::Exited(code), Some(&export), None).verdict
    };
    match end("retry-after") {
        Verdict::RateLimited { reset_in, message } => {
            assert_eq!(reset_in, Some(std::time::Duration::from_secs(2)));
            assert!(message.contains("429 Too Many Requests"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        end("no-retry-after"),
        Verdict::RateLimited { reset_in: None, .. }
    ));
    assert_eq!(end("first-only"), Verdict::Succeeded);
}
