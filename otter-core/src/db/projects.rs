//! The `projects` table.

use sqlx::PgPool;

use super::{DbError, Page, PageRequest};
use crate::model::{Project, ProjectId};

/// Creates a project.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn insert(
    pool: &PgPool,
    name: &str,
    description: Option<&str>,
) -> Result<Project, DbError> {
    let project = sqlx::query_as::<_, Project>(
        "INSERT INTO projects (id, name, description) VALUES ($1, $2, $3)
         RETURNING id, name, description, created_at",
    )
    .bind(ProjectId::new())
    .bind(name)
    .bind(description)
    .fetch_one(pool)
    .await?;
    Ok(project)
}

/// One project.
pub async fn get(pool: &PgPool, id: ProjectId) -> Result<Project, DbError> {
    sqlx::query_as::<_, Project>(
        "SELECT id, name, description, created_at FROM projects WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(DbError::NotFound("project"))
}

/// Projects, oldest first.
pub async fn list(pool: &PgPool, page: PageRequest) -> Result<Page<Project>, DbError> {
    let items = sqlx::query_as::<_, Project>(
        "SELECT id, name, description, created_at FROM projects
         ORDER BY created_at, id LIMIT $1 OFFSET $2",
    )
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(pool)
        .await?;
    Ok(Page { items, total })
}
