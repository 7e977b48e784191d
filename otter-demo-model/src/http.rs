//! The HTTP side: an OpenAI-style API that vibe's `generic` backend (`api_style = "openai"`)
//! talks to.
//!
//! * `POST /v1/chat/completions` answers with the next step of the [`script`]. Streamed (vibe
//!   always streams) as SSE `chat.completion.chunk`s: the reasoning as `reasoning_content`
//!   deltas (the field vibe 3.0.3's OpenAI adapter reads by default), then the tool call (its
//!   arguments split over several deltas) or the text, a chunk with the `finish_reason`, a
//!   usage chunk and `data: [DONE]`. Otherwise one `chat.completion`.
//! * `GET /v1/models` lists the one model, `GET /healthz` answers 200.
//! * Anything else, and any request it cannot read, gets a 4xx JSON error
//!   `{"error": {"code", "message", "type"}}` (Otter's shape, plus OpenAI's `type`).
//! * With a scripted rate limit ([`RateLimit`], `OTTER_DEMO_MODEL_RATE_LIMIT`), the
//!   chat-completions requests it covers get `429 Too Many Requests` before their body is read,
//!   with OpenAI's rate-limit error body
//!   `{"error": {"message": "Rate limit reached for otter-demo … on requests per min (RPM): …",
//!   "type": "requests", "param": null, "code": "rate_limit_exceeded"}}` and, when
//!   `OTTER_DEMO_MODEL_RETRY_AFTER` is set, a `Retry-After: <secs>` header (and "Please try
//!   again in `<secs>`s." in the message, as OpenAI words it).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tower_http::trace::TraceLayer;

use crate::config::{RateLimit, RateLimitMode};
use crate::script::{self, Answer, MODEL, Reply};

/// Largest request body read: vibe's requests carry its whole system prompt and the
/// conversation so far (how large they were is in docs/benchmarks.md, "Figures that were code
/// comments").
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Pause between two SSE frames, so that a client sees a stream, not one burst.
const FRAME_PACE: Duration = Duration::from_millis(2);

/// How many requests a [`RequestLog`] keeps (the oldest are dropped).
const LOG_CAPACITY: usize = 256;

/// A `created` timestamp for every answer: the script has no clock.
const CREATED: u64 = 1_700_000_000;

/// The router, with no rate limit; with `log`, every chat-completions request answered is
/// recorded there.
pub fn app(log: Option<RequestLog>) -> Router {
    app_with(log, RateLimit::default())
}

/// The router with a scripted `rate_limit` (the requests it refuses are not recorded in `log`).
pub fn app_with(log: Option<RequestLog>, rate_limit: RateLimit) -> Router {
    Router::new()
        .route("/healthz", get(get_health))
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(create_chat_completion))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(AppState {
            log,
            rate_limit,
            received: Arc::new(AtomicU64::new(0)),
        })
}

#[derive(Clone)]
struct AppState {
    log: Option<RequestLog>,
    rate_limit: RateLimit,
    /// Chat-completions requests received so far, refused or not.
    received: Arc<AtomicU64>,
}

/// One chat-completions request the server read.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The request body.
    pub body: Value,
}

/// The last requests a server read, oldest first, for a test to inspect.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<VecDeque<Recorded>>>);

impl RequestLog {
    /// Every request kept, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().iter().cloned().collect()
    }

    fn push(&self, recorded: Recorded) {
        let mut log = self.lock();
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(recorded);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Recorded>> {
        // A panic while holding the lock cannot leave the queue half-changed.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A client error, answered as JSON.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
        let body = json!({
            "error": { "code": self.code, "message": self.message, "type": "invalid_request_error" }
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_request",
        };
        Self {
            // A body that is JSON but not of the right shape is a 400 like any other bad body.
            status: if status == StatusCode::UNPROCESSABLE_ENTITY {
                StatusCode::BAD_REQUEST
            } else {
                status
            },
            code,
            message: rejection.body_text(),
        }
    }
}

/// `axum::Json` with [`ApiError`] as its rejection.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct AppJson<T>(T);

async fn no_route(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!(
            "no route {}: the demo model serves POST /v1/chat/completions, GET /v1/models and GET /healthz",
            uri.path()
        ),
    }
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{} does not take this method", uri.path()),
    }
}

