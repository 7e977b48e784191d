//! Operations that combine the database, the filesystem, the queue and the runtime, shared by
//! the HTTP API and by programs that embed Otter: creating a project or a workspace (its project
//! checked), finding the default workspace, submitting a prompt, pausing, resuming, cancelling
//! and re-prioritising a job, deleting a workspace with everything Otter made for it; and what
//! a job changed, and undo (`changes`: [`job_changes`], [`job_diff`], [`restore_job`]).
//!
//! Each function checks what the API checks and answers in [`ServiceError`]: an embedder gets
//! the same refusals as an HTTP client, in one call, never a constraint violation of the tables.

mod changes;

pub use changes::{
    MAX_DIFF_PATH_BYTES, RestoreReport, RestoreTo, job_changes, job_diff, restore_job,
};

use std::path::Path;

use sqlx::PgPool;

use crate::checkpoint::{CheckpointError, Checkpoints};
use crate::config::Config;
use crate::db::checkpoints::WorkspaceHold;
use crate::db::jobs::{self, NewJob};
use crate::db::{DbError, projects, workspaces};
use crate::instructions;
use crate::model::{Job, JobId, JobLimits, Project, ProjectId, Workspace, WorkspaceId};
use crate::queue::Queue;
use crate::runtime::{Removed, Runtime, RuntimeError};
use crate::workspace::{self, WorkspaceError};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is not acceptable; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// A value is longer than Otter can take; the message names it and the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The project's budget is spent: no new prompt runs until it is raised.
    #[error("{0}")]
    BudgetExhausted(String),
    /// What was asked for existed once and was deleted for good (`OTTER_RETENTION`).
    #[error("{0}")]
    Gone(String),
    /// A workspace path was refused or could not be prepared.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The database refused or failed. A project, workspace or job that does not exist is
    /// [`DbError::NotFound`], a state that forbids the operation [`DbError::Conflict`].
    #[error(transparent)]
    Db(#[from] DbError),
    /// The runtime could not remove a workspace's container (Docker does not answer, or failed).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A checkpoint could not be read, taken or restored. A checkpoint missing from the store
    /// is [`CheckpointError::NotFound`], a bad path [`CheckpointError::InvalidPath`].
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A blocking task of the operation panicked or was cancelled: a bug, not the request's
    /// fault.
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A workspace to create.
#[derive(Debug, Clone, Default)]
pub struct CreateWorkspace<'a> {
    /// The project it belongs to.
    pub project_id: Option<ProjectId>,
    /// A name (defaults to the directory's name).
    pub name: Option<&'a str>,
    /// Absolute path of its directory.
    pub path: &'a str,
    /// Create the directory when it does not exist.
    pub create: bool,
}

/// Longest name of a project or a workspace, in characters (as the tables' checks count them:
/// PostgreSQL's `length` counts characters).
pub const MAX_NAME_CHARS: usize = 200;

/// Longest description of a project, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;

/// A project or workspace name, trimmed: 1 to [`MAX_NAME_CHARS`] characters.
pub fn check_name(name: &str) -> Result<&str, ServiceError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ServiceError::Invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters once trimmed (got {chars})"
        )));
    }
    Ok(name)
}

/// A project budget: a finite amount of USD, 0 or more.
pub fn check_budget(budget_usd: Option<f64>) -> Result<Option<f64>, ServiceError> {
    match budget_usd {
        Some(b) if !(b.is_finite() && b >= 0.0) => Err(ServiceError::Invalid(format!(
            "budget_usd must be a number of USD, 0 or more (got {b})"
        ))),
        other => Ok(other),
    }
}

/// The most jobs a project's `max_running` may allow.
pub const MAX_PROJECT_RUNNING: i64 = 100_000;

/// A project's `max_running`: a whole number from 1 to [`MAX_PROJECT_RUNNING`].
pub fn check_max_running(max_running: Option<i64>) -> Result<Option<i32>, ServiceError> {
    match max_running {
        None => Ok(None),
        Some(n) if (1..=MAX_PROJECT_RUNNING).contains(&n) => Ok(Some(n as i32)),
        Some(n) => Err(ServiceError::Invalid(format!(
            "max_running must be a whole number from 1 to {MAX_PROJECT_RUNNING} (got {n}); \
             null removes the limit"
        ))),
    }
}

/// What a project is created with besides its name and description.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProjectSettings {
    /// Its budget ([`check_budget`]); `None`: none.
    pub budget_usd: Option<f64>,
    /// The most of its jobs that run at once ([`check_max_running`]); `None`: the workers'
    /// `OTTER_PROJECT_MAX_RUNNING`.
    pub max_running: Option<i64>,
}

