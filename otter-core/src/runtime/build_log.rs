//! The build log of a runtime image: the engine's output cut into lines, the tail kept for the
//! HTTP answer, and every line written as an event of the workspace's most recent job.
//!
//! Events belong to jobs (`events.job_id` is required), so a build of a workspace that has a job
//! is recorded on its newest job: `runtime_build_started`, one `output_chunk` per line with
//! `stream: "runtime"`, then `runtime_build_finished`. A frontend watching
//! `/v1/events/stream?workspace_id=…` sees the build live. A workspace without any job records
//! nothing; its build log is only in the answer to `start`/`restart`. Lines are written in
//! batches (one transaction per batch), at most `OTTER_RUNTIME_MAX_LOG_LINES` per build.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::db::events;
use crate::model::{JobId, NewEvent, kinds};

/// Lines of the build log kept for the HTTP answer.
pub const BUILD_LOG_TAIL: usize = 50;

/// Lines written per event batch.
const BATCH_LINES: usize = 200;

/// How long a partial batch waits for more lines before it is written.
const BATCH_WAIT: Duration = Duration::from_millis(100);

/// Cuts a stream of text chunks into lines (a chunk may hold several lines or part of one).
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: String,
}

impl LineSplitter {
    /// Adds a chunk; returns the lines it completed, without their line ends.
    pub(crate) fn push(&mut self, chunk: &str) -> Vec<String> {
        self.partial.push_str(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            lines.push(line.trim_end_matches(['\n', '\r']).to_owned());
        }
        lines
    }

    /// The unterminated rest, if any.
    pub(crate) fn finish(self) -> Option<String> {
        let rest = self.partial.trim_end_matches(['\n', '\r']);
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// A build's log: the tail for the answer, and a channel to the event writer when the
/// workspace has a job.
#[derive(Debug)]
pub(crate) struct BuildLog {
    tail: VecDeque<String>,
    total: usize,
    /// Lines sent as events so far, and the most that may be.
    sent: usize,
    max_events: usize,
    sink: Option<mpsc::Sender<NewEvent>>,
}

impl BuildLog {
    /// A log that sends at most `max_events` lines to `sink`.
    pub(crate) fn new(sink: Option<mpsc::Sender<NewEvent>>, max_events: usize) -> Self {
        Self {
            tail: VecDeque::with_capacity(BUILD_LOG_TAIL),
            total: 0,
            sent: 0,
            max_events,
            sink,
        }
    }

    /// Records one line.
    pub(crate) async fn line(&mut self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        self.total += 1;
        if self.tail.len() == BUILD_LOG_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        if self.sent < self.max_events {
            self.sent += 1;
            self.event(runtime_line(line)).await;
        }
    }

    /// Records a non-line event (build started).
    pub(crate) async fn event(&mut self, event: NewEvent) {
        if let Some(sink) = &self.sink
            && sink.send(event).await.is_err()
        {
            // The writer gave up (the database failed); the build goes on without events.
            self.sink = None;
        }
    }

    /// Ends the log with `finished`, after a line saying how many lines were not recorded.
    pub(crate) async fn finish(&mut self, finished: NewEvent) {
        let dropped = self.total - self.sent;
        if dropped > 0 {
            let note = format!(
                "[otter] {dropped} more build log lines not recorded (OTTER_RUNTIME_MAX_LOG_LINES)"
            );
            self.event(runtime_line(note)).await;
        }
        self.event(finished).await;
        self.sink = None;
    }

    /// The last lines.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// Lines seen in all.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// The last line (the engine's error, usually, when a build fails).
    pub(crate) fn last_line(&self) -> Option<&str> {
        self.tail.back().map(String::as_str)
    }
}

/// The `stream` of build log lines in `output_chunk` payloads.
pub const RUNTIME_STREAM: &str = "runtime";

/// An `output_chunk` of the build log: `{"stream": "runtime", "text": <line>}`, the shape of
/// vibe's lines. (Not an `OutputStream` variant: that enum names the runner's streams and is
/// matched exhaustively by the worker and the command runner.)
pub(crate) fn runtime_line(text: String) -> NewEvent {
    NewEvent::new(
        kinds::OUTPUT_CHUNK,
        json!({ "stream": RUNTIME_STREAM, "text": text }),
    )
}

/// `runtime_build_started`'s event.
pub(crate) fn started_event(image: &str, context_dir: &str) -> NewEvent {
    NewEvent::new(
        kinds::RUNTIME_BUILD_STARTED,
        json!({ "image": image, "context_dir": context_dir }),
    )
}

/// `runtime_build_finished`'s event.
pub(crate) fn finished_event(
    image: &str,
    image_id: Option<&str>,
    error: Option<&str>,
    lines: usize,
) -> NewEvent {
    NewEvent::new(
        kinds::RUNTIME_BUILD_FINISHED,
        json!({ "image": image, "image_id": image_id, "ok": error.is_none(), "error": error, "lines": lines }),
    )
}

/// Writes the events received on `rx` to `job_id`'s log in batches (one transaction each)
/// until the channel closes. Stops early, dropping `rx` so that the sender notices, when the
/// database fails: the build goes on without events.
pub(crate) async fn write_events(pool: PgPool, job_id: JobId, mut rx: mpsc::Receiver<NewEvent>) {
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut batch = Vec::with_capacity(BATCH_LINES);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_LINES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        if let Err(e) = append(&pool, job_id, &batch).await {
            tracing::warn!(%job_id, error = %e, "build log events not written; the build goes on");
            return;
        }
    }
}

async fn append(pool: &PgPool, job_id: JobId, batch: &[NewEvent]) -> Result<(), crate::DbError> {
    let mut tx = pool.begin().await?;
    events::append(&mut tx, job_id, batch).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_joins_partial_chunks_and_drops_line_ends() {
        let mut s = LineSplitter::default();
        assert_eq!(
            s.push("Step 1/2 : FROM scratch\n ---> \n"),
            vec!["Step 1/2 : FROM scratch", " ---> "]
        );
        assert!(s.push("Succ").is_empty());
        assert_eq!(s.push("essfully built\r\nrest"), vec!["Successfully built"]);
        assert_eq!(s.finish().as_deref(), Some("rest"));
        assert_eq!(LineSplitter::default().finish(), None);
    }

    #[tokio::test]
    async fn build_log_keeps_a_bounded_tail() {
        let (tx, mut rx) = mpsc::channel(1000);
        let mut log = BuildLog::new(Some(tx), 5);
        for i in 0..(BUILD_LOG_TAIL + 10) {
            log.line(format!("line {i}")).await;
        }
        log.line("   ".to_owned()).await;
        assert_eq!(log.total(), BUILD_LOG_TAIL + 10);
        let tail = log.tail();
        assert_eq!(tail.len(), BUILD_LOG_TAIL);
        assert_eq!(tail[0], "line 10");
        assert_eq!(
            log.last_line(),
            Some(format!("line {}", BUILD_LOG_TAIL + 9).as_str())
        );
        log.finish(finished_event("img", None, None, log.total()))
            .await;
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        assert_eq!(events.len(), 7, "5 lines, the note, the end");
        assert_eq!(events[4].payload["text"], "line 4");
        assert_eq!(events[4].payload["stream"], "runtime");
        let note = events[5].payload["text"].as_str().unwrap();
        assert!(
            note.contains(&format!("{} more", BUILD_LOG_TAIL + 5)),
            "{note}"
        );
        assert_eq!(events[6].kind, kinds::RUNTIME_BUILD_FINISHED);
    }
}
