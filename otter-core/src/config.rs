//! Otter's configuration: every `OTTER_*` variable, read once at start-up into a typed [`Config`].
//!
//! A missing or malformed value stops start-up with a [`ConfigError`] that names the variable.
//! `DATABASE_URL` and `REDIS_URL` are accepted as fallbacks for `OTTER_DATABASE_URL` and
//! `OTTER_REDIS_URL` (sqlx tooling and CI read the unprefixed names).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::MAX_LIMIT;

/// A value that must never appear in logs or `Debug` output (database passwords, API keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// One of `OTTER_API_TOKENS`: a bearer token, and the name it is recorded under in the audit
/// trail (`name:token`), if it was given one.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// The name (letters, digits, `_`, `-`, `.`; 1 to 64 characters), if given.
    pub name: Option<String>,
    /// The token.
    pub secret: Secret,
}

impl ApiToken {
    /// The token itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        self.secret.expose()
    }

    /// Who the token's holder is in the audit trail: its name, or `token:` and the first 8 hex
    /// digits of its SHA-256 (never the token).
    pub fn actor(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => token_fingerprint(self.expose()),
        }
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({})", self.actor())
    }
}

/// `token:` and the first 8 hex digits of the SHA-256 of `token`: how an unnamed token is shown.
pub fn token_fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("token:{hex}")
}

/// Why the configuration could not be read. Every variant names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is required but not set")]
    Missing(&'static str),
    /// A variable is set to something that cannot be used.
    #[error("{var} is invalid: {reason} (got {value:?})")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// The offending value (never a secret).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Output format of the logs (`OTTER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// The format `OTTER_LOG_FORMAT` names (`text` when unset or empty). Binaries that read no
    /// other part of [`Config`] (`otter-demo-model`) use this too.
    pub fn from_var(value: Option<&str>) -> Result<Self, ConfigError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(invalid("OTTER_LOG_FORMAT", other, "expected text or json")),
        }
    }
}

/// Where the cgroups that hold Otter's children go (`OTTER_CGROUP_ROOT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    /// `auto` (the default): `<the cgroup v2 mount>/otter` when this process is root and can
    /// write there, else no cgroups.
    Auto,
    /// `none`: no cgroups; children are found by the marker in their environment.
    None,
    /// An absolute path to a cgroup v2 directory this process may create cgroups under.
    Path(PathBuf),
}

/// A host name as a `Host` header carries it: a DNS name, an IPv4 address or a bracketed IPv6
/// address, with an optional port. Names are compared without case and without a final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName {
    /// The name, lowercased (`[::1]` keeps its brackets).
    pub host: String,
    /// The port, when one was given.
    pub port: Option<u16>,
}

