//! The live event feed: every process that serves events (an API replica, an embedding program)
//! runs one [`EventFeed`]. While anyone is watching, it reads new events by id from PostgreSQL
//! every few milliseconds (every [`POLL_MIN`] while events come, backing off to [`POLL_MAX`] when
//! quiet) and broadcasts them in id order; [`EventFeed::stream`] joins stored history and the
//! live broadcast into one stream with no gap and no duplicate (DESIGN.md §5, invariant 6).
//!
//! Writers do not `NOTIFY`: PostgreSQL holds one lock per database from a notifying
//! transaction's commit until its WAL flush is done, so every event write of the installation
//! would again commit one at a time (the measurement is in docs/benchmarks.md, "Second round",
//! change 2). While nobody watches, the feed only moves its cursor once a second.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::Stream;
use sqlx::PgPool;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::db::events::{self, EventFilter, RawEvent};
use crate::db::{DbError, jobs};
use crate::model::{Event, JobId, ProjectId, WorkspaceId, kinds};

/// How many events a slow subscriber may fall behind before it re-reads from the database.
const BROADCAST_CAPACITY: usize = 8192;
/// Rows read per query, by the feed and by a replay (and at most the page's bytes, see
/// [`events::page_after`]).
const PAGE: i64 = 500;
/// Bytes of recent events the feed keeps for its subscribers (see the module's documentation).
pub const WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// How often the feed reads while events come, or wait to become final (an older transaction
/// is still running, see [`events`]).
pub const POLL_MIN: Duration = Duration::from_millis(5);
/// How often it reads at most when quiet (the wait doubles after each empty read).
pub const POLL_MAX: Duration = Duration::from_millis(50);
/// How often it moves its cursor to the head while nobody watches.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// One event in its JSON form, serialised once for every subscriber.
#[derive(Debug)]
pub struct FeedEvent {
    /// The event's id.
    pub id: i64,
    /// Its job.
    pub job_id: JobId,
    /// Its job's workspace.
    pub workspace_id: WorkspaceId,
    /// Its job's project, if any.
    pub project_id: Option<ProjectId>,
    /// What happened (see [`kinds`]).
    pub kind: String,
    /// The event as JSON, in the shape of [`Event`].
    pub json: String,
    /// Counts the event in its feed's [`EventFeed::held_bytes`] while it lives.
    held: Held,
}

impl FeedEvent {
    fn new(event: RawEvent, counter: &Arc<AtomicUsize>) -> Arc<Self> {
        let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
        let bytes = std::mem::size_of::<Self>() + json.len() + event.kind.len();
        Arc::new(Self {
            id: event.id,
            job_id: event.job_id,
            workspace_id: event.workspace_id,
            project_id: event.project_id,
            kind: event.kind,
            json,
            held: Held::new(counter, bytes),
        })
    }

    /// The event, parsed back from its JSON.
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.json)
    }

    /// The memory it holds, about.
    fn bytes(&self) -> usize {
        self.held.bytes
    }
}

/// A share of a feed's held bytes, given back when dropped.
#[derive(Debug)]
struct Held {
    counter: Arc<AtomicUsize>,
    bytes: usize,
}

