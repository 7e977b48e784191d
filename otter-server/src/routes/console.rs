//! The web console: one HTML page, its stylesheet and its JavaScript modules, embedded in the
//! binary from `otter-server/console/` (no build step). The page answers `/` and every view's
//! address (`/jobs/{id}`, `/workspaces`, `/workspaces/{id}`), so that any view can be shared and
//! reloaded; the assets are under `/console/`. Nothing here needs a token or holds a secret:
//! the page asks for a token and sends it to the public `/v1` API, like any other client.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and connections from
//! this origin only, no inline script or style, no frames, no plugins), `nosniff` and
//! `Referrer-Policy: no-referrer` (a job id in the address never leaks to a preview link).

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::{AppError, AppPath};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(show_page))
        .route("/jobs/{id}", get(show_page))
        .route("/workspaces", get(show_page))
        .route("/workspaces/{id}", get(show_page))
        .route("/console/{file}", get(get_asset))
}

/// The page's policy: everything from this origin only (`'self'` covers the `ws:` of the
/// interactive shell in CSP 3), nothing inline, no frames, no plugins, no `<base>`.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const PAGE: &str = include_str!("../../console/index.html");

/// The console's assets: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
    ("app.js", JS, include_str!("../../console/app.js")),
    ("api.js", JS, include_str!("../../console/api.js")),
    ("dom.js", JS, include_str!("../../console/dom.js")),
    ("entries.js", JS, include_str!("../../console/entries.js")),
    ("jobs.js", JS, include_str!("../../console/jobs.js")),
    ("job.js", JS, include_str!("../../console/job.js")),
    (
        "workspace.js",
        JS,
        include_str!("../../console/workspace.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../console/icon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The page, for `/` and every view's address (the page reads the address and shows the view).
async fn show_page() -> Response {
    with_headers("text/html; charset=utf-8", PAGE)
}

/// One asset by name; 404 for any other name.
async fn get_asset(AppPath(file): AppPath<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => with_headers(content_type, body),
        None => AppError::NotFound(format!("the console has no file {file:?}")).into_response(),
    }
}

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // Revalidated on every load: the binary's assets change with each release.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}
