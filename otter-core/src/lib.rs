//! # otter-core
//!
//! The library under Otter's server and workers, usable on its own: domain types
//! ([`model`]), configuration ([`config`]), PostgreSQL repositories ([`db`]), the Redis queue
//! ([`queue`]), the live event feed ([`feed`]), operations that span them ([`service`]), the
//! process runner ([`runner`]) and what keeps its children contained ([`isolation`]), output on
//! its way to the event log ([`output`]), the vibe contract ([`vibe`]), workspaces and their
//! `VIBE_HOME` ([`workspace`]), file handles that cannot leave a directory ([`beneath`]), safe
//! file access inside a workspace ([`files`]), shell commands with
//! persistent sessions ([`shell`]), preview URLs ([`preview`]), runtime containers through the
//! Docker API ([`runtime`]), Prometheus metrics ([`metrics`]), Otter's instructions to vibe
//! ([`instructions`]) and the demo model's place in vibe's configuration ([`demo`]). It knows
//! nothing of HTTP.
//!
//! ## Embedding Otter: what to use
//!
//! A program can do what the HTTP API does without the server. These are its parts:
//!
//! - **Setting up:** [`Config`] (`from_env`, or `from_map` as below), [`db::connect`] and
//!   [`db::migrate`] (or [`MIGRATOR`]), [`Queue::connect`], and [`telemetry::init`] for logs.
//! - **Every change:** the functions of [`service`]. They check what the API checks and answer
//!   with a typed [`service::ServiceError`] (a project, workspace or job that does not exist is
//!   [`DbError::NotFound`], whatever a handler would have refused is `Invalid`, `TooLarge` or
//!   [`DbError::Conflict`]): [`service::create_project`], [`service::create_workspace`] (its
//!   project checked), [`service::submit_prompt`], [`service::pause_job`],
//!   [`service::resume_job`], [`service::cancel_job`], [`service::reprioritize_job`] and
//!   [`service::delete_workspace`] (checks, runtime container, row and `VIBE_HOME` in one call).
//! - **Reading:** the repositories' reads: `get` and `list` of [`db::projects`] and
//!   [`db::workspaces`], [`db::jobs::get`], [`db::jobs::list_queue`],
//!   [`db::jobs::list_history`], and [`db::events::page_after`] for stored history.
//! - **Following events live:** [`EventFeed`] (one per process), whose
//!   [`EventFeed::stream`] gives history then live events, each once, ending with
//!   [`StreamItem::End`].
//! - **Running the jobs:** `otter_worker::run` (the `otter-worker` crate is a library too), with
//!   an [`isolation::Isolation`] that says who vibe runs as. In production the worker is its own
//!   process, on any machine.
//! - **Optional parts**, each as the API uses it: workspace files ([`files`]), shell commands
//!   ([`shell`]), preview URLs ([`preview`]) and runtime containers ([`runtime::Runtime`]).
//!
//! ## Not the embedding API
//!
//! A job's lease protocol (claim, appending the run's events, lease renewal, finish) and the
//! event ids' maintenance are the worker's and the migrations' business: calling them beside a
//! worker breaks the fencing that keeps a job's state right. They are gathered, and documented
//! as such, in [`worker_api`]; an embedder runs jobs with `otter_worker::run` instead.
//!
//! ## Example
//!
//! Below, the worker runs in the same process and a two-line shell script plays vibe. Run it
//! against the PostgreSQL and Redis of `scripts/services.sh` (`DATABASE_URL`, `REDIS_URL`).
//!
//! ```
//! use std::sync::Arc;
//!
//! use futures::StreamExt;
//! use otter_core::db::events::EventFilter;
//! use otter_core::model::JobStatus;
//! use otter_core::service::{self, CreateWorkspace, SubmitPrompt};
//! use otter_core::{Config, EventFeed, Queue, StreamItem, db};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> anyhow::Result<()> {
//! # use std::os::unix::fs::PermissionsExt;
//! # // Scaffolding for the doc test: a database of its own and a stand-in for vibe.
//! # let scratch = std::env::temp_dir().join(format!("otter-doc-{}", uuid::Uuid::new_v4().simple()));
//! # std::fs::create_dir_all(&scratch)?;
//! # let vibe = scratch.join("vibe");
//! # std::fs::write(&vibe, "#!/bin/sh\necho '{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Done.\"}]}'\n")?;
//! # std::fs::set_permissions(&vibe, std::fs::Permissions::from_mode(0o755))?;
//! # let admin = std::env::var("DATABASE_URL")?;
//! # let db_name = format!("otter_test_{}", uuid::Uuid::new_v4().simple());
//! # sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&sqlx::PgPool::connect(&admin).await?).await?;
//! # let mut database_url = url::Url::parse(&admin)?;
//! # database_url.set_path(&db_name);
//! # let vars: std::collections::HashMap<String, String> = [
//! #     ("OTTER_DATABASE_URL", database_url.to_string()),
//! #     ("OTTER_REDIS_URL", std::env::var("REDIS_URL")?),
//! #     ("OTTER_QUEUE_NAME", db_name.clone()),
//! #     ("OTTER_VIBE_BIN", vibe.display().to_string()),
//! #     ("OTTER_VIBE_HOME_BASE", scratch.join("homes").display().to_string()),
//! # ].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
//! # let workspace_dir = scratch.join("workspace").display().to_string();
//! // Configuration as the binaries read it (here from a map instead of the environment).
//! let config = Config::from_map(&vars)?;
//! let pool = db::connect(&config).await?;
//! db::migrate(&pool).await?;
//! let queue = Queue::connect(config.redis_url.expose(), &config.queue_name).await?;
//! let shutdown = CancellationToken::new();
//! let feed = EventFeed::start(pool.clone(), shutdown.clone()).await?;
//! // Who vibe runs as (the job user, when this process is root), and how its processes are held.
//! let isolation = Arc::new(otter_core::isolation::Isolation::from_config(&config)?);
//! tokio::spawn(otter_worker::run(Arc::new(config.clone()), isolation.clone(), shutdown.clone()));
//!
//! let workspace = service::create_workspace(
//!     &pool,
//!     &config,
//!     CreateWorkspace { path: &workspace_dir, create: true, ..Default::default() },
//! )
//! .await?;
//! let job = service::submit_prompt(
//!     &pool,
//!     &queue,
//!     &config,
//!     SubmitPrompt { prompt: "Say done.", workspace_id: Some(workspace.id), ..Default::default() },
//! )
//! .await?;
//!
//! // History first, then live events, each once, until the job has ended.
//! let filter = EventFilter { job_id: Some(job.id), ..Default::default() };
//! let mut events = Box::pin(feed.stream(filter, 0));
//! while let Some(item) = events.next().await {
//!     match item? {
//!         StreamItem::Event(e) => println!("{} {}", e.kind, e.json),
//!         StreamItem::End => break,
//!     }
//! }
//! let job = db::jobs::get(&pool, job.id).await?;
//! assert_eq!(job.status, JobStatus::Succeeded);
//! assert_eq!(job.output.and_then(|o| o.final_text).as_deref(), Some("Done."));
//! shutdown.cancel();
//! # std::fs::remove_dir_all(&scratch).ok();
//! # isolation.remove_scope_if_empty();
//! # Ok(())
//! # }
//! ```

