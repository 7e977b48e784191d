//! The live event feed: every process that serves events (an API replica, an embedding program)
//! runs one [`EventFeed`]. While anyone is watching, it reads new events by id from PostgreSQL
//! every few milliseconds (every [`POLL_MIN`] while events come, backing off to [`POLL_MAX`] when
//! quiet) and broadcasts them in id order; [`EventFeed::stream`] joins stored history and the
//! live broadcast into one stream with no gap and no duplicate (DESIGN.md §5, invariant 6).
//!
//! Writers do not `NOTIFY`: PostgreSQL holds one lock per database from a notifying
//! transaction's commit until its WAL flush is done, so every event write of the installation
//! would again commit one at a time (measured with pgbench on the 2-core box, 8 writers of one
//! job row and one event: 3,100 transactions/s with the notification, 5,300 without). While
//! nobody watches, the feed only moves its cursor once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use sqlx::PgPool;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::db::events::{self, EventFilter};
use crate::db::{DbError, jobs};
use crate::model::{Event, JobId, kinds};

/// How many events a slow subscriber may fall behind before it re-reads from the database.
const BROADCAST_CAPACITY: usize = 8192;
/// Rows read per query, by the feed and by a replay.
const PAGE: i64 = 500;
/// How often the feed reads while events come, or wait to become final (an older transaction
/// is still running, see [`events`]).
pub const POLL_MIN: Duration = Duration::from_millis(5);
/// How often it reads at most when quiet (the wait doubles after each empty read).
pub const POLL_MAX: Duration = Duration::from_millis(50);
/// How often it moves its cursor to the head while nobody watches.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// One event with its JSON form, serialised once for every subscriber.
#[derive(Debug)]
pub struct FeedEvent {
    /// The event.
    pub event: Event,
    /// `serde_json::to_string(&event)`.
    pub json: String,
}

impl FeedEvent {
    fn new(event: Event) -> Arc<Self> {
        let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
        Arc::new(Self { event, json })
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
    tx: broadcast::Sender<Arc<FeedEvent>>,
    jobs: Arc<Mutex<HashMap<JobId, broadcast::Sender<Arc<FeedEvent>>>>>,
    /// Signalled by each new subscriber.
    watched: Arc<Notify>,
}

impl EventFeed {
    /// Starts the feed; it runs until `shutdown` is cancelled. Events already stored are not
    /// broadcast (a subscriber replays them from the database).
    pub async fn start(pool: PgPool, shutdown: CancellationToken) -> Result<Self, DbError> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cursor = events::head(&pool).await?;
        let feed = Self {
            pool,
            tx,
            jobs: Arc::default(),
            watched: Arc::default(),
        };
        tokio::spawn(feed.clone().run(cursor, shutdown));
        Ok(feed)
    }

    async fn run(self, mut cursor: i64, shutdown: CancellationToken) {
        let mut wait = POLL_MIN;
        let mut forgot = tokio::time::Instant::now();
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
                // Nobody is watching: move the cursor without reading the rows. The head is read
                // *before* the count is checked again: a subscriber that arrives after that check
                // subscribed after the head was read, so its own replay covers everything up to
                // the head, and the feed broadcasts what comes after. A cursor left behind is
                // harmless: the feed then reads (and subscribers drop) events they already have.
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
                match events::list_after(&self.pool, &EventFilter::default(), cursor, PAGE).await {
                    Ok(page) => {
                        let full = page.events.len() as i64 == PAGE;
                        busy |= page.pending || !page.events.is_empty();
                        // Held across the page: a job's channel is either there for an event or
                        // made after it was sent (and then its subscriber's replay has it).
                        let jobs = self.lock_jobs();
                        for event in page.events {
                            cursor = event.id;
                            let job_tx = jobs.get(&event.job_id);
                            let event = FeedEvent::new(event);
                            if let Some(job_tx) = job_tx {
                                let _ = job_tx.send(event.clone());
                            }
                            // No receiver is not an error: nobody is watching.
                            let _ = self.tx.send(event);
                        }
                        drop(jobs);
                        if !full {
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
    fn subscribe(&self, filter: &EventFilter) -> broadcast::Receiver<Arc<FeedEvent>> {
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

    fn lock_jobs(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<JobId, broadcast::Sender<Arc<FeedEvent>>>> {
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
                        let page = events::list_after(&pool, &filter, last, PAGE).await?.events;
                        let full = page.len() as i64 == PAGE;
                        for event in page {
                            last = event.id;
                            let terminal = kinds::is_terminal(&event.kind);
                            yield StreamItem::Event(FeedEvent::new(event));
                            if terminal && filter.job_id.is_some() {
                                job_over = true;
                            }
                        }
                        if !full {
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
                    Ok(item) => {
                        if item.event.id <= last || !filter.matches(&item.event) {
                            continue;
                        }
                        last = item.event.id;
                        let terminal = kinds::is_terminal(&item.event.kind);
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
