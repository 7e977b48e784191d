//! `GET /openapi.json`: the API's OpenAPI 3.1 document (`otter-server/openapi.json`, compiled
//! in). Open even when tokens are required, like `/healthz`. The test `tests/api/openapi.rs`
//! keeps it in step with the routes: every route documented, every documented route real.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

/// The document, as kept in the repository.
const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(get_openapi))
}

async fn get_openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
