//! Serving connections: the accept loop, and the limits that keep idle and half-sent connections
//! from starving the clients that send real requests.
//!
//! A connection is *waiting* while no request of it is in progress: just accepted, idle between
//! two requests, or still sending a request's headers. It is *busy* from the end of a request's
//! headers to the end of its response (an SSE stream stays busy while it lasts, a WebSocket for
//! good once upgraded). Only waiting connections are timed and shed:
//!
//! - **Idle**: a waiting connection that sends nothing for `OTTER_IDLE_TIMEOUT` is closed.
//! - **Headers**: from the first byte of a request, its headers must be complete within
//!   `OTTER_HEADER_READ_TIMEOUT` (sending slowly does not extend it).
//! - **Waiting cap**: at most `max_pending` connections wait at once; one more closes the one
//!   that has waited longest. A new client's connection is the newest, so whoever holds many
//!   connections open without sending requests loses them first.
//! - **Total cap**: at most `max_connections` are open, below the file-descriptor limit, so that
//!   accepting never fails for want of descriptors and requests keep what they need (database
//!   connections, files, pipes). At the cap the oldest waiting connection is closed to make
//!   room; when every connection is busy, new ones wait in the kernel's backlog.
//!
//! A busy connection is never timed out or shed here: its request is being answered, and long
//! streams send their own keep-alives.
//!
//! This replaces `axum::serve` (STYLE.md §10), which has neither timeouts nor caps: connections
//! are hyper's HTTP/1 ones, with upgrades, served by the same router.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use otter_core::Config;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Descriptors kept free besides the listener's connections and the database pool: for Redis,
/// Docker, workspace files and the pipes of commands.
const SPARE_DESCRIPTORS: usize = 64;

/// How long the accept loop waits after an accept error other than a refused connection (out
/// of descriptors or memory) before it tries again, unless a connection closes first.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits on the server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// From a request's first byte to the end of its headers.
    pub(crate) header_read_timeout: Duration,
    /// Silence of a waiting connection.
    pub(crate) idle_timeout: Duration,
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// Waiting connections at once.
    pub(crate) max_pending: usize,
}

impl Limits {
    /// The configured limits; the caps default to what the file-descriptor limit leaves once
    /// the descriptors already open, the database pool and [`SPARE_DESCRIPTORS`] are counted
    /// (measured now, so call this once the server's own connections are made).
    pub(crate) fn from_config(config: &Config) -> Self {
        let max_connections = config.max_connections.unwrap_or_else(|| {
            let reserved = open_descriptors()
                + usize::try_from(config.db_max_connections).unwrap_or(usize::MAX)
                + SPARE_DESCRIPTORS;
            descriptor_limit().saturating_sub(reserved).max(8)
        });
        let max_pending = config
            .max_pending_connections
            .unwrap_or((max_connections / 2).max(1))
            .min(max_connections);
        Self {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections,
            max_pending,
        }
    }
}

/// The soft limit on open files (`ulimit -n`), at most a million.
fn descriptor_limit() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    const CEILING: usize = 1_000_000;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => usize::try_from(soft).unwrap_or(CEILING).min(CEILING),
        Err(_) => 1024,
    }
}

