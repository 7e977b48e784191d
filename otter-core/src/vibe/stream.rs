//! vibe's stdout: parsing and classifying history entries, and following a run to its final
//! answer (the lines come from [`crate::output::LineSplitter`]).
//!
//! With `--output streaming` vibe prints one history entry a line, each once, when it is
//! complete. The entry formats (see the module doc of [`crate::vibe`]):
//!
//! | vibe | user / assistant text | tool call | tool result |
//! | --- | --- | --- | --- |
//! | 2.x, 3.x | `{"type":"message","role":..,"content":[{"type":"text","text":..}]}` | `{"type":"effect","detail":{"kind":..,"toolName":..},"state":{"status":..}}` | inside the effect's `state` |
//! | 1.x | `{"role":..,"content":"..."}` | `tool_calls` of a `role: "assistant"` message | `{"role":"tool","tool_call_id":..}` |
//!
//! 3.x also prints `reasoning` entries (`text`) and `callback` entries (approval requests and
//! their answers). A run that stops on a limit or an error prints no final assistant message in
//! 3.x; 2.x's `--legacy-harness` and 1.x may report the stop as a synthetic text
//! `<vibe_stop_event>...</vibe_stop_event>` (see [`stop_event`]).

use serde_json::Value;

/// What one stdout line of vibe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A user message (the prompt): 3.x `type: "message", role: "user"`, 1.x `role: "user"`.
    UserMessage,
    /// An assistant message: text and, in 1.x, tool calls.
    AssistantMessage,
    /// The model's reasoning (3.x `type: "reasoning"`).
    Reasoning,
    /// A tool call with its result (2.x/3.x `type: "effect"`).
    Effect,
    /// A callback, e.g. an approval request and its answer (3.x `type: "callback"`).
    Callback,
    /// A system message (1.x `role: "system"`, vibe's system prompt).
    SystemMessage,
    /// A tool result (1.x `role: "tool"`).
    ToolResult,
    /// Anything else: an unknown `type` or `role`, or no JSON object at all.
    Other,
}

impl EntryKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::UserMessage,
        Self::AssistantMessage,
        Self::Reasoning,
        Self::Effect,
        Self::Callback,
        Self::SystemMessage,
        Self::ToolResult,
        Self::Other,
    ];

    /// A stable snake_case name, for logs and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserMessage => "user_message",
            Self::AssistantMessage => "assistant_message",
            Self::Reasoning => "reasoning",
            Self::Effect => "effect",
            Self::Callback => "callback",
            Self::SystemMessage => "system_message",
            Self::ToolResult => "tool_result",
            Self::Other => "other",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::UserMessage => 0,
            Self::AssistantMessage => 1,
            Self::Reasoning => 2,
            Self::Effect => 3,
            Self::Callback => 4,
            Self::SystemMessage => 5,
            Self::ToolResult => 6,
            Self::Other => 7,
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse one stdout line (without its trailing newline). Returns `Some(value)` when the line is
/// a JSON object (any format, any key order, surrounding JSON whitespace allowed), `None`
/// otherwise (non-JSON text, arrays, scalars, empty lines). Never panics.
///
/// Note that `--output json` prints one pretty-printed array over many lines: none of its lines
/// is an object on its own, so they all give `None`.
pub fn parse_line(line: &str) -> Option<Value> {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let body = line.trim_start_matches([' ', '\t', '\r', '\n']);
    if !body.starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(body) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    }
}

/// Classify a parsed entry, accepting both the 3.x/2.x entry format (`type`, then `role` for
/// messages) and the 1.x OpenAI-message format (`role` only).
pub fn entry_kind(entry: &Value) -> EntryKind {
    let Some(object) = entry.as_object() else {
        return EntryKind::Other;
    };
    match object.get("type").and_then(Value::as_str) {
        Some("message") | None => match object.get("role").and_then(Value::as_str) {
            Some("user") => EntryKind::UserMessage,
            Some("assistant") => EntryKind::AssistantMessage,
            Some("system") => EntryKind::SystemMessage,
            Some("tool") => EntryKind::ToolResult,
            _ => EntryKind::Other,
        },
        Some("reasoning") => EntryKind::Reasoning,
        Some("effect") => EntryKind::Effect,
        Some("callback") => EntryKind::Callback,
        Some(_) => EntryKind::Other,
    }
}

