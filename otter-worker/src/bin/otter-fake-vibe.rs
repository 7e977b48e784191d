//! `otter-fake-vibe`: Otter's stand-in for the Mistral `vibe` CLI, version 3.0.3.
//!
//! The real `vibe` needs a paid model API, so Otter's tests run this binary instead. It
//! reproduces what the real CLI does in headless mode, as captured byte-exact in
//! `/work/shared/fixtures/vibe-3.0.3/`: the command line it accepts, the NDJSON it prints
//! with `--output streaming` (same keys in the same order, compact, one entry a line,
//! flushed as each entry completes), its stderr lines, its exit codes and the
//! `<DIR>/export.json` it writes for `--output-dir DIR`. The "model" is a script chosen
//! by the `FAKE_VIBE_SCENARIO` environment variable; tool calls are executed for real in
//! the working directory (files are written, `sh -c` commands are run).
//!
//! # Command line (as the real CLI)
//!
//! `otter-fake-vibe --prompt <P> --output streaming --trust --auto-approve --output-dir <DIR>
//! [--max-turns N] [--max-price USD] [--time-limit SECONDS] [--max-tokens N]`, plus `-p`,
//! `--output text|json` (default `text`), `-c/--continue` (accepted, ignored), `--version`
//! (`vibe 3.0.3`) and `--help`. Parse errors are printed clap-style and exit 1, like the
//! real CLI (it does not use clap's usual 2). `--prompt` with no value reads the prompt
//! from stdin; an empty prompt gives `Error: No prompt provided for programmatic mode`,
//! no `--prompt` at all gives `Error: Interactive mode needs a terminal. ...`.
//!
//! # Behaviour shared by every scenario
//!
//! * stderr starts with `Reading API keys from the system keyring (...)` unless
//!   `MISTRAL_API_KEY` is set. Without `--trust`, an `AGENTS.md` in the cwd adds the
//!   real `Warning: <cwd> is not trusted; ...` line (and a `warnings` list in the export).
//! * The first stdout entry is the user message echoing the prompt.
//! * Without `--auto-approve`, shell tool calls are auto-denied as in headless vibe: a
//!   `callback` entry answered `deny`, then the effect `failed` with code `tool_denied`.
//!   File writes are always allowed (the real default config says `permission: always`).
//! * Limits: `--max-turns N` stops before model call N+1 (`Stopped: turn_limit`);
//!   `--max-price`/`--max-tokens` are checked when a model answer arrives: that answer's
//!   tool calls are reported `cancelled` (`client interrupt`) although, as in the real
//!   capture, their side effects still happen (`Stopped: price_limit` / `token_limit`);
//!   `--time-limit S` counts from process start (`Stopped: deadline`). SIGTERM gives
//!   `Stopped: terminated`. All of these exit 3 and still print the `json` array / the
//!   `text` answer; after an error (exit 1 or 2) `json` and `text` print nothing.
//! * Exit codes: 0 finished, 1 configuration or usage error, 2 infrastructure error,
//!   3 stopped early. `export.json` (pretty, 2-space indent, same keys and values as the
//!   real one, including the full `config` object of the capture setup) is written on every
//!   exit path once the command line has parsed (not for `--help`/`--version`); clap-style
//!   parse errors write none, since the real CLI cannot know `--output-dir` then.
//! * Error messages name the capture's provider (`mock`, key variable `MOCK_API_KEY`,
//!   `http://127.0.0.1:46361/v1`), matching the `config` in the export.
//! * Usage: input tokens ≈ 4834 + (prompt + history characters)/4 per model call, output
//!   tokens 20 a tool call plus text length/4; cost = input × 1.0 + output × 3.0 USD per
//!   million tokens (the capture's `mock` model), so the numbers look like the fixtures.
//!
//! # Scenarios (`FAKE_VIBE_SCENARIO`, default `tools`)
//!
//! * `tools`: writes `hello.txt`, runs `cat hello.txt && echo done`, final answer; exit 0.
//! * `rich`: `tools` with a `reasoning` entry and an assistant preamble before each effect.
//! * `text`: a single plain-text answer.
//! * `risky`: a `bash` call `rm -rf ./scratch && touch made_by_bash.txt`, then
//!   `Finished the risky step.` (run it without `--auto-approve` for the denial path).
//! * `config-error`: user message, then `Error: Invalid API key ...`; exit 1.
//! * `missing-key`: `Error: Missing MOCK_API_KEY environment variable ...`; no stdout; exit 1.
//! * `infra-error`: user message, then `Error: Server error '500 ...'`; exit 2.
//! * `turn-limit`: endless `echo loop N` calls; `--max-turns` defaults to 2 here.
//! * `price-limit` / `token-limit`: `tools` with `--max-price` defaulting to 0.001 /
//!   `--max-tokens` defaulting to 6000.
//! * `slow`: `tools` waiting `FAKE_VIBE_SLEEP_MS` (default 2000) before each model answer.
//! * `hang`: user message, then the model never answers (until SIGTERM or `--time-limit`).
//! * `flood`: `FAKE_VIBE_LINES` (default 1000) shell effects `echo line <n>` printed as
//!   fast as possible (flushed every 64 lines), then a final answer; exit 0.
//! * `grandchild`: spawns `sh -c 'sleep 300'` in the same process group (not waited for,
//!   stdio on /dev/null), writes its pid to `FAKE_VIBE_PIDFILE`, then behaves like `hang`.
//! * `grandchild-exit`: the same grandchild, then finishes like `tools` (exit 0), leaving
//!   the grandchild alive in the process group.
//! * `setup`: `tools` plus a `setup.sh` (mode 0755, prints `setup line 1`, `setup line 2`
//!   on stdout and `setup warning` on stderr) written through a file effect and made
//!   executable with a `chmod` effect; in `FAKE_VIBE_SETUP_SUBDIR/` if that is set.
//! * `stderr-noise`: `tools` with junk on stdout between entries (a non-JSON line, a line
//!   of invalid UTF-8, an empty line, a 200 KiB line) and one junk line on stderr.
//! * `probe`: a job trying to reach Otter's secrets (see `--probe` below); its one answer is
//!   the probe's JSON report.
//! * `exit:N`: user message, then exit with code N (export outcome `unknown`).
//!
//! # Other knobs (environment)
//!
//! * `FAKE_VIBE_SLEEP_MS`: delay before every model answer, every scenario (default 0,
//!   `slow`: 2000).
//! * `FAKE_VIBE_GRANDCHILD_STDIO=inherit`: the grandchild keeps stdout/stderr (holds the
//!   pipes open); `FAKE_VIBE_GRANDCHILD_SECS`: its sleep (default 300);
//!   `FAKE_VIBE_GRANDCHILD_SCRIPT=<path>`: the grandchild runs `sh <path>` instead, and the
//!   stand-in waits for it before it goes on (tests start processes that try to escape,
//!   `setsid` and the like, this way; the script starts them in the background and ends).
//! * `FAKE_VIBE_NO_EXPORT=1`: write no `export.json` (a vibe that died before writing it).
//! * `FAKE_VIBE_VERSION=X.Y.Z`: what `--version` reports (default 3.0.3).
//! * `FAKE_VIBE_RECORD=<path>`: at startup (every run; not `--version`), append one JSON line
//!   `{"argv", "cwd", "env", "agents_md", "stdin", "pid", "ppid", "pgid"}` telling how the
//!   binary was invoked; `argv` leaves out the program name; `env` holds `VIBE_HOME`, `MISTRAL_API_KEY`, `VIBE_MODEL`,
//!   `MISTRAL_MODEL`, `VIBE_PROVIDER`, `VIBE_ACTIVE_MODEL`, `DATABASE_URL`, `REDIS_URL` (null
//!   when unset) and every `OTTER_*` variable; `agents_md` is `$VIBE_HOME/AGENTS.md` or null.
//! * `FAKE_VIBE_STARTED_FILE=<path>` (benchmarks): first thing at startup, append one line
//!   `<OTTER_JOB_ID or -> <unix time in ns>` (the moment the process started running).
//! * `FAKE_VIBE_STALL_FILE=<path>` (benchmarks): keep in `<path>` the longest time, in µs, one
//!   write of stdout was blocked (a reader that stalls shows up here).
//! * `--probe` (alone, not a vibe option): print the probe's report and exit 0, for `setup.sh`
//!   and commands. The probe tries what a job must not manage: read the environment and memory
//!   of its parent and of each pid in `FAKE_VIBE_PROBE_PIDS` (`:`-separated), read each file in
//!   `FAKE_VIBE_PROBE_FILES`, find `OTTER_API_TOKENS`, `OTTER_DATABASE_URL`, `DATABASE_URL`,
//!   `OTTER_REDIS_URL` or `REDIS_URL` in the environment of any process it can read, then call
//!   `GET /v1/projects` and `POST /v1/workspaces/command` on `OTTER_API_BASE_URL` with every
//!   token it found and with its own `OTTER_API_TOKEN`, and post a preview URL for its own job
//!   (`OTTER_JOB_ID`) with that token. The report is one JSON object: `uid`, `own_env` (the
//!   names of its `OTTER_*`, `DATABASE_URL` and `REDIS_URL` variables), `pids` (per pid:
//!   `environ` and `mem`, `"read"` or the error), `files` (likewise), `found` (each secret
//!   variable seen: `pid`, `name`, `value`), `api` (each call: `call`, `token` (`job` or
//!   `found`), `status`).
//! * `VIBE_HOME` (default `~/.vibe`), `VIBE_ACTIVE_MODEL` or a top-level `active_model` in
//!   `$VIBE_HOME/config.toml`, and `VIBE_API_RETRY_MAX_ELAPSED_TIME` are reflected in the
//!   export's `config`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng as _;

const VIBE_VERSION: &str = "3.0.3";
const KEYRING_NOTICE: &str =
    "Reading API keys from the system keyring (set them as environment variables to skip this)";
