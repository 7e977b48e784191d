//! The tables `webhooks`, `webhook_deliveries` and `webhook_attempts` (migration
//! `20261202000051_webhooks.sql`). Deliveries are made by the trigger on `events`, in the
//! event's own transaction; this module registers hooks, lists deliveries, and gives senders
//! their claims ([`claim`], [`record`]) so that no two send one delivery at the same time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{DbError, Page, PageRequest};
use crate::model::{DeliveryId, JobId, ProjectId, WebhookId, WorkspaceId};

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Where deliveries are posted.
    pub url: String,
    /// The event kinds delivered.
    pub events: Vec<String>,
    /// Only this project's events, when set.
    pub project_id: Option<ProjectId>,
    /// The operator's note.
    pub description: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed (a rotated secret).
    pub updated_at: DateTime<Utc>,
}

/// What registering a webhook needs (already checked by [`crate::webhooks`]).
#[derive(Debug)]
pub struct NewWebhook<'a> {
    /// The receiver's URL.
    pub url: &'a str,
    /// Event kinds.
    pub events: &'a [String],
    /// Only this project's events.
    pub project_id: Option<ProjectId>,
    /// A note.
    pub description: Option<&'a str>,
    /// The signing secret.
    pub secret: &'a str,
}

/// One try at sending a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// When it was made.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status; `None` when none came back.
    pub status_code: Option<i32>,
    /// How long it took, in milliseconds.
    pub duration_ms: i32,
    /// Why it failed (`None` for a 2xx).
    pub error: Option<String>,
}

/// A delivery of one event to one webhook, with its attempts.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    /// Sent as `Otter-Delivery`; the same on every attempt and redelivery.
    pub id: DeliveryId,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The event delivered.
    pub event_id: i64,
    /// Its kind (`Otter-Event`).
    pub kind: String,
    /// `pending`, `succeeded` or `failed` (given up).
    pub status: String,
    /// Attempts so far.
    pub attempt_count: i32,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt's HTTP status.
    pub last_status_code: Option<i32>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When a 2xx came back.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the event was written.
    pub created_at: DateTime<Utc>,
    /// Every attempt, oldest first.
    #[sqlx(json)]
    pub attempts: Vec<Attempt>,
}

const COLUMNS: &str = "id, url, events, project_id, description, created_at, updated_at";

/// Registers a webhook.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn insert(pool: &PgPool, new: &NewWebhook<'_>) -> Result<Webhook, DbError> {
    let result = sqlx::query_as::<_, Webhook>(&format!(
        "INSERT INTO webhooks (id, url, events, project_id, description, secret)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(WebhookId::new())
    .bind(new.url)
    .bind(new.events)
    .bind(new.project_id)
    .bind(new.description)
    .bind(new.secret)
    .fetch_one(pool)
    .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("webhooks_project_id_fkey") => {
            Err(DbError::NotFound("project"))
        }
        other => Ok(other?),
    }
}

/// The webhooks, newest first.
pub async fn list(pool: &PgPool, page: PageRequest) -> Result<Page<Webhook>, DbError> {
    let items = sqlx::query_as::<_, Webhook>(&format!(
        "SELECT {COLUMNS} FROM webhooks ORDER BY created_at DESC, id LIMIT $1 OFFSET $2"
    ))
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks")
        .fetch_one(pool)
        .await?;
    Ok(Page { items, total })
}

/// One webhook.
pub async fn get(pool: &PgPool, id: WebhookId) -> Result<Webhook, DbError> {
    sqlx::query_as::<_, Webhook>(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(DbError::NotFound("webhook"))
}

/// Deletes a webhook and its deliveries (a delivery being sent finishes, unrecorded).
#[tracing::instrument(skip_all, fields(webhook_id = %id), err(level = "debug"))]
pub async fn delete(pool: &PgPool, id: WebhookId) -> Result<(), DbError> {
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::NotFound("webhook"));
    }
    Ok(())
}

/// Replaces a webhook's secret; every attempt from now on is signed with the new one.
#[tracing::instrument(skip_all, fields(webhook_id = %id), err(level = "debug"))]
pub async fn set_secret(pool: &PgPool, id: WebhookId, secret: &str) -> Result<Webhook, DbError> {
    sqlx::query_as::<_, Webhook>(&format!(
        "UPDATE webhooks SET secret = $2 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(secret)
    .fetch_optional(pool)
    .await?
    .ok_or(DbError::NotFound("webhook"))
}

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.event_id, d.kind, d.status,
    d.attempts AS attempt_count,
    CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
    d.last_status_code, d.last_error, d.delivered_at, d.created_at,
    coalesce((SELECT json_agg(json_build_object('attempted_at', a.attempted_at,
                  'status_code', a.status_code, 'duration_ms', a.duration_ms, 'error', a.error)
                  ORDER BY a.id)
              FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::json) AS attempts";

/// A webhook's deliveries, newest first, each with its attempts.
pub async fn deliveries(
    pool: &PgPool,
    webhook: WebhookId,
    page: PageRequest,
) -> Result<Page<Delivery>, DbError> {
    get(pool, webhook).await?;
    let items = sqlx::query_as::<_, Delivery>(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.webhook_id = $1
         ORDER BY d.created_at DESC, d.event_id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(webhook)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(webhook)
            .fetch_one(pool)
            .await?;
    Ok(Page { items, total })
}

/// Makes a delivery due again now, with a fresh retry window, whatever became of it. One
/// being sent at this moment is left to that send.
#[tracing::instrument(skip_all, fields(delivery_id = %delivery), err(level = "debug"))]
pub async fn redeliver(
    pool: &PgPool,
    webhook: WebhookId,
    delivery: DeliveryId,
) -> Result<Delivery, DbError> {
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', retry_from = now(),
             next_attempt_at = CASE WHEN lease IS NOT NULL AND next_attempt_at > now()
                                    THEN next_attempt_at ELSE now() END
         WHERE id = $1 AND webhook_id = $2",
    )
    .bind(delivery)
    .bind(webhook)
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(DbError::NotFound("delivery"));
    }
    sqlx::query_as::<_, Delivery>(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = $1"
    ))
    .bind(delivery)
    .fetch_one(pool)
    .await
    .map_err(Into::into)
}

/// A delivery a sender holds: what to send and where.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// The delivery.
    pub id: DeliveryId,
    /// Its webhook.
    pub webhook_id: WebhookId,
    /// Attempts recorded before this one.
    pub attempts: i32,
    /// The lease that [`record`] must present.
    pub lease: Uuid,
    /// The receiver's URL.
    pub url: String,
    /// The webhook's current secret.
    pub secret: String,
    /// The event's kind.
    pub kind: String,
    /// When it was due before the claim (restored by [`release`]).
    pub due_at: DateTime<Utc>,
    /// The event.
    pub event_id: i64,
    /// Its job.
    pub job_id: JobId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Its project.
    pub project_id: Option<ProjectId>,
    /// Its per-job number.
    pub seq: i64,
    /// Its payload.
    pub payload: Value,
    /// When it was written.
    pub event_created_at: DateTime<Utc>,
    /// The job's status now.
    pub job_status: String,
    /// The job's last exit code.
    pub exit_code: Option<i32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// What it cost, once finished.
    pub cost: Option<f64>,
    /// Its preview URL.
    pub preview_url: Option<String>,
}

