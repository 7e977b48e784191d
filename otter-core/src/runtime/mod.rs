//! Runtime containers (DESIGN.md §7): the app vibe generated in a workspace runs in a sibling
//! container that Otter builds, starts, stops, reads and opens shells in through the Docker
//! API (bollard), so that a frontend can show it live.
//!
//! Per workspace there is at most one image, `<OTTER_RUNTIME_IMAGE_PREFIX>-<workspace id>`
//! (lowercase), built from the workspace's Dockerfile (see [`context`]), and one container,
//! `<OTTER_RUNTIME_CONTAINER_PREFIX>-<workspace id>`, on the network `OTTER_RUNTIME_NETWORK`
//! (created when missing). Both carry the labels `otter.managed=true` and
//! `otter.workspace=<id>`, which is how [`Runtime::cleanup_orphans`] finds the containers and
//! images of workspaces that no longer exist.
//!
//! Ports: every port the image `EXPOSE`s (or [`DEFAULT_APP_PORT`] when it exposes none, or the
//! port the caller names) is published to an ephemeral host port. The host address follows
//! `OTTER_RUNTIME_DEFAULT_HOST`: a loopback host (`localhost`, `127.0.0.1`, `::1`) publishes on
//! 127.0.0.1 only, so a generated app is not exposed to the network by default; any other host
//! means previews are opened from other machines, and ports are published on 0.0.0.0. The
//! runtime URL is `OTTER_RUNTIME_DEFAULT_HOST:<host port>` of the app's main port.
//!
//! Every operation on one workspace's container is serialised by a per-workspace lock in this
//! process, and each is idempotent: `start` on a running container does nothing, `stop` on a
//! stopped one does nothing. The container runs with an init process (`--init`), so the app gets
//! the stop signal even when it does not handle signals as PID 1.
//!
//! The engine is reached lazily: Otter starts when Docker is down, and each call that needs it
//! fails with [`RuntimeError::Unreachable`] until it answers. The API version is negotiated
//! with the engine (bollard speaks a newer one than many engines).

mod build_log;
pub mod context;
mod exec;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    NetworkCreateRequest, PortBinding,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, ListContainersOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, RemoveImageOptions, RestartContainerOptions,
    StopContainerOptions,
};
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

pub use build_log::{BUILD_LOG_TAIL, RUNTIME_STREAM};
pub use exec::{ExecSession, ShellState, TermSize};

use crate::config::Config;
use crate::db::{DbError, jobs, workspaces};
use crate::model::{JobId, Workspace, WorkspaceId};
use build_log::{BuildLog, LineSplitter};

/// Label that marks everything Otter's runtime made.
pub const LABEL_MANAGED: &str = "otter.managed";
/// Label naming the workspace a container or image belongs to.
pub const LABEL_WORKSPACE: &str = "otter.workspace";
/// Label naming the container port the runtime URL points at.
pub const LABEL_PORT: &str = "otter.port";

/// Port published when the image exposes none and the caller names none.
pub const DEFAULT_APP_PORT: u16 = 8080;

/// Ports preferred as the app's main port when an image exposes several, in this order.
const WEB_PORTS: &[u16] = &[80, 8080, 3000, 5173, 8000, 5000, 4173, 8888, 443];

/// Seconds a stopping app gets between SIGTERM and SIGKILL.
const STOP_GRACE_SECS: i32 = 10;

/// Seconds the engine gets to answer one request (builds stream past this).
const DOCKER_TIMEOUT_SECS: u64 = 120;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `OTTER_RUNTIME_ENABLED` is false.
    #[error("the runtime is disabled (OTTER_RUNTIME_ENABLED=false)")]
    Disabled,
    /// The Docker engine does not answer.
    #[error("the Docker engine at {socket} is unreachable: {reason}")]
    Unreachable {
        /// `OTTER_RUNTIME_DOCKER_SOCKET`.
        socket: String,
        /// What failed.
        reason: String,
    },
    /// The workspace has no Dockerfile; the message says where it was looked for.
    #[error("{0}")]
    NoDockerfile(String),
    /// The build context could not be read.
    #[error("the build context could not be prepared: {0}")]
    Context(String),
    /// The build context is too large to send.
    #[error(
        "the build context {dir} is larger than {limit_mib} MiB: add a .dockerignore that leaves out what the image does not need"
    )]
    ContextTooLarge {
        /// The folder.
        dir: String,
        /// The cap.
        limit_mib: u64,
    },
    /// The image build failed; `message` is the engine's error.
    #[error("the image build failed: {message}")]
    BuildFailed {
        /// The engine's error line.
        message: String,
        /// The last lines of the build log.
        log_tail: Vec<String>,
    },
    /// The container was created but the engine could not start it.
    #[error("the container could not be started: {0}")]
    StartFailed(String),
    /// The workspace has no runtime container.
    #[error("workspace {0} has no runtime container: start it first")]
    NoContainer(WorkspaceId),
    /// The workspace's container exists but does not run.
    #[error("the runtime container of workspace {0} is not running: start it first")]
    NotRunning(WorkspaceId),
    /// A parameter is not acceptable; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The engine answered with an unexpected error.
    #[error("the Docker engine failed: {0}")]
    Docker(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The runtime's settings, from `OTTER_RUNTIME_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// `OTTER_RUNTIME_DOCKER_SOCKET`: `unix:///path`, a bare path, or `tcp://host:port`.
    pub docker_socket: String,
    /// `OTTER_RUNTIME_NETWORK`.
    pub network: String,
    /// `OTTER_RUNTIME_CONTAINER_PREFIX`.
    pub container_prefix: String,
    /// `OTTER_RUNTIME_IMAGE_PREFIX`.
    pub image_prefix: String,
    /// `OTTER_RUNTIME_DEFAULT_HOST`, without a trailing `/`.
    pub default_host: String,
    /// `OTTER_RUNTIME_MAX_LOG_LINES`.
    pub max_log_lines: usize,
}

