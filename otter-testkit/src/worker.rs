//! [`Worker`]: an Otter worker running in the test's process beside a [`TestApp`], on its
//! database and queue, until it is stopped or dropped.

use std::sync::Arc;

use otter_core::isolation::Isolation;
use tokio_util::sync::CancellationToken;

use crate::TestApp;

/// A worker running in this process until dropped.
pub struct Worker {
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker on `app`'s database and queue that runs `vibe` (the program path,
    /// `OTTER_VIBE_BIN`), with the settings `extra` on top (later ones win). Retries wait
    /// 100 ms, not the production default, so tests of retries stay short.
    pub async fn start(app: &TestApp, vibe: &str, extra: &[(&str, &str)]) -> Self {
        let mut vars = vec![
            ("OTTER_VIBE_BIN", vibe),
            ("OTTER_RETRY_BASE_DELAY", "100ms"),
        ];
        vars.extend_from_slice(extra);
        let config = app.env.config(&vars);
        let isolation = Arc::new(Isolation::from_config(&config).expect("isolation"));
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            otter_worker::run(Arc::new(config), isolation, token)
                .await
                .expect("worker ran");
        });
        Self {
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops the worker as SIGTERM would (no new claims; running jobs get the shutdown grace)
    /// and waits for it to exit.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("worker task");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
