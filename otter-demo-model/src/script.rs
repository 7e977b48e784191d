//! The one conversation the demo model plays, whatever it is asked. After each user message it
//! answers, in turn:
//!
//! 1. scripted reasoning ([`REASONING`], streamed as `reasoning_content`, which vibe shows as a
//!    `reasoning` entry) and a `write_file` tool call that writes [`FILE_NAME`];
//! 2. once that tool's result is in, a `bash` tool call running [`COMMAND`];
//! 3. once that one's is in too, the final answer [`FINAL_TEXT`].
//!
//! Every text it writes says it is the Otter demo model and not a real model, so that nothing it
//! leaves in a workspace or a job's history can be taken for a real model's work. A step whose
//! tool the request does not offer is skipped (a plain chat client gets the final answer at
//! once).

use serde_json::{Value, json};

/// The model the demo reports in every answer: `otter-demo`.
pub const MODEL: &str = otter_core::demo::MODEL;

/// The file the first tool call writes, relative to the workspace.
pub const FILE_NAME: &str = "otter-demo.txt";

/// What it writes there.
pub const FILE_CONTENT: &str = "Written by the Otter demo model, not a real model.\n";

/// The command of the second tool call.
pub const COMMAND: &str = "cat otter-demo.txt && echo done";

/// The reasoning streamed before the first tool call.
pub const REASONING: &str = "Otter demo model, not a real model: this reasoning is scripted. \
    I will write otter-demo.txt, then show it with cat.";

/// The final answer.
pub const FINAL_TEXT: &str = "Otter demo model, not a real model: I wrote `otter-demo.txt` and \
    ran `cat otter-demo.txt` in your workspace. Nothing here came from a language model; give \
    Otter a real model (and turn OTTER_DEMO off) for real answers.";

/// One answer of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Reasoning streamed before the reply, if any.
    pub reasoning: Option<&'static str>,
    /// The reply itself.
    pub reply: Reply,
}

/// What an answer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Calls one tool.
    ToolCall {
        /// The call's id, which the tool result names: unique in the conversation (a resumed
        /// session sends the earlier turns' calls back, and vibe refuses an id it has seen).
        id: String,
        /// The tool (`write_file` or `bash`, as vibe names them).
        name: &'static str,
        /// Its arguments, a JSON object as a string.
        arguments: String,
    },
    /// Ends the turn with this text.
    Text(&'static str),
}

impl Reply {
    /// A short name for logs: the tool's name, or `text`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ToolCall { name, .. } => name,
            Self::Text(_) => "text",
        }
    }
}

/// The answer to a conversation (`messages`, OpenAI-style, oldest first) whose request offers
/// `tools` (the request's `tools` array; empty when it offers none).
pub fn answer(messages: &[Value], tools: &[Value]) -> Answer {
    let offered = |name: &str| {
        tools
            .iter()
            .any(|t| t["function"]["name"] == name || t["name"] == name)
    };
    // The turn's number: user messages so far (1 for a first prompt).
    let turn = messages.iter().filter(|m| m["role"] == "user").count();
    let mut steps = Vec::with_capacity(3);
    if offered("write_file") {
        steps.push(Reply::ToolCall {
            id: format!("call_otter_demo_{turn}_1"),
            name: "write_file",
            arguments: json!({ "path": FILE_NAME, "content": FILE_CONTENT }).to_string(),
        });
    }
    if offered("bash") {
        steps.push(Reply::ToolCall {
            id: format!("call_otter_demo_{turn}_2"),
            name: "bash",
            arguments: json!({ "command": COMMAND }).to_string(),
        });
    }
    steps.push(Reply::Text(FINAL_TEXT));

    // The script starts again at each user message: count the tool results since the last one.
    let turn_start = messages
        .iter()
        .rposition(|m| m["role"] == "user")
        .map_or(0, |i| i + 1);
    let done = messages[turn_start..]
        .iter()
        .filter(|m| m["role"] == "tool")
        .count();
    let step = done.min(steps.len() - 1);
    Answer {
        reasoning: (done == 0).then_some(REASONING),
        reply: steps.swap_remove(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vibe_tools() -> Vec<Value> {
        ["read_file", "write_file", "bash", "todo"]
            .iter()
            .map(|name| json!({ "type": "function", "function": { "name": name } }))
            .collect()
    }

    fn tool_result() -> Value {
        json!({ "role": "tool", "content": "ok" })
    }

    #[test]
    fn the_script_writes_a_file_runs_a_command_and_answers() {
        let tools = vibe_tools();
        let mut messages = vec![
            json!({ "role": "system", "content": "s" }),
            json!({ "role": "user", "content": "anything" }),
        ];
        let first = answer(&messages, &tools);
        assert_eq!(first.reasoning, Some(REASONING));
        assert_eq!(first.reply.label(), "write_file");
        let Reply::ToolCall { arguments, .. } = &first.reply else {
            panic!("{first:?}")
        };
        let arguments: Value = serde_json::from_str(arguments).expect("JSON arguments");
        assert_eq!(
            arguments,
            json!({ "path": FILE_NAME, "content": FILE_CONTENT })
        );

        messages.extend([json!({ "role": "assistant" }), tool_result()]);
        let second = answer(&messages, &tools);
        assert_eq!((second.reasoning, second.reply.label()), (None, "bash"));

        messages.extend([json!({ "role": "assistant" }), tool_result()]);
        let third = answer(&messages, &tools);
        assert_eq!(third.reply, Reply::Text(FINAL_TEXT));

        // More tool results than the script has steps: still the final answer.
        messages.push(tool_result());
        assert_eq!(answer(&messages, &tools).reply, Reply::Text(FINAL_TEXT));

        // A new user message starts the script again.
        messages.push(json!({ "role": "user", "content": "again" }));
        assert_eq!(answer(&messages, &tools).reply.label(), "write_file");
    }

    #[test]
    fn tools_that_are_not_offered_are_skipped() {
        let messages = [json!({ "role": "user", "content": "hi" })];
        let plain = answer(&messages, &[]);
        assert_eq!(plain.reasoning, Some(REASONING));
        assert_eq!(plain.reply, Reply::Text(FINAL_TEXT));
        // vibe's request summary names tools flat; both spellings count.
        let bash_only = [json!({ "name": "bash" })];
        assert_eq!(answer(&messages, &bash_only).reply.label(), "bash");
    }

    #[test]
    fn everything_it_writes_says_it_is_a_demo() {
        for text in [FILE_CONTENT, REASONING, FINAL_TEXT] {
            assert!(
                text.contains("Otter demo model, not a real model"),
                "{text}"
            );
        }
    }
}
