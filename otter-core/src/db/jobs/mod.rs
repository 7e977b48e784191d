//! The `jobs` and `job_outputs` tables: a job's state and what its run left.
//!
//! Every change of a job's state is one SQL function of the migrations (the table of
//! `migrations/20261202000030_job_state_machine.sql`, docs/architecture.md "The job state
//! machine"), called here with named arguments in one round trip. This module is their typed
//! wrapper, in three files by concern:
//!
//! - `reads`: what the API and the queue read (a job, the queue, the history);
//! - `controls`: what a client changes (submit, cancel, pause, resume, move);
//! - `lease`: a worker's leased run (claim, renew the lease, append its events, finish) and the
//!   recovery of expired leases.
//!
//! A claim is real only through the conditional update of `otter_claim_job` (`queued` →
//! `running` with a fresh lease token); every later write of the run names that token, so a
//! worker that lost its lease can no longer change the job (fencing).

mod controls;
mod lease;
mod reads;

pub use controls::{CANCEL_CHANNEL, NewJob, cancel, insert, pause, resume, set_priority};
pub use lease::{
    Claim, Claimant, Finish, JobToken, Lease, LeaseRenewal, LeaseToken, RateLimitGate, RunEnd,
    append_run_events, claim, finish, rate_limit_gate, rate_limit_gates, recover_expired,
    renew_lease,
};
pub use reads::{
    HistoryFilter, JobFilter, QueueEntry, claimable, claimable_in_project, get, job_token_matches,
    latest_id_for_workspace, latest_preview_url, list_history, list_jobs, list_queue, queue_entry,
};

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{Job, JobId, JobLimits, JobOutput, JobStatus, ProjectId, WorkspaceId};

/// A job as the API reads it: the SQL view `otter_job_rows` (the row joined with its output),
/// which the queue controls also return.
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
    parent_job_id: Option<JobId>,
    session_id: Option<String>,
    limits: sqlx::types::Json<JobLimits>,
    model: Option<String>,
    queue_at: DateTime<Utc>,
    forced_exit: bool,
    events_purged: bool,
    /// The summary of the job's change set (`job_checkpoints`, joined by the reads that show
    /// outputs: [`SELECT_JOBS`]); absent from the rows of the queue controls, whose jobs are
    /// queued.
    #[sqlx(default)]
    files_changed: Option<i64>,
    #[sqlx(default)]
    additions: Option<i64>,
    #[sqlx(default)]
    deletions: Option<i64>,
}

/// The jobs as the API reads them, with the summary of their change sets.
pub(crate) const SELECT_JOBS: &str = "SELECT r.*, c.files_changed, c.additions, c.deletions
    FROM otter_job_rows r LEFT JOIN job_checkpoints c ON c.job_id = r.id";

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
            files_changed: r.files_changed.map(|n| n as u64),
            additions: r.additions.map(|n| n as u64),
            deletions: r.deletions.map(|n| n as u64),
            forced_exit: r.forced_exit,
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
            parent_job_id: r.parent_job_id,
            session_id: r.session_id,
            limits: r.limits.0,
            model: r.model,
            queue_at: r.queue_at,
            events_purged: r.events_purged,
        }
    }
}

/// `d` in milliseconds, as the SQL functions take durations.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
