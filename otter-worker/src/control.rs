//! Stopping runs early. Each running job has a [`RunControl`]; a cancel request (PostgreSQL
//! NOTIFY on `otter_cancel`, or the next lease renewal), a lost lease, or the end of the
//! shutdown grace stops it, and the first cause is what the job's end records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use otter_core::db::jobs::CANCEL_CHANNEL;
use otter_core::model::JobId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

/// Why a run was stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// A user cancelled the job.
    UserCancel,
    /// The lease expired and the job was recovered elsewhere.
    LeaseLost,
    /// The worker is shutting down and its grace ran out.
    Shutdown,
}

/// The stop switch of one run.
#[derive(Debug)]
pub(crate) struct RunControl {
    token: CancellationToken,
    cause: OnceLock<StopCause>,
}

impl RunControl {
    /// A control that also fires when `shutdown` (the worker's job-stopping token) fires.
    pub(crate) fn new(shutdown: &CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            token: shutdown.child_token(),
            cause: OnceLock::new(),
        })
    }

    /// Stops the run for `cause` (the first cause sticks).
    pub(crate) fn stop(&self, cause: StopCause) {
        let _ = self.cause.set(cause);
        self.token.cancel();
    }

    /// The token the runner watches.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Why the run was stopped, if it was.
    pub(crate) fn cause(&self) -> Option<StopCause> {
        if !self.token.is_cancelled() {
            return None;
        }
        // Only the worker's shutdown cancels the token without naming a cause.
        Some(self.cause.get().copied().unwrap_or(StopCause::Shutdown))
    }
}

/// The controls of this worker's running jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Controls(Arc<Mutex<HashMap<JobId, Arc<RunControl>>>>);

impl Controls {
    pub(crate) fn register(&self, id: JobId, control: Arc<RunControl>) {
        self.lock().insert(id, control);
    }

    /// How many runs are going on.
    pub(crate) fn running(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn remove(&self, id: JobId) {
        self.lock().remove(&id);
    }

    fn cancel(&self, id: JobId) {
        if let Some(control) = self.lock().get(&id) {
            tracing::info!(job_id = %id, "cancel requested; stopping the run");
            control.stop(StopCause::UserCancel);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<RunControl>>> {
        // A panic while holding this short lock cannot leave the map inconsistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Listens for cancel requests until `shutdown`; reconnects after errors (the lease renewal
/// catches what a disconnected listener misses).
pub(crate) async fn listen(pool: PgPool, controls: Controls, shutdown: CancellationToken) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CANCEL_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = shutdown.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for cancel requests; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(n) => match n.payload().parse() {
                        Ok(id) => controls.cancel(id),
                        Err(_) => tracing::debug!(payload = n.payload(), "ignoring a malformed cancel notification"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cancel listener lost its connection");
                        break;
                    }
                },
            }
        }
    }
}
