//! Signed webhooks: which URLs may be registered and reached ([`check_url`], [`check_ip`]),
//! how a delivery is signed ([`sign`]), and the sender ([`Sender`]) that makes the deliveries
//! the trigger on `events` writes (see [`crate::db::webhooks`]).
//!
//! What holds:
//! - **At least once.** A delivery is a row written in its event's transaction; it stays
//!   `pending` until a 2xx is recorded or its retry window (`OTTER_WEBHOOK_RETRY_FOR`) is
//!   spent. A sender that stops mid-send drops the send (its connection closed) and then gives
//!   the delivery back, due at once; one that dies leaves it leased, and when the lease runs out
//!   another (or the same one restarted) sends it again.
//! - **Never twice at once.** A claim is `FOR UPDATE SKIP LOCKED` plus a lease longer than a
//!   send can take ([`SEND_TIMEOUT`]); an attempt is recorded only under the lease it was
//!   claimed with.
//! - **Nobody waits on a receiver.** Jobs never do: the event's transaction only inserts rows.
//!   Receivers do not wait on each other: each send is its own task, at most
//!   [`PER_WEBHOOK`] at once per webhook and [`MAX_IN_FLIGHT`] in all per process, and the
//!   claim skips the webhooks already at their bound.
//! - **Only where allowed.** The URL is checked when registered and again on every connect,
//!   on each address its host resolves to; redirects are not followed and no proxy is used.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::json;
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::webhooks::{self as store, Claimed, Outcome};
use crate::model::{WebhookId, kinds};

/// A receiver that has not answered within this is cut off; the attempt failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds a delivery: longer than any send.
pub const LEASE: Duration = Duration::from_secs(60);
/// Sends to one webhook at once, per process.
pub const PER_WEBHOOK: usize = 4;
/// Sends at once, per process.
pub const MAX_IN_FLIGHT: usize = 64;
/// How often the sender looks for due deliveries when nothing wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The longest delay between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// The event kinds a webhook may ask for: every kind but `output_chunk` (one per line of
/// output: that is what the SSE stream is for).
pub const KINDS: &[&str] = &[
    kinds::JOB_QUEUED,
    kinds::JOB_STARTED,
    kinds::JOB_RETRY_SCHEDULED,
    kinds::JOB_SUCCEEDED,
    kinds::JOB_FAILED,
    kinds::JOB_CANCELLED,
    kinds::JOB_PAUSED,
    kinds::JOB_RESUMED,
    kinds::JOB_PRIORITY_CHANGED,
    kinds::SETUP_STARTED,
    kinds::SETUP_FINISHED,
    kinds::PREVIEW_URL_SET,
    kinds::RUNTIME_BUILD_STARTED,
    kinds::RUNTIME_BUILD_FINISHED,
    kinds::CHECKPOINT_FAILED,
    kinds::WORKSPACE_RESTORED,
];

/// Why a URL or an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks a webhook URL as given: an absolute `http` or `https` URL with a host, no
/// credentials, and, when the host is an IP address, one [`check_ip`] allows. A host name is
/// checked when connecting, on every address it resolves to.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, Refused> {
    if raw.len() > 2048 {
        return Err(Refused("url must be at most 2048 bytes".to_owned()));
    }
    let url = url::Url::parse(raw).map_err(|e| Refused(format!("url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused(format!(
            "url must be http or https, not {}",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused("url must not hold credentials".to_owned()));
    }
    match url.host() {
        None => return Err(Refused("url must name a host".to_owned())),
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private)?,
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private)?,
        Some(url::Host::Domain(_)) => {}
    }
    Ok(url)
}

