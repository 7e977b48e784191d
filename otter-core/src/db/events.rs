//! The `events` table: the append-only log every client reads.
//!
//! All writes go through the SQL function `otter_insert_events` (by way of `otter_append_events`
//! or the job state machine's functions, see [`super::jobs`]). An event's id is derived from
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
        self.matches_ids(event.job_id, event.workspace_id, event.project_id)
    }

    /// Whether an event of this job, workspace and project passes the filter.
    pub fn matches_ids(
        &self,
        job_id: JobId,
        workspace_id: WorkspaceId,
        project_id: Option<ProjectId>,
    ) -> bool {
        self.job_id.is_none_or(|id| job_id == id)
            && self.workspace_id.is_none_or(|id| workspace_id == id)
            && self.project_id.is_none_or(|id| project_id == Some(id))
    }
}

/// Appends `events` to `job_id`'s log, in order, inside the caller's transaction (the ids become
/// visible when it commits). Returns the `(id, seq)` given to each.
pub async fn append(
    conn: &mut PgConnection,
    job_id: JobId,
    events: &[NewEvent],
) -> Result<Vec<(i64, i64)>, DbError> {
    append_encoded(conn, job_id, &encode(events)).await
}

/// [`append`] for events already encoded (a batch of the event batcher,
/// [`crate::output::batch`]).
pub async fn append_encoded(
    conn: &mut PgConnection,
    job_id: JobId,
    events: &[EncodedEvent],
) -> Result<Vec<(i64, i64)>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let (kinds, payloads) = columns(events);
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

/// Payload bytes of a page of events when nothing else is configured
/// (`OTTER_EVENT_PAGE_MAX_BYTES`).
pub const PAGE_MAX_BYTES: usize = 1024 * 1024;

/// A stored event with its payload as JSON text, never parsed into a tree of values: what the
/// API sends, read with as little memory as the text itself. Serializes like
/// [`crate::model::Event`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RawEvent {
    /// Global, increasing id.
    pub id: i64,
    /// The job it belongs to.
    pub job_id: JobId,
    /// The job's workspace.
    pub workspace_id: WorkspaceId,
    /// The job's project, if any.
    pub project_id: Option<ProjectId>,
    /// Position within the job's own events, from 1.
    pub seq: i64,
    /// What happened (see [`crate::model::kinds`]).
    pub kind: String,
    /// Details, as compact JSON text.
    pub payload: Box<RawValue>,
    /// When it was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl RawEvent {
    /// The event with its payload parsed.
    pub fn into_event(self) -> Event {
        Event {
            payload: serde_json::from_str(self.payload.get()).unwrap_or_default(),
            id: self.id,
            job_id: self.job_id,
            workspace_id: self.workspace_id,
            project_id: self.project_id,
            seq: self.seq,
            kind: self.kind,
            created_at: self.created_at,
        }
    }
}

/// A page of events: oldest first, at most `limit` of them, and payloads of at most `max_bytes`
/// in all, as PostgreSQL writes them (its JSON text, a little longer than the compact form
/// sent), except that the first event always comes, however large.
#[derive(Debug, Default)]
pub struct EventPage {
    /// The events, all final: none will ever appear before them.
    pub events: Vec<RawEvent>,
    /// The page stopped at `max_bytes`: more events follow (read on after the last).
    pub truncated: bool,
    /// Newer events are stored but not final yet (an older transaction is still running):
    /// read again shortly. Never set for one job's events.
    pub pending: bool,
}

impl EventPage {
    /// Whether more events may be read right away after this page (it was full, by count or
    /// by bytes, and did not stop at events still pending).
    pub fn more(&self, limit: i64) -> bool {
        !self.pending && (self.truncated || self.events.len() as i64 >= limit)
    }

    /// Payload bytes of the page, as sent (compact JSON).
    pub fn payload_bytes(&self) -> usize {
        self.events.iter().map(|e| e.payload.get().len()).sum()
    }
}

/// One row of a page query. Past the last event that fits, the query returns one more row
/// without its payload (`fits` false): it says the page was cut by bytes.
#[derive(sqlx::FromRow)]
struct PageRow {
    id: i64,
    job_id: JobId,
    workspace_id: WorkspaceId,
    project_id: Option<ProjectId>,
    seq: i64,
    kind: String,
    created_at: chrono::DateTime<chrono::Utc>,
    payload: Option<String>,
    fits: bool,
    #[sqlx(rename = "final")]
    is_final: bool,
}

