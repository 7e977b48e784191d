//! Server-Sent Events as a client reads them: [`SseDecoder`] turns bytes into frames, complete
//! lines only, and [`SseClient`] feeds it one response's body.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::TestApp;

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    /// `id:`, if any.
    pub id: Option<String>,
    /// `event:`, if any.
    pub event: Option<String>,
    /// `data:` lines joined by `\n`.
    pub data: String,
}

impl SseFrame {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The id as a number.
    pub fn id_num(&self) -> Option<i64> {
        self.id.as_deref().and_then(|id| id.parse().ok())
    }
}

/// Turns the bytes of an SSE body into frames, as the spec reads them: bytes are kept until a
/// line is complete (`\n`, with a `\r` before it dropped), each complete line is decoded on its
/// own (lossily, so a character split across chunks arrives whole), and a blank line ends the
/// frame. Comments (`:` lines) are skipped, and so is a frame that holds nothing else (a
/// keep-alive).
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes after the last `\n`: the start of a line not yet complete.
    partial: Vec<u8>,
    /// The frame being read, and whether any field of it was seen.
    frame: SseFrame,
    data: Vec<String>,
    started: bool,
    /// Frames complete but not yet taken.
    ready: std::collections::VecDeque<SseFrame>,
}

impl SseDecoder {
    /// Adds the next bytes of the body, however they were cut.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let Some(last_newline) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for line in complete[..last_newline].split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line(&String::from_utf8_lossy(line));
        }
    }

    /// The next complete frame, if one is.
    pub fn next_frame(&mut self) -> Option<SseFrame> {
        self.ready.pop_front()
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            let mut frame = std::mem::take(&mut self.frame);
            frame.data = std::mem::take(&mut self.data).join("\n");
            if std::mem::take(&mut self.started) {
                self.ready.push_back(frame);
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => self.frame.id = Some(value),
            "event" => self.frame.event = Some(value),
            "data" => self.data.push(value),
            _ => return,
        }
        self.started = true;
    }
}

/// A client reading one SSE response frame by frame.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    decoder: SseDecoder,
}

impl SseClient {
    /// Opens `path` on `app`, with `Last-Event-ID` when given; panics unless the answer is 200.
    pub async fn connect(app: &TestApp, path: &str, last_event_id: Option<i64>) -> Self {
        let mut req = app
            .builder(Method::GET, path)
            .timeout(Duration::from_secs(600));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("SSE request sent");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "SSE answered {}",
            resp.status()
        );
        let content_type = crate::content_type(&resp);
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: Box::pin(resp.bytes_stream()),
            decoder: SseDecoder::default(),
        }
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ended; panics
    /// if none arrives within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseFrame> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("no SSE event within the deadline");
            match chunk {
                Some(Ok(bytes)) => self.decoder.feed(&bytes),
                Some(Err(e)) => panic!("SSE stream failed: {e}"),
                None => return None,
            }
        }
    }
}
