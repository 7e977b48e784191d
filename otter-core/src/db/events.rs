//! The `events` table: the append-only log every client reads.
//!
//! All writes go through the SQL function `otter_insert_events` (by way of `otter_append_events`
//! or the state changes of migration 13). An event's id is derived from
//! the id of the transaction that wrote it (migration `20261124000012`), so writers never wait
//! for each other, but ids may become visible out of order. Readers of more than one job
//! therefore only take ids below the *horizon* (`otter_event_horizon()`): every id below it is
//! final, every id written later is above it, so a cursor that moves over them never misses a
//! smaller id committed later (invariant 6). One job's events become visible in id order (a
//! writer takes the job's lock before its first write), so a job's reader needs no horizon.
//!
//! A transaction that writes a job's events must not write anything before it has taken the
//! job's lock: [`lock_job`] (or `otter_append_events` itself, when it is the first write).

use serde_json::value::RawValue;
use sqlx::{PgConnection, PgPool};

use super::DbError;
use crate::model::{Event, JobId, NewEvent, ProjectId, WorkspaceId};

const COLUMNS: &str = "id, job_id, workspace_id, project_id, seq, kind, payload, created_at";

/// Which events a reader wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this job's events.
    pub job_id: Option<JobId>,
    /// Only this workspace's events.
    pub workspace_id: Option<WorkspaceId>,
    /// Only this project's events.
    pub project_id: Option<ProjectId>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.job_id.is_none_or(|id| event.job_id == id)
            && self.workspace_id.is_none_or(|id| event.workspace_id == id)
            && self
                .project_id
                .is_none_or(|id| event.project_id == Some(id))
    }
}

/// Appends `events` to `job_id`'s log, in order, inside the caller's transaction (the ids become
/// visible when it commits). Returns the `(id, seq)` given to each.
pub async fn append(
    conn: &mut PgConnection,
    job_id: JobId,
    events: &[NewEvent],
) -> Result<Vec<(i64, i64)>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let events = encode(events);
    let (kinds, payloads) = columns(&events);
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, seq FROM otter_append_events($1, $2, $3)")
            .bind(job_id)
            .bind(&kinds)
            .bind(&payloads)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows)
}

/// Takes the lock of `job_id`'s events for the rest of the transaction. Call it first in a
/// transaction that writes anything else before appending the job's events.
pub async fn lock_job(conn: &mut PgConnection, job_id: JobId) -> Result<(), DbError> {
    sqlx::query("SELECT otter_lock_job_events($1)")
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Keeps new event ids above the stored ones when the database's transaction ids restarted
/// lower (a dump restored into a new cluster): moves `event_ids.xid_base` down. In normal
/// operation it changes nothing. Run at startup, by [`super::migrate`].
pub async fn rebase_ids(pool: &PgPool) -> Result<(), DbError> {
    let rebased = sqlx::query(
        "UPDATE event_ids SET xid_base = pg_current_xact_id()::text::bigint
                                         - ((SELECT coalesce(max(id), 0) FROM events) >> 16) - 2
         WHERE (SELECT coalesce(max(id), 0) FROM events)
               >= (pg_current_xact_id()::text::bigint - xid_base) << 16",
    )
    .execute(pool)
    .await?;
    if rebased.rows_affected() > 0 {
        tracing::warn!(
            "stored event ids were above the next one (a restored dump?); new ids start above them"
        );
    }
    Ok(())
}

/// An event ready to be written: its payload already serialized to JSON text (NUL characters
/// replaced, see [`super::storable`]). A run's sink encodes its lines as they arrive, so that
/// writing a batch costs the writer only a copy, and the next batch is prepared while one is
/// written.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// What happened (see [`crate::model::kinds`]).
    pub kind: &'static str,
    /// Details, as JSON text.
    pub payload: Box<RawValue>,
}

impl EncodedEvent {
    /// Serializes `event`'s payload.
    pub fn new(event: &NewEvent) -> Self {
        let encode = |value: &serde_json::Value| {
            serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
        };
        let mut payload = encode(&event.payload);
        // serde_json writes a NUL as `\u0000`; the text can also appear as an escaped
        // backslash and `u0000`, which only costs this rare path a needless check.
        if payload.get().contains("\\u0000") {
            payload = encode(&super::storable_json(&event.payload));
        }
        Self {
            kind: event.kind,
            payload,
        }
    }

    /// The payload, parsed back (tests, and readers of a finish's events).
    pub fn payload_value(&self) -> serde_json::Value {
        serde_json::from_str(self.payload.get()).unwrap_or_default()
    }
}

/// Encodes `events` (see [`EncodedEvent`]).
pub fn encode(events: &[NewEvent]) -> Vec<EncodedEvent> {
    events.iter().map(EncodedEvent::new).collect()
}

/// `events` as the `kinds` and `payloads` arrays the SQL functions take.
pub(crate) fn columns(events: &[EncodedEvent]) -> (Vec<&str>, Vec<sqlx::types::Json<&RawValue>>) {
    (
        events.iter().map(|e| e.kind).collect(),
        events
            .iter()
            .map(|e| sqlx::types::Json(&*e.payload))
            .collect(),
    )
}

/// A job's events after `after` (an event id), oldest first, at most `limit`. No horizon is
/// needed: one job's events become visible in id order.
pub async fn list_for_job(
    pool: &PgPool,
    job_id: JobId,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, DbError> {
    Ok(sqlx::query_as::<_, Event>(&format!(
        "SELECT {COLUMNS} FROM events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(job_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// What [`list_after`] found.
#[derive(Debug, Default)]
pub struct AfterPage {
    /// Events after the cursor, oldest first: all final, none will ever appear before them.
    pub events: Vec<Event>,
    /// Whether newer events are stored but not final yet (an older transaction is still
    /// running): read again shortly.
    pub pending: bool,
}

/// Events matching `filter` after `after`, oldest first, at most `limit`, below the horizon
/// (with a job filter, every stored one: see the module's documentation).
pub async fn list_after(
    pool: &PgPool,
    filter: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<AfterPage, DbError> {
    if let Some(job_id) = filter.job_id {
        let events = list_for_job(pool, job_id, after, limit)
            .await?
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect();
        return Ok(AfterPage {
            events,
            pending: false,
        });
    }
    let rows = sqlx::query_as::<_, HorizonRow>(&format!(
        "SELECT {COLUMNS}, id < otter_event_horizon() AS final FROM events
         WHERE id > $1
           AND ($2::uuid IS NULL OR workspace_id = $2)
           AND ($3::uuid IS NULL OR project_id = $3)
         ORDER BY id LIMIT $4"
    ))
    .bind(after)
    .bind(filter.workspace_id)
    .bind(filter.project_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut page = AfterPage::default();
    for row in rows {
        // Final ids are a prefix of the ids in order: every id not final is above them all.
        if !row.is_final {
            page.pending = true;
            break;
        }
        page.events.push(row.event);
    }
    Ok(page)
}

#[derive(sqlx::FromRow)]
struct HorizonRow {
    #[sqlx(flatten)]
    event: Event,
    #[sqlx(rename = "final")]
    is_final: bool,
}

/// A cursor at the present: every event stored from now on, and every one not yet final, has
/// a greater id (the horizon minus one; 0 when there are no events).
pub async fn head(pool: &PgPool) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT greatest(otter_event_horizon() - 1, 0)")
            .fetch_one(pool)
            .await?,
    )
}

/// How many events a job has.
pub async fn count_for_job(pool: &PgPool, job_id: JobId) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM events WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(pool)
            .await?,
    )
}
