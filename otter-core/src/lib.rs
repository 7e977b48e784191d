//! # otter-core
//!
//! The library under Otter's server and workers, usable on its own: domain types
//! ([`model`]), configuration ([`config`]), PostgreSQL repositories ([`db`]), the Redis queue
//! ([`queue`]), the live event feed ([`feed`]), operations that span them ([`service`]), the
//! process runner ([`runner`]) and what keeps its children contained ([`isolation`]), output on
//! its way to the event log ([`output`]), the vibe contract ([`vibe`]), workspaces and their `VIBE_HOME`
//! ([`workspace`]), safe file access inside a workspace ([`files`]), shell commands with
//! persistent sessions ([`shell`]), preview URLs ([`preview`]), runtime containers through the
//! Docker API ([`runtime`]), Prometheus metrics ([`metrics`]), Otter's instructions to vibe
//! ([`instructions`]) and the demo model's place in vibe's configuration ([`demo`]). It knows
//! nothing of HTTP.
//!
//! ## Embedding Otter
//!
//! A program can submit prompts and follow their events without the HTTP server. Below, the
//! worker runs in the same process (`otter-worker` is a library too; in production it is its own
//! process, on any machine), and a two-line shell script plays vibe. Run it against the
//! PostgreSQL and Redis of `scripts/services.sh` (`DATABASE_URL`, `REDIS_URL`).
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
pub mod workspace;

pub use config::{CgroupRoot, Config, ConfigError, HostName, Secret};
pub use db::DbError;
pub use feed::{EventFeed, StreamItem};
pub use queue::{Queue, QueueError};

/// Otter's migrations (the `migrations/` folder at the repository root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
