//! The build log of a runtime image: the engine's output cut into lines, the tail kept for the
//! HTTP answer, and every line written as an event of the workspace's most recent job.
//!
//! Events belong to jobs (`events.job_id` is required), so a build of a workspace that has a job
//! is recorded on its newest job: `runtime_build_started`, one `output_chunk` per line with
//! `stream: "runtime"`, then `runtime_build_finished`. A frontend watching
//! `/v1/events/stream?workspace_id=…` sees the build live. A workspace without any job records
//! nothing; its build log is only in the answer to `start`/`restart`. Lines are written by the
//! event batcher ([`crate::output::batch`], [`BatchPolicy::BUILD_LOG`]: one transaction a
//! batch), at most `OTTER_RUNTIME_MAX_LOG_LINES` per build.

use std::collections::VecDeque;

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::db::events::{self, EncodedEvent};
use crate::model::{JobId, NewEvent, OutputStream, kinds};
use crate::output::{BatchPolicy, Item, Plain, Store, batch};
use crate::runner::Line;

/// Lines of the build log kept for the HTTP answer.
pub const BUILD_LOG_TAIL: usize = 50;

/// A build's log: the tail for the answer, and a channel to the event writer when the
/// workspace has a job.
#[derive(Debug)]
pub(crate) struct BuildLog {
    tail: VecDeque<String>,
    total: usize,
    /// Lines sent as events so far, and the most that may be.
    sent: usize,
    max_events: usize,
    sink: Option<mpsc::Sender<Item>>,
}

impl BuildLog {
    /// A log that sends at most `max_events` lines to `sink`.
    pub(crate) fn new(sink: Option<mpsc::Sender<Item>>, max_events: usize) -> Self {
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
            self.send(runtime_line(line)).await;
        }
    }

    /// Records a non-line event (build started).
    pub(crate) async fn event(&mut self, event: NewEvent) {
        self.send(Item::Event(event)).await;
    }

    async fn send(&mut self, item: Item) {
        if let Some(sink) = &self.sink
            && sink.send(item).await.is_err()
        {
            // The writer is gone; the build goes on without events.
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
            self.send(runtime_line(note)).await;
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

/// A line of the build log: an `output_chunk` of stream [`OutputStream::Runtime`], the shape of
/// vibe's lines.
fn runtime_line(text: String) -> Item {
    Item::Line(Line {
        stream: OutputStream::Runtime,
        text,
        permit: None,
    })
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

/// Writes the events received on `rx` to `job_id`'s log in batches (one transaction each,
/// [`BatchPolicy::BUILD_LOG`]) until the channel closes. When the database fails, the rest of
/// the log is dropped: the build goes on without events.
pub(crate) async fn write_events(pool: PgPool, job_id: JobId, rx: mpsc::Receiver<Item>) {
    batch::run(rx, Plain, JobLog { pool, job_id }, BatchPolicy::BUILD_LOG).await;
}

/// Stores batches in a job's log, with no lease: the build is not the job's run.
struct JobLog {
    pool: PgPool,
    job_id: JobId,
}

impl Store for JobLog {
    async fn store(&mut self, _no: i64, batch: &[EncodedEvent]) -> bool {
        let stored = async {
            let mut tx = self.pool.begin().await?;
            events::append_encoded(&mut tx, self.job_id, batch).await?;
            tx.commit().await?;
            Ok::<_, crate::DbError>(())
        };
        match stored.await {
            Ok(()) => true,
            Err(e) => {
                let job_id = self.job_id;
                tracing::warn!(%job_id, error = %e, "build log events not written; the build goes on");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Encode;

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
        while let Some(item) = rx.recv().await {
            events.push(Plain.encode(item).0);
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