impl Held {
    fn new(counter: &Arc<AtomicUsize>, bytes: usize) -> Self {
        counter.fetch_add(bytes, Ordering::Relaxed);
        Self {
            counter: counter.clone(),
            bytes,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What the live broadcast carries for one event: enough to filter it, and a handle that is
/// good while the event is in the feed's window.
#[derive(Debug, Clone)]
struct Live {
    id: i64,
    job_id: JobId,
    workspace_id: WorkspaceId,
    project_id: Option<ProjectId>,
    event: Weak<FeedEvent>,
}

impl Live {
    fn of(event: &Arc<FeedEvent>) -> Self {
        Self {
            id: event.id,
            job_id: event.job_id,
            workspace_id: event.workspace_id,
            project_id: event.project_id,
            event: Arc::downgrade(event),
        }
    }
}

/// The most recent events, up to [`WINDOW_BYTES`] and [`BROADCAST_CAPACITY`] of them (the
/// newest always, however large): what keeps the broadcast's handles good.
#[derive(Default)]
struct Window {
    events: VecDeque<Arc<FeedEvent>>,
    bytes: usize,
}

impl Window {
    fn push(&mut self, event: Arc<FeedEvent>) {
        self.bytes += event.bytes();
        self.events.push_back(event);
        while self.events.len() > 1
            && (self.bytes > WINDOW_BYTES || self.events.len() > BROADCAST_CAPACITY)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.bytes();
            }
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }
}

/// What [`EventFeed::stream`] yields.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// An event.
    Event(Arc<FeedEvent>),
    /// The followed job has ended and every one of its events has been sent.
    End,
}

/// How many events a follower of one job may fall behind before it re-reads from the database.
const JOB_CHANNEL_CAPACITY: usize = 1024;

/// The process-wide live feed. Cheap to clone.
///
/// Streams of one job get a channel of that job's own, so that an event wakes only the clients
/// following its job; every other stream (all events, a workspace, a project) shares one
/// broadcast of everything.
#[derive(Clone, Debug)]
pub struct EventFeed {
    pool: PgPool,
    tx: broadcast::Sender<Live>,
    jobs: Arc<Mutex<HashMap<JobId, broadcast::Sender<Live>>>>,
    /// Signalled by each new subscriber.
    watched: Arc<Notify>,
    /// Most payload bytes of one page read from the database.
    page_bytes: usize,
    /// Bytes of the events alive that this feed made (see [`EventFeed::held_bytes`]).
    held: Arc<AtomicUsize>,
}

impl EventFeed {
    /// Starts the feed; it runs until `shutdown` is cancelled. Events already stored are not
    /// broadcast (a subscriber replays them from the database). Pages read from the database
    /// hold at most [`events::PAGE_MAX_BYTES`] of payloads.
    pub async fn start(pool: PgPool, shutdown: CancellationToken) -> Result<Self, DbError> {
        Self::start_with(pool, shutdown, events::PAGE_MAX_BYTES).await
    }

    /// [`EventFeed::start`], with pages of at most `page_bytes` of payloads
    /// (`OTTER_EVENT_PAGE_MAX_BYTES`).
    pub async fn start_with(
        pool: PgPool,
        shutdown: CancellationToken,
        page_bytes: usize,
    ) -> Result<Self, DbError> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cursor = events::head(&pool).await?;
        let feed = Self {
            pool,
            tx,
            jobs: Arc::default(),
            watched: Arc::default(),
            page_bytes,
            held: Arc::default(),
        };
        tokio::spawn(feed.clone().run(cursor, shutdown));
        Ok(feed)
    }

    async fn run(self, mut cursor: i64, shutdown: CancellationToken) {
        let mut wait = POLL_MIN;
        let mut forgot = tokio::time::Instant::now();
        let mut window = Window::default();
        loop {
            let nap = if self.subscribers() > 0 {
                wait
            } else {
                IDLE_POLL
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(nap) => {}
                // A new subscriber: start reading at once rather than after the idle nap.
                () = self.watched.notified() => {}
            }
            if forgot.elapsed() >= IDLE_POLL {
                self.forget_unwatched_jobs();
                forgot = tokio::time::Instant::now();
            }
            if self.subscribers() == 0 {
                // Nobody is watching: hold nothing, and move the cursor without reading the
                // rows. The head is read *before* the count is checked again: a subscriber that
                // arrives after that check subscribed after the head was read, so its own replay
                // covers everything up to the head, and the feed broadcasts what comes after. A
                // cursor left behind is harmless: the feed then reads (and subscribers drop)
                // events they already have.
                window.clear();
                match events::head(&self.pool).await {
                    Ok(head) if self.subscribers() == 0 => {
                        cursor = cursor.max(head);
                        wait = POLL_MIN;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "event feed could not read the head");
                        continue;
                    }
                }
            }
            // Read often while events come (or wait to become final), less often when quiet.
            let mut busy = false;
            loop {
                let all = EventFilter::default();
                match events::page_after(&self.pool, &all, cursor, PAGE, self.page_bytes).await {
                    Ok(page) => {
                        let more = page.more(PAGE);
                        busy |= page.pending || !page.events.is_empty();
                        for event in page.events {
                            cursor = event.id;
                            let event = FeedEvent::new(event, &self.held);
                            let live = Live::of(&event);
                            window.push(event);
                            // A job's channel is either there for this event or made after it
                            // was read (and then its subscriber's replay has it).
                            if let Some(job_tx) = self.lock_jobs().get(&live.job_id) {
                                let _ = job_tx.send(live.clone());
                            }
                            // No receiver is not an error: nobody is watching.
                            let _ = self.tx.send(live);
                        }
                        if !more {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event feed could not read new events");
                        break;
                    }
                }
            }
            wait = if busy {
                POLL_MIN
            } else {
                (wait * 2).min(POLL_MAX)
            };
        }
    }