/// The text of a message entry of any role, if it has non-empty text: a `content` string (1.x),
/// or the concatenation of the `text` of the `content` items of type `"text"` (2.x/3.x).
pub fn message_text(entry: &Value) -> Option<String> {
    let text = match entry.get("content")? {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .filter(|item| item.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|item| item.get("text").and_then(Value::as_str))
            .collect(),
        _ => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

/// The text of an assistant message entry, if it is one and has non-empty text (3.x:
/// concatenation of the `content` items of type "text"; 1.x: the `content` string of a
/// role=assistant message without tool_calls, or with non-empty content).
///
/// Whitespace-only text counts as empty. A synthetic `<vibe_stop_event>` text is returned as
/// is; [`Transcript`] does not take it as the final answer.
pub fn assistant_text(entry: &Value) -> Option<String> {
    if entry_kind(entry) != EntryKind::AssistantMessage {
        return None;
    }
    message_text(entry)
}

/// Whether `entry` is an answer that may be vibe's last: an assistant message with text and no
/// tool call (1.x lists its calls in `tool_calls`; 3.x prints them as effects after the text,
/// so a 3.x answer may still be followed by more work: only what comes next tells).
pub fn is_answer(entry: &Value) -> bool {
    let calls = entry
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty());
    !calls && assistant_text(entry).is_some()
}

/// The message of a `<vibe_stop_event>MESSAGE</vibe_stop_event>` text, trimmed.
///
/// vibe 2.x with `--legacy-harness` prints this as an assistant message when a limit stops the
/// run (`Turn limit of 2 reached`), and vibe 1.x prints it on stderr
/// (`Price limit exceeded: $0.0039 > $0.00`). vibe 3.x prints `Stopped: <outcome>` on stderr
/// instead and writes the outcome to `export.json`.
pub fn stop_event(text: &str) -> Option<&str> {
    text.trim()
        .strip_prefix("<vibe_stop_event>")?
        .strip_suffix("</vibe_stop_event>")
        .map(str::trim)
}

/// `state.status` of an effect entry: `completed`, `failed`, `cancelled`, ...
pub fn effect_status(entry: &Value) -> Option<&str> {
    if entry_kind(entry) != EntryKind::Effect {
        return None;
    }
    entry.get("state")?.get("status")?.as_str()
}

/// `detail.toolName` of an effect entry (3.x: e.g. `file_system.bash`; 2.x legacy harness:
/// `bash`), falling back to its `title`.
pub fn effect_tool_name(entry: &Value) -> Option<&str> {
    if entry_kind(entry) != EntryKind::Effect {
        return None;
    }
    entry
        .get("detail")
        .and_then(|detail| detail.get("toolName"))
        .and_then(Value::as_str)
        .or_else(|| entry.get("title").and_then(Value::as_str))
}

/// `detail.kind` of an effect entry: `shell`, `file_write`, ...
pub fn effect_kind(entry: &Value) -> Option<&str> {
    if entry_kind(entry) != EntryKind::Effect {
        return None;
    }
    entry.get("detail")?.get("kind")?.as_str()
}

/// Tracks a run's output line by line and remembers the last assistant text (the run's final
/// answer).
///
/// Effects are counted per entry: vibe prints each entry once, when it is complete, and effect
/// ids are not unique across turns (3.x derives them from the model's tool call id), so no
/// de-duplication is attempted. For 1.x output, each item of an assistant message's
/// `tool_calls` counts as one effect; 1.x does not say whether a tool failed, so its failed and
/// cancelled counts stay 0.
#[derive(Debug, Default)]
pub struct Transcript {
    entries: usize,
    by_kind: [usize; 8],
    effects: usize,
    failed_effects: usize,
    cancelled_effects: usize,
    final_text: Option<String>,
    stop_event: Option<String>,
}

impl Transcript {
    /// An empty transcript.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one parsed entry.
    pub fn observe(&mut self, entry: &Value) {
        let kind = entry_kind(entry);
        self.entries += 1;
        self.by_kind[kind.index()] += 1;
        match kind {
            EntryKind::Effect => {
                self.effects += 1;
                match effect_status(entry) {
                    Some("failed") => self.failed_effects += 1,
                    Some("cancelled") => self.cancelled_effects += 1,
                    _ => {}
                }
            }
            EntryKind::AssistantMessage => {
                if let Some(Value::Array(calls)) = entry.get("tool_calls") {
                    self.effects += calls.len();
                }
                if let Some(text) = assistant_text(entry) {
                    match stop_event(&text) {
                        Some(message) => self.stop_event = Some(message.to_owned()),
                        None => self.final_text = Some(text),
                    }
                }
            }
            _ => {}
        }
    }

    /// Parse one stdout line with [`parse_line`] and feed it if it is an entry. Returns whether
    /// it was one.
    pub fn observe_line(&mut self, line: &str) -> bool {
        match parse_line(line) {
            Some(entry) => {
                self.observe(&entry);
                true
            }
            None => false,
        }
    }

    /// The last assistant text seen, if any (not counting `<vibe_stop_event>` texts).
    ///
    /// This is the text of the last assistant message, even if tool calls followed it (e.g. a
    /// preamble such as "Next I will call bash." of a run stopped by a limit); check the run's
    /// outcome in `export.json` to know whether the run finished.
    pub fn final_text(&self) -> Option<&str> {
        self.final_text.as_deref()
    }

    /// The message of the last `<vibe_stop_event>` assistant text seen, if any (2.x legacy
    /// harness: `Turn limit of 2 reached`).
    pub fn stop_event(&self) -> Option<&str> {
        self.stop_event.as_deref()
    }

    /// Number of entries observed.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Number of entries of one kind observed.
    pub fn count(&self, kind: EntryKind) -> usize {
        self.by_kind[kind.index()]
    }

    /// Number of effects (tool calls) observed.
    pub fn effects(&self) -> usize {
        self.effects
    }

    /// Number of effects whose `state.status` is `failed` (including tools denied approval).
    pub fn failed_effects(&self) -> usize {
        self.failed_effects
    }

    /// Number of effects whose `state.status` is `cancelled` (e.g. interrupted by a limit).
    pub fn cancelled_effects(&self) -> usize {
        self.cancelled_effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_assistant_texts_without_tool_calls() {
        assert!(is_answer(&json!({"type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "Done."}]})));
        assert!(is_answer(
            &json!({"role": "assistant", "content": "Done.", "tool_calls": []})
        ));
        assert!(!is_answer(
            &json!({"role": "assistant", "content": "Calling.",
            "tool_calls": [{"id": "c1"}]})
        ));
        assert!(!is_answer(&json!({"role": "assistant", "content": "  "})));
        assert!(!is_answer(&json!({"role": "user", "content": "Do it."})));
        assert!(!is_answer(&json!({"type": "effect"})));
    }

    #[test]
    fn parse_line_accepts_objects_only() {
        assert!(parse_line(r#"{"type":"message"}"#).is_some());
        assert!(parse_line(r#"  {"role": "user", "content": "x"}  "#).is_some());
        assert!(parse_line("{\"a\":1}\r").is_some());
        assert!(parse_line("\u{feff}{}").is_some());
        for line in [
            "",
            "   ",
            "[",
            "]",
            "  {",
            "  },",
            "[]",
            "[{}]",
            "1",
            "\"x\"",
            "null",
            "true",
            "{",
            "{\"a\":",
            "hello",
            "{} {}",
            "Stopped: turn_limit",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        // Deep nesting hits serde_json's recursion limit instead of overflowing the stack.
        let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert_eq!(parse_line(&deep), None);
    }

    #[test]
    fn kinds_of_both_formats() {
        let cases = [
            (
                json!({"type": "message", "role": "user"}),
                EntryKind::UserMessage,
            ),
            (
                json!({"role": "assistant", "type": "message"}),
                EntryKind::AssistantMessage,
            ),
            (
                json!({"type": "reasoning", "text": "hm"}),
                EntryKind::Reasoning,
            ),
            (json!({"type": "effect"}), EntryKind::Effect),
            (json!({"type": "callback"}), EntryKind::Callback),
            (
                json!({"type": "message", "role": "alien"}),
                EntryKind::Other,
            ),
            (json!({"type": "novel", "role": "user"}), EntryKind::Other),
            (
                json!({"role": "system", "content": "s"}),
                EntryKind::SystemMessage,
            ),
            (
                json!({"role": "user", "content": "u"}),
                EntryKind::UserMessage,
            ),
            (
                json!({"role": "assistant", "content": ""}),
                EntryKind::AssistantMessage,
            ),
            (
                json!({"role": "tool", "content": "t"}),
                EntryKind::ToolResult,
            ),
            (json!({"role": 3}), EntryKind::Other),
            (json!({}), EntryKind::Other),
            (json!([1]), EntryKind::Other),
            (json!("message"), EntryKind::Other),
        ];
        for (entry, kind) in cases {
            assert_eq!(entry_kind(&entry), kind, "{entry}");
        }
    }

    #[test]
    fn assistant_text_of_both_formats() {
        let v3 = json!({"type": "message", "role": "assistant", "content": [
            {"type": "text", "text": "Hello "}, {"type": "image", "url": "x"}, {"type": "text", "text": "world"}
        ]});
        assert_eq!(assistant_text(&v3).as_deref(), Some("Hello world"));
        let empty = json!({"type": "message", "role": "assistant", "content": []});
        assert_eq!(assistant_text(&empty), None);
        let user =
            json!({"type": "message", "role": "user", "content": [{"type": "text", "text": "hi"}]});
        assert_eq!(assistant_text(&user), None);
        assert_eq!(message_text(&user).as_deref(), Some("hi"));

        let v1 = json!({"role": "assistant", "content": "Done.", "tool_calls": null});
        assert_eq!(assistant_text(&v1).as_deref(), Some("Done."));
        let v1_calls = json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]});
        assert_eq!(assistant_text(&v1_calls), None);
        let v1_null = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c"}]});
        assert_eq!(assistant_text(&v1_null), None);
        let v1_both =
            json!({"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "c"}]});
        assert_eq!(assistant_text(&v1_both).as_deref(), Some("Let me look."));
        let blank = json!({"role": "assistant", "content": " \n"});
        assert_eq!(assistant_text(&blank), None);
    }

    #[test]
    fn stop_events() {
        assert_eq!(
            stop_event("<vibe_stop_event>Turn limit of 2 reached</vibe_stop_event>"),
            Some("Turn limit of 2 reached")
        );
        assert_eq!(
            stop_event(" <vibe_stop_event> x </vibe_stop_event>\n"),
            Some("x")
        );
        assert_eq!(stop_event("Turn limit of 2 reached"), None);
        assert_eq!(stop_event("<vibe_stop_event>unterminated"), None);
    }

    #[test]
    fn transcript_counts_and_final_text() {
        let mut t = Transcript::new();
        for entry in [
            json!({"type": "message", "role": "user", "content": [{"type": "text", "text": "go"}]}),
            json!({"type": "message", "role": "assistant", "content": [{"type": "text", "text": "first"}]}),
            json!({"type": "effect", "state": {"status": "failed"}}),
            json!({"type": "effect", "state": {"status": "cancelled"}}),
            json!({"type": "effect", "state": {"status": "completed"}}),
            json!({"type": "message", "role": "assistant", "content": [{"type": "text", "text": "last"}]}),
            json!({"type": "message", "role": "assistant", "content": []}),
            json!({"type": "message", "role": "assistant", "content": [
                {"type": "text", "text": "<vibe_stop_event>Turn limit of 2 reached</vibe_stop_event>"}
            ]}),
        ] {
            t.observe(&entry);
        }
        assert_eq!(t.entries(), 8);
        assert_eq!(t.count(EntryKind::AssistantMessage), 4);
        assert_eq!(t.effects(), 3);
        assert_eq!(t.failed_effects(), 1);
        assert_eq!(t.cancelled_effects(), 1);
        assert_eq!(t.final_text(), Some("last"));
        assert_eq!(t.stop_event(), Some("Turn limit of 2 reached"));

        let mut v1 = Transcript::default();
        assert!(v1.observe_line(
            r#"{"role": "assistant", "content": "", "tool_calls": [{"id": "a"}, {"id": "b"}]}"#
        ));
        assert!(!v1.observe_line("not json"));
        assert_eq!((v1.entries(), v1.effects(), v1.final_text()), (1, 2, None));
    }
}