/// The capture's mock provider: its key variable and its chat-completions URL.
const PROVIDER_KEY_VAR: &str = "MOCK_API_KEY";
const PROVIDER_URL: &str = "http://127.0.0.1:46361/v1/chat/completions";

const HELLO_PATH: &str = "hello.txt";
const HELLO_CONTENT: &str = "Hello from the mock LLM\n";
const HELLO_COMMAND: &str = "cat hello.txt && echo done";
const TOOLS_FINAL: &str =
    "I created `hello.txt` and ran `cat hello.txt`; it printed \"Hello from the mock LLM\". Done.";
const SETUP_FINAL: &str = "I created `hello.txt` and `setup.sh`, ran `cat hello.txt` and made \
                           `setup.sh` executable. Done.";
const REASONING_TEXT: &str = "The user wants a file. I will use the tools.";
const PLAIN_TEXT: &str = "Hello! This is a plain text answer from the mock LLM.";
const RISKY_COMMAND: &str = "rm -rf ./scratch && touch made_by_bash.txt";
const RISKY_FINAL: &str = "Finished the risky step.";
const SETUP_SCRIPT: &str = "#!/bin/sh\necho \"setup line 1\"\necho \"setup line 2\"\n\
                            echo \"setup warning\" >&2\nexit 0\n";
const DENIED_MESSAGE: &str = "Tool execution denied by approval callback";
const INTERRUPT_MESSAGE: &str = "client interrupt";
const APPROVAL_CHOICES: [&str; 5] = [
    "approve",
    "approve_for_session",
    "approve_permanently",
    "deny",
    "cancel_turn",
];
const FLUSH_EVERY: usize = 64;

fn main() -> ExitCode {
    let t0 = Instant::now();
    record_start();
    let started_at = Utc::now();
    // First of all, so that a SIGTERM arriving at any later point is handled.
    let sigterm = install_sigterm_listener();
    let argv: Vec<String> = env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv == ["--probe"] {
        println!("{}", probe::report());
        return ExitCode::SUCCESS;
    }
    // `--version` is Otter asking which vibe this is, not a run: it is not recorded.
    if !argv.iter().any(|a| a == "--version" || a == "-V") {
        record_invocation(&argv);
    }
    ExitCode::from(run(&argv, t0, started_at, sigterm))
}

// ---------------------------------------------------------------------------------------
// Ordered JSON (serde_json's Map sorts keys; the real CLI's key order must be kept)
// ---------------------------------------------------------------------------------------

/// A JSON value whose objects keep their keys in insertion order.
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
    /// Already rendered pretty JSON at the nesting depth it is spliced in (the export's
    /// `config` object).
    Raw(String),
}

macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {
        J::Obj(vec![$(($k, J::from($v))),*])
    };
}

impl From<&str> for J {
    fn from(v: &str) -> Self {
        J::Str(v.to_owned())
    }
}

impl From<String> for J {
    fn from(v: String) -> Self {
        J::Str(v)
    }
}

impl From<&String> for J {
    fn from(v: &String) -> Self {
        J::Str(v.clone())
    }
}

impl From<bool> for J {
    fn from(v: bool) -> Self {
        J::Bool(v)
    }
}

impl From<i64> for J {
    fn from(v: i64) -> Self {
        J::Int(v)
    }
}

impl From<u64> for J {
    fn from(v: u64) -> Self {
        J::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for J {
    fn from(v: f64) -> Self {
        J::Float(v)
    }
}

impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> Self {
        J::Arr(v)
    }
}

impl<T: Into<J>> From<Option<T>> for J {
    fn from(v: Option<T>) -> Self {
        v.map_or(J::Null, Into::into)
    }
}

fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

impl J {
    fn compact(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            J::Float(f) => match serde_json::to_string(f) {
                // serde_json writes 0.0 as "0.0" and 5.0 as "5.0", like the real CLI.
                Ok(text) if f.is_finite() => out.push_str(&text),
                _ => out.push_str("null"),
            },
            J::Str(s) => push_json_str(out, s),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.compact(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_str(out, key);
                    out.push(':');
                    value.compact(out);
                }
                out.push('}');
            }
            J::Raw(text) => out.push_str(text),
        }
    }

    /// Pretty form with 2-space indent, like serde_json's (and Python's `indent=2`):
    /// empty containers stay `[]` / `{}`.
    fn pretty(&self, out: &mut String, depth: usize) {
        match self {
            J::Arr(items) if !items.is_empty() => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    push_indent(out, depth + 1);
                    item.pretty(out, depth + 1);
                }
                out.push('\n');
                push_indent(out, depth);
                out.push(']');
            }
            J::Obj(fields) if !fields.is_empty() => {
                out.push_str("{\n");
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    push_indent(out, depth + 1);
                    push_json_str(out, key);
                    out.push_str(": ");
                    value.pretty(out, depth + 1);
                }
                out.push('\n');
                push_indent(out, depth);
                out.push('}');
            }
            other => other.compact(out),
        }
    }

    fn to_compact(&self) -> String {
        let mut out = String::new();
        self.compact(&mut out);
        out
    }

    fn to_pretty(&self) -> String {
        let mut out = String::new();
        self.pretty(&mut out, 0);
        out
    }
}

// ---------------------------------------------------------------------------------------
// Output streams
// ---------------------------------------------------------------------------------------

/// stdout, written in whole lines. Each line is flushed at once, except in batch mode
/// (`flood`) where lines go out `FLUSH_EVERY` at a time. A closed stdout is not an error:
/// output is dropped from then on.
struct Out {
    buf: Vec<u8>,
    pending: usize,
    batch: bool,
    broken: bool,
    /// `FAKE_VIBE_STALL_FILE` and the longest write seen so far.
    stall_file: Option<PathBuf>,
    max_write: Duration,
}

impl Out {
    fn new() -> Self {
        Out {
            buf: Vec::new(),
            pending: 0,
            batch: false,
            broken: false,
            stall_file: env::var_os("FAKE_VIBE_STALL_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            max_write: Duration::ZERO,
        }
    }

    fn line(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf.push(b'\n');
        self.pending += 1;
        if !self.batch || self.pending >= FLUSH_EVERY {
            self.flush();
        }
    }

    fn text(&mut self, text: &str) {
        self.buf.extend_from_slice(text.as_bytes());
        self.flush();
    }

    fn flush(&mut self) {
        if !self.broken && !self.buf.is_empty() {
            let began = Instant::now();
            let mut stdout = io::stdout().lock();
            if stdout
                .write_all(&self.buf)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                self.broken = true;
            }
            drop(stdout);
            let took = began.elapsed();
            if took > self.max_write
                && let Some(path) = &self.stall_file
            {
                self.max_write = took;
                let _ = fs::write(path, took.as_micros().to_string());
            }
        }
        self.buf.clear();
        self.pending = 0;
    }
}

/// One line on stderr; a closed stderr is ignored (no panic as with `eprintln!`).
fn err_line(line: &str) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
    let _ = stderr.flush();
}

fn err_raw(text: &str) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339_micros(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------
// SIGTERM and the time limit
// ---------------------------------------------------------------------------------------

/// Listens for SIGTERM on a small tokio runtime in its own thread (no `unsafe` needed)
/// and forwards each one as a message. The handler is registered before this returns.
fn install_sigterm_listener() -> Option<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let mut sigterm = {
        let _guard = runtime.enter();
        signal(SignalKind::terminate()).ok()?
    };
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("sigterm".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                while sigterm.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        })
        .ok()?;
    Some(rx)
}

/// Why a run stopped early (exit code 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    TurnLimit,
    PriceLimit,
    TokenLimit,
    Deadline,
    Terminated,
}

impl Stop {
    /// The name in `Stopped: <name>` and the export's `outcome`.
    fn name(self) -> &'static str {
        match self {
            Stop::TurnLimit => "turn_limit",
            Stop::PriceLimit => "price_limit",
            Stop::TokenLimit => "token_limit",
            Stop::Deadline => "deadline",
            Stop::Terminated => "terminated",
        }
    }

    /// The export's `stop_reason`.
    fn reason(self) -> &'static str {
        match self {
            Stop::TurnLimit => "limit",
            Stop::PriceLimit | Stop::TokenLimit | Stop::Deadline | Stop::Terminated => {
                "interrupted"
            }
        }
    }
}

/// How long the "model" takes to answer.
#[derive(Clone, Copy)]
enum Delay {
    For(Duration),
    Forever,
}

/// Sleeps that wake early on SIGTERM or when the `--time-limit` deadline passes.
struct Waiter {
    sigterm: Option<mpsc::Receiver<()>>,
    deadline: Option<Instant>,
    terminated: bool,
}

