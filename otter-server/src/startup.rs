//! Building the application and serving it: connections, migrations, layers (request ids,
//! tracing, CORS, body limit, the host check, authentication), graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use otter_core::isolation::Isolation;
use otter_core::model::JobId;
use otter_core::{ApiToken, Config, EventFeed, HostName, Queue, db, shell};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::audit::{self, Actor};
use crate::connections::{self, Limits};
use crate::error::AppError;
use crate::state::AppState;
use crate::{idempotency, routes};

/// Largest request body accepted (a prompt must fit in 128 KiB, see
/// `otter_core::instructions::max_prompt_bytes`). Enforced by the body extractors, so that a
/// larger body, announced by `Content-Length` or not, gets a 413 in the API's JSON error shape
/// (tower-http's `RequestBodyLimitLayer` answers in plain text).
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// How often the containers of deleted workspaces are looked for and removed (when the runtime
/// is enabled; `POST /v1/runtime/cleanup` does it at once).
const RUNTIME_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

/// How often what dead servers on this host left (their commands' processes, session holds and
/// cwd files) is looked for, besides at start.
const RECOVER_INTERVAL: Duration = Duration::from_secs(10);

/// Why the server could not start. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// PostgreSQL is unreachable or its migrations failed.
    #[error("cannot use PostgreSQL at OTTER_DATABASE_URL: {0}")]
    Db(#[from] otter_core::DbError),
    /// Redis is unreachable.
    #[error("cannot use Redis at OTTER_REDIS_URL: {0}")]
    Queue(#[from] otter_core::QueueError),
    /// The listen address cannot be used.
    #[error("cannot listen on OTTER_LISTEN_ADDR {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The API would be open to the network without authentication.
    #[error(
        "refusing to listen on {0} without authentication: set OTTER_API_TOKENS, listen on a loopback address, \
         or set OTTER_ALLOW_UNAUTHENTICATED=true"
    )]
    Unauthenticated(std::net::SocketAddr),
}

/// Connects to PostgreSQL (running migrations) and Redis, starts the event feed, and cleans
/// what a server killed on this host left behind (then again every 10 s), and starts the
/// webhook sender. Commands run as
/// `isolation` says (`Isolation::from_config`).
pub async fn build_state(
    config: Arc<Config>,
    isolation: Arc<Isolation>,
    shutdown: CancellationToken,
) -> Result<AppState, StartupError> {
    let pool = db::connect(&config).await?;
    db::migrate(&pool).await?;
    shell::recover(&pool, &isolation).await;
    tokio::spawn(recover_now_and_then(
        pool.clone(),
        isolation.clone(),
        shutdown.clone(),
    ));
    let queue = Queue::connect(config.redis_url.expose(), &config.queue_name).await?;
    let feed =
        EventFeed::start_with(pool.clone(), shutdown.clone(), config.event_page_max_bytes).await?;
    let runtime = config.runtime_enabled.then(|| {
        let runtime = Arc::new(otter_core::runtime::Runtime::from_config(&config));
        runtime
            .clone()
            .spawn_janitor(pool.clone(), RUNTIME_CLEANUP_INTERVAL, shutdown.clone());
        runtime
    });
    // Webhook deliveries are sent from here, off every job's path; several servers share the
    // work through their claims (otter_core::webhooks).
    let webhooks = otter_core::webhooks::Sender::new(pool.clone(), &config);
    webhooks.clone().spawn(shutdown.clone());
    let state = AppState {
        db: pool,
        queue,
        feed,
        config,
        shutdown,
        runtime,
        isolation,
        webhooks,
    };
    tokio::spawn(idempotency::purge_now_and_then(state.clone()));
    Ok(state)
}

/// [`shell::recover`] every [`RECOVER_INTERVAL`] until shutdown.
async fn recover_now_and_then(
    pool: PgPool,
    isolation: Arc<Isolation>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RECOVER_INTERVAL) => shell::recover(&pool, &isolation).await,
        }
    }
}

/// The whole application: routes and layers.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    // Innermost last: authentication (which names the actor), then the audit trail (which
    // records every state-changing request before it is acted on), then idempotency keys.
    let v1 = routes::v1()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::apply,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let job_scoped = routes::job_scoped()
        .route_layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_token_or_job_token,
        ));
    let routes = Router::new()
        .merge(routes::public())
        .merge(v1)
        .merge(job_scoped)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(cors(&state.config))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| req.uri().path().to_owned());
                tracing::info_span!("http", method = %req.method(), route = %route, request_id = %request_id)
            })
            .on_failure(log_stream_failure),
        )
        .with_state(state.clone());
    // Layers of a `Router` run inside each route, and a route adds `Allow` to whatever its
    // method fallback answers: what must see every request before routing, and every answer
    // after, wraps the routes as one service.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::map_response(allow_only_on_405))
        .layer(middleware::from_fn_with_state(state, check_host))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The `TraceLayer`'s failure hook. A 5xx status was logged by [`AppError`] when it was made