async fn get_health() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok", "model": MODEL }))
}

async fn list_models() -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [{ "id": MODEL, "object": "model", "created": CREATED, "owned_by": "otter-demo" }],
    }))
}

/// The parts of a request the script reads; everything else is ignored.
#[derive(Debug)]
struct ChatRequest {
    messages: Vec<Value>,
    tools: Vec<Value>,
    stream: bool,
    /// The model the client asked for, logged; the answer always names [`MODEL`].
    model: Option<String>,
}

impl ChatRequest {
    /// Reads a request body, naming the field that is wrong, if one is.
    fn parse(body: &Value) -> Result<Self, ApiError> {
        let Some(body) = body.as_object() else {
            return Err(ApiError::invalid("the body must be a JSON object"));
        };
        let present = |field: &str| body.get(field).filter(|v| !v.is_null());
        let messages = match present("messages") {
            Some(Value::Array(messages)) if messages.is_empty() => {
                return Err(ApiError::invalid("messages must not be empty"));
            }
            Some(Value::Array(messages)) => messages.clone(),
            Some(_) => return Err(ApiError::invalid("messages must be an array")),
            None => return Err(ApiError::invalid("messages is required")),
        };
        for (i, message) in messages.iter().enumerate() {
            if !message["role"].is_string() {
                return Err(ApiError::invalid(format!(
                    "messages[{i}] must be an object with a string role"
                )));
            }
        }
        let tools = match present("tools") {
            Some(Value::Array(tools)) => tools.clone(),
            Some(_) => return Err(ApiError::invalid("tools must be an array")),
            None => Vec::new(),
        };
        let stream = match present("stream") {
            Some(Value::Bool(stream)) => *stream,
            Some(_) => return Err(ApiError::invalid("stream must be true or false")),
            None => false,
        };
        let model = match present("model") {
            Some(Value::String(model)) => Some(model.clone()),
            Some(_) => return Err(ApiError::invalid("model must be a string")),
            None => None,
        };
        Ok(Self {
            messages,
            tools,
            stream,
            model,
        })
    }
}

