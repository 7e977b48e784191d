//! Workspaces on disk: checking a requested path against `OTTER_ALLOWED_ROOTS`, and provisioning
//! the workspace's own `VIBE_HOME` (DESIGN.md §6), whose `config.toml` the worker brings up to
//! date before each run ([`refresh_vibe_config`]). When Otter runs as root, what it creates here
//! belongs to the job user (`OTTER_JOB_USER`), who runs the workspace's jobs and commands: the
//! `VIBE_HOME`, and the workspace directory when Otter made it. An existing directory registered
//! as a workspace is never given away: its owner decides who may write it.

use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::demo;
use crate::isolation::{IsolationError, JobUser};
use crate::model::WorkspaceId;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a workspace path or home was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The path given is not acceptable; the message says why.
    #[error("{0}")]
    InvalidPath(String),
    /// The path lies outside every allowed root.
    #[error("path {path} is outside the allowed roots ({roots})")]
    NotAllowed {
        /// The path.
        path: String,
        /// The allowed roots, `:`-separated.
        roots: String,
    },
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The job user could not be found or given the directory.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkspaceError {
    let what = what.into();
    move |source| WorkspaceError::Io { what, source }
}

/// Checks a client-given workspace path and returns its canonical form: absolute, no NUL, not
/// too long, an existing directory (created first when `create` is set, and then given to the
/// job user), and, when `OTTER_ALLOWED_ROOTS` is set, inside one of them after symlinks are
/// resolved.
pub fn resolve_path(config: &Config, raw: &str, create: bool) -> Result<PathBuf, WorkspaceError> {
    if raw.is_empty() {
        return Err(WorkspaceError::InvalidPath(
            "path must not be empty".to_owned(),
        ));
    }
    if raw.contains('\0') {
        return Err(WorkspaceError::InvalidPath(
            "path must not contain NUL bytes".to_owned(),
        ));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(WorkspaceError::InvalidPath(format!(
            "path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(WorkspaceError::InvalidPath(format!(
            "path must be absolute, got {raw:?}"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(WorkspaceError::InvalidPath(
            "path must not contain '..'".to_owned(),
        ));
    }
    // Check the lexical path first, so that nothing is created outside the roots.
    check_allowed(config, path)?;
    if create && std::fs::symlink_metadata(path).is_err() {
        std::fs::create_dir_all(path).map_err(io(format!("creating {raw}")))?;
        if let Some(user) = JobUser::resolve(&config.job_user)? {
            user.give_dir(path)?;
        }
    }
    let canonical = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WorkspaceError::InvalidPath(format!(
            "{raw} does not exist (pass \"create\": true to create it)"
        )),
        _ => WorkspaceError::Io {
            what: format!("resolving {raw}"),
            source: e,
        },
    })?;
    if !canonical.is_dir() {
        return Err(WorkspaceError::InvalidPath(format!(
            "{raw} is not a directory"
        )));
    }
    // And the resolved one, so that a symlink cannot lead out of the roots.
    check_allowed(config, &canonical)?;
    Ok(canonical)
}

/// Checks that `path` (already canonical, for a meaningful answer) lies under one of
/// `OTTER_ALLOWED_ROOTS`; any path passes when none are set.
pub fn check_allowed(config: &Config, path: &Path) -> Result<(), WorkspaceError> {
    if config.allowed_roots.is_empty() {
        return Ok(());
    }
    let inside = config.allowed_roots.iter().any(|root| {
        let root = root.canonicalize().unwrap_or_else(|_| root.clone());
        path.starts_with(&root)
    });
    if inside {
        Ok(())
    } else {
        Err(WorkspaceError::NotAllowed {
            path: path.display().to_string(),
            roots: config
                .allowed_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
    }
}

/// The `VIBE_HOME` of workspace `id`.
pub fn vibe_home_path(config: &Config, id: WorkspaceId) -> PathBuf {
    config.vibe_home_base.join(id.to_string())
}

/// Otter's own `config.toml` settings, merged over a template's.
const OTTER_SETTINGS: &[(&str, &str)] = &[
    ("enable_telemetry", "false"),
    ("enable_update_checks", "false"),
    ("enable_auto_update", "false"),
    ("enable_notifications", "false"),
];

/// Creates the workspace's `VIBE_HOME`: the template home copied in first when configured, then
/// `config.toml` (telemetry and update checks off, the demo model's entry when `OTTER_DEMO` is
/// on, the template's other settings kept), `trusted_folders.toml` trusting exactly
/// `workspace_path`, and `.env` with the API key (mode 0600); all of it then given to the job
/// user.
pub fn provision_vibe_home(
    config: &Config,
    home: &Path,
    workspace_path: &Path,
) -> Result<(), WorkspaceError> {
    std::fs::create_dir_all(home).map_err(io(format!("creating {}", home.display())))?;
    set_mode(home, 0o700)?;
    if let Some(template) = &config.vibe_home_template {
        if template.is_dir() {
            copy_dir(template, home)?;
        } else {
            tracing::warn!(template = %template.display(), "OTTER_VIBE_HOME_TEMPLATE is not a directory; ignored");
        }
    }
    let config_path = home.join("config.toml");
    let existing = std::fs::read_to_string(&config_path).unwrap_or_default();
    std::fs::write(&config_path, vibe_config(config, &existing))
        .map_err(io(format!("writing {}", config_path.display())))?;

    let trusted = format!(
        "# Written by Otter: this VIBE_HOME trusts exactly its own workspace.\ntrusted = [{}]\n",
        toml_string(&workspace_path.display().to_string())
    );
    let trusted_path = home.join("trusted_folders.toml");
    std::fs::write(&trusted_path, trusted)
        .map_err(io(format!("writing {}", trusted_path.display())))?;

    // The template's .env (other providers' keys) is kept; Otter's key replaces its own line.
    let env_path = home.join(".env");
    let existing = std::fs::read_to_string(&env_path).unwrap_or_default();
    let env = merge_env(
        &existing,
        config.mistral_api_key.as_ref().map(|k| k.expose()),
    );
    std::fs::write(&env_path, env).map_err(io(format!("writing {}", env_path.display())))?;
    set_mode(&env_path, 0o600)?;
    if let Some(user) = JobUser::resolve(&config.job_user)? {
        user.give_tree(home)?;
    }
    Ok(())
}

/// Brings an existing `VIBE_HOME/config.toml` up to date with this process's configuration:
/// Otter's settings, and the demo model's entry added or taken out as `OTTER_DEMO` says. The
/// worker calls it before every run, so a workspace made before a change of `OTTER_DEMO` (or by
/// a server configured differently) runs as the worker is configured. The file is written only
/// when something changes; one running job per workspace makes the write safe.
pub fn refresh_vibe_config(config: &Config, home: &Path) -> Result<(), WorkspaceError> {
    let config_path = home.join("config.toml");
    let existing = match std::fs::read_to_string(&config_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(format!("reading {}", config_path.display()))(e)),
    };
    let wanted = vibe_config(config, &existing);
    if wanted != existing {
        std::fs::write(&config_path, wanted)
            .map_err(io(format!("writing {}", config_path.display())))?;
    }
    Ok(())
}

/// `config.toml` as Otter wants it, from what is there now.
fn vibe_config(config: &Config, existing: &str) -> String {
    let demo_url = config.demo.then_some(config.demo_model_url.as_str());
    demo::merge_vibe_config(&merge_top_level(existing, OTTER_SETTINGS), demo_url)
}

/// A `.env` with every line of `existing` except its `MISTRAL_API_KEY` ones when `key` is given,
/// then `MISTRAL_API_KEY=<key>`.
fn merge_env(existing: &str, key: Option<&str>) -> String {
    let mut out = String::new();
    for line in existing.lines() {
        let name = line
            .trim_start()
            .trim_start_matches("export ")
            .split('=')
            .next()
            .unwrap_or_default();
        if key.is_some() && name.trim() == "MISTRAL_API_KEY" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(key) = key {
        out.push_str(&format!("MISTRAL_API_KEY={key}\n"));
    }
    out
}

fn set_mode(path: &Path, mode: u32) -> Result<(), WorkspaceError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", path.display())))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), WorkspaceError> {
    for entry in std::fs::read_dir(from).map_err(io(format!("reading {}", from.display())))? {
        let entry = entry.map_err(io(format!("reading {}", from.display())))?;
        let kind = entry.file_type().map_err(io("reading a template entry"))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(io(format!("creating {}", target.display())))?;
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)
                .map_err(io(format!("copying to {}", target.display())))?;
        }
        // Symlinks in the template are skipped: a home must not point elsewhere.
    }
    Ok(())
}