/// The descriptors this process has open (32 where `/proc` cannot tell).
fn open_descriptors() -> usize {
    // The directory's own descriptor is listed too.
    std::fs::read_dir("/proc/self/fd").map_or(32, |dir| dir.count().saturating_sub(1))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for the connections
/// in progress to finish (streams end on `shutdown` themselves).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Registry::new(limits));
    let tasks = TaskTracker::new();
    loop {
        if !registry.make_room(&shutdown).await {
            break;
        }
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let conn = registry.admit();
                tasks.spawn(serve_connection(
                    stream,
                    router.clone(),
                    conn,
                    shutdown.clone(),
                ));
            }
            // The client gave up before the connection was accepted.
            Err(e) if is_refused_connection(&e) => {}
            Err(e) => {
                // Out of descriptors (some went to requests) or memory: free what waits longest,
                // and try again once a connection closes or a moment has passed.
                tracing::warn!(error = %e, "accept error; shedding the oldest waiting connection");
                let room = registry.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                registry.lock().shed_oldest();
                tokio::select! {
                    () = room => {}
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

fn is_refused_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// One connection, served until it ends, is shed, times out, or the server shuts down.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    conn: Arc<Conn>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(TrackedIo {
        stream,
        conn: conn.clone(),
    });
    let service = ConnService {
        router,
        conn: conn.clone(),
    };
    // Without a timer hyper has no timeouts of its own: this module keeps them.
    let served = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(served);
    let mut draining = false;
    loop {
        let changed = conn.changed.notified();
        let deadline = conn.deadline();
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.shed.cancelled() => {
                tracing::debug!("waiting connection shed to make room");
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                if conn.deadline().is_some() {
                    return; // nothing in progress
                }
                served.as_mut().graceful_shutdown();
                draining = true;
            }
            () = sleep_until(deadline) => {
                if conn.deadline().is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("connection closed: idle, or its headers took too long");
                    return;
                }
            }
            () = changed => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Every connection's slot: the counts the caps are checked against.
struct Registry {
    limits: Limits,
    inner: Mutex<Inner>,
    /// Notified whenever a connection closes or begins to wait (the accept loop waits on it for
    /// room: a waiting connection can be shed).
    room: Notify,
}

struct Inner {
    /// Connections whose descriptors are still open.
    open: usize,
    /// Of those, the ones shed and not yet closed.
    shedding: usize,
    /// The waiting connections, the longest waiting first: when each began to wait → its shed
    /// token.
    waiting: BTreeMap<u64, CancellationToken>,
    /// The next waiting connection's place in `waiting`.
    next_order: u64,
}

impl Inner {
    /// Closes the connection that has waited longest; false when none waits.
    fn shed_oldest(&mut self) -> bool {
        let Some((_, shed)) = self.waiting.pop_first() else {
            return false;
        };
        shed.cancel();
        self.shedding += 1;
        true
    }

    /// Registers a connection that begins to wait, shedding the longest waiting one when the
    /// waiting cap is reached; returns its place.
    fn wait(&mut self, shed: &CancellationToken, max_pending: usize) -> u64 {
        while self.waiting.len() >= max_pending && self.shed_oldest() {}
        let order = self.next_order;
        self.next_order += 1;
        self.waiting.insert(order, shed.clone());
        order
    }
}

impl Registry {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner {
                open: 0,
                shedding: 0,
                waiting: BTreeMap::new(),
                next_order: 0,
            }),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once one more connection fits under the total cap (shedding the longest waiting
    /// one if that is what it takes), or false on shutdown.
    async fn make_room(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.open < self.limits.max_connections {
                    return true;
                }
                if inner.open - inner.shedding >= self.limits.max_connections {
                    inner.shed_oldest();
                }
            }
            tokio::select! {
                () = room => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }

    /// A connection just accepted: it waits for its first request.
    fn admit(self: &Arc<Self>) -> Arc<Conn> {
        let shed = CancellationToken::new();
        let order = {
            let mut inner = self.lock();
            inner.open += 1;
            inner.wait(&shed, self.limits.max_pending)
        };
        Arc::new(Conn {
            registry: self.clone(),
            shed,
            phase: Mutex::new(Phase::Waiting {
                order,
                since: Instant::now(),
                first_byte: None,
            }),
            changed: Notify::new(),
            awaiting_first_byte: AtomicBool::new(true),
        })
    }
}

/// One connection's state, shared by its task, its I/O and its requests. Dropped when the last
/// of them is, that is when its descriptor is closed (after an upgrade, when the WebSocket
/// ends).
struct Conn {
    registry: Arc<Registry>,
    /// Cancelled to close the connection while it waits.
    shed: CancellationToken,
    phase: Mutex<Phase>,
    /// Wakes the connection's task when its deadline may have changed.
    changed: Notify,
    /// Whether the next byte read is a request's first (lets reads skip the lock).
    awaiting_first_byte: AtomicBool,
}

enum Phase {
    /// No request in progress.
    Waiting {
        /// Its place among the waiting connections.
        order: u64,
        /// Since when it waits.
        since: Instant,
        /// When the next request's first byte arrived.
        first_byte: Option<Instant>,
    },
    /// This many requests are being answered.
    Busy(usize),
    /// Upgraded (a WebSocket): no longer HTTP, never timed or shed.
    Upgraded,
}

impl Conn {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection is closed if nothing changes: `None` while a request is in progress.
    fn deadline(&self) -> Option<Instant> {
        let limits = &self.registry.limits;
        match *self.phase() {
            Phase::Waiting {
                first_byte: Some(first),
                ..
            } => Some(first + limits.header_read_timeout),
            Phase::Waiting { since, .. } => Some(since + limits.idle_timeout),
            Phase::Busy(_) | Phase::Upgraded => None,
        }
    }

    /// Bytes were read.
    fn read_some(&self) {
        if self.awaiting_first_byte.swap(false, Ordering::AcqRel) {
            if let Phase::Waiting { first_byte, .. } = &mut *self.phase() {
                first_byte.get_or_insert_with(Instant::now);
            }
            self.changed.notify_one();
        }
    }

    /// A request's headers are complete.
    fn request_started(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Waiting { order, .. } => {
                self.awaiting_first_byte.store(false, Ordering::Release);
                self.registry.lock().waiting.remove(&order);
                Phase::Busy(1)
            }
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Upgraded => Phase::Upgraded,
        };
        drop(phase);
        self.changed.notify_one();
    }

    /// A response was sent, or abandoned.
    fn request_finished(&self) {
        let mut phase = self.phase();
        match *phase {
            Phase::Busy(n) if n > 1 => *phase = Phase::Busy(n - 1),
            Phase::Busy(_) => {
                let order = self
                    .registry
                    .lock()
                    .wait(&self.shed, self.registry.limits.max_pending);
                *phase = Phase::Waiting {
                    order,
                    since: Instant::now(),
                    first_byte: None,
                };
                self.awaiting_first_byte.store(true, Ordering::Release);
                self.registry.room.notify_waiters();
            }
            Phase::Waiting { .. } | Phase::Upgraded => {}
        }
        drop(phase);
        self.changed.notify_one();
    }

    /// The request switched protocols: the connection is the WebSocket's now.
    fn upgraded(&self) {
        *self.phase() = Phase::Upgraded;
        self.changed.notify_one();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let phase = self.phase.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut inner = self.registry.lock();
        if let Phase::Waiting { order, .. } = phase {
            inner.waiting.remove(order);
        }
        inner.open -= 1;
        if self.shed.is_cancelled() {
            inner.shedding -= 1;
        }
        drop(inner);
        self.registry.room.notify_waiters();
    }
}

