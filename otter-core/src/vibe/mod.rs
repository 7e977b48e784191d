//! Parsing the output of the Mistral `vibe` CLI run headless.
//!
//! Otter runs `vibe --prompt P --output streaming --trust --auto-approve --output-dir RUN_DIR`.
//! Two things come out of such a run and are parsed here:
//!
//! * **stdout** ([`stream`]): with `--output streaming`, one JSON object a line (NDJSON), one
//!   session-history entry each. Two entry formats exist and both are accepted:
//!   * vibe 2.x and 3.x: `{"type": "message"|"reasoning"|"effect"|"callback", ...}` with
//!     `role` and `content: [{"type": "text", "text": ...}]` on messages, `detail`/`state` on
//!     effects (tool calls). 3.x writes compact JSON, 2.x Python's `", "`/`": "` separators,
//!     and key order differs from run to run;
//!   * vibe 1.x: OpenAI chat messages, `{"role": "system"|"user"|"assistant"|"tool",
//!     "content": "...", "tool_calls": [...]}`.
//!
//!   [`stream::LineSplitter`] turns the raw byte stream into lines, [`stream::parse_line`] and
//!   [`stream::entry_kind`] read one line, and [`stream::Transcript`] follows a whole run and
//!   keeps its final answer.
//! * **`RUN_DIR/export.json`** ([`export`]): the run's outcome (`finished`, `turn_limit`,
//!   `config_error`, ...), error, usage, cost and steps. vibe 2.26 and 3.x write it on every
//!   exit, 1.x never does.
//!
//! The behaviour is pinned by tests on byte-exact captures of vibe 3.0.3, 2.26.1 and 1.3.5 in
//! `otter-core/tests/data/vibe-fixtures/`.

pub mod export;
pub mod stream;

pub use export::{ExportError, ExportReadError, RunExport, parse_export, read_export};
pub use stream::{EntryKind, LineSplitter, Transcript, assistant_text, entry_kind, parse_line};
