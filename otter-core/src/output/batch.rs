//! The event batcher: receives output lines and events in order, encodes them and has them
//! stored in batches, in that order. Run output (the worker's sink) and a runtime image's build
//! log both go through it; they differ only in their [`BatchPolicy`], how a line becomes an
//! event ([`Encode`]) and where a batch goes ([`Store`]).
//!
//! Two stages: here, items are encoded and gathered into batches; a writer task stores the
//! batches in order. While the writer waits for PostgreSQL the next batch is prepared (and keeps
//! growing until the writer is free, up to the policy's bounds), so a flood costs PostgreSQL's
//! time, not PostgreSQL's plus the encoding's, and whatever arrived while one batch was written
//! goes in the next one.
//!
//! Once the store refuses a batch (a lost lease, a failed database) nothing more is stored:
//! what still arrives is dropped, its share of the output budget given back, until the channel
//! closes. The producer is never held up by the store beyond its channel.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::db::events::EncodedEvent;
use crate::model::NewEvent;
use crate::runner::Line;

/// What is batched: an output line, or an event of its own.
#[derive(Debug)]
pub enum Item {
    /// An output line (becomes an `output_chunk`, see [`Encode`]).
    Line(Line),
    /// A lifecycle event (setup started, a build finished, ...).
    Event(NewEvent),
}

impl From<Line> for Item {
    fn from(line: Line) -> Self {
        Item::Line(line)
    }
}

impl From<NewEvent> for Item {
    fn from(event: NewEvent) -> Self {
        Item::Event(event)
    }
}

/// How items are gathered into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most events in one batch (one transaction).
    pub max_events: usize,
    /// Most bytes of encoded payloads in one batch (one event more when it alone is larger).
    pub max_bytes: usize,
    /// How long a batch waits for more items after its first one: a burst then goes in one
    /// write instead of one per item; a watcher sees items at most this much later.
    pub linger: Duration,
    /// Whether the last batch is kept back instead of stored ([`Batched::held`]), for the
    /// caller to store with its closing event in one transaction.
    pub hold_last: bool,
}

impl BatchPolicy {
    /// A run's output. The lines of a batch keep their share of the output budget until it is
    /// stored, but an encoded payload can be several times its line (JSON escapes: a control
    /// character takes 6 bytes; the parsed entry beside the raw text), so the batches held at
    /// once (one being gathered, one being written, and the writer's copy of it for PostgreSQL)
    /// are bounded by bytes as well as by count. The last batch goes with the run's finish.
    pub const RUN_OUTPUT: Self = Self {
        max_events: 1000,
        max_bytes: 8 * 1024 * 1024,
        linger: Duration::from_millis(3),
        hold_last: true,
    };

    /// A runtime image's build log: the engine prints in bursts a step at a time, and nothing
    /// closes the log in a transaction of its own.
    pub const BUILD_LOG: Self = Self {
        max_events: 200,
        max_bytes: 8 * 1024 * 1024,
        linger: Duration::from_millis(100),
        hold_last: false,
    };
}

/// Turns items into events: how an output line is stored, and what is learned from it on the
/// way (see `vibe::RunLog`).
pub trait Encode: Send + 'static {
    /// The event of `item`, with the line's share of the output budget, if it has one.
    fn encode(&mut self, item: Item) -> (NewEvent, Option<OwnedSemaphorePermit>);
}

/// Lines stored as they are: `{"stream", "text"}`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Plain;

impl Encode for Plain {
    fn encode(&mut self, item: Item) -> (NewEvent, Option<OwnedSemaphorePermit>) {
        match item {
            Item::Event(event) => (event, None),
            Item::Line(line) => (NewEvent::output(line.stream, line.text, None), line.permit),
        }
    }
}

/// Where batches go.
pub trait Store: Send + 'static {
    /// Stores batch number `no` (from 1, so that a retried batch can be stored once). Returns
    /// false when nothing more may be stored.
    fn store(&mut self, no: i64, events: &[EncodedEvent]) -> impl Future<Output = bool> + Send;
}

/// The receiving end of the producer's channel: unbounded for a child's pipes (the runner
/// bounds them with its output budget), bounded for a build log (the engine's stream waits).
pub trait Inbox: Send + 'static {
    /// The next item; `None` once every sender is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Item>> + Send;
    /// The next item if one is waiting.
    fn try_recv(&mut self) -> Result<Item, TryRecvError>;
}

impl Inbox for mpsc::UnboundedReceiver<Item> {
    fn recv(&mut self) -> impl Future<Output = Option<Item>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }
    fn try_recv(&mut self) -> Result<Item, TryRecvError> {
        mpsc::UnboundedReceiver::try_recv(self)
    }
}

impl Inbox for mpsc::Receiver<Item> {
    fn recv(&mut self) -> impl Future<Output = Option<Item>> + Send {
        mpsc::Receiver::recv(self)
    }
    fn try_recv(&mut self) -> Result<Item, TryRecvError> {
        mpsc::Receiver::try_recv(self)
    }
}

