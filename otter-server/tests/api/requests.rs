//! Requests and their answers: shapes, validation, lists.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection as _;

use otter_testkit::{TestApp, assert_error};

#[tokio::test]
async fn healthz_reports_postgres_and_redis() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["postgres"], "ok");
    assert_eq!(body["redis"], "ok");
}

#[tokio::test]
async fn projects_are_created_and_listed() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .post(
            "/v1/projects",
            json!({ "name": "alpha", "description": "first" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "alpha");
    assert_eq!(created["description"], "first");
    assert!(created["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(created["created_at"].is_string());
    app.post("/v1/projects", json!({ "name": "beta" })).await;

    let (status, list) = app.get("/v1/projects?limit=1&offset=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["name"], "beta");

    let (status, one) = app
        .get(&format!("/v1/projects/{}", created["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, created);
}

#[tokio::test]
async fn a_projects_max_running_is_set_changed_and_checked() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .post(
            "/v1/projects",
            json!({ "name": "limited", "max_running": 2 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["max_running"], 2);
    let path = format!("/v1/projects/{}", created["id"].as_str().unwrap());
    // A PATCH changes what it names and leaves the rest.
    let (status, changed) = app
        .request(Method::PATCH, &path, Some(json!({ "max_running": 5 })))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (
            changed["max_running"].as_i64(),
            changed["budget_usd"].as_f64()
        ),
        (Some(5), None)
    );
    let (_, changed) = app
        .request(Method::PATCH, &path, Some(json!({ "budget_usd": 3 })))
        .await;
    assert_eq!(
        (
            changed["max_running"].as_i64(),
            changed["budget_usd"].as_f64()
        ),
        (Some(5), Some(3.0))
    );
    let (_, removed) = app
        .request(Method::PATCH, &path, Some(json!({ "max_running": null })))
        .await;
    assert_eq!(removed["max_running"], serde_json::Value::Null);
    assert_eq!(removed["budget_usd"], 3.0);
    for body in [
        json!({ "max_running": 0 }),
        json!({ "max_running": 100001 }),
        json!({ "max_running": -1 }),
        json!({ "max_running": 1.5 }),
        json!({ "max_running": "two" }),
    ] {
        let (status, err) = app.request(Method::PATCH, &path, Some(body.clone())).await;
        let message = assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("max_running"), "{body}: {message}");
        let (status, err) = app
            .post(
                "/v1/projects",
                json!({ "name": "x", "max_running": body["max_running"] }),
            )
            .await;
        let message = assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("max_running"), "{body}: {message}");
    }
    // Nothing was half-changed by the refused ones.
    let (_, now) = app.get(&path).await;
    assert_eq!(now, removed);
}

#[tokio::test]
async fn workspaces_get_their_own_vibe_home() {
    let app = TestApp::spawn().await;
    let (_, project) = app.post("/v1/projects", json!({ "name": "p" })).await;
    let dir = app.env.mkdir("ws-one");
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({ "project_id": project["id"], "name": "one", "path": dir.display().to_string() }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert_eq!(ws["project_id"], project["id"]);
    assert_eq!(
        ws["path"],
        dir.canonicalize().unwrap().display().to_string()
    );
    let home = std::path::PathBuf::from(ws["vibe_home"].as_str().unwrap());
    assert!(home.ends_with(ws["id"].as_str().unwrap()));
    let trusted = std::fs::read_to_string(home.join("trusted_folders.toml")).unwrap();
    assert!(
        trusted.contains(&format!("\"{}\"", ws["path"].as_str().unwrap())),
        "{trusted}"
    );
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(config.contains("enable_telemetry = false"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join(".env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (status, got) = app
        .get(&format!("/v1/workspaces/{}", ws["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, ws);
    let (_, list) = app
        .get(&format!(
            "/v1/workspaces?project_id={}",
            project["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(list["total"], 1);

    // The same directory twice is a conflict, and leaves no second home behind.
    let (status, body) = app
        .post(
            "/v1/workspaces",
            json!({ "path": dir.display().to_string() }),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let homes = std::fs::read_dir(home.parent().unwrap()).unwrap().count();
    assert_eq!(homes, 1);
}

#[tokio::test]
async fn workspace_paths_are_checked() {
    let root = tempdir_under("allowed");
    let app = TestApp::spawn_with(&[("OTTER_ALLOWED_ROOTS", root.to_str().unwrap())]).await;
    let outside = app.env.mkdir("outside");
    for (path, needle) in [
        ("relative/dir".to_owned(), "absolute"),
        (format!("{}/../x", root.display()), ".."),
        (outside.display().to_string(), "outside the allowed roots"),
        (format!("{}/missing", root.display()), "does not exist"),
        (String::new(), "empty"),
    ] {
        let (status, body) = app.post("/v1/workspaces", json!({ "path": path })).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains(needle), "{path}: {message}");
    }
    // `create` makes the directory, inside the roots only.
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({ "path": format!("{}/new/dir", root.display()), "create": true }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert!(root.join("new/dir").is_dir());
    let (status, _) = app
        .post(
            "/v1/workspaces",
            json!({ "path": format!("{}/made", outside.display()), "create": true }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!outside.join("made").exists());
    // A symlink inside the root that leads out of it is refused.
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    let (status, body) = app
        .post(
            "/v1/workspaces",
            json!({ "path": format!("{}/escape", root.display()) }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    std::fs::remove_dir_all(&root).ok();
}

fn tempdir_under(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("otter-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;

    // Malformed JSON.
    let resp = app
        .client
        .post(format!("{}/v1/prompts", app.base))
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");

    // No JSON content type.
    let resp = app
        .client
        .post(format!("{}/v1/prompts", app.base))
        .body("prompt=hi")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    // A bad UUID in the path and in the body.
    let (status, body) = app.get("/v1/jobs/not-a-uuid").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "hi", "workspace_id": "nope" }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");

    // An empty prompt, names the field.
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "  ", "workspace_id": ws["id"] }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("prompt"), "{message}");

    // A NUL character, which PostgreSQL cannot store, in any string of any body: a 400 saying
    // so, not a failed insert.
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "a\u{0}b", "workspace_id": ws["id"] }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("NUL"), "{message}");
    let (status, body) = app.post("/v1/projects", json!({ "name": "p\u{0}" })).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");

    // A missing field and an unknown one.
    let (status, body) = app
        .post("/v1/prompts", json!({ "workspace_id": ws["id"] }))
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("prompt"), "{message}");
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "x", "workspace_id": ws["id"], "colour": 1 }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("colour"), "{message}");

    // Out-of-range numbers.
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "x", "workspace_id": ws["id"], "priority": 5000 }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("priority"), "{message}");
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "x", "workspace_id": ws["id"], "max_attempts": 0 }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("max_attempts"), "{message}");

    // An unknown workspace, job, project.
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "x", "workspace_id": unknown }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("workspace"), "{message}");
    let (status, body) = app.get(&format!("/v1/jobs/{unknown}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get(&format!("/v1/jobs/{unknown}/events")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .post(
            "/v1/workspaces",
            json!({ "project_id": unknown, "path": "/tmp" }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // No workspace and no default.
    let (status, body) = app.post("/v1/prompts", json!({ "prompt": "x" })).await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("workspace_id"), "{message}");

    // Bad list parameters.
    for path in [
        "/v1/queue?limit=0",
        "/v1/queue?limit=abc",
        "/v1/history?status=running",
        "/v1/projects?offset=-1",
    ] {
        let (status, body) = app.get(path).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    }
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // Nothing was half-written by any of the above.
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["total"], 0);

    // An escaped backslash before `u0000` is text, not a NUL.
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "a \\u0000 b", "workspace_id": ws["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["prompt"], "a \\u0000 b");
}

#[tokio::test]
async fn a_prompt_is_queued_with_its_event() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let (status, job) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "Build a todo app", "workspace_id": ws["id"], "priority": 3 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    for field in [
        "id",
        "workspace_id",
        "project_id",
        "prompt",
        "status",
        "paused",
        "priority",
        "attempts",
        "max_attempts",
        "exit_code",
        "error",
        "preview_url",
        "created_at",
        "started_at",
        "finished_at",
        "output",
    ] {
        assert!(job.get(field).is_some(), "job lacks {field}: {job}");
    }
    assert_eq!(job["status"], "queued");
    assert_eq!(job["paused"], false);
    assert_eq!(job["priority"], 3);
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["max_attempts"], 5);
    assert_eq!(job["prompt"], "Build a todo app");

    let id = job["id"].as_str().unwrap();
    let (status, events) = app.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events["total"], 1);
    let event = &events["items"][0];
    assert_eq!(event["kind"], "job_queued");
    assert_eq!(event["seq"], 1);
    assert_eq!(event["job_id"], job["id"]);
    assert_eq!(event["workspace_id"], ws["id"]);

    // The job is in Redis, ready to be claimed.
    assert_eq!(app.state.queue.ready_len().await.unwrap(), 1);
}

#[tokio::test]
async fn the_default_workspace_is_registered_on_first_use() {
    let env_dir =
        std::env::temp_dir().join(format!("otter-default-{}", uuid::Uuid::new_v4().simple()));
    let app =
        TestApp::spawn_with(&[("OTTER_DEFAULT_WORKSPACE_PATH", env_dir.to_str().unwrap())]).await;
    let (s1, a) = app.post("/v1/prompts", json!({ "prompt": "one" })).await;
    let (s2, b) = app.post("/v1/prompts", json!({ "prompt": "two" })).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::CREATED, StatusCode::CREATED),
        "{a} {b}"
    );
    assert_eq!(a["workspace_id"], b["workspace_id"]);
    assert!(env_dir.is_dir());
    let (_, list) = app.get("/v1/workspaces").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["name"], "default");
    std::fs::remove_dir_all(env_dir).ok();
}

#[tokio::test]
async fn the_queue_lists_jobs_in_claim_order() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let mut ids = Vec::new();
    for (prompt, priority) in [("low", -1), ("first", 0), ("urgent", 10), ("second", 0)] {
        let (_, job) = app
            .post(
                "/v1/prompts",
                json!({ "prompt": prompt, "workspace_id": ws["id"], "priority": priority }),
            )
            .await;
        ids.push(job["id"].clone());
    }
    let (status, queue) = app.get("/v1/queue").await;
    assert_eq!(status, StatusCode::OK);
    let prompts: Vec<&str> = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["urgent", "first", "second", "low"]);
    assert_eq!(queue["total"], 4);
    let (_, page) = app.get("/v1/queue?limit=2&offset=1").await;
    let prompts: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["first", "second"]);

    // Nothing has finished yet.
    let (_, history) = app.get("/v1/history").await;
    assert_eq!(history["total"], 0);
    let _ = Method::GET;
}