/// Whether a receiver may be reached at `ip`. Link-local (cloud metadata lives there:
/// `169.254.169.254`, `fd00:ec2::254`), unspecified, multicast, broadcast and reserved
/// addresses are always refused; loopback and private ranges unless `allow_private`. An IPv6
/// address that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by it.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    let refuse = |what: &str| Err(Refused(format!("{ip} is {what}")));
    let private = |what: &str| {
        if allow_private {
            Ok(())
        } else {
            Err(Refused(format!(
                "{ip} is {what} (allowed only with OTTER_WEBHOOK_ALLOW_PRIVATE=true)"
            )))
        }
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_link_local() {
                refuse("link-local (cloud metadata)")
            } else if a == 0 {
                refuse("unspecified")
            } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
                refuse("multicast, broadcast or reserved")
            } else if v4.is_loopback() {
                private("loopback")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                private("private")
            } else if a == 198 && (b == 18 || b == 19) {
                private("a benchmarking range")
            } else {
                Ok(())
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return check_ip(IpAddr::V4(v4), allow_private)
                    .map_err(|Refused(why)| Refused(format!("{ip}: {why}")));
            }
            let first = v6.segments()[0];
            if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
                refuse("cloud metadata")
            } else if v6.is_unspecified() {
                refuse("unspecified")
            } else if first & 0xffc0 == 0xfe80 {
                refuse("link-local")
            } else if v6.is_multicast() {
                refuse("multicast")
            } else if v6.is_loopback() {
                private("loopback")
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
                private("private")
            } else {
                Ok(())
            }
        }
    }
}

/// The IPv4 address an IPv6 one stands for: `::ffff:a.b.c.d`, `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

/// Checks the event kinds a webhook asks for: at least one, each known, none twice.
pub fn check_events(events: &[String]) -> Result<(), Refused> {
    if events.is_empty() {
        return Err(Refused(
            "events must name at least one event kind".to_owned(),
        ));
    }
    for (i, kind) in events.iter().enumerate() {
        if kind == kinds::OUTPUT_CHUNK {
            return Err(Refused(
                "output_chunk cannot be delivered by webhook (one per line of output): \
                 use GET /v1/events/stream"
                    .to_owned(),
            ));
        }
        if !KINDS.contains(&kind.as_str()) {
            return Err(Refused(format!(
                "unknown event kind {kind:?}; known: {}",
                KINDS.join(", ")
            )));
        }
        if events[..i].contains(kind) {
            return Err(Refused(format!("event kind {kind} is listed twice")));
        }
    }
    Ok(())
}

/// A new signing secret: `whsec_` and 64 hex digits (32 random bytes).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", hex(&bytes))
}

/// The `Otter-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The delay before retry number `attempt` (1 for the first): `base` doubled per attempt up to
/// [`MAX_RETRY_DELAY`], plus up to a quarter more at random, so that many failed deliveries
/// do not come back all at the same instant.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(1 << attempt.saturating_sub(1).min(20));
    let delay = doubled.min(MAX_RETRY_DELAY);
    delay.mul_f64(1.0 + rand::rng().random_range(0.0..0.25))
}

/// The JSON body of a delivery: the event and the job's summary as it is when sent.
pub fn body(claimed: &Claimed) -> serde_json::Value {
    let mut body = json!({
        "delivery_id": claimed.id,
        "event": {
            "id": claimed.event_id,
            "job_id": claimed.job_id,
            "workspace_id": claimed.workspace_id,
            "project_id": claimed.project_id,
            "seq": claimed.seq,
            "kind": claimed.kind,
            "payload": claimed.payload,
            "created_at": claimed.event_created_at,
        },
        "job": {
            "id": claimed.job_id,
            "status": claimed.job_status,
            "exit_code": claimed.exit_code,
            "error": claimed.error,
            "cost": claimed.cost,
            "preview_url": claimed.preview_url,
        },
    });
    // As everywhere else an event is shown: `project_id` only when the job has one.
    if claimed.project_id.is_none()
        && let Some(event) = body["event"].as_object_mut()
    {
        event.remove("project_id");
    }
    body
}