/// (tower-http's default would log it a second time, at ERROR even for a deliberate 503); what
/// is left is a response body that failed while it was being sent, which nothing else sees.
fn log_stream_failure(failure: ServerErrorsFailureClass, latency: Duration, _span: &Span) {
    if let ServerErrorsFailureClass::Error(error) = failure {
        tracing::error!(%error, latency_ms = latency.as_millis(), "response failed");
    }
}

/// An unknown route: 404, but 401 first when tokens are required and none valid was sent, so
/// that an anonymous client cannot map the API.
async fn not_found(State(state): State<AppState>, request: Request) -> AppError {
    if authorized(&state.config, &request) {
        AppError::NotFound("no such route".to_owned())
    } else {
        AppError::Unauthorized
    }
}

/// A known route with a method it does not have: 405 (with `Allow`), but, like an unknown
/// route, 401 first when the route needs a token and none valid was sent (authentication runs
/// only on a route's own methods, and `Allow` would list them).
async fn method_not_allowed(State(state): State<AppState>, request: Request) -> AppError {
    let public = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|route| routes::PUBLIC_PATHS.contains(&route.as_str()));
    if public || authorized(&state.config, &request) {
        AppError::MethodNotAllowed(format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ))
    } else {
        AppError::Unauthorized
    }
}

/// Whether `request` may see what the API has: no tokens are required, or it has a valid one.
fn authorized(config: &Config, request: &Request) -> bool {
    config.api_tokens.is_empty()
        || presented_token(request).is_some_and(|token| is_api_token(config, token))
}

/// `Allow` only on a 405: a route adds it to whatever its method fallback answers, and on a 401
/// (or a 421) it would list the route's methods to a client that may not see them.
async fn allow_only_on_405(mut response: Response) -> Response {
    if response.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().remove(header::ALLOW);
    }
    response
}

/// Without tokens, answers only requests for a loopback host name (`localhost`, `127.0.0.1`,
/// `[::1]`, any port) or one of `OTTER_ALLOWED_HOSTS`; others get 421. A web page that makes its
/// own name resolve to 127.0.0.1 (DNS rebinding) can reach a loopback Otter from the visitor's
/// browser, but its requests still carry its name. `/healthz` stays open. A request without a
/// `Host` is let through: browsers always send one.
async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.config.api_tokens.is_empty() || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    // The Host header, and the target's authority when the request line has one (absolute form).
    let header = request
        .headers()
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or("<unreadable>"));
    let authority = request.uri().authority().map(|a| a.as_str());
    let refused = header
        .into_iter()
        .chain(authority)
        .find(|&host| !host_allowed(&state.config, host));
    match refused {
        None => next.run(request).await,
        Some(host) => {
            let shown: String = host.chars().take(100).collect();
            AppError::MisdirectedRequest(format!(
                "this Otter has no API tokens, so it answers only for localhost, 127.0.0.1, [::1] \
                 and the names in OTTER_ALLOWED_HOSTS, not for the host {shown:?}: add the name \
                 to OTTER_ALLOWED_HOSTS, or set OTTER_API_TOKENS"
            ))
            .into_response()
        }
    }
}

/// Whether `host` (a `Host` header's value) is a loopback name or one of `OTTER_ALLOWED_HOSTS`.
fn host_allowed(config: &Config, host: &str) -> bool {
    let Some(host) = HostName::parse(host) else {
        return false;
    };
    ["localhost", "127.0.0.1", "[::1]"].contains(&host.host.as_str())
        || config
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.matches(&host))
}

fn cors(config: &Config) -> CorsLayer {
    let origins = &config.cors_allowed_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static(idempotency::KEY_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static(idempotency::REPLAYED_HEADER),
        ])
        .max_age(Duration::from_secs(600))
}

/// Requires `Authorization: Bearer <token>` when `OTTER_API_TOKENS` is set (the scheme's case
/// does not matter, RFC 9110 §11.1). Neither the header nor the token is ever logged.
///
/// Puts the [`Actor`] in the request's extensions, for the audit trail and idempotency keys.
async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.config.api_tokens.is_empty() {
        request.extensions_mut().insert(Actor::anonymous());
        return next.run(request).await;
    }
    match presented_token(&request).and_then(|token| api_token(&state.config, token)) {
        Some(token) => {
            request.extensions_mut().insert(Actor(token.actor()));
            next.run(request).await
        }
        None => AppError::Unauthorized.into_response(),
    }
}

/// Like [`require_token`], but also accepts the job token of the running job named in the
/// path: what vibe gets (as `OTTER_API_TOKEN`) to post its own job's preview URL, and nothing
/// else.
///
/// The path is read only after an API token was not found: a path that names no job is the
/// handler's 400 for an API token's holder, and a 401 for anyone else.
async fn require_token_or_job_token(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.config.api_tokens.is_empty() {
        request.extensions_mut().insert(Actor::anonymous());
        return next.run(request).await;
    }
    let Some(token) = presented_token(&request) else {
        return AppError::Unauthorized.into_response();
    };
    if let Some(api_token) = api_token(&state.config, token) {
        request.extensions_mut().insert(Actor(api_token.actor()));
        return next.run(request).await;
    }
    let Some(id) = id.ok().and_then(|Path(id)| id.parse::<JobId>().ok()) else {
        return AppError::Unauthorized.into_response();
    };
    match otter_core::db::jobs::job_token_matches(&state.db, id, token).await {
        Ok(true) => {
            request.extensions_mut().insert(Actor(format!("job:{id}")));
            next.run(request).await
        }
        Ok(false) => AppError::Unauthorized.into_response(),
        Err(e) => AppError::from(e).into_response(),
    }
}

