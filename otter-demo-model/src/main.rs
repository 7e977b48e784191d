//! `otter-demo-model`: serves the scripted demo model (not a real model) on
//! `OTTER_DEMO_MODEL_LISTEN` (default `127.0.0.1:8090`) until SIGINT or SIGTERM. See README.md,
//! "Demo model".

use anyhow::Context;
use otter_demo_model::{MODEL, RateLimitMode, Settings, app_with, serve};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env().context("invalid configuration")?;
    otter_core::telemetry::init(settings.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(otter_core::telemetry::cancel_on_signal(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on OTTER_DEMO_MODEL_LISTEN={}",
                settings.listen
            )
        })?;
    let addr = listener.local_addr().context("the listener's address")?;
    tracing::info!(%addr, model = MODEL, "otter-demo-model listening (a scripted demo, not a real model)");
    let limit = settings.rate_limit;
    if limit.mode != RateLimitMode::Off {
        tracing::warn!(
            rate_limit = limit.mode.as_str(),
            retry_after = limit.retry_after_secs,
            "scripted rate limit on: chat completions get 429 Too Many Requests"
        );
    }
    serve(listener, app_with(None, limit), shutdown)
        .await
        .context("otter-demo-model failed")?;
    tracing::info!("otter-demo-model stopped");
    Ok(())
}
