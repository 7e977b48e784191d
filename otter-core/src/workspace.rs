//! Workspaces on disk: checking a requested path against `OTTER_ALLOWED_ROOTS` (and making it
//! there, never elsewhere), checking a registered workspace's directory each time it is used
//! ([`open_registered`], for the file and command APIs and for the worker alike), and
//! provisioning the workspace's own `VIBE_HOME` (DESIGN.md §6), whose `config.toml` the worker
//! brings up to date before each run ([`refresh_vibe_config`]).
//!
//! The roots are compared in their canonical form, whichever way they and the path are
//! spelled: a root that is itself a symlink is the directory it leads to.
//!
//! When Otter runs as root, what it creates here belongs to the job user (`OTTER_JOB_USER`), who
//! runs the workspace's jobs and commands: the `VIBE_HOME`, and the workspace directory when
//! Otter made it. An existing directory registered as a workspace is never given away: its
//! owner decides who may write it.

use std::path::{Component, Path, PathBuf};

use crate::beneath::{self, Dir, Kind, MAX_NAME_BYTES, WalkError};
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
    /// A symlink on the path leads outside the allowed root the path is spelled in.
    #[error("path {path} leads outside the allowed roots ({roots}) through a symbolic link")]
    LeadsOut {
        /// The path.
        path: String,
        /// The allowed roots, `:`-separated.
        roots: String,
    },
    /// The operating system denied access to the path (or it lies on a read-only filesystem).
    #[error("{0}")]
    Forbidden(String),
    /// A registered workspace's directory cannot be used now: gone, replaced by a link, no
    /// longer a directory or no longer inside the allowed roots.
    #[error("{0}")]
    Unusable(String),
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

/// The message for a name longer than the filesystem takes.
pub(crate) fn name_too_long(len: usize) -> String {
    format!(
        "a name in the path is {len} bytes long, but names are at most {MAX_NAME_BYTES} bytes \
         (the filesystem's limit)"
    )
}

/// Checks a client-given workspace path and returns its canonical form: absolute, no NUL, not
/// too long (in all, and in each name), an existing directory, and, when `OTTER_ALLOWED_ROOTS`
/// is set, inside one of them after symlinks are resolved.
///
/// With `create`, missing directories are made, and with allowed roots set, only beneath the
/// root the path is spelled in: the path is walked one name at a time from that root's
/// descriptor (see [`beneath`]), symlinks are followed only while they stay inside it, and each
/// missing directory is made in the directory the walk holds. Nothing is made outside the roots.
///
/// A directory Otter made (the last one of the path) is given to the job user.
pub fn resolve_path(config: &Config, raw: &str, create: bool) -> Result<PathBuf, WorkspaceError> {
    let existed = !raw.is_empty() && std::fs::symlink_metadata(raw).is_ok();
    let path = check_or_create(config, raw, create)?;
    if create
        && !existed
        && let Some(user) = JobUser::resolve(&config.job_user)?
    {
        user.give_dir(&path)?;
    }
    Ok(path)
}

/// [`resolve_path`] but for giving what it made away.
fn check_or_create(config: &Config, raw: &str, create: bool) -> Result<PathBuf, WorkspaceError> {
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
    if let Some(len) = path
        .components()
        .map(|c| c.as_os_str().len())
        .find(|&len| len > MAX_NAME_BYTES)
    {
        return Err(WorkspaceError::InvalidPath(name_too_long(len)));
    }
    if create {
        if config.allowed_roots.is_empty() {
            // No root to stay inside: any place the server may write is acceptable.
            std::fs::create_dir_all(path).map_err(|e| refused(raw, "creating", e))?;
        } else if let Some(made) = create_beneath_a_root(config, raw, path)? {
            return Ok(made);
        } else if path.canonicalize().is_err() {
            // Not spelled under a root, and missing: it would be made outside them.
            return Err(not_allowed(config, raw));
        }
        // Not spelled under a root, but it exists: checked below like any existing path.
    }
    let canonical = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WorkspaceError::InvalidPath(format!(
            "{raw} does not exist (pass \"create\": true to create it)"
        )),
        _ => refused(raw, "resolving", e),
    })?;
    if !canonical.is_dir() {
        return Err(WorkspaceError::InvalidPath(format!(
            "{raw} is not a directory"
        )));
    }
    check_allowed(config, &canonical)?;
    Ok(canonical)
}

