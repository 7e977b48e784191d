//! A worker's leased run: claim, renew the lease, append the run's events, finish, and the
//! recovery of leases that expired. Each step is one SQL function (`otter_claim_job`,
//! `otter_renew_lease`, `otter_append_run_events`, `otter_finish_run`, `otter_recover_lease`),
//! one round trip. How a run ends (retried or not, and the closing event) is decided in SQL by
//! `otter_end_run`, for a finish and a recovery alike.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::millis;
use crate::db::checkpoints::AfterCheckpoint;
use crate::db::events::{self, EncodedEvent};
use crate::db::{self, DbError};
use crate::model::{Job, JobId, JobOutput, JobStatus};

/// The fencing token of one claim: every write of the run names it. Not a [`JobToken`]: the two
/// cannot be swapped.
///
/// ```compile_fail
/// use otter_core::db::jobs::{JobToken, Lease, LeaseToken};
/// fn swapped(lease: &Lease) -> (LeaseToken, JobToken) {
///     (lease.job_token, lease.token)
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct LeaseToken(Uuid);

impl LeaseToken {
    fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

/// What vibe presents to post its job's preview URL during one run (see
/// [`super::job_token_matches`]); drawn afresh at every claim, handed to vibe as
/// `OTTER_API_TOKEN`. Not a [`LeaseToken`]: the two cannot be swapped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct JobToken(Uuid);

impl JobToken {
    fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The token written as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(Self)
    }
}

impl fmt::Display for JobToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for JobToken {
    // A credential: never in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobToken(…)")
    }
}

/// A worker's hold on a running job. Every write of the run names the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The fencing token of this claim.
    pub token: LeaseToken,
    /// Which attempt this run is (1-based).
    pub attempt: i32,
    /// What vibe presents to post this job's preview URL during this run.
    pub job_token: JobToken,
}

/// What a claim attempt found.
#[derive(Debug)]
pub enum Claim {
    /// The job is ours to run.
    Claimed {
        /// The job as claimed (status `running`).
        job: Box<Job>,
        /// Our hold on it.
        lease: Lease,
    },
    /// Another job of the same workspace is running; this one waits for it (it is pushed back to
    /// the queue when that one ends).
    WorkspaceBusy,
    /// Its project runs as many jobs as it may (`max_running`, else
    /// `OTTER_PROJECT_MAX_RUNNING`); it waits (it is pushed back to the queue when one of them
    /// ends).
    ProjectBusy,
    /// The job is queued but backing off until the given time.
    NotYet(DateTime<Utc>),
    /// The claimant's model provider and key are rate limited until the given time (its
    /// `gate` is shut): nothing is claimed; the job waits, queued.
    RateLimited(DateTime<Utc>),
    /// The job is not claimable (gone, paused, already running or finished): drop the delivery.
    NotClaimable,
}

/// What `otter_claim_job` returns when another job of the workspace runs.
const CLAIM_WORKSPACE_BUSY: i32 = -1;
/// What `otter_claim_job` returns when the job's project runs as many jobs as it may.
const CLAIM_PROJECT_BUSY: i32 = -2;
/// What `otter_claim_job` returns when the claimant's rate limit gate is shut.
const CLAIM_RATE_LIMITED: i32 = -3;

/// Who claims, and by which rules.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// The worker's id (`OTTER_WORKER_ID`), recorded on the job.
    pub worker_id: &'a str,
    /// How long the lease holds unless renewed.
    pub lease_ttl: Duration,
    /// The most jobs of one project that may run at once, for a project that sets no
    /// `max_running` (`OTTER_PROJECT_MAX_RUNNING`; `None`: no limit).
    pub project_max_running: Option<i32>,
    /// The claimant's rate limit gate ([`rate_limit_gate`]): while it is shut, it claims
    /// nothing. `None`: none.
    pub gate: Option<&'a str>,
}

