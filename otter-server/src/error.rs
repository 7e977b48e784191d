//! The API's one error type. Every error leaves as `{"error": {"code", "message"}}` with the
//! status its variant names.
//!
//! A 5xx is logged here, once, under the request's span: a 500 at ERROR, a 503 at WARN (a
//! backing service down is an operator's matter, not a bug). Nothing else logs it: the
//! `TraceLayer`'s failure hook skips status codes (see `startup::app`). What a 500 or a 503
//! carries as detail (a database or Docker engine error, a socket path) is logged and never
//! sent; the client gets a fixed message.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use otter_core::DbError;
use otter_core::checkpoint::CheckpointError;
use otter_core::db::PageError;
use otter_core::files::FilesError;
use otter_core::preview::PreviewError;
use otter_core::runtime::RuntimeError;
use otter_core::service::ServiceError;
use otter_core::shell::ShellError;
use otter_core::workspace::WorkspaceError;
use serde_json::json;

/// Result of a handler.
pub(crate) type Result<T, E = AppError> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed or a field is invalid; the message names it.
    #[error("{0}")]
    Validation(String),
    /// 401: no valid bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403: the operating system denied access to a workspace file.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 409 `idempotency_key_in_progress`: another request with this `Idempotency-Key` has not
    /// been answered yet.
    #[error("{0}")]
    IdempotencyKeyInProgress(String),
    /// 409 `budget_exhausted`: the project's budget is spent.
    #[error("{0}")]
    BudgetExhausted(String),
    /// 410: it existed, and was deleted for good (`OTTER_RETENTION`).
    #[error("{0}")]
    Gone(String),
    /// 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 421: the request names a host this server does not answer for (DNS rebinding).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// 422: the workspace's app could not be built or started; `code` says which
    /// (`build_failed`, `start_failed`), `log_tail` holds the end of the build log.
    #[error("{message}")]
    Unprocessable {
        /// The error code sent.
        code: &'static str,
        /// What failed, with the engine's own error line.
        message: String,
        /// The last lines of the build log (sent when not empty).
        log_tail: Vec<String>,
    },
    /// 503: a backing service is unreachable or turned off.
    #[error("{message}")]
    Unavailable {
        /// What is sent: which service, and what to do.
        message: String,
        /// What the service or its client library said (it may name sockets and hosts): logged,
        /// never sent.
        detail: Option<String>,
    },
    /// 500: a bug or an unexpected failure; the details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A 503 whose message says it all (nothing more to log).
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        AppError::Unavailable {
            message: message.into(),
            detail: None,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Validation(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::BudgetExhausted(_) => (StatusCode::CONFLICT, "budget_exhausted"),
            AppError::IdempotencyKeyInProgress(_) => {
                (StatusCode::CONFLICT, "idempotency_key_in_progress")
            }
            AppError::Gone(_) => (StatusCode::GONE, "gone"),
            AppError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::MisdirectedRequest(_) => {
                (StatusCode::MISDIRECTED_REQUEST, "misdirected_request")
            }
            AppError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            AppError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal error".to_owned()
            }
            AppError::Unavailable { message, detail } => {
                let error = detail.as_deref().unwrap_or(message);
                tracing::warn!(%error, "backing service unavailable");
                message.clone()
            }
            other => other.to_string(),
        };
        let mut error = json!({ "code": code, "message": message });
        if let AppError::Unprocessable { log_tail, .. } = &self
            && !log_tail.is_empty()
        {
            error["log_tail"] = json!(log_tail);
        }
        let body = Json(json!({ "error": error }));
        let mut response = (status, body).into_response();
        if matches!(self, AppError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(what) => AppError::NotFound(format!("{what} not found")),
            DbError::Conflict(msg) => AppError::Conflict(msg),
            e if e.is_unavailable() => AppError::Unavailable {
                message: "the database is unavailable; retry shortly".to_owned(),
                detail: Some(e.to_string()),
            },
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<RuntimeError> for AppError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Disabled => AppError::unavailable(e.to_string()),
            // The socket's path and bollard's words stay in the log.
            RuntimeError::Unreachable { .. } => AppError::Unavailable {
                message:
                    "the Docker engine does not answer; retry later (the server's log says why)"
                        .to_owned(),
                detail: Some(e.to_string()),
            },
            RuntimeError::NoDockerfile(msg) => AppError::Conflict(msg),
            RuntimeError::NotRunning(_) => AppError::Conflict(e.to_string()),
            RuntimeError::NoContainer(_) => AppError::NotFound(e.to_string()),
            RuntimeError::Invalid(msg) => AppError::Validation(msg),
            RuntimeError::BuildFailed { ref log_tail, .. } => AppError::Unprocessable {
                code: "build_failed",
                log_tail: log_tail.clone(),
                message: e.to_string(),
            },
            RuntimeError::Context(_) | RuntimeError::ContextTooLarge { .. } => {
                AppError::Unprocessable {
                    code: "build_failed",
                    message: e.to_string(),
                    log_tail: Vec::new(),
                }
            }
            RuntimeError::StartFailed(reason) => {
                // The engine's words stay in the log (a 4xx: logged, but not as an error).
                tracing::warn!(error = %reason, "runtime container not started");
                AppError::Unprocessable {
                    code: "start_failed",
                    message: "the container was created, but the Docker engine could not start \
                              it (the server's log says why)"
                        .to_owned(),
                    log_tail: Vec::new(),
                }
            }
            RuntimeError::Docker(_) => AppError::Internal(e.to_string()),
            RuntimeError::Db(e) => e.into(),
        }
    }
}

