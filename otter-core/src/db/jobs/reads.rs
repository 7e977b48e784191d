//! What the API and the queue read of jobs: one job, the queue, the history, and the few
//! lookups other modules need. Nothing here changes a job.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{JobRow, JobToken, SELECT_JOBS};
use crate::db::{DbError, Page, PageRequest};
use crate::model::{Job, JobId, JobStatus, ProjectId, WorkspaceId};

/// One job, with its output once finished.
pub async fn get(pool: &PgPool, id: JobId) -> Result<Job, DbError> {
    sqlx::query_as::<_, JobRow>(&format!("{SELECT_JOBS} WHERE r.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(Job::from)
        .ok_or(DbError::NotFound("job"))
}

/// Queued jobs (all, or those of one vibe session) in claim order: priority (higher first),
/// then submission time.
pub async fn list_queue(
    pool: &PgPool,
    session_id: Option<&str>,
    page: PageRequest,
) -> Result<Page<Job>, DbError> {
    let items = sqlx::query_as::<_, JobRow>(
        "SELECT * FROM otter_job_rows WHERE status = 'queued'
           AND ($3::text IS NULL OR session_id = $3)
         ORDER BY priority DESC, queue_at, id LIMIT $1 OFFSET $2",
    )
    .bind(page.limit)
    .bind(page.offset)
    .bind(session_id)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = 'queued'
           AND ($1::text IS NULL OR session_id = $1)",
    )
    .bind(session_id)
    .fetch_one(pool)
    .await?;
    Ok(Page {
        items: items.into_iter().map(Job::from).collect(),
        total,
    })
}

/// Which finished jobs a history request wants.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only jobs that ended in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this workspace.
    pub workspace_id: Option<WorkspaceId>,
    /// Only jobs of this vibe session (a conversation).
    pub session_id: Option<String>,
}

/// Finished jobs, newest first.
pub async fn list_history(
    pool: &PgPool,
    filter: HistoryFilter,
    page: PageRequest,
) -> Result<Page<Job>, DbError> {
    let status = filter.status.map(JobStatus::as_str);
    let items = sqlx::query_as::<_, JobRow>(&format!(
        "{SELECT_JOBS} WHERE r.finished_at IS NOT NULL
           AND ($1::text IS NULL OR r.status = $1)
           AND ($2::uuid IS NULL OR r.workspace_id = $2)
           AND ($5::text IS NULL OR r.session_id = $5)
         ORDER BY r.finished_at DESC, r.id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(status)
    .bind(filter.workspace_id)
    .bind(page.limit)
    .bind(page.offset)
    .bind(filter.session_id.as_deref())
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL
           AND ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR workspace_id = $2)
           AND ($3::text IS NULL OR session_id = $3)",
    )
    .bind(status)
    .bind(filter.workspace_id)
    .bind(filter.session_id.as_deref())
    .fetch_one(pool)
    .await?;
    Ok(Page {
        items: items.into_iter().map(Job::from).collect(),
        total,
    })
}

/// Which jobs a job list wants (`GET /v1/jobs`): every filter that is set must match.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in one of these statuses (any status when empty).
    pub statuses: Vec<JobStatus>,
    /// Only jobs of this workspace.
    pub workspace_id: Option<WorkspaceId>,
    /// Only jobs of this project.
    pub project_id: Option<ProjectId>,
    /// Only jobs of this vibe session (a conversation).
    pub session_id: Option<String>,
}

/// Jobs of any status, newest first (by submission).
pub async fn list_jobs(
    pool: &PgPool,
    filter: &JobFilter,
    page: PageRequest,
) -> Result<Page<Job>, DbError> {
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    // Runtime-checked, as every read of `SELECT_JOBS` in this module.
    let items = sqlx::query_as::<_, JobRow>(&format!(
        "{SELECT_JOBS}
          WHERE (cardinality($1::text[]) = 0 OR r.status = ANY($1))
            AND ($2::uuid IS NULL OR r.workspace_id = $2)
            AND ($3::uuid IS NULL OR r.project_id = $3)
            AND ($4::text IS NULL OR r.session_id = $4)
          ORDER BY r.created_at DESC, r.id DESC LIMIT $5 OFFSET $6"
    ))
    .bind(&statuses)
    .bind(filter.workspace_id)
    .bind(filter.project_id)
    .bind(filter.session_id.as_deref())
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs
          WHERE (cardinality($1::text[]) = 0 OR status = ANY($1))
            AND ($2::uuid IS NULL OR workspace_id = $2)
            AND ($3::uuid IS NULL OR project_id = $3)
            AND ($4::text IS NULL OR session_id = $4)",
    )
    .bind(&statuses)
    .bind(filter.workspace_id)
    .bind(filter.project_id)
    .bind(filter.session_id.as_deref())
    .fetch_one(pool)
    .await?;
    Ok(Page {
        items: items.into_iter().map(Job::from).collect(),
        total,
    })
}

/// A queued job as the Redis queue needs it: its id and its place in claim order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueEntry {
    /// The job.
    pub id: JobId,
    /// Its priority.
    pub priority: i32,
    /// Its turn within the priority ([`Job::queue_at`]).
    pub queue_at: DateTime<Utc>,
    /// Not claimable before this.
    pub run_after: DateTime<Utc>,
}

impl QueueEntry {
    /// The queue entry of `job`.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            priority: job.priority,
            queue_at: job.queue_at,
            run_after: job.run_after,
        }
    }
}

/// Queued, unpaused jobs (all of them, or those of one workspace), in claim order; a follow-up
/// only once its parent has ended.
pub async fn claimable(
    pool: &PgPool,
    workspace_id: Option<WorkspaceId>,
    limit: i64,
) -> Result<Vec<QueueEntry>, DbError> {
    Ok(sqlx::query_as::<_, QueueEntry>(&format!(
        "{CLAIMABLE} AND ($1::uuid IS NULL OR workspace_id = $1)
         ORDER BY priority DESC, queue_at, id LIMIT $2"
    ))
    .bind(workspace_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The next claimable jobs of a project that has a limit on its running jobs (its
/// `max_running`, else `default_max_running`); none for a project without one, whose jobs are
/// never held back for it.
pub async fn claimable_in_project(
    pool: &PgPool,
    project_id: ProjectId,
    default_max_running: Option<i32>,
    limit: i64,
) -> Result<Vec<QueueEntry>, DbError> {
    Ok(sqlx::query_as::<_, QueueEntry>(&format!(
        "{CLAIMABLE} AND project_id = $1
           AND coalesce((SELECT max_running FROM projects WHERE id = $1), $2) IS NOT NULL
         ORDER BY priority DESC, queue_at, id LIMIT $3"
    ))
    .bind(project_id)
    .bind(default_max_running)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The queue entries of claimable jobs (queued, unpaused, not being cancelled, no parent still
/// pending), to be narrowed with `AND`.
const CLAIMABLE: &str = "SELECT id, priority, coalesce(queue_at, created_at) AS queue_at, run_after
    FROM jobs
    WHERE status = 'queued' AND NOT paused AND NOT cancel_requested
      AND NOT otter_parent_pending(parent_job_id)";

/// One job's place in the queue, if it is queued and unpaused.
pub async fn queue_entry(pool: &PgPool, id: JobId) -> Result<Option<QueueEntry>, DbError> {
    Ok(sqlx::query_as::<_, QueueEntry>(
        "SELECT id, priority, coalesce(queue_at, created_at) AS queue_at, run_after FROM jobs
         WHERE id = $1 AND status = 'queued' AND NOT paused AND NOT cancel_requested",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
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
    let Some(token) = JobToken::parse(token) else {
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
