//! # otter-testkit
//!
//! Support for Otter's own integration tests: [`TestApp`] runs a real server on 127.0.0.1 over a
//! fresh PostgreSQL database and a private Redis queue, [`Worker`] runs a worker beside it and
//! [`jobs`] submits prompts and waits for their jobs, [`real_vibe`] installs the real vibe for the
//! tests that run it, [`SseClient`] reads an SSE stream frame
//! by frame, and [`assert_error`] checks the API's error shape. Never used in production.

mod app;
pub mod jobs;
mod process;
pub mod real_vibe;
mod receiver;
mod sse;
mod worker;

use std::time::Duration;

pub use app::{TestApp, assert_error, content_type};
pub use otter_core::testing::{TestEnv, reachable_by_jobs};
pub use process::{give_to_job_user, processes_naming};
pub use receiver::{Answer, Received, Receiver};
pub use sse::{SseClient, SseDecoder, SseFrame};
pub use worker::Worker;

/// Waits until `check` returns `Some`, polling every 20 ms; panics after `within` with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails the test `test` because `what` is missing. A prerequisite the test scripts cannot
/// install (a Docker engine) is never a reason to pass: `scripts/test.sh` installs what it can
/// and refuses to start the tests without a Docker engine.
pub fn prerequisite_missing(test: &str, what: &str) -> ! {
    panic!("{test}: {what}; this test needs it (scripts/test.sh installs what it can)")
}