/// What the batcher hands back once the channel is closed.
#[derive(Debug, Default)]
pub struct Batched<E> {
    /// The encoder, with whatever it learned.
    pub encoder: E,
    /// The last batch, not stored ([`BatchPolicy::hold_last`]); empty once the store refused.
    pub held: Vec<EncodedEvent>,
    /// The store refused a batch: what came after was not stored.
    pub refused: bool,
}

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
    fn is_full(&self, policy: &BatchPolicy) -> bool {
        self.events.len() >= policy.max_events || self.bytes >= policy.max_bytes
    }

    /// Adds `item`, encoded, with its share of the budget.
    fn add<E: Encode>(&mut self, item: Item, encoder: &mut E) {
        let (event, permit) = encoder.encode(item);
        let event = EncodedEvent::new(&event);
        self.bytes += event.payload.get().len();
        self.events.push(event);
        self.permits.extend(permit);
    }
}

/// Batches what arrives on `inbox` until every sender is gone, encoding with `encoder` and
/// storing with `store` (see the module docs). Returns once every batch handed to the writer is
/// stored (or refused).
pub async fn run<I, E, S>(mut inbox: I, mut encoder: E, store: S, policy: BatchPolicy) -> Batched<E>
where
    I: Inbox,
    E: Encode,
    S: Store,
{
    let mut refused = false;
    // One batch waits for the writer at most; the rest waits in the inbox.
    let (to_writer, pending) = mpsc::channel::<Batch>(1);
    let writer = tokio::spawn(write_batches(store, pending));
    let mut batch = Batch::default();
    let mut batch_no: i64 = 0;
    let mut closed = false;
    while !closed {
        let Some(first) = inbox.recv().await else {
            break;
        };
        let linger_until = tokio::time::Instant::now() + policy.linger;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            batch.add(item, &mut encoder);
            if !batch.is_full(&policy) {
                next = match inbox.try_recv() {
                    Ok(item) => Some(item),
                    // Nothing waiting: linger a little (a closed channel ends it at once).
                    Err(TryRecvError::Empty) => {
                        match tokio::time::timeout_at(linger_until, inbox.recv()).await {
                            Ok(Some(item)) => Some(item),
                            Ok(None) => {
                                closed = true;
                                None
                            }
                            Err(_) => None,
                        }
                    }
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        None
                    }
                };
            }
        }
        if closed && policy.hold_last {
            break;
        }
        if refused {
            // Nothing more is stored: drop the items, give their budget back.
            batch = Batch::default();
            continue;
        }
        // Hand the batch over; while the writer is busy, what arrives joins it.
        loop {
            tokio::select! {
                biased;
                slot = to_writer.reserve() => {
                    match slot {
                        Ok(slot) => {
                            batch_no += 1;
                            batch.no = batch_no;
                            slot.send(std::mem::take(&mut batch));
                        }
                        // The writer stopped: the store refused.
                        Err(_) => {
                            refused = true;
                            batch = Batch::default();
                        }
                    }
                    break;
                }
                item = inbox.recv(), if !closed && !batch.is_full(&policy) => match item {
                    Some(item) => batch.add(item, &mut encoder),
                    None => {
                        closed = true;
                        if policy.hold_last {
                            // The batch is held, not stored.
                            break;
                        }
                    }
                },
            }
        }
    }
    // Every batch handed over is stored (or refused) before the caller stores what is held
    // after them.
    drop(to_writer);
    match writer.await {
        Ok(true) => {}
        Ok(false) => refused = true,
        Err(e) => {
            tracing::error!(error = %e, "the event writer failed");
            refused = true;
        }
    }
    let held = if refused || !policy.hold_last {
        Vec::new()
    } else {
        batch.events
    };
    Batched {
        encoder,
        held,
        refused,
    }
}

