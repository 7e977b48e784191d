//! Issue 18, parts 1 and 3: `Idempotency-Key` on the creating routes, and the audit trail of
//! every state-changing request (named tokens, fingerprints, job tokens, and a request that
//! cannot be recorded does not happen).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use otter_testkit::{TestApp, assert_error};

/// POSTs `body` to `path` with `Idempotency-Key: key` as `token`; returns the status, whether
/// the answer says it was replayed, and the body.
async fn post_with_key(
    app: &TestApp,
    token: Option<&str>,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, bool, Value) {
    let req = app
        .builder_as(token, Method::POST, path)
        .header("Idempotency-Key", key);
    let (status, headers, body) = app.send(req, Some(body)).await;
    let replayed = headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, replayed, body)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.state.db)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_replayed_submit_answers_with_the_same_job_and_makes_no_second_one() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let body = json!({ "prompt": "hello", "workspace_id": ws["id"], "priority": 3 });
    let (status, replayed, first) =
        post_with_key(&app, None, "/v1/prompts", "submit-1", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed);
    // The same body, keys in another order and other white space: the same request.
    let same = json!({ "priority": 3, "workspace_id": ws["id"], "prompt": "hello" });
    let (status, replayed, again) =
        post_with_key(&app, None, "/v1/prompts", "submit-1", same).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed, "Idempotent-Replayed: true");
    assert_eq!(again, first);
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, 1);

    // Projects and workspaces too.
    let (s1, _, p1) = post_with_key(&app, None, "/v1/projects", "p", json!({ "name": "a" })).await;
    let (s2, r2, p2) = post_with_key(&app, None, "/v1/projects", "p", json!({ "name": "a" })).await;
    assert_eq!(
        (s1, s2, r2),
        (StatusCode::CREATED, StatusCode::CREATED, true)
    );
    assert_eq!(p1, p2);
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, 1);
    let dir = app.env.dir.join("w2").display().to_string();
    let wbody = json!({ "name": "w2", "path": dir, "create": true });
    let (s1, _, w1) = post_with_key(&app, None, "/v1/workspaces", "w", wbody.clone()).await;
    let (s2, r2, w2) = post_with_key(&app, None, "/v1/workspaces", "w", wbody).await;
    assert_eq!(
        (s1, s2, r2),
        (StatusCode::CREATED, StatusCode::CREATED, true)
    );
    assert_eq!(w1, w2);

    // Without a key, every submit is a new job.
    let (status, _) = app.post("/v1/prompts", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, 2);
}

#[tokio::test]
async fn twenty_concurrent_submits_with_one_key_make_one_job() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let body = json!({ "prompt": "once", "workspace_id": ws["id"] });
    let answers = futures::future::join_all(
        (0..20).map(|_| post_with_key(&app, None, "/v1/prompts", "race", body.clone())),
    )
    .await;
    let mut ids = std::collections::BTreeSet::new();
    let mut fresh = 0;
    for (status, replayed, job) in &answers {
        match *status {
            StatusCode::CREATED => {
                ids.insert(job["id"].as_str().unwrap().to_owned());
                if !replayed {
                    fresh += 1;
                }
            }
            StatusCode::CONFLICT => {
                assert_eq!(job["error"]["code"], "idempotency_key_in_progress", "{job}");
            }
            other => panic!("{other}: {job}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one request acted: {answers:?}");
    assert_eq!(ids.len(), 1, "every 201 names the same job: {ids:?}");
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, 1);
}

#[tokio::test]
async fn a_reused_key_with_another_body_is_a_422_and_a_bad_key_a_400() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let (status, _, _) = post_with_key(
        &app,
        None,
        "/v1/prompts",
        "k",
        json!({ "prompt": "one", "workspace_id": ws["id"] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, replayed, body) = post_with_key(
        &app,
        None,
        "/v1/prompts",
        "k",
        json!({ "prompt": "two", "workspace_id": ws["id"] }),
    )
    .await;
    assert!(!replayed);
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    // The same key on another creating route is another request too.
    let (status, _, body) =
        post_with_key(&app, None, "/v1/projects", "k", json!({ "name": "p" })).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    for bad in [String::new(), "has space".to_owned(), "x".repeat(256)] {
        let (status, _, body) =
            post_with_key(&app, None, "/v1/projects", &bad, json!({ "name": "p" })).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, 0);
}

#[tokio::test]
async fn keys_are_scoped_to_the_token_that_sent_them() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "alice:tok-a,tok-b")]).await;
    let body = json!({ "name": "p" });
    let (sa, ra, a) = post_with_key(&app, Some("tok-a"), "/v1/projects", "k", body.clone()).await;
    let (sb, rb, b) = post_with_key(&app, Some("tok-b"), "/v1/projects", "k", body.clone()).await;
    assert_eq!((sa, sb), (StatusCode::CREATED, StatusCode::CREATED));
    assert!(!ra && !rb, "another token's key is another key");
    assert_ne!(a["id"], b["id"]);
    let (_, again, c) = post_with_key(&app, Some("tok-a"), "/v1/projects", "k", body).await;
    assert!(again);
    assert_eq!(c["id"], a["id"]);
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, 2);
}

#[tokio::test]
async fn keys_older_than_the_ttl_are_purged_and_then_act_again() {
    let app = TestApp::spawn_with(&[("OTTER_IDEMPOTENCY_TTL", "1s")]).await;
    let body = json!({ "name": "p" });
    let (status, _, first) = post_with_key(&app, None, "/v1/projects", "old", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await,
        1
    );
    // The server purges it by itself (every half TTL).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&app, "SELECT count(*) FROM idempotency_keys").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired key was not purged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, replayed, second) = post_with_key(&app, None, "/v1/projects", "old", body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!replayed);
    assert_ne!(second["id"], first["id"]);
}