impl HostName {
    /// Parses `host` or `host:port`; `None` when it is not one (a scheme, a path, a user, an
    /// empty name, a bad port).
    pub fn parse(raw: &str) -> Option<Self> {
        let (host, port) = if raw.starts_with('[') {
            let end = raw.find(']')?;
            let (host, rest) = raw.split_at(end + 1);
            let inner = &host[1..host.len() - 1];
            if inner.parse::<std::net::Ipv6Addr>().is_err() {
                return None;
            }
            (host, rest)
        } else {
            match raw.rsplit_once(':') {
                Some((host, _)) => (host, &raw[host.len()..]),
                None => (raw, ""),
            }
        };
        let port = match port {
            "" => None,
            port => Some(port.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let name_ok = host.starts_with('[')
            || (!host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
        name_ok.then_some(Self { host, port })
    }

    /// Whether `other` (a request's host) is this name: the same host, and the same port when
    /// this one names a port.
    pub fn matches(&self, other: &HostName) -> bool {
        self.host == other.host && self.port.is_none_or(|port| other.port == Some(port))
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Everything Otter's processes read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `OTTER_DATABASE_URL` (or `DATABASE_URL`): PostgreSQL, the source of truth.
    pub database_url: Secret,
    /// `OTTER_REDIS_URL` (or `REDIS_URL`): the queue's wake-up channel.
    pub redis_url: Secret,
    /// `OTTER_DB_MAX_CONNECTIONS` (default 10): pool size of each process.
    pub db_max_connections: u32,
    /// `OTTER_LISTEN_ADDR` (default `0.0.0.0:8080`).
    pub listen_addr: SocketAddr,
    /// `OTTER_CORS_ALLOWED_ORIGINS` (default `http://localhost:5173`, comma-separated; `*` allows any).
    pub cors_allowed_origins: Vec<String>,
    /// `OTTER_VIBE_BIN` (default `vibe`).
    pub vibe_bin: PathBuf,
    /// `OTTER_VIBE_HOME_BASE` (default `/var/lib/otter/vibe`): one `VIBE_HOME` per workspace below it.
    pub vibe_home_base: PathBuf,
    /// `OTTER_VIBE_HOME_TEMPLATE` (optional): copied into each new workspace's `VIBE_HOME` first.
    pub vibe_home_template: Option<PathBuf>,
    /// `OTTER_VIBE_MODEL` (optional): forwarded as `VIBE_ACTIVE_MODEL`, `VIBE_MODEL`, `MISTRAL_MODEL`.
    pub vibe_model: Option<String>,
    /// `OTTER_VIBE_MODELS` (optional, comma-separated): the model aliases a prompt may ask
    /// for (`"model"`); unset: any alias.
    pub vibe_models: Vec<String>,
    /// `OTTER_DEFAULT_MAX_TURNS`, `OTTER_DEFAULT_MAX_PRICE_USD`, `OTTER_DEFAULT_MAX_TOKENS`,
    /// `OTTER_DEFAULT_TIME_LIMIT_SECS` (each optional): the limits of a prompt that sets none.
    pub default_limits: crate::model::JobLimits,
    /// `OTTER_VIBE_PROVIDER` (optional): forwarded as `VIBE_PROVIDER`.
    pub vibe_provider: Option<String>,
    /// `OTTER_VIBE_EXTRA_ENV` (optional, comma-separated `KEY=VALUE`): forwarded to vibe.
    pub vibe_extra_env: Vec<(String, String)>,
    /// `OTTER_API_BASE_URL` (default `http://otter-server:8080`): how vibe reaches Otter's API.
    pub api_base_url: String,
    /// `OTTER_DEFAULT_WORKSPACE_PATH` (optional): workspace used when a prompt names none.
    pub default_workspace_path: Option<PathBuf>,
    /// `OTTER_MAX_ATTEMPTS` (default 5): runs per job before it fails for good.
    pub max_attempts: i32,
    /// `OTTER_PROJECT_MAX_RUNNING` (optional, 1 to 100000): the most jobs of one project that
    /// run at once over all workers, for a project that sets no `max_running`; unset: no limit.
    /// Read by the workers (the claim enforces it).
    pub project_max_running: Option<i32>,
    /// `OTTER_WORKER_CONCURRENCY` (default 1): jobs one worker process runs at once.
    pub worker_concurrency: usize,
    /// `OTTER_WORKER_ID` (default `<hostname>-<pid>`): names the worker in leases and logs.
    pub worker_id: String,
    /// `OTTER_ALLOWED_ROOTS` (optional, `:`-separated): workspaces must lie under one of them.
    pub allowed_roots: Vec<PathBuf>,
    /// `OTTER_QUEUE_NAME` (default `default`): prefix of every Redis key (`otter:{name}:…`).
    pub queue_name: String,
    /// `OTTER_LEASE_TTL` (default 30 s): a claim not renewed within this is considered lost.
    pub lease_ttl: Duration,
    /// `OTTER_RECONCILE_INTERVAL` (default 10 s): how often PostgreSQL's queue is re-pushed to Redis.
    pub reconcile_interval: Duration,
    /// `OTTER_CANCEL_GRACE` (default 10 s): SIGTERM to SIGKILL delay when stopping a run.
    pub cancel_grace: Duration,
    /// `OTTER_SETUP_TIMEOUT` (default 600 s): bound on one `setup.sh` run.
    pub setup_timeout: Duration,
    /// `OTTER_JOB_TIMEOUT` (optional): vibe's `--time-limit`, with a hard kill as backstop.
    pub job_timeout: Option<Duration>,
    /// `OTTER_SILENCE_TIMEOUT` (default 15 min, `0`: off): a run that prints no line for this
    /// long is stopped as hung (reason `silent`) and retried; a job's `limits.silence_secs`
    /// overrides it.
    pub silence_timeout: Option<Duration>,
    /// `OTTER_EXIT_GRACE` (default 60 s): how long vibe may go on after its final answer and
    /// its `export.json` before Otter ends the run (`forced_exit`).
    pub exit_grace: Duration,
    /// `OTTER_RATE_LIMIT_BACKOFF` (default 60 s): how long a provider's gate stays shut after a
    /// rate limit whose reset time vibe's message does not give; it doubles with each limit in
    /// a row, at most an hour.
    pub rate_limit_backoff: Duration,
    /// `OTTER_RETENTION` (optional, e.g. `30d`): jobs that ended longer ago than this lose their
    /// `output_chunk` events, run directories and checkpoints (their row, output, lifecycle
    /// events and change summary stay; the job shows `events_purged`). Unset: everything is kept.
    pub retention: Option<Duration>,
    /// `OTTER_RETENTION_INTERVAL` (default 1 h): how often each worker purges what
    /// `OTTER_RETENTION` no longer keeps.
    pub retention_interval: Duration,
    /// `OTTER_MIN_FREE_DISK` (default 1 GiB; bytes, or with a `KiB`/`MiB`/`GiB`/`TiB` suffix;
    /// `0`: off): a worker whose workspace filesystem has less free space claims nothing more
    /// until space comes back.
    pub min_free_disk: u64,
    /// `OTTER_RETRY_BASE_DELAY` (default 2 s): first retry's backoff; doubles per attempt, with
    /// jitter, up to 5 minutes.
    pub retry_base_delay: Duration,
    /// `OTTER_SHUTDOWN_GRACE` (default 30 s): how long a stopping worker lets running jobs finish.
    pub shutdown_grace: Duration,
    /// `OTTER_API_TOKENS` (optional, comma-separated, each `token` or `name:token`): bearer
    /// tokens accepted by the API; a name is what the audit trail records.
    pub api_tokens: Vec<ApiToken>,
    /// `OTTER_IDEMPOTENCY_TTL` (default 24 h): how long an `Idempotency-Key` answers with its
    /// first answer; older keys are purged.
    pub idempotency_ttl: Duration,
    /// `OTTER_ALLOW_UNAUTHENTICATED` (default false): allow a non-loopback listener without tokens.
    pub allow_unauthenticated: bool,
    /// `OTTER_ALLOWED_HOSTS` (optional, comma-separated host names, each with an optional port):
    /// without tokens, the `Host` names answered besides `localhost`, `127.0.0.1` and `[::1]`
    /// (a web page reaching Otter through DNS rebinding sends its own name).
    pub allowed_hosts: Vec<HostName>,
    /// `OTTER_HEADER_READ_TIMEOUT` (default 10 s): a request's headers must be complete this long
    /// after its first byte, or the connection is closed.
    pub header_read_timeout: Duration,
    /// `OTTER_IDLE_TIMEOUT` (default 30 s): a connection with no request in progress that sends
    /// nothing this long is closed.
    pub idle_timeout: Duration,
    /// `OTTER_MAX_CONNECTIONS` (default: what the file-descriptor limit leaves, see otter-server):
    /// connections open at once.
    pub max_connections: Option<usize>,
    /// `OTTER_MAX_PENDING_CONNECTIONS` (default half of the connections): connections without a
    /// request in progress (new, idle, or still sending headers); one more closes the one that
    /// has waited longest.
    pub max_pending_connections: Option<usize>,
    /// `OTTER_LOG_FORMAT` (`text` or `json`, default `text`).
    pub log_format: LogFormat,
    /// `OTTER_RUNTIME_ENABLED` (default false): sibling runtime containers.
    pub runtime_enabled: bool,
    /// `OTTER_RUNTIME_DOCKER_SOCKET` (default `unix:///var/run/docker.sock`).
    pub runtime_docker_socket: String,
    /// `OTTER_RUNTIME_NETWORK` (default `otter_default`; the seed's `kymatics_default` named
    /// another project's stack, see DESIGN.md §7).
    pub runtime_network: String,
    /// `OTTER_RUNTIME_CONTAINER_PREFIX` (default `otter-ws`).
    pub runtime_container_prefix: String,
    /// `OTTER_RUNTIME_IMAGE_PREFIX` (default `otter/workspace`).
    pub runtime_image_prefix: String,
    /// `OTTER_RUNTIME_DEFAULT_HOST` (default `http://localhost`): base of preview URLs.
    pub runtime_default_host: String,
    /// `OTTER_RUNTIME_MAX_LOG_LINES` (default 2000).
    pub runtime_max_log_lines: usize,
    /// `MISTRAL_API_KEY` (optional): written to each workspace's `VIBE_HOME/.env` and passed to vibe.
    pub mistral_api_key: Option<Secret>,
    /// `OTTER_DEMO` (default false): every workspace's vibe runs against the scripted demo model
    /// (`otter-demo-model`) instead of a real one, see [`crate::demo`]. Off unless asked for.
    pub demo: bool,
    /// `OTTER_DEMO_MODEL_URL` (default `http://127.0.0.1:8090/v1`): the demo model's API base,
    /// vibe's `api_base` for it.
    pub demo_model_url: String,
    /// `OTTER_JOB_USER` (default `otter-job`): the user vibe, `setup.sh` and commands run as when
    /// Otter runs as root, so that they can read none of its secrets (see `isolation`).
    pub job_user: String,
    /// `OTTER_JOB_DOCKER` (default false): the job user also gets the group of the Docker socket
    /// (`OTTER_RUNTIME_DOCKER_SOCKET`), so that vibe and `setup.sh` can use the docker CLI.
    /// Access to the Docker API is root on the host: a job can then read every container's
    /// environment, Otter's included (docs/workspace-trust-model.md).
    pub job_docker: bool,
    /// `OTTER_CGROUP_ROOT` (`auto`, `none` or a path; default `auto`): where each run's and
    /// command's cgroup goes, so that every process it starts can be killed.
    pub cgroup_root: CgroupRoot,
    /// `OTTER_COMMAND_MAX_OUTPUT_BYTES` (default 1048576): bytes of a command's stdout, and of
    /// its stderr, kept in the answer of the command endpoints (the rest is read and dropped).
    pub command_max_output_bytes: usize,
    /// `OTTER_COMMAND_MAX_OUTPUT_LINES` (default 100000): lines likewise.
    pub command_max_output_lines: usize,
    /// `OTTER_EVENT_PAGE_MAX_BYTES` (default 1048576): payload bytes of one page of stored events
    /// (`GET /v1/jobs/{id}/events`, and each read of an SSE replay); a single larger event
    /// comes alone.
    pub event_page_max_bytes: usize,
    /// `OTTER_CHECKPOINT_DIR` (default `<OTTER_VIBE_HOME_BASE>/.checkpoints`): where the
    /// checkpoints of workspaces' files are kept (see [`crate::checkpoint`]); the server and
    /// the workers must share it, as they share the workspaces.
    pub checkpoint_dir: Option<PathBuf>,
    /// `OTTER_CHECKPOINT_MAX_FILE_BYTES` (default 5242880): larger files are listed in a
    /// checkpoint but not kept, and a restore leaves them alone.
    pub checkpoint_max_file_bytes: u64,
    /// `OTTER_WEBHOOK_RETRY_BASE` (default 5 s): the delay before a failed webhook delivery's
    /// first retry; it doubles per attempt, with jitter, up to an hour.
    pub webhook_retry_base: Duration,
    /// `OTTER_WEBHOOK_RETRY_FOR` (default 24 h): how long a webhook delivery is retried before it
    /// is given up (`failed`).
    pub webhook_retry_for: Duration,
    /// `OTTER_WEBHOOK_ALLOW_PRIVATE` (default false): webhook URLs may reach loopback and private
    /// addresses (a receiver on a LAN). Link-local and cloud-metadata addresses stay refused.
    pub webhook_allow_private: bool,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `vars` (tests build a config without touching the
    /// process environment).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value if set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let database_url = env
            .first_of(&["OTTER_DATABASE_URL", "DATABASE_URL"])
            .ok_or(ConfigError::Missing("OTTER_DATABASE_URL"))?;
        check_url_scheme(
            "OTTER_DATABASE_URL",
            &database_url,
            &["postgres", "postgresql"],
        )?;
        let redis_url = env
            .first_of(&["OTTER_REDIS_URL", "REDIS_URL"])
            .ok_or(ConfigError::Missing("OTTER_REDIS_URL"))?;
        check_url_scheme(
            "OTTER_REDIS_URL",
            &redis_url,
            &["redis", "rediss", "redis+unix", "unix"],
        )?;

        let worker_id = match env.get("OTTER_WORKER_ID") {
            Some(id) => id,
            None => format!("{}-{}", hostname(), std::process::id()),
        };
        let queue_name = env
            .get("OTTER_QUEUE_NAME")
            .unwrap_or_else(|| "default".to_owned());
        if !queue_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "OTTER_QUEUE_NAME",
                &queue_name,
                "use letters, digits, '-' and '_' only",
            ));
        }

        let config = Config {
            database_url: Secret::new(database_url),
            redis_url: Secret::new(redis_url),
            db_max_connections: env.parsed("OTTER_DB_MAX_CONNECTIONS", 10, 1..=1000)?,
            listen_addr: env.socket_addr("OTTER_LISTEN_ADDR", "0.0.0.0:8080")?,
            cors_allowed_origins: env.list("OTTER_CORS_ALLOWED_ORIGINS", "http://localhost:5173"),
            vibe_bin: PathBuf::from(
                env.get("OTTER_VIBE_BIN")
                    .unwrap_or_else(|| "vibe".to_owned()),
            ),
            vibe_home_base: env
                .abs_path("OTTER_VIBE_HOME_BASE")?
                .unwrap_or_else(|| PathBuf::from("/var/lib/otter/vibe")),
            vibe_home_template: env.abs_path("OTTER_VIBE_HOME_TEMPLATE")?,
            vibe_model: env.get("OTTER_VIBE_MODEL"),
            vibe_models: env.list("OTTER_VIBE_MODELS", ""),
            default_limits: crate::model::JobLimits {
                max_turns: env.optional_parsed("OTTER_DEFAULT_MAX_TURNS", 1..=MAX_LIMIT)?,
                max_price_usd: env.positive_usd("OTTER_DEFAULT_MAX_PRICE_USD")?,
                max_tokens: env.optional_parsed("OTTER_DEFAULT_MAX_TOKENS", 1..=MAX_LIMIT)?,
                time_limit_secs: env
                    .optional_parsed("OTTER_DEFAULT_TIME_LIMIT_SECS", 1..=MAX_LIMIT)?,
                // OTTER_SILENCE_TIMEOUT is the worker's default, applied when the job sets none.
                silence_secs: None,
            },
            vibe_provider: env.get("OTTER_VIBE_PROVIDER"),
            vibe_extra_env: env.key_values("OTTER_VIBE_EXTRA_ENV")?,
            api_base_url: env
                .get("OTTER_API_BASE_URL")
                .unwrap_or_else(|| "http://otter-server:8080".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            default_workspace_path: env.abs_path("OTTER_DEFAULT_WORKSPACE_PATH")?,
            max_attempts: env.parsed("OTTER_MAX_ATTEMPTS", 5, 1..=100)?,
            project_max_running: env.optional_parsed("OTTER_PROJECT_MAX_RUNNING", 1..=100_000)?,
            worker_concurrency: env.parsed("OTTER_WORKER_CONCURRENCY", 1, 1..=1024)?,
            worker_id,
            allowed_roots: env.path_list("OTTER_ALLOWED_ROOTS")?,
            queue_name,
            lease_ttl: env.duration("OTTER_LEASE_TTL", Duration::from_secs(30))?,
            reconcile_interval: env
                .duration("OTTER_RECONCILE_INTERVAL", Duration::from_secs(10))?,
            cancel_grace: env.duration("OTTER_CANCEL_GRACE", Duration::from_secs(10))?,
            setup_timeout: env.duration("OTTER_SETUP_TIMEOUT", Duration::from_secs(600))?,
            job_timeout: env.optional_duration("OTTER_JOB_TIMEOUT")?,
            silence_timeout: env
                .duration_or_off("OTTER_SILENCE_TIMEOUT", Duration::from_secs(15 * 60))?,
            exit_grace: env.duration("OTTER_EXIT_GRACE", Duration::from_secs(60))?,
            rate_limit_backoff: env
                .duration("OTTER_RATE_LIMIT_BACKOFF", Duration::from_secs(60))?,
            retention: env.optional_duration("OTTER_RETENTION")?,
            retention_interval: env
                .duration("OTTER_RETENTION_INTERVAL", Duration::from_secs(3600))?,
            min_free_disk: env.byte_size("OTTER_MIN_FREE_DISK", 1 << 30)?,
            retry_base_delay: env.duration("OTTER_RETRY_BASE_DELAY", Duration::from_secs(2))?,
            shutdown_grace: env.duration("OTTER_SHUTDOWN_GRACE", Duration::from_secs(30))?,
            api_tokens: env.tokens("OTTER_API_TOKENS")?,
            idempotency_ttl: env
                .duration("OTTER_IDEMPOTENCY_TTL", Duration::from_secs(24 * 3600))?,
            allow_unauthenticated: env.bool("OTTER_ALLOW_UNAUTHENTICATED", false)?,
            allowed_hosts: env.hosts("OTTER_ALLOWED_HOSTS")?,
            header_read_timeout: env
                .duration("OTTER_HEADER_READ_TIMEOUT", Duration::from_secs(10))?,
            idle_timeout: env.duration("OTTER_IDLE_TIMEOUT", Duration::from_secs(30))?,
            max_connections: env.optional_parsed("OTTER_MAX_CONNECTIONS", 1..=1_000_000)?,
            max_pending_connections: env
                .optional_parsed("OTTER_MAX_PENDING_CONNECTIONS", 1..=1_000_000)?,
            log_format: LogFormat::from_var(env.get("OTTER_LOG_FORMAT").as_deref())?,
            runtime_enabled: env.bool("OTTER_RUNTIME_ENABLED", false)?,
            runtime_docker_socket: env
                .get("OTTER_RUNTIME_DOCKER_SOCKET")
                .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned()),
            runtime_network: env
                .get("OTTER_RUNTIME_NETWORK")
                .unwrap_or_else(|| "otter_default".to_owned()),
            runtime_container_prefix: env
                .get("OTTER_RUNTIME_CONTAINER_PREFIX")
                .unwrap_or_else(|| "otter-ws".to_owned()),
            runtime_image_prefix: env
                .get("OTTER_RUNTIME_IMAGE_PREFIX")
                .unwrap_or_else(|| "otter/workspace".to_owned()),
            runtime_default_host: env
                .get("OTTER_RUNTIME_DEFAULT_HOST")
                .unwrap_or_else(|| "http://localhost".to_owned()),
            runtime_max_log_lines: env.parsed(
                "OTTER_RUNTIME_MAX_LOG_LINES",
                2000,
                1..=1_000_000,
            )?,
            mistral_api_key: env.get("MISTRAL_API_KEY").map(Secret::new),
            demo: env.bool("OTTER_DEMO", false)?,
            demo_model_url: env.http_url("OTTER_DEMO_MODEL_URL", "http://127.0.0.1:8090/v1")?,
            job_user: env
                .get("OTTER_JOB_USER")
                .unwrap_or_else(|| "otter-job".to_owned()),
            job_docker: env.bool("OTTER_JOB_DOCKER", false)?,
            webhook_retry_base: env.duration("OTTER_WEBHOOK_RETRY_BASE", Duration::from_secs(5))?,
            webhook_retry_for: env
                .duration("OTTER_WEBHOOK_RETRY_FOR", Duration::from_secs(24 * 3600))?,
            webhook_allow_private: env.bool("OTTER_WEBHOOK_ALLOW_PRIVATE", false)?,
            cgroup_root: match env.get("OTTER_CGROUP_ROOT").as_deref() {
                None | Some("auto") => CgroupRoot::Auto,
                Some("none") => CgroupRoot::None,
                Some(path) if path.starts_with('/') => CgroupRoot::Path(PathBuf::from(path)),
                Some(other) => {
                    return Err(invalid(
                        "OTTER_CGROUP_ROOT",
                        other,
                        "expected auto, none or an absolute path",
                    ));
                }
            },
            command_max_output_bytes: env.parsed(
                "OTTER_COMMAND_MAX_OUTPUT_BYTES",
                crate::shell::MAX_OUTPUT_BYTES,
                1024..=64 * 1024 * 1024,
            )?,
            command_max_output_lines: env.parsed(
                "OTTER_COMMAND_MAX_OUTPUT_LINES",
                crate::shell::MAX_OUTPUT_LINES,
                1..=10_000_000,
            )?,
            event_page_max_bytes: env.parsed(
                "OTTER_EVENT_PAGE_MAX_BYTES",
                crate::db::events::PAGE_MAX_BYTES,
                4096..=64 * 1024 * 1024,
            )?,
            checkpoint_dir: env.abs_path("OTTER_CHECKPOINT_DIR")?,
            checkpoint_max_file_bytes: env.parsed(
                "OTTER_CHECKPOINT_MAX_FILE_BYTES",
                5 * 1024 * 1024,
                1..=1024 * 1024 * 1024,
            )?,
        };
        Ok(config)
    }

    /// Backoff before attempt `attempt + 1`: base × 2^(attempt-1), at most 5 minutes, ±25 % jitter.
    pub fn retry_delay(&self, attempt: i32) -> Duration {
        let exp = attempt.clamp(1, 20) - 1;
        let base = self.retry_base_delay.as_secs_f64() * f64::from(1u32 << exp);
        let capped = base.min(300.0);
        let jitter: f64 = rand::random_range(0.75..1.25);
        Duration::from_secs_f64(capped * jitter)
    }

    /// The model provider vibe runs against, and the key it uses: the demo model's under
    /// `OTTER_DEMO`, else `OTTER_VIBE_PROVIDER` (vibe's default, `mistral`, when unset) with
    /// `MISTRAL_API_KEY`. Together they name the run's rate limit gate.
    pub fn model_provider(&self) -> (&str, &str) {
        if self.demo {
            return (crate::demo::MODEL, crate::demo::API_KEY);
        }
        (
            self.vibe_provider.as_deref().unwrap_or("mistral"),
            self.mistral_api_key.as_ref().map_or("", Secret::expose),
        )
    }

    /// How often a worker renews the leases of its runs (`db::jobs::renew_lease`), and its
    /// liveness row, the heartbeat (`db::workers::beat`), with the same period: a third of the
    /// lease TTL, so two renewals may be lost before a lease expires.
    pub fn renew_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// Reads variables through a lookup function; empty values count as unset.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn first_of(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.get(n))
    }

