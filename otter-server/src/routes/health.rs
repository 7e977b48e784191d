//! `GET /healthz`: whether PostgreSQL and Redis answer. 200 when both do, 503 otherwise.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(get_health))
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn get_health(State(state): State<AppState>) -> impl IntoResponse {
    let (postgres, redis) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, otter_core::db::ping(&state.db)),
        tokio::time::timeout(CHECK_TIMEOUT, state.queue.ping()),
    );
    let postgres = match postgres {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let redis = match redis {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let healthy = postgres == "ok" && redis == "ok";
    // Workers that claim nothing, and why (a disk nearly full): the service still accepts
    // prompts, which wait.
    // Asked only of a database that answers, within the same bound as the checks.
    let workers = if healthy {
        tokio::time::timeout(CHECK_TIMEOUT, otter_core::metrics::workers(&state.db)).await
    } else {
        Ok(Ok(Vec::new()))
    };
    let not_claiming: Vec<_> = match workers {
        Ok(Ok(workers)) => workers
            .into_iter()
            .filter_map(|w| {
                let reason = w.claims_paused?;
                Some(json!({
                    "worker_id": w.id,
                    "reason": reason,
                    "disk_free_bytes": w.disk_free_bytes,
                }))
            })
            .collect(),
        _ => Vec::new(),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if healthy { "ok" } else { "degraded" },
            "postgres": postgres,
            "redis": redis,
            "version": env!("CARGO_PKG_VERSION"),
            "workers_not_claiming": not_claiming,
        })),
    )
}