/// A change of a project's settings: each `Some` sets (or, with `Some(None)`, removes) one,
/// each `None` leaves it as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProjectChange {
    /// The budget.
    pub budget_usd: Option<Option<f64>>,
    /// The running jobs' limit.
    pub max_running: Option<Option<i64>>,
}

/// Creates a project: its name is checked by [`check_name`], its description holds at most
/// [`MAX_DESCRIPTION_CHARS`] characters, its settings by [`check_budget`] and
/// [`check_max_running`].
pub async fn create_project(
    pool: &PgPool,
    name: &str,
    description: Option<&str>,
    settings: ProjectSettings,
) -> Result<Project, ServiceError> {
    let name = check_name(name)?;
    let budget_usd = check_budget(settings.budget_usd)?;
    let max_running = check_max_running(settings.max_running)?;
    if let Some(chars) = description.map(|d| d.chars().count())
        && chars > MAX_DESCRIPTION_CHARS
    {
        return Err(ServiceError::Invalid(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters (got {chars})"
        )));
    }
    let project = projects::insert(pool, name, description, budget_usd, max_running).await?;
    tracing::info!(project_id = %project.id, "project created");
    Ok(project)
}

/// Changes a project's budget and running jobs' limit (see [`ProjectChange`]), checked as at
/// creation. A change of nothing is refused.
pub async fn update_project(
    pool: &PgPool,
    id: ProjectId,
    change: ProjectChange,
) -> Result<Project, ServiceError> {
    if change == ProjectChange::default() {
        return Err(ServiceError::Invalid(
            "nothing to change: give budget_usd and/or max_running (null removes either)"
                .to_owned(),
        ));
    }
    let budget_usd = change.budget_usd.map(check_budget).transpose()?;
    let max_running = change.max_running.map(check_max_running).transpose()?;
    let project = projects::update(pool, id, budget_usd, max_running).await?;
    tracing::info!(project_id = %id, budget_usd = ?project.budget_usd, max_running = ?project.max_running, "project settings changed");
    Ok(project)
}

/// Registers a workspace: checks its project (not found when it does not exist) and its path,
/// prepares its own `VIBE_HOME`, then inserts the row. If the row cannot be written, the home is
/// removed again: nothing is left half-made.
pub async fn create_workspace(
    pool: &PgPool,
    config: &Config,
    req: CreateWorkspace<'_>,
) -> Result<Workspace, ServiceError> {
    let name = req.name.map(check_name).transpose()?;
    if let Some(project_id) = req.project_id {
        projects::get(pool, project_id).await?;
    }
    let id = WorkspaceId::new();
    let home = workspace::vibe_home_path(config, id);
    let (path, home) = {
        let config = config.clone();
        let raw = req.path.to_owned();
        let create = req.create;
        tokio::task::spawn_blocking(move || -> Result<_, WorkspaceError> {
            let path = workspace::resolve_path(&config, &raw, create)?;
            workspace::provision_vibe_home(&config, &home, &path)?;
            Ok((path, home))
        })
        .await??
    };
    let name = match name {
        Some(name) => name.to_owned(),
        // A directory's name can be longer than a workspace's (up to 255 bytes).
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(MAX_NAME_CHARS).collect())
            .unwrap_or_else(|| "workspace".to_owned()),
    };
    let inserted = workspaces::insert(
        pool,
        id,
        req.project_id,
        &name,
        &path.display().to_string(),
        &home.display().to_string(),
    )
    .await;
    if inserted.is_err() {
        let _ = tokio::fs::remove_dir_all(&home).await;
    }
    let workspace = inserted?;
    tracing::info!(workspace_id = %workspace.id, path = %workspace.path, "workspace created");
    Ok(workspace)
}

/// The workspace for `OTTER_DEFAULT_WORKSPACE_PATH`, registered (and its directory created) on
/// first use. `None` when no default is configured.
pub async fn default_workspace(
    pool: &PgPool,
    config: &Config,
) -> Result<Option<Workspace>, ServiceError> {
    let Some(path) = &config.default_workspace_path else {
        return Ok(None);
    };
    let raw = path.display().to_string();
    if let Some(ws) = find_registered(pool, path).await? {
        return Ok(Some(ws));
    }
    let created = create_workspace(
        pool,
        config,
        CreateWorkspace {
            project_id: None,
            name: Some("default"),
            path: &raw,
            create: true,
        },
    )
    .await;
    match created {
        Ok(ws) => Ok(Some(ws)),
        // Another request registered it first.
        Err(ServiceError::Db(DbError::Conflict(_))) => Ok(find_registered(pool, path).await?),
        Err(e) => Err(e),
    }
}