    fn parsed<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        Ok(self.optional_parsed(name, range)?.unwrap_or(default))
    }

    fn optional_parsed<T>(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let value: T = raw
            .parse()
            .map_err(|_| invalid(name, &raw, "expected a whole number"))?;
        if !range.contains(&value) {
            return Err(invalid(
                name,
                &raw,
                &format!("must be between {} and {}", range.start(), range.end()),
            ));
        }
        Ok(Some(value))
    }

    /// A positive, finite amount of USD.
    fn positive_usd(&self, name: &'static str) -> Result<Option<f64>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
            _ => Err(invalid(
                name,
                &raw,
                "expected a positive amount of USD, e.g. 0.50",
            )),
        }
    }

    /// Comma-separated bearer tokens, each `token` or `name:token` (split at the first `:`).
    /// Unset or blank means none; a value that is set but lists no token (`" , "`) is refused
    /// rather than read as "no authentication", and so are a bad name and a name given twice
    /// (the message never shows a token).
    fn tokens(&self, name: &'static str) -> Result<Vec<ApiToken>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(Vec::new());
        };
        let mut tokens: Vec<ApiToken> = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let token = match item.split_once(':') {
                Some((token_name, secret)) => {
                    let valid = (1..=64).contains(&token_name.len())
                        && token_name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
                    if !valid || secret.trim().is_empty() {
                        return Err(invalid(
                            name,
                            "[redacted]",
                            "a `name:token` item needs a name of 1 to 64 letters, digits, `_`, `-` \
                             or `.` and a token after the `:`",
                        ));
                    }
                    if token_name == "anonymous" || token_name == "job" || token_name == "token" {
                        return Err(invalid(
                            name,
                            "[redacted]",
                            "the names `anonymous`, `job` and `token` are reserved",
                        ));
                    }
                    if tokens.iter().any(|t| t.name.as_deref() == Some(token_name)) {
                        return Err(invalid(
                            name,
                            "[redacted]",
                            &format!("the name {token_name:?} is given to two tokens"),
                        ));
                    }
                    ApiToken {
                        name: Some(token_name.to_owned()),
                        secret: Secret::new(secret.trim()),
                    }
                }
                None => ApiToken {
                    name: None,
                    secret: Secret::new(item),
                },
            };
            tokens.push(token);
        }
        if tokens.is_empty() {
            // Only commas and blanks: nothing secret to hide.
            return Err(invalid(
                name,
                &raw,
                "lists no token; give at least one, or leave it empty to run without authentication",
            ));
        }
        Ok(tokens)
    }

    fn hosts(&self, name: &'static str) -> Result<Vec<HostName>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                HostName::parse(entry).ok_or_else(|| {
                    invalid(
                        name,
                        entry,
                        "expected host names, each with an optional :port (e.g. otter-server or otter.example.com:8443), without a scheme or path",
                    )
                })
            })
            .collect()
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(invalid(name, other, "expected true or false")),
        }
    }

    /// An `http` or `https` URL without credentials, its trailing `/` removed. Not for
    /// secrets: the value is shown in the error.
    fn http_url(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let raw = self.get(name).unwrap_or_else(|| default.to_owned());
        let url =
            url::Url::parse(&raw).map_err(|e| invalid(name, &raw, &format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(name, &raw, "expected an http or https URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(name, "<redacted>", "must not hold credentials"));
        }
        Ok(raw.trim_end_matches('/').to_owned())
    }

    fn socket_addr(&self, name: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
        let raw = self.get(name).unwrap_or_else(|| default.to_owned());
        raw.parse()
            .map_err(|_| invalid(name, &raw, "expected host:port, e.g. 0.0.0.0:8080"))
    }

    fn list(&self, name: &str, default: &str) -> Vec<String> {
        self.get(name)
            .unwrap_or_else(|| default.to_owned())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn abs_path(&self, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let path = PathBuf::from(&raw);
        if !path.is_absolute() {
            return Err(invalid(name, &raw, "must be an absolute path"));
        }
        Ok(Some(path))
    }

    fn path_list(&self, name: &'static str) -> Result<Vec<PathBuf>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(Vec::new());
        };
        raw.split(':')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let path = PathBuf::from(s);
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err(invalid(name, &raw, "every entry must be an absolute path"))
                }
            })
            .collect()
    }

    fn key_values(&self, name: &'static str) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !k.contains(char::is_whitespace) => {
                    Ok((k.trim().to_owned(), v.to_owned()))
                }
                _ => Err(invalid(
                    name,
                    pair,
                    "expected comma-separated KEY=VALUE pairs",
                )),
            })
            .collect()
    }

    fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.optional_duration(name)?.unwrap_or(default))
    }

    /// A duration that `0` turns off (`None`); unset: `default`.
    fn duration_or_off(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(Some(default));
        };
        match parse_duration(&raw) {
            Some(d) if d.is_zero() => Ok(None),
            Some(d) => Ok(Some(d)),
            None => Err(invalid(
                name,
                &raw,
                "expected a duration such as 90s, 15m or 1h, or 0 for off",
            )),
        }
    }

    /// A size in bytes: a whole number, optionally with `KiB`, `MiB`, `GiB` or `TiB`.
    fn byte_size(&self, name: &'static str, default: u64) -> Result<u64, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        parse_byte_size(&raw).ok_or_else(|| {
            invalid(
                name,
                &raw,
                "expected a size such as 1073741824, 512MiB or 1GiB",
            )
        })
    }

    fn optional_duration(&self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        parse_duration(&raw)
            .filter(|d| !d.is_zero())
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    name,
                    &raw,
                    "expected a positive duration such as 30, 30s, 500ms, 5m, 1h or 30d",
                )
            })
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn check_url_scheme(var: &'static str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| ConfigError::Invalid {
        var,
        // The URL may hold a password: show only its scheme.
        value: "<redacted>".to_owned(),
        reason: format!("not a URL: {e}"),
    })?;
    if schemes.contains(&parsed.scheme()) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            var,
            value: format!("{}://…", parsed.scheme()),
            reason: format!("expected a {} URL", schemes.join(" or ")),
        })
    }
}