/// The 429 a rate-limited provider answers, in OpenAI's shape (its message, `type` and
/// `code`), for request number `number` (1 for the first).
fn rate_limited(number: u64, limit: RateLimit) -> Response {
    let wait = limit
        .retry_after_secs
        .map(|secs| format!(" Please try again in {secs}s."))
        .unwrap_or_default();
    let message = format!(
        "Rate limit reached for {MODEL} in organization otter-demo on requests per min (RPM): \
         Limit 1, Used 1, Requested 1.{wait} This is the Otter demo model's scripted rate limit \
         (OTTER_DEMO_MODEL_RATE_LIMIT={}), not a real provider.",
        limit.mode.as_str()
    );
    tracing::warn!(
        request = number,
        mode = limit.mode.as_str(),
        retry_after = limit.retry_after_secs,
        "rate limited"
    );
    let body = json!({
        "error": {
            "message": message,
            "type": "requests",
            "param": null,
            "code": "rate_limit_exceeded",
        }
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    if let Some(secs) = limit.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

async fn create_chat_completion(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<AppJson<Value>, ApiError>,
) -> Result<Response, ApiError> {
    // A provider's rate limit comes before it reads the request.
    let number = state.received.fetch_add(1, Ordering::Relaxed) + 1;
    let refused = match state.rate_limit.mode {
        RateLimitMode::Off => false,
        RateLimitMode::Always => true,
        RateLimitMode::First => number == 1,
    };
    if refused {
        return Ok(rate_limited(number, state.rate_limit));
    }
    let AppJson(body) = body?;
    let request = ChatRequest::parse(&body)?;
    let answer = script::answer(&request.messages, &request.tools);
    // Token counts as the fixtures' mock made them: the JSON of the messages / 4 in, 20 per tool
    // call or the text / 4 out (never 0, so that a run always reports usage).
    let prompt_tokens =
        (serde_json::to_string(&request.messages).map_or(0, |s| s.len()) / 4).max(1);
    let completion_tokens = match &answer.reply {
        Reply::ToolCall { .. } => 20,
        Reply::Text(text) => (text.len() / 4).max(1),
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let stream = request.stream;
    tracing::info!(
        request = number,
        asked = request.model.as_deref().unwrap_or(""),
        messages = request.messages.len(),
        // The conversation's shape (a resumed session sends its earlier turns back).
        roles = %request
            .messages
            .iter()
            .map(|m| m["role"].as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(","),
        reply = answer.reply.label(),
        stream,
        prompt_tokens,
        completion_tokens,
        "answered"
    );
    if let Some(log) = &state.log {
        log.push(Recorded {
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        });
    }

    let id = format!("chatcmpl-otter-demo-{}", request.messages.len());
    if !stream {
        return Ok(axum::Json(completion(&id, &answer, usage)).into_response());
    }
    let mut frames: Vec<String> = chunks(&id, &answer, usage)
        .iter()
        .map(|chunk| format!("data: {chunk}\n\n"))
        .collect();
    frames.push("data: [DONE]\n\n".to_owned());
    let body = futures::stream::iter(frames).then(|frame| async move {
        tokio::time::sleep(FRAME_PACE).await;
        Ok::<_, Infallible>(frame)
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// The streamed form of `answer`: its `chat.completion.chunk`s, the usage chunk last.
fn chunks(id: &str, answer: &Answer, usage: Value) -> Vec<Value> {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let mut chunks = Vec::new();
    let mut first = true;
    // The role comes with the first delta, whatever it carries.
    let mut with_role = |mut delta: Value| {
        if std::mem::take(&mut first) {
            delta["role"] = json!("assistant");
        }
        delta
    };
    if let Some(reasoning) = answer.reasoning {
        for piece in split(reasoning, 3) {
            chunks.push(chunk(
                with_role(json!({ "reasoning_content": piece })),
                None,
            ));
        }
    }
    let finish = match &answer.reply {
        Reply::ToolCall {
            id,
            name,
            arguments,
        } => {
            chunks.push(chunk(
                with_role(json!({
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": id,
                        "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }],
                })),
                None,
            ));
            for piece in split(arguments, 3) {
                chunks.push(chunk(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] }),
                    None,
                ));
            }
            "tool_calls"
        }
        Reply::Text(text) => {
            for piece in split(text, 3) {
                chunks.push(chunk(with_role(json!({ "content": piece })), None));
            }
            "stop"
        }
    };
    chunks.push(chunk(json!({}), Some(finish)));
    chunks.push(json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [],
        "usage": usage,
    }));
    chunks
}

/// The non-streamed form of `answer`.
fn completion(id: &str, answer: &Answer, usage: Value) -> Value {
    let (mut message, finish) = match &answer.reply {
        Reply::ToolCall {
            id,
            name,
            arguments,
        } => (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": id,
                    "type": "function",
                    "function": { "name": name, "arguments": arguments },
                }],
            }),
            "tool_calls",
        ),
        Reply::Text(text) => (json!({ "role": "assistant", "content": text }), "stop"),
    };
    if let Some(reasoning) = answer.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": usage,
    })
}

