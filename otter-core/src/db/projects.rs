//! The `projects` table, and what a project's jobs cost (the view `otter_project_usage`).

use sqlx::PgPool;

use super::{DbError, Page, PageRequest};
use crate::model::{Project, ProjectId, ProjectUsage};

/// The columns of a [`Project`].
const COLUMNS: &str = "id, name, description, created_at, budget_usd, max_running";

/// Creates a project.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn insert(
    pool: &PgPool,
    name: &str,
    description: Option<&str>,
    budget_usd: Option<f64>,
    max_running: Option<i32>,
) -> Result<Project, DbError> {
    let project = sqlx::query_as::<_, Project>(&format!(
        "INSERT INTO projects (id, name, description, budget_usd, max_running)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(ProjectId::new())
    .bind(name)
    .bind(description)
    .bind(budget_usd)
    .bind(max_running)
    .fetch_one(pool)
    .await?;
    Ok(project)
}

/// One project.
pub async fn get(pool: &PgPool, id: ProjectId) -> Result<Project, DbError> {
    sqlx::query_as::<_, Project>(&format!("SELECT {COLUMNS} FROM projects WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(DbError::NotFound("project"))
}

/// Changes a project's settings: each `Some` sets its value (`Some(None)`: removes it), each
/// `None` leaves it.
#[tracing::instrument(skip_all, fields(project_id = %id), err(level = "debug"))]
pub async fn update(
    pool: &PgPool,
    id: ProjectId,
    budget_usd: Option<Option<f64>>,
    max_running: Option<Option<i32>>,
) -> Result<Project, DbError> {
    sqlx::query_as::<_, Project>(&format!(
        "UPDATE projects
         SET budget_usd = CASE WHEN $2 THEN $3 ELSE budget_usd END,
             max_running = CASE WHEN $4 THEN $5 ELSE max_running END
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(budget_usd.is_some())
    .bind(budget_usd.flatten())
    .bind(max_running.is_some())
    .bind(max_running.flatten())
    .fetch_optional(pool)
    .await?
    .ok_or(DbError::NotFound("project"))
}

/// What a project's jobs cost and used so far.
pub async fn usage(pool: &PgPool, id: ProjectId) -> Result<ProjectUsage, DbError> {
    sqlx::query_as::<_, ProjectUsage>(
        "SELECT project_id, budget_usd, spent_usd,
                CASE WHEN budget_usd IS NOT NULL THEN greatest(budget_usd - spent_usd, 0) END AS remaining_usd,
                prompt_tokens, completion_tokens, jobs
         FROM otter_project_usage WHERE project_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(DbError::NotFound("project"))
}

/// The usage of project `id` if it has a budget; `None` (without summing its jobs) if it has
/// none: what a run needs to know before it starts.
pub async fn usage_if_budgeted(
    pool: &PgPool,
    id: ProjectId,
) -> Result<Option<ProjectUsage>, DbError> {
    let budget: Option<Option<f64>> =
        sqlx::query_scalar("SELECT budget_usd FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    match budget {
        None => Err(DbError::NotFound("project")),
        Some(None) => Ok(None),
        Some(Some(_)) => usage(pool, id).await.map(Some),
    }
}

/// Projects, oldest first.
pub async fn list(pool: &PgPool, page: PageRequest) -> Result<Page<Project>, DbError> {
    let items = sqlx::query_as::<_, Project>(&format!(
        "SELECT {COLUMNS} FROM projects ORDER BY created_at, id LIMIT $1 OFFSET $2"
    ))
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(pool)
        .await?;
    Ok(Page { items, total })
}
