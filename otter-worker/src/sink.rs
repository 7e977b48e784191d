//! The event sink of one run: receives output lines and lifecycle events in order, and writes
//! them to PostgreSQL in batches (whatever arrived while the previous write was in flight goes
//! in the next one), fenced by the run's lease. The process's pipes never wait on it: the
//! runner reads them into the channel as fast as the child writes, within an output budget
//! (see [`OUTPUT_BUDGET_BYTES`]); past it, lines wait in a spill file on disk (see
//! [`SPILL_MAX_BYTES`]) until the sink catches up.

use std::time::Duration;

use otter_core::db::jobs::{self, Lease};
use otter_core::model::{NewEvent, OutputStream};
use otter_core::runner::Line;
use otter_core::vibe::{Transcript, parse_line};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Bytes of a run's output that may wait for the database at once: far more than a healthy
/// database ever lets pile up, small enough that an outage cannot exhaust memory. Past it the
/// child blocks on its own writes until the database is back; nothing is dropped.
pub(crate) const OUTPUT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of a run's output that may wait on disk, in the run's directory, past
/// [`OUTPUT_BUDGET_BYTES`] (see `otter_core::runner::SpillSpec`): the child keeps writing at full
/// speed while the database catches up; past this much it blocks, as above.
pub(crate) const SPILL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Most events written in one transaction.
const MAX_BATCH: usize = 1000;

/// How long a batch waits for more lines after its first one. A burst of lines (vibe prints a
/// tool's result, the stand-in prints 20 lines in a millisecond) then goes in one write instead
/// of one per line or two; a watcher sees lines at most this much later.
const LINGER: Duration = Duration::from_millis(3);

/// What a run sends to its sink.
#[derive(Debug)]
pub(crate) enum SinkItem {
    /// An output line.
    Line(Line),
    /// A lifecycle event (setup started, setup finished).
    Event(NewEvent),
}

impl From<Line> for SinkItem {
    fn from(line: Line) -> Self {
        SinkItem::Line(line)
    }
}

/// What the sink saw, once the run's senders are all gone.
#[derive(Debug, Default)]
pub(crate) struct SinkReport {
    /// vibe's transcript (stdout entries), for the final answer.
    pub(crate) transcript: Transcript,
    /// The last stderr lines of vibe, to explain a failure.
    pub(crate) stderr_tail: Vec<String>,
    /// Events written.
    pub(crate) written: usize,
    /// The last batch, not written: it goes into the run's finish, in the same transaction as
    /// the closing event (one commit fewer per job; a watcher sees these lines with the end).
    pub(crate) tail: Vec<NewEvent>,
    /// The lease was lost: the job is no longer ours, nothing more was written.
    pub(crate) lease_lost: bool,
}

/// Lines of stderr kept for the error message.
const STDERR_TAIL: usize = 5;

pub(crate) async fn run(
    pool: PgPool,
    lease: Lease,
    mut rx: mpsc::UnboundedReceiver<SinkItem>,
) -> SinkReport {
    let mut report = SinkReport::default();
    let mut batch: Vec<NewEvent> = Vec::new();
    // The lines' shares of the output budget, given back once the batch is stored.
    let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
    // Numbers the batches, so that a retried one is stored once (see `jobs::append_run_events`).
    let mut batch_no: i64 = 0;
    while let Some(first) = rx.recv().await {
        let linger_until = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        let mut closed = false;
        while let Some(item) = next.take() {
            let (event, permit) = to_event(item, &mut report);
            batch.push(event);
            permits.extend(permit);
            if batch.len() < MAX_BATCH {
                next = match rx.try_recv() {
                    Ok(item) => Some(item),
                    // Nothing waiting: linger a little (a closed channel ends it at once).
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(linger_until, rx.recv()).await {
                            Ok(Some(item)) => Some(item),
                            Ok(None) => {
                                closed = true;
                                None
                            }
                            Err(_) => None,
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        None
                    }
                };
            }
        }
        if closed {
            // The run is over: its finish writes these (nothing, if the lease is gone).
            if !report.lease_lost {
                report.tail = batch;
            }
            return report;
        }
        if !report.lease_lost {
            batch_no += 1;
            if write(&pool, &lease, batch_no, &batch).await {
                report.written += batch.len();
            } else {
                tracing::warn!(job_id = %lease.job_id, "lease lost; the run's output is no longer recorded");
                report.lease_lost = true;
            }
        }
        batch.clear();
        permits.clear();
    }
    report
}

/// Writes one batch, retrying while PostgreSQL is unreachable. Returns false if the lease is gone.
async fn write(pool: &PgPool, lease: &Lease, batch_no: i64, batch: &[NewEvent]) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match jobs::append_run_events(pool, lease, batch_no, batch).await {
            Ok(held) => return held,
            Err(e) => {
                tracing::warn!(job_id = %lease.job_id, error = %e, lines = batch.len(), "writing output failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn to_event(item: SinkItem, report: &mut SinkReport) -> (NewEvent, Option<OwnedSemaphorePermit>) {
    match item {
        SinkItem::Event(event) => (event, None),
        SinkItem::Line(line) => {
            let entry = match line.stream {
                OutputStream::Stdout => parse_line(&line.text),
                OutputStream::Stderr => {
                    if report.stderr_tail.len() == STDERR_TAIL {
                        report.stderr_tail.remove(0);
                    }
                    report.stderr_tail.push(line.text.clone());
                    None
                }
                OutputStream::Setup => None,
            };
            if let Some(entry) = &entry {
                report.transcript.observe(entry);
            }
            (NewEvent::output(line.stream, line.text, entry), line.permit)
        }
    }
}