/// `s` cut into `n` nearly equal pieces on character boundaries.
fn split(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(n).max(1);
    chars
        .chunks(size)
        .map(|c| c.iter().collect::<String>())
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::script::{FILE_CONTENT, FINAL_TEXT, REASONING};

    async fn send(
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let (status, _, value) = send_to(app(None), method, path, content_type, body).await;
        (status, value)
    }

    /// Sends one request to `router` (a clone shares its state) and returns the status, the
    /// headers and the body (JSON if it is, else a string).
    async fn send_to(
        router: Router,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Body::from(body.to_owned()))
            .expect("a request");
        let response = router.oneshot(request).await.expect("an answer");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    fn limited(mode: RateLimitMode, retry_after_secs: Option<u64>) -> Router {
        app_with(
            None,
            RateLimit {
                mode,
                retry_after_secs,
            },
        )
    }

    async fn chat(router: &Router, body: &str) -> (StatusCode, HeaderMap, Value) {
        send_to(
            router.clone(),
            Method::POST,
            "/v1/chat/completions",
            Some("application/json"),
            body,
        )
        .await
    }

    /// A 429 in OpenAI's rate-limit shape, with `Retry-After: <secs>` exactly when asked for.
    fn assert_rate_limited(got: &(StatusCode, HeaderMap, Value), retry_after: Option<&str>) {
        let (status, headers, body) = got;
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(
            headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            retry_after
        );
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
        assert_eq!(body["error"]["type"], "requests", "{body}");
        assert!(body["error"]["param"].is_null(), "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Rate limit reached for otter-demo"),
            "{message}"
        );
        assert!(message.contains("not a real provider"), "{message}");
        let wait = retry_after.map(|secs| format!("Please try again in {secs}s."));
        assert_eq!(
            message.contains("Please try again"),
            wait.is_some(),
            "{message}"
        );
        if let Some(wait) = wait {
            assert!(message.contains(&wait), "{message}");
        }
    }

    const HI: &str = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;

    #[tokio::test]
    async fn always_refuses_every_chat_request_with_a_429() {
        for (retry_after, header) in [(Some(2), Some("2")), (None, None), (Some(0), Some("0"))] {
            let router = limited(RateLimitMode::Always, retry_after);
            for _ in 0..3 {
                assert_rate_limited(&chat(&router, HI).await, header);
            }
            // Before the body is read: a bad body is refused the same way.
            assert_rate_limited(&chat(&router, "not json").await, header);
            // Health and the model list are never limited.
            let (status, _, _) = send_to(router.clone(), Method::GET, "/healthz", None, "").await;
            assert_eq!(status, StatusCode::OK);
            let (status, _, _) = send_to(router.clone(), Method::GET, "/v1/models", None, "").await;
            assert_eq!(status, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn first_refuses_only_the_first_chat_request() {
        for (retry_after, header) in [(Some(3), Some("3")), (None, None)] {
            let router = limited(RateLimitMode::First, retry_after);
            // Other routes do not count.
            let (status, _, _) = send_to(router.clone(), Method::GET, "/healthz", None, "").await;
            assert_eq!(status, StatusCode::OK);
            assert_rate_limited(&chat(&router, HI).await, header);
            for _ in 0..2 {
                let (status, headers, body) = chat(&router, HI).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(headers.get(header::RETRY_AFTER).is_none());
                assert_eq!(body["model"], MODEL);
            }
        }
    }

    #[tokio::test]
    async fn off_serves_even_with_a_retry_after() {
        let router = limited(RateLimitMode::Off, Some(2));
        let (status, headers, body) = chat(&router, HI).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(headers.get(header::RETRY_AFTER).is_none());
    }

    async fn post_json(body: &str) -> (StatusCode, Value) {
        send(
            Method::POST,
            "/v1/chat/completions",
            Some("application/json"),
            body,
        )
        .await
    }

    /// The error shape: status, code, and a message that says what is wrong.
    fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, says: &str) {
        let (got_status, body) = got;
        assert_eq!(*got_status, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{says:?} not in {message:?}");
    }

    #[tokio::test]
    async fn bad_bodies_get_a_400_that_says_why() {
        for (body, says) in [
            ("", "EOF"),
            ("{", "EOF"),
            ("not json", "expected"),
            ("[]", "JSON object"),
            ("42", "JSON object"),
            ("{}", "messages is required"),
            (r#"{"messages": null}"#, "messages is required"),
            (r#"{"messages": "hello"}"#, "messages must be an array"),
            (r#"{"messages": []}"#, "messages must not be empty"),
            (r#"{"messages": [1]}"#, "messages[0]"),
            (r#"{"messages": [{"content": "no role"}]}"#, "messages[0]"),
            (
                r#"{"messages": [{"role": "user"}, {"role": 7}]}"#,
                "messages[1]",
            ),
            (
                r#"{"messages": [{"role": "user"}], "stream": "yes"}"#,
                "stream",
            ),
            (r#"{"messages": [{"role": "user"}], "tools": {}}"#, "tools"),
            (r#"{"messages": [{"role": "user"}], "model": 3}"#, "model"),
        ] {
            let got = post_json(body).await;
            assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", says);
        }
    }

    #[tokio::test]
    async fn other_mistakes_get_their_own_4xx() {
        let body = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
        let got = send(Method::POST, "/v1/chat/completions", None, body).await;
        assert_error(
            &got,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type",
        );
        let got = send(
            Method::POST,
            "/v1/chat/completions",
            Some("text/plain"),
            body,
        )
        .await;
        assert_error(
            &got,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type",
        );

        let got = send(Method::GET, "/v1/chat/completions", None, "").await;
        assert_error(
            &got,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "/v1/chat/completions",
        );
        let got = send(
            Method::POST,
            "/v1/completions",
            Some("application/json"),
            body,
        )
        .await;
        assert_error(&got, StatusCode::NOT_FOUND, "not_found", "/v1/completions");

        let huge = format!(
            r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
            "x".repeat(BODY_LIMIT)
        );
        let got = post_json(&huge).await;
        assert_error(
            &got,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "length limit",
        );
    }

    #[tokio::test]
    async fn health_and_models_answer() {
        let (status, body) = send(Method::GET, "/healthz", None, "").await;
        assert_eq!((status, &body["model"]), (StatusCode::OK, &json!(MODEL)));
        let (status, body) = send(Method::GET, "/v1/models", None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"][0]["id"], MODEL);
    }

    #[tokio::test]
    async fn a_whole_answer_names_the_demo_model_and_reports_usage() {
        let body = json!({
            "model": "whatever-the-client-asked",
            "messages": [{ "role": "user", "content": "hi" }],
            "tools": [{ "type": "function", "function": { "name": "write_file" } }],
        });
        let (status, body) = post_json(&body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["model"], MODEL);
        let message = &body["choices"][0]["message"];
        assert_eq!(message["reasoning_content"], REASONING);
        let call = &message["tool_calls"][0]["function"];
        assert_eq!(call["name"], "write_file");
        let arguments: Value =
            serde_json::from_str(call["arguments"].as_str().unwrap_or_default()).expect("JSON");
        assert_eq!(arguments["content"], FILE_CONTENT);
        assert!(
            body["usage"]["total_tokens"]
                .as_u64()
                .is_some_and(|t| t > 0)
        );
    }

    #[tokio::test]
    async fn a_streamed_answer_is_reasoning_then_the_reply_then_usage() {
        let body = json!({
            "messages": [{ "role": "user", "content": "hi" }],
            "stream": true,
        });
        let (status, body) = post_json(&body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let text = body.as_str().expect("an event stream");
        let frames: Vec<&str> = text
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| f.strip_prefix("data: ").expect("a data frame"))
            .collect();
        assert_eq!(frames.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(f).expect("a JSON chunk"))
            .collect();
        let delta = |field: &str| -> String {
            chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"][field].as_str())
                .collect()
        };
        assert_eq!(delta("reasoning_content"), REASONING);
        assert_eq!(delta("content"), FINAL_TEXT);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(chunks.iter().all(|c| c["model"] == MODEL));
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("stop")]);
        let usage = &chunks[chunks.len() - 1]["usage"];
        assert!(
            usage["prompt_tokens"].as_u64().is_some_and(|t| t > 0),
            "{usage}"
        );
    }
}
