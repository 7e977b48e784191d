//! `Idempotency-Key` on the creating routes ([`IDEMPOTENT_ROUTES`]): the layer [`apply`].
//!
//! The key (1 to 255 visible ASCII characters) is scoped to the actor that sent it. The first
//! request with a key claims it in `idempotency_keys` (a primary key on `(scope, key)` decides,
//! `otter_core::db::idempotency::claim`), acts, and stores its answer. A later request with the
//! same key and the same body (compared by the SHA-256 of its canonical JSON) gets that answer
//! again, with `Idempotent-Replayed: true`; with another body, a 422 `idempotency_key_reused`.
//! One that comes while the first is still being acted on waits for its answer for up to
//! [`WAIT_FOR_FIRST`], then gets a 409 `idempotency_key_in_progress`. A first answer that is a
//! 5xx is not kept: the key is released, and a retry acts again.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use otter_core::db::idempotency::{self, Claim};
use sha2::Digest;

use crate::audit::Actor;
use crate::error::AppError;
use crate::state::AppState;

/// The routes (all `POST`) that honour `Idempotency-Key`; elsewhere the header is ignored.
pub(crate) const IDEMPOTENT_ROUTES: [&str; 3] = ["/v1/prompts", "/v1/projects", "/v1/workspaces"];

/// The request header.
pub(crate) const KEY_HEADER: &str = "idempotency-key";

/// The answer header on a replayed answer.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// How long a request waits for the answer of another one holding its key.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);

/// Largest answer kept for replay (larger is not kept, and the key is released).
const ANSWER_LIMIT: usize = 4 * 1024 * 1024;

/// A valid `Idempotency-Key`: 1 to 255 visible ASCII characters (`!` to `~`).
pub(crate) fn valid_key(key: &[u8]) -> bool {
    (1..=255).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The SHA-256 of a body's canonical bytes: JSON with its object keys sorted and no white
/// space, or the bytes themselves when they are not JSON.
pub(crate) fn body_hash(body: &[u8]) -> Vec<u8> {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok());
    sha2::Sha256::digest(canonical.as_deref().unwrap_or(body)).to_vec()
}

/// The layer (see the module's doc).
pub(crate) async fn apply(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let honoured = request.method() == Method::POST
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| IDEMPOTENT_ROUTES.contains(&p.as_str()));
    if !honoured {
        return next.run(request).await;
    }
    let mut keys = request.headers().get_all(KEY_HEADER).iter();
    let Some(key) = keys.next() else {
        return next.run(request).await;
    };
    if keys.next().is_some() || !valid_key(key.as_bytes()) {
        return AppError::Validation(
            "Idempotency-Key must be one header of 1 to 255 visible ASCII characters".to_owned(),
        )
        .into_response();
    }
    let key = String::from_utf8_lossy(key.as_bytes()).into_owned();
    let scope = request
        .extensions()
        .get::<Actor>()
        .cloned()
        .unwrap_or_else(Actor::anonymous)
        .0;
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, crate::startup::BODY_LIMIT).await else {
        return AppError::PayloadTooLarge(format!(
            "the body is larger than {} bytes",
            crate::startup::BODY_LIMIT
        ))
        .into_response();
    };
    let hash = body_hash(&bytes);
    let ttl = state.config.idempotency_ttl;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    let mut pause = Duration::from_millis(20);
    loop {
        let claim = idempotency::claim(&state.db, &scope, &key, "POST", &route, &hash, ttl).await;
        match claim {
            Ok(Claim::Claimed) => break,
            Ok(Claim::Done { status, body }) => return replay(status, body),
            Ok(Claim::Mismatch) => {
                return AppError::Unprocessable {
                    code: "idempotency_key_reused",
                    message: "this Idempotency-Key was used with another request body (or \
                              route); use a new key for a new request"
                        .to_owned(),
                    log_tail: Vec::new(),
                }
                .into_response();
            }
            Ok(Claim::InProgress) if tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            Ok(Claim::InProgress) => {
                return AppError::IdempotencyKeyInProgress(
                    "another request with this Idempotency-Key is still being answered; retry \
                     shortly"
                        .to_owned(),
                )
                .into_response();
            }
            Err(e) => return AppError::from(e).into_response(),
        }
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error() {
        release(&state, &scope, &key).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let answer = match axum::body::to_bytes(body, ANSWER_LIMIT).await {
        Ok(answer) => answer,
        Err(e) => {
            release(&state, &scope, &key).await;
            return AppError::Internal(format!("reading an answer to keep: {e}")).into_response();
        }
    };
    if let Err(e) = idempotency::complete(&state.db, &scope, &key, status.as_u16(), &answer).await {
        // The action happened: releasing the key would let a retry do it twice. The key
        // answers 409 until it expires.
        tracing::error!(error = %e, "an idempotent request's answer could not be kept");
    }
    Response::from_parts(parts, Body::from(answer))
}

async fn release(state: &AppState, scope: &str, key: &str) {
    if let Err(e) = idempotency::release(&state.db, scope, key).await {
        tracing::warn!(error = %e, "an Idempotency-Key could not be released; it answers 409 until it expires");
    }
}

/// The kept answer, again.
fn replay(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

/// Purges the keys older than `OTTER_IDEMPOTENCY_TTL`, every half TTL (at most hourly, at
/// least every 100 ms), until shutdown.
pub(crate) async fn purge_now_and_then(state: AppState) {
    let ttl = state.config.idempotency_ttl;
    let every = (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match idempotency::purge(&state.db, ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "expired idempotency keys could not be purged"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{body_hash, valid_key};

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(valid_key(b"a"));
        assert!(valid_key(&[b'~'; 255]));
        assert!(!valid_key(b""));
        assert!(!valid_key(&[b'a'; 256]));
        assert!(!valid_key(b"has space"));
        assert!(!valid_key(b"tab\there"));
        assert!(!valid_key("é".as_bytes()));
    }

    #[test]
    fn bodies_are_compared_by_their_canonical_json() {
        assert_eq!(
            body_hash(br#"{"a": 1, "b": [1, 2]}"#),
            body_hash(br#"{"b":[1,2],"a":1}"#)
        );
        assert_ne!(body_hash(br#"{"a":1}"#), body_hash(br#"{"a":2}"#));
        assert_eq!(body_hash(b"not json"), body_hash(b"not json"));
    }
}