impl From<ServiceError> for AppError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(msg) => AppError::Validation(msg),
            ServiceError::TooLarge(msg) => AppError::PayloadTooLarge(msg),
            ServiceError::BudgetExhausted(msg) => AppError::BudgetExhausted(msg),
            ServiceError::Gone(msg) => AppError::Gone(msg),
            ServiceError::Workspace(WorkspaceError::InvalidPath(msg)) => {
                AppError::Validation(format!("path: {msg}"))
            }
            ServiceError::Workspace(
                e @ (WorkspaceError::NotAllowed { .. } | WorkspaceError::LeadsOut { .. }),
            ) => AppError::Validation(format!("path: {e}")),
            ServiceError::Workspace(WorkspaceError::Forbidden(msg)) => {
                AppError::Forbidden(format!("path: {msg}"))
            }
            ServiceError::Workspace(WorkspaceError::Unusable(msg)) => AppError::Conflict(msg),
            ServiceError::Workspace(
                e @ (WorkspaceError::Io { .. } | WorkspaceError::Isolation(_)),
            ) => AppError::Internal(e.to_string()),
            ServiceError::Db(e) => e.into(),
            ServiceError::Runtime(e) => e.into(),
            ServiceError::Checkpoint(e) => e.into(),
            ServiceError::Task(e) => AppError::Internal(e.to_string()),
        }
    }
}

impl From<CheckpointError> for AppError {
    fn from(e: CheckpointError) -> Self {
        match e {
            // Recorded in the database, gone from the store (removed by hand, or another
            // OTTER_CHECKPOINT_DIR).
            CheckpointError::NotFound(id) => AppError::Conflict(format!(
                "checkpoint {id} is no longer in the checkpoint store (OTTER_CHECKPOINT_DIR)"
            )),
            CheckpointError::InvalidPath(_) => AppError::Validation(e.to_string()),
            // Only a sweep waits for the lock with a deadline; an API call never sees it.
            CheckpointError::Busy => AppError::Conflict(e.to_string()),
            CheckpointError::Ignore(_)
            | CheckpointError::Io { .. }
            | CheckpointError::Damaged(_) => AppError::Internal(e.to_string()),
        }
    }
}

