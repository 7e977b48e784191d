//! The Redis side of the queue. Redis carries job ids only; PostgreSQL decides (DESIGN.md §2).
//!
//! Keys, all under `otter:{<queue name>}:` (the braces keep them in one Redis Cluster slot):
//! - [`Queue::ready_key`]: sorted set of claimable job ids, scored in claim order (priority, then
//!   submission time), so the lowest score is the next job to run.
//! - [`Queue::delayed_key`]: sorted set of job ids backing off, scored by the time (ms) they
//!   become claimable; [`Queue::promote_due`] moves them to the ready set.
//!
//! A lost or duplicated id is harmless: a claim only becomes real through PostgreSQL's conditional
//! update, and the reconciler re-pushes every claimable job from PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::db::jobs::QueueEntry;
use crate::model::JobId;

/// Errors of the Redis queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis failed or is unreachable.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A handle on the queue's keys; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Scores: `(-priority) * PRIORITY_STEP + ms since 2020-01-01` of the job's turn
/// (`queue_at`, capped at 2049 by the submit). Priorities lie in -1000..=1000 and the time part
/// stays below 10^12 until 2051, so scores stay exact in an f64 and priority always wins.
const PRIORITY_STEP: f64 = 1e12;
const EPOCH_2020_MS: i64 = 1_577_836_800_000;

/// The claim-order score of a job of `priority` whose turn is `queue_at`.
pub fn score(priority: i32, queue_at: DateTime<Utc>) -> f64 {
    let since = (queue_at.timestamp_millis() - EPOCH_2020_MS).max(0);
    f64::from(-priority) * PRIORITY_STEP + since as f64
}

impl Queue {
    /// Connects to Redis. `name` separates independent queues (and tests) on one server.
    pub async fn connect(redis_url: &str, name: &str) -> Result<Self, QueueError> {
        Self::connect_with_timeout(redis_url, name, Duration::from_secs(5)).await
    }

    /// Connects with a response timeout; blocking pops need one longer than their own timeout.
    pub async fn connect_with_timeout(
        redis_url: &str,
        name: &str,
        response_timeout: Duration,
    ) -> Result<Self, QueueError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            prefix: format!("otter:{{{name}}}:"),
        })
    }

    /// The sorted set of claimable job ids.
    pub fn ready_key(&self) -> String {
        format!("{}ready", self.prefix)
    }

    /// The sorted set of job ids waiting for their retry time.
    pub fn delayed_key(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// Runs an idempotent command, once more if the connection had dropped: the connection
    /// manager reconnects only after a command fails, so without the second try the first
    /// command after a Redis restart would fail although Redis is back.
    async fn idempotent<T, F, Fut>(&self, op: F) -> Result<T, QueueError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                Ok(op(self.conn.clone()).await?)
            }
            other => Ok(other?),
        }
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.idempotent(|mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await?;
        Ok(())
    }

    /// Makes jobs claimable (or, when `run_after` is in the future, claimable then). Idempotent.
    pub async fn push(&self, entries: &[QueueEntry]) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut pipe = redis::pipe();
        for entry in entries {
            let id = entry.id.to_string();
            if entry.run_after > now {
                pipe.zadd(
                    self.delayed_key(),
                    &id,
                    entry.run_after.timestamp_millis() as f64,
                );
            } else {
                pipe.zadd(self.ready_key(), &id, score(entry.priority, entry.queue_at));
            }
        }
        self.idempotent(|mut conn| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        })
        .await
    }

    /// Takes the next job id, waiting up to `timeout` for one (Redis wakes the caller as soon as
    /// an id is pushed: no polling sets the dispatch latency). Use a dedicated `Queue` for this,
    /// connected with a response timeout longer than `timeout`.
    pub async fn pop(&self, timeout: Duration) -> Result<Option<JobId>, QueueError> {
        let mut conn = self.conn.clone();
        let popped: Option<(String, String, f64)> = conn
            .bzpopmin(self.ready_key(), timeout.as_secs_f64())
            .await?;
        Ok(popped.and_then(|(_, member, _)| match member.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                tracing::warn!(member = %member, "dropping a malformed job id from the queue");
                None
            }
        }))
    }

    /// Moves delayed ids whose time has come to the ready set; returns how many moved.
    pub async fn promote_due(&self) -> Result<usize, QueueError> {
        // Score in the ready set: the delayed job keeps its time of readiness as its FIFO position,
        // at priority 0; PostgreSQL's claim decides anyway and the reconciler re-scores it.
        let script = redis::Script::new(
            r"
            local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
            for _, id in ipairs(due) do
                redis.call('ZREM', KEYS[1], id)
                redis.call('ZADD', KEYS[2], 'NX', tonumber(ARGV[2]), id)
            end
            return #due
            ",
        );
        let now = Utc::now();
        let (delayed, ready) = (self.delayed_key(), self.ready_key());
        self.idempotent(|mut conn| {
            let mut invocation = script.key(&delayed);
            invocation
                .key(&ready)
                .arg(now.timestamp_millis())
                .arg(score(0, now));
            async move { invocation.invoke_async::<usize>(&mut conn).await }
        })
        .await
    }

    /// Number of ids in the ready set.
    pub async fn ready_len(&self) -> Result<usize, QueueError> {
        let key = self.ready_key();
        self.idempotent(|mut conn| {
            let key = key.clone();
            async move { conn.zcard(key).await }
        })
        .await
    }

    /// Removes a job id from both sets (the job was cancelled, paused or deleted).
    pub async fn remove(&self, id: JobId) -> Result<(), QueueError> {
        let id = id.to_string();
        let mut pipe = redis::pipe();
        pipe.zrem(self.ready_key(), &id)
            .zrem(self.delayed_key(), &id);
        self.idempotent(|mut conn| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        })
        .await
    }
}
