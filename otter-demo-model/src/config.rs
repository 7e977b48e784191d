//! The demo model's own settings, read once at start: where it listens
//! (`OTTER_DEMO_MODEL_LISTEN`) and how it logs (`OTTER_LOG_FORMAT`, as Otter's other binaries).
//! It reads nothing else; a malformed value stops start-up with an error naming the variable.

use std::net::SocketAddr;

use otter_core::ConfigError;
use otter_core::config::LogFormat;

/// Where the demo model listens unless `OTTER_DEMO_MODEL_LISTEN` says otherwise (loopback; a
/// container sets `0.0.0.0:8090`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// Everything `otter-demo-model` reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `OTTER_DEMO_MODEL_LISTEN` (default `127.0.0.1:8090`).
    pub listen: SocketAddr,
    /// `OTTER_LOG_FORMAT` (`text` or `json`, default `text`).
    pub log_format: LogFormat,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, which returns a variable's value if set (empty
    /// counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let raw = get("OTTER_DEMO_MODEL_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = raw.parse().map_err(|_| ConfigError::Invalid {
            var: "OTTER_DEMO_MODEL_LISTEN",
            value: raw.clone(),
            reason: "expected host:port, e.g. 127.0.0.1:8090 or 0.0.0.0:8090".to_owned(),
        })?;
        Ok(Self {
            listen,
            log_format: LogFormat::from_var(get("OTTER_LOG_FORMAT").as_deref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn it_listens_on_loopback_unless_told_otherwise() {
        let default = settings(&[]).expect("valid");
        assert_eq!(default.listen.to_string(), "127.0.0.1:8090");
        assert_eq!(default.log_format, LogFormat::Text);
        assert_eq!(
            settings(&[("OTTER_DEMO_MODEL_LISTEN", " ")]).expect("valid"),
            default
        );
        let container = settings(&[
            ("OTTER_DEMO_MODEL_LISTEN", "0.0.0.0:8090"),
            ("OTTER_LOG_FORMAT", "json"),
        ])
        .expect("valid");
        assert_eq!(container.listen.to_string(), "0.0.0.0:8090");
        assert_eq!(container.log_format, LogFormat::Json);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("OTTER_DEMO_MODEL_LISTEN", "8090"),
            ("OTTER_DEMO_MODEL_LISTEN", "localhost:8090"),
            ("OTTER_DEMO_MODEL_LISTEN", "0.0.0.0:99999"),
            ("OTTER_LOG_FORMAT", "yaml"),
        ] {
            let err = settings(&[(var, value)]).expect_err(value).to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }
}