/// Sets top-level `key = value` lines of a TOML document, keeping every other line (tables,
/// providers, models) as it was. Top-level keys must precede the first table header.
fn merge_top_level(existing: &str, settings: &[(&str, &str)]) -> String {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut in_tables = false;
    for line in existing.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_tables = true;
        }
        if in_tables {
            tail.push(line.to_owned());
            continue;
        }
        let key = trimmed.split('=').next().map(str::trim).unwrap_or_default();
        if !settings.iter().any(|(k, _)| *k == key) {
            head.push(line.to_owned());
        }
    }
    let mut out = String::from("# Otter's settings (merged over the template's).\n");
    for (k, v) in settings {
        out.push_str(&format!("{k} = {v}\n"));
    }
    for line in head
        .into_iter()
        .filter(|l| !l.starts_with("# Otter's settings"))
    {
        out.push_str(&line);
        out.push('\n');
    }
    for line in tail {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A TOML basic string.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_template_tables_and_overrides_settings() {
        let template = "active_model = \"mock\"\nenable_telemetry = true\n\n[[providers]]\nname = \"mock\"\nenable_telemetry = true\n";
        let merged = merge_top_level(template, OTTER_SETTINGS);
        assert!(merged.contains("active_model = \"mock\""));
        assert!(merged.contains("enable_telemetry = false"));
        assert!(!merged.starts_with("enable_telemetry = true"));
        // The table's own key is left alone, and the table stays after the top-level keys.
        let providers = merged.find("[[providers]]").expect("table kept");
        assert!(merged[providers..].contains("enable_telemetry = true"));
        assert!(merged.find("enable_telemetry = false").expect("set") < providers);
        // Merging twice changes nothing.
        assert_eq!(merge_top_level(&merged, OTTER_SETTINGS), merged);
    }

    #[test]
    fn the_templates_env_is_kept_and_the_key_replaced() {
        let template = "MOCK_API_KEY=from-template\nexport MISTRAL_API_KEY=old\n# comment\n";
        assert_eq!(
            merge_env(template, Some("new")),
            "MOCK_API_KEY=from-template\n# comment\nMISTRAL_API_KEY=new\n"
        );
        assert_eq!(merge_env(template, None), template);
        assert_eq!(merge_env("", None), "");
    }

    fn config(demo: bool) -> Config {
        let vars: std::collections::HashMap<String, String> = [
            ("OTTER_DATABASE_URL", "postgres://u@h/d"),
            ("OTTER_REDIS_URL", "redis://h"),
            ("OTTER_DEMO", if demo { "true" } else { "false" }),
            ("OTTER_DEMO_MODEL_URL", "http://127.0.0.1:9/v1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Config::from_map(&vars).expect("a valid config")
    }

    #[test]
    fn an_existing_home_follows_otter_demo_both_ways() {
        let home = std::env::temp_dir().join(format!("otter-home-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&home).expect("create the home");
        let path = home.join("config.toml");
        let template = "active_model = \"mock\"\n\n[[providers]]\nname = \"mock\"\n";
        std::fs::write(&path, template).expect("write config.toml");
        let read = || std::fs::read_to_string(&path).expect("read config.toml");

        refresh_vibe_config(&config(true), &home).expect("demo on");
        let on = read();
        assert!(on.contains("enable_telemetry = false"), "{on}");
        assert!(
            on.contains("active_model = \"mock\""),
            "the template's line stays:\n{on}"
        );
        assert!(on.contains("api_base = \"http://127.0.0.1:9/v1\""), "{on}");
        assert!(on.contains("alias = \"otter-demo\""), "{on}");

        // Nothing to change: the file is not written again (its old mtime stays).
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("set the mtime");
        refresh_vibe_config(&config(true), &home).expect("demo still on");
        assert_eq!(read(), on);
        assert_eq!(
            std::fs::metadata(&path).and_then(|m| m.modified()).ok(),
            Some(old)
        );

        refresh_vibe_config(&config(false), &home).expect("demo off");
        let off = read();
        assert!(!off.contains("otter-demo"), "{off}");
        assert!(off.contains("[[providers]]\nname = \"mock\""), "{off}");

        // A home without config.toml gets one.
        std::fs::remove_file(&path).expect("remove config.toml");
        refresh_vibe_config(&config(true), &home).expect("demo on, no file");
        assert!(read().contains("name = \"otter-demo\""));
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("/a \"b\"\\c"), "\"/a \\\"b\\\"\\\\c\"");
    }
}