/// The rate limit gate of a model `provider` used with `key`: `<provider>:<first 16 hex digits
/// of SHA-256(key)>`, so that workers with the same provider and key share one gate, and the key
/// itself is stored nowhere.
pub fn rate_limit_gate(provider: &str, key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{provider}:{hex}")
}

/// A shut gate: until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct RateLimitGate {
    /// `<provider>:<hash of the key>`.
    pub gate: String,
    /// The provider's name.
    pub provider: String,
    /// When it opens.
    pub until: DateTime<Utc>,
    /// Rate limits in a row (its backoff doubles with each).
    pub hits: i32,
}

/// The gates shut now, soonest to open first.
pub async fn rate_limit_gates(pool: &PgPool) -> Result<Vec<RateLimitGate>, DbError> {
    Ok(sqlx::query_as(
        "SELECT gate, provider, until, hits FROM rate_limit_gates WHERE until > now() ORDER BY until",
    )
    .fetch_all(pool)
    .await?)
}

impl<'a> Claimant<'a> {
    /// `worker_id` claiming for `lease_ttl`, with no default project limit.
    pub fn new(worker_id: &'a str, lease_ttl: Duration) -> Self {
        Self {
            worker_id,
            lease_ttl,
            project_max_running: None,
            gate: None,
        }
    }
}

/// Tries to claim `id` for `claimant`: `queued` → `running` with a new lease, and a
/// `job_started` event, in one transaction. Duplicate or stale deliveries find nothing to claim.
#[tracing::instrument(skip_all, fields(job_id = %id), err)]
pub async fn claim(pool: &PgPool, id: JobId, claimant: &Claimant<'_>) -> Result<Claim, DbError> {
    let ttl = claimant.lease_ttl;
    let token = LeaseToken::new();
    let job_token = JobToken::new();
    let claimed: Result<Option<i32>, sqlx::Error> = sqlx::query_scalar(
        "SELECT otter_claim_job(p_id => $1, p_worker_id => $2, p_lease_token => $3,
                p_ttl_ms => $4, p_job_token => $5, p_project_max_running => $6, p_gate => $7)",
    )
    .bind(id)
    .bind(claimant.worker_id)
    .bind(token)
    .bind(millis(ttl))
    .bind(job_token)
    .bind(claimant.project_max_running)
    .bind(claimant.gate)
    .fetch_one(pool)
    .await;
    let attempt = match claimed.map_err(DbError::from) {
        Ok(Some(CLAIM_WORKSPACE_BUSY)) => return Ok(Claim::WorkspaceBusy),
        Ok(Some(CLAIM_PROJECT_BUSY)) => return Ok(Claim::ProjectBusy),
        Ok(Some(CLAIM_RATE_LIMITED)) => {
            let until: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT until FROM rate_limit_gates WHERE gate = $1")
                    .bind(claimant.gate)
                    .fetch_optional(pool)
                    .await?;
            return Ok(Claim::RateLimited(until.unwrap_or_else(Utc::now)));
        }
        Ok(Some(attempt)) => attempt,
        Ok(None) => {
            let row: Option<(JobStatus, bool, DateTime<Utc>)> =
                sqlx::query_as("SELECT status, paused, run_after FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            return Ok(match row {
                Some((JobStatus::Queued, false, run_after)) if run_after > Utc::now() => {
                    Claim::NotYet(run_after)
                }
                _ => Claim::NotClaimable,
            });
        }
        // Another job started first, or a restore of the workspace's files holds it
        // (`db::checkpoints::WorkspaceHold`): the job waits, queued.
        Err(e)
            if e.is_constraint("jobs_one_running_per_workspace")
                || e.is_constraint("jobs_workspace_restoring") =>
        {
            return Ok(Claim::WorkspaceBusy);
        }
        Err(e) => return Err(e),
    };
    // The claim is committed: from here a failed read would leave the job `running` under a
    // lease nobody renews until it expires. A blip (the database restarting) is waited out
    // within the lease.
    let job = db::retry_read(ttl / 2, || super::get(pool, id)).await?;
    Ok(Claim::Claimed {
        job: Box::new(job),
        lease: Lease {
            job_id: id,
            token,
            attempt,
            job_token,
        },
    })
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// Renewed; carry on.
    Held,
    /// Renewed, but a user asked for the job to be cancelled: stop the run.
    CancelRequested,
    /// The lease is gone (expired and recovered elsewhere): stop, write nothing more.
    Lost,
}

