//! How a run ends, and the `export.json` it leaves in `--output-dir`.

use std::env;
use std::fs;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::VIBE_VERSION;
use crate::json::{J, obj, push_json_str};
use crate::out::{err_line, rfc3339_micros};
use crate::scenario::env_string;
use crate::stop::Stop;

pub(crate) enum End {
    Finished,
    Stopped(Stop),
    ConfigError {
        message: String,
        code: Option<&'static str>,
    },
    Infra {
        message: String,
        /// export.json's `error.code`: `backend_error`, or `rate_limit` for an HTTP 429.
        code: &'static str,
    },
    /// A usage error found after the command line parsed (`--resume` of an unknown session).
    Usage {
        message: String,
    },
    /// `exit:N`: an exit the real CLI never makes.
    Unknown(u8),
}

impl End {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            End::Finished => 0,
            End::ConfigError { .. } | End::Usage { .. } => 1,
            End::Infra { .. } => 2,
            End::Stopped(_) => 3,
            End::Unknown(code) => *code,
        }
    }
}

/// What a started session contributes to export.json.
pub(crate) struct SessionSummary {
    pub(crate) session_id: String,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) steps: u64,
    pub(crate) auto_approve: bool,
}

/// Input and output prices of the capture's `mock` model, USD per million tokens.
pub(crate) fn cost_usd(input_tokens: u64, output_tokens: u64) -> f64 {
    // Whole micro-dollars, so the float prints as short as the real one (0.015048).
    (input_tokens.saturating_add(output_tokens.saturating_mul(3))) as f64 / 1_000_000.0
}

pub(crate) struct ExportCtx {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) disabled: bool,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) max_turns: Option<u64>,
    pub(crate) max_price: Option<f64>,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) time_limit: Option<f64>,
    pub(crate) warnings: Vec<String>,
}

impl ExportCtx {
    fn document(&self, end: &End, session: Option<&SessionSummary>) -> J {
        let (outcome, stop_reason, error) = match end {
            End::Finished => ("finished", None, J::Null),
            End::Stopped(stop) => (stop.name(), Some(stop.reason()), J::Null),
            End::ConfigError { message, code } => (
                "config_error",
                None,
                obj! { "message" => message, "code" => *code },
            ),
            End::Infra { message, code } => (
                "infrastructure_failure",
                None,
                obj! { "message" => message, "code" => *code },
            ),
            End::Usage { message } => (
                "usage_error",
                None,
                obj! { "message" => message, "code" => J::Null },
            ),
            End::Unknown(_) => ("unknown", None, J::Null),
        };
        let mut fields: Vec<(&'static str, J)> = vec![
            ("outcome", outcome.into()),
            ("stop_reason", stop_reason.into()),
            ("error", error),
        ];
        match session {
            Some(s) => fields.extend([
                ("session_id", J::from(&s.session_id)),
                (
                    "usage",
                    obj! {
                        "input_tokens" => s.input_tokens,
                        "output_tokens" => s.output_tokens,
                        "cached_input_tokens" => 0_u64,
                        "total_tokens" => s.input_tokens.saturating_add(s.output_tokens),
                    },
                ),
                ("cost_usd", cost_usd(s.input_tokens, s.output_tokens).into()),
                ("steps", s.steps.into()),
                ("config", J::Raw(render_config(s.auto_approve))),
            ]),
            None => fields.extend(
                ["session_id", "usage", "cost_usd", "steps", "config"].map(|k| (k, J::Null)),
            ),
        }
        if !self.warnings.is_empty() {
            let warnings = self
                .warnings
                .iter()
                .map(|w| obj! { "message" => w, "source" => J::Null })
                .collect::<Vec<_>>();
            fields.push(("warnings", warnings.into()));
        }
        fields.extend([
            ("schema_version", J::Int(1)),
            ("vibe_version", VIBE_VERSION.into()),
            ("journal_dir", session.map(|_| "session").into()),
            ("started_at", rfc3339_micros(self.started_at).into()),
            ("ended_at", rfc3339_micros(Utc::now()).into()),
            (
                "limits",
                obj! {
                    "max_turns" => self.max_turns,
                    "max_price" => self.max_price,
                    "max_tokens" => self.max_tokens,
                    "time_limit_s" => self.time_limit,
                },
            ),
            ("exit_code", J::Int(i64::from(end.exit_code()))),
        ]);
        J::Obj(fields)
    }

