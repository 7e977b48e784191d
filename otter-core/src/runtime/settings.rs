//! The runtime's settings, from `OTTER_RUNTIME_*`.

use std::net::IpAddr;

use crate::config::Config;

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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::runtime) fn settings(host: &str) -> RuntimeSettings {
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
}
