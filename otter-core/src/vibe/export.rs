//! `RUN_DIR/export.json`, the summary vibe writes with `--output-dir RUN_DIR`.
//!
//! vibe 3.x and 2.26 write it on every exit, including errors, limits and SIGTERM (even config
//! errors before any request, then with `usage`, `cost_usd`, `steps` and `session_id` null);
//! vibe 1.x never writes one. Besides the fields kept in [`RunExport`] it holds `config` (the
//! whole effective configuration, several KB, of which only `active_model` is kept, as
//! [`RunExport::model`]), `limits`, `started_at`, `ended_at`, `schema_version`, `journal_dir`
//! and sometimes `warnings`.
//!
//! Values seen in the captures: `outcome` is one of `finished`, `turn_limit`, `price_limit`,
//! `token_limit`, `deadline` (`--time-limit`), `terminated` (SIGTERM), `config_error`,
//! `infrastructure_failure`; `stop_reason` is null, `limit` (turn limit) or `interrupted`;
//! `error.code` is e.g. `invalid_api_key`, `backend_error` or null.

use std::path::Path;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// The parts of export.json Otter keeps. Unknown fields are ignored; every field is optional
/// because older vibe versions write no export at all and a killed vibe may write a partial one.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunExport {
    /// How the run ended: `finished`, `turn_limit`, `price_limit`, `token_limit`, `deadline`,
    /// `terminated`, `config_error`, `infrastructure_failure`, ...
    #[serde(default)]
    pub outcome: Option<String>,
    /// Why the agent loop stopped: `limit`, `interrupted`, or null.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The error that ended the run, if any.
    #[serde(default)]
    pub error: Option<ExportError>,
    /// Token usage: `{input_tokens, output_tokens, cached_input_tokens, total_tokens}`.
    #[serde(default)]
    pub usage: Option<Value>,
    /// Cost in USD.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// Number of agent steps (model calls).
    #[serde(default)]
    pub steps: Option<i64>,
    /// vibe's own exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The vibe version that wrote the export.
    #[serde(default)]
    pub vibe_version: Option<String>,
    /// vibe's session id (what `--resume` takes).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The model vibe ran: the alias its effective configuration names (`config.active_model`,
    /// e.g. `mistral-medium-3.5`, or `otter-demo` for the demo model); absent when vibe stopped
    /// before it had a configuration, or left the model unpinned.
    #[serde(default)]
    pub model: Option<String>,
}

/// The `error` object of export.json.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ExportError {
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// Machine-readable code, e.g. `invalid_api_key`, `backend_error`; often null.
    #[serde(default)]
    pub code: Option<String>,
}

/// Why export.json could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportReadError {
    /// The file exists but could not be read.
    #[error("reading export.json: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a JSON object.
    #[error("export.json is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl RunExport {
    /// `usage.total_tokens`, if present.
    pub fn total_tokens(&self) -> Option<i64> {
        self.usage_field("total_tokens")
    }

    /// `usage.input_tokens`, if present.
    pub fn input_tokens(&self) -> Option<i64> {
        self.usage_field("input_tokens")
    }

    /// `usage.output_tokens`, if present.
    pub fn output_tokens(&self) -> Option<i64> {
        self.usage_field("output_tokens")
    }

    fn usage_field(&self, name: &str) -> Option<i64> {
        self.usage.as_ref()?.get(name)?.as_i64()
    }
}

/// Parse export.json bytes.
///
/// The document must be a JSON object, else [`ExportReadError::Invalid`]. Only the kept fields
/// are built: every other field, and `config` but for its `active_model`, is skipped without
/// being deserialized. A kept
/// field with an unexpected type (say, a string `steps`) is dropped to `None` with a warning
/// rather than failing the whole export.
pub fn parse_export(bytes: &[u8]) -> Result<RunExport, ExportReadError> {
    let raw: RawExport = serde_json::from_slice(bytes)?;
    Ok(raw.into_export())
}

/// Read `<run_dir>/export.json`; `Ok(None)` when the file does not exist.
pub async fn read_export(run_dir: &Path) -> Result<Option<RunExport>, ExportReadError> {
    let path = run_dir.join("export.json");
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    parse_export(&bytes).map(Some)
}

/// The kept top-level fields as raw JSON values, everything else skipped.
#[derive(Default)]
struct RawExport {
    outcome: Option<Value>,
    stop_reason: Option<Value>,
    error: Option<Value>,
    usage: Option<Value>,
    cost_usd: Option<Value>,
    steps: Option<Value>,
    exit_code: Option<Value>,
    vibe_version: Option<Value>,
    session_id: Option<Value>,
    /// `config.active_model`.
    active_model: Option<Value>,
}

impl<'de> serde::Deserialize<'de> for RawExport {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawExportVisitor)
    }
}

struct RawExportVisitor;

impl<'de> Visitor<'de> for RawExportVisitor {
    type Value = RawExport;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawExport, A::Error> {
        let mut raw = RawExport::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "outcome" => &mut raw.outcome,
                "stop_reason" => &mut raw.stop_reason,
                "error" => &mut raw.error,
                "usage" => &mut raw.usage,
                "cost_usd" => &mut raw.cost_usd,
                "steps" => &mut raw.steps,
                "exit_code" => &mut raw.exit_code,
                "vibe_version" => &mut raw.vibe_version,
                "session_id" => &mut raw.session_id,
                "config" => {
                    raw.active_model = map.next_value::<ActiveModel>()?.0;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Value>()?);
        }
        Ok(raw)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _seq: A) -> Result<RawExport, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
    }
}

/// `config.active_model`, read without building the rest of `config`; `None` when `config` is
/// not an object.
struct ActiveModel(Option<Value>);

