//! The demo model's own settings, read once at start: where it listens
//! (`OTTER_DEMO_MODEL_LISTEN`), how it logs (`OTTER_LOG_FORMAT`, as Otter's other binaries) and
//! whether it plays a provider that rate-limits (`OTTER_DEMO_MODEL_RATE_LIMIT`,
//! `OTTER_DEMO_MODEL_RETRY_AFTER`, see [`RateLimit`]). It reads nothing else; a malformed value
//! stops start-up with an error naming the variable.

use std::net::SocketAddr;

use otter_core::ConfigError;
use otter_core::config::LogFormat;

/// Where the demo model listens unless `OTTER_DEMO_MODEL_LISTEN` says otherwise (loopback; a
/// container sets `0.0.0.0:8090`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// Which chat-completions requests the demo model refuses with `429 Too Many Requests`, as a
/// rate-limited provider would (`OTTER_DEMO_MODEL_RATE_LIMIT`). For seeing what a client (vibe)
/// does when its model is rate-limited; `/healthz` and `/v1/models` are never limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RateLimitMode {
    /// `off` (the default): every request is served.
    #[default]
    Off,
    /// `always`: every chat-completions request gets a 429.
    Always,
    /// `first`: the first chat-completions request the server receives gets a 429, every later
    /// one is served as usual.
    First,
}

impl RateLimitMode {
    /// The setting's value, as `OTTER_DEMO_MODEL_RATE_LIMIT` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Always => "always",
            Self::First => "first",
        }
    }
}

/// The scripted rate limit: which requests get a 429 and whether it says when to retry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `OTTER_DEMO_MODEL_RATE_LIMIT`: `off` (default), `always` or `first`.
    pub mode: RateLimitMode,
    /// `OTTER_DEMO_MODEL_RETRY_AFTER`: whole seconds. When set, every 429 carries
    /// `Retry-After: <secs>` and its message says "Please try again in `<secs>`s."; unset, a 429
    /// says nothing about when to retry. Ignored while the mode is `off`.
    pub retry_after_secs: Option<u64>,
}

/// Everything `otter-demo-model` reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `OTTER_DEMO_MODEL_LISTEN` (default `127.0.0.1:8090`).
    pub listen: SocketAddr,
    /// `OTTER_LOG_FORMAT` (`text` or `json`, default `text`).
    pub log_format: LogFormat,
    /// `OTTER_DEMO_MODEL_RATE_LIMIT` and `OTTER_DEMO_MODEL_RETRY_AFTER` (default: no limit).
    pub rate_limit: RateLimit,
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
        let mode = match get("OTTER_DEMO_MODEL_RATE_LIMIT") {
            None => RateLimitMode::Off,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "off" => RateLimitMode::Off,
                "always" => RateLimitMode::Always,
                "first" => RateLimitMode::First,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "OTTER_DEMO_MODEL_RATE_LIMIT",
                        value: raw,
                        reason: "expected off, always or first".to_owned(),
                    });
                }
            },
        };
        let retry_after_secs = get("OTTER_DEMO_MODEL_RETRY_AFTER")
            .map(|raw| {
                raw.parse::<u64>().map_err(|_| ConfigError::Invalid {
                    var: "OTTER_DEMO_MODEL_RETRY_AFTER",
                    value: raw.clone(),
                    reason: "expected whole seconds, e.g. 2".to_owned(),
                })
            })
            .transpose()?;
        Ok(Self {
            listen,
            log_format: LogFormat::from_var(get("OTTER_LOG_FORMAT").as_deref())?,
            rate_limit: RateLimit {
                mode,
                retry_after_secs,
            },
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
        assert_eq!(default.rate_limit, RateLimit::default());
        assert_eq!(default.rate_limit.mode, RateLimitMode::Off);
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
    fn the_rate_limit_is_off_unless_asked_for() {
        for (mode, retry_after, want) in [
            ("off", None, RateLimitMode::Off),
            ("always", None, RateLimitMode::Always),
            ("first", None, RateLimitMode::First),
            (" ALWAYS ", Some("2"), RateLimitMode::Always),
            ("First", Some(" 0 "), RateLimitMode::First),
            ("", Some("30"), RateLimitMode::Off),
        ] {
            let mut pairs = vec![("OTTER_DEMO_MODEL_RATE_LIMIT", mode)];
            pairs.extend(retry_after.map(|v| ("OTTER_DEMO_MODEL_RETRY_AFTER", v)));
            let got = settings(&pairs).expect(mode).rate_limit;
            assert_eq!(got.mode, want, "{mode:?}");
            assert_eq!(
                got.retry_after_secs,
                retry_after.map(|v| v.trim().parse().expect("a number")),
                "{retry_after:?}"
            );
            assert_eq!(got.mode.as_str(), format!("{want:?}").to_lowercase());
        }
        let unset = settings(&[("OTTER_DEMO_MODEL_RETRY_AFTER", "")]).expect("valid");
        assert_eq!(unset.rate_limit.retry_after_secs, None);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("OTTER_DEMO_MODEL_LISTEN", "8090"),
            ("OTTER_DEMO_MODEL_LISTEN", "localhost:8090"),
            ("OTTER_DEMO_MODEL_LISTEN", "0.0.0.0:99999"),
            ("OTTER_LOG_FORMAT", "yaml"),
            ("OTTER_DEMO_MODEL_RATE_LIMIT", "sometimes"),
            ("OTTER_DEMO_MODEL_RATE_LIMIT", "on"),
            ("OTTER_DEMO_MODEL_RETRY_AFTER", "2s"),
            ("OTTER_DEMO_MODEL_RETRY_AFTER", "-1"),
            ("OTTER_DEMO_MODEL_RETRY_AFTER", "1.5"),
        ] {
            let err = settings(&[(var, value)]).expect_err(value).to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }
}