/// Resolves host names for the HTTP client and refuses the name when any address it resolves
/// to is not allowed: the check happens on the addresses actually connected to, so a name
/// that resolved to a public address at registration and to a private one now is refused.
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                check_ip(addr.ip(), allow_private).map_err(|Refused(why)| {
                    Box::new(Refused(format!("{host} resolves to {why}")))
                        as Box<dyn std::error::Error + Send + Sync>
                })?;
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of the deliveries: no redirects, no proxy, every resolved address checked.
pub fn client(allow_private: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(SEND_TIMEOUT)
        .user_agent(concat!("Otter-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(CheckedResolver { allow_private }))
        .build()
        .expect("a client without TLS options builds")
}

/// An error and its causes on one line (reqwest's own message names only the URL).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Makes one attempt at a claimed delivery.
pub async fn send(client: &reqwest::Client, claimed: &Claimed, allow_private: bool) -> Outcome {
    let started = Instant::now();
    let failed = |error: String, status_code: Option<u16>| Outcome {
        status_code,
        delivered: false,
        duration: started.elapsed(),
        error: Some(error),
    };
    // An IP literal is never resolved: check it here (the rules may have changed since).
    if let Err(Refused(why)) = check_url(&claimed.url, allow_private) {
        return failed(format!("refused: {why}"), None);
    }
    let body = serde_json::to_vec(&body(claimed)).expect("a JSON value serializes");
    let signature = sign(&claimed.secret, Utc::now().timestamp(), &body);
    let result = client
        .post(&claimed.url)
        .header("content-type", "application/json")
        .header("otter-delivery", claimed.id.to_string())
        .header("otter-event", &claimed.kind)
        .header("otter-signature", signature)
        .body(body)
        .send()
        .await;
    match result {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Outcome {
                    status_code: Some(status.as_u16()),
                    delivered: true,
                    duration: started.elapsed(),
                    error: None,
                }
            } else if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                failed(
                    format!("redirect not followed (Location: {location})"),
                    Some(status.as_u16()),
                )
            } else {
                failed(format!("receiver answered {status}"), Some(status.as_u16()))
            }
        }
        Err(e) if e.is_timeout() => failed(
            format!("no answer within {} s", SEND_TIMEOUT.as_secs()),
            None,
        ),
        Err(e) => failed(chain(&e), None),
    }
}

/// The process's sender: claims due deliveries and sends each in its own task.
#[derive(Clone)]
pub struct Sender {
    pool: PgPool,
    client: reqwest::Client,
    allow_private: bool,
    retry_base: Duration,
    retry_for: Duration,
    wake: Arc<Notify>,
    in_flight: Arc<Mutex<HashMap<WebhookId, usize>>>,
    /// The sends in progress, waited for at shutdown.
    sends: TaskTracker,
}

impl Sender {
    /// A sender with the configuration's retry and address rules.
    pub fn new(pool: PgPool, config: &Config) -> Self {
        Sender {
            pool,
            client: client(config.webhook_allow_private),
            allow_private: config.webhook_allow_private,
            retry_base: config.webhook_retry_base,
            retry_for: config.webhook_retry_for,
            wake: Arc::new(Notify::new()),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            sends: TaskTracker::new(),
        }
    }

