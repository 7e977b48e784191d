//! Server errors (issue 15, part 5): each 5xx is logged once, under its request's span (a 500 at
//! ERROR, a 503 at WARN), and what went wrong inside stays in that record, out of the answer.

use reqwest::StatusCode;
use tracing::Level;

use otter_testkit::{TestApp, assert_error};

use crate::logs::{Logs, Record};

/// The one record a failed request left, after checking it is the only one.
fn only_record(records: &[Record], what: &str) -> Record {
    let in_request: Vec<_> = records.iter().filter(|r| r.in_request).collect();
    assert_eq!(in_request.len(), 1, "{what}: {records:#?}");
    in_request[0].clone()
}

#[tokio::test]
async fn a_500_is_logged_once_at_error_and_its_detail_is_not_sent() {
    let (logs, _guard) = Logs::capture();
    let app = TestApp::spawn().await;
    // A real database failure that is not an outage: the table is gone.
    sqlx::query("ALTER TABLE projects RENAME TO projects_gone")
        .execute(&app.state.db)
        .await
        .unwrap();
    logs.take();

    let (status, body) = app.get("/v1/projects").await;
    let message = assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(message, "internal error");
    let record = only_record(&logs.take(), "GET /v1/projects");
    assert_eq!(record.level, Level::ERROR, "{record:?}");
    assert!(
        record.text.contains("projects"),
        "the detail is logged: {record:?}"
    );
}

#[tokio::test]
async fn a_deliberate_503_is_logged_once_at_warn_and_the_databases_words_are_not_sent() {
    let (logs, _guard) = Logs::capture();
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let id = ws["id"].as_str().unwrap();
    logs.take();

    // The runtime is off: a 503 that says so.
    let (status, body) = app.get(&format!("/v1/runtime/workspaces/{id}")).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let record = only_record(&logs.take(), "the runtime disabled");
    assert_eq!(record.level, Level::WARN, "{record:?}");

    // PostgreSQL out of reach (the server's pool closed): a fixed message; sqlx's own words
    // are in the log only.
    app.state.db.close().await;
    logs.take();
    let (status, body) = app.get("/v1/queue").await;
    let message = assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert_eq!(message, "the database is unavailable; retry shortly");
    let record = only_record(&logs.take(), "the database unavailable");
    assert_eq!(record.level, Level::WARN, "{record:?}");
    assert!(
        record.text.contains("closed"),
        "the detail is logged: {record:?}"
    );
}