impl Waiter {
    fn poll(&mut self) -> Result<(), Stop> {
        if !self.terminated
            && self
                .sigterm
                .as_ref()
                .is_some_and(|rx| rx.try_recv().is_ok())
        {
            self.terminated = true;
        }
        if self.terminated {
            return Err(Stop::Terminated);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Deadline);
        }
        Ok(())
    }

    fn sleep(&mut self, delay: Delay) -> Result<(), Stop> {
        let until = match delay {
            Delay::For(d) => Instant::now().checked_add(d),
            Delay::Forever => None,
        };
        loop {
            self.poll()?;
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) {
                return Ok(());
            }
            let wake = [until, self.deadline].into_iter().flatten().min();
            let timeout = wake.map_or(Duration::from_secs(3600), |w| {
                w.saturating_duration_since(now)
            });
            match &self.sigterm {
                Some(rx) => match rx.recv_timeout(timeout) {
                    Ok(()) => self.terminated = true,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => self.sigterm = None,
                },
                None => std::thread::sleep(timeout.min(Duration::from_millis(50))),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Command line (clap-like, with the real CLI's exit code 1 for usage errors)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutputMode {
    Text,
    Json,
    Streaming,
}

#[derive(Default)]
struct Args {
    /// `None`: no `--prompt`; `Some(None)`: `--prompt` without a value (read stdin).
    prompt: Option<Option<String>>,
    output: Option<OutputMode>,
    trust: bool,
    auto_approve: bool,
    version: bool,
    help: bool,
    output_dir: Option<PathBuf>,
    max_turns: Option<u64>,
    max_price: Option<f64>,
    time_limit: Option<f64>,
    max_tokens: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Prompt,
    Output,
    OutputDir,
    MaxTurns,
    MaxPrice,
    TimeLimit,
    MaxTokens,
    Trust,
    AutoApprove,
    Continue,
    Version,
    Help,
}

impl Opt {
    fn lookup(name: &str) -> Option<Opt> {
        Some(match name {
            "-p" | "--prompt" => Opt::Prompt,
            "--output" => Opt::Output,
            "--output-dir" => Opt::OutputDir,
            "--max-turns" => Opt::MaxTurns,
            "--max-price" => Opt::MaxPrice,
            "--time-limit" => Opt::TimeLimit,
            "--max-tokens" => Opt::MaxTokens,
            "--trust" => Opt::Trust,
            "--auto-approve" => Opt::AutoApprove,
            "-c" | "--continue" => Opt::Continue,
            "-V" | "--version" => Opt::Version,
            "-h" | "--help" => Opt::Help,
            _ => return None,
        })
    }

    /// How clap names the argument in its messages.
    fn display(self) -> &'static str {
        match self {
            Opt::Prompt => "--prompt [<PROMPT>]",
            Opt::Output => "--output <OUTPUT>",
            Opt::OutputDir => "--output-dir <OUTPUT_DIR>",
            Opt::MaxTurns => "--max-turns <MAX_TURNS>",
            Opt::MaxPrice => "--max-price <MAX_PRICE>",
            Opt::TimeLimit => "--time-limit <TIME_LIMIT>",
            Opt::MaxTokens => "--max-tokens <MAX_TOKENS>",
            Opt::Trust => "--trust",
            Opt::AutoApprove => "--auto-approve",
            Opt::Continue => "--continue",
            Opt::Version => "--version",
            Opt::Help => "--help",
        }
    }

    fn takes_value(self) -> bool {
        matches!(
            self,
            Opt::Prompt
                | Opt::Output
                | Opt::OutputDir
                | Opt::MaxTurns
                | Opt::MaxPrice
                | Opt::TimeLimit
                | Opt::MaxTokens
        )
    }
}

const OUTPUT_VALUES: &str = "  [possible values: text, json, streaming]\n";

const HELP: &str = "Mistral Vibe (Otter's stand-in, otter-fake-vibe)

Usage: vibe [OPTIONS]

Options:
  -p, --prompt [<PROMPT>]        Run headless with this prompt (stdin if no value)
      --output <OUTPUT>          Output format [possible values: text, json, streaming]
      --output-dir <OUTPUT_DIR>  Write export.json into this directory
      --max-turns <MAX_TURNS>    Stop after this many model turns
      --max-price <MAX_PRICE>    Stop once the session costs this much (USD)
      --max-tokens <MAX_TOKENS>  Stop once this many tokens are used
      --time-limit <TIME_LIMIT>  Stop after this many seconds
      --trust                    Trust the working directory for this run
      --auto-approve             Approve every tool call
  -c, --continue                 Continue the last session
  -h, --help                     Print help
  -V, --version                  Print version
";

fn clap_error(body: &str, usage: bool) -> String {
    let usage = if usage {
        "\nUsage: vibe [OPTIONS]\n"
    } else {
        ""
    };
    format!("error: {body}\n{usage}\nFor more information, try '--help'.\n")
}

fn parse_number<T: std::str::FromStr>(opt: Opt, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| {
        clap_error(
            &format!("invalid value '{value}' for '{}': {e}", opt.display()),
            false,
        )
    })
}

/// Parses the arguments; `Err` holds clap's complete message for stderr.
fn parse_args(raw: &[String]) -> Result<Args, String> {
    let mut args = Args::default();
    let mut seen: Vec<Opt> = Vec::new();
    let mut rest = raw.iter().peekable();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let Some(opt) = Opt::lookup(name) else {
            return Err(clap_error(
                &format!("unexpected argument '{arg}' found"),
                true,
            ));
        };
        if seen.contains(&opt) {
            return Err(clap_error(
                &format!(
                    "the argument '{}' cannot be used multiple times",
                    opt.display()
                ),
                true,
            ));
        }
        seen.push(opt);
        if !opt.takes_value()
            && let Some(value) = inline
        {
            return Err(clap_error(
                &format!("unexpected value '{value}' for '{name}' found; no more were expected"),
                true,
            ));
        }
        // Like clap: a following argument that looks like a flag is not taken as a value
        // (use `--prompt=<value>` for values starting with '-').
        let value = match inline {
            Some(value) => Some(value),
            None if opt.takes_value() => rest
                .next_if(|next| !next.starts_with('-') || next.as_str() == "-")
                .cloned(),
            None => None,
        };
        let required = |value: Option<String>| {
            value.ok_or_else(|| {
                let mut message = clap_error(
                    &format!(
                        "a value is required for '{}' but none was supplied",
                        opt.display()
                    ),
                    false,
                );
                if opt == Opt::Output {
                    message = message.replacen('\n', &format!("\n{OUTPUT_VALUES}"), 1);
                }
                message
            })
        };
        match opt {
            Opt::Prompt => args.prompt = Some(value),
            Opt::Output => {
                let value = required(value)?;
                args.output = Some(match value.as_str() {
                    "text" => OutputMode::Text,
                    "json" => OutputMode::Json,
                    "streaming" => OutputMode::Streaming,
                    _ => {
                        return Err(format!(
                            "error: invalid value '{value}' for '{}'\n{OUTPUT_VALUES}\n\
                             For more information, try '--help'.\n",
                            opt.display()
                        ));
                    }
                });
            }
            Opt::OutputDir => args.output_dir = Some(PathBuf::from(required(value)?)),
            Opt::MaxTurns => args.max_turns = Some(parse_number(opt, &required(value)?)?),
            Opt::MaxPrice => args.max_price = Some(parse_number(opt, &required(value)?)?),
            Opt::TimeLimit => args.time_limit = Some(parse_number(opt, &required(value)?)?),
            Opt::MaxTokens => args.max_tokens = Some(parse_number(opt, &required(value)?)?),
            Opt::Trust => args.trust = true,
            Opt::AutoApprove => args.auto_approve = true,
            Opt::Continue => {}
            Opt::Version => args.version = true,
            Opt::Help => args.help = true,
        }
    }
    Ok(args)
}