/// Claims up to `limit` due deliveries, oldest first, skipping those of the webhooks in
/// `skip` and those another sender is claiming right now (`SKIP LOCKED`). Each is held for
/// `lease_for`: nobody else claims it before then, unless [`record`] or [`release`] ends the
/// hold first. A sender that dies leaves it to be claimed again when the lease runs out.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    skip: &[WebhookId],
    lease_for: Duration,
) -> Result<Vec<Claimed>, DbError> {
    let lease = Uuid::new_v4();
    let rows = sqlx::query_as::<_, Claimed>(
        "WITH due AS (
             SELECT id, next_attempt_at FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= now() AND NOT (webhook_id = ANY ($2))
             ORDER BY next_attempt_at LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), held AS (
             UPDATE webhook_deliveries d
             SET lease = $3, next_attempt_at = now() + make_interval(secs => $4)
             FROM due WHERE d.id = due.id
             RETURNING d.id, d.webhook_id, d.event_id, d.kind, d.attempts, due.next_attempt_at AS due_at
         )
         SELECT h.id, h.webhook_id, h.attempts, $3 AS lease, w.url, w.secret, h.kind, h.due_at,
                e.id AS event_id, e.job_id, e.workspace_id, e.project_id, e.seq, e.payload,
                e.created_at AS event_created_at, j.status AS job_status, j.exit_code, j.error,
                o.cost, j.preview_url
         FROM held h
         JOIN webhooks w ON w.id = h.webhook_id
         JOIN events e ON e.id = h.event_id
         JOIN jobs j ON j.id = e.job_id
         LEFT JOIN job_outputs o ON o.job_id = e.job_id
         ORDER BY h.due_at",
    )
    .bind(limit)
    .bind(skip)
    .bind(lease)
    .bind(lease_for.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Hands a claimed delivery back unsent, due when it was.
pub async fn release(pool: &PgPool, claimed: &Claimed) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET lease = NULL, next_attempt_at = $3
         WHERE id = $1 AND lease = $2",
    )
    .bind(claimed.id)
    .bind(claimed.lease)
    .bind(claimed.due_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The receiver's status, if one came back.
    pub status_code: Option<u16>,
    /// Whether it was a 2xx.
    pub delivered: bool,
    /// How long it took.
    pub duration: Duration,
    /// Why it failed.
    pub error: Option<String>,
}

/// Records an attempt under the claim's lease, in one statement: the attempt row, and the
/// delivery `succeeded`, due again after `retry_in`, or `failed` when that would fall past
/// `retry_for` from its retry window's start. Returns false (and records nothing) when the
/// lease was lost (the delivery was deleted, or its lease ran out and another sender has it).
pub async fn record(
    pool: &PgPool,
    claimed: &Claimed,
    outcome: &Outcome,
    retry_in: Duration,
    retry_for: Duration,
) -> Result<bool, DbError> {
    let duration_ms = i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX);
    let recorded: Option<i64> = sqlx::query_scalar(
        "WITH d AS (
             UPDATE webhook_deliveries SET
                 attempts = attempts + 1, lease = NULL,
                 last_status_code = $3, last_error = $5,
                 status = CASE WHEN $6 THEN 'succeeded'
                               WHEN now() + make_interval(secs => $7)
                                    > retry_from + make_interval(secs => $8) THEN 'failed'
                               ELSE 'pending' END,
                 next_attempt_at = now() + make_interval(secs => $7),
                 delivered_at = CASE WHEN $6 THEN now() ELSE delivered_at END
             WHERE id = $1 AND lease = $2
             RETURNING id
         )
         INSERT INTO webhook_attempts (delivery_id, status_code, duration_ms, error)
         SELECT id, $3, $4, $5 FROM d RETURNING id",
    )
    .bind(claimed.id)
    .bind(claimed.lease)
    .bind(outcome.status_code.map(i32::from))
    .bind(duration_ms)
    .bind(
        outcome
            .error
            .as_deref()
            .map(|e| super::storable(e).into_owned()),
    )
    .bind(outcome.delivered)
    .bind(retry_in.as_secs_f64())
    .bind(retry_for.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(recorded.is_some())
}
