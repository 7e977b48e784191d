//! The OpenAPI document (`otter-server/openapi.json`, served at `GET /openapi.json`) against the
//! routes the server really has.
//!
//! axum cannot list its routes, so the routes are found two ways, and the document must match
//! both: (1) the source of `otter-server/src` is scanned for `.route("<path>", get(..).post(..))`
//! calls (the methods are read from the method-router chain), and that set of (method, path)
//! pairs must equal the document's; (2) every documented operation is sent to a running server
//! (with a random UUID for each path parameter) and must not meet the router's fallback (404
//! "no such route") nor a 405. Adding a route without documenting it, or documenting one that
//! does not exist, fails here. `docs/api.md` must also have a `### `METHOD /path`` section for
//! each documented operation, and none for others.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use otter_testkit::TestApp;

/// The document, as the server compiles it in.
const DOCUMENT: &str = include_str!("../../openapi.json");

/// The HTTP methods an OpenAPI path item can hold, which are also axum's method-router names.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

/// Every (METHOD, path template) of the document.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for key in item.keys() {
            if METHODS.contains(&key.as_str()) {
                routes.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// Follows a local `$ref` (`#/components/...`), or returns `value` itself.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => {
            let pointer = pointer
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references are used, got {pointer}"));
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("the reference #{pointer} leads nowhere"))
        }
        None => value,
    }
}

/// Every `$ref` in `value`, wherever it is nested.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| references(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_and_every_operation_is_complete() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3."), "openapi is {version}");
    assert!(doc["info"]["title"].is_string());
    assert_eq!(
        doc["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "info.version follows otter-server's version"
    );

    let mut refs = Vec::new();
    references(&doc, &mut refs);
    for r in &refs {
        resolve(&doc, &serde_json::json!({ "$ref": r }));
    }

    let mut operation_ids = BTreeSet::new();
    for (method, path) in documented_routes(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let what = format!("{method} {path}");
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{what} has no responses"));
        assert!(!responses.is_empty(), "{what} has no responses");
        for code in responses.keys() {
            assert!(
                code == "default" || (code.len() == 3 && code.parse::<u16>().is_ok()),
                "{what}: response {code:?} is not a status code"
            );
        }
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{what} has no operationId"));
        assert!(operation_ids.insert(id.to_owned()), "{id} is used twice");
        assert!(op["summary"].is_string(), "{what} has no summary");

        // Every `{param}` of the template is declared as a path parameter, and nothing else is.
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{what}: path parameters are required");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        assert_eq!(declared, in_template, "{what}: path parameters");

        // A JSON body is described by a schema.
        if let Some(body) = op.get("requestBody") {
            assert!(
                body["content"]["application/json"]["schema"].is_object(),
                "{what}: the request body has no JSON schema"
            );
        }
    }
    for schema in [
        "Project",
        "Workspace",
        "Job",
        "JobOutput",
        "Event",
        "Error",
        "ProjectPage",
        "WorkspacePage",
        "JobPage",
        "EventPage",
        "CommandRequest",
        "CommandResult",
        "Tree",
        "FileContent",
        "RuntimeStatus",
        "Webhook",
        "WebhookWithSecret",
        "WebhookDelivery",
        "WebhookPayload",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} is missing"
        );
    }
}

/// Where the route modules live.
fn source_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text from just after an opening parenthesis to just before its closing one (string
/// literals are skipped, so that parentheses inside them do not count).
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    panic!(
        "unbalanced parentheses after {:?}",
        &text[..text.len().min(80)]
    );
}

/// The methods of a method-router expression such as `get(list).post(create)`: the names called
/// at its top level. Anything but a plain method name (`any`, `on`, a service) fails, so that
/// the scanner is taught about it rather than silently missing a route.
fn methods_of(expr: &str, path: &str) -> Vec<String> {
    let mut methods = Vec::new();
    let mut depth = 0;
    let mut ident = String::new();
    for c in expr.chars() {
        match c {
            '(' => {
                if depth == 0 {
                    assert!(
                        METHODS.contains(&ident.as_str()),
                        "route {path}: cannot read the method router `{expr}` (`{ident}`); \
                         teach tests/api/openapi.rs about it"
                    );
                    methods.push(ident.to_uppercase());
                }
                ident.clear();
                depth += 1;
            }
            ')' => depth -= 1,
            c if depth == 0 && (c.is_alphanumeric() || c == '_') => ident.push(c),
            _ if depth == 0 => ident.clear(),
            _ => {}
        }
    }
    assert!(!methods.is_empty(), "route {path}: no method in `{expr}`");
    methods
}

