//! The event sink of one run: receives output lines and lifecycle events in order, and writes
//! them to PostgreSQL in batches (whatever arrived while the previous write was in flight goes
//! in the next one), fenced by the run's lease. The process's pipes never wait on it: the
//! runner reads them into the channel as fast as the child writes, within an output budget
//! (see [`OUTPUT_BUDGET_BYTES`]); past it, lines wait in a spill file on disk (see
//! [`SPILL_MAX_BYTES`]) until the sink catches up.

use std::time::Duration;

use otter_core::db::events::EncodedEvent;
use otter_core::db::jobs::{self, Lease};
use otter_core::model::{NewEvent, OutputStream};
use otter_core::runner::Line;
use otter_core::vibe::{Transcript, parse_line};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Bytes of a run's output that may wait for the database at once, counted as the runner counts
/// them (each line's text plus what a waiting line costs beyond it,
/// `otter_core::runner::LINE_OVERHEAD_BYTES`): far more than a healthy database ever lets pile
/// up, small enough that an outage cannot exhaust memory. Past it the lines wait on disk (see
/// [`SPILL_MAX_BYTES`]); nothing is dropped.
pub(crate) const OUTPUT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of a run's output that may wait on disk, in the run's directory, past
/// [`OUTPUT_BUDGET_BYTES`] (see `otter_core::runner::SpillSpec`): the child keeps writing at full
/// speed while the database catches up; past this much it blocks, as above.
pub(crate) const SPILL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Most events written in one transaction.
const MAX_BATCH: usize = 1000;

/// Most bytes of encoded payloads in one batch (one event more when it alone is larger). The
/// lines of a batch keep their share of the budget until it is stored, but an encoded payload can
/// be several times its line (JSON escapes: a control character takes 6 bytes; the parsed entry
/// beside the raw text), so the batches the sink holds (one being gathered, one being written,
/// and the writer's copy of it for PostgreSQL) are bounded by this as well.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

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
    /// The last batch, not written: it goes into the run's finish, in the same transaction as
    /// the closing event (one commit fewer per job; a watcher sees these lines with the end).
    pub(crate) tail: Vec<EncodedEvent>,
    /// The lease was lost: the job is no longer ours, nothing more was written.
    pub(crate) lease_lost: bool,
}

/// Lines of stderr kept for the error message.
const STDERR_TAIL: usize = 5;

/// A batch handed to the writer: its number, its events and the lines' shares of the budget
/// (given back once it is stored).
#[derive(Default)]
struct Batch {
    no: i64,
    events: Vec<EncodedEvent>,
    permits: Vec<OwnedSemaphorePermit>,
    /// Bytes of the events' encoded payloads.
    bytes: usize,
}

impl Batch {
    /// Whether the batch takes no more events.
    fn is_full(&self) -> bool {
        self.events.len() >= MAX_BATCH || self.bytes >= MAX_BATCH_BYTES
    }
}

/// Receives a run's output and writes it in two stages. Here, lines are parsed, observed for the
/// transcript, encoded and gathered into batches; a writer task stores the batches in order.
/// While the writer waits for PostgreSQL the next batch is prepared (and keeps growing until the
/// writer is free), so a flood costs PostgreSQL's time, not PostgreSQL's plus the encoding's.
pub(crate) async fn run(
    pool: PgPool,
    lease: Lease,
    mut rx: mpsc::UnboundedReceiver<SinkItem>,
) -> SinkReport {
    let mut report = SinkReport::default();
    // One batch waits for the writer at most; the rest waits in `rx`, within the budget.
    let (to_writer, pending) = mpsc::channel::<Batch>(1);
    let writer = tokio::spawn(write_batches(pool, lease, pending));
    let mut batch = Batch::default();
    // Numbers the batches, so that a retried one is stored once (see `jobs::append_run_events`).
    let mut batch_no: i64 = 0;
    let mut closed = false;
    while !closed {
        let Some(first) = rx.recv().await else {
            break;
        };
        let linger_until = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            add(&mut batch, item, &mut report);
            if !batch.is_full() {
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
            break;
        }
        if report.lease_lost {
            // Nothing more is written: drop the lines, give their budget back.
            batch = Batch::default();
            continue;
        }
        // Hand the batch over; while the writer is busy, what arrives joins it.
        while !closed {
            tokio::select! {
                biased;
                slot = to_writer.reserve() => {
                    match slot {
                        Ok(slot) => {
                            batch_no += 1;
                            batch.no = batch_no;
                            slot.send(std::mem::take(&mut batch));
                        }
                        // The writer stopped: the lease is gone.
                        Err(_) => {
                            report.lease_lost = true;
                            batch = Batch::default();
                        }
                    }
                    break;
                }
                item = rx.recv(), if !batch.is_full() => match item {
                    Some(item) => add(&mut batch, item, &mut report),
                    None => closed = true,
                },
            }
        }
    }
    // Every batch handed over is stored (or the lease is gone) before the finish writes the
    // tail after them.
    drop(to_writer);
    match writer.await {
        Ok(true) => {}
        Ok(false) => report.lease_lost = true,
        Err(e) => {
            tracing::error!(job_id = %lease.job_id, error = %e, "the output writer failed");
            report.lease_lost = true;
        }
    }
    if !report.lease_lost {
        report.tail = batch.events;
    }
    report
}

