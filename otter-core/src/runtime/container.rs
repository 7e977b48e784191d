//! A workspace's container: its state, and bringing it up (build, network, create, start,
//! restart) or down (stop). Ports are published as the module docs of [`super`] say.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    NetworkCreateRequest, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, RestartContainerOptions, StopContainerOptions,
};
use sqlx::PgPool;

use super::{
    BuildSummary, LABEL_MANAGED, LABEL_PORT, PublishedPort, Runtime, RuntimeAction, RuntimeError,
    RuntimeInfo, RuntimeOutcome, RuntimeStatus, StartOptions, is_status,
};
use crate::model::{Workspace, WorkspaceId};

/// Port published when the image exposes none and the caller names none.
pub const DEFAULT_APP_PORT: u16 = 8080;

/// Ports preferred as the app's main port when an image exposes several, in this order.
const WEB_PORTS: &[u16] = &[80, 8080, 3000, 5173, 8000, 5000, 4173, 8888, 443];

/// Seconds a stopping app gets between SIGTERM and SIGKILL.
const STOP_GRACE_SECS: i32 = 10;

impl Runtime {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_port_prefers_web_ports() {
        let ports = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(main_port(&ports(&["22/tcp", "8080/tcp"])), 8080);
        assert_eq!(main_port(&ports(&["9000/tcp", "7000/tcp"])), 7000);
        assert_eq!(main_port(&ports(&["53/udp"])), DEFAULT_APP_PORT);
    }
}