/// The workspace a request names, or the default one when it names none.
pub async fn resolve_workspace(
    pool: &PgPool,
    config: &Config,
    workspace_id: Option<WorkspaceId>,
) -> Result<Workspace, ServiceError> {
    match workspace_id {
        Some(id) => Ok(workspaces::get(pool, id).await?),
        None => default_workspace(pool, config).await?.ok_or_else(|| {
            ServiceError::Invalid(
                "workspace_id is required (OTTER_DEFAULT_WORKSPACE_PATH is not set)".to_owned(),
            )
        }),
    }
}

async fn find_registered(pool: &PgPool, path: &Path) -> Result<Option<Workspace>, DbError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    workspaces::find_by_path(pool, &canonical.display().to_string()).await
}

/// A prompt to submit.
#[derive(Debug, Clone, Default)]
pub struct SubmitPrompt<'a> {
    /// The user's prompt, passed to vibe unchanged.
    pub prompt: &'a str,
    /// The workspace; the default one when `None`.
    pub workspace_id: Option<WorkspaceId>,
    /// Higher runs first (-1000..=1000, default 0).
    pub priority: Option<i32>,
    /// Runs allowed (1..=100, default `OTTER_MAX_ATTEMPTS`).
    pub max_attempts: Option<i32>,
    /// The job this one follows up: it runs in that job's workspace (`workspace_id`, when
    /// given, must be that one) and resumes its vibe session.
    pub parent_job_id: Option<JobId>,
    /// The run's limits; each one not set is `OTTER_DEFAULT_*`'s.
    pub limits: JobLimits,
    /// The vibe model alias for the run; one of `OTTER_VIBE_MODELS` when that is set.
    pub model: Option<&'a str>,
}

/// Longest model alias, in bytes.
pub const MAX_MODEL_BYTES: usize = 200;

/// A model alias a prompt asks for: 1 to [`MAX_MODEL_BYTES`] bytes of letters, digits and
/// `.-_:/@+`, and one of `OTTER_VIBE_MODELS` when that is set.
pub fn check_model<'a>(config: &Config, model: &'a str) -> Result<&'a str, ServiceError> {
    let fits = !model.is_empty()
        && model.len() <= MAX_MODEL_BYTES
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:/@+".contains(c));
    if !fits {
        return Err(ServiceError::Invalid(format!(
            "model must be a model alias of 1 to {MAX_MODEL_BYTES} letters, digits or .-_:/@+"
        )));
    }
    if !config.vibe_models.is_empty() && !config.vibe_models.iter().any(|m| m == model) {
        return Err(ServiceError::Invalid(format!(
            "model {model:?} is not allowed here; OTTER_VIBE_MODELS allows {}",
            config.vibe_models.join(", ")
        )));
    }
    Ok(model)
}

/// The workspace of a follow-up of `parent_id`: its parent's. Not found when the parent does
/// not exist; invalid when `workspace_id` names another workspace; a conflict when the parent
/// ended without a vibe session (nothing to resume). A parent still queued or running is
/// accepted: the follow-up waits for it, and fails if it leaves no session.
async fn follow_up_workspace(
    pool: &PgPool,
    parent_id: JobId,
    workspace_id: Option<WorkspaceId>,
) -> Result<Workspace, ServiceError> {
    let parent = match jobs::get(pool, parent_id).await {
        Err(DbError::NotFound(_)) => return Err(DbError::NotFound("parent job").into()),
        other => other?,
    };
    if let Some(asked) = workspace_id
        && asked != parent.workspace_id
    {
        return Err(ServiceError::Invalid(format!(
            "workspace_id {asked} is not the workspace of parent job {parent_id} ({}): a \
             follow-up runs in its parent's workspace; leave workspace_id out or give that one",
            parent.workspace_id
        )));
    }
    if parent.status.is_terminal() && parent.session_id.is_none() {
        return Err(DbError::Conflict(format!(
            "parent job {parent_id} has no vibe session to resume: it ended {} before vibe \
             started a session",
            parent.status.as_str()
        ))
        .into());
    }
    Ok(workspaces::get(pool, parent.workspace_id).await?)
}

