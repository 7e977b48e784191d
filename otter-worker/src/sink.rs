//! The event sink of one run: stores what the run's processes and the worker send, in order,
//! in batches fenced by the run's lease. It only stores: batching is the event batcher's
//! ([`otter_core::output::batch`], [`BatchPolicy::RUN_OUTPUT`]), and what vibe's lines mean is
//! [`RunLog`]'s. The process's pipes never wait on it: the runner reads them into the channel as
//! fast as the child writes, within an output budget (see [`OUTPUT_BUDGET_BYTES`]); past it,
//! lines wait in a spill file on disk (see [`SPILL_MAX_BYTES`]) until the sink catches up.

use std::time::Duration;

use otter_core::db::events::EncodedEvent;
use otter_core::db::jobs::{self, Lease};
use otter_core::output::{BatchPolicy, Item, Store, batch};
use otter_core::vibe::RunLog;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

/// Bytes of a run's output that may wait for the database at once, counted as the runner counts
/// them (each line's text plus what a waiting line costs beyond it,
/// `otter_core::runner::LINE_OVERHEAD_BYTES`): far more than a healthy database ever lets pile
/// up, small enough that an outage cannot exhaust memory. Past it the lines wait on disk (see
/// [`SPILL_MAX_BYTES`]); nothing is dropped.
pub(crate) const OUTPUT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of a run's output that may wait on disk, in the run's directory, past
/// [`OUTPUT_BUDGET_BYTES`] (see `otter_core::runner::SpillSpec`): the child keeps writing at full
/// speed while the database catches up; past this much it blocks, as above.
pub(crate) const SPILL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// What the sink saw, once the run's senders are all gone.
#[derive(Debug, Default)]
pub(crate) struct SinkReport {
    /// What vibe's output told: its transcript and its last stderr lines.
    pub(crate) log: RunLog,
    /// The last batch, not written: it goes into the run's finish, in the same transaction as
    /// the closing event (one commit fewer per job; a watcher sees these lines with the end).
    pub(crate) tail: Vec<EncodedEvent>,
    /// The lease was lost: the job is no longer ours, nothing more was written.
    pub(crate) lease_lost: bool,
}

/// Stores a run's output until every sender of `rx` is gone.
/// `answered` is told whether vibe's last stdout line is an answer (see
/// [`RunLog::watching_answers`]).
pub(crate) async fn run(
    pool: PgPool,
    lease: Lease,
    rx: mpsc::UnboundedReceiver<Item>,
    answered: watch::Sender<bool>,
) -> SinkReport {
    let store = Leased { pool, lease };
    let log = RunLog::watching_answers(answered);
    let batched = batch::run(rx, log, store, BatchPolicy::RUN_OUTPUT).await;
    SinkReport {
        log: batched.encoder,
        tail: batched.held,
        lease_lost: batched.refused,
    }
}

/// Stores batches under the run's lease.
struct Leased {
    pool: PgPool,
    lease: Lease,
}

