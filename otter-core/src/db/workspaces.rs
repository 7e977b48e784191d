//! The `workspaces` table.

use sqlx::PgPool;

use super::{DbError, Page, PageRequest};
use crate::model::{ProjectId, Workspace, WorkspaceId};

const COLUMNS: &str = "id, project_id, name, path, vibe_home, created_at";

/// Creates a workspace row. A second workspace on the same path is a conflict.
#[tracing::instrument(skip_all, fields(workspace_id = %id), err)]
pub async fn insert(
    pool: &PgPool,
    id: WorkspaceId,
    project_id: Option<ProjectId>,
    name: &str,
    path: &str,
    vibe_home: &str,
) -> Result<Workspace, DbError> {
    let result = sqlx::query_as::<_, Workspace>(&format!(
        "INSERT INTO workspaces (id, project_id, name, path, vibe_home) VALUES ($1, $2, $3, $4, $5)
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(project_id)
    .bind(name)
    .bind(path)
    .bind(vibe_home)
    .fetch_one(pool)
    .await;
    match result.map_err(DbError::from) {
        Err(e) if e.is_constraint("workspaces_path_key") => Err(DbError::Conflict(format!(
            "a workspace already exists for path {path}"
        ))),
        Err(e) if e.is_constraint("workspaces_project_id_fkey") => {
            Err(DbError::NotFound("project"))
        }
        other => other,
    }
}

/// One workspace.
pub async fn get(pool: &PgPool, id: WorkspaceId) -> Result<Workspace, DbError> {
    sqlx::query_as::<_, Workspace>(&format!("SELECT {COLUMNS} FROM workspaces WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(DbError::NotFound("workspace"))
}

/// The workspace registered for `path`, if any.
pub async fn find_by_path(pool: &PgPool, path: &str) -> Result<Option<Workspace>, DbError> {
    Ok(
        sqlx::query_as::<_, Workspace>(&format!(
            "SELECT {COLUMNS} FROM workspaces WHERE path = $1"
        ))
        .bind(path)
        .fetch_optional(pool)
        .await?,
    )
}

/// Workspaces, oldest first, optionally of one project.
pub async fn list(
    pool: &PgPool,
    project_id: Option<ProjectId>,
    page: PageRequest,
) -> Result<Page<Workspace>, DbError> {
    let items = sqlx::query_as::<_, Workspace>(&format!(
        "SELECT {COLUMNS} FROM workspaces WHERE ($1::uuid IS NULL OR project_id = $1)
         ORDER BY created_at, id LIMIT $2 OFFSET $3"
    ))
    .bind(project_id)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workspaces WHERE ($1::uuid IS NULL OR project_id = $1)",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await?;
    Ok(Page { items, total })
}