/// The bearer token of the request, if it has one.
///
/// Browsers cannot set headers on `EventSource` or `WebSocket`, so the two streaming routes
/// also take `?access_token=` (on GET only; Otter logs paths, never query strings, but proxies in
/// front may log whole URLs: prefer the header where the client can send one).
fn presented_token(request: &Request) -> Option<&str> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    header.or_else(|| {
        let route = request.extensions().get::<axum::extract::MatchedPath>()?;
        if request.method() != Method::GET || !QUERY_TOKEN_ROUTES.contains(&route.as_str()) {
            return None;
        }
        request
            .uri()
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .filter(|token| !token.is_empty())
    })
}

/// The routes a browser opens without being able to send an `Authorization` header.
const QUERY_TOKEN_ROUTES: [&str; 2] = ["/v1/events/stream", "/v1/runtime/workspaces/{id}/shell/ws"];

/// Whether `token` is one of `OTTER_API_TOKENS` (compared in constant time).
fn is_api_token(config: &Config, token: &str) -> bool {
    api_token(config, token).is_some()
}

/// The one of `OTTER_API_TOKENS` that `token` is (every one compared, in constant time).
fn api_token<'a>(config: &'a Config, token: &str) -> Option<&'a ApiToken> {
    config.api_tokens.iter().fold(None, |found, t| {
        let same = constant_time_eq(t.expose().as_bytes(), token.as_bytes());
        found.or(same.then_some(t))
    })
}

/// The token of a `Bearer` credential.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the API on `OTTER_LISTEN_ADDR` until `shutdown` is cancelled. Refuses a non-loopback
/// address without tokens unless `OTTER_ALLOW_UNAUTHENTICATED=true`.
pub async fn serve(state: AppState) -> Result<(), StartupError> {
    let config = state.config.clone();
    let addr = config.listen_addr;
    if config.api_tokens.is_empty() && !addr.ip().is_loopback() && !config.allow_unauthenticated {
        return Err(StartupError::Unauthenticated(addr));
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Listen { addr, source })?;
    serve_on(listener, state).await
}

/// Serves the API on an already bound listener until `shutdown` is cancelled (tests bind port 0).
pub async fn serve_on(listener: TcpListener, state: AppState) -> Result<(), StartupError> {
    let addr = listener
        .local_addr()
        .map_err(|source| StartupError::Listen {
            addr: state.config.listen_addr,
            source,
        })?;
    let limits = Limits::from_config(&state.config);
    tracing::info!(
        %addr,
        auth = !state.config.api_tokens.is_empty(),
        max_connections = limits.max_connections,
        max_pending_connections = limits.max_pending,
        header_read_timeout_ms = limits.header_read_timeout.as_millis(),
        idle_timeout_ms = limits.idle_timeout.as_millis(),
        "otter-server listening"
    );
    let shutdown = state.shutdown.clone();
    let webhooks = state.webhooks.clone();
    tokio::spawn(give_back_memory(state.feed.clone(), shutdown.clone()));
    connections::serve(listener, app(state), limits, shutdown).await;
    // The webhook sends cut off by the shutdown give their deliveries back (one statement
    // each) before the process goes.
    if tokio::time::timeout(WEBHOOKS_STOP, webhooks.stopped())
        .await
        .is_err()
    {
        tracing::warn!(
            "webhook sends still giving their deliveries back at exit; those are sent again when their leases end"
        );
    }
    Ok(())
}

/// How long a stopping server waits for its webhook sends to give their deliveries back.
const WEBHOOKS_STOP: Duration = Duration::from_secs(5);

/// How often the event streams are counted, to decide whether to give memory back.
const TRIM_CHECK: Duration = Duration::from_secs(1);
/// How many event streams must have closed since the most were open before memory is given back
/// (enough that there is something to give back: what a stream costs is in docs/benchmarks.md,
/// "Second round", change 6).
const TRIM_AFTER_CLOSED: usize = 256;

/// Gives freed memory back to the system once many event streams have closed and no more are
/// opening. glibc keeps what its arenas freed (how much, measured, is in docs/benchmarks.md,
/// "Second round", change 6); `malloc_trim` returns the free pages.
async fn give_back_memory(feed: EventFeed, shutdown: CancellationToken) {
    let (mut before, mut most) = (0, 0);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(TRIM_CHECK) => {}
        }
        let open = feed.subscribers();
        most = most.max(open);
        if open <= before && most >= open + TRIM_AFTER_CLOSED {
            most = open;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
        before = open;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: `malloc_trim` only returns free memory to the system; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis(),
        "memory given back"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
