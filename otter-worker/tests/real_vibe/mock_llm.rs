//! A scripted OpenAI-style chat-completions server on 127.0.0.1 for the real vibe: the fixture's
//! `tools` scenario (fixtures/vibe-3.0.3/README.md). The first answer is a `write_file` tool
//! call, the answer after one tool result a `bash` tool call, the answer after two a final text;
//! each is streamed as SSE `chat.completion.chunk`s (tool-call arguments split over several
//! deltas), then a `finish_reason` chunk, a usage chunk and `data: [DONE]`. Every request is
//! recorded for the test to inspect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

/// The model name the template's config.toml declares.
pub(crate) const MODEL: &str = "mock-model";

/// The file the first tool call writes, and its content.
pub(crate) const FILE_NAME: &str = "hello.txt";
pub(crate) const FILE_CONTENT: &str = "Hello from the mock LLM\n";

/// The command of the second tool call.
pub(crate) const COMMAND: &str = "cat hello.txt && echo done";

/// The final answer.
pub(crate) const FINAL_TEXT: &str =
    "I created `hello.txt` and ran `cat hello.txt`; it printed \"Hello from the mock LLM\". Done.";

/// One request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// The request path.
    pub(crate) path: String,
    /// The `Authorization` header, if any.
    pub(crate) authorization: Option<String>,
    /// The body parsed as JSON (`Value::Null` when it was not JSON).
    pub(crate) body: Value,
}

/// The running server; stops when dropped.
pub(crate) struct MockLlm {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockLlm {
    /// Starts the server on 127.0.0.1 with a free port.
    pub(crate) async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .fallback(unknown)
            .with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock LLM");
        let addr = listener.local_addr().expect("mock LLM address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("mock LLM served");
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// The base URL vibe's provider entry points at.
    pub(crate) fn api_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far, oldest first.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("request log").clone()
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

fn record(log: &Log, path: &str, headers: &HeaderMap, body: &[u8]) -> Value {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    log.lock().expect("request log").push(Recorded {
        path: path.to_owned(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
    body
}

async fn unknown(
    State(log): State<Log>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&log, uri.path(), &headers, &body);
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": { "message": format!("no route {}", uri.path()) } })),
    )
        .into_response()
}

/// What the script answers at one point of the conversation.
enum Answer {
    ToolCall {
        id: &'static str,
        name: &'static str,
        arguments: String,
    },
    Text(&'static str),
}

/// The `tools` scenario: the answer depends on how many tool results the conversation holds.
fn script(messages: &[Value]) -> Answer {
    let tool_results = messages.iter().filter(|m| m["role"] == "tool").count();
    match tool_results {
        0 => Answer::ToolCall {
            id: "call_mock_1",
            name: "write_file",
            arguments: json!({ "path": FILE_NAME, "content": FILE_CONTENT }).to_string(),
        },
        1 => Answer::ToolCall {
            id: "call_mock_2",
            name: "bash",
            arguments: json!({ "command": COMMAND }).to_string(),
        },
        _ => Answer::Text(FINAL_TEXT),
    }
}

async fn chat_completions(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> Response {
    let request = record(&log, "/v1/chat/completions", &headers, &body);
    let Some(messages) = request["messages"].as_array() else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": { "message": "messages missing" } })),
        )
            .into_response();
    };
    let answer = script(messages);
    // The fixture's usage: the JSON of the messages / 4 in, 20 per tool call or the text / 4 out.
    let prompt_tokens = serde_json::to_string(messages).map_or(0, |s| s.len() / 4) as u64;
    let completion_tokens = match &answer {
        Answer::ToolCall { .. } => 20,
        Answer::Text(text) => (text.len() / 4) as u64,
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let model = request["model"].as_str().unwrap_or(MODEL).to_owned();

    if request["stream"] != true {
        return axum::Json(whole_completion(&model, &answer, usage)).into_response();
    }

    let id = format!("chatcmpl-mock-{}", messages.len());
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let mut chunks = Vec::new();
    let finish = match &answer {
        Answer::ToolCall {
            id,
            name,
            arguments,
        } => {
            chunks.push(chunk(
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": id,
                        "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }],
                }),
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
        Answer::Text(text) => {
            chunks.push(chunk(json!({ "role": "assistant", "content": "" }), None));
            for piece in split(text, 3) {
                chunks.push(chunk(json!({ "content": piece }), None));
            }
            "stop"
        }
    };
    chunks.push(chunk(json!({}), Some(finish)));
    chunks.push(json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": usage,
    }));
    let mut frames: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    frames.push("data: [DONE]\n\n".to_owned());

    // Sent frame by frame, as a real server streams them.
    let stream = futures::stream::iter(frames).then(|frame| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok::<_, Infallible>(frame)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("SSE response")
}

/// A non-streaming answer (vibe streams; kept for completeness).
fn whole_completion(model: &str, answer: &Answer, usage: Value) -> Value {
    let (message, finish) = match answer {
        Answer::ToolCall {
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
        Answer::Text(text) => (json!({ "role": "assistant", "content": text }), "stop"),
    };
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
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