    /// Writes `<dir>/export.json` (through a temporary file and a rename, so a reader
    /// never sees half of it).
    pub(crate) fn write(&self, end: &End, session: Option<&SessionSummary>) {
        let Some(dir) = &self.dir else { return };
        if self.disabled {
            return;
        }
        let mut text = self.document(end, session).to_pretty();
        text.push('\n');
        let target = dir.join("export.json");
        let temp = dir.join(".export.json.tmp");
        let result = fs::create_dir_all(dir)
            .and_then(|()| fs::write(&temp, text.as_bytes()))
            .and_then(|()| fs::rename(&temp, &target));
        if let Err(e) = result {
            err_line(&format!(
                "Warning: could not write {}: {e}",
                target.display()
            ));
        }
    }
}

pub(crate) fn vibe_home() -> PathBuf {
    match env::var_os("VIBE_HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".vibe"),
    }
}

/// `VIBE_ACTIVE_MODEL`, else a top-level `active_model = "..."` in `$VIBE_HOME/config.toml`,
/// else the capture's `mock`.
pub(crate) fn active_model() -> String {
    if let Some(model) = env_string("VIBE_ACTIVE_MODEL").filter(|m| !m.is_empty()) {
        return model;
    }
    let config = fs::read_to_string(vibe_home().join("config.toml")).unwrap_or_default();
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "active_model"
        {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if !value.is_empty() {
                return value.to_owned();
            }
        }
    }
    "mock".to_owned()
}

fn render_config(auto_approve: bool) -> String {
    let json_str = |s: &str| {
        let mut out = String::new();
        push_json_str(&mut out, s);
        out
    };
    let save_dir = vibe_home().join("logs").join("session");
    let retry = env_string("VIBE_API_RETRY_MAX_ELAPSED_TIME")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(300.0);
    CONFIG_TEMPLATE
        .replace("@ACTIVE_MODEL@", &json_str(&active_model()))
        .replace("@SAVE_DIR@", &json_str(&save_dir.to_string_lossy()))
        .replace("@BYPASS@", if auto_approve { "true" } else { "false" })
        .replace("@RETRY@", &J::Float(retry).to_compact())
}