impl RuntimeSettings {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            docker_socket: config.runtime_docker_socket.clone(),
            network: config.runtime_network.clone(),
            container_prefix: config.runtime_container_prefix.clone(),
            image_prefix: config.runtime_image_prefix.clone(),
            default_host: config.runtime_default_host.trim_end_matches('/').to_owned(),
            max_log_lines: config.runtime_max_log_lines,
        }
    }

    /// The host address ports are published on (see the module docs).
    pub fn bind_ip(&self) -> &'static str {
        let host = url::Url::parse(&self.default_host)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback { "127.0.0.1" } else { "0.0.0.0" }
    }
}

/// A runtime container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    /// No container.
    None,
    /// The image is being built (a container may exist from before).
    Building,
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Stopped or exited on its own.
    Exited,
    /// Being removed.
    Removing,
    /// Failed in the engine.
    Dead,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    /// The port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host address it is published on.
    pub host_ip: String,
    /// The host port.
    pub host_port: u16,
}

/// What the runtime knows of one workspace's container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeInfo {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The container's state.
    pub status: RuntimeStatus,
    /// The container's name (whether or not it exists).
    pub container_name: String,
    /// The container's id, when it exists.
    pub container_id: Option<String>,
    /// The image's name.
    pub image: String,
    /// The id of the image the container runs (or of the built image, without a container).
    pub image_id: Option<String>,
    /// The network the container is attached to.
    pub network: String,
    /// Published ports (empty unless the container runs).
    pub ports: Vec<PublishedPort>,
    /// `OTTER_RUNTIME_DEFAULT_HOST:<host port>` of the app's main port, while it runs.
    pub runtime_url: Option<String>,
    /// When the container last started.
    pub started_at: Option<String>,
    /// When it last stopped.
    pub finished_at: Option<String>,
    /// The app's exit code, once it exited.
    pub exit_code: Option<i64>,
    /// The engine's error about the container, if any.
    pub error: Option<String>,
}

/// What `start`, `restart` or `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeAction {
    /// The container was running already: nothing was done.
    AlreadyRunning,
    /// A new container was created and started.
    Created,
    /// The image changed (or the port): the old container was replaced.
    Recreated,
    /// The existing, stopped container was started.
    Started,
    /// The running container was restarted.
    Restarted,
    /// The container was stopped.
    Stopped,
    /// The container was not running: nothing was done.
    AlreadyStopped,
}

/// A finished image build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildSummary {
    /// The image's name.
    pub image: String,
    /// Its id.
    pub image_id: String,
    /// The folder that was built (holding the Dockerfile).
    pub context_dir: String,
    /// Lines of build output.
    pub log_lines: usize,
    /// The last [`BUILD_LOG_TAIL`] lines.
    pub log_tail: Vec<String>,
    /// The job whose events hold the build log (the workspace's newest), if it has one.
    pub job_id: Option<JobId>,
    /// How long the build took.
    pub duration_ms: u64,
}

/// The result of `start`, `restart` or `stop`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeOutcome {
    /// What was done.
    pub action: RuntimeAction,
    /// The state afterwards.
    pub runtime: RuntimeInfo,
    /// The build, when one ran.
    pub build: Option<BuildSummary>,
}

/// Options of `start` and `restart`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The app's main port inside the container (published even when not exposed).
    pub port: Option<u16>,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The line, without its line end.
    pub text: String,
}

/// What was removed for one workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Whether a container was removed.
    pub container: bool,
    /// Whether an image was removed.
    pub image: bool,
}

/// What [`Runtime::cleanup_orphans`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Names of the containers removed.
    pub containers_removed: Vec<String>,
    /// Names of the images removed.
    pub images_removed: Vec<String>,
    /// Managed containers kept (their workspace exists).
    pub containers_kept: usize,
}

/// Manages the runtime containers of every workspace through one Docker engine.
#[derive(Debug)]
pub struct Runtime {
    settings: RuntimeSettings,
    docker: OnceCell<Docker>,
    /// One lock per workspace, so that two calls never race on one container.
    locks: StdMutex<HashMap<WorkspaceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Workspaces whose image is being built.
    building: StdMutex<HashSet<WorkspaceId>>,
    /// Serialises network creation (the engine allows duplicate names).
    network_lock: tokio::sync::Mutex<()>,
}

