//! The `audit_log` table: who changed what. A row is written before the request it records is
//! acted on ([`begin`]) and completed with the answer ([`finish`]): a request whose row cannot be
//! written is refused, so nothing happens unrecorded.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{DbError, Page, PageRequest};

/// One recorded request.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// Increasing: newer entries have larger ids.
    pub id: i64,
    /// When the request came in.
    pub at: DateTime<Utc>,
    /// Who sent it: a token's name, `token:<fingerprint>`, `job:<id>` or `anonymous`.
    pub actor: String,
    /// The HTTP method.
    pub method: String,
    /// The route's template, e.g. `/v1/jobs/{id}/cancel`.
    pub route: String,
    /// The path as requested.
    pub path: String,
    /// The ids named in the path.
    pub target_ids: Vec<String>,
    /// The id of the object the request created, if it did.
    pub created_id: Option<String>,
    /// The answer's status; `None` when it was not recorded (the outcome is unknown).
    pub status: Option<i32>,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// When the answer was recorded.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a request is, before it is acted on.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Who sends it.
    pub actor: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The route's template.
    pub route: &'a str,
    /// The path.
    pub path: &'a str,
    /// The ids in the path.
    pub target_ids: &'a [String],
    /// The request id.
    pub request_id: Option<&'a str>,
}

/// Records that a request is about to be acted on; returns the entry's id.
pub async fn begin(pool: &PgPool, entry: &NewEntry<'_>) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO audit_log (actor, method, route, path, target_ids, request_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(super::storable(entry.actor).as_ref())
    .bind(entry.method)
    .bind(entry.route)
    .bind(super::storable(entry.path).as_ref())
    .bind(entry.target_ids)
    .bind(entry.request_id)
    .fetch_one(pool)
    .await?)
}

/// Records a request's answer.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    status: u16,
    created_id: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE audit_log SET status = $2, created_id = $3, finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(i32::from(status))
    .bind(created_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The filter of [`list`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this actor's entries.
    pub actor: Option<String>,
    /// Only entries naming this id (in the path, or as the created object).
    pub target_id: Option<String>,
}

/// Entries, newest first.
pub async fn list(
    pool: &PgPool,
    filter: &AuditFilter,
    page: PageRequest,
) -> Result<Page<AuditEntry>, DbError> {
    const WHERE: &str = "WHERE ($1::text IS NULL OR actor = $1)
          AND ($2::text IS NULL OR $2 = ANY (target_ids) OR created_id = $2)";
    let items = sqlx::query_as::<_, AuditEntry>(&format!(
        "SELECT id, at, actor, method, route, path, target_ids, created_id, status, request_id,
                finished_at
           FROM audit_log {WHERE} ORDER BY id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(filter.actor.as_deref())
    .bind(filter.target_id.as_deref())
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM audit_log {WHERE}"))
        .bind(filter.actor.as_deref())
        .bind(filter.target_id.as_deref())
        .fetch_one(pool)
        .await?;
    Ok(Page { items, total })
}