/// The prompt, or the real CLI's error message (without the `Error: ` prefix).
fn resolve_prompt(args: &Args) -> Result<String, String> {
    const NO_PROMPT: &str = "No prompt provided for programmatic mode";
    match &args.prompt {
        None => {
            Err("Interactive mode needs a terminal. Use -p/--prompt to run without one.".to_owned())
        }
        Some(Some(prompt)) if prompt.trim().is_empty() => Err(NO_PROMPT.to_owned()),
        Some(Some(prompt)) => Ok(prompt.clone()),
        Some(None) => {
            let mut bytes = Vec::new();
            let _ = io::stdin().lock().read_to_end(&mut bytes);
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                Err(NO_PROMPT.to_owned())
            } else {
                Ok(text.to_owned())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios and knobs
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Tools,
    Rich,
    Text,
    Risky,
    ConfigError,
    MissingKey,
    InfraError,
    TurnLimit,
    PriceLimit,
    TokenLimit,
    Slow,
    Hang,
    Flood,
    Grandchild,
    GrandchildExit,
    Setup,
    StderrNoise,
    Probe,
    Exit(u8),
}

const SCENARIO_NAMES: &str = "tools, rich, text, risky, config-error, missing-key, infra-error, \
                              turn-limit, price-limit, token-limit, slow, hang, flood, \
                              grandchild, grandchild-exit, setup, stderr-noise, probe, exit:N";

impl Scenario {
    fn parse(name: &str) -> Option<Scenario> {
        Some(match name {
            "tools" => Scenario::Tools,
            "rich" => Scenario::Rich,
            "text" => Scenario::Text,
            "risky" => Scenario::Risky,
            "config-error" => Scenario::ConfigError,
            "missing-key" => Scenario::MissingKey,
            "infra-error" => Scenario::InfraError,
            "turn-limit" => Scenario::TurnLimit,
            "price-limit" => Scenario::PriceLimit,
            "token-limit" => Scenario::TokenLimit,
            "slow" => Scenario::Slow,
            "hang" => Scenario::Hang,
            "flood" => Scenario::Flood,
            "grandchild" => Scenario::Grandchild,
            "grandchild-exit" => Scenario::GrandchildExit,
            "setup" => Scenario::Setup,
            "stderr-noise" => Scenario::StderrNoise,
            "probe" => Scenario::Probe,
            _ => Scenario::Exit(name.strip_prefix("exit:")?.parse().ok()?),
        })
    }
}

/// Everything the `FAKE_VIBE_*` environment variables choose.
struct Knobs {
    scenario: Scenario,
    sleep: Duration,
    lines: u64,
    pidfile: Option<PathBuf>,
    grandchild_inherit: bool,
    grandchild_secs: u64,
    grandchild_script: Option<PathBuf>,
    setup_subdir: Option<String>,
    no_export: bool,
}

fn env_string(name: &str) -> Option<String> {
    env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match env_string(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("invalid {name} '{v}': expected a non-negative integer")),
    }
}

impl Knobs {
    fn from_env() -> Result<Knobs, String> {
        let name = env_string("FAKE_VIBE_SCENARIO").unwrap_or_else(|| "tools".to_owned());
        let scenario = Scenario::parse(name.trim()).ok_or_else(|| {
            format!("unknown FAKE_VIBE_SCENARIO '{name}' (known: {SCENARIO_NAMES})")
        })?;
        let default_sleep = if scenario == Scenario::Slow { 2000 } else { 0 };
        let grandchild_stdio = env_string("FAKE_VIBE_GRANDCHILD_STDIO").unwrap_or_default();
        let grandchild_inherit = match grandchild_stdio.as_str() {
            "" | "null" => false,
            "inherit" => true,
            other => {
                return Err(format!(
                    "invalid FAKE_VIBE_GRANDCHILD_STDIO '{other}': expected null or inherit"
                ));
            }
        };
        Ok(Knobs {
            scenario,
            sleep: Duration::from_millis(env_u64("FAKE_VIBE_SLEEP_MS", default_sleep)?),
            lines: env_u64("FAKE_VIBE_LINES", 1000)?,
            pidfile: env::var_os("FAKE_VIBE_PIDFILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            grandchild_inherit,
            grandchild_secs: env_u64("FAKE_VIBE_GRANDCHILD_SECS", 300)?,
            grandchild_script: env::var_os("FAKE_VIBE_GRANDCHILD_SCRIPT")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            setup_subdir: env_string("FAKE_VIBE_SETUP_SUBDIR").filter(|s| !s.is_empty()),
            no_export: env_string("FAKE_VIBE_NO_EXPORT").is_some_and(|v| !v.is_empty() && v != "0"),
        })
    }
}

/// One action inside a model answer.
enum Tool {
    /// `write_file`, executed for real.
    Write { path: String, content: String },
    /// `bash`, executed for real with `sh -c` in the cwd.
    Bash { command: String },
    /// A `bash` call whose output is made up (not executed; `flood`).
    Canned { command: String, stdout: String },
    /// A raw line on stdout that is not an entry (`stderr-noise`).
    Noise(Vec<u8>),
    /// A raw line on stderr (`stderr-noise`).
    StderrNoise(String),
}

impl Tool {
    fn is_call(&self) -> bool {
        matches!(
            self,
            Tool::Write { .. } | Tool::Bash { .. } | Tool::Canned { .. }
        )
    }
}

/// How a model call fails instead of answering.
#[derive(Clone, Copy)]
enum Failure {
    InvalidKey,
    ServerError,
    Exit(u8),
}

/// One model call and its answer.
struct Step {
    delay: Delay,
    reasoning: Option<&'static str>,
    preamble: Option<&'static str>,
    tools: Vec<Tool>,
    /// The final answer: the turn ends after it.
    text: Option<String>,
    failure: Option<Failure>,
}

impl Step {
    fn new(delay: Delay) -> Step {
        Step {
            delay,
            reasoning: None,
            preamble: None,
            tools: Vec::new(),
            text: None,
            failure: None,
        }
    }

    fn tool(mut self, tool: Tool) -> Step {
        self.tools.push(tool);
        self
    }

    fn text(mut self, text: impl Into<String>) -> Step {
        self.text = Some(text.into());
        self
    }
}

fn write_tool(path: &str, content: &str) -> Tool {
    Tool::Write {
        path: path.to_owned(),
        content: content.to_owned(),
    }
}

fn bash_tool(command: &str) -> Tool {
    Tool::Bash {
        command: command.to_owned(),
    }
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The scripted model: answer number `i` (0-based) of the scenario, `None` when the
/// script is over.
fn script(knobs: &Knobs, i: u64) -> Option<Step> {
    let step = Step::new(Delay::For(knobs.sleep));
    let tools_step = |step: Step| match i {
        0 => Some(step.tool(write_tool(HELLO_PATH, HELLO_CONTENT))),
        1 => Some(step.tool(bash_tool(HELLO_COMMAND))),
        2 => Some(step.text(TOOLS_FINAL)),
        _ => None,
    };
    match knobs.scenario {
        Scenario::Tools
        | Scenario::Slow
        | Scenario::PriceLimit
        | Scenario::TokenLimit
        | Scenario::GrandchildExit => tools_step(step),
        Scenario::Rich => {
            let mut step = tools_step(step)?;
            step.reasoning = Some(REASONING_TEXT);
            step.preamble = match i {
                0 => Some("Next I will call write_file."),
                1 => Some("Next I will call bash."),
                _ => None,
            };
            Some(step)
        }
        Scenario::Text => (i == 0).then(|| step.text(PLAIN_TEXT)),
        Scenario::Risky => match i {
            0 => Some(step.tool(bash_tool(RISKY_COMMAND))),
            1 => Some(step.text(RISKY_FINAL)),
            _ => None,
        },
        Scenario::StderrNoise => match i {
            0 => Some(
                step.tool(Tool::Noise(b"warning: not json".to_vec()))
                    .tool(write_tool(HELLO_PATH, HELLO_CONTENT)),
            ),
            1 => Some(
                step.tool(Tool::Noise(
                    b"garbage \xff\xfe\xc3\x28 this line is not UTF-8".to_vec(),
                ))
                .tool(Tool::StderrNoise(
                    "warning: noise on stderr from the fake vibe".to_owned(),
                ))
                .tool(bash_tool(HELLO_COMMAND)),
            ),
            2 => {
                let mut long = b"noise: ".to_vec();
                long.resize(200 * 1024, b'x');
                Some(
                    step.tool(Tool::Noise(Vec::new()))
                        .tool(Tool::Noise(long))
                        .text(TOOLS_FINAL),
                )
            }
            _ => None,
        },
        Scenario::Setup => {
            let setup_path = match &knobs.setup_subdir {
                Some(dir) => format!("{}/setup.sh", dir.trim_end_matches('/')),
                None => "setup.sh".to_owned(),
            };
            match i {
                0 | 1 => tools_step(step),
                2 => Some(step.tool(write_tool(&setup_path, SETUP_SCRIPT))),
                3 => Some(step.tool(bash_tool(&format!("chmod 755 {}", sh_quote(&setup_path))))),
                4 => Some(step.text(SETUP_FINAL)),
                _ => None,
            }
        }
        Scenario::TurnLimit => Some(step.tool(bash_tool(&format!("echo loop {i}")))),
        Scenario::Hang | Scenario::Grandchild => (i == 0).then(|| Step::new(Delay::Forever)),
        Scenario::Probe => (i == 0).then(|| step.text(probe::report().to_string())),
        Scenario::Flood => match i {
            0 => {
                let mut step = step;
                step.tools = (1..=knobs.lines)
                    .map(|n| Tool::Canned {
                        command: format!("echo line {n}"),
                        stdout: format!("line {n}\n"),
                    })
                    .collect();
                Some(step)
            }
            1 => Some(step.text(format!("Printed {} lines.", knobs.lines))),
            _ => None,
        },
        Scenario::ConfigError => (i == 0).then_some(Step {
            failure: Some(Failure::InvalidKey),
            ..step
        }),
        Scenario::InfraError => (i == 0).then_some(Step {
            failure: Some(Failure::ServerError),
            ..step
        }),
        Scenario::Exit(code) => (i == 0).then_some(Step {
            failure: Some(Failure::Exit(code)),
            ..step
        }),
        // Fails before the session starts (see `run`).
        Scenario::MissingKey => None,
    }
}

// ---------------------------------------------------------------------------------------
// How a run ends, and export.json
// ---------------------------------------------------------------------------------------

enum End {
    Finished,
    Stopped(Stop),
    ConfigError {
        message: String,
        code: Option<&'static str>,
    },
    Infra {
        message: String,
    },
    /// `exit:N`: an exit the real CLI never makes.
    Unknown(u8),
}

impl End {
    fn exit_code(&self) -> u8 {
        match self {
            End::Finished => 0,
            End::ConfigError { .. } => 1,
            End::Infra { .. } => 2,
            End::Stopped(_) => 3,
            End::Unknown(code) => *code,
        }
    }
}

/// What a started session contributes to export.json.
struct SessionSummary {
    session_id: String,
    input_tokens: u64,
    output_tokens: u64,
    steps: u64,
    auto_approve: bool,
}

/// Input and output prices of the capture's `mock` model, USD per million tokens.
fn cost_usd(input_tokens: u64, output_tokens: u64) -> f64 {
    // Whole micro-dollars, so the float prints as short as the real one (0.015048).
    (input_tokens.saturating_add(output_tokens.saturating_mul(3))) as f64 / 1_000_000.0
}

struct ExportCtx {
    dir: Option<PathBuf>,
    disabled: bool,
    started_at: DateTime<Utc>,
    max_turns: Option<u64>,
    max_price: Option<f64>,
    max_tokens: Option<u64>,
    time_limit: Option<f64>,
    warnings: Vec<String>,
}

impl ExportCtx {
    fn document(&self, end: &End, session: Option<&SessionSummary>) -> J {
        let (outcome, stop_reason, error) = match end {
            End::Finished => ("finished", None, J::Null),
            End::Stopped(stop) => (stop.name(), Some(stop.reason()), J::Null),
            End::ConfigError { message, code } => (
                "config_error",
                None,
                obj! { "message" => message, "code" => *code },
            ),
            End::Infra { message } => (
                "infrastructure_failure",
                None,
                obj! { "message" => message, "code" => "backend_error" },
            ),
            End::Unknown(_) => ("unknown", None, J::Null),
        };
        let mut fields: Vec<(&'static str, J)> = vec![
            ("outcome", outcome.into()),
            ("stop_reason", stop_reason.into()),
            ("error", error),
        ];
        match session {
            Some(s) => fields.extend([
                ("session_id", J::from(&s.session_id)),
                (
                    "usage",
                    obj! {
                        "input_tokens" => s.input_tokens,
                        "output_tokens" => s.output_tokens,
                        "cached_input_tokens" => 0_u64,
                        "total_tokens" => s.input_tokens.saturating_add(s.output_tokens),
                    },
                ),
                ("cost_usd", cost_usd(s.input_tokens, s.output_tokens).into()),
                ("steps", s.steps.into()),
                ("config", J::Raw(render_config(s.auto_approve))),
            ]),
            None => fields.extend(
                ["session_id", "usage", "cost_usd", "steps", "config"].map(|k| (k, J::Null)),
            ),
        }
        if !self.warnings.is_empty() {
            let warnings = self
                .warnings
                .iter()
                .map(|w| obj! { "message" => w, "source" => J::Null })
                .collect::<Vec<_>>();
            fields.push(("warnings", warnings.into()));
        }
        fields.extend([
            ("schema_version", J::Int(1)),
            ("vibe_version", VIBE_VERSION.into()),
            ("journal_dir", session.map(|_| "session").into()),
            ("started_at", rfc3339_micros(self.started_at).into()),
            ("ended_at", rfc3339_micros(Utc::now()).into()),
            (
                "limits",
                obj! {
                    "max_turns" => self.max_turns,
                    "max_price" => self.max_price,
                    "max_tokens" => self.max_tokens,
                    "time_limit_s" => self.time_limit,
                },
            ),
            ("exit_code", J::Int(i64::from(end.exit_code()))),
        ]);
        J::Obj(fields)
    }

    /// Writes `<dir>/export.json` (through a temporary file and a rename, so a reader
    /// never sees half of it).
    fn write(&self, end: &End, session: Option<&SessionSummary>) {
        let Some(dir) = &self.dir else { return };
        if self.disabled {
            return;
        }
        let mut text = self.document(end, session).to_pretty();
        text.push('\n');
        let target = dir.join("export.json");
        let temp = dir.join(".export.json.tmp");
        let result = fs::create_dir_all(dir)
            .and_then(|()| fs::write(&temp, text.as_bytes()))
            .and_then(|()| fs::rename(&temp, &target));
        if let Err(e) = result {
            err_line(&format!(
                "Warning: could not write {}: {e}",
                target.display()
            ));
        }
    }
}

fn vibe_home() -> PathBuf {
    match env::var_os("VIBE_HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".vibe"),
    }
}

/// `VIBE_ACTIVE_MODEL`, else a top-level `active_model = "..."` in `$VIBE_HOME/config.toml`,
/// else the capture's `mock`.
fn active_model() -> String {
    if let Some(model) = env_string("VIBE_ACTIVE_MODEL").filter(|m| !m.is_empty()) {
        return model;
    }
    let config = fs::read_to_string(vibe_home().join("config.toml")).unwrap_or_default();
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "active_model"
        {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if !value.is_empty() {
                return value.to_owned();
            }
        }
    }
    "mock".to_owned()
}

fn render_config(auto_approve: bool) -> String {
    let json_str = |s: &str| {
        let mut out = String::new();
        push_json_str(&mut out, s);
        out
    };
    let save_dir = vibe_home().join("logs").join("session");
    let retry = env_string("VIBE_API_RETRY_MAX_ELAPSED_TIME")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(300.0);
    CONFIG_TEMPLATE
        .replace("@ACTIVE_MODEL@", &json_str(&active_model()))
        .replace("@SAVE_DIR@", &json_str(&save_dir.to_string_lossy()))
        .replace("@BYPASS@", if auto_approve { "true" } else { "false" })
        .replace("@RETRY@", &J::Float(retry).to_compact())
}

// ---------------------------------------------------------------------------------------
// The session: entries on stdout, tool execution, usage
// ---------------------------------------------------------------------------------------

struct Session {
    out: Out,
    mode: OutputMode,
    session_id: String,
    turn_id: String,
    user_entry_id: String,
    cwd: PathBuf,
    auto_approve: bool,
    /// Every entry, kept for `--output json` only.
    entries: Vec<J>,
    last_text: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    steps: u64,
    context_chars: u64,
    waiter: Waiter,
}

/// Effective limits (the scenario may give a default the command line did not).
struct Limits {
    max_turns: Option<u64>,
    max_price: Option<f64>,
    max_tokens: Option<u64>,
}

/// What `write_file` reports about the file it wrote.
struct Written {
    absolute: String,
    existed: bool,
    previous: Option<String>,
}

fn display_json(
    summary: String,
    content: Option<&str>,
    verb: &str,
    message: &str,
    settled_verb: &str,
    status_text: &str,
) -> J {
    obj! {
        "summary" => summary,
        "content" => content,
        "suffix" => "",
        "verb" => verb,
        "message" => message,
        "settledVerb" => settled_verb,
        "settledMessage" => message,
        "statusText" => status_text,
    }
}

fn settled_display(success: bool, verb: &str, message: &str) -> J {
    obj! {
        "success" => success,
        "verb" => verb,
        "message" => message,
        "warnings" => J::Arr(Vec::new()),
        "approvalNote" => J::Null,
        "suffix" => "",
    }
}

/// `requiredPermissions` of a shell approval: one `command_pattern` a sub-command.
fn command_permissions(command: &str) -> J {
    let mut parts = vec![command.to_owned()];
    for separator in ["&&", "||", ";", "|"] {
        parts = parts
            .iter()
            .flat_map(|p| p.split(separator).map(str::to_owned).collect::<Vec<_>>())
            .collect();
    }
    let permissions = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let program = p.split_whitespace().next().unwrap_or(p);
            let pattern = format!("{program} *");
            obj! {
                "scope" => "command_pattern",
                "invocationPattern" => p,
                "sessionPattern" => &pattern,
                "label" => &pattern,
                "pathScopeRoot" => J::Null,
            }
        })
        .collect::<Vec<_>>();
    J::Arr(permissions)
}