/// Renews a lease for `ttl` from now. [`LeaseRenewal::Lost`] means the lease is gone: the run
/// must stop.
pub async fn renew_lease(
    pool: &PgPool,
    lease: &Lease,
    ttl: Duration,
) -> Result<LeaseRenewal, DbError> {
    let cancel_requested: Option<bool> = sqlx::query_scalar(
        "SELECT otter_renew_lease(p_id => $1, p_lease_token => $2, p_ttl_ms => $3)",
    )
    .bind(lease.job_id)
    .bind(lease.token)
    .bind(millis(ttl))
    .fetch_one(pool)
    .await?;
    Ok(match cancel_requested {
        None => LeaseRenewal::Lost,
        Some(true) => LeaseRenewal::CancelRequested,
        Some(false) => LeaseRenewal::Held,
    })
}

/// Appends a run's events, only while `lease` still holds the job. `Ok(false)` means the lease
/// is gone and nothing was written. `batch_no` numbers the run's batches from 1: a retry of a
/// batch that was stored after all (the answer was lost with the connection) stores nothing
/// and returns `Ok(true)`, so a line is never stored twice.
pub async fn append_run_events(
    pool: &PgPool,
    lease: &Lease,
    batch_no: i64,
    batch: &[EncodedEvent],
) -> Result<bool, DbError> {
    if batch.is_empty() {
        return Ok(true);
    }
    let (kinds, payloads) = events::columns(batch);
    Ok(sqlx::query_scalar(
        "SELECT otter_append_run_events(p_id => $1, p_lease_token => $2, p_kinds => $3,
                p_payloads => $4, p_batch_no => $5)",
    )
    .bind(lease.job_id)
    .bind(lease.token)
    .bind(&kinds)
    .bind(&payloads)
    .bind(batch_no)
    .fetch_one(pool)
    .await?)
}

/// How a run ended, as the worker decided.
#[derive(Debug, Clone)]
pub enum RunEnd {
    /// vibe exited 0.
    Succeeded,
    /// The run failed; retry when attempts remain and `retryable`.
    Failed {
        /// Why, for the job's `error`.
        error: String,
        /// Whether another attempt could help.
        retryable: bool,
    },
    /// The run was stopped on a user's request.
    Cancelled,
    /// The worker gave the job back (shutdown): queued again at once, the attempt not counted.
    Released {
        /// Why, for the job's `error` and the event's `reason` (`worker_shutdown`).
        reason: String,
    },
}

/// Everything the worker reports when a run ends.
#[derive(Debug, Clone)]
pub struct Finish {
    /// How it ended.
    pub end: RunEnd,
    /// vibe's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// What the run left.
    pub output: Option<JobOutput>,
    /// Delay before the next attempt, used when the run is retried.
    pub retry_delay: Duration,
    /// What else the closing event says: its `setup` (what `setup.sh` did), kept in
    /// `job_succeeded`; other keys are not stored (each event kind has one payload shape).
    pub details: serde_json::Value,
    /// The run's last events not yet written (its last batch of lines), stored just before
    /// the closing event.
    pub events: Vec<EncodedEvent>,
    /// The checkpoint of the workspace taken after the run, for a job that has one from before
    /// it (`None`: nothing to record).
    pub checkpoint: Option<AfterCheckpoint>,
}

impl Finish {
    /// A run ended `end` (with `exit_code`), nothing more known yet: no output, no retry delay,
    /// no details, no last lines.
    pub fn new(end: RunEnd, exit_code: Option<i32>) -> Self {
        Self {
            end,
            exit_code,
            output: None,
            retry_delay: Duration::ZERO,
            details: json!({}),
            events: Vec::new(),
            checkpoint: None,
        }
    }
}