/// The (METHOD, path) pairs of every `.route(...)` call in `source` (comments and test modules
/// left out).
fn routes_in(source: &str, file: &Path) -> Vec<(String, String)> {
    let code: String = source
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for unsupported in [".nest(", ".nest_service(", ".route_service("] {
        assert!(
            !code.contains(unsupported),
            "{}: `{unsupported}` is not understood by tests/api/openapi.rs; teach it",
            file.display()
        );
    }
    let mut routes = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let args = balanced(rest).trim();
        let literal = args.strip_prefix('"').unwrap_or_else(|| {
            panic!(
                "{}: a route's path is not a string literal: {args}",
                file.display()
            )
        });
        let end = literal.find('"').expect("the path literal ends");
        let path = &literal[..end];
        let expr = literal[end + 1..]
            .trim_start()
            .strip_prefix(',')
            .expect("a comma after the path")
            .trim()
            .trim_end_matches(',')
            .trim();
        for method in methods_of(expr, path) {
            routes.push((method, path.to_owned()));
        }
    }
    routes
}

/// Every route the server's source declares.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(&source_dir(), &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read a source file");
        for route in routes_in(&source, &file) {
            assert!(routes.insert(route.clone()), "{route:?} is declared twice");
        }
    }
    routes
}

#[test]
fn the_scanner_reads_method_routers() {
    let source = r#"
        Router::new()
            .route("/a", get(list).post(create))
            .route(
                "/a/{id}",
                delete(remove),
            )
            .route_layer(layer)
            // .route("/commented", get(nothing))
            .route("/b", patch(update_b).put(replace_b))
    "#;
    let routes = routes_in(source, Path::new("example.rs"));
    let want: Vec<(String, String)> = [
        ("GET", "/a"),
        ("POST", "/a"),
        ("DELETE", "/a/{id}"),
        ("PATCH", "/b"),
        ("PUT", "/b"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(routes, want);
}

#[test]
fn every_route_in_the_source_is_documented_and_nothing_else() {
    let in_source = routes_in_source();
    assert!(
        in_source.contains(&("GET".to_owned(), "/healthz".to_owned())),
        "the scanner found no /healthz: {in_source:?}"
    );
    let documented = documented_routes(&document());
    let undocumented: Vec<_> = in_source.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&in_source).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "routes missing from otter-server/openapi.json: {undocumented:?}; \
         documented routes the source does not declare: {unknown:?}"
    );
}

/// Whether the server answered `method path` with its router's fallback or a 405: the route
/// does not exist.
async fn is_missing(app: &TestApp, method: &str, path: &str) -> bool {
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let resp = app
        .builder(method, path)
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return true;
    }
    if status != StatusCode::NOT_FOUND {
        // Not read: the SSE stream would never end.
        return false;
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    body["error"]["message"] == "no such route"
}

#[tokio::test]
async fn every_documented_route_exists_on_the_server() {
    let app = TestApp::spawn().await;
    // The probe tells a missing route from a real one.
    assert!(is_missing(&app, "GET", "/v1/no-such-route").await);
    assert!(is_missing(&app, "PUT", "/v1/projects").await);
    assert!(!is_missing(&app, "GET", &format!("/v1/jobs/{}", uuid::Uuid::new_v4())).await);

    let mut missing = Vec::new();
    for (method, template) in documented_routes(&document()) {
        let path: String = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if is_missing(&app, &method, &path).await {
            missing.push(format!("{method} {template}"));
        }
    }
    assert!(
        missing.is_empty(),
        "documented in otter-server/openapi.json but not served: {missing:?}"
    );
}

#[tokio::test]
async fn the_server_serves_the_document_without_a_token() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "a-token")]).await;
    let resp = app
        .builder_as(None, Method::GET, "/openapi.json")
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = otter_testkit::content_type(&resp);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let served = resp.text().await.expect("a body");
    assert_eq!(served, DOCUMENT, "the served document is the file");
    let served: Value = serde_json::from_str(&served).expect("JSON");
    assert_eq!(served, document());
}

#[test]
fn docs_api_md_has_a_section_for_every_operation() {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"))
            .expect("docs/api.md exists");
    let sections: BTreeSet<(String, String)> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("### `")?.strip_suffix('`'))
        .filter_map(|title| {
            let (method, path) = title.split_once(' ')?;
            Some((method.to_owned(), path.to_owned()))
        })
        .collect();
    let documented = documented_routes(&document());
    let missing: Vec<_> = documented.difference(&sections).collect();
    let unknown: Vec<_> = sections.difference(&documented).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "operations without a `### `METHOD /path`` section in docs/api.md: {missing:?}; \
         sections for operations the document does not have: {unknown:?}"
    );
}
