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
//! [--max-turns N] [--max-price USD] [--time-limit SECONDS] [--max-tokens N]
//! [--resume SESSION_ID]`, plus `-p`, `--output text|json` (default `text`), `-c/--continue`
//! (goes on with the last session; not with `--resume`, as clap's group), `--version`
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
//! * `--resume ID` goes on with session ID (kept in `$VIBE_HOME/logs/session/`): the export's
//!   `session_id` stays ID, the earlier turns count in the input tokens, `streaming` prints only
//!   the new turn. An ID never saved is the capture's `Error: Session not found: ID`, exit 1,
//!   nothing on stdout, export outcome `usage_error` with `session_id` null
//!   (`otter-core/tests/data/vibe-captures/vibe-3.0.3/resume/`).
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
//! * `no-config`: as vibe with no `config.toml` (its built-in `mistral` provider and no
//!   `MISTRAL_API_KEY`): `Error: Missing MISTRAL_API_KEY environment variable ...`; exit 1.
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
//! * `change-set`: one change of each kind, for the change list and restore: writes
//!   `added.txt`, rewrites `edited.txt` as `line 1`, `line two`, `line 3`, `line 4` (a
//!   workspace that had `line 1`..`line 3` gets one line changed and one added), runs
//!   `rm deleted.txt`, final answer; exit 0.
//! * `stderr-noise`: `tools` with junk on stdout between entries (a non-JSON line, a line
//!   of invalid UTF-8, an empty line, a 200 KiB line) and one junk line on stderr.
//! * `probe`: a job trying to reach Otter's secrets (see `--probe` below); its one answer is
//!   the probe's JSON report.
//! * `exit:N`: user message, then exit with code N (export outcome `unknown`).
//!
//! # Other knobs (environment)
//!
//! * `FAKE_VIBE_HANG_AFTER_ANSWER=1`: once the scenario is over (its answer printed, export.json
//!   written), never exit: deaf to SIGTERM, it only goes when killed (vibe held by a child, or
//!   an app server that does not stop, after its answer).
//! * `FAKE_VIBE_RATE_LIMIT_FILE=<path>`: the `rate-limit` scenario (user message, then the end
//!   vibe 3.0.3 makes once its own retries of an HTTP 429 are spent: exit 2, stderr `Error: Client
//!   error '429 Too Many Requests' …`, export.json `infrastructure_failure` with `error.code`
//!   `rate_limit`) is limited only while this file exists, and is `tools` otherwise.
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
//!
//! # Where things are
//!
//! [`cli`] parses the command line, [`continued`] keeps the sessions for `-c` and `--resume`, [`scenario`] is the scripted model and its knobs,
//! [`session`] prints the entries and runs the tools, [`stop`] watches SIGTERM and the time
//! limit, [`export`] writes `export.json`, [`mod@run`] ties one run together; [`json`] keeps key
//! order, [`out`] writes stdout and stderr, [`startup`] records the invocation and starts the
//! grandchild, [`probe`] is `--probe`.

mod cli;
mod continued;
mod export;
mod json;
mod out;
mod probe;
mod run;
mod scenario;
mod session;
mod startup;
mod stop;

use std::env;
use std::process::ExitCode;
use std::time::Instant;

use chrono::Utc;

use crate::run::run;
use crate::startup::{record_invocation, record_start};
use crate::stop::install_sigterm_listener;

const VIBE_VERSION: &str = "3.0.3";
/// The capture's mock provider: its key variable and its chat-completions URL.
const PROVIDER_KEY_VAR: &str = "MOCK_API_KEY";
const PROVIDER_URL: &str = "http://127.0.0.1:46361/v1/chat/completions";

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
