//! The session: entries on stdout, tool calls executed in the working directory, usage.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rand::Rng as _;

use crate::cli::OutputMode;
use crate::export::{End, SessionSummary, cost_usd};
use crate::json::{J, obj};
use crate::out::{Out, err_line, now_ms};
use crate::scenario::{Failure, Knobs, Step, Tool, script};
use crate::stop::{Stop, Waiter};
use crate::{PROVIDER_KEY_VAR, PROVIDER_URL};

const DENIED_MESSAGE: &str = "Tool execution denied by approval callback";
const INTERRUPT_MESSAGE: &str = "client interrupt";
const APPROVAL_CHOICES: [&str; 5] = [
    "approve",
    "approve_for_session",
    "approve_permanently",
    "deny",
    "cancel_turn",
];

pub(crate) struct Session {
    pub(crate) out: Out,
    pub(crate) mode: OutputMode,
    pub(crate) session_id: String,
    pub(crate) turn_id: String,
    pub(crate) user_entry_id: String,
    pub(crate) cwd: PathBuf,
    pub(crate) auto_approve: bool,
    /// Every entry of the session (with `-c`, the earlier turns' too), for `--output json`
    /// and the next `-c`.
    pub(crate) entries: Vec<J>,
    /// Whether `entries` is kept in every output mode (not for `flood`'s thousands of entries,
    /// which only `--output json` keeps).
    pub(crate) keep_entries: bool,
    pub(crate) last_text: Option<String>,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) steps: u64,
    pub(crate) context_chars: u64,
    pub(crate) waiter: Waiter,
}

/// Effective limits (the scenario may give a default the command line did not).
pub(crate) struct Limits {
    pub(crate) max_turns: Option<u64>,
    pub(crate) max_price: Option<f64>,
    pub(crate) max_tokens: Option<u64>,
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
        if self.mode == OutputMode::Streaming {
            self.out.line(entry.to_compact().as_bytes());
        }
        if self.mode == OutputMode::Json || self.keep_entries {
            self.entries.push(entry);
        }
    }

    pub(crate) fn emit_message(&mut self, id: &str, at: i64, role: &str, text: &str) {
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
    pub(crate) fn drive(&mut self, knobs: &Knobs, limits: &Limits) -> End {
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
                        code: "backend_error",
                    };
                }
                // What vibe 3.0.3 ends with once its own retries of a 429 are spent (about
                // 280 s of them): otter-core/tests/data/vibe-captures, `rate-limit`.
                Some(Failure::RateLimit) => {
                    return End::Infra {
                        message: format!(
                            "Client error '429 Too Many Requests' for url '{PROVIDER_URL}'\n\
                             For more information check: \
                             https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/429: \
                             Rate limit exceeded for the mock key"
                        ),
                        code: "rate_limit",
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
    pub(crate) fn print_final(&mut self) {
        match self.mode {
            OutputMode::Streaming => {}
            OutputMode::Json => {
                let all = J::Arr(std::mem::take(&mut self.entries));
                let mut text = all.to_pretty();
                text.push('\n');
                self.out.text(&text);
                if let J::Arr(entries) = all {
                    self.entries = entries;
                }
            }
            OutputMode::Text => {
                if let Some(last) = &self.last_text {
                    let text = format!("{last}\n");
                    self.out.text(&text);
                }
            }
        }
    }

    pub(crate) fn summary(&self) -> SessionSummary {
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