fn tool_call_id() -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(9)
        .map(char::from)
        .collect()
}

impl Session {
    fn header(
        &self,
        id: &str,
        created: i64,
        updated: i64,
        related: Option<&str>,
        kind: &str,
    ) -> Vec<(&'static str, J)> {
        let input_entry = (id != self.user_entry_id).then_some(self.user_entry_id.as_str());
        vec![
            ("id", id.into()),
            ("sessionId", J::from(&self.session_id)),
            ("turnId", J::from(&self.turn_id)),
            ("inputEntryId", input_entry.into()),
            ("createdAt", created.into()),
            ("updatedAt", updated.into()),
            ("generationStatus", "completed".into()),
            ("relatedEntryId", related.into()),
            ("type", kind.into()),
        ]
    }

    fn emit(&mut self, entry: J) {
        match self.mode {
            OutputMode::Streaming => self.out.line(entry.to_compact().as_bytes()),
            OutputMode::Json => self.entries.push(entry),
            OutputMode::Text => {}
        }
    }

    fn emit_message(&mut self, id: &str, at: i64, role: &str, text: &str) {
        let user = role == "user";
        let mut fields = self.header(id, at, at, None, "message");
        fields.extend([
            ("role", role.into()),
            (
                "content",
                J::Arr(vec![obj! { "type" => "text", "text" => text }]),
            ),
            ("source", if user { "turn_start" } else { "harness" }.into()),
            ("userDisplayContent", J::Null),
            (
                "outcome",
                if user {
                    J::Null
                } else {
                    obj! { "type" => "committed" }
                },
            ),
        ]);
        self.emit(J::Obj(fields));
        if !user {
            self.last_text = Some(text.to_owned());
        }
    }

    fn emit_reasoning(&mut self, message_uuid: &str, at: i64, text: &str) {
        let id = format!("reasoning-{message_uuid}-0");
        let mut fields = self.header(&id, at, at, None, "reasoning");
        fields.extend([
            ("text", text.into()),
            ("summary", J::Arr(Vec::new())),
            ("outcome", obj! { "type" => "committed" }),
        ]);
        self.emit(J::Obj(fields));
    }

    /// Model usage of one answer (the mock server's formula: prompt ≈ characters/4,
    /// 20 tokens a tool call, text ≈ characters/4).
    fn account(&mut self, step: &Step) {
        let calls = step.tools.iter().filter(|t| t.is_call()).count() as u64;
        let texts = [step.reasoning, step.preamble, step.text.as_deref()]
            .into_iter()
            .flatten()
            .map(|t| t.len() as u64)
            .sum::<u64>();
        self.input_tokens = self
            .input_tokens
            .saturating_add(4834 + self.context_chars / 4);
        self.output_tokens = self
            .output_tokens
            .saturating_add(calls.saturating_mul(20) + texts / 4);
        // Each tool call and its result add about 400 characters to the next prompt.
        self.context_chars = self
            .context_chars
            .saturating_add(calls.saturating_mul(400) + texts);
    }

    fn over_limit(&self, limits: &Limits) -> Option<Stop> {
        if limits
            .max_price
            .is_some_and(|max| cost_usd(self.input_tokens, self.output_tokens) >= max)
        {
            return Some(Stop::PriceLimit);
        }
        if limits
            .max_tokens
            .is_some_and(|max| self.input_tokens.saturating_add(self.output_tokens) >= max)
        {
            return Some(Stop::TokenLimit);
        }
        None
    }

