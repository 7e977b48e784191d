//! What a client changes of jobs: submit, cancel, pause, resume and move (the priority). Each is
//! one SQL function (`otter_insert_job`, `otter_cancel_job`, `otter_set_paused`,
//! `otter_set_priority`) that checks the job's state, changes it, writes its event and returns
//! the job as it now is, in one round trip. The functions answer "not found" and "conflict" with
//! the SQLSTATEs OT404 and OT409 ([`answer`]).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};

use super::JobRow;
use crate::db::DbError;
use crate::model::{Job, JobId, JobLimits, JobStatus, Workspace};

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
    /// The job it follows up (same workspace, checked by the caller).
    pub parent_job_id: Option<JobId>,
    /// The run's limits, defaults applied.
    pub limits: JobLimits,
    /// The vibe model alias for the run.
    pub model: Option<&'a str>,
}

/// Submits a job: the row and its `job_queued` event in one transaction.
#[tracing::instrument(skip_all, fields(workspace_id = %new.workspace.id), err(level = "debug"))]
pub async fn insert(pool: &PgPool, new: &NewJob<'_>) -> Result<Job, DbError> {
    let id = JobId::new();
    let (created_at, queue_at): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT * FROM otter_insert_job(p_id => $1, p_workspace_id => $2, p_project_id => $3,
                p_prompt => $4, p_priority => $5, p_max_attempts => $6,
                p_parent_job_id => $7, p_limits => $8, p_model => $9)",
    )
    .bind(id)
    .bind(new.workspace.id)
    .bind(new.workspace.project_id)
    .bind(new.prompt)
    .bind(new.priority)
    .bind(new.max_attempts)
    .bind(new.parent_job_id)
    .bind(sqlx::types::Json(new.limits))
    .bind(new.model)
    .fetch_one(pool)
    .await
    .map_err(|e| match DbError::from(e) {
        // The workspace was deleted between the request's lookup and this insert.
        e if e.is_constraint("jobs_workspace_id_fkey") => DbError::NotFound("workspace"),
        // So was the parent (its workspace deleted with its jobs).
        e if e.is_constraint("jobs_parent_job_id_fkey") => DbError::NotFound("parent job"),
        e => e,
    })?;
    if new.parent_job_id.is_some() {
        // The session id it inherited is the database's to tell.
        return super::get(pool, id).await;
    }
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
        parent_job_id: None,
        session_id: None,
        limits: new.limits,
        model: new.model.map(str::to_owned),
        queue_at,
        events_purged: false,
    })
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
    let query = sqlx::query_as("SELECT * FROM otter_set_paused(p_id => $1, p_paused => $2)");
    control(pool, query.bind(id).bind(paused)).await
}

/// The PostgreSQL channel that tells workers a running job was cancelled (payload: job id).
/// `otter_cancel_job` notifies on it.
pub const CANCEL_CHANNEL: &str = "otter_cancel";

/// Cancels a job. A queued job ends `cancelled` at once; a running one is marked
/// `cancel_requested` and its worker is told (NOTIFY on [`CANCEL_CHANNEL`], and the next lease
/// renewal as a backstop): it stops vibe's whole process group and records `cancelled`. A
/// finished job is a conflict. Returns the job as it now is.
#[tracing::instrument(skip_all, fields(job_id = %id), err(level = "debug"))]
pub async fn cancel(pool: &PgPool, id: JobId) -> Result<Job, DbError> {
    let query = sqlx::query_as("SELECT * FROM otter_cancel_job(p_id => $1)");
    control(pool, query.bind(id)).await
}

/// Changes a queued job's priority (its place in the queue).
#[tracing::instrument(skip_all, fields(job_id = %id), err(level = "debug"))]
pub async fn set_priority(pool: &PgPool, id: JobId, priority: i32) -> Result<Job, DbError> {
    let query = sqlx::query_as("SELECT * FROM otter_set_priority(p_id => $1, p_priority => $2)");
    control(pool, query.bind(id).bind(priority)).await
}

/// Runs a queue control's function, which returns the job as it leaves it.
async fn control(
    pool: &PgPool,
    query: QueryAs<'_, Postgres, JobRow, PgArguments>,
) -> Result<Job, DbError> {
    query.fetch_one(pool).await.map(Job::from).map_err(answer)
}

/// A queue control's error: its answers (OT404 "not found", OT409 a conflict whose message is
/// the client's) or a database failure.
fn answer(e: sqlx::Error) -> DbError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            Some("OT404") => return DbError::NotFound("job"),
            Some("OT409") => return DbError::Conflict(db.message().to_owned()),
            _ => {}
        }
    }
    DbError::from(e)
}
