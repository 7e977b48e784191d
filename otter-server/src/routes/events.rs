//! `GET /v1/events/stream`: Server-Sent Events. `id:` is the event id, `event:` its kind,
//! `data:` the event as JSON. Filters `?job_id=`, `?workspace_id=`, `?project_id=`; resume with
//! the `Last-Event-ID` header (or `?after=`). Without a cursor, a stream of one job starts at
//! the job's first event and other streams start with the next new event. A stream of one job
//! ends with `event: end` once the job has finished and its last event was sent.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};
use otter_core::StreamItem;
use otter_core::db::events::{self, EventFilter};
use otter_core::db::jobs;
use otter_core::model::{JobId, ProjectId, WorkspaceId};
use serde::Deserialize;

use crate::error::{AppError, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/events/stream", get(stream_events))
}

/// Keep-alive comment period: under the usual 30 s proxy idle timeouts.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
struct StreamQuery {
    job_id: Option<JobId>,
    workspace_id: Option<WorkspaceId>,
    project_id: Option<ProjectId>,
    after: Option<i64>,
}

async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppQuery(q): AppQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    AppError::Validation("Last-Event-ID must be a non-negative event id".to_owned())
                })?,
        ),
        None => None,
    };
    if q.after.is_some_and(|a| a < 0) {
        return Err(AppError::Validation(
            "after must not be negative".to_owned(),
        ));
    }
    let filter = EventFilter {
        job_id: q.job_id,
        workspace_id: q.workspace_id,
        project_id: q.project_id,
    };
    if let Some(id) = filter.job_id {
        jobs::get(&state.db, id).await?;
    }
    let after = match last_event_id.or(q.after) {
        Some(after) => after,
        None if filter.job_id.is_some() => 0,
        None => events::head(&state.db).await?,
    };

    let inner = state.feed.stream(filter, after);
    let stream = async_stream::stream! {
        futures::pin_mut!(inner);
        while let Some(item) = inner.next().await {
            match item {
                Ok(StreamItem::Event(ev)) => {
                    yield Ok(SseEvent::default()
                        .id(ev.id.to_string())
                        .event(ev.kind.as_str())
                        .data(ev.json.as_str()));
                }
                Ok(StreamItem::End) => {
                    yield Ok(SseEvent::default().event("end").data("{}"));
                }
                Err(e) => {
                    // The client resumes from its last id; the stream ends here.
                    tracing::warn!(error = %e, "event stream failed");
                    yield Ok(SseEvent::default()
                        .event("error")
                        .data(r#"{"message":"stream interrupted; reconnect with Last-Event-ID"}"#));
                    break;
                }
            }
        }
    }
    .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