impl From<FilesError> for AppError {
    fn from(e: FilesError) -> Self {
        match e {
            FilesError::InvalidPath(_)
            | FilesError::Escapes(_)
            | FilesError::NotADirectory(_)
            | FilesError::IsADirectory(_)
            | FilesError::NotAFile(_) => AppError::Validation(e.to_string()),
            FilesError::NotFound(_) => AppError::NotFound(e.to_string()),
            FilesError::TooLarge { .. } => AppError::PayloadTooLarge(e.to_string()),
            FilesError::PermissionDenied(_) => AppError::Forbidden(e.to_string()),
            FilesError::Changed(_) => AppError::Conflict(e.to_string()),
            FilesError::Root(msg) => AppError::Conflict(msg),
            FilesError::Unavailable(msg) => AppError::unavailable(msg),
            FilesError::Io { .. } => AppError::Internal(e.to_string()),
        }
    }
}

impl From<ShellError> for AppError {
    fn from(e: ShellError) -> Self {
        match e {
            ShellError::Invalid(msg) => AppError::Validation(msg),
            ShellError::Files(e) => e.into(),
            ShellError::Db(e) => e.into(),
            ShellError::Cancelled => AppError::unavailable(e.to_string()),
            ShellError::Runner(_) | ShellError::Isolation(_) | ShellError::Internal(_) => {
                AppError::Internal(e.to_string())
            }
        }
    }
}

impl From<PreviewError> for AppError {
    fn from(e: PreviewError) -> Self {
        match e {
            PreviewError::Invalid(_) => AppError::Validation(e.to_string()),
            PreviewError::Db(e) => e.into(),
        }
    }
}

impl From<PageError> for AppError {
    fn from(e: PageError) -> Self {
        AppError::Validation(e.to_string())
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(text),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".to_owned(),
            ),
            _ => AppError::Validation(text),
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::Validation(rejection.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::Validation(rejection.body_text())
    }
}

/// `Json` whose rejections use our error shape. A string holding a NUL character (`\u0000`)
/// is refused here, for every body: PostgreSQL can store it neither in `text` nor in `jsonb`.
pub(crate) struct AppJson<T>(pub(crate) T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self> {
        if !json_content_type(req.headers()) {
            return Err(AppError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".to_owned(),
            ));
        }
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(rejection.body_text()),
                _ => AppError::Validation(rejection.body_text()),
            })?;
        if has_nul_escape(&bytes) {
            return Err(AppError::Validation(
                "strings must not contain the NUL character (\\u0000)".to_owned(),
            ));
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

/// `application/json` or `application/<anything>+json`, as `axum::Json` accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub.as_bytes()[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Whether JSON text holds the escape `\u0000`: a backslash that is not itself escaped (an
/// even number of backslashes before it), then `u0000`. A raw NUL byte is not valid JSON and
/// fails parsing anyway.
fn has_nul_escape(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && json[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// `Path` whose rejections use our error shape (a bad UUID is a 400 naming the problem).
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub(crate) struct AppPath<T>(pub(crate) T);

/// `Query` whose rejections use our error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub(crate) struct AppQuery<T>(pub(crate) T);

impl<T: serde::Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::{AppError, ServiceError, StatusCode, has_nul_escape, json_content_type};
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn a_panicked_blocking_task_is_a_500_not_a_400() {
        let panicked = tokio::task::spawn_blocking(|| panic!("a bug in a blocking task"))
            .await
            .unwrap_err();
        let error = AppError::from(ServiceError::from(panicked));
        assert!(matches!(error, AppError::Internal(_)), "{error:?}");
        assert_eq!(
            error.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_nul_escape_is_told_from_an_escaped_backslash() {
        assert!(has_nul_escape(br#"{"a":"x\u0000"}"#));
        assert!(has_nul_escape(br#"\u0000"#));
        assert!(
            !has_nul_escape(br#"{"a":"x\\u0000"}"#),
            "a backslash, then text"
        );
        assert!(
            has_nul_escape(br#"{"a":"x\\\u0000"}"#),
            "a backslash, then NUL"
        );
        assert!(!has_nul_escape(br#"{"a":"\u0001"}"#));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::CONTENT_TYPE, v.parse().unwrap());
            json_content_type(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/problem+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/+json"));
        assert!(!with("application/jsonx"));
        assert!(!json_content_type(&axum::http::HeaderMap::new()));
    }
}