/// Makes `path` (with its missing parents) beneath the allowed root it is spelled in, as that
/// root is configured or in its canonical form; `None` when it is spelled in none.
fn create_beneath_a_root(
    config: &Config,
    raw: &str,
    path: &Path,
) -> Result<Option<PathBuf>, WorkspaceError> {
    let inside = canonical_roots(config)
        .into_iter()
        .find_map(|(given, canonical)| {
            let rest = path
                .strip_prefix(&given)
                .or_else(|_| path.strip_prefix(&canonical))
                .ok()?;
            Some((canonical, rest.to_path_buf()))
        });
    let Some((root, rest)) = inside else {
        return Ok(None);
    };
    let base =
        Dir::open(&root).map_err(|e| refused(raw, "opening the allowed root of", e.into()))?;
    let names: Vec<_> = rest.iter().collect();
    let found = beneath::resolve_or_create(&base, &names).map_err(|e| match e {
        WalkError::Escapes => WorkspaceError::LeadsOut {
            path: raw.to_owned(),
            roots: roots_text(config),
        },
        WalkError::NotADirectory => {
            WorkspaceError::InvalidPath(format!("{raw} is not a directory: a part of it is a file"))
        }
        WalkError::NameTooLong => WorkspaceError::InvalidPath(name_too_long(MAX_NAME_BYTES + 1)),
        WalkError::TooManyLinks => {
            WorkspaceError::InvalidPath(format!("{raw} has too many levels of symbolic links"))
        }
        WalkError::Changed => WorkspaceError::InvalidPath(format!(
            "{raw} changed while it was being created; try again"
        )),
        WalkError::Os(e) => refused(raw, "creating", e),
    })?;
    if found.kind() != Kind::Directory {
        return Err(WorkspaceError::InvalidPath(format!(
            "{raw} is not a directory"
        )));
    }
    let real = found.path_in(&base);
    // The walk kept it beneath the root; say so only of a path that really is there.
    check_allowed(config, &real)?;
    Ok(Some(real))
}

/// An error of the filesystem about the client's path `raw`, by kind: what the client can cause
/// (a file where a directory should be, a path the server may not touch) is a refusal, the rest
/// a failure.
fn refused(raw: &str, doing: &str, e: std::io::Error) -> WorkspaceError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            WorkspaceError::InvalidPath(format!("{raw} is not a directory: a part of it is a file"))
        }
        ErrorKind::InvalidFilename => {
            WorkspaceError::InvalidPath(name_too_long(MAX_NAME_BYTES + 1))
        }
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            WorkspaceError::Forbidden(format!("{doing} {raw}: {e}"))
        }
        _ if e.raw_os_error() == Some(libc::ELOOP) => {
            WorkspaceError::InvalidPath(format!("{raw} has too many levels of symbolic links"))
        }
        _ => WorkspaceError::Io {
            what: format!("{doing} {raw}"),
            source: e,
        },
    }
}

/// Each allowed root as configured, with its canonical form (the configured one when it cannot
/// be resolved, e.g. it does not exist yet).
fn canonical_roots(config: &Config) -> Vec<(PathBuf, PathBuf)> {
    config
        .allowed_roots
        .iter()
        .map(|root| {
            let canonical = root.canonicalize().unwrap_or_else(|_| root.clone());
            (root.clone(), canonical)
        })
        .collect()
}

fn roots_text(config: &Config) -> String {
    config
        .allowed_roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn not_allowed(config: &Config, path: &str) -> WorkspaceError {
    WorkspaceError::NotAllowed {
        path: path.to_owned(),
        roots: roots_text(config),
    }
}

/// Checks that the canonical `path` lies under one of `OTTER_ALLOWED_ROOTS`, each resolved to
/// its canonical form; any path passes when none are set.
pub fn check_allowed(config: &Config, path: &Path) -> Result<(), WorkspaceError> {
    if config.allowed_roots.is_empty() {
        return Ok(());
    }
    let inside = canonical_roots(config)
        .iter()
        .any(|(_, canonical)| path.starts_with(canonical));
    if inside {
        Ok(())
    } else {
        Err(not_allowed(config, &path.display().to_string()))
    }
}

/// Checks a registered workspace's directory at the moment it is about to be used, and opens
/// it: it must still exist, still be a directory, still be its own canonical path (not
/// replaced by a symlink since it was registered) and still lie inside `OTTER_ALLOWED_ROOTS`.
/// The file and command APIs call it before every request, and the worker before it starts vibe
/// or `setup.sh` there. The returned descriptor is the directory that was checked: walk beneath
/// it ([`beneath`]) rather than spelling the path again.
pub fn open_registered(config: &Config, stored: &str) -> Result<Dir, WorkspaceError> {
    let unusable =
        |why: String| WorkspaceError::Unusable(format!("the workspace directory {stored} {why}"));
    let stored_path = Path::new(stored);
    let canonical = stored_path
        .canonicalize()
        .map_err(|e| unusable(format!("cannot be used: {e}")))?;
    if canonical != stored_path {
        return Err(unusable(
            "was replaced by a link since it was registered".to_owned(),
        ));
    }
    let dir = Dir::open(&canonical).map_err(|e| match e {
        nix::errno::Errno::ELOOP => {
            unusable("was replaced by a link since it was registered".to_owned())
        }
        nix::errno::Errno::ENOTDIR => unusable("is no longer a directory".to_owned()),
        e => unusable(format!("cannot be used: {}", std::io::Error::from(e))),
    })?;
    // Where /proc says where the descriptor is, it must be the path checked above (a parent
    // swapped for a link in between shows here).
    if dir.real_path().is_some_and(|real| real != canonical) {
        return Err(unusable(
            "was replaced by a link since it was registered".to_owned(),
        ));
    }
    check_allowed(config, &canonical).map_err(|e| {
        WorkspaceError::Unusable(format!("the workspace directory is no longer allowed: {e}"))
    })?;
    Ok(dir)
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