    /// Runs the scripted conversation until it ends.
    fn drive(&mut self, knobs: &Knobs, limits: &Limits) -> End {
        for i in 0.. {
            let Some(step) = script(knobs, i) else {
                return End::Finished;
            };
            if limits.max_turns.is_some_and(|max| self.steps >= max) {
                return End::Stopped(Stop::TurnLimit);
            }
            self.steps += 1;
            // Nothing stays buffered while the "model" thinks.
            self.out.flush();
            if let Err(stop) = self.waiter.sleep(step.delay) {
                return End::Stopped(stop);
            }
            match step.failure {
                Some(Failure::InvalidKey) => {
                    return End::ConfigError {
                        message: format!(
                            "Invalid API key (from env var {PROVIDER_KEY_VAR}). Please check \
                             your API key and try again."
                        ),
                        code: Some("invalid_api_key"),
                    };
                }
                Some(Failure::ServerError) => {
                    return End::Infra {
                        message: format!(
                            "Server error '500 Internal Server Error' for url '{PROVIDER_URL}'\n\
                             For more information check: \
                             https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/500: \
                             mock failure 500"
                        ),
                    };
                }
                Some(Failure::Exit(code)) => return End::Unknown(code),
                None => {}
            }
            self.account(&step);
            let over = self.over_limit(limits);
            let message_uuid = uuid::Uuid::new_v4().to_string();
            let at = now_ms();
            if let Some(reasoning) = step.reasoning {
                self.emit_reasoning(&message_uuid, at, reasoning);
            }
            let message_id = format!("assistant-{message_uuid}");
            if let Some(preamble) = step.preamble {
                self.emit_message(&message_id, at, "assistant", preamble);
            }
            for tool in &step.tools {
                if over.is_none()
                    && let Err(stop) = self.waiter.poll()
                {
                    return End::Stopped(stop);
                }
                self.run_tool(tool, over.is_some());
            }
            if let Some(text) = &step.text {
                self.emit_message(&message_id, now_ms(), "assistant", text);
            }
            if let Some(stop) = over {
                return End::Stopped(stop);
            }
            if step.text.is_some() {
                return End::Finished;
            }
        }
        End::Finished
    }

    fn run_tool(&mut self, tool: &Tool, cancelled: bool) {
        match tool {
            Tool::Noise(bytes) => self.out.line(bytes),
            Tool::StderrNoise(line) => err_line(line),
            Tool::Write { path, content } => {
                let id = format!("effect-{}", uuid::Uuid::new_v4());
                let created = now_ms();
                // The write happens even when the answer crossed a limit: the real CLI
                // reports the effect cancelled, but the file is there (price-limit capture).
                let outcome = self.write_file(path, content);
                let detail = obj! {
                    "toolName" => "file_system.write_file",
                    "display" => display_json(
                        format!("Writing {path}"),
                        Some(content),
                        "Creating",
                        path,
                        "Created",
                        "Writing file",
                    ),
                    "kind" => "file_write",
                    "input" => obj! { "filePath" => path, "content" => content },
                };
                let state = if cancelled {
                    cancelled_state()
                } else {
                    match outcome {
                        Ok(Written {
                            absolute,
                            existed,
                            previous,
                        }) => completed_state(
                            "",
                            obj! {
                                "filePath" => absolute,
                                "content" => content,
                                "fileExisted" => existed,
                                "previousContent" => previous,
                            },
                            settled_display(true, "Created", path),
                        ),
                        Err(message) => failed_state(&message, "tool_error"),
                    }
                };
                self.emit_effect(&id, created, "file_system.write_file", detail, state);
            }
            Tool::Bash { command } => self.shell(command, None, cancelled),
            Tool::Canned { command, stdout } => self.shell(command, Some(stdout), cancelled),
        }
    }

    fn shell(&mut self, command: &str, canned: Option<&str>, cancelled: bool) {
        let id = format!("effect-{}", uuid::Uuid::new_v4());
        let created = now_ms();
        let detail_of = || {
            obj! {
                "toolName" => "file_system.bash",
                "display" => display_json(
                    format!("bash: {command}"),
                    None,
                    "Running",
                    command,
                    "Ran",
                    "Running command",
                ),
                "kind" => "shell",
                "input" => obj! { "command" => command },
            }
        };
        if !self.auto_approve && !cancelled {
            // Headless vibe without --auto-approve: the approval callback is answered
            // `deny` at once, and the effect fails without running.
            let callback_id = format!("approval-{}", tool_call_id());
            let at = now_ms();
            let mut fields = self.header(&callback_id, at, at, Some(&id), "callback");
            fields.extend([
                ("callbackId", J::from(&callback_id)),
                ("title", "Approve file_system.bash".into()),
                (
                    "detail",
                    obj! {
                        "kind" => "approval",
                        "effect" => detail_of(),
                        "requiredPermissions" => command_permissions(command),
                        "choices" => J::Arr(APPROVAL_CHOICES.map(J::from).into()),
                        "pathScopeChoices" => J::Arr(Vec::new()),
                        "relatedEntryId" => &id,
                        "reason" => J::Null,
                    },
                ),
                (
                    "state",
                    obj! {
                        "status" => "answered",
                        "output" => obj! {
                            "type" => "approval",
                            "decision" => obj! { "type" => "deny" },
                            "feedback" => J::Null,
                        },
                    },
                ),
            ]);
            self.emit(J::Obj(fields));
            self.emit_effect(
                &id,
                created,
                "file_system.bash",
                detail_of(),
                denied_state(),
            );
            return;
        }
        // As with writes: executed even when the answer crossed a limit (but never
        // without approval).
        let outcome = match canned {
            Some(stdout) => Ok((stdout.to_owned(), String::new())),
            None if self.auto_approve => self.run_shell(command),
            None => Err(INTERRUPT_MESSAGE.to_owned()),
        };
        let state = if cancelled {
            cancelled_state()
        } else {
            match outcome {
                Ok((stdout, stderr)) => {
                    let output_text = format!("{stdout}{stderr}");
                    completed_state(
                        &output_text,
                        obj! {
                            "stdout" => stdout,
                            "stderr" => stderr,
                            "output" => "",
                            "truncated" => false,
                        },
                        settled_display(true, "Ran", command),
                    )
                }
                Err(message) => failed_state(&message, "tool_error"),
            }
        };
        self.emit_effect(&id, created, "file_system.bash", detail_of(), state);
    }

    fn emit_effect(&mut self, id: &str, created: i64, title: &str, detail: J, state: J) {
        let mut fields = self.header(id, created, now_ms(), None, "effect");
        fields.extend([
            ("title", title.into()),
            ("detail", detail),
            ("state", state),
        ]);
        self.emit(J::Obj(fields));
    }

    fn write_file(&self, path: &str, content: &str) -> Result<Written, String> {
        let target = self.cwd.join(path);
        let existed = target.exists();
        let previous = if existed {
            fs::read_to_string(&target).ok()
        } else {
            None
        };
        let parent_ok = target.parent().map_or(Ok(()), fs::create_dir_all);
        match parent_ok.and_then(|()| fs::write(&target, content)) {
            Ok(()) => Ok(Written {
                absolute: target.to_string_lossy().into_owned(),
                existed,
                previous,
            }),
            Err(e) => Err(format!("Error writing {path}: {e}")),
        }
    }

    /// Runs `sh -c <command>` in the cwd: `(stdout, stderr)`, whatever its exit status.
    fn run_shell(&self, command: &str) -> Result<(String, String), String> {
        let result = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .output();
        match result {
            Ok(output) => Ok((
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )),
            Err(e) => Err(format!("Error running command: {e}")),
        }
    }

    /// `--output json` prints every entry at the end, `--output text` the last answer.
    fn print_final(&mut self) {
        match self.mode {
            OutputMode::Streaming => {}
            OutputMode::Json => {
                let mut text = J::Arr(std::mem::take(&mut self.entries)).to_pretty();
                text.push('\n');
                self.out.text(&text);
            }
            OutputMode::Text => {
                if let Some(last) = &self.last_text {
                    let text = format!("{last}\n");
                    self.out.text(&text);
                }
            }
        }
    }

    fn summary(&self) -> SessionSummary {
        SessionSummary {
            session_id: self.session_id.clone(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            steps: self.steps,
            auto_approve: self.auto_approve,
        }
    }
}

/// `state` of a completed effect, in the key order of the streaming capture.
fn completed_state(output_text: &str, output: J, display: J) -> J {
    obj! {
        "status" => "completed",
        "outputText" => output_text,
        "output" => output,
        "durationMs" => 0.0,
        "approvalType" => "always",
        "decision" => "execute",
        "display" => display,
        "approvalSource" => "bypass",
    }
}

/// `state` of an effect interrupted by a limit (price-limit capture).
fn cancelled_state() -> J {
    obj! {
        "status" => "cancelled",
        "outputText" => "",
        "display" => settled_display(false, "", INTERRUPT_MESSAGE),
        "approvalType" => J::Null,
        "decision" => J::Null,
        "durationMs" => 0.0,
        "reason" => INTERRUPT_MESSAGE,
        "approvalSource" => J::Null,
    }
}

/// `state` of an effect denied by headless approval (approval-denied capture).
fn denied_state() -> J {
    obj! {
        "status" => "failed",
        "outputText" => "",
        "decision" => "skip",
        "output" => obj! {
            "type" => "failure",
            "content" => J::Arr(Vec::new()),
            "_meta" => obj! {
                "approval" => obj! {
                    "approvalSource" => "user",
                    "approvalType" => "ask",
                    "decision" => "skip",
                },
            },
            "error" => obj! {
                "code" => "tool_denied",
                "message" => DENIED_MESSAGE,
                "retryable" => false,
            },
        },
        "approvalType" => "ask",
        "display" => settled_display(false, "", DENIED_MESSAGE),
        "error" => obj! { "message" => DENIED_MESSAGE, "code" => "tool_denied", "details" => J::Null },
        "approvalSource" => "user",
        "durationMs" => 0.0,
    }
}

/// `state` of an effect whose execution failed (same shape as a denial).
fn failed_state(message: &str, code: &str) -> J {
    obj! {
        "status" => "failed",
        "outputText" => "",
        "decision" => "execute",
        "output" => obj! {
            "type" => "failure",
            "content" => J::Arr(Vec::new()),
            "error" => obj! { "code" => code, "message" => message, "retryable" => false },
        },
        "approvalType" => "always",
        "display" => settled_display(false, "", message),
        "error" => obj! { "message" => message, "code" => code, "details" => J::Null },
        "approvalSource" => "bypass",
        "durationMs" => 0.0,
    }
}

// ---------------------------------------------------------------------------------------
// Startup: FAKE_VIBE_RECORD, the grandchild
// ---------------------------------------------------------------------------------------

fn own_pgid() -> Option<i64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Appends `<job id> <unix ns>` to `$FAKE_VIBE_STARTED_FILE` (benchmarks' dispatch latency).
fn record_start() {
    let Some(path) = env::var_os("FAKE_VIBE_STARTED_FILE").filter(|p| !p.is_empty()) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let job = env::var("OTTER_JOB_ID").unwrap_or_else(|_| "-".to_owned());
    let _ = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{job} {now}\n").as_bytes()));
}

/// Appends one line to `$FAKE_VIBE_RECORD` telling how this process was started.
fn record_invocation(argv: &[String]) {
    let Some(path) = env::var_os("FAKE_VIBE_RECORD").filter(|p| !p.is_empty()) else {
        return;
    };
    let mut vars = serde_json::Map::new();
    for name in [
        "VIBE_HOME",
        "MISTRAL_API_KEY",
        "VIBE_MODEL",
        "MISTRAL_MODEL",
        "VIBE_PROVIDER",
        "VIBE_ACTIVE_MODEL",
        "DATABASE_URL",
        "REDIS_URL",
    ] {
        vars.insert(name.to_owned(), env_string(name).into());
    }
    for (name, value) in env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("OTTER_") {
            vars.insert(
                name.into_owned(),
                value.to_string_lossy().into_owned().into(),
            );
        }
    }
    let agents_md = env::var_os("VIBE_HOME")
        .and_then(|home| fs::read_to_string(Path::new(&home).join("AGENTS.md")).ok());
    let record = serde_json::json!({
        "argv": argv,
        "cwd": env::current_dir().ok().map(|d| d.to_string_lossy().into_owned()),
        "env": vars,
        "agents_md": agents_md,
        "stdin": fs::read_link("/proc/self/fd/0").ok().map(|p| p.to_string_lossy().into_owned()),
        "pid": std::process::id(),
        "ppid": std::os::unix::process::parent_id(),
        "pgid": own_pgid(),
    });
    let mut line = record.to_string();
    line.push('\n');
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        err_line(&format!(
            "otter-fake-vibe: cannot append to FAKE_VIBE_RECORD {}: {e}",
            Path::new(&path).display()
        ));
    }
}