impl Runtime {
    /// A runtime for `settings`. Does not contact the engine.
    pub fn new(settings: RuntimeSettings) -> Self {
        Self {
            settings,
            docker: OnceCell::new(),
            locks: StdMutex::new(HashMap::new()),
            building: StdMutex::new(HashSet::new()),
            network_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// A runtime for `config`'s `OTTER_RUNTIME_*` settings.
    pub fn from_config(config: &Config) -> Self {
        Self::new(RuntimeSettings::from_config(config))
    }

    /// The settings.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// The container name of a workspace.
    pub fn container_name(&self, id: WorkspaceId) -> String {
        format!("{}-{id}", self.settings.container_prefix)
    }

    /// The image name of a workspace.
    pub fn image_name(&self, id: WorkspaceId) -> String {
        format!("{}-{id}", self.settings.image_prefix).to_lowercase()
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        docker.ping().await.map_err(|e| self.classify(e))?;
        Ok(())
    }

    async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async {
                let socket = self.settings.docker_socket.as_str();
                let docker = if socket.starts_with("tcp://") || socket.starts_with("http://") {
                    Docker::connect_with_http(
                        socket,
                        DOCKER_TIMEOUT_SECS,
                        bollard::API_DEFAULT_VERSION,
                    )
                } else if socket.starts_with("unix://") || socket.starts_with('/') {
                    Docker::connect_with_unix(
                        socket,
                        DOCKER_TIMEOUT_SECS,
                        bollard::API_DEFAULT_VERSION,
                    )
                } else {
                    return Err(RuntimeError::Unreachable {
                        socket: socket.to_owned(),
                        reason:
                            "OTTER_RUNTIME_DOCKER_SOCKET must be unix:///path or tcp://host:port"
                                .to_owned(),
                    });
                };
                let docker = docker.map_err(|e| self.unreachable(&e))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| self.unreachable(&e))
            })
            .await
    }

    fn unreachable(&self, e: &DockerError) -> RuntimeError {
        RuntimeError::Unreachable {
            socket: self.settings.docker_socket.clone(),
            reason: e.to_string(),
        }
    }

    /// Sorts an engine error: connection failures are [`RuntimeError::Unreachable`], the rest
    /// [`RuntimeError::Docker`].
    fn classify(&self, e: DockerError) -> RuntimeError {
        match e {
            DockerError::DockerResponseServerError { message, .. } => RuntimeError::Docker(message),
            DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_) => self.unreachable(&e),
            other => RuntimeError::Docker(other.to_string()),
        }
    }

    async fn lock(&self, id: WorkspaceId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Forget the locks nobody holds or waits for.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(id).or_default().clone()
        };
        lock.lock_owned().await
    }

    fn is_building(&self, id: WorkspaceId) -> bool {
        self.building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// The state of a workspace's container.
    pub async fn status(&self, id: WorkspaceId) -> Result<RuntimeInfo, RuntimeError> {
        let docker = self.docker().await?;
        let container = self.inspect(docker, id).await?;
        let mut info = match &container {
            Some(c) => self.info_of(id, c),
            None => {
                let mut info = self.empty_info(id);
                info.image_id = self.image_id(docker, &info.image).await?;
                info
            }
        };
        if self.is_building(id) {
            info.status = RuntimeStatus::Building;
        }
        Ok(info)
    }

    async fn inspect(
        &self,
        docker: &Docker,
        id: WorkspaceId,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match docker
            .inspect_container(&self.container_name(id), None)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn image_id(&self, docker: &Docker, image: &str) -> Result<Option<String>, RuntimeError> {
        match docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn empty_info(&self, id: WorkspaceId) -> RuntimeInfo {
        RuntimeInfo {
            workspace_id: id,
            status: RuntimeStatus::None,
            container_name: self.container_name(id),
            container_id: None,
            image: self.image_name(id),
            image_id: None,
            network: self.settings.network.clone(),
            ports: Vec::new(),
            runtime_url: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
        }
    }

    fn info_of(&self, id: WorkspaceId, c: &ContainerInspectResponse) -> RuntimeInfo {
        let mut info = self.empty_info(id);
        info.container_id = c.id.clone();
        info.image_id = c.image.clone();
        if let Some(state) = &c.state {
            info.status = match state.status {
                Some(ContainerStateStatusEnum::CREATED) => RuntimeStatus::Created,
                Some(ContainerStateStatusEnum::RUNNING) => RuntimeStatus::Running,
                Some(ContainerStateStatusEnum::PAUSED) => RuntimeStatus::Paused,
                Some(ContainerStateStatusEnum::RESTARTING) => RuntimeStatus::Restarting,
                Some(ContainerStateStatusEnum::REMOVING) => RuntimeStatus::Removing,
                Some(ContainerStateStatusEnum::DEAD) => RuntimeStatus::Dead,
                Some(
                    ContainerStateStatusEnum::EXITED
                    | ContainerStateStatusEnum::STOPPING
                    | ContainerStateStatusEnum::EMPTY,
                )
                | None => RuntimeStatus::Exited,
            };
            info.started_at = state.started_at.clone().filter(|t| is_real_time(t));
            info.finished_at = state.finished_at.clone().filter(|t| is_real_time(t));
            if info.status == RuntimeStatus::Exited || info.status == RuntimeStatus::Dead {
                info.exit_code = state.exit_code;
            }
            info.error = state.error.clone().filter(|e| !e.is_empty());
        }
        info.ports = published_ports(c);
        let main_port = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.as_ref())
            .and_then(|labels| labels.get(LABEL_PORT))
            .and_then(|p| p.parse::<u16>().ok());
        if info.status == RuntimeStatus::Running {
            let main = info
                .ports
                .iter()
                .filter(|p| p.protocol == "tcp")
                .find(|p| Some(p.container_port) == main_port)
                .or_else(|| info.ports.iter().find(|p| p.protocol == "tcp"));
            info.runtime_url =
                main.map(|p| format!("{}:{}", self.settings.default_host, p.host_port));
        }
        info
    }

    /// Builds the workspace's image and runs its container (see the module docs): nothing is
    /// done when it runs already; a stopped container is started again, or replaced when the
    /// image has changed since.
    pub async fn start(
        &self,
        pool: &PgPool,
        workspace: &Workspace,
        options: StartOptions,
    ) -> Result<RuntimeOutcome, RuntimeError> {
        self.up(pool, workspace, options, false).await
    }

    /// Rebuilds the workspace's image and restarts its container: replaced when the image (or
    /// the port) has changed, restarted otherwise; created when there is none.
    pub async fn restart(
        &self,
        pool: &PgPool,
        workspace: &Workspace,
        options: StartOptions,
    ) -> Result<RuntimeOutcome, RuntimeError> {
        self.up(pool, workspace, options, true).await
    }

    async fn up(
        &self,
        pool: &PgPool,
        workspace: &Workspace,
        options: StartOptions,
        restart: bool,
    ) -> Result<RuntimeOutcome, RuntimeError> {
        if options.port == Some(0) {
            return Err(RuntimeError::Invalid(
                "port must be between 1 and 65535".to_owned(),
            ));
        }
        let id = workspace.id;
        let _guard = self.lock(id).await;
        let docker = self.docker().await?;
        let existing = self.inspect(docker, id).await?;
        let running = existing
            .as_ref()
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.running)
            .unwrap_or(false);
        if running && !restart {
            let info = self.status(id).await?;
            return Ok(RuntimeOutcome {
                action: RuntimeAction::AlreadyRunning,
                runtime: info,
                build: None,
            });
        }
        let build = self.build(pool, docker, workspace).await?;
        self.ensure_network(docker).await?;
        let name = self.container_name(id);
        let action = match &existing {
            Some(c)
                if c.image.as_deref() == Some(build.image_id.as_str())
                    && options
                        .port
                        .is_none_or(|p| container_port_label(c) == Some(p)) =>
            {
                if running {
                    docker
                        .restart_container(
                            &name,
                            Some(RestartContainerOptions {
                                t: Some(STOP_GRACE_SECS),
                                ..Default::default()
                            }),
                        )
                        .await
                        .map_err(|e| self.start_error(e))?;
                    RuntimeAction::Restarted
                } else {
                    docker
                        .start_container(&name, None)
                        .await
                        .map_err(|e| self.start_error(e))?;
                    RuntimeAction::Started
                }
            }
            Some(_) => {
                self.remove_container(docker, id).await?;
                self.create_and_start(docker, workspace, &build, options)
                    .await?;
                RuntimeAction::Recreated
            }
            None => {
                self.create_and_start(docker, workspace, &build, options)
                    .await?;
                RuntimeAction::Created
            }
        };
        let info = self.status(id).await?;
        tracing::info!(workspace_id = %id, action = ?action, status = ?info.status, url = ?info.runtime_url, "runtime container up");
        Ok(RuntimeOutcome {
            action,
            runtime: info,
            build: Some(build),
        })
    }

    fn start_error(&self, e: DockerError) -> RuntimeError {
        match self.classify(e) {
            RuntimeError::Docker(message) => RuntimeError::StartFailed(message),
            other => other,
        }
    }

    /// Builds the image from the workspace's Dockerfile, streaming the log (see [`build_log`]).
    async fn build(
        &self,
        pool: &PgPool,
        docker: &Docker,
        workspace: &Workspace,
    ) -> Result<BuildSummary, RuntimeError> {
        let started = Instant::now();
        let _building = BuildingMark::new(&self.building, workspace.id);
        let root = PathBuf::from(&workspace.path);
        let (context_dir, tarball) = tokio::task::spawn_blocking(move || {
            let dir = context::find_context_dir(&root)?;
            let tarball = context::tar_context(&dir)?;
            Ok::<_, RuntimeError>((dir, tarball))
        })
        .await
        .map_err(|e| RuntimeError::Context(format!("the context task failed: {e}")))??;
        let context_dir = context_dir.display().to_string();
        let image = self.image_name(workspace.id);

        let job_id = jobs::latest_id_for_workspace(pool, workspace.id).await?;
        let (sink, writer) = match job_id {
            Some(job_id) => {
                let (tx, rx) = mpsc::channel(256);
                let writer = tokio::spawn(build_log::write_events(pool.clone(), job_id, rx));
                (Some(tx), Some(writer))
            }
            None => (None, None),
        };
        let mut log = BuildLog::new(sink, self.settings.max_log_lines);
        log.event(build_log::started_event(&image, &context_dir))
            .await;
        tracing::info!(workspace_id = %workspace.id, %image, %context_dir, bytes = tarball.len(), "building runtime image");

        let options = BuildImageOptions {
            t: Some(image.clone()),
            rm: true,
            forcerm: true,
            labels: Some(self.labels(workspace.id)),
            ..Default::default()
        };
        let mut stream = docker.build_image(
            options,
            None,
            Some(bollard::body_full(bytes::Bytes::from(tarball))),
        );
        let mut splitter = LineSplitter::default();
        let mut image_id = None;
        let mut failure: Option<RuntimeError> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(id) = info.aux.and_then(|aux| aux.id) {
                        image_id = Some(id);
                    }
                    if let Some(text) = info.stream {
                        for line in splitter.push(&text) {
                            log.line(line).await;
                        }
                    }
                    if let Some(status) = info.status {
                        log.line(status).await;
                    }
                }
                Err(DockerError::DockerStreamError { error }) => {
                    failure = Some(RuntimeError::BuildFailed {
                        message: error.trim().to_owned(),
                        log_tail: Vec::new(),
                    });
                    break;
                }
                Err(e) => {
                    failure = Some(match self.classify(e) {
                        RuntimeError::Docker(message) => RuntimeError::BuildFailed {
                            message: message.trim().to_owned(),
                            log_tail: Vec::new(),
                        },
                        other => other,
                    });
                    break;
                }
            }
        }
        drop(stream);
        if let Some(rest) = splitter.finish() {
            log.line(rest).await;
        }
        if let Some(RuntimeError::BuildFailed { message, .. }) = &failure {
            log.line(format!("[otter] build failed: {message}")).await;
        }
        if failure.is_none() && image_id.is_none() {
            image_id = self.image_id(docker, &image).await?;
            if image_id.is_none() {
                failure = Some(RuntimeError::BuildFailed {
                    message: log
                        .last_line()
                        .unwrap_or("the engine reported no image")
                        .to_owned(),
                    log_tail: Vec::new(),
                });
            }
        }
        let error_text = failure.as_ref().map(ToString::to_string);
        log.finish(build_log::finished_event(
            &image,
            image_id.as_deref(),
            error_text.as_deref(),
            log.total(),
        ))
        .await;
        if let Some(writer) = writer {
            // The events are in PostgreSQL before the answer leaves.
            let _ = writer.await;
        }
        match failure {
            Some(RuntimeError::BuildFailed { message, .. }) => {
                tracing::info!(workspace_id = %workspace.id, %image, error = %message, "runtime image build failed");
                Err(RuntimeError::BuildFailed {
                    message,
                    log_tail: log.tail(),
                })
            }
            Some(other) => Err(other),
            None => Ok(BuildSummary {
                image,
                image_id: image_id.unwrap_or_default(),
                context_dir,
                log_lines: log.total(),
                log_tail: log.tail(),
                job_id,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    fn labels(&self, id: WorkspaceId) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKSPACE.to_owned(), id.to_string()),
        ])
    }

    async fn ensure_network(&self, docker: &Docker) -> Result<(), RuntimeError> {
        let _guard = self.network_lock.lock().await;
        let name = &self.settings.network;
        match docker.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(self.classify(e)),
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(HashMap::from([(
                LABEL_MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %name, "runtime network created");
                Ok(())
            }
            // Created meanwhile by another Otter process.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn create_and_start(
        &self,
        docker: &Docker,
        workspace: &Workspace,
        build: &BuildSummary,
        options: StartOptions,
    ) -> Result<(), RuntimeError> {
        let id = workspace.id;
        let image = docker
            .inspect_image(&build.image_id)
            .await
            .map_err(|e| self.classify(e))?;
        let mut exposed: Vec<String> = image
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default();
        if let Some(port) = options.port {
            let key = format!("{port}/tcp");
            if !exposed.contains(&key) {
                exposed.push(key);
            }
        }
        if exposed.is_empty() {
            exposed.push(format!("{DEFAULT_APP_PORT}/tcp"));
        }
        exposed.sort();
        let main_port = options.port.unwrap_or_else(|| main_port(&exposed));
        let bind_ip = self.settings.bind_ip();
        let port_bindings = exposed
            .iter()
            .map(|key| {
                let binding = PortBinding {
                    host_ip: Some(bind_ip.to_owned()),
                    host_port: Some(String::new()),
                };
                (key.clone(), Some(vec![binding]))
            })
            .collect();
        let mut labels = self.labels(id);
        labels.insert(LABEL_PORT.to_owned(), main_port.to_string());
        let body = ContainerCreateBody {
            image: Some(build.image.clone()),
            exposed_ports: Some(exposed),
            labels: Some(labels),
            host_config: Some(HostConfig {
                init: Some(true),
                network_mode: Some(self.settings.network.clone()),
                port_bindings: Some(port_bindings),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = self.container_name(id);
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| self.start_error(e))?;
        docker
            .start_container(&name, None)
            .await
            .map_err(|e| self.start_error(e))?;
        Ok(())
    }

    /// Stops the workspace's container (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(&self, id: WorkspaceId) -> Result<RuntimeOutcome, RuntimeError> {
        let _guard = self.lock(id).await;
        let docker = self.docker().await?;
        // Nothing to stop is already stopped: stop is idempotent even before the first start.
        let running = self
            .inspect(docker, id)
            .await?
            .and_then(|container| container.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        let action = if running {
            match docker
                .stop_container(
                    &self.container_name(id),
                    Some(StopContainerOptions {
                        t: Some(STOP_GRACE_SECS),
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => RuntimeAction::Stopped,
                // Stopped meanwhile.
                Err(e) if is_status(&e, 304) => RuntimeAction::AlreadyStopped,
                Err(e) => return Err(self.classify(e)),
            }
        } else {
            RuntimeAction::AlreadyStopped
        };
        let info = self.status(id).await?;
        tracing::info!(workspace_id = %id, action = ?action, "runtime container stopped");
        Ok(RuntimeOutcome {
            action,
            runtime: info,
            build: None,
        })
    }

    /// The last `tail` lines of the container's log (at most `OTTER_RUNTIME_MAX_LOG_LINES`),
    /// with the number of lines asked for after the cap.
    pub async fn logs(
        &self,
        id: WorkspaceId,
        tail: usize,
    ) -> Result<(Vec<LogLine>, usize), RuntimeError> {
        let tail = tail.clamp(1, self.settings.max_log_lines);
        let docker = self.docker().await?;
        if self.inspect(docker, id).await?.is_none() {
            return Err(RuntimeError::NoContainer(id));
        }
        let mut stream = docker.logs(
            &self.container_name(id),
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: tail.to_string(),
                ..Default::default()
            }),
        );
        let mut out = LogCollector::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(output) => out.push(output),
                Err(e) if is_status(&e, 404) => return Err(RuntimeError::NoContainer(id)),
                Err(e) => return Err(self.classify(e)),
            }
        }
        let mut lines = out.finish();
        if lines.len() > tail {
            lines.drain(..lines.len() - tail);
        }
        Ok((lines, tail))
    }

    /// Removes the workspace's container and image (when they exist).
    pub async fn remove_workspace(&self, id: WorkspaceId) -> Result<Removed, RuntimeError> {
        let _guard = self.lock(id).await;
        let docker = self.docker().await?;
        let container = self.remove_container(docker, id).await?;
        let image = self.remove_image(docker, &self.image_name(id)).await?;
        if container || image {
            tracing::info!(workspace_id = %id, container, image, "runtime container removed");
        }
        Ok(Removed { container, image })
    }

    async fn remove_container(
        &self,
        docker: &Docker,
        id: WorkspaceId,
    ) -> Result<bool, RuntimeError> {
        match docker
            .remove_container(
                &self.container_name(id),
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn remove_image(&self, docker: &Docker, image: &str) -> Result<bool, RuntimeError> {
        match docker
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            // Still used by a container this runtime does not manage: keep it.
            Err(e) if is_status(&e, 409) => {
                tracing::warn!(%image, error = %e, "runtime image kept: still in use");
                Ok(false)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Removes the containers and images labelled `otter.managed=true` (named with this
    /// runtime's prefixes, so that other Otter installations on the same engine are left
    /// alone) whose workspace no longer exists in `pool`.
    pub async fn cleanup_orphans(&self, pool: &PgPool) -> Result<CleanupReport, RuntimeError> {
        let docker = self.docker().await?;
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_MANAGED}=true")])]);
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.classify(e))?;
        // Only names of exactly this runtime's shape, `<prefix>-<uuid>`: the containers of an
        // installation whose prefix merely starts with ours are not ours.
        let container_prefix = format!("/{}-", self.settings.container_prefix);
        let ours: Vec<(String, Option<WorkspaceId>)> = containers
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.into_iter().find(|n| {
                    n.strip_prefix(&container_prefix)
                        .is_some_and(|rest| rest.parse::<WorkspaceId>().is_ok())
                })?;
                let workspace = c
                    .labels
                    .and_then(|l| l.get(LABEL_WORKSPACE).and_then(|v| v.parse().ok()));
                Some((name.trim_start_matches('/').to_owned(), workspace))
            })
            .collect();

        let images = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.classify(e))?;
        let image_prefix = format!("{}-", self.settings.image_prefix.to_lowercase());
        let our_images: Vec<(String, Option<WorkspaceId>)> = images
            .into_iter()
            .flat_map(|i| {
                let workspace = i.labels.get(LABEL_WORKSPACE).and_then(|v| v.parse().ok());
                i.repo_tags
                    .into_iter()
                    .filter(|t| {
                        t.strip_prefix(&image_prefix)
                            .map(|rest| rest.split_once(':').map_or(rest, |(name, _)| name))
                            .is_some_and(|rest| rest.parse::<WorkspaceId>().is_ok())
                    })
                    .map(move |t| (t, workspace))
            })
            .collect();

        let ids: Vec<WorkspaceId> = ours
            .iter()
            .filter_map(|(_, w)| *w)
            .chain(our_images.iter().filter_map(|(_, w)| *w))
            .collect();
        let existing: HashSet<WorkspaceId> = workspaces::existing_ids(pool, &ids)
            .await?
            .into_iter()
            .collect();
        let orphan = |w: &Option<WorkspaceId>| w.is_none_or(|w| !existing.contains(&w));

        let mut report = CleanupReport::default();
        for (name, workspace) in &ours {
            if !orphan(workspace) {
                report.containers_kept += 1;
                continue;
            }
            match docker
                .remove_container(
                    name,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => report.containers_removed.push(name.clone()),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(self.classify(e)),
            }
        }
        for (tag, workspace) in &our_images {
            if orphan(workspace) && self.remove_image(docker, tag).await? {
                report.images_removed.push(tag.clone());
            }
        }
        if !report.containers_removed.is_empty() || !report.images_removed.is_empty() {
            tracing::info!(
                containers = ?report.containers_removed,
                images = ?report.images_removed,
                "orphaned runtime containers removed"
            );
        }
        Ok(report)
    }

    /// Runs [`Runtime::cleanup_orphans`] every `interval` (the first time after one interval)
    /// until `shutdown`, so a long-running machine does not fill up with the containers of
    /// deleted workspaces.
    pub fn spawn_janitor(
        self: Arc<Self>,
        pool: PgPool,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                if let Err(e) = self.cleanup_orphans(&pool).await {
                    tracing::warn!(error = %e, "runtime cleanup failed; will retry");
                }
            }
        })
    }

    /// Opens an interactive shell (docker exec with a TTY) in the workspace's running container.
    pub async fn open_shell(
        &self,
        id: WorkspaceId,
        command: Vec<String>,
        size: Option<TermSize>,
    ) -> Result<ExecSession, RuntimeError> {
        let docker = self.docker().await?;
        let Some(container) = self.inspect(docker, id).await? else {
            return Err(RuntimeError::NoContainer(id));
        };
        if !container
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false)
        {
            return Err(RuntimeError::NotRunning(id));
        }
        exec::open(docker, &self.container_name(id), command, size)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Resizes a shell's terminal.
    pub async fn resize_shell(&self, exec_id: &str, size: TermSize) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        exec::resize(docker, exec_id, size)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Ends a shell that still runs (the engine keeps an exec running when its connection
    /// closes): SIGHUP, then SIGKILL after 2 s. A shell whose PID is unknown cannot be ended.
    pub async fn hang_up_shell(
        &self,
        id: WorkspaceId,
        exec_id: &str,
        pid: Option<u32>,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let Some(pid) = pid else {
            if exec::state(docker, exec_id)
                .await
                .map_err(|e| self.classify(e))?
                .running
            {
                tracing::warn!(workspace_id = %id, %exec_id, "shell left running: its PID is unknown");
            }
            return Ok(());
        };
        match exec::hang_up(docker, &self.container_name(id), exec_id, pid).await {
            Ok(()) => Ok(()),
            // The container is gone or stopped: so is the shell.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Whether a shell's process still runs, and its exit code once it ended.
    pub async fn shell_state(&self, exec_id: &str) -> Result<ShellState, RuntimeError> {
        let docker = self.docker().await?;
        exec::state(docker, exec_id)
            .await
            .map_err(|e| self.classify(e))
    }
}

/// Marks a workspace as building while alive.
struct BuildingMark<'a> {
    set: &'a StdMutex<HashSet<WorkspaceId>>,
    id: WorkspaceId,
}

impl<'a> BuildingMark<'a> {
    fn new(set: &'a StdMutex<HashSet<WorkspaceId>>, id: WorkspaceId) -> Self {
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        Self { set, id }
    }
}

impl Drop for BuildingMark<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Whether the engine answered with this HTTP status.
fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Docker's "never" is `0001-01-01T00:00:00Z`.
fn is_real_time(t: &str) -> bool {
    !t.is_empty() && !t.starts_with("0001-")
}

fn container_port_label(c: &ContainerInspectResponse) -> Option<u16> {
    c.config
        .as_ref()?
        .labels
        .as_ref()?
        .get(LABEL_PORT)?
        .parse()
        .ok()
}

/// The app's main port among the exposed ones (`"8080/tcp"`): a well-known web port if there
/// is one, else the lowest TCP port.
fn main_port(exposed: &[String]) -> u16 {
    let tcp: Vec<u16> = exposed
        .iter()
        .filter_map(|k| k.strip_suffix("/tcp").and_then(|p| p.parse().ok()))
        .collect();
    WEB_PORTS
        .iter()
        .copied()
        .find(|p| tcp.contains(p))
        .or_else(|| tcp.iter().copied().min())
        .unwrap_or(DEFAULT_APP_PORT)
}

fn published_ports(c: &ContainerInspectResponse) -> Vec<PublishedPort> {
    let Some(map) = c.network_settings.as_ref().and_then(|n| n.ports.as_ref()) else {
        return Vec::new();
    };
    let mut ports: Vec<PublishedPort> = map
        .iter()
        .filter_map(|(key, bindings)| {
            let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let container_port: u16 = port.parse().ok()?;
            let bindings = bindings.as_ref()?;
            // One entry per container port: IPv4 first when the engine bound both families.
            let binding = bindings
                .iter()
                .find(|b| b.host_ip.as_deref().is_some_and(|ip| !ip.contains(':')))
                .or_else(|| bindings.first())?;
            Some(PublishedPort {
                container_port,
                protocol: protocol.to_owned(),
                host_ip: binding.host_ip.clone().unwrap_or_default(),
                host_port: binding.host_port.as_deref()?.parse().ok()?,
            })
        })
        .collect();
    ports.sort_by(|a, b| (a.container_port, &a.protocol).cmp(&(b.container_port, &b.protocol)));
    ports
}

/// Cuts a container's log frames into lines per stream (a long line may span frames).
#[derive(Default)]
struct LogCollector {
    lines: Vec<LogLine>,
    partial: [Vec<u8>; 2],
}

impl LogCollector {
    fn push(&mut self, output: bollard::container::LogOutput) {
        use bollard::container::LogOutput;
        let (index, bytes) = match output {
            LogOutput::StdErr { message } => (1, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => (0, message),
            LogOutput::StdIn { .. } => return,
        };
        self.partial[index].extend_from_slice(&bytes);
        while let Some(end) = self.partial[index].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[index].drain(..=end).collect();
            self.emit(index, &line);
        }
    }

    fn emit(&mut self, index: usize, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        self.lines.push(LogLine {
            stream: if index == 1 { "stderr" } else { "stdout" },
            text: text.trim_end_matches(['\n', '\r']).to_owned(),
        });
    }

    fn finish(mut self) -> Vec<LogLine> {
        for index in 0..2 {
            let rest = std::mem::take(&mut self.partial[index]);
            if !rest.is_empty() {
                self.emit(index, &rest);
            }
        }
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(host: &str) -> RuntimeSettings {
        RuntimeSettings {
            docker_socket: "unix:///var/run/docker.sock".to_owned(),
            network: "otter_default".to_owned(),
            container_prefix: "otter-ws".to_owned(),
            image_prefix: "Otter/Workspace".to_owned(),
            default_host: host.to_owned(),
            max_log_lines: 2000,
        }
    }

    #[test]
    fn loopback_hosts_publish_on_loopback_only() {
        assert_eq!(settings("http://localhost").bind_ip(), "127.0.0.1");
        assert_eq!(settings("http://127.0.0.1").bind_ip(), "127.0.0.1");
        assert_eq!(settings("http://[::1]").bind_ip(), "127.0.0.1");
        assert_eq!(settings("http://nuc.lan").bind_ip(), "0.0.0.0");
        assert_eq!(settings("http://192.168.1.20").bind_ip(), "0.0.0.0");
    }

    #[test]
    fn names_follow_the_prefixes() {
        let runtime = Runtime::new(settings("http://localhost"));
        let id: WorkspaceId = "6f2a1c3e-0000-4000-8000-000000000001".parse().unwrap();
        assert_eq!(
            runtime.container_name(id),
            "otter-ws-6f2a1c3e-0000-4000-8000-000000000001"
        );
        assert_eq!(
            runtime.image_name(id),
            "otter/workspace-6f2a1c3e-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn main_port_prefers_web_ports() {
        let ports = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(main_port(&ports(&["22/tcp", "8080/tcp"])), 8080);
        assert_eq!(main_port(&ports(&["9000/tcp", "7000/tcp"])), 7000);
        assert_eq!(main_port(&ports(&["53/udp"])), DEFAULT_APP_PORT);
    }

    #[test]
    fn log_lines_are_split_per_stream() {
        use bollard::container::LogOutput;
        let mut c = LogCollector::default();
        c.push(LogOutput::StdOut {
            message: "a\nb".into(),
        });
        c.push(LogOutput::StdErr {
            message: "e1\n".into(),
        });
        c.push(LogOutput::StdOut {
            message: "c\r\n".into(),
        });
        c.push(LogOutput::StdErr {
            message: "tail".into(),
        });
        let lines: Vec<(&str, String)> =
            c.finish().into_iter().map(|l| (l.stream, l.text)).collect();
        assert_eq!(
            lines,
            vec![
                ("stdout", "a".to_owned()),
                ("stderr", "e1".to_owned()),
                ("stdout", "bc".to_owned()),
                ("stderr", "tail".to_owned()),
            ]
        );
    }
}