/// Stores the batches in order. Returns false, at once, when the lease is gone.
async fn write_batches(pool: PgPool, lease: Lease, mut pending: mpsc::Receiver<Batch>) -> bool {
    while let Some(batch) = pending.recv().await {
        if !write(&pool, &lease, batch.no, &batch.events).await {
            tracing::warn!(job_id = %lease.job_id, "lease lost; the run's output is no longer recorded");
            return false;
        }
        drop(batch.permits);
    }
    true
}

/// Writes one batch, retrying while PostgreSQL is unreachable. Returns false if the lease is gone.
async fn write(pool: &PgPool, lease: &Lease, batch_no: i64, batch: &[EncodedEvent]) -> bool {
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

/// Adds `item` to `batch`, encoded, with its share of the budget.
fn add(batch: &mut Batch, item: SinkItem, report: &mut SinkReport) {
    let (event, permit) = to_event(item, report);
    let event = EncodedEvent::new(&event);
    batch.bytes += event.payload.get().len();
    batch.events.push(event);
    batch.permits.extend(permit);
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

#[cfg(test)]
mod tests {
    //! The sink against a real PostgreSQL: every line stored once and in order, the last batch
    //! left for the finish, the budget given back, and nothing more written once the lease is
    //! gone.

    use std::sync::Arc;
    use std::time::Duration;

    use otter_core::db::jobs::{self, Claim, NewJob};
    use otter_core::model::{JobId, OutputStream, WorkspaceId};
    use otter_core::runner::Line;
    use otter_core::testing::TestEnv;
    use sqlx::PgPool;
    use tokio::sync::{Semaphore, mpsc};

    use super::{SinkItem, SinkReport};

    const BUDGET: usize = 1 << 20;

    /// A claimed job and its running sink, fed as the runner feeds it.
    struct Run {
        pool: PgPool,
        id: JobId,
        budget: Arc<Semaphore>,
        tx: mpsc::UnboundedSender<SinkItem>,
        sink: tokio::task::JoinHandle<SinkReport>,
    }

    impl Run {
        async fn start() -> Self {
            let env = TestEnv::new().await;
            let pool = PgPool::connect(&env.database_url).await.unwrap();
            otter_core::db::migrate(&pool).await.unwrap();
            let path = env.dir.join("ws").display().to_string();
            let ws = otter_core::db::workspaces::insert(
                &pool,
                WorkspaceId::new(),
                None,
                "ws",
                &path,
                &format!("{path}/.vibe"),
            )
            .await
            .unwrap();
            let new = NewJob {
                workspace: &ws,
                prompt: "p",
                priority: 0,
                max_attempts: 1,
            };
            let job = jobs::insert(&pool, &new).await.unwrap();
            let Claim::Claimed { lease, .. } =
                jobs::claim(&pool, job.id, "w", Duration::from_secs(60))
                    .await
                    .unwrap()
            else {
                panic!("not claimed");
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let sink = tokio::spawn(super::run(pool.clone(), lease, rx));
            Self {
                pool,
                id: job.id,
                budget: Arc::new(Semaphore::new(BUDGET)),
                tx,
                sink,
            }
        }

        /// Sends lines `from..to`, each holding 10 bytes of the budget.
        async fn send(&self, from: usize, to: usize) {
            for i in from..to {
                let permit = self.budget.clone().acquire_many_owned(10).await.unwrap();
                let line = Line {
                    stream: OutputStream::Stdout,
                    text: format!("line {i}"),
                    permit: Some(permit),
                };
                self.tx.send(line.into()).unwrap();
            }
        }

        /// Closes the run's output and waits for the sink's report.
        async fn end(self) -> SinkReport {
            drop(self.tx);
            tokio::time::timeout(Duration::from_secs(60), self.sink)
                .await
                .expect("the sink ended")
                .unwrap()
        }
    }

    /// The texts of the job's stored lines, in order.
    async fn stored(pool: &PgPool, id: JobId) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT payload->>'text' FROM events WHERE job_id = $1 AND kind = 'output_chunk' ORDER BY seq",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    /// What malloc adds to an allocation of `n` bytes, at most (glibc on 64 bits: an 8-byte
    /// header, 16-byte alignment, 32 bytes at least).
    fn malloc_slack(n: usize) -> usize {
        ((n + 8 + 15) & !15).max(32) - n
    }

    /// The runner charges each line its text plus `LINE_OVERHEAD_BYTES`; that must cover what
    /// the line costs here beyond its text, in the channel and then in a batch.
    #[test]
    fn a_lines_charge_covers_what_it_holds_in_the_channel_and_in_a_batch() {
        use otter_core::db::events::EncodedEvent;
        use otter_core::model::NewEvent;
        use otter_core::runner::LINE_OVERHEAD_BYTES;
        use std::mem::size_of;
        // In the channel: its slot (tokio's blocks of 32 slots, with a header of 4 words), and
        // malloc's rounding of the text's allocation (none for an empty line).
        let slot = size_of::<SinkItem>() + (4 * size_of::<usize>()).div_ceil(32);
        let in_channel = slot + (1..64).map(malloc_slack).max().unwrap();
        // In a batch: the encoded event and its permit, the payload's JSON around the text,
        // malloc's rounding of it.
        let framing = |stream| {
            let event = EncodedEvent::new(&NewEvent::output(stream, String::new(), None));
            event.payload.get().len()
        };
        let framing = framing(OutputStream::Stderr).max(framing(OutputStream::Stdout));
        let in_batch = size_of::<EncodedEvent>()
            + size_of::<tokio::sync::OwnedSemaphorePermit>()
            + framing
            + (framing..framing + 64).map(malloc_slack).max().unwrap();
        eprintln!(
            "item {} bytes; a line costs {in_channel} bytes beyond its text in the channel, {in_batch} in a batch",
            size_of::<SinkItem>()
        );
        assert!(
            in_channel <= LINE_OVERHEAD_BYTES && in_batch <= LINE_OVERHEAD_BYTES,
            "a line costs {in_channel} bytes beyond its text in the channel, {in_batch} in a \
             batch, but is charged {LINE_OVERHEAD_BYTES}"
        );
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_as_well_as_by_count() {
        let mut batch = super::Batch::default();
        let mut report = SinkReport::default();
        // Control characters: each is 6 bytes once encoded (`\u0001`).
        let line = "\u{1}".repeat(100_000);
        while !batch.is_full() {
            let item = SinkItem::Line(Line {
                stream: OutputStream::Stdout,
                text: line.clone(),
                permit: None,
            });
            super::add(&mut batch, item, &mut report);
        }
        let one = batch.events[0].payload.get().len();
        assert!(one > 6 * 100_000, "{one}");
        assert!(batch.events.len() < super::MAX_BATCH);
        assert!(batch.bytes >= super::MAX_BATCH_BYTES);
        assert!(
            batch.bytes < super::MAX_BATCH_BYTES + one,
            "{}",
            batch.bytes
        );
        let stored: usize = batch.events.iter().map(|e| e.payload.get().len()).sum();
        assert_eq!(stored, batch.bytes);
    }

    #[tokio::test]
    async fn a_flood_is_stored_once_in_order_with_the_last_batch_left_for_the_finish() {
        let run = Run::start().await;
        run.send(0, 5_000).await;
        let (pool, id, budget) = (run.pool.clone(), run.id, run.budget.clone());
        let report = run.end().await;
        assert!(!report.lease_lost);
        let mut all = stored(&pool, id).await;
        all.extend(report.tail.iter().map(|e| {
            e.payload_value()["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }));
        let want: Vec<String> = (0..5_000).map(|i| format!("line {i}")).collect();
        assert_eq!(all, want, "every line once, in order");
        assert_eq!(budget.available_permits(), BUDGET, "the budget given back");
    }

    #[tokio::test]
    async fn once_the_lease_is_gone_nothing_more_is_written_and_the_sink_ends() {
        let run = Run::start().await;
        let (pool, id, budget) = (run.pool.clone(), run.id, run.budget.clone());
        run.send(0, 100).await;
        otter_testkit::eventually(Duration::from_secs(30), "the first lines stored", || {
            let pool = pool.clone();
            async move { (stored(&pool, id).await.len() == 100).then_some(()) }
        })
        .await;
        // Another worker takes the job over.
        sqlx::query("UPDATE jobs SET lease_token = gen_random_uuid() WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        run.send(100, 3_000).await;
        let report = run.end().await;
        assert!(report.lease_lost);
        assert!(report.tail.is_empty(), "nothing left for the finish");
        assert_eq!(stored(&pool, id).await.len(), 100, "nothing written after");
        assert_eq!(budget.available_permits(), BUDGET, "the budget given back");
    }
}
