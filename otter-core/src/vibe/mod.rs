//! The vibe contract: everything Otter knows about the Mistral `vibe` CLI, in one place
//! (DESIGN.md §3 and §4). The worker orchestrates a run (its unit, its lease, `setup.sh`); what
//! vibe is told and what its answers mean is said here.
//!
//! * **Starting it** ([`command`]): `vibe --prompt=P --output streaming --trust --auto-approve
//!   --output-dir RUN_DIR [--time-limit S]`, its environment (`VIBE_HOME`, the model variables
//!   every vibe version reads, the job's id and token), and the channel of Otter's instructions
//!   ([`InstructionsVia`]: `$VIBE_HOME/AGENTS.md` for 3.x, a prefix of the prompt before),
//!   chosen from `vibe --version` ([`version`]).
//! * **stdout** ([`stream`]): with `--output streaming`, one JSON object a line (NDJSON), one
//!   session-history entry each. Two entry formats exist and both are accepted:
//!   * vibe 2.x and 3.x: `{"type": "message"|"reasoning"|"effect"|"callback", ...}` with
//!     `role` and `content: [{"type": "text", "text": ...}]` on messages, `detail`/`state` on
//!     effects (tool calls). 3.x writes compact JSON, 2.x Python's `", "`/`": "` separators,
//!     and key order differs from run to run;
//!   * vibe 1.x: OpenAI chat messages, `{"role": "system"|"user"|"assistant"|"tool",
//!     "content": "...", "tool_calls": [...]}`.
//!
//!   [`stream::parse_line`] and [`stream::entry_kind`] read one line, and
//!   [`stream::Transcript`] follows a whole run and keeps its final answer. [`RunLog`] turns a
//!   run's lines into events, and keeps its transcript and its last stderr lines.
//! * **`RUN_DIR/export.json`** ([`export`]): the run's outcome (`finished`, `turn_limit`,
//!   `config_error`, ...), error, usage, cost and steps. vibe 2.26 and 3.x write it on every
//!   exit, 1.x never does.
//! * **The end** ([`outcome`]): what vibe's exit code, with `export.json`, means for the job
//!   ([`decide`]).
//!
//! The behaviour is pinned by tests on byte-exact captures of vibe 3.0.3, 2.26.1 and 1.3.5 in
//! `otter-core/tests/data/vibe-fixtures/`.

pub mod command;
pub mod export;
pub mod log;
pub mod outcome;
pub mod stream;
pub mod version;

pub use command::{AGENTS_FILE, InstructionsVia, Invocation, RunRequest, agents_file};
pub use export::{ExportError, ExportReadError, RunExport, parse_export, read_export};
pub use log::RunLog;
pub use outcome::{Decision, SILENT, Verdict, decide, decide_forced_exit};
pub use stream::{EntryKind, Transcript, assistant_text, entry_kind, is_answer, parse_line};
pub use version::VersionError;