impl Store for Leased {
    /// Writes one batch, retrying while PostgreSQL is unreachable. Returns false if the lease
    /// is gone.
    async fn store(&mut self, batch_no: i64, batch: &[EncodedEvent]) -> bool {
        let lease = &self.lease;
        let mut delay = Duration::from_millis(100);
        loop {
            match jobs::append_run_events(&self.pool, lease, batch_no, batch).await {
                Ok(true) => return true,
                Ok(false) => {
                    tracing::warn!(job_id = %lease.job_id, "lease lost; the run's output is no longer recorded");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(job_id = %lease.job_id, error = %e, lines = batch.len(), "writing output failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The sink against a real PostgreSQL: every line stored once and in order, the last batch
    //! left for the finish, the budget given back, and nothing more written once the lease is
    //! gone. (How batches are formed is tested with the batcher, in `otter_core::output`.)

    use std::sync::Arc;
    use std::time::Duration;

    use otter_core::db::jobs::{self, Claim, NewJob};
    use otter_core::model::{JobId, OutputStream, WorkspaceId};
    use otter_core::runner::Line;
    use otter_core::testing::TestEnv;
    use sqlx::PgPool;
    use tokio::sync::{Semaphore, mpsc};

    use otter_core::output::Item;

    use super::SinkReport;

    const BUDGET: usize = 1 << 20;

    /// A claimed job and its running sink, fed as the runner feeds it.
    struct Run {
        pool: PgPool,
        id: JobId,
        budget: Arc<Semaphore>,
        tx: mpsc::UnboundedSender<Item>,
        sink: tokio::task::JoinHandle<SinkReport>,
    }

    impl Run {
        async fn start() -> Self {
            let env = TestEnv::new().await;
            let pool = PgPool::connect(&env.database_url).await.unwrap();
            otter_core::db::migrate(&pool).await.unwrap();
            let path = env.dir.join("ws").display().to_string();
            let ws = otter_core::db::workspaces::insert(
                &pool,
                WorkspaceId::new(),
                None,
                "ws",
                &path,
                &format!("{path}/.vibe"),
            )
            .await
            .unwrap();
            let new = NewJob {
                workspace: &ws,
                prompt: "p",
                priority: 0,
                max_attempts: 1,
                parent_job_id: None,
                limits: Default::default(),
                model: None,
            };
            let job = jobs::insert(&pool, &new).await.unwrap();
            let Claim::Claimed { lease, .. } = jobs::claim(
                &pool,
                job.id,
                &jobs::Claimant::new("w", Duration::from_secs(60)),
            )
            .await
            .unwrap() else {
                panic!("not claimed");
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let sink = tokio::spawn(super::run(
                pool.clone(),
                lease,
                rx,
                tokio::sync::watch::channel(false).0,
            ));
            Self {
                pool,
                id: job.id,
                budget: Arc::new(Semaphore::new(BUDGET)),
                tx,
                sink,
            }
        }

        /// Sends lines `from..to`, each holding 10 bytes of the budget.
        async fn send(&self, from: usize, to: usize) {
            for i in from..to {
                let permit = self.budget.clone().acquire_many_owned(10).await.unwrap();
                let line = Line {
                    stream: OutputStream::Stdout,
                    text: format!("line {i}"),
                    permit: Some(permit),
                };
                self.tx.send(line.into()).unwrap();
            }
        }

        /// Closes the run's output and waits for the sink's report.
        async fn end(self) -> SinkReport {
            drop(self.tx);
            tokio::time::timeout(Duration::from_secs(60), self.sink)
                .await
                .expect("the sink ended")
                .unwrap()
        }
    }

    /// The texts of the job's stored lines, in order.
    async fn stored(pool: &PgPool, id: JobId) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT payload->>'text' FROM events WHERE job_id = $1 AND kind = 'output_chunk' ORDER BY seq",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_flood_is_stored_once_in_order_with_the_last_batch_left_for_the_finish() {
        let run = Run::start().await;
        run.send(0, 5_000).await;
        let (pool, id, budget) = (run.pool.clone(), run.id, run.budget.clone());
        let report = run.end().await;
        assert!(!report.lease_lost);
        let mut all = stored(&pool, id).await;
        all.extend(report.tail.iter().map(|e| {
            e.payload_value()["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }));
        let want: Vec<String> = (0..5_000).map(|i| format!("line {i}")).collect();
        assert_eq!(all, want, "every line once, in order");
        assert_eq!(budget.available_permits(), BUDGET, "the budget given back");
    }

    #[tokio::test]
    async fn once_the_lease_is_gone_nothing_more_is_written_and_the_sink_ends() {
        let run = Run::start().await;
        let (pool, id, budget) = (run.pool.clone(), run.id, run.budget.clone());
        run.send(0, 100).await;
        otter_testkit::eventually(Duration::from_secs(30), "the first lines stored", || {
            let pool = pool.clone();
            async move { (stored(&pool, id).await.len() == 100).then_some(()) }
        })
        .await;
        // Another worker takes the job over.
        sqlx::query("UPDATE jobs SET lease_token = gen_random_uuid() WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        run.send(100, 3_000).await;
        let report = run.end().await;
        assert!(report.lease_lost);
        assert!(report.tail.is_empty(), "nothing left for the finish");
        assert_eq!(stored(&pool, id).await.len(), 100, "nothing written after");
        assert_eq!(budget.available_permits(), BUDGET, "the budget given back");
    }
}