/// Starts `sh -c 'sleep N'` in our process group (no setsid: killing the group must
/// reach it), reaped by a thread if it dies first, and writes its pid to the pidfile.
fn spawn_grandchild(knobs: &Knobs) -> Result<(), String> {
    let mut command = Command::new("sh");
    match &knobs.grandchild_script {
        Some(script) => command.arg(script),
        None => command
            .arg("-c")
            .arg(format!("sleep {}", knobs.grandchild_secs)),
    };
    command.stdin(Stdio::null());
    if !knobs.grandchild_inherit {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start the grandchild: {e}"))?;
    if knobs.grandchild_script.is_some() {
        let _ = child.wait();
        return Ok(());
    }
    let pid = child.id();
    // Never joined: if we exit first, the grandchild lives on as an orphan.
    let _reaper = std::thread::Builder::new()
        .name("grandchild-reaper".to_owned())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Some(pidfile) = &knobs.pidfile {
        let temp = pidfile.with_extension("tmp-fake-vibe");
        fs::write(&temp, format!("{pid}\n"))
            .and_then(|()| fs::rename(&temp, pidfile))
            .map_err(|e| {
                format!(
                    "could not write FAKE_VIBE_PIDFILE {}: {e}",
                    pidfile.display()
                )
            })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The probe: a job trying to reach Otter's secrets
// ---------------------------------------------------------------------------------------

mod probe {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    use std::time::Duration;

    use serde_json::{Value, json};

    /// The variables that hold Otter's secrets.
    const SECRETS: [&str; 5] = [
        "OTTER_API_TOKENS",
        "OTTER_DATABASE_URL",
        "DATABASE_URL",
        "OTTER_REDIS_URL",
        "REDIS_URL",
    ];

    /// `"read"`, or why it could not be.
    fn try_read(path: &str) -> Value {
        match std::fs::File::open(path).and_then(|mut f| {
            let mut buf = vec![0u8; 64];
            f.read(&mut buf)
        }) {
            Ok(_) => json!("read"),
            Err(e) => json!(e.to_string()),
        }
    }

    fn env_of(pid: &str) -> Option<Vec<(String, String)>> {
        let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        Some(
            bytes
                .split(|&b| b == 0)
                .filter_map(|e| {
                    let e = String::from_utf8_lossy(e);
                    let (k, v) = e.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect(),
        )
    }

    /// `METHOD path` on the API at `base` with `token`; the status, or 0 when it failed.
    fn call(base: &str, method: &str, path: &str, token: &str, body: &str) -> u16 {
        let Some(host) = base.strip_prefix("http://") else {
            return 0;
        };
        let host = host.split('/').next().unwrap_or_default();
        let Ok(mut stream) = TcpStream::connect(host) else {
            return 0;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return 0;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub(super) fn report() -> Value {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        let own_env: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("OTTER_") || SECRETS.contains(&k.as_str()))
            .collect();
        let mut pids = vec![std::os::unix::process::parent_id().to_string()];
        pids.extend(
            std::env::var("FAKE_VIBE_PROBE_PIDS")
                .unwrap_or_default()
                .split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
        let per_pid: serde_json::Map<String, Value> = pids
            .iter()
            .map(|pid| {
                let tried = json!({
                    "environ": try_read(&format!("/proc/{pid}/environ")),
                    "mem": try_read(&format!("/proc/{pid}/mem")),
                });
                (pid.clone(), tried)
            })
            .collect();
        let files: serde_json::Map<String, Value> = std::env::var("FAKE_VIBE_PROBE_FILES")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(|p| (p.to_owned(), try_read(p)))
            .collect();
        let me = std::process::id().to_string();
        let mut found = Vec::new();
        let mut tokens = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            for (name, value) in env_of(&pid).unwrap_or_default() {
                if SECRETS.contains(&name.as_str()) {
                    if name == "OTTER_API_TOKENS" {
                        tokens.extend(value.split(',').map(|t| t.trim().to_owned()));
                    }
                    found.push(json!({ "pid": pid, "name": name, "value": value }));
                }
            }
        }
        let base = std::env::var("OTTER_API_BASE_URL").unwrap_or_default();
        let job_token = std::env::var("OTTER_API_TOKEN").unwrap_or_default();
        let workspace = json!({ "command": "id", "workspace_id": null }).to_string();
        let mut api = Vec::new();
        let mut attempt = |token: &str, kind: &str| {
            api.push(json!({ "call": "GET /v1/projects", "token": kind,
                "status": call(&base, "GET", "/v1/projects", token, "") }));
            api.push(
                json!({ "call": "POST /v1/workspaces/command", "token": kind,
                "status": call(&base, "POST", "/v1/workspaces/command", token, &workspace) }),
            );
        };
        attempt(&job_token, "job");
        for token in tokens.iter().filter(|t| !t.is_empty()) {
            attempt(token, "found");
        }
        if let Ok(job) = std::env::var("OTTER_JOB_ID") {
            let body = json!({ "preview_url": "http://127.0.0.1:9/probed" }).to_string();
            api.push(json!({ "call": "POST /v1/jobs/{id}/preview-url", "token": "job",
                "status": call(&base, "POST", &format!("/v1/jobs/{job}/preview-url"), &job_token, &body) }));
        }
        json!({
            "uid": uid,
            "own_env": own_env,
            "pids": per_pid,
            "files": files,
            "found": found,
            "api": api,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

fn run(
    argv: &[String],
    t0: Instant,
    started_at: DateTime<Utc>,
    sigterm: Option<mpsc::Receiver<()>>,
) -> u8 {
    let args = match parse_args(argv) {
        Ok(args) => args,
        Err(message) => {
            err_raw(&message);
            return 1;
        }
    };
    if args.help {
        Out::new().text(HELP);
        return 0;
    }
    if args.version {
        // FAKE_VIBE_VERSION pretends to be another version (how Otter picks the way it hands
        // over its instructions).
        let version = env::var("FAKE_VIBE_VERSION").unwrap_or_else(|_| VIBE_VERSION.to_owned());
        Out::new().text(&format!("vibe {version}\n"));
        return 0;
    }
    let knobs = Knobs::from_env();
    let mut ctx = ExportCtx {
        dir: args.output_dir.clone(),
        disabled: knobs.as_ref().is_ok_and(|k| k.no_export),
        started_at,
        max_turns: args.max_turns,
        max_price: args.max_price,
        max_tokens: args.max_tokens,
        time_limit: args.time_limit,
        warnings: Vec::new(),
    };
    let config_error = |ctx: &ExportCtx, message: String| {
        err_line(&format!("Error: {message}"));
        let end = End::ConfigError {
            message,
            code: None,
        };
        ctx.write(&end, None);
        end.exit_code()
    };
    let prompt = match resolve_prompt(&args) {
        Ok(prompt) => prompt,
        Err(message) => return config_error(&ctx, message),
    };
    let knobs = match knobs {
        Ok(knobs) => knobs,
        Err(message) => return config_error(&ctx, message),
    };
    let cwd = match env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => return config_error(&ctx, format!("cannot read the working directory: {e}")),
    };
    if env::var_os("MISTRAL_API_KEY").is_none() {
        err_line(KEYRING_NOTICE);
    }
    if !args.trust && cwd.join("AGENTS.md").exists() {
        let warning = format!(
            "Warning: {} is not trusted; project configuration (AGENTS.md) will be ignored. \
             Re-run with --trust to trust this folder temporarily.",
            cwd.display()
        );
        err_line(&warning);
        ctx.warnings.push(warning);
    }
    if knobs.scenario == Scenario::MissingKey {
        return config_error(
            &ctx,
            format!("Missing {PROVIDER_KEY_VAR} environment variable for mock provider"),
        );
    }
    if matches!(
        knobs.scenario,
        Scenario::Grandchild | Scenario::GrandchildExit
    ) && let Err(message) = spawn_grandchild(&knobs)
    {
        return config_error(&ctx, message);
    }

    let deadline = args
        .time_limit
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .and_then(|limit| t0.checked_add(limit));
    let turn_hex = uuid::Uuid::new_v4().simple().to_string();
    let mut session = Session {
        out: Out::new(),
        mode: args.output.unwrap_or(OutputMode::Text),
        session_id: uuid::Uuid::new_v4().to_string(),
        turn_id: format!("turn-{turn_hex}"),
        user_entry_id: format!("user-turn-{turn_hex}-1"),
        cwd,
        auto_approve: args.auto_approve,
        entries: Vec::new(),
        last_text: None,
        input_tokens: 0,
        output_tokens: 0,
        steps: 0,
        context_chars: prompt.len() as u64,
        waiter: Waiter {
            sigterm,
            deadline,
            terminated: false,
        },
    };
    let limits = Limits {
        max_turns: args
            .max_turns
            .or((knobs.scenario == Scenario::TurnLimit).then_some(2)),
        max_price: args
            .max_price
            .or((knobs.scenario == Scenario::PriceLimit).then_some(0.001)),
        max_tokens: args
            .max_tokens
            .or((knobs.scenario == Scenario::TokenLimit).then_some(6000)),
    };

    let user_entry_id = session.user_entry_id.clone();
    session.emit_message(&user_entry_id, now_ms(), "user", &prompt);
    // `flood` prints its effects in batches; the user message still goes out at once.
    session.out.batch = knobs.scenario == Scenario::Flood;
    let end = session.drive(&knobs, &limits);

    if matches!(end, End::Finished | End::Stopped(_)) {
        session.print_final();
    }
    session.out.flush();
    match &end {
        End::Stopped(stop) => err_line(&format!("Stopped: {}", stop.name())),
        End::ConfigError { message, .. } | End::Infra { message } => {
            err_line(&format!("Error: {message}"));
        }
        End::Finished | End::Unknown(_) => {}
    }
    ctx.write(&end, Some(&session.summary()));
    end.exit_code()
}

/// The export's `config` object as the real CLI wrote it in the capture (the `mock`
/// provider and model included), rendered at depth 1; `@NAME@` marks the values that follow
/// this run.
const CONFIG_TEMPLATE: &str = r#"{
    "active_model": @ACTIVE_MODEL@,
    "routed_default_model": "",
    "routed_model_config": null,
    "catalog_model_aliases": {},
    "catalog_recommended_model": "",
    "routed_extra_models": [],
    "providers": [
      {
        "name": "mistral",
        "api_base": "https://api.mistral.ai/v1",
        "api_key_env_var": "MISTRAL_API_KEY",
        "browser_auth_base_url": "https://console.mistral.ai",
        "browser_auth_api_base_url": "https://console.mistral.ai/api",
        "browser_auth_allow_origin_rewrite": false,
        "api_style": "openai",
        "backend": "mistral",
        "reasoning_field_name": "reasoning_content",
        "emits_finish_reason": true,
        "project_id": "",
        "region": "",
        "extra_headers": {}
      },
      {
        "name": "llamacpp",
        "api_base": "http://127.0.0.1:8080/v1",
        "api_key_env_var": "",
        "browser_auth_base_url": null,
        "browser_auth_api_base_url": null,
        "browser_auth_allow_origin_rewrite": false,
        "api_style": "openai",
        "backend": "generic",
        "reasoning_field_name": "reasoning_content",
        "emits_finish_reason": true,
        "project_id": "",
        "region": "",
        "extra_headers": {}
      },
      {
        "name": "mock",
        "api_base": "http://127.0.0.1:46361/v1",
        "api_key_env_var": "MOCK_API_KEY",
        "browser_auth_base_url": null,
        "browser_auth_api_base_url": null,
        "browser_auth_allow_origin_rewrite": false,
        "api_style": "openai",
        "backend": "generic",
        "reasoning_field_name": "reasoning_content",
        "emits_finish_reason": true,
        "project_id": "",
        "region": "",
        "extra_headers": {}
      }
    ],
    "models": {
      "mistral-medium-3.5": {
        "name": "mistral-vibe-cli-latest",
        "provider": "mistral",
        "alias": "mistral-medium-3.5",
        "display_name": "Mistral Medium 3.5",
        "temperature": 1.0,
        "top_p": null,
        "max_output_tokens": null,
        "input_price": 1.5,
        "output_price": 7.5,
        "cached_input_price": 0.15,
        "thinking": "high",
        "thinking_levels": [
          "off",
          "high"
        ],
        "supports_images": true,
        "max_context_length": 262144,
        "auto_compact_threshold": null
      },
      "mock": {
        "name": "mock-model",
        "provider": "mock",
        "alias": "mock",
        "display_name": null,
        "temperature": 0.2,
        "top_p": null,
        "max_output_tokens": null,
        "input_price": 1.0,
        "output_price": 3.0,
        "cached_input_price": null,
        "thinking": "off",
        "thinking_levels": [
          "off",
          "low",
          "medium",
          "high",
          "max"
        ],
        "supports_images": null,
        "max_context_length": 131072,
        "auto_compact_threshold": null
      }
    },
    "allowed_models": [],
    "compaction_model": null,
    "vision_model": null,
    "utility_models": {
      "title": "",
      "smart_approve": ""
    },
    "auto_compact_threshold": null,
    "active_transcribe_model": "voxtral-realtime",
    "transcribe_providers": [
      {
        "name": "mistral",
        "api_base": "wss://api.mistral.ai",
        "api_key_env_var": "MISTRAL_API_KEY",
        "client": "mistral"
      }
    ],
    "transcribe_models": [
      {
        "name": "voxtral-mini-transcribe-realtime-2602",
        "provider": "mistral",
        "alias": "voxtral-realtime",
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "language": "en",
        "target_streaming_delay_ms": 500
      }
    ],
    "active_tts_model": "voxtral-tts",
    "tts_providers": [
      {
        "name": "mistral",
        "api_base": "https://api.mistral.ai",
        "api_key_env_var": "MISTRAL_API_KEY",
        "client": "mistral"
      }
    ],
    "tts_models": [
      {
        "name": "voxtral-mini-tts-latest",
        "provider": "mistral",
        "alias": "voxtral-tts",
        "voice": "gb_jane_neutral",
        "response_format": "wav"
      }
    ],
    "tools": {
      "write_file": {
        "permission": "always"
      },
      "edit": {
        "permission": "always"
      }
    },
    "outside_workdir": "ask",
    "tool_paths": [],
    "enabled_tools": [],
    "disabled_tools": [
      "ask_user_question",
      "cron"
    ],
    "mcp_servers": [],
    "enable_connectors": false,
    "enable_mcp": true,
    "experimental_enable_document_library_connector": false,
    "connectors": [],
    "agent_paths": [],
    "enabled_agents": [],
    "disabled_agents": [],
    "installed_agents": [],
    "default_agent": "accept-edits",
    "smart_approve_available": false,
    "smart_approve_default": false,
    "enable_auto_approve": true,
    "skill_paths": [],
    "enabled_skills": [],
    "disabled_skills": [],
    "experimental_enable_registry_skills": false,
    "experimental_enable_model_catalog": false,
    "experimental_enable_pr_monitoring": false,
    "experimental_enable_pr_discovery": false,
    "enable_otel": false,
    "otel_endpoint": "",
    "otel_redaction": "default",
    "console_base_url": "https://console.mistral.ai",
    "theme": "auto",
    "applied_migrations": [],
    "disable_welcome_banner_animation": false,
    "cursor_blink": true,
    "show_greeting": true,
    "autocopy_to_clipboard": true,
    "enable_mouse_capture": true,
    "file_watcher_for_autocomplete": true,
    "ask_confirmation_on_exit": true,
    "displayed_workdir": "",
    "context_warnings": false,
    "voice_mode_enabled": false,
    "narrator_enabled": false,
    "show_thinking_nodes": true,
    "show_subagent_status_list": true,
    "worktree_limit": 15,
    "bypass_tool_permissions": @BYPASS@,
    "raise_on_compaction_failure": false,
    "enable_telemetry": false,
    "system_prompt_id": "cli",
    "managed_shell_tools_enabled": false,
    "enable_background_processes": true,
    "enable_subagents": true,
    "max_subagents": 32,
    "max_concurrent_subagents": 32,
    "compaction_prompt_id": "compact",
    "title_prompt_id": "session_title",
    "include_commit_signature": true,
    "include_model_info": true,
    "include_project_context": true,
    "include_prompt_detail": true,
    "strict_config": false,
    "enable_update_checks": false,
    "enable_auto_update": false,
    "enable_notifications": false,
    "experimental_enable_tab_status": true,
    "enable_system_trust_store": false,
    "api_timeout": 720.0,
    "api_retry_max_elapsed_time": @RETRY@,
    "api_stream_idle_timeout": 300.0,
    "compaction_reasoning_limit_tokens": 32000,
    "output_limit_retries": 6,
    "api_connect_timeout": 10.0,
    "api_write_timeout": 30.0,
    "api_pool_timeout": 10.0,
    "vibe_base_url": "https://chat.mistral.ai",
    "vibe_code_sessions_base_url": "https://chat.mistral.ai",
    "log_level": null,
    "project_context": {
      "default_commit_count": 5,
      "timeout_seconds": 2.0
    },
    "session_logging": {
      "save_dir": @SAVE_DIR@,
      "session_prefix": "session",
      "enabled": true,
      "generate_titles": false
    },
    "experiments": {
      "enable": false,
      "api_host": "https://experiments.mistral.services/",
      "client_key": "sdk-OE8yJgTXZY6tj"
    }
  }"#;