/// The audit trail's entries, newest first, filtered by `query`.
async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/v1/audit{query}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// Every text of the audit table, as one string.
async fn audit_text(app: &TestApp) -> String {
    sqlx::query_scalar::<_, String>(
        "SELECT coalesce(string_agg(a::text, '\n'), '') FROM audit_log a",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_audit_trail_names_the_token_for_a_cancel_and_never_holds_a_token() {
    let app = TestApp::spawn_with(&[(
        "OTTER_API_TOKENS",
        "ci-bot:secret-ci-token-123,unnamed-secret-456",
    )])
    .await;
    let ws = app.workspace("ws").await;
    let job = app.submit(&ws, "to be cancelled").await;
    let id = job["id"].as_str().unwrap();
    let (status, body) = app
        .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert!(status.is_success(), "{status}: {body}");

    let entries = audit(&app, &format!("?target_id={id}")).await;
    // Newest first: the cancel, then the submit that created the job.
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let cancel = &entries[0];
    assert_eq!(cancel["actor"], "ci-bot");
    assert_eq!(cancel["method"], "POST");
    assert_eq!(cancel["route"], "/v1/jobs/{id}/cancel");
    assert_eq!(cancel["target_ids"], json!([id]));
    assert_eq!(cancel["status"], status.as_u16());
    assert!(cancel["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(entries[1]["route"], "/v1/prompts");
    assert_eq!(entries[1]["created_id"], id);
    assert_eq!(entries[1]["status"], 201);

    // An unnamed token is shown by its fingerprint.
    let (status, _) = app
        .request_as(
            Some("unnamed-secret-456"),
            Method::POST,
            "/v1/projects",
            Some(json!({ "name": "p" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let fingerprint = otter_core::config::token_fingerprint("unnamed-secret-456");
    assert!(fingerprint.starts_with("token:") && fingerprint.len() == 14);
    let by = audit(&app, &format!("?actor={fingerprint}")).await;
    assert_eq!(by.len(), 1, "{by:#?}");
    assert_eq!(by[0]["route"], "/v1/projects");
    // Reads are not recorded; the filter by actor works.
    assert_eq!(
        audit(&app, "?actor=ci-bot").await.len(),
        3,
        "workspace, submit, cancel"
    );

    let text = audit_text(&app).await;
    for token in ["secret-ci-token-123", "unnamed-secret-456"] {
        assert!(
            !text.contains(token),
            "the audit table holds a token: {text}"
        );
    }
}

#[tokio::test]
async fn a_job_tokens_actions_are_recorded_as_the_job() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "admin")]).await;
    let ws = app.workspace("ws").await;
    let job = app.submit(&ws, "serve it").await;
    let id = job["id"].as_str().unwrap().to_owned();
    let lease = match otter_core::db::jobs::claim(
        &app.state.db,
        id.parse().unwrap(),
        &otter_core::db::jobs::Claimant::new("test-worker", Duration::from_secs(60)),
    )
    .await
    .unwrap()
    {
        otter_core::db::jobs::Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed: {other:?}"),
    };
    let job_token = lease.job_token.to_string();
    let (status, body) = app
        .request_as(
            Some(&job_token),
            Method::POST,
            &format!("/v1/jobs/{id}/preview-url"),
            Some(json!({ "preview_url": "http://127.0.0.1:3000" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = audit(&app, &format!("?actor=job:{id}")).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["route"], "/v1/jobs/{id}/preview-url");
    assert_eq!(entries[0]["target_ids"], json!([id]));
    assert!(!audit_text(&app).await.contains(&job_token));
}

#[tokio::test]
async fn a_request_that_cannot_be_recorded_does_not_happen() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let jobs_before = count(&app, "SELECT count(*) FROM jobs").await;
    sqlx::raw_sql(
        "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'the audit table refuses writes'; END $$;
         CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log
             FOR EACH ROW EXECUTE FUNCTION test_refuse_audit();",
    )
    .execute(&app.state.db)
    .await
    .unwrap();

    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "never", "workspace_id": ws["id"] }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let (status, body) = app.post("/v1/projects", json!({ "name": "never" })).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, jobs_before);
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, 0);
    // Reads still work.
    let (status, _) = app.get("/v1/projects").await;
    assert_eq!(status, StatusCode::OK);

    sqlx::raw_sql("DROP TRIGGER test_refuse_audit ON audit_log")
        .execute(&app.state.db)
        .await
        .unwrap();
    let (status, _) = app.post("/v1/projects", json!({ "name": "now" })).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Every state-changing operation of the OpenAPI document (so every one the server has: the
/// document is checked against the routes in `openapi.rs`), present and future, is recorded,
/// whatever it answers.
#[tokio::test]
async fn every_state_changing_route_is_recorded() {
    let app = TestApp::spawn().await;
    let doc: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let mut sent = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !["post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let path: String = template
                .split('/')
                .map(|s| {
                    if s.starts_with('{') {
                        uuid::Uuid::new_v4().to_string()
                    } else {
                        s.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, _) = app.request(method.clone(), &path, Some(json!({}))).await;
            sent.push((method.to_string(), template.clone(), path, status));
        }
    }
    assert!(sent.len() > 10, "{sent:?}");
    let entries = audit(&app, "?limit=500").await;
    for (method, template, path, status) in &sent {
        let entry = entries
            .iter()
            .find(|e| e["path"] == path.as_str() && e["method"] == method.as_str())
            .unwrap_or_else(|| panic!("{method} {template} is not in the audit trail"));
        assert_eq!(entry["route"], template.as_str());
        assert_eq!(entry["actor"], "anonymous");
        assert_eq!(entry["status"], status.as_u16(), "{method} {template}");
    }
}