    /// Looks for due deliveries now rather than at the next poll (after a redeliver).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown`: every [`POLL_INTERVAL`] (or when woken), claims what is due and
    /// sends it. At shutdown the sends in progress stop and give their deliveries back, due at
    /// once for any other server, rather than holding them for their lease (a server killed
    /// outright leaves them to their lease); the task ends when they have (see [`Sender::stopped`]).
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.claim_and_send(&shutdown).await {
                    tracing::warn!(error = %e, "webhook deliveries could not be claimed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
            // Every send was spawned by a claim above, which has returned: none comes after.
            self.sends.close();
            self.sends.wait().await;
        })
    }

    /// Waits, after shutdown, until the sends in progress have given their deliveries back.
    pub async fn stopped(&self) {
        self.sends.wait().await;
    }

    async fn claim_and_send(&self, shutdown: &CancellationToken) -> Result<(), crate::DbError> {
        let (busy, free) = {
            let in_flight = self.in_flight.lock().expect("not poisoned");
            let busy: Vec<WebhookId> = in_flight
                .iter()
                .filter(|(_, n)| **n >= PER_WEBHOOK)
                .map(|(id, _)| *id)
                .collect();
            (busy, MAX_IN_FLIGHT.saturating_sub(in_flight.values().sum()))
        };
        if free == 0 {
            return Ok(());
        }
        let claimed = store::claim(&self.pool, free as i64, &busy, LEASE).await?;
        for delivery in claimed {
            let admitted = {
                let mut in_flight = self.in_flight.lock().expect("not poisoned");
                let n = in_flight.entry(delivery.webhook_id).or_default();
                if *n < PER_WEBHOOK {
                    *n += 1;
                    true
                } else {
                    false
                }
            };
            if !admitted {
                store::release(&self.pool, &delivery).await?;
                continue;
            }
            let sender = self.clone();
            let shutdown = shutdown.clone();
            self.sends.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        // Stopping: the receiver may have it (a delivery is sent at least once),
                        // but no attempt is recorded; it is due again now, not when the lease ends.
                        if let Err(e) = store::release(&sender.pool, &delivery).await {
                            tracing::warn!(delivery_id = %delivery.id, error = %e, "webhook delivery could not be given back at shutdown; it is sent again when its lease ends");
                        }
                    }
                    () = sender.deliver(&delivery) => {}
                }
                let mut in_flight = sender.in_flight.lock().expect("not poisoned");
                if let Some(n) = in_flight.get_mut(&delivery.webhook_id) {
                    *n -= 1;
                    if *n == 0 {
                        in_flight.remove(&delivery.webhook_id);
                    }
                }
                drop(in_flight);
                sender.wake();
            });
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %delivery.id, webhook_id = %delivery.webhook_id))]
    async fn deliver(&self, delivery: &Claimed) {
        let outcome = send(&self.client, delivery, self.allow_private).await;
        let attempt = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
        let retry_in = retry_delay(self.retry_base, attempt);
        match store::record(&self.pool, delivery, &outcome, retry_in, self.retry_for).await {
            Ok(true) if outcome.delivered => tracing::debug!("webhook delivered"),
            Ok(true) => tracing::info!(
                error = outcome.error.as_deref().unwrap_or(""),
                attempt,
                "webhook delivery failed; retried unless its window is spent"
            ),
            Ok(false) => tracing::info!("webhook delivery's lease was lost; attempt not recorded"),
            Err(e) => tracing::warn!(error = %e, "webhook attempt could not be recorded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_are_always_refused() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_ip(ip, true).is_err(), "{ip} allowed");
        }
    }

    #[test]
    fn loopback_and_private_need_the_flag() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                check_ip(ip, false).is_err(),
                "{ip} allowed without the flag"
            );
            assert!(check_ip(ip, true).is_ok(), "{ip} refused with the flag");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(check_ip(ip.parse().unwrap(), false).is_ok(), "{ip} refused");
        }
    }

    #[test]
    fn urls_are_checked_as_written() {
        assert!(check_url("http://169.254.169.254/", true).is_err());
        // The WHATWG forms of an IPv4 address are the same address.
        assert!(check_url("http://2852039166/", true).is_err());
        assert!(check_url("http://0xa9.0xfe.0xa9.0xfe/", true).is_err());
        assert!(check_url("http://[::ffff:a9fe:a9fe]/", true).is_err());
        assert!(check_url("http://[fd00:ec2::254]/latest", true).is_err());
        assert!(check_url("ftp://example.com/", true).is_err());
        assert!(check_url("file:///etc/passwd", true).is_err());
        assert!(check_url("http://user:pw@example.com/", true).is_err());
        assert!(check_url("http://127.0.0.1:9/", false).is_err());
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert!(check_url("https://example.com/hook", false).is_ok());
        // A name is checked when connecting, on what it resolves to.
        assert!(check_url("http://localhost/", false).is_ok());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 shape, with the "<t>." prefix: computed with Python's hmac.
        let sig = sign("key", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="), "{sig}");
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            sig,
            format!("t=1700000000,v1={}", hex(&mac.finalize().into_bytes()))
        );
    }

    #[test]
    fn retries_double_with_jitter_and_stop_growing() {
        let base = Duration::from_secs(5);
        for attempt in 1..=4u32 {
            let d = retry_delay(base, attempt);
            let plain = base * (1 << (attempt - 1));
            assert!(d >= plain && d <= plain.mul_f64(1.25), "{attempt}: {d:?}");
        }
        assert!(retry_delay(base, 40) <= MAX_RETRY_DELAY.mul_f64(1.25));
    }

    #[test]
    fn events_are_checked() {
        assert!(check_events(&[]).is_err());
        assert!(check_events(&["output_chunk".to_owned()]).is_err());
        assert!(check_events(&["nope".to_owned()]).is_err());
        assert!(check_events(&["job_failed".to_owned(), "job_failed".to_owned()]).is_err());
        assert!(check_events(&["job_succeeded".to_owned(), "job_failed".to_owned()]).is_ok());
    }
}
