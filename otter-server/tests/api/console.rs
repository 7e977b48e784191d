//! The web console's page and files: served without a token, with the security headers and
//! the right content types, at every view's address; an unknown file is a 404. What the page
//! does is tested in a real browser (`otter-worker/tests/console`).

use otter_testkit::{TestApp, assert_error, content_type};
use reqwest::{Method, StatusCode};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

#[tokio::test]
async fn the_page_and_its_files_need_no_token_and_carry_the_security_headers() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "console-token")]).await;
    let id = uuid::Uuid::new_v4();
    for (path, want_type) in [
        ("/".to_owned(), "text/html; charset=utf-8"),
        (format!("/jobs/{id}"), "text/html; charset=utf-8"),
        ("/workspaces".to_owned(), "text/html; charset=utf-8"),
        (format!("/workspaces/{id}"), "text/html; charset=utf-8"),
        (
            "/console/app.js".to_owned(),
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/job.js".to_owned(),
            "text/javascript; charset=utf-8",
        ),
        ("/console/style.css".to_owned(), "text/css; charset=utf-8"),
        ("/console/icon.svg".to_owned(), "image/svg+xml"),
    ] {
        let resp = app
            .builder_as(None, Method::GET, &path)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(content_type(&resp), want_type, "{path}");
        let h = resp.headers();
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let body = resp.text().await.expect("body");
        assert!(!body.contains("console-token"), "{path} holds no secret");
        if want_type.starts_with("text/html") {
            assert!(body.contains(r#"<script type="module" src="/console/app.js">"#));
            // No inline script or style: the policy would block it anyway.
            assert!(!body.contains("<script>") && !body.contains("style="));
        }
    }
    // The data still needs the token.
    let (status, body) = app.request_as(None, Method::GET, "/v1/jobs", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn an_unknown_console_file_is_a_404_and_a_view_takes_no_post() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "console-token")]).await;
    for name in ["nope.js", "..%2Fapp.js", "index.html", "app.js.map"] {
        let (status, body) = app
            .request_as(None, Method::GET, &format!("/console/{name}"), None)
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) = app.request_as(None, Method::POST, "/", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn every_javascript_module_the_page_imports_is_served() {
    let app = TestApp::spawn().await;
    let (_, app_js) = app.get("/console/app.js").await;
    let mut pending = vec![app_js.as_str().expect("text").to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(source) = pending.pop() {
        for line in source
            .lines()
            .filter(|l| l.trim_start().starts_with("import "))
        {
            let name = line
                .split("\"./")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("an import of a sibling module: {line}"));
            if seen.insert(name.to_owned()) {
                let resp = app
                    .builder(Method::GET, &format!("/console/{name}"))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status(), StatusCode::OK, "{name}");
                assert_eq!(content_type(&resp), "text/javascript; charset=utf-8");
                pending.push(resp.text().await.expect("body"));
            }
        }
    }
    assert!(seen.len() >= 6, "{seen:?}");
}