pub mod beneath;
pub mod checkpoint;
pub mod config;
pub mod db;
pub mod demo;
pub mod feed;
pub mod files;
pub mod instructions;
pub mod isolation;
pub mod metrics;
pub mod model;
pub mod output;
pub mod preview;
pub mod queue;
pub mod runner;
pub mod runtime;
pub mod service;
pub mod shell;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vibe;
pub mod webhooks;
pub mod workspace;

/// What only a worker (or a test of one) calls: a job's lease protocol and the event ids'
/// maintenance. Not the embedding API (see the crate's documentation): a program that embeds
/// Otter runs jobs with `otter_worker::run`, which holds the lease, fences every write with it
/// and renews it, and leaves event ids to [`db::migrate`].
///
/// The same items are reachable at their homes in [`db`]; this module names them as the
/// worker's.
pub mod worker_api {
    pub use crate::db::events::rebase_ids;
    pub use crate::db::jobs::{Claim, Finish, Lease, RunEnd, append_run_events, claim, finish};
}

pub use config::{ApiToken, CgroupRoot, Config, ConfigError, HostName, Secret};
pub use db::DbError;
pub use feed::{EventFeed, StreamItem};
pub use queue::{Queue, QueueError};

/// Otter's migrations (the `migrations/` folder at the repository root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