#[tokio::test]
async fn every_list_takes_limit_and_offset_with_its_filters() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let ws_id = ws["id"].as_str().unwrap();
    for path in [
        "/v1/projects?limit=1&offset=0".to_owned(),
        format!(
            "/v1/workspaces?limit=1&offset=0&project_id={}",
            uuid::Uuid::new_v4()
        ),
        "/v1/workspaces?limit=2".to_owned(),
        "/v1/queue?limit=3&offset=1".to_owned(),
        format!("/v1/history?limit=1&offset=0&status=succeeded&workspace_id={ws_id}"),
        "/v1/history?offset=5".to_owned(),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(
            body["items"].is_array() && body["total"].is_number(),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn wrong_methods_and_unknown_routes_get_the_json_error_shape() {
    let app = TestApp::spawn().await;
    let (status, body) = app.request(Method::PUT, "/v1/queue", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) = app.request(Method::DELETE, "/v1/prompts", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    // With tokens required, an anonymous client cannot tell unknown routes from known ones.
    let locked = TestApp::spawn_with(&[("OTTER_API_TOKENS", "t")]).await;
    let (status, _, body) = locked
        .send(
            locked.builder_as(None, Method::GET, "/v1/no-such-thing"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = locked
        .client
        .get(format!("{}/v1/no-such-thing", locked.base))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connections_the_database_closed_give_503_then_are_replaced() {
    // PostgreSQL restarted (or an operator killed the backends): the pooled connections are
    // dead. A request that meets one gets a 503 asking to retry, never a 500, and the pool
    // replaces it, so the API answers again at once.
    let app = TestApp::spawn().await;
    let (status, _) = app.get("/v1/queue").await;
    assert_eq!(status, StatusCode::OK);
    let mut admin = sqlx::PgConnection::connect(&app.env.database_url)
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the server's connections were killed");
    let mut answers = Vec::new();
    loop {
        let (status, body) = app.get("/v1/queue").await;
        if status == StatusCode::OK {
            break;
        }
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
        answers.push(status);
        assert!(
            answers.len() <= 20,
            "still failing after {} requests",
            answers.len()
        );
    }
}

#[tokio::test]
async fn a_prompt_must_fit_in_the_one_argument_vibe_gets() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let max = otter_core::instructions::max_prompt_bytes(&app.state.config.api_base_url);
    // Between the argument's limit and the body's: accepted before, failed at every spawn.
    for len in [max + 1, 128 * 1024, 200 * 1024, 256 * 1024] {
        let (status, body) = app
            .post(
                "/v1/prompts",
                json!({ "prompt": "x".repeat(len), "workspace_id": ws["id"] }),
            )
            .await;
        let message = assert_error(
            status,
            &body,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        );
        assert!(
            message.contains(&format!("at most {max} bytes")) && message.contains("128 KiB"),
            "{len}: {message}"
        );
    }
    // Bytes, not characters: 4-byte characters count four each.
    let (status, body) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": "🦦".repeat(max / 4 + 1), "workspace_id": ws["id"] }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let (_, queue) = app.get("/v1/queue").await;
    assert_eq!(queue["total"], 0, "nothing was queued");

    // The longest is accepted, and stored whole.
    let longest = "y".repeat(max);
    let (status, job) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": longest, "workspace_id": ws["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["prompt"].as_str().map(str::len), Some(max));
}

#[tokio::test]
async fn names_are_counted_in_characters() {
    let app = TestApp::spawn().await;
    // 200 characters of 4 bytes each: 800 bytes, still 200 characters.
    let otters = "🦦".repeat(200);
    let (status, project) = app.post("/v1/projects", json!({ "name": otters })).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    assert_eq!(project["name"], otters);
    let dir = app.env.mkdir("emoji");
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({ "name": otters, "path": dir.display().to_string() }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert_eq!(ws["name"], otters);
    // Blanks around a name are trimmed before counting.
    let (status, project) = app
        .post("/v1/projects", json!({ "name": format!("  {otters}  ") }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");

    // 201 characters, of either kind, are refused, naming the limit.
    let dir = app.env.mkdir("too-long");
    for name in ["🦦".repeat(201), "a".repeat(201), "  ".to_owned()] {
        let (status, body) = app.post("/v1/projects", json!({ "name": name })).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("1 to 200 characters"), "{message}");
        let (status, body) = app
            .post(
                "/v1/workspaces",
                json!({ "name": name, "path": dir.display().to_string() }),
            )
            .await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(message.contains("1 to 200 characters"), "{message}");
    }
    // Descriptions too: 10000 characters, not bytes.
    let (status, body) = app
        .post(
            "/v1/projects",
            json!({ "name": "d", "description": "é".repeat(10_000) }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/v1/projects",
            json!({ "name": "d", "description": "é".repeat(10_001) }),
        )
        .await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("10000 characters"), "{message}");

    // A workspace named after its directory takes at most 200 of the directory's characters.
    let long_dir = app.env.mkdir(&"d".repeat(250));
    let (status, ws) = app
        .post(
            "/v1/workspaces",
            json!({ "path": long_dir.display().to_string() }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert_eq!(ws["name"], "d".repeat(200));
}
