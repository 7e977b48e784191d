//! The audit trail's HTTP side: who a request comes from ([`Actor`], put in the request's
//! extensions by authentication), and [`record`], the layer on every route that writes an
//! entry for each request that may change state (any method but GET, HEAD and OPTIONS, and the
//! runtime shell's WebSocket, a GET that runs commands).
//!
//! The entry is written *before* the request is acted on, and completed with the answer
//! afterwards. When it cannot be written, the request is answered 503 and never reaches its
//! handler: no action happens unrecorded (DESIGN.md §2, invariant 11). When the answer cannot be
//! recorded, the entry stays with no status (logged at ERROR): the action is recorded, its
//! outcome is not.

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use otter_core::db::audit::{self, NewEntry};

use crate::error::AppError;
use crate::state::AppState;

/// Largest created object read back for its id (a 201's JSON body).
const CREATED_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Who sends a request: a token's name, `token:<fingerprint>` for an unnamed token,
/// `job:<id>` for a job's own token, or `anonymous` when the API has no tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Actor(pub(crate) String);

impl Actor {
    /// The actor of every request when `OTTER_API_TOKENS` is not set.
    pub(crate) fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }
}

/// The GET routes that change state: the runtime shell's WebSocket runs commands.
const STATE_CHANGING_GETS: [&str; 1] = ["/v1/runtime/workspaces/{id}/shell/ws"];

/// Whether a request with `method` to `route` is recorded: every one that may change state.
fn recorded(method: &Method, route: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (*method == Method::GET && STATE_CHANGING_GETS.contains(&route))
}

/// The layer that records a request in the audit trail (see the module's doc). A route gets it
/// by being in `routes::v1()` or `routes::job_scoped()`: nothing else to do.
pub(crate) async fn record(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    if !recorded(request.method(), &route) {
        return next.run(request).await;
    }
    let actor = request
        .extensions()
        .get::<Actor>()
        .cloned()
        .unwrap_or_else(Actor::anonymous);
    let target_ids: Vec<String> = params
        .map(|params| params.iter().map(|(_, v)| v.to_owned()).collect())
        .unwrap_or_default();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let entry = NewEntry {
        actor: &actor.0,
        method: &method,
        route: &route,
        path: &path,
        target_ids: &target_ids,
        request_id: request_id.as_deref(),
    };
    let id = match audit::begin(&state.db, &entry).await {
        Ok(id) => id,
        Err(e) => {
            return AppError::Unavailable {
                message: "the audit trail cannot be written, so the request was not acted on; \
                          retry shortly"
                    .to_owned(),
                detail: Some(e.to_string()),
            }
            .into_response();
        }
    };
    let response = next.run(request).await;
    let status = response.status();
    let (response, created_id) = if status == axum::http::StatusCode::CREATED && is_json(&response)
    {
        created_id(response).await
    } else {
        (response, None)
    };
    if let Err(e) = audit::finish(&state.db, id, status.as_u16(), created_id.as_deref()).await {
        tracing::error!(error = %e, audit_id = id, "the answer of a request could not be recorded in the audit trail");
    }
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The `id` of the object a 201 created, and the response rebuilt.
async fn created_id(response: Response) -> (Response, Option<String>) {
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, CREATED_BODY_LIMIT).await {
        Ok(bytes) => {
            let id = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| match v.get("id") {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                });
            (Response::from_parts(parts, Body::from(bytes)), id)
        }
        Err(e) => {
            tracing::error!(error = %e, "a created object's answer could not be read");
            (
                AppError::Internal(format!("reading a created object's answer: {e}"))
                    .into_response(),
                None,
            )
        }
    }
}
