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
//! binary's two variables. [`DemoModel`] runs one in-process, which is how Otter's own tests use
//! it.

mod config;
mod http;
pub mod script;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{DEFAULT_LISTEN, Settings};
pub use http::{Recorded, RequestLog, app};
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
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let log = RequestLog::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app(Some(log.clone())), shutdown.clone()));
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