/// Stores the batches in order. Returns false, at once, when the store refuses one.
async fn write_batches<S: Store>(mut store: S, mut pending: mpsc::Receiver<Batch>) -> bool {
    while let Some(batch) = pending.recv().await {
        if !store.store(batch.no, &batch.events).await {
            return false;
        }
        drop(batch.permits);
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::model::OutputStream;
    use crate::runner::LINE_OVERHEAD_BYTES;

    /// What malloc adds to an allocation of `n` bytes, at most (glibc on 64 bits: an 8-byte
    /// header, 16-byte alignment, 32 bytes at least).
    fn malloc_slack(n: usize) -> usize {
        ((n + 8 + 15) & !15).max(32) - n
    }

    /// The runner charges each line its text plus `LINE_OVERHEAD_BYTES`; that must cover what
    /// the line costs here beyond its text, in the channel and then in a batch.
    #[test]
    fn a_lines_charge_covers_what_it_holds_in_the_channel_and_in_a_batch() {
        use std::mem::size_of;
        // In the channel: its slot (tokio's blocks of 32 slots, with a header of 4 words), and
        // malloc's rounding of the text's allocation (none for an empty line).
        let slot = size_of::<Item>() + (4 * size_of::<usize>()).div_ceil(32);
        let in_channel = slot + (1..64).map(malloc_slack).max().unwrap();
        // In a batch: the encoded event and its permit, the payload's JSON around the text,
        // malloc's rounding of it.
        let framing = |stream| {
            let event = EncodedEvent::new(&NewEvent::output(stream, String::new(), None));
            event.payload.get().len()
        };
        let framing = framing(OutputStream::Stderr).max(framing(OutputStream::Stdout));
        let in_batch = size_of::<EncodedEvent>()
            + size_of::<OwnedSemaphorePermit>()
            + framing
            + (framing..framing + 64).map(malloc_slack).max().unwrap();
        assert!(
            in_channel <= LINE_OVERHEAD_BYTES && in_batch <= LINE_OVERHEAD_BYTES,
            "a line costs {in_channel} bytes beyond its text in the channel, {in_batch} in a \
             batch, but is charged {LINE_OVERHEAD_BYTES}"
        );
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_as_well_as_by_count() {
        let policy = BatchPolicy::RUN_OUTPUT;
        let mut batch = Batch::default();
        // Control characters: each is 6 bytes once encoded (`\u0001`).
        let line = "\u{1}".repeat(100_000);
        while !batch.is_full(&policy) {
            let item = Item::Line(Line {
                stream: OutputStream::Stdout,
                text: line.clone(),
                permit: None,
            });
            batch.add(item, &mut Plain);
        }
        let one = batch.events[0].payload.get().len();
        assert!(one > 6 * 100_000, "{one}");
        assert!(batch.events.len() < policy.max_events);
        assert!(batch.bytes >= policy.max_bytes);
        assert!(batch.bytes < policy.max_bytes + one, "{}", batch.bytes);
        let stored: usize = batch.events.iter().map(|e| e.payload.get().len()).sum();
        assert_eq!(stored, batch.bytes);
    }

    /// Keeps what it is given, and refuses from batch `refuse_from` on.
    #[derive(Clone, Default)]
    struct Memory {
        stored: Arc<Mutex<Vec<(i64, String)>>>,
        refuse_from: Option<i64>,
    }

    impl Store for Memory {
        async fn store(&mut self, no: i64, events: &[EncodedEvent]) -> bool {
            if self.refuse_from.is_some_and(|from| no >= from) {
                return false;
            }
            let mut stored = self.stored.lock().unwrap();
            for e in events {
                let text = e.payload_value()["text"].as_str().unwrap_or("").to_owned();
                stored.push((no, text));
            }
            true
        }
    }

    fn line(i: usize) -> Item {
        Item::Line(Line {
            stream: OutputStream::Stdout,
            text: format!("line {i}"),
            permit: None,
        })
    }

    #[tokio::test]
    async fn everything_is_stored_once_in_order_and_the_last_batch_held_when_asked() {
        for policy in [BatchPolicy::RUN_OUTPUT, BatchPolicy::BUILD_LOG] {
            let store = Memory::default();
            let (tx, rx) = mpsc::unbounded_channel();
            let batcher = tokio::spawn(run(rx, Plain, store.clone(), policy));
            // Not a multiple of a batch: the last one is partly full.
            for i in 0..4_321 {
                tx.send(line(i)).unwrap();
            }
            drop(tx);
            let batched = batcher.await.unwrap();
            assert!(!batched.refused);
            let stored = store.stored.lock().unwrap().clone();
            let numbers: Vec<i64> = stored.iter().map(|(no, _)| *no).collect();
            assert!(numbers.windows(2).all(|w| w[0] <= w[1] && w[1] - w[0] <= 1));
            assert_eq!(numbers.first(), Some(&1), "numbered from 1");
            let mut texts: Vec<String> = stored.into_iter().map(|(_, t)| t).collect();
            assert_eq!(batched.held.is_empty(), !policy.hold_last);
            texts.extend(
                batched
                    .held
                    .iter()
                    .map(|e| e.payload_value()["text"].as_str().unwrap().to_owned()),
            );
            let want: Vec<String> = (0..4_321).map(|i| format!("line {i}")).collect();
            assert_eq!(texts, want, "every line once, in order ({policy:?})");
        }
    }

    #[tokio::test]
    async fn once_the_store_refuses_nothing_more_is_stored_and_the_budget_comes_back() {
        let store = Memory {
            refuse_from: Some(2),
            ..Memory::default()
        };
        let budget = Arc::new(tokio::sync::Semaphore::new(1 << 20));
        // A bounded inbox, as a build log has.
        let (tx, rx) = mpsc::channel(16);
        let batcher = tokio::spawn(run(rx, Plain, store.clone(), BatchPolicy::RUN_OUTPUT));
        for i in 0..3_000 {
            let permit = budget.clone().acquire_many_owned(10).await.unwrap();
            let item = Item::Line(Line {
                stream: OutputStream::Stdout,
                text: format!("line {i}"),
                permit: Some(permit),
            });
            tx.send(item).await.unwrap();
        }
        drop(tx);
        let batched = batcher.await.unwrap();
        assert!(batched.refused);
        assert!(batched.held.is_empty(), "nothing held once refused");
        let stored = store.stored.lock().unwrap();
        assert!(
            stored.iter().all(|(no, _)| *no == 1),
            "only the first batch"
        );
        assert_eq!(budget.available_permits(), 1 << 20, "the budget given back");
    }
}