/// The export's `config` object as the real CLI wrote it in the capture (the `mock`
/// provider and model included), rendered at depth 1; `@NAME@` marks the values that follow
/// this run.
const CONFIG_TEMPLATE: &str = r#"{
    "active_model": @ACTIVE_MODEL@,
    "routed_default_model": "",
    "routed_model_config": null,
    "catalog_model_aliases": {},
    "catalog_recommended_model": "",
    "routed_extra_models": [],
    "providers": [
      {
        "name": "mistral",
        "api_base": "https://api.mistral.ai/v1",
        "api_key_env_var": "MISTRAL_API_KEY",
        "browser_auth_base_url": "https://console.mistral.ai",
        "browser_auth_api_base_url": "https://console.mistral.ai/api",
        "browser_auth_allow_origin_rewrite": false,
        "api_style": "openai",
        "backend": "mistral",
        "reasoning_field_name": "reasoning_content",
        "emits_finish_reason": true,
        "project_id": "",
        "region": "",
        "extra_headers": {}
      },
      {
        "name": "llamacpp",
        "api_base": "http://127.0.0.1:8080/v1",
        "api_key_env_var": "",
        "browser_auth_base_url": null,
        "browser_auth_api_base_url": null,
        "browser_auth_allow_origin_rewrite": false,
        "api_style": "openai",
        "backend": "generic",
        "reasoning_field_name": "reasoning_content",
        "emits_finish_reason": true,
        "project_id": "",
        "region": "",
        "extra_headers": {}
      },
      {
        "name": "mock",
        "api_base": "http://127.0.0.1:46361/v1",
        "api_key_env_var": "MOCK_API_KEY",
        "browser_auth_base_url": null,
        "browser_auth_api_base_url": null,
        "browser_auth_allow_origin_rewrite": false,
        "api_style": "openai",
        "backend": "generic",
        "reasoning_field_name": "reasoning_content",
        "emits_finish_reason": true,
        "project_id": "",
        "region": "",
        "extra_headers": {}
      }
    ],
    "models": {
      "mistral-medium-3.5": {
        "name": "mistral-vibe-cli-latest",
        "provider": "mistral",
        "alias": "mistral-medium-3.5",
        "display_name": "Mistral Medium 3.5",
        "temperature": 1.0,
        "top_p": null,
        "max_output_tokens": null,
        "input_price": 1.5,
        "output_price": 7.5,
        "cached_input_price": 0.15,
        "thinking": "high",
        "thinking_levels": [
          "off",
          "high"
        ],
        "supports_images": true,
        "max_context_length": 262144,
        "auto_compact_threshold": null
      },
      "mock": {
        "name": "mock-model",
        "provider": "mock",
        "alias": "mock",
        "display_name": null,
        "temperature": 0.2,
        "top_p": null,
        "max_output_tokens": null,
        "input_price": 1.0,
        "output_price": 3.0,
        "cached_input_price": null,
        "thinking": "off",
        "thinking_levels": [
          "off",
          "low",
          "medium",
          "high",
          "max"
        ],
        "supports_images": null,
        "max_context_length": 131072,
        "auto_compact_threshold": null
      }
    },
    "allowed_models": [],
    "compaction_model": null,
    "vision_model": null,
    "utility_models": {
      "title": "",
      "smart_approve": ""
    },
    "auto_compact_threshold": null,
    "active_transcribe_model": "voxtral-realtime",
    "transcribe_providers": [
      {
        "name": "mistral",
        "api_base": "wss://api.mistral.ai",
        "api_key_env_var": "MISTRAL_API_KEY",
        "client": "mistral"
      }
    ],
    "transcribe_models": [
      {
        "name": "voxtral-mini-transcribe-realtime-2602",
        "provider": "mistral",
        "alias": "voxtral-realtime",
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "language": "en",
        "target_streaming_delay_ms": 500
      }
    ],
    "active_tts_model": "voxtral-tts",
    "tts_providers": [
      {
        "name": "mistral",
        "api_base": "https://api.mistral.ai",
        "api_key_env_var": "MISTRAL_API_KEY",
        "client": "mistral"
      }
    ],
    "tts_models": [
      {
        "name": "voxtral-mini-tts-latest",
        "provider": "mistral",
        "alias": "voxtral-tts",
        "voice": "gb_jane_neutral",
        "response_format": "wav"
      }
    ],
    "tools": {
      "write_file": {
        "permission": "always"
      },
      "edit": {
        "permission": "always"
      }
    },
    "outside_workdir": "ask",
    "tool_paths": [],
    "enabled_tools": [],
    "disabled_tools": [
      "ask_user_question",
      "cron"
    ],
    "mcp_servers": [],
    "enable_connectors": false,
    "enable_mcp": true,
    "experimental_enable_document_library_connector": false,
    "connectors": [],
    "agent_paths": [],
    "enabled_agents": [],
    "disabled_agents": [],
    "installed_agents": [],
    "default_agent": "accept-edits",
    "smart_approve_available": false,
    "smart_approve_default": false,
    "enable_auto_approve": true,
    "skill_paths": [],
    "enabled_skills": [],
    "disabled_skills": [],
    "experimental_enable_registry_skills": false,
    "experimental_enable_model_catalog": false,
    "experimental_enable_pr_monitoring": false,
    "experimental_enable_pr_discovery": false,
    "enable_otel": false,
    "otel_endpoint": "",
    "otel_redaction": "default",
    "console_base_url": "https://console.mistral.ai",
    "theme": "auto",
    "applied_migrations": [],
    "disable_welcome_banner_animation": false,
    "cursor_blink": true,
    "show_greeting": true,
    "autocopy_to_clipboard": true,
    "enable_mouse_capture": true,
    "file_watcher_for_autocomplete": true,
    "ask_confirmation_on_exit": true,
    "displayed_workdir": "",
    "context_warnings": false,
    "voice_mode_enabled": false,
    "narrator_enabled": false,
    "show_thinking_nodes": true,
    "show_subagent_status_list": true,
    "worktree_limit": 15,
    "bypass_tool_permissions": @BYPASS@,
    "raise_on_compaction_failure": false,
    "enable_telemetry": false,
    "system_prompt_id": "cli",
    "managed_shell_tools_enabled": false,
    "enable_background_processes": true,
    "enable_subagents": true,
    "max_subagents": 32,
    "max_concurrent_subagents": 32,
    "compaction_prompt_id": "compact",
    "title_prompt_id": "session_title",
    "include_commit_signature": true,
    "include_model_info": true,
    "include_project_context": true,
    "include_prompt_detail": true,
    "strict_config": false,
    "enable_update_checks": false,
    "enable_auto_update": false,
    "enable_notifications": false,
    "experimental_enable_tab_status": true,
    "enable_system_trust_store": false,
    "api_timeout": 720.0,
    "api_retry_max_elapsed_time": @RETRY@,
    "api_stream_idle_timeout": 300.0,
    "compaction_reasoning_limit_tokens": 32000,
    "output_limit_retries": 6,
    "api_connect_timeout": 10.0,
    "api_write_timeout": 30.0,
    "api_pool_timeout": 10.0,
    "vibe_base_url": "https://chat.mistral.ai",
    "vibe_code_sessions_base_url": "https://chat.mistral.ai",
    "log_level": null,
    "project_context": {
      "default_commit_count": 5,
      "timeout_seconds": 2.0
    },
    "session_logging": {
      "save_dir": @SAVE_DIR@,
      "session_prefix": "session",
      "enabled": true,
      "generate_titles": false
    },
    "experiments": {
      "enable": false,
      "api_host": "https://experiments.mistral.services/",
      "client_key": "sdk-OE8yJgTXZY6tj"
    }
  }"#;
