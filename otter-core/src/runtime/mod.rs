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
//!
//! One concern a file: `types` (what the runtime answers), `settings`, `error`, `container`
//! (a container's state; start, restart, stop), `build` and `build_log` (the image and its
//! log), `logs` (a container's log), `cleanup` (removal, and the janitor that removes what
//! deleted workspaces left), `exec` (shells), [`context`] (the build context).

mod build;
mod build_log;
mod cleanup;
mod container;
pub mod context;
mod error;
mod exec;
mod logs;
mod settings;
mod types;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::model::WorkspaceId;

pub use build_log::BUILD_LOG_TAIL;
pub use container::DEFAULT_APP_PORT;
pub use error::RuntimeError;
pub use exec::{ExecSession, ShellState, TermSize};
pub use settings::RuntimeSettings;
pub use types::{
    BuildSummary, CleanupReport, LogLine, PublishedPort, Removed, RuntimeAction, RuntimeInfo,
    RuntimeOutcome, RuntimeStatus, StartOptions,
};

/// Label that marks everything Otter's runtime made.
pub const LABEL_MANAGED: &str = "otter.managed";
/// Label naming the workspace a container or image belongs to.
pub const LABEL_WORKSPACE: &str = "otter.workspace";
/// Label naming the container port the runtime URL points at.
pub const LABEL_PORT: &str = "otter.port";

/// Seconds the engine gets to answer one request (builds stream past this).
const DOCKER_TIMEOUT_SECS: u64 = 120;

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

    fn labels(&self, id: WorkspaceId) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKSPACE.to_owned(), id.to_string()),
        ])
    }
}

/// Whether the engine answered with this HTTP status.
fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

#[cfg(test)]
mod tests {
    use super::settings::tests::settings;
    use super::*;

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
}