/// Refuses a prompt for a project whose budget is spent.
async fn check_budget_left(pool: &PgPool, workspace: &Workspace) -> Result<(), ServiceError> {
    let Some(project_id) = workspace.project_id else {
        return Ok(());
    };
    let usage = projects::usage(pool, project_id).await?;
    if usage.exhausted() {
        return Err(ServiceError::BudgetExhausted(format!(
            "project {project_id} has spent its budget ({:.4} of {:.4} USD); raise budget_usd \
             (PATCH /v1/projects/{project_id}) to run more prompts",
            usage.spent_usd,
            usage.budget_usd.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Validates and stores a job, then pushes it to Redis. The prompt holds at most
/// [`instructions::max_prompt_bytes`] bytes. A Redis failure does not fail the
/// submission: the job is safe in PostgreSQL and the reconciler pushes it.
pub async fn submit_prompt(
    pool: &PgPool,
    queue: &Queue,
    config: &Config,
    req: SubmitPrompt<'_>,
) -> Result<Job, ServiceError> {
    if req.prompt.trim().is_empty() {
        return Err(ServiceError::Invalid("prompt must not be empty".to_owned()));
    }
    // vibe gets the prompt as one argument, which Linux bounds: a longer prompt would be
    // accepted here and fail at every run.
    let max = instructions::max_prompt_bytes(&config.api_base_url);
    if req.prompt.len() > max {
        return Err(ServiceError::TooLarge(format!(
            "prompt is {} bytes, but at most {max} bytes fit: vibe gets it, with Otter's \
             instructions, as one command-line argument, and Linux limits one argument to 128 KiB",
            req.prompt.len()
        )));
    }
    if req.prompt.contains('\0') {
        return Err(ServiceError::Invalid(
            "prompt must not contain NUL bytes".to_owned(),
        ));
    }
    let priority = req.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(ServiceError::Invalid(
            "priority must be between -1000 and 1000".to_owned(),
        ));
    }
    let max_attempts = req.max_attempts.unwrap_or(config.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(ServiceError::Invalid(
            "max_attempts must be between 1 and 100".to_owned(),
        ));
    }
    req.limits.check().map_err(ServiceError::Invalid)?;
    let limits = req.limits.or(config.default_limits);
    let model = req.model.map(|m| check_model(config, m)).transpose()?;
    let workspace = match req.parent_job_id {
        Some(parent) => follow_up_workspace(pool, parent, req.workspace_id).await?,
        None => resolve_workspace(pool, config, req.workspace_id).await?,
    };
    check_budget_left(pool, &workspace).await?;
    let job = jobs::insert(
        pool,
        &NewJob {
            workspace: &workspace,
            prompt: req.prompt,
            priority,
            max_attempts,
            parent_job_id: req.parent_job_id,
            limits,
            model,
        },
    )
    .await?;
    push(queue, &job).await;
    tracing::info!(job_id = %job.id, workspace_id = %workspace.id, priority, "job queued");
    Ok(job)
}

/// Pauses a queued job and takes it out of Redis (a stale id there would be dropped at claim
/// anyway).
pub async fn pause_job(pool: &PgPool, queue: &Queue, id: JobId) -> Result<Job, ServiceError> {
    let job = jobs::pause(pool, id).await?;
    if let Err(e) = queue.remove(id).await {
        tracing::debug!(job_id = %id, error = %e, "could not remove the paused job from Redis");
    }
    tracing::info!(job_id = %id, "job paused");
    Ok(job)
}

/// Resumes a paused job and pushes it to Redis so it can run at once.
pub async fn resume_job(pool: &PgPool, queue: &Queue, id: JobId) -> Result<Job, ServiceError> {
    let job = jobs::resume(pool, id).await?;
    push(queue, &job).await;
    tracing::info!(job_id = %id, "job resumed");
    Ok(job)
}

/// Cancels a job (see [`jobs::cancel`]).
pub async fn cancel_job(pool: &PgPool, queue: &Queue, id: JobId) -> Result<Job, ServiceError> {
    let job = jobs::cancel(pool, id).await?;
    if job.status.is_terminal()
        && let Err(e) = queue.remove(id).await
    {
        tracing::debug!(job_id = %id, error = %e, "could not remove the cancelled job from Redis");
    }
    tracing::info!(job_id = %id, status = job.status.as_str(), "job cancel requested");
    Ok(job)
}

/// Moves a queued job to another priority and re-scores it in Redis.
pub async fn reprioritize_job(
    pool: &PgPool,
    queue: &Queue,
    id: JobId,
    priority: i32,
) -> Result<Job, ServiceError> {
    if !(-1000..=1000).contains(&priority) {
        return Err(ServiceError::Invalid(
            "priority must be between -1000 and 1000".to_owned(),
        ));
    }
    let job = jobs::set_priority(pool, id, priority).await?;
    if !job.paused {
        push(queue, &job).await;
    }
    tracing::info!(job_id = %id, priority, "job priority changed");
    Ok(job)
}

async fn push(queue: &Queue, job: &Job) {
    if let Err(e) = queue.push(&[jobs::QueueEntry::of(job)]).await {
        tracing::warn!(job_id = %job.id, error = %e, "job not pushed to Redis; the reconciler will push it");
    }
}

/// What deleting a workspace removed (its directory is never touched: it is the user's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeletedWorkspace {
    /// Finished jobs deleted with it, their outputs and events included.
    pub jobs_deleted: u64,
    /// Whether its `VIBE_HOME` was removed.
    pub vibe_home_removed: bool,
    /// What was removed of its runtime; `None` when no runtime was given (it is disabled).
    pub runtime: Option<Removed>,
    /// Whether its checkpoints (in `OTTER_CHECKPOINT_DIR`) were removed.
    pub checkpoints_removed: bool,
}

/// Deletes a workspace and what Otter made for it, in this order:
///
/// 1. Refused (conflict) while one of its jobs is queued or running, and while it has finished
///    jobs unless `with_jobs`, which deletes them with their outputs and events; not found when
///    it does not exist. Refused too while a restore of its files is in progress (the delete
///    holds the workspace as a restore does, [`WorkspaceHold`]).
/// 2. Its runtime container and image, when a `runtime` is given: an engine that does not
///    answer refuses the delete ([`ServiceError::Runtime`]), so that nothing is left running
///    unseen.
/// 3. Its row (with its jobs when `with_jobs`), in one transaction that checks step 1 again
///    (see [`workspaces::delete`]).
/// 4. Its own `VIBE_HOME`, only when it is the folder Otter made for this workspace (named by
///    its id, and neither the workspace directory nor one of its parents).
/// 5. Its checkpoints, from `checkpoints` (a failure is logged: the delete has happened).
///
/// The workspace directory itself is never removed: it is the user's.
pub async fn delete_workspace(
    pool: &PgPool,
    runtime: Option<&Runtime>,
    checkpoints: &Checkpoints,
    id: WorkspaceId,
    with_jobs: bool,
) -> Result<DeletedWorkspace, ServiceError> {
    let workspace = workspaces::get(pool, id).await?;
    // Checked here first so that a refused delete does not remove the runtime container.
    workspaces::check_deletable(pool, id, with_jobs).await?;
    // Not while a restore writes the workspace's files from its checkpoints (a conflict), and
    // no job of it starts meanwhile.
    let hold = WorkspaceHold::take(pool, id).await?;
    let deleted = delete_held(pool, runtime, checkpoints, &workspace, with_jobs).await;
    hold.release().await;
    deleted
}

async fn delete_held(
    pool: &PgPool,
    runtime: Option<&Runtime>,
    checkpoints: &Checkpoints,
    workspace: &Workspace,
    with_jobs: bool,
) -> Result<DeletedWorkspace, ServiceError> {
    let id = workspace.id;
    let runtime = match runtime {
        Some(runtime) => Some(runtime.remove_workspace(id).await?),
        None => None,
    };
    let rows = workspaces::delete(pool, id, with_jobs).await?;
    let vibe_home_removed = remove_vibe_home(workspace).await;
    let checkpoints = checkpoints.clone();
    let checkpoints_removed =
        match tokio::task::spawn_blocking(move || checkpoints.remove_workspace(id)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(workspace_id = %id, error = %e, "checkpoints not removed");
                false
            }
            Err(e) => {
                tracing::error!(workspace_id = %id, error = %e, "removing the checkpoints failed");
                false
            }
        };
    tracing::info!(workspace_id = %id, jobs = rows.jobs, vibe_home_removed, checkpoints_removed, "workspace deleted");
    Ok(DeletedWorkspace {
        jobs_deleted: rows.jobs,
        vibe_home_removed,
        runtime,
        checkpoints_removed,
    })
}

/// Removes a deleted workspace's `VIBE_HOME` when it is the folder Otter made for it.
async fn remove_vibe_home(workspace: &Workspace) -> bool {
    let home = std::path::PathBuf::from(&workspace.vibe_home);
    let ours = home.is_absolute()
        && home.file_name() == Some(std::ffi::OsStr::new(&workspace.id.to_string()))
        && !Path::new(&workspace.path).starts_with(&home);
    if !ours {
        tracing::warn!(workspace_id = %workspace.id, home = %home.display(), "VIBE_HOME not removed: not a folder Otter made");
        return false;
    }
    match tokio::fs::remove_dir_all(&home).await {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(workspace_id = %workspace.id, home = %home.display(), error = %e, "VIBE_HOME not removed");
            false
        }
    }
}
