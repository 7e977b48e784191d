//! `otter-worker`: claims jobs from the queue and runs vibe on them. Configuration comes from the
//! environment (see README.md); SIGINT or SIGTERM stop it gracefully.

use std::sync::Arc;

use anyhow::Context;
use otter_core::Config;
use otter_core::isolation::{self, Isolation};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // First: from here on no process of this user can read its environment or memory.
    isolation::harden_process().context("could not protect the worker's process")?;
    let config = Config::from_env().context("invalid configuration")?;
    otter_core::telemetry::init(config.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(otter_core::telemetry::cancel_on_signal(shutdown.clone()));
    let isolation = Arc::new(Isolation::from_config(&config).context("cannot run jobs")?);
    isolation
        .supervise_orphans(shutdown.clone())
        .context("cannot adopt the jobs' orphans")?;
    otter_worker::run(Arc::new(config), isolation, shutdown)
        .await
        .context("otter-worker failed")
}