/// The socket, telling its connection when bytes arrive.
struct TrackedIo {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router, for one connection: tells the connection when each request starts and ends.
#[derive(Clone)]
struct ConnService {
    router: Router,
    conn: Arc<Conn>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.conn.request_started();
        let request_guard = InProgress(self.conn.clone());
        // A clone shares the routes (cloning a `Router` does not rebuild them).
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                request_guard.0.upgraded();
            }
            Ok(response.map(|body| TrackedBody {
                body,
                _in_progress: request_guard,
            }))
        })
    }
}

/// A request in progress; its end when dropped (with the response's body, once sent).
struct InProgress(Arc<Conn>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response's body, which keeps its request in progress until it is sent or dropped.
struct TrackedBody {
    body: Body,
    _in_progress: InProgress,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_pending: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections,
            max_pending,
        }
    }

    #[tokio::test]
    async fn the_longest_waiting_connection_is_shed_first_and_busy_ones_never() {
        let registry = Arc::new(Registry::new(limits(100, 3)));
        let first = registry.admit();
        let second = registry.admit();
        let third = registry.admit();
        second.request_started();
        // A fourth and a fifth: the first waited longest, then the third.
        let fourth = registry.admit();
        assert!(!first.shed.is_cancelled());
        let fifth = registry.admit();
        assert!(first.shed.is_cancelled());
        assert!(!third.shed.is_cancelled() && !fourth.shed.is_cancelled());
        let _sixth = registry.admit();
        assert!(third.shed.is_cancelled());
        assert!(
            !second.shed.is_cancelled(),
            "a busy connection is never shed"
        );
        // Back to waiting, the second is now the newest waiting one.
        second.request_finished();
        assert!(fourth.shed.is_cancelled());
        assert!(!second.shed.is_cancelled() && !fifth.shed.is_cancelled());
        assert_eq!(registry.lock().open, 6);
        drop((first, third, fourth));
        let inner = registry.lock();
        assert_eq!((inner.open, inner.shedding, inner.waiting.len()), (3, 0, 3));
    }

    #[tokio::test]
    async fn at_the_total_cap_room_is_made_by_shedding_or_waited_for() {
        let registry = Arc::new(Registry::new(limits(2, 2)));
        let shutdown = CancellationToken::new();
        let a = registry.admit();
        let b = registry.admit();
        a.request_started();
        // Full: the waiting one is shed, and room comes once it has closed.
        let room = tokio::spawn({
            let registry = registry.clone();
            let shutdown = shutdown.clone();
            async move { registry.make_room(&shutdown).await }
        });
        tokio::time::timeout(Duration::from_secs(10), b.shed.cancelled())
            .await
            .expect("the waiting connection is shed");
        assert!(!room.is_finished());
        drop(b);
        assert!(room.await.unwrap());
        // Full of busy connections: nothing is shed, and the loop waits.
        let c = registry.admit();
        c.request_started();
        let waiting = tokio::spawn({
            let registry = registry.clone();
            let shutdown = shutdown.clone();
            async move { registry.make_room(&shutdown).await }
        });
        tokio::task::yield_now().await;
        assert!(!a.shed.is_cancelled() && !c.shed.is_cancelled());
        c.request_finished();
        drop(c);
        assert!(waiting.await.unwrap());
        drop(a);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_phase() {
        let registry = Arc::new(Registry::new(limits(10, 10)));
        let conn = registry.admit();
        let start = Instant::now();
        assert_eq!(conn.deadline(), Some(start + Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(5)).await;
        conn.read_some();
        assert_eq!(conn.deadline(), Some(start + Duration::from_secs(15)));
        // Later bytes do not extend it.
        tokio::time::advance(Duration::from_secs(5)).await;
        conn.read_some();
        assert_eq!(conn.deadline(), Some(start + Duration::from_secs(15)));
        conn.request_started();
        assert_eq!(conn.deadline(), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        conn.request_finished();
        assert_eq!(
            conn.deadline(),
            Some(Instant::now() + Duration::from_secs(30))
        );
        conn.request_started();
        conn.upgraded();
        conn.request_finished();
        assert_eq!(conn.deadline(), None, "an upgraded connection is not timed");
    }
}
