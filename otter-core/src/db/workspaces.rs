//! The `workspaces` table.

use sqlx::PgPool;

use super::{DbError, Page, PageRequest};
use crate::model::{ProjectId, Workspace, WorkspaceId};

const COLUMNS: &str = "id, project_id, name, path, vibe_home, created_at";

/// Creates a workspace row. A second workspace on the same path is a conflict.
#[tracing::instrument(skip_all, fields(workspace_id = %id), err(level = "debug"))]
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

/// Which of `ids` are registered workspaces.
pub async fn existing_ids(pool: &PgPool, ids: &[WorkspaceId]) -> Result<Vec<WorkspaceId>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    Ok(
        sqlx::query_scalar("SELECT id FROM workspaces WHERE id = ANY($1)")
            .bind(&raw)
            .fetch_all(pool)
            .await?,
    )
}

/// What deleting a workspace removed from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeletedRows {
    /// Finished jobs deleted with it (their outputs and events went with them).
    pub jobs: u64,
}

/// Whether the workspace may be deleted (see [`delete`]): a conflict naming the reason if not.
pub async fn check_deletable<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Postgres>,
    id: WorkspaceId,
    with_jobs: bool,
) -> Result<(), DbError> {
    let (active, total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')), count(*)
         FROM jobs WHERE workspace_id = $1",
    )
    .bind(id)
    .fetch_one(executor)
    .await?;
    if active > 0 {
        return Err(DbError::Conflict(format!(
            "workspace {id} has {active} queued or running job(s): cancel them (POST /v1/jobs/{{id}}/cancel) and wait until they end"
        )));
    }
    if total > 0 && !with_jobs {
        return Err(DbError::Conflict(format!(
            "workspace {id} has {total} finished job(s) in its history: pass ?force=true to delete them and their events with it"
        )));
    }
    Ok(())
}

/// Deletes a workspace row, in one transaction that locks it first. Refused (conflict) while
/// one of its jobs is queued or running, and, unless `with_jobs`, while it has any job: with
/// `with_jobs`, its finished jobs are deleted too, and with them (by cascade) their outputs and
/// events. Rows of other tables that still point at it make the delete a conflict naming them.
#[tracing::instrument(skip_all, fields(workspace_id = %id), err(level = "debug"))]
pub async fn delete(
    pool: &PgPool,
    id: WorkspaceId,
    with_jobs: bool,
) -> Result<DeletedRows, DbError> {
    let mut tx = pool.begin().await?;
    let locked: Option<WorkspaceId> =
        sqlx::query_scalar("SELECT id FROM workspaces WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if locked.is_none() {
        return Err(DbError::NotFound("workspace"));
    }
    check_deletable(&mut *tx, id, with_jobs).await?;
    let jobs = sqlx::query("DELETE FROM jobs WHERE workspace_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let deleted = sqlx::query("DELETE FROM workspaces WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::from);
    match deleted {
        Ok(_) => {}
        Err(DbError::Sqlx(sqlx::Error::Database(e))) if e.is_foreign_key_violation() => {
            return Err(DbError::Conflict(format!(
                "workspace {id} is still referenced ({}): remove what refers to it first",
                e.table().unwrap_or("another table")
            )));
        }
        Err(e) => return Err(e),
    }
    tx.commit().await?;
    Ok(DeletedRows { jobs })
}