/// Parses `1073741824`, `512KiB`, `512MiB`, `1GiB`, `2TiB` (a bare number means bytes).
pub fn parse_byte_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// Parses `30`, `30s`, `500ms`, `5m`, `1h`, `30d` (a bare number means seconds).
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// This machine's host name (`worker` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("OTTER_DATABASE_URL", "postgres://otter:secret@db/otter"),
            ("OTTER_REDIS_URL", "redis://redis:6379"),
        ]
    }

    #[test]
    fn defaults_follow_the_seed() {
        let config = Config::from_map(&vars(&base())).expect("valid");
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.cors_allowed_origins, vec!["http://localhost:5173"]);
        assert_eq!(config.vibe_bin, PathBuf::from("vibe"));
        assert_eq!(config.vibe_home_base, PathBuf::from("/var/lib/otter/vibe"));
        assert_eq!(config.api_base_url, "http://otter-server:8080");
        assert_eq!(config.max_attempts, 5);
        assert_eq!(config.worker_concurrency, 1);
        assert!(!config.runtime_enabled);
        assert_eq!(config.runtime_docker_socket, "unix:///var/run/docker.sock");
        assert_eq!(config.runtime_network, "otter_default");
        assert_eq!(config.runtime_container_prefix, "otter-ws");
        assert_eq!(config.runtime_image_prefix, "otter/workspace");
        assert_eq!(config.runtime_default_host, "http://localhost");
        assert_eq!(config.runtime_max_log_lines, 2000);
        assert_eq!(config.lease_ttl, Duration::from_secs(30));
        assert_eq!(config.reconcile_interval, Duration::from_secs(10));
        assert_eq!(config.cancel_grace, Duration::from_secs(10));
        assert!(config.default_workspace_path.is_none());
        assert!(config.allowed_roots.is_empty());
        assert_eq!(config.job_user, "otter-job");
        assert_eq!(config.cgroup_root, CgroupRoot::Auto);
        assert!(config.api_tokens.is_empty());
        assert!(config.allowed_hosts.is_empty());
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, None);
        assert_eq!(config.max_pending_connections, None);
        assert_eq!(config.command_max_output_bytes, 1024 * 1024);
        assert_eq!(config.command_max_output_lines, 100_000);
        assert_eq!(config.event_page_max_bytes, 1024 * 1024);
        assert_eq!(config.silence_timeout, Some(Duration::from_secs(900)));
        assert_eq!(config.exit_grace, Duration::from_secs(60));
        assert_eq!(config.min_free_disk, 1 << 30);
        assert_eq!(config.retention, None);
        assert_eq!(config.retention_interval, Duration::from_secs(3600));
    }

    #[test]
    fn watchdogs_take_durations_and_sizes_and_zero_turns_them_off() {
        let mut v = base();
        v.extend([
            ("OTTER_SILENCE_TIMEOUT", "0"),
            ("OTTER_EXIT_GRACE", "90s"),
            ("OTTER_JOB_TIMEOUT", "30d"),
            ("OTTER_RETENTION", "30d"),
            ("OTTER_RETENTION_INTERVAL", "90s"),
            ("OTTER_MIN_FREE_DISK", "512MiB"),
        ]);
        let config = Config::from_map(&vars(&v)).expect("valid");
        assert_eq!(config.silence_timeout, None);
        assert_eq!(config.exit_grace, Duration::from_secs(90));
        assert_eq!(config.min_free_disk, 512 << 20);
        assert_eq!(config.job_timeout, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(config.retention, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(config.retention_interval, Duration::from_secs(90));
        for (var, value) in [
            ("OTTER_SILENCE_TIMEOUT", "soon"),
            ("OTTER_JOB_TIMEOUT", "0"),
            ("OTTER_JOB_TIMEOUT", "30 days"),
            ("OTTER_MIN_FREE_DISK", "1GB"),
            ("OTTER_MIN_FREE_DISK", "-1"),
            ("OTTER_MIN_FREE_DISK", "99999999999TiB"),
        ] {
            let mut v = base();
            v.push((var, value));
            let err = Config::from_map(&vars(&v)).expect_err(value).to_string();
            assert!(err.contains(var), "{err}");
        }
        assert_eq!(parse_byte_size("0"), Some(0));
        assert_eq!(parse_byte_size("2 KiB"), Some(2048));
    }

    #[test]
    fn tokens_may_be_named_and_a_bad_name_is_refused_without_showing_a_token() {
        let mut v = base();
        v.push((
            "OTTER_API_TOKENS",
            "ci-bot:s3cret, plain-token ,alice.b:x:y",
        ));
        let config = Config::from_map(&vars(&v)).expect("valid");
        let tokens = &config.api_tokens;
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            (tokens[0].name.as_deref(), tokens[0].expose()),
            (Some("ci-bot"), "s3cret")
        );
        assert_eq!(tokens[0].actor(), "ci-bot");
        assert_eq!(
            (tokens[1].name.as_deref(), tokens[1].expose()),
            (None, "plain-token")
        );
        assert_eq!(tokens[1].actor(), token_fingerprint("plain-token"));
        assert_eq!(tokens[2].expose(), "x:y", "split at the first `:`");
        let fingerprint = token_fingerprint("plain-token");
        assert!(fingerprint.starts_with("token:") && fingerprint.len() == 14);
        assert!(
            !format!("{tokens:?}").contains("s3cret"),
            "Debug shows no token"
        );
        for value in ["bad name:zzs", ":zzs", "a:", "job:zzs", "a:zzs1,a:zzs2"] {
            let mut v = base();
            v.push(("OTTER_API_TOKENS", value));
            let err = Config::from_map(&vars(&v)).unwrap_err().to_string();
            assert!(err.contains("OTTER_API_TOKENS"), "{value:?}: {err}");
            assert!(!err.contains("zzs"), "{value:?}: {err}");
        }
    }

    #[test]
    fn the_idempotency_ttl_defaults_to_a_day_and_takes_a_duration() {
        let config = Config::from_map(&vars(&base())).expect("valid");
        assert_eq!(config.idempotency_ttl, Duration::from_secs(24 * 3600));
        let mut v = base();
        v.push(("OTTER_IDEMPOTENCY_TTL", "90s"));
        assert_eq!(
            Config::from_map(&vars(&v)).unwrap().idempotency_ttl,
            Duration::from_secs(90)
        );
        let mut v = base();
        v.push(("OTTER_IDEMPOTENCY_TTL", "soon"));
        assert!(Config::from_map(&vars(&v)).is_err());
    }

    #[test]
    fn a_token_list_without_a_token_is_refused() {
        for value in [",", " , ", ",,, ,"] {
            let mut v = base();
            v.push(("OTTER_API_TOKENS", value));
            let err = Config::from_map(&vars(&v)).unwrap_err().to_string();
            assert!(
                err.contains("OTTER_API_TOKENS") && err.contains("no token"),
                "{value:?}: {err}"
            );
        }
        // Empty or blank is unset: no authentication (then only on loopback, see otter-server).
        for value in ["", "   "] {
            let mut v = base();
            v.push(("OTTER_API_TOKENS", value));
            let config = Config::from_map(&vars(&v)).expect("valid");
            assert!(config.api_tokens.is_empty(), "{value:?}");
        }
        let mut v = base();
        v.push(("OTTER_API_TOKENS", ", a,,b ,"));
        assert_eq!(Config::from_map(&vars(&v)).unwrap().api_tokens.len(), 2);
    }

    #[test]
    fn allowed_hosts_are_host_names_with_optional_ports() {
        let mut v = base();
        v.push((
            "OTTER_ALLOWED_HOSTS",
            "otter-server, Otter.Example.COM.:8443,[fd00::1],10.0.0.7:8080",
        ));
        let hosts = Config::from_map(&vars(&v)).unwrap().allowed_hosts;
        let shown: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "otter-server",
                "otter.example.com:8443",
                "[fd00::1]",
                "10.0.0.7:8080"
            ]
        );
        let request = |raw: &str| HostName::parse(raw).unwrap();
        assert!(hosts[0].matches(&request("otter-server:8080")));
        assert!(hosts[0].matches(&request("OTTER-SERVER")));
        assert!(hosts[1].matches(&request("otter.example.com:8443")));
        assert!(!hosts[1].matches(&request("otter.example.com")));
        assert!(!hosts[1].matches(&request("otter.example.com:80")));
        assert!(hosts[2].matches(&request("[fd00::1]:1")));
        assert!(!hosts[0].matches(&request("otter-server.evil.example")));
        for bad in [
            "http://otter-server",
            "otter-server/path",
            "user@otter-server",
            "otter-server:http",
            "otter-server:99999",
            "[not-v6]",
            "a b",
        ] {
            let mut v = base();
            v.push(("OTTER_ALLOWED_HOSTS", bad));
            let err = Config::from_map(&vars(&v)).unwrap_err().to_string();
            assert!(err.contains("OTTER_ALLOWED_HOSTS"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_demo_is_off_unless_asked_for() {
        let config = Config::from_map(&vars(&base())).expect("valid");
        assert!(!config.demo);
        assert_eq!(config.demo_model_url, "http://127.0.0.1:8090/v1");

        let mut v = base();
        v.extend([
            ("OTTER_DEMO", "true"),
            ("OTTER_DEMO_MODEL_URL", "http://otter-demo-model:8090/v1/"),
        ]);
        let config = Config::from_map(&vars(&v)).expect("valid");
        assert!(config.demo);
        assert_eq!(config.demo_model_url, "http://otter-demo-model:8090/v1");
        // Set but empty counts as unset, like every other variable.
        let mut v = base();
        v.push(("OTTER_DEMO", ""));
        assert!(!Config::from_map(&vars(&v)).expect("valid").demo);
    }

    #[test]
    fn a_bad_demo_setting_stops_start_up_naming_the_variable() {
        for (var, value) in [
            ("OTTER_DEMO", "maybe"),
            ("OTTER_DEMO", "enabled"),
            ("OTTER_DEMO_MODEL_URL", "otter-demo-model:8090"),
            ("OTTER_DEMO_MODEL_URL", "ftp://h/v1"),
            ("OTTER_DEMO_MODEL_URL", "http://user:pw@h/v1"),
        ] {
            let mut v = base();
            v.push((var, value));
            let err = Config::from_map(&vars(&v)).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { var: named, .. } if *named == var),
                "{var}={value}: {err}"
            );
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn missing_database_url_names_the_variable() {
        let err = Config::from_map(&vars(&[("OTTER_REDIS_URL", "redis://r")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("OTTER_DATABASE_URL"));
        assert!(err.to_string().contains("OTTER_DATABASE_URL"));
    }

    #[test]
    fn unprefixed_urls_are_fallbacks() {
        let config = Config::from_map(&vars(&[
            ("DATABASE_URL", "postgres://a@b/c"),
            ("REDIS_URL", "redis://r"),
        ]))
        .expect("valid");
        assert_eq!(config.database_url.expose(), "postgres://a@b/c");
    }

    #[test]
    fn malformed_values_name_the_variable_and_hide_secrets() {
        let mut v = base();
        v.push(("OTTER_MAX_ATTEMPTS", "many"));
        let err = Config::from_map(&vars(&v)).unwrap_err().to_string();
        assert!(err.contains("OTTER_MAX_ATTEMPTS"), "{err}");

        let err = Config::from_map(&vars(&[
            ("OTTER_DATABASE_URL", "mysql://u:hunter2@h/d"),
            ("OTTER_REDIS_URL", "redis://r"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("OTTER_DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        for (var, value) in [
            ("OTTER_LISTEN_ADDR", "nope"),
            ("OTTER_LEASE_TTL", "soon"),
            ("OTTER_VIBE_EXTRA_ENV", "NOEQUALS"),
            ("OTTER_ALLOWED_ROOTS", "relative/path"),
            ("OTTER_RUNTIME_ENABLED", "maybe"),
            ("OTTER_WORKER_CONCURRENCY", "0"),
            ("OTTER_CGROUP_ROOT", "relative/otter"),
            ("OTTER_HEADER_READ_TIMEOUT", "0"),
            ("OTTER_IDLE_TIMEOUT", "soon"),
            ("OTTER_MAX_CONNECTIONS", "0"),
            ("OTTER_MAX_PENDING_CONNECTIONS", "many"),
            ("OTTER_COMMAND_MAX_OUTPUT_BYTES", "10"),
            ("OTTER_COMMAND_MAX_OUTPUT_LINES", "lots"),
            ("OTTER_EVENT_PAGE_MAX_BYTES", "0"),
        ] {
            let mut v = base();
            v.push((var, value));
            let err = Config::from_map(&vars(&v)).unwrap_err().to_string();
            assert!(err.contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn default_limits_and_allowed_models_parse_and_a_bad_one_is_named() {
        let config = Config::from_map(&vars(&base())).expect("valid");
        assert_eq!(config.default_limits, crate::model::JobLimits::default());
        assert!(config.vibe_models.is_empty());
        let mut v = base();
        v.extend([
            ("OTTER_DEFAULT_MAX_TURNS", "25"),
            ("OTTER_DEFAULT_MAX_PRICE_USD", "0.5"),
            ("OTTER_DEFAULT_MAX_TOKENS", "200000"),
            ("OTTER_DEFAULT_TIME_LIMIT_SECS", "900"),
            ("OTTER_VIBE_MODELS", "devstral-small, mistral-medium-3.5,"),
        ]);
        let config = Config::from_map(&vars(&v)).expect("valid");
        assert_eq!(
            config.default_limits,
            crate::model::JobLimits {
                max_turns: Some(25),
                max_price_usd: Some(0.5),
                max_tokens: Some(200_000),
                time_limit_secs: Some(900),
                silence_secs: None,
            }
        );
        assert_eq!(config.vibe_models, ["devstral-small", "mistral-medium-3.5"]);
        for (var, value) in [
            ("OTTER_DEFAULT_MAX_TURNS", "0"),
            ("OTTER_DEFAULT_MAX_TOKENS", "-5"),
            ("OTTER_DEFAULT_TIME_LIMIT_SECS", "ten"),
            ("OTTER_DEFAULT_MAX_PRICE_USD", "0"),
            ("OTTER_DEFAULT_MAX_PRICE_USD", "inf"),
        ] {
            let mut v = base();
            v.push((var, value));
            let err = Config::from_map(&vars(&v)).expect_err(value);
            assert!(
                matches!(&err, ConfigError::Invalid { var: named, .. } if *named == var),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn lists_and_durations_parse() {
        let mut v = base();
        v.extend([
            ("OTTER_VIBE_EXTRA_ENV", "A=1, B=two=2"),
            ("OTTER_ALLOWED_ROOTS", "/srv/a:/srv/b"),
            ("OTTER_LEASE_TTL", "1500ms"),
            ("OTTER_JOB_TIMEOUT", "5m"),
            ("OTTER_API_TOKENS", "t1, t2"),
        ]);
        let config = Config::from_map(&vars(&v)).expect("valid");
        assert_eq!(
            config.vibe_extra_env,
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two=2".to_owned())
            ]
        );
        assert_eq!(config.allowed_roots.len(), 2);
        assert_eq!(config.lease_ttl, Duration::from_millis(1500));
        assert_eq!(config.job_timeout, Some(Duration::from_secs(300)));
        assert_eq!(config.api_tokens.len(), 2);
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut v = base();
        v.push(("MISTRAL_API_KEY", "sk-very-secret"));
        v.push(("OTTER_API_TOKENS", "token-secret"));
        let config = Config::from_map(&vars(&v)).expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-very-secret"));
        assert!(!debug.contains("token-secret"));
        assert!(!debug.contains("secret@db"));
    }
}