/// Wraps `inner` (the rows a page may hold, in id order, with their `payload_bytes`, `final`
/// and the other columns) in the running sum that cuts it at `$max` bytes: rows that fit (the
/// first always does), and the first one that does not, without its payload (the row before it
/// fits, so it is the second row or it starts within the cap). The payloads past the cut are neither
/// read nor converted, and those of events stored before `payload_bytes` existed are measured
/// here.
macro_rules! paged {
    ($inner:expr, $max:literal) => {
        concat!(
            "SELECT id, job_id, workspace_id, project_id, seq, kind, created_at, final,
                    CASE WHEN n = 1 OR upto <= ", $max, " THEN payload::text END AS payload,
                    n = 1 OR upto <= ", $max, " AS fits
             FROM (SELECT p.*, row_number() OVER w AS n, sum(p.size) OVER w AS upto
                   FROM (SELECT e.*, coalesce(e.payload_bytes, octet_length(e.payload::text)) AS size
                         FROM (", $inner, ") e) p
                   WINDOW w AS (ORDER BY p.id ROWS UNBOUNDED PRECEDING)) c
             WHERE n <= 2 OR upto - size <= ", $max, "
             ORDER BY id"
        )
    };
}

/// One job's events: no horizon is needed (one job's events become visible in id order).
const JOB_PAGE: &str = paged!(
    "SELECT id, job_id, workspace_id, project_id, seq, kind, payload, payload_bytes, created_at,
            true AS final
     FROM events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    "$4"
);

/// Everything, or one workspace's or project's events, with the horizon (module documentation).
const FILTERED_PAGE: &str = paged!(
    "SELECT id, job_id, workspace_id, project_id, seq, kind, payload, payload_bytes, created_at,
            id < otter_event_horizon() AS final
     FROM events
     WHERE id > $1
       AND ($2::uuid IS NULL OR workspace_id = $2)
       AND ($3::uuid IS NULL OR project_id = $3)
     ORDER BY id LIMIT $4",
    "$5"
);

/// A page of the events matching `filter` after `after` (an event id): see [`EventPage`]. With
/// a job filter, every stored event of the job; otherwise only those below the horizon. The
/// rows are read as a stream and each is kept as compact JSON text as it comes: the page holds
/// no more than its events' text.
pub async fn page_after(
    pool: &PgPool,
    filter: &EventFilter,
    after: i64,
    limit: i64,
    max_bytes: usize,
) -> Result<EventPage, DbError> {
    let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    // Runtime queries: both are put together by `paged!`, which the checked macros cannot read.
    let mut rows = match filter.job_id {
        Some(job_id) => sqlx::query_as::<_, PageRow>(JOB_PAGE)
            .bind(job_id)
            .bind(after)
            .bind(limit)
            .bind(max_bytes)
            .fetch(pool),
        None => sqlx::query_as::<_, PageRow>(FILTERED_PAGE)
            .bind(after)
            .bind(filter.workspace_id)
            .bind(filter.project_id)
            .bind(limit)
            .bind(max_bytes)
            .fetch(pool),
    };
    let mut page = EventPage::default();
    while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
        // Final ids are a prefix of the ids in order: every id not final is above them all.
        if !row.is_final {
            page.pending = true;
            break;
        }
        let (true, Some(payload)) = (row.fits, row.payload) else {
            page.truncated = true;
            break;
        };
        let event = RawEvent {
            id: row.id,
            job_id: row.job_id,
            workspace_id: row.workspace_id,
            project_id: row.project_id,
            seq: row.seq,
            kind: row.kind,
            payload: compact_json(&payload),
            created_at: row.created_at,
        };
        // With a job filter the query has only the job; a workspace or project filter is
        // applied by the query too. This keeps any other filter combination exact.
        if filter.matches_ids(event.job_id, event.workspace_id, event.project_id) {
            page.events.push(event);
        }
    }
    Ok(page)
}

/// `json` (PostgreSQL's text form of a jsonb value, with a space after each `:` and `,`) without
/// the whitespace between tokens, as a raw JSON value.
fn compact_json(json: &str) -> Box<RawValue> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !b.is_ascii_whitespace() {
            out.push(b);
        }
    }
    // Only ASCII bytes were dropped, so the text is still UTF-8 and, from PostgreSQL, JSON.
    String::from_utf8(out)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .unwrap_or_else(|| RawValue::NULL.to_owned())
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
