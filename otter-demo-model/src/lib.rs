//! # otter-demo-model
//!
//! Otter's demo model: a scripted, OpenAI-style chat-completions server that vibe can be pointed
//! at instead of a real model (`OTTER_DEMO=true` in the worker, see `otter_core::demo`). It is
//! for a first run without an API key, for frontend development and for CI: every run makes the
//! same moves a real agent would (reasoning, a file written, a shell command, a final answer,
//! usage), costs nothing, and says in everything it writes that it is the Otter demo model, not a
//! real model. It reports its model as [`MODEL`] (`otter-demo`).
//!
//! The conversation is in [`script`], the HTTP API in [`app`]; [`Settings`] reads the
//! binary's variables:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `OTTER_DEMO_MODEL_LISTEN` | `127.0.0.1:8090` | where it listens |
//! | `OTTER_LOG_FORMAT` | `text` | `text` or `json` logs |
//! | `OTTER_DEMO_MODEL_RATE_LIMIT` | `off` | `off`: serve every request; `always`: answer every `POST /v1/chat/completions` with `429 Too Many Requests`; `first`: answer only the first one with a 429, then serve as usual ([`RateLimit`]) |
//! | `OTTER_DEMO_MODEL_RETRY_AFTER` | unset | whole seconds: each 429 carries `Retry-After: <secs>` (and its message "Please try again in `<secs>`s."); unset, a 429 has no `Retry-After` |
//!
//! The 429's body is OpenAI's rate-limit error (`type` `requests`, `code`
//! `rate_limit_exceeded`); its message says it is the demo model's scripted limit.
//! [`DemoModel`] runs one in-process, which is how Otter's own tests use it.

mod config;
mod http;
pub mod script;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{DEFAULT_LISTEN, RateLimit, RateLimitMode, Settings};
pub use http::{Recorded, RequestLog, app, app_with};
pub use script::MODEL;

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets the answers in flight
/// finish (each is a short, finite stream).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// A demo model serving in this process, recording the requests it answers; stops when dropped.
pub struct DemoModel {
    addr: SocketAddr,
    log: RequestLog,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DemoModel {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, RateLimit::default()).await
    }

    /// [`DemoModel::start`] with a scripted `rate_limit`.
    pub async fn start_with(addr: SocketAddr, rate_limit: RateLimit) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let log = RequestLog::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            app_with(Some(log.clone()), rate_limit),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            log,
            shutdown,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base a client (vibe's provider `api_base`, `OTTER_DEMO_MODEL_URL`) uses.
    pub fn api_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The chat-completions requests answered so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.requests()
    }

    /// Stops serving and waits until it has.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

impl Drop for DemoModel {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
