//! `GET /v1/audit?limit=&offset=&actor=&target_id=`: the audit trail, newest first (what is
//! recorded, and when: `crate::audit`).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use otter_core::db::Page;
use otter_core::db::audit::{self, AuditEntry, AuditFilter};
use serde::Deserialize;

use crate::error::{AppError, AppJson, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list_audit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    actor: Option<String>,
    target_id: Option<String>,
}

/// A filter value: 1 to 300 characters, none a control character.
fn filter_value(name: &str, value: Option<String>) -> Result<Option<String>> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > 300 || v.chars().any(char::is_control) => {
            Err(AppError::Validation(format!(
                "{name} must be 1 to 300 characters, without control characters"
            )))
        }
        other => Ok(other),
    }
}

async fn list_audit(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<AuditQuery>,
) -> Result<AppJson<Page<AuditEntry>>> {
    let page = super::page(q.limit, q.offset)?;
    let filter = AuditFilter {
        actor: filter_value("actor", q.actor)?,
        target_id: filter_value("target_id", q.target_id)?,
    };
    Ok(AppJson(audit::list(&state.db, &filter, page).await?))
}
