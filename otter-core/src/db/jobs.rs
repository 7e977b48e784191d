//! The `jobs` and `job_outputs` tables: submitting, claiming, renewing and finishing jobs.
//!
//! A claim is real only through the conditional update in [`claim`] (`queued` → `running` with a
//! fresh lease token); every later write of the run names that token, so a worker that lost its
//! lease can no longer change the job (fencing).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::events::{self, EncodedEvent};
use super::{DbError, Page, PageRequest};
use crate::model::{
    Job, JobId, JobOutput, JobStatus, NewEvent, ProjectId, Workspace, WorkspaceId, kinds,
};

/// Columns of a job joined with its output (`o`).
const SELECT_JOB: &str = "SELECT j.id, j.workspace_id, j.project_id, j.prompt, j.status, j.paused, j.priority,
        j.attempts, j.max_attempts, j.exit_code, j.error, j.preview_url, j.run_after, j.cancel_requested, j.worker_id,
        j.lease_expires_at, j.created_at, j.started_at, j.finished_at,
        o.job_id IS NOT NULL AS has_output, o.final_text, o.usage, o.cost, o.outcome, o.stop_reason, o.export
    FROM jobs j LEFT JOIN job_outputs o ON o.job_id = j.id";

#[derive(sqlx::FromRow)]
struct JobRow {
    id: JobId,
    workspace_id: WorkspaceId,
    project_id: Option<ProjectId>,
    prompt: String,
    status: JobStatus,
    paused: bool,
    priority: i32,
    attempts: i32,
    max_attempts: i32,
    exit_code: Option<i32>,
    error: Option<String>,
    preview_url: Option<String>,
    run_after: DateTime<Utc>,
    cancel_requested: bool,
    worker_id: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    has_output: bool,
    final_text: Option<String>,
    usage: Option<serde_json::Value>,
    cost: Option<f64>,
    outcome: Option<String>,
    stop_reason: Option<String>,
    export: Option<serde_json::Value>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        let model = r
            .export
            .as_ref()
            .and_then(|e| e.get("model"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let output = r.has_output.then_some(JobOutput {
            final_text: r.final_text,
            usage: r.usage,
            cost: r.cost,
            outcome: r.outcome,
            stop_reason: r.stop_reason,
            export: r.export,
            model,
        });
        Job {
            id: r.id,
            workspace_id: r.workspace_id,
            project_id: r.project_id,
            prompt: r.prompt,
            status: r.status,
            paused: r.paused,
            priority: r.priority,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            exit_code: r.exit_code,
            error: r.error,
            preview_url: r.preview_url,
            run_after: r.run_after,
            cancel_requested: r.cancel_requested,
            worker_id: r.worker_id,
            lease_expires_at: r.lease_expires_at,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            output,
        }
    }
}

/// A job to submit.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Where it runs.
    pub workspace: &'a Workspace,
    /// The user's prompt (non-empty).
    pub prompt: &'a str,
    /// Higher runs first.
    pub priority: i32,
    /// Runs allowed.
    pub max_attempts: i32,
}

