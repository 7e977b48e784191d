//! What every handler shares: handles to PostgreSQL, the Redis queue and the live event feed,
//! and the configuration. All fields are cheap to clone.

use std::sync::Arc;

use otter_core::isolation::Isolation;
use otter_core::runtime::Runtime;
use otter_core::webhooks::Sender;
use otter_core::{Config, EventFeed, Queue};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The server's shared state.
#[derive(Clone)]
pub struct AppState {
    /// PostgreSQL, the source of truth.
    pub db: PgPool,
    /// The Redis queue.
    pub queue: Queue,
    /// The live event feed behind SSE.
    pub feed: EventFeed,
    /// The configuration read at start.
    pub config: Arc<Config>,
    /// Cancelled on shutdown: ends long-lived streams so graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// The runtime containers' manager; `None` unless `OTTER_RUNTIME_ENABLED=true`.
    pub runtime: Option<Arc<Runtime>>,
    /// Who the commands run as, and how their processes are kept track of.
    pub isolation: Arc<Isolation>,
    /// The webhook sender running in this process (woken after a redeliver).
    pub webhooks: Sender,
}
