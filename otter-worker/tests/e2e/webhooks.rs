//! Signed webhooks on the real stack: a server (which sends the deliveries), a worker running
//! the stand-in, and receivers on 127.0.0.1 (`otter_testkit::Receiver`).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use otter_testkit::{Answer, Receiver, TestApp, assert_error, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Worker, finished, scenario, submit};

const WAIT: Duration = Duration::from_secs(30);

/// Private receivers allowed (they are on 127.0.0.1), retries 50 ms apart.
const SETTINGS: &[(&str, &str)] = &[
    ("OTTER_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("OTTER_WEBHOOK_RETRY_BASE", "50ms"),
];

async fn register(app: &TestApp, url: &str, events: &[&str]) -> Value {
    let (status, hook) = app
        .post("/v1/webhooks", json!({ "url": url, "events": events }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    hook
}

/// Checks `Otter-Signature` as a receiver would, with its own HMAC.
fn verifies(secret: &str, signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fresh = t
        .parse::<i64>()
        .is_ok_and(|t| (chrono_now() - t).abs() <= 300);
    expected == v1 && fresh
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn deliveries(app: &TestApp, hook: &Value) -> Vec<Value> {
    let (status, page) = app
        .get(&format!(
            "/v1/webhooks/{}/deliveries",
            hook["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// `hook`'s delivery once one has succeeded.
async fn succeeded(app: &TestApp, hook: &Value) -> Value {
    eventually(WAIT, "a delivery recorded as succeeded", || async {
        deliveries(app, hook)
            .await
            .into_iter()
            .find(|d| d["status"] == "succeeded")
    })
    .await
}

#[tokio::test]
async fn a_finished_job_is_delivered_signed_with_its_summary() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let receiver = Receiver::start(vec![]).await;
    let hook = register(&app, &receiver.url, &["job_succeeded"]).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{hook}");
    // Shown once: never read back.
    let (_, read) = app
        .get(&format!("/v1/webhooks/{}", hook["id"].as_str().unwrap()))
        .await;
    assert!(read.get("secret").is_none(), "{read}");
    assert_eq!(read["events"], json!(["job_succeeded"]));
    let (_, list) = app.get("/v1/webhooks").await;
    assert_eq!(list["total"], 1);
    assert!(list["items"][0].get("secret").is_none(), "{list}");

    let ws = app.workspace("ws").await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
    let job = finished(&app, &submit(&app, &ws, "hello", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let got = eventually(WAIT, "the delivery", || async {
        receiver.received().into_iter().next()
    })
    .await;
    assert_eq!(got.headers["otter-event"], "job_succeeded");
    assert!(
        verifies(&secret, &got.headers["otter-signature"], &got.body),
        "{:?}",
        got.headers
    );
    assert!(!verifies(
        "whsec_other",
        &got.headers["otter-signature"],
        &got.body
    ));
    let body = got.json();
    assert_eq!(body["event"]["kind"], "job_succeeded");
    assert_eq!(body["event"]["job_id"], job["id"]);
    assert_eq!(body["job"]["status"], "succeeded");
    assert_eq!(body["job"]["exit_code"], 0);
    assert_eq!(body["job"]["error"], Value::Null);
    assert!(body["job"]["cost"].as_f64().is_some(), "{body}");
    assert!(body["job"].get("preview_url").is_some());
    let items = eventually(WAIT, "the delivery recorded", || async {
        let items = deliveries(&app, &hook).await;
        (items.first().is_some_and(|d| d["status"] == "succeeded")).then_some(items)
    })
    .await;
    assert_eq!(
        items.len(),
        1,
        "only job_succeeded was asked for: {items:?}"
    );
    assert_eq!(got.headers["otter-delivery"], items[0]["id"]);
    assert_eq!(items[0]["attempts"][0]["status_code"], 200);
    assert!(items[0]["attempts"][0]["duration_ms"].is_number());
}

#[tokio::test]
async fn a_receiver_down_for_three_attempts_gets_the_event_on_the_fourth() {
    let app = TestApp::spawn_with(SETTINGS).await;
    // Down: 500, 502, 503, then up (refused connections: the restart test below).
    let receiver = Receiver::start(vec![
        Answer::Status(500),
        Answer::Status(502),
        Answer::Status(503),
    ])
    .await;
    let hook = register(&app, &receiver.url, &["job_queued"]).await;
    let ws = app.workspace("ws").await;
    submit(&app, &ws, "hello", json!({})).await;
    let delivery = succeeded(&app, &hook).await;
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{delivery}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("500"),
        "{delivery}"
    );
    assert_eq!(attempts[1]["status_code"], 502);
    assert_eq!(attempts[2]["status_code"], 503);
    assert_eq!(attempts[3]["status_code"], 200);
    assert_eq!(attempts[3]["error"], Value::Null);
    // Every attempt carried the same delivery id.
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|r| r.headers["otter-delivery"] == delivery["id"])
    );
}

/// Stops `app`'s server as SIGTERM would; returns its environment, for the next one.
fn stop(app: TestApp) -> otter_core::testing::TestEnv {
    let env = otter_core::testing::TestEnv {
        database_url: app.env.database_url.clone(),
        redis_url: app.env.redis_url.clone(),
        queue_name: app.env.queue_name.clone(),
        dir: app.env.dir.clone(),
    };
    drop(app);
    env
}

#[tokio::test]
async fn a_delivery_pending_when_the_server_dies_is_made_after_restart() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let hook = register(
        &app,
        &format!("http://127.0.0.1:{port}/hook"),
        &["job_queued"],
    )
    .await;
    let ws = app.workspace("ws").await;
    submit(&app, &ws, "hello", json!({})).await;
    eventually(WAIT, "a failed attempt", || async {
        let items = deliveries(&app, &hook).await;
        items
            .first()
            .is_some_and(|d| d["attempt_count"].as_i64() >= Some(1) && d["status"] == "pending")
            .then_some(())
    })
    .await;
    // The server goes (its sender with it); the receiver comes up; a new server starts.
    let env = stop(app);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let receiver = Receiver::start_on(listener, vec![]);
    let app = TestApp::start(env, SETTINGS).await;
    eventually(WAIT, "the delivery after the restart", || async {
        receiver.received().into_iter().next()
    })
    .await;
    let delivery = succeeded(&app, &hook).await;
    assert_eq!(delivery["kind"], "job_queued");
}

/// A send cut off by a server's shutdown (the receiver had not answered) gives its delivery
/// back: the next server sends it at once, not when the stopped one's 60 s lease ends.
#[tokio::test]
async fn a_delivery_in_flight_when_the_server_stops_is_sent_again_at_once() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let receiver = Receiver::start(vec![Answer::Hang]).await;
    let hook = register(&app, &receiver.url, &["job_queued"]).await;
    let ws = app.workspace("ws").await;
    submit(&app, &ws, "hello", json!({})).await;
    eventually(WAIT, "the send in progress", || async {
        receiver.received().into_iter().next()
    })
    .await;
    let app = TestApp::start(stop(app), SETTINGS).await;
    let got = eventually(WAIT, "the delivery sent again", || async {
        let got = receiver.received();
        (got.len() == 2).then_some(got)
    })
    .await;
    assert_eq!(
        got[0].headers["otter-delivery"], got[1].headers["otter-delivery"],
        "the same delivery"
    );
    let delivery = succeeded(&app, &hook).await;
    assert_eq!(
        delivery["attempt_count"], 1,
        "the send cut off is not an attempt: {delivery}"
    );
}

#[tokio::test]
async fn metadata_and_private_addresses_are_refused() {
    let app = TestApp::spawn().await;
    for url in [
        "http://169.254.169.254/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://0.0.0.0:80/",
        "http://127.0.0.1:9/",
        "http://10.0.0.1/",
        "ftp://example.com/",
    ] {
        let (status, body) = app
            .post(
                "/v1/webhooks",
                json!({ "url": url, "events": ["job_failed"] }),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    }
    let (status, body) = app
        .post(
            "/v1/webhooks",
            json!({ "url": "http://example.com/", "events": ["output_chunk"] }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
    // Even with private addresses allowed, metadata stays refused.
    let app = TestApp::spawn_with(SETTINGS).await;
    let (status, body) = app
        .post(
            "/v1/webhooks",
            json!({ "url": "http://169.254.169.254/", "events": ["job_failed"] }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_when_connecting() {
    // Without OTTER_WEBHOOK_ALLOW_PRIVATE: `localhost` passes registration (a name), and is
    // refused at connect time, on the address it resolves to.
    let app = TestApp::spawn_with(&[("OTTER_WEBHOOK_RETRY_BASE", "50ms")]).await;
    let receiver = Receiver::start(vec![]).await;
    let hook = register(
        &app,
        &format!("http://localhost:{}/hook", receiver.port),
        &["job_queued"],
    )
    .await;
    let ws = app.workspace("ws").await;
    submit(&app, &ws, "hello", json!({})).await;
    let delivery = eventually(WAIT, "a refused attempt", || async {
        deliveries(&app, &hook)
            .await
            .into_iter()
            .find(|d| d["attempt_count"].as_i64() >= Some(1))
    })
    .await;
    let error = delivery["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("resolves to") && error.contains("OTTER_WEBHOOK_ALLOW_PRIVATE"),
        "{delivery}"
    );
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let target = Receiver::start(vec![]).await;
    let redirecting = Receiver::start(vec![Answer::Redirect(307, target.url.clone())]).await;
    let hook = register(&app, &redirecting.url, &["job_queued"]).await;
    let ws = app.workspace("ws").await;
    submit(&app, &ws, "hello", json!({})).await;
    let delivery = eventually(WAIT, "the redirect recorded", || async {
        deliveries(&app, &hook)
            .await
            .into_iter()
            .find(|d| d["attempt_count"].as_i64() >= Some(1))
    })
    .await;
    assert_eq!(delivery["attempts"][0]["status_code"], 307, "{delivery}");
    assert!(
        delivery["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("redirect not followed")
    );
    // The retry (200) goes to the registered URL again, never to the target.
    eventually(WAIT, "the retry", || async {
        (redirecting.received().len() >= 2).then_some(())
    })
    .await;
    assert!(target.received().is_empty());
}

#[tokio::test]
async fn a_hanging_receiver_delays_neither_the_job_nor_another_receiver() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let dead = Receiver::start(vec![Answer::Hang; 20]).await;
    let alive = Receiver::start(vec![]).await;
    let kinds = ["job_queued", "job_started", "job_succeeded"];
    register(&app, &dead.url, &kinds).await;
    register(&app, &alive.url, &kinds).await;
    let ws = app.workspace("ws").await;
    let _worker = Worker::start(&app, &[("OTTER_VIBE_EXTRA_ENV", &scenario("tools", &[]))]).await;
    let started = Instant::now();
    let job = finished(&app, &submit(&app, &ws, "hello", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    eventually(WAIT, "all three events at the live receiver", || async {
        (alive.received().len() >= 3).then_some(())
    })
    .await;
    // Well under the 10 s a hanging receiver is given.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(!dead.received().is_empty(), "the dead receiver was tried");
}

#[tokio::test]
async fn redeliver_sends_again_and_rotate_secret_changes_the_signature() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let receiver = Receiver::start(vec![]).await;
    let hook = register(&app, &receiver.url, &["job_queued"]).await;
    let id = hook["id"].as_str().unwrap();
    let old = hook["secret"].as_str().unwrap().to_owned();
    let ws = app.workspace("ws").await;
    submit(&app, &ws, "hello", json!({})).await;
    let first = eventually(WAIT, "the first delivery", || async {
        receiver.received().into_iter().next()
    })
    .await;
    assert!(verifies(
        &old,
        &first.headers["otter-signature"],
        &first.body
    ));

    let (status, rotated) = app
        .post(&format!("/v1/webhooks/{id}/rotate-secret"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let delivery = succeeded(&app, &hook).await;
    let delivery_id = delivery["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second = eventually(WAIT, "the redelivery", || async {
        receiver.received().into_iter().nth(1)
    })
    .await;
    assert_eq!(second.headers["otter-delivery"], delivery_id);
    assert!(verifies(
        &new,
        &second.headers["otter-signature"],
        &second.body
    ));
    assert!(!verifies(
        &old,
        &second.headers["otter-signature"],
        &second.body
    ));
    let delivery = eventually(WAIT, "two attempts", || async {
        deliveries(&app, &hook).await.into_iter().find(|d| {
            d["status"] == "succeeded" && d["attempts"].as_array().is_some_and(|a| a.len() == 2)
        })
    })
    .await;
    assert_eq!(delivery["attempt_count"], 2);

    // Unknown ids are 404s; a delete removes the hook and its deliveries.
    let (status, body) = app
        .post(
            &format!(
                "/v1/webhooks/{id}/deliveries/{}/redeliver",
                uuid::Uuid::new_v4()
            ),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = app
        .request(reqwest::Method::DELETE, &format!("/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}
