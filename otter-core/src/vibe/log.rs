//! A vibe run's output on its way to the event log ([`RunLog`]): each stdout line parsed, its
//! entry stored beside the raw text and followed to the run's final answer ([`Transcript`]),
//! the last stderr lines kept to explain a failure; and, once vibe has ended, the job's output
//! row and the reason for a failure, from those and `export.json`.
//!
//! The worker's sink feeds it through the event batcher ([`crate::output::batch`]), so parsing
//! happens beside the storing, never in the way of vibe's pipes.

use std::collections::VecDeque;

use tokio::sync::{OwnedSemaphorePermit, watch};

use super::export::RunExport;
use super::stream::{Transcript, is_answer, parse_line};
use crate::model::{JobOutput, NewEvent, OutputStream};
use crate::output::{Encode, Item};

/// Lines of stderr kept for the error message.
pub const STDERR_TAIL: usize = 5;

/// What a run's output told (see the module docs).
#[derive(Debug, Default)]
pub struct RunLog {
    transcript: Transcript,
    stderr_tail: VecDeque<String>,
    /// Told whether vibe's last stdout line is an answer ([`is_answer`]), if anyone listens.
    answered: Option<watch::Sender<bool>>,
}

impl RunLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log that also tells `answered` whether vibe's last stdout line is an answer: true
    /// after an assistant message with text and no tool call, false again after any other
    /// stdout line (the exit watch of the worker, `OTTER_EXIT_GRACE`).
    pub fn watching_answers(answered: watch::Sender<bool>) -> Self {
        Self {
            answered: Some(answered),
            ..Self::default()
        }
    }

    /// The `output_chunk` of one line, noting what it tells.
    pub fn line(&mut self, stream: OutputStream, text: String) -> NewEvent {
        let entry = match stream {
            OutputStream::Stdout => {
                let entry = parse_line(&text);
                if let Some(answered) = &self.answered {
                    answered.send_replace(entry.as_ref().is_some_and(is_answer));
                }
                entry
            }
            OutputStream::Stderr => {
                if self.stderr_tail.len() == STDERR_TAIL {
                    self.stderr_tail.pop_front();
                }
                self.stderr_tail.push_back(text.clone());
                None
            }
            OutputStream::Setup | OutputStream::Runtime => None,
        };
        if let Some(entry) = &entry {
            self.transcript.observe(entry);
        }
        NewEvent::output(stream, text, entry)
    }

    /// vibe's transcript (its stdout entries).
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// The last [`STDERR_TAIL`] lines of vibe's stderr, oldest first.
    pub fn stderr_tail(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.stderr_tail.iter().map(String::as_str)
    }

    /// Why a failed run failed, in vibe's words: `export.json`'s error, else vibe's last
    /// `Error:` line on stderr.
    pub fn failure_reason(&self, export: Option<&RunExport>) -> Option<String> {
        export
            .and_then(|e| e.error.as_ref())
            .and_then(|e| e.message.clone())
            .or_else(|| {
                self.stderr_tail()
                    .rev()
                    .find(|l| l.starts_with("Error:"))
                    .map(str::to_owned)
            })
    }

    /// The job's output row: the final answer from the transcript, the rest from `export.json`.
    pub fn output(&self, export: Option<&RunExport>) -> JobOutput {
        JobOutput {
            final_text: self.transcript.final_text().map(str::to_owned),
            usage: export.and_then(|e| e.usage.clone()),
            cost: export.and_then(|e| e.cost_usd),
            outcome: export.and_then(|e| e.outcome.clone()),
            stop_reason: export.and_then(|e| e.stop_reason.clone()),
            export: export.and_then(|e| serde_json::to_value(e).ok()),
            model: export.and_then(|e| e.model.clone()),
            // The change set's summary is stored apart (`job_checkpoints`), joined when read.
            files_changed: None,
            additions: None,
            deletions: None,
            // Set by the worker, which knows whether it ended vibe.
            forced_exit: false,
        }
    }
}

impl Encode for RunLog {
    fn encode(&mut self, item: Item) -> (NewEvent, Option<OwnedSemaphorePermit>) {
        match item {
            Item::Event(event) => (event, None),
            Item::Line(line) => (self.line(line.stream, line.text), line.permit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vibe::export::ExportError;

    #[test]
    fn answers_are_told_until_vibe_prints_more() {
        let (tx, rx) = watch::channel(false);
        let mut log = RunLog::watching_answers(tx);
        let answer = r#"{"type":"message","role":"assistant","content":[{"type":"text","text":"Next I will call bash."}]}"#;
        log.line(OutputStream::Stdout, answer.to_owned());
        assert!(*rx.borrow());
        log.line(OutputStream::Stderr, "a warning".to_owned());
        assert!(*rx.borrow(), "stderr does not tell");
        log.line(OutputStream::Stdout, r#"{"type":"effect"}"#.to_owned());
        assert!(!*rx.borrow());
        log.line(OutputStream::Stdout, answer.to_owned());
        log.line(OutputStream::Stdout, "not json".to_owned());
        assert!(!*rx.borrow());
    }

    #[test]
    fn stdout_entries_are_parsed_and_followed_and_stderr_is_kept_short() {
        let mut log = RunLog::new();
        let answer =
            r#"{"type":"message","role":"assistant","content":[{"type":"text","text":"Done."}]}"#;
        let event = log.line(OutputStream::Stdout, answer.to_owned());
        assert_eq!(event.payload["entry"]["role"], "assistant");
        assert_eq!(event.payload["text"], answer);
        let raw = log.line(OutputStream::Stdout, "not json".to_owned());
        assert!(
            raw.payload.get("entry").is_none(),
            "raw text is kept as it is"
        );
        for i in 0..8 {
            log.line(OutputStream::Stderr, format!("warning {i}"));
        }
        log.line(
            OutputStream::Setup,
            "Error: of setup.sh, not vibe".to_owned(),
        );
        assert_eq!(log.transcript().final_text(), Some("Done."));
        let tail: Vec<&str> = log.stderr_tail().collect();
        assert_eq!(
            tail,
            [
                "warning 3",
                "warning 4",
                "warning 5",
                "warning 6",
                "warning 7"
            ]
        );
        assert_eq!(log.output(None).final_text.as_deref(), Some("Done."));
    }

    #[test]
    fn a_failure_is_explained_by_export_json_else_by_vibes_last_error_line() {
        let mut log = RunLog::new();
        assert_eq!(log.failure_reason(None), None);
        log.line(OutputStream::Stderr, "Error: first".to_owned());
        log.line(OutputStream::Stderr, "Error: no API key".to_owned());
        log.line(OutputStream::Stderr, "bye".to_owned());
        assert_eq!(
            log.failure_reason(None).as_deref(),
            Some("Error: no API key")
        );
        let export = RunExport {
            error: Some(ExportError {
                message: Some("MISTRAL_API_KEY is not set".to_owned()),
                ..ExportError::default()
            }),
            outcome: Some("config_error".to_owned()),
            ..RunExport::default()
        };
        assert_eq!(
            log.failure_reason(Some(&export)).as_deref(),
            Some("MISTRAL_API_KEY is not set")
        );
        assert_eq!(
            log.output(Some(&export)).outcome.as_deref(),
            Some("config_error")
        );
    }
}