/// Ends a run: its last events, the job's new state, its output and the closing event in one
/// transaction, fenced by the lease. Returns the job's new status, or `None` if the lease was
/// lost (then nothing was written).
#[tracing::instrument(skip_all, fields(job_id = %lease.job_id), err)]
pub async fn finish<'a>(
    pool: &PgPool,
    lease: &Lease,
    finish: &'a Finish,
) -> Result<Option<JobStatus>, DbError> {
    let (end, retryable, error) = match &finish.end {
        RunEnd::Succeeded => ("succeeded", false, None),
        RunEnd::Failed { error, retryable } => ("failed", *retryable, Some(error.as_str())),
        RunEnd::Cancelled => ("cancelled", false, None),
        RunEnd::Released { reason } => ("released", false, Some(reason.as_str())),
    };
    let output = finish.output.as_ref();
    let (kinds, payloads) = events::columns(&finish.events);
    // What vibe left (its stderr in the error, its answer, its export) may hold a NUL.
    let text = |t: Option<&'a str>| t.map(db::storable);
    let error = text(error);
    let final_text = text(output.and_then(|o| o.final_text.as_deref()));
    let outcome = text(output.and_then(|o| o.outcome.as_deref()));
    let stop_reason = text(output.and_then(|o| o.stop_reason.as_deref()));
    let details = db::storable_json(&finish.details);
    let usage = output.and_then(|o| o.usage.as_ref()).map(db::storable_json);
    let export = output
        .and_then(|o| o.export.as_ref())
        .map(db::storable_json);
    Ok(sqlx::query_scalar(
        "SELECT otter_finish_run(p_id => $1, p_lease_token => $2, p_end => $3, p_retryable => $4,
                p_error => $5, p_exit_code => $6, p_retry_delay_ms => $7, p_details => $8,
                p_has_output => $9, p_final_text => $10, p_usage => $11, p_cost => $12,
                p_outcome => $13, p_stop_reason => $14, p_export => $15, p_kinds => $16,
                p_payloads => $17, p_checkpoint => $18)",
    )
    .bind(lease.job_id)
    .bind(lease.token)
    .bind(end)
    .bind(retryable)
    .bind(error.as_deref())
    .bind(finish.exit_code)
    .bind(millis(finish.retry_delay))
    .bind(&*details)
    .bind(output.is_some())
    .bind(final_text.as_deref())
    .bind(usage.as_deref())
    .bind(output.and_then(|o| o.cost))
    .bind(outcome.as_deref())
    .bind(stop_reason.as_deref())
    .bind(export.as_deref())
    .bind(&kinds)
    .bind(&payloads)
    .bind(finish.checkpoint.as_ref().map(AfterCheckpoint::to_json))
    .fetch_one(pool)
    .await?)
}

/// Recovers running jobs whose lease expired (their worker died or lost contact): each goes back
/// to the queue with a `job_retry_scheduled` event when attempts remain (reason `worker_lost`),
/// or fails with error `worker_lost` (or ends `cancelled`, when a cancel was requested). The
/// events written before the crash stay. Returns `(job, requeued)` pairs.
#[tracing::instrument(skip_all, err)]
pub async fn recover_expired(pool: &PgPool) -> Result<Vec<(JobId, bool)>, DbError> {
    let expired: Vec<JobId> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < now()
         ORDER BY lease_expires_at LIMIT 100",
    )
    .fetch_all(pool)
    .await?;
    let mut recovered = Vec::with_capacity(expired.len());
    // One statement per job: a transaction writes the events of one job only.
    for id in expired {
        // NULL: another reconciler was first.
        let status: Option<JobStatus> =
            sqlx::query_scalar("SELECT otter_recover_lease(p_id => $1)")
                .bind(id)
                .fetch_one(pool)
                .await?;
        if let Some(status) = status {
            recovered.push((id, status == JobStatus::Queued));
        }
    }
    Ok(recovered)
}