/// Submits a job: the row and its `job_queued` event in one transaction.
#[tracing::instrument(skip_all, fields(workspace_id = %new.workspace.id), err(level = "debug"))]
pub async fn insert(pool: &PgPool, new: &NewJob<'_>) -> Result<Job, DbError> {
    let id = JobId::new();
    let created_at: DateTime<Utc> =
        sqlx::query_scalar("SELECT otter_insert_job($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(new.workspace.id)
            .bind(new.workspace.project_id)
            .bind(new.prompt)
            .bind(new.priority)
            .bind(new.max_attempts)
            .fetch_one(pool)
            .await
            .map_err(|e| match DbError::from(e) {
                // The workspace was deleted between the request's lookup and this insert.
                e if e.is_constraint("jobs_workspace_id_fkey") => DbError::NotFound("workspace"),
                e => e,
            })?;
    // The row as the insert left it (the columns' defaults), without reading it back.
    Ok(Job {
        id,
        workspace_id: new.workspace.id,
        project_id: new.workspace.project_id,
        prompt: new.prompt.to_owned(),
        status: JobStatus::Queued,
        paused: false,
        priority: new.priority,
        attempts: 0,
        max_attempts: new.max_attempts,
        exit_code: None,
        error: None,
        preview_url: None,
        run_after: created_at,
        cancel_requested: false,
        worker_id: None,
        lease_expires_at: None,
        created_at,
        started_at: None,
        finished_at: None,
        output: None,
    })
}

async fn fetch(tx: &mut Transaction<'_, Postgres>, id: JobId) -> Result<Job, DbError> {
    sqlx::query_as::<_, JobRow>(&format!("{SELECT_JOB} WHERE j.id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(Job::from)
        .ok_or(DbError::NotFound("job"))
}

/// One job, with its output once finished.
pub async fn get(pool: &PgPool, id: JobId) -> Result<Job, DbError> {
    sqlx::query_as::<_, JobRow>(&format!("{SELECT_JOB} WHERE j.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(Job::from)
        .ok_or(DbError::NotFound("job"))
}

/// Queued jobs in claim order: priority (higher first), then submission time.
pub async fn list_queue(pool: &PgPool, page: PageRequest) -> Result<Page<Job>, DbError> {
    let items = sqlx::query_as::<_, JobRow>(&format!(
        "{SELECT_JOB} WHERE j.status = 'queued' ORDER BY j.priority DESC, j.created_at, j.id LIMIT $1 OFFSET $2"
    ))
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued'")
        .fetch_one(pool)
        .await?;
    Ok(Page {
        items: items.into_iter().map(Job::from).collect(),
        total,
    })
}

/// Which finished jobs a history request wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryFilter {
    /// Only jobs that ended in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this workspace.
    pub workspace_id: Option<WorkspaceId>,
}

/// Finished jobs, newest first.
pub async fn list_history(
    pool: &PgPool,
    filter: HistoryFilter,
    page: PageRequest,
) -> Result<Page<Job>, DbError> {
    let status = filter.status.map(JobStatus::as_str);
    let items = sqlx::query_as::<_, JobRow>(&format!(
        "{SELECT_JOB} WHERE j.finished_at IS NOT NULL
           AND ($1::text IS NULL OR j.status = $1)
           AND ($2::uuid IS NULL OR j.workspace_id = $2)
         ORDER BY j.finished_at DESC, j.id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(status)
    .bind(filter.workspace_id)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL
           AND ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR workspace_id = $2)",
    )
    .bind(status)
    .bind(filter.workspace_id)
    .fetch_one(pool)
    .await?;
    Ok(Page {
        items: items.into_iter().map(Job::from).collect(),
        total,
    })
}

/// A worker's hold on a running job. Every write of the run names the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The fencing token of this claim.
    pub token: Uuid,
    /// Which attempt this run is (1-based).
    pub attempt: i32,
    /// What vibe presents to post this job's preview URL during this run (see
    /// [`job_token_matches`]); drawn afresh at every claim.
    pub job_token: Uuid,
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
    /// The job is queued but backing off until the given time.
    NotYet(DateTime<Utc>),
    /// The job is not claimable (gone, paused, already running or finished): drop the delivery.
    NotClaimable,
}

/// Tries to claim `id` for `worker_id`: `queued` → `running` with a new lease, and a
/// `job_started` event, in one transaction. Duplicate or stale deliveries find nothing to claim.
#[tracing::instrument(skip_all, fields(job_id = %id), err)]
pub async fn claim(
    pool: &PgPool,
    id: JobId,
    worker_id: &str,
    ttl: Duration,
) -> Result<Claim, DbError> {
    let token = Uuid::new_v4();
    let job_token = Uuid::new_v4();
    let claimed: Result<Option<i32>, sqlx::Error> =
        sqlx::query_scalar("SELECT otter_claim_job($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(worker_id)
            .bind(token)
            .bind(millis(ttl))
            .bind(job_token)
            .fetch_one(pool)
            .await;
    let attempt = match claimed.map_err(DbError::from) {
        Ok(Some(CLAIM_WORKSPACE_BUSY)) => return Ok(Claim::WorkspaceBusy),
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
        Err(e) if e.is_constraint("jobs_one_running_per_workspace") => {
            return Ok(Claim::WorkspaceBusy);
        }
        Err(e) => return Err(e),
    };
    // The claim is committed: from here a failed read would leave the job `running` under a
    // lease nobody renews until it expires. A blip (the database restarting) is waited out
    // within the lease.
    let job = super::retry_read(ttl / 2, || get(pool, id)).await?;
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

/// Renews a lease. `Ok(false)` means the lease is gone: the run must stop.
pub async fn heartbeat(pool: &PgPool, lease: &Lease, ttl: Duration) -> Result<Heartbeat, DbError> {
    let row: Option<(bool,)> = sqlx::query_as(
        "UPDATE jobs SET lease_expires_at = now() + $3 * interval '1 millisecond'
         WHERE id = $1 AND lease_token = $2 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(lease.job_id)
    .bind(lease.token)
    .bind(millis(ttl))
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Heartbeat::Lost,
        Some((true,)) => Heartbeat::CancelRequested,
        Some((false,)) => Heartbeat::Held,
    })
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Renewed; carry on.
    Held,
    /// Renewed, but a user asked for the job to be cancelled: stop the run.
    CancelRequested,
    /// The lease is gone (expired and recovered elsewhere): stop, write nothing more.
    Lost,
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
    Ok(
        sqlx::query_scalar("SELECT otter_append_run_events($1, $2, $3, $4, $5)")
            .bind(lease.job_id)
            .bind(lease.token)
            .bind(&kinds)
            .bind(&payloads)
            .bind(batch_no)
            .fetch_one(pool)
            .await?,
    )
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
        /// Why, for the event.
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
    /// Extra fields for the final event's payload.
    pub details: serde_json::Value,
    /// The run's last events not yet written (its last batch of lines), stored just before
    /// the closing event.
    pub events: Vec<EncodedEvent>,
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
    let text = |t: Option<&'a str>| t.map(super::storable);
    let error = text(error);
    let final_text = text(output.and_then(|o| o.final_text.as_deref()));
    let outcome = text(output.and_then(|o| o.outcome.as_deref()));
    let stop_reason = text(output.and_then(|o| o.stop_reason.as_deref()));
    let details = super::storable_json(&finish.details);
    let usage = output
        .and_then(|o| o.usage.as_ref())
        .map(super::storable_json);
    let export = output
        .and_then(|o| o.export.as_ref())
        .map(super::storable_json);
    Ok(sqlx::query_scalar(
        "SELECT otter_finish_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
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
    .fetch_one(pool)
    .await?)
}

/// A queued job as the Redis queue needs it: its id and its place in claim order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueEntry {
    /// The job.
    pub id: JobId,
    /// Its priority.
    pub priority: i32,
    /// When it was submitted (FIFO within a priority).
    pub created_at: DateTime<Utc>,
    /// Not claimable before this.
    pub run_after: DateTime<Utc>,
}

impl QueueEntry {
    /// The queue entry of `job`.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            priority: job.priority,
            created_at: job.created_at,
            run_after: job.run_after,
        }
    }
}

/// Queued, unpaused jobs (all of them, or those of one workspace), in claim order.
pub async fn claimable(
    pool: &PgPool,
    workspace_id: Option<WorkspaceId>,
    limit: i64,
) -> Result<Vec<QueueEntry>, DbError> {
    Ok(sqlx::query_as::<_, QueueEntry>(
        "SELECT id, priority, created_at, run_after FROM jobs
         WHERE status = 'queued' AND NOT paused AND NOT cancel_requested
           AND ($1::uuid IS NULL OR workspace_id = $1)
         ORDER BY priority DESC, created_at, id LIMIT $2",
    )
    .bind(workspace_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// What `otter_claim_job` returns when another job of the workspace runs.
const CLAIM_WORKSPACE_BUSY: i32 = -1;

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One job's place in the queue, if it is queued and unpaused.
pub async fn queue_entry(pool: &PgPool, id: JobId) -> Result<Option<QueueEntry>, DbError> {
    Ok(sqlx::query_as::<_, QueueEntry>(
        "SELECT id, priority, created_at, run_after FROM jobs
         WHERE id = $1 AND status = 'queued' AND NOT paused AND NOT cancel_requested",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Recovers running jobs whose lease expired (their worker died or lost contact): each goes back
/// to the queue with a `job_retry_scheduled` event when attempts remain, or fails with reason
/// `worker_lost`. The events written before the crash stay. Returns `(job, requeued)` pairs.
#[tracing::instrument(skip_all, err)]
pub async fn recover_expired(pool: &PgPool) -> Result<Vec<(JobId, bool)>, DbError> {
    let expired: Vec<JobId> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < now()
         ORDER BY lease_expires_at LIMIT 100",
    )
    .fetch_all(pool)
    .await?;
    let mut recovered = Vec::with_capacity(expired.len());
    // One transaction per job: a transaction writes the events of one job only.
    for id in expired {
        if let Some(requeued) = recover_one(pool, id).await? {
            recovered.push((id, requeued));
        }
    }
    Ok(recovered)
}

/// Recovers `id` if its lease is still expired (another reconciler may have been first).
async fn recover_one(pool: &PgPool, id: JobId) -> Result<Option<bool>, DbError> {
    let mut tx = pool.begin().await?;
    events::lock_job(&mut tx, id).await?;
    let row: Option<(i32, i32, Option<String>, bool)> = sqlx::query_as(
        "SELECT attempts, max_attempts, worker_id, cancel_requested FROM jobs
         WHERE id = $1 AND status = 'running' AND lease_expires_at < now() FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((attempts, max_attempts, worker_id, cancel_requested)) = row else {
        return Ok(None);
    };
    let requeue = attempts < max_attempts && !cancel_requested;
    let status = if requeue {
        JobStatus::Queued
    } else if cancel_requested {
        JobStatus::Cancelled
    } else {
        JobStatus::Failed
    };
    sqlx::query(
        "UPDATE jobs SET status = $2, error = 'worker_lost', worker_id = NULL, lease_token = NULL,
                lease_expires_at = NULL, run_after = now(),
                finished_at = CASE WHEN $2 = 'queued' THEN NULL ELSE now() END
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(&mut *tx)
    .await?;
    let kind = match status {
        JobStatus::Queued => kinds::JOB_RETRY_SCHEDULED,
        JobStatus::Cancelled => kinds::JOB_CANCELLED,
        _ => kinds::JOB_FAILED,
    };
    let payload = json!({
        "attempt": attempts,
        "error": "worker_lost",
        "reason": "worker_lost",
        "worker_id": worker_id,
        "max_attempts": max_attempts,
    });
    events::append(&mut tx, id, &[NewEvent::new(kind, payload)]).await?;
    tx.commit().await?;
    Ok(Some(requeue))
}

/// The state a queue operation found the job in, for its error message.
fn state_name(status: JobStatus, paused: bool) -> &'static str {
    match (status, paused) {
        (JobStatus::Queued, true) => "paused",
        (status, _) => status.as_str(),
    }
}

/// Locks the job (its events, then its row) for a state change and returns `(status, paused)`.
async fn lock_job(
    tx: &mut Transaction<'_, Postgres>,
    id: JobId,
) -> Result<(JobStatus, bool), DbError> {
    events::lock_job(tx, id).await?;
    sqlx::query_as("SELECT status, paused FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DbError::NotFound("job"))
}

/// Pauses a queued job: it stays `queued` with `paused: true` and is never claimed. Pausing a
/// paused job changes nothing; any other state is a conflict.
#[tracing::instrument(skip_all, fields(job_id = %id), err(level = "debug"))]
pub async fn pause(pool: &PgPool, id: JobId) -> Result<Job, DbError> {
    set_paused(pool, id, true).await
}

/// Resumes a paused job: claimable at once. Resuming a queued, unpaused job changes nothing;
/// any other state is a conflict.
#[tracing::instrument(skip_all, fields(job_id = %id), err(level = "debug"))]
pub async fn resume(pool: &PgPool, id: JobId) -> Result<Job, DbError> {
    set_paused(pool, id, false).await
}

async fn set_paused(pool: &PgPool, id: JobId, paused: bool) -> Result<Job, DbError> {
    let mut tx = pool.begin().await?;
    match lock_job(&mut tx, id).await? {
        (JobStatus::Queued, current) if current == paused => {}
        (JobStatus::Queued, _) => {
            sqlx::query("UPDATE jobs SET paused = $2 WHERE id = $1")
                .bind(id)
                .bind(paused)
                .execute(&mut *tx)
                .await?;
            let kind = if paused {
                kinds::JOB_PAUSED
            } else {
                kinds::JOB_RESUMED
            };
            events::append(&mut tx, id, &[NewEvent::new(kind, json!({}))]).await?;
        }
        (status, current) => {
            let (wanted, verb) = if paused {
                ("queued", "paused")
            } else {
                ("paused", "resumed")
            };
            return Err(DbError::Conflict(format!(
                "only a {wanted} job can be {verb}; this one is {}",
                state_name(status, current)
            )));
        }
    }
    let job = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(job)
}

/// The PostgreSQL channel that tells workers a running job was cancelled (payload: job id).
pub const CANCEL_CHANNEL: &str = "otter_cancel";

/// Cancels a job. A queued job ends `cancelled` at once; a running one is marked
/// `cancel_requested` and its worker is told (NOTIFY on [`CANCEL_CHANNEL`], and the next lease
/// renewal as a backstop): it stops vibe's whole process group and records `cancelled`. A
/// finished job is a conflict. Returns the job as it now is.
#[tracing::instrument(skip_all, fields(job_id = %id), err(level = "debug"))]
pub async fn cancel(pool: &PgPool, id: JobId) -> Result<Job, DbError> {
    let mut tx = pool.begin().await?;
    match lock_job(&mut tx, id).await? {
        (JobStatus::Queued, _) => {
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', error = 'cancelled', finished_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            events::append(
                &mut tx,
                id,
                &[NewEvent::new(
                    kinds::JOB_CANCELLED,
                    json!({ "error": "cancelled", "while": "queued" }),
                )],
            )
            .await?;
        }
        (JobStatus::Running, _) => {
            sqlx::query("UPDATE jobs SET cancel_requested = true WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CANCEL_CHANNEL)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        (status, _) => {
            return Err(DbError::Conflict(format!(
                "the job has already finished ({})",
                status.as_str()
            )));
        }
    }
    let job = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(job)
}

/// Changes a queued job's priority (its place in the queue).
#[tracing::instrument(skip_all, fields(job_id = %id), err(level = "debug"))]
pub async fn set_priority(pool: &PgPool, id: JobId, priority: i32) -> Result<Job, DbError> {
    let mut tx = pool.begin().await?;
    let (status, paused) = lock_job(&mut tx, id).await?;
    if status != JobStatus::Queued {
        return Err(DbError::Conflict(format!(
            "only a queued job can be moved; this one is {}",
            state_name(status, paused)
        )));
    }
    let old: i32 = sqlx::query_scalar("SELECT priority FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if old != priority {
        sqlx::query("UPDATE jobs SET priority = $2 WHERE id = $1")
            .bind(id)
            .bind(priority)
            .execute(&mut *tx)
            .await?;
        events::append(
            &mut tx,
            id,
            &[NewEvent::new(
                kinds::JOB_PRIORITY_CHANGED,
                json!({ "from": old, "to": priority }),
            )],
        )
        .await?;
    }
    let job = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(job)
}

/// The id of the workspace's newest job, if it has any (runtime build logs are recorded on it).
pub async fn latest_id_for_workspace(
    pool: &PgPool,
    workspace_id: WorkspaceId,
) -> Result<Option<JobId>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM jobs WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(workspace_id)
    .fetch_optional(pool)
    .await?)
}

/// The preview URL most recently posted for one of the workspace's jobs (the newest job that
/// has one), if any.
pub async fn latest_preview_url(
    pool: &PgPool,
    workspace_id: WorkspaceId,
) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT preview_url FROM jobs WHERE workspace_id = $1 AND preview_url IS NOT NULL
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(workspace_id)
    .fetch_optional(pool)
    .await?)
}

/// Whether `token` is the job token of `id`'s current run (only a running job has one that
/// counts).
pub async fn job_token_matches(pool: &PgPool, id: JobId, token: &str) -> Result<bool, DbError> {
    let Ok(token) = Uuid::parse_str(token) else {
        return Ok(false);
    };
    let matches: Option<bool> =
        sqlx::query_scalar("SELECT job_token = $2 AND status = 'running' FROM jobs WHERE id = $1")
            .bind(id)
            .bind(token)
            .fetch_optional(pool)
            .await?;
    Ok(matches.unwrap_or(false))
}