    /// Bytes of events this feed and its streams hold right now: the window of recent events,
    /// the pages of replays, the event each stream is handing on. Bounded whatever the clients
    /// do (see the module's documentation).
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Subscribers currently attached (SSE clients of this process).
    pub fn subscribers(&self) -> usize {
        let per_job: usize = self
            .lock_jobs()
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum();
        self.tx.receiver_count() + per_job
    }

    /// A receiver of the events `filter` can match: its job's own channel, or everything.
    fn subscribe(&self, filter: &EventFilter) -> broadcast::Receiver<Live> {
        self.watched.notify_one();
        match filter.job_id {
            Some(job) => self
                .lock_jobs()
                .entry(job)
                .or_insert_with(|| broadcast::channel(JOB_CHANNEL_CAPACITY).0)
                .subscribe(),
            None => self.tx.subscribe(),
        }
    }

    /// Drops the channels of jobs nobody follows any more.
    fn forget_unwatched_jobs(&self) {
        self.lock_jobs().retain(|_, tx| tx.receiver_count() > 0);
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, broadcast::Sender<Live>>> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The events matching `filter` with ids above `after`, stored ones first, then live ones
    /// as they are written, each exactly once and in id order. With a job filter the stream
    /// ends (with [`StreamItem::End`]) once the job has ended and its last event was sent.
    pub fn stream(
        &self,
        filter: EventFilter,
        after: i64,
    ) -> impl Stream<Item = Result<StreamItem, DbError>> + Send + 'static + use<> {
        // Subscribe before reading history: whatever is written from now on is either in the
        // replay or in the broadcast (or both; ids already sent are dropped).
        let mut rx = self.subscribe(&filter);
        let pool = self.pool.clone();
        let (page_bytes, held) = (self.page_bytes, self.held.clone());
        async_stream::try_stream! {
            let mut last = after;
            let mut job_over = match filter.job_id {
                Some(id) => jobs::get(&pool, id).await?.status.is_terminal(),
                None => false,
            };
            let mut replay = true;
            loop {
                if replay {
                    loop {
                        // Events not final yet come later from the feed, which reads them again.
                        let page = events::page_after(&pool, &filter, last, PAGE, page_bytes).await?;
                        let more = page.more(PAGE);
                        let page: Vec<_> =
                            page.events.into_iter().map(|e| FeedEvent::new(e, &held)).collect();
                        for event in page {
                            last = event.id;
                            let terminal = kinds::is_terminal(&event.kind);
                            yield StreamItem::Event(event);
                            if terminal && filter.job_id.is_some() {
                                job_over = true;
                            }
                        }
                        if !more {
                            break;
                        }
                    }
                    replay = false;
                    if job_over {
                        yield StreamItem::End;
                        break;
                    }
                }
                match rx.recv().await {
                    Ok(live) => {
                        if live.id <= last
                            || !filter.matches_ids(live.job_id, live.workspace_id, live.project_id)
                        {
                            continue;
                        }
                        // Gone from the feed's window before this stream got to it: read it
                        // (and what follows) back from the database.
                        let Some(item) = live.event.upgrade() else {
                            replay = true;
                            continue;
                        };
                        last = item.id;
                        let terminal = kinds::is_terminal(&item.kind);
                        yield StreamItem::Event(item);
                        if terminal && filter.job_id.is_some() {
                            yield StreamItem::End;
                            break;
                        }
                    }
                    // Fell behind: read what was missed from the store instead of dropping it.
                    Err(broadcast::error::RecvError::Lagged(_)) => replay = true,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }
}