impl<'de> serde::Deserialize<'de> for ActiveModel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ActiveModelVisitor)
    }
}

struct ActiveModelVisitor;

impl<'de> Visitor<'de> for ActiveModelVisitor {
    type Value = ActiveModel;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("vibe's configuration")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ActiveModel, A::Error> {
        let mut active = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "active_model" {
                active = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ActiveModel(active))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ActiveModel, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ActiveModel(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<ActiveModel, E> {
        Ok(ActiveModel(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ActiveModel, E> {
        Ok(ActiveModel(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ActiveModel, E> {
        Ok(ActiveModel(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ActiveModel, E> {
        Ok(ActiveModel(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ActiveModel, E> {
        Ok(ActiveModel(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<ActiveModel, E> {
        Ok(ActiveModel(None))
    }
}

impl RawExport {
    fn into_export(self) -> RunExport {
        RunExport {
            outcome: string("outcome", self.outcome),
            stop_reason: string("stop_reason", self.stop_reason),
            error: error(self.error),
            usage: match self.usage {
                Some(Value::Null) | None => None,
                Some(usage @ Value::Object(_)) => Some(usage),
                Some(other) => unexpected("usage", &other),
            },
            cost_usd: match self.cost_usd {
                Some(Value::Null) | None => None,
                Some(Value::Number(n)) => n.as_f64(),
                Some(other) => unexpected("cost_usd", &other),
            },
            steps: integer("steps", self.steps),
            exit_code: integer("exit_code", self.exit_code)
                .and_then(|code| i32::try_from(code).ok()),
            vibe_version: string("vibe_version", self.vibe_version),
            session_id: string("session_id", self.session_id),
            // An empty `active_model` is vibe's "not pinned".
            model: string("config.active_model", self.active_model).filter(|m| !m.is_empty()),
        }
    }
}

fn unexpected<T>(field: &str, value: &Value) -> Option<T> {
    tracing::warn!(field, %value, "export.json: unexpected type, field ignored");
    None
}

fn string(field: &str, value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::Null) | None => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => unexpected(field, &other),
    }
}

fn integer(field: &str, value: Option<Value>) -> Option<i64> {
    match value {
        Some(Value::Null) | None => None,
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Some(other) => unexpected(field, &other),
    }
}

fn error(value: Option<Value>) -> Option<ExportError> {
    match value {
        Some(Value::Null) | None => None,
        Some(Value::Object(mut object)) => Some(ExportError {
            message: string("error.message", object.remove("message")),
            code: string("error.code", object.remove("code")),
        }),
        // A bare string is taken as the message.
        Some(Value::String(message)) => Some(ExportError {
            message: Some(message),
            code: None,
        }),
        Some(other) => unexpected("error", &other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_partial_exports() {
        assert_eq!(parse_export(b"{}").ok(), Some(RunExport::default()));
        let export = parse_export(
            br#"{"outcome": "finished", "config": {"huge": [1, 2, {"x": null}]}, "steps": 3,
                "exit_code": 0, "error": null, "usage": null, "cost_usd": 0, "new_field": true}"#,
        );
        let export = export.ok();
        assert_eq!(
            export,
            Some(RunExport {
                outcome: Some("finished".to_owned()),
                steps: Some(3),
                exit_code: Some(0),
                cost_usd: Some(0.0),
                ..RunExport::default()
            })
        );
    }

    #[test]
    fn the_model_is_the_configurations_active_model() {
        let model = |json: &str| parse_export(json.as_bytes()).ok().map(|e| e.model);
        assert_eq!(
            model(
                r#"{"config": {"providers": [{"name": "x"}], "active_model": "otter-demo", "models": {}}}"#
            ),
            Some(Some("otter-demo".to_owned()))
        );
        for json in [
            r#"{"config": {"active_model": ""}}"#,
            r#"{"config": {"active_model": null}}"#,
            r#"{"config": {"active_model": 7}}"#,
            r#"{"config": {"models": {"a": {"active_model": "nested"}}}}"#,
            r#"{"config": null}"#,
            r#"{"config": "text"}"#,
            r#"{"config": [1, {"active_model": "x"}]}"#,
            r#"{"config": 1.5, "active_model": "top-level"}"#,
        ] {
            assert_eq!(model(json), Some(None), "{json}");
        }
    }

    #[test]
    fn wrong_types_are_dropped_not_fatal() {
        let export = parse_export(
            br#"{"outcome": 7, "steps": "three", "exit_code": 2.0, "cost_usd": "1",
                "error": "boom", "usage": [1], "session_id": {"a": 1}}"#,
        )
        .ok();
        assert_eq!(
            export,
            Some(RunExport {
                exit_code: Some(2),
                error: Some(ExportError {
                    message: Some("boom".to_owned()),
                    code: None
                }),
                ..RunExport::default()
            })
        );
    }

    #[test]
    fn invalid_documents() {
        for bytes in [
            &b""[..],
            b"[]",
            b"[1, 2]",
            b"null",
            b"\"x\"",
            b"{\"outcome\": \"finished\"",
            b"\xff",
        ] {
            assert!(
                matches!(parse_export(bytes), Err(ExportReadError::Invalid(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let export = RunExport {
            outcome: Some("config_error".to_owned()),
            error: Some(ExportError {
                message: Some("m".to_owned()),
                code: Some("invalid_api_key".to_owned()),
            }),
            usage: Some(serde_json::json!({"total_tokens": 5})),
            ..RunExport::default()
        };
        let json = serde_json::to_vec(&export).ok();
        let back = json.as_deref().map(parse_export).and_then(Result::ok);
        assert_eq!(back.as_ref(), Some(&export));
        assert_eq!(export.total_tokens(), Some(5));
        assert_eq!(export.input_tokens(), None);
    }
}
