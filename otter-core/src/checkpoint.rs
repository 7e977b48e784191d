//! Checkpoints of a workspace's files: what a job changed, and undo.
//!
//! Before a run and after it ends (`setup.sh` included), the worker takes a checkpoint of the
//! workspace: a manifest of every file (path, content hash, executable bit, symlink target) whose
//! contents go into a content-addressed store of Otter's own, outside the workspace
//! (`OTTER_CHECKPOINT_DIR`, one directory per workspace). The workspace's own `.git` is never
//! read or written: `.git/` is one of the [`DEFAULT_IGNORES`], with the heavy folders agents
//! make (`node_modules/`, `target/`, `.venv/`, …). The workspace's `.gitignore` files are
//! honoured as git would (nested ones too, without a git repository being needed), and files
//! over `OTTER_CHECKPOINT_MAX_FILE_BYTES` are listed as skipped, never stored.
//!
//! A checkpoint is incremental: a file whose `lstat` (size, mtime, ctime, inode) matches the
//! workspace's previous checkpoint keeps its hash without being read again, as git's index does
//! (ctime cannot be set back by a program, so a rewrite is always seen).
//!
//! Everything done in the workspace (walking it, reading a file, writing one back on a restore)
//! is done with the job user's filesystem rights ([`Isolation::as_job`]), never following a
//! symlink the job planted; the store is Otter's, written as Otter's own user.
//!
//! [`changes`](Checkpoints::changes) and [`diff`](Checkpoints::diff) compare two checkpoints
//! (the `diff` module); [`restore`](Checkpoints::restore) puts a checkpoint's files back, after
//! taking one of the present state so that the restore can itself be undone.
//!
//! [`sweep`](Checkpoints::sweep) is retention's (`OTTER_RETENTION`): it forgets the checkpoints
//! no job still needs and deletes the objects only they held (the `store` module says how it
//! knows which, without reading what it keeps).

mod diff;
mod store;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;
use crate::isolation::Isolation;
use crate::model::WorkspaceId;

pub use diff::{Change, ChangeStatus, Diff, Summary};
pub use store::Swept;

/// Folders a checkpoint never enters, whatever `.gitignore` says: the workspace's own git
/// repository (and nested ones), and the dependency and build folders agents fill.
pub const DEFAULT_IGNORES: &[&str] = &[
    ".git/",
    "node_modules/",
    "target/",
    ".venv/",
    "venv/",
    "__pycache__/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".tox/",
    ".gradle/",
    ".next/",
    ".cache/",
];

/// Why a checkpoint could not be taken, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// No such checkpoint of this workspace.
    #[error("no checkpoint {0} of this workspace")]
    NotFound(CheckpointId),
    /// A path asked for is not a relative path inside the workspace.
    #[error("invalid path {0:?}")]
    InvalidPath(String),
    /// The workspace's `.gitignore` could not be read as ignore rules.
    #[error("reading the ignore rules: {0}")]
    Ignore(#[from] ignore::Error),
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A stored checkpoint or object is not what Otter wrote.
    #[error("checkpoint store damaged: {0}")]
    Damaged(String),
    /// A sweep could not have the store's lock in time: a checkpoint of the workspace is being
    /// taken or restored.
    #[error("the workspace's checkpoint store is in use")]
    Busy,
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let what = what.into();
    move |source| CheckpointError::Io { what, source }
}

/// Identifies one checkpoint of a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct CheckpointId(pub Uuid);

impl std::fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a path holds in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A symbolic link; its target is the stored content.
    Symlink,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File or symlink.
    pub kind: EntryKind,
    /// SHA-256 of the content (of the target, for a symlink), in hex: its name in the store.
    pub hash: String,
    /// Bytes of content.
    pub size: u64,
    /// Any execute bit set (git's 100755).
    pub executable: bool,
    /// What the file's `lstat` said when it was read: an unchanged one is not read again.
    stat: StatKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StatKey {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl StatKey {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// A checkpoint: every file of the workspace that is not ignored, by path (`/`-separated,
/// relative to the workspace).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Its id.
    pub id: CheckpointId,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// The files stored.
    pub files: BTreeMap<String, Entry>,
    /// Files over the size cap, with their size: listed, never stored (a restore leaves them
    /// alone).
    pub skipped: BTreeMap<String, u64>,
}

/// The result of [`Checkpoints::restore`].
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The checkpoint taken of the workspace just before the restore: restoring it undoes this.
    pub checkpoint_id: CheckpointId,
    /// Files written back (added back or changed back).
    pub written: Vec<String>,
    /// Files removed (not in the checkpoint restored).
    pub removed: Vec<String>,
    /// Paths left alone, each with why: over the size cap (then or now), or a file that could not
    /// be put back. Ignored paths are never touched and not listed.
    pub left_alone: Vec<LeftAlone>,
}

/// A path [`Checkpoints::restore`] did not touch, and why.
#[derive(Debug, Clone, Serialize)]
pub struct LeftAlone {
    /// The path.
    pub path: String,
    /// Why, in words.
    pub reason: String,
}

/// The checkpoint store of every workspace (`OTTER_CHECKPOINT_DIR`).
#[derive(Debug, Clone)]
pub struct Checkpoints {
    root: PathBuf,
    max_file_bytes: u64,
}

impl Checkpoints {
    /// A store in `root` (made when first written), storing files up to `max_file_bytes`.
    pub fn new(root: impl Into<PathBuf>, max_file_bytes: u64) -> Self {
        Self {
            root: root.into(),
            max_file_bytes,
        }
    }

    /// `OTTER_CHECKPOINT_DIR` and `OTTER_CHECKPOINT_MAX_FILE_BYTES`.
    pub fn from_config(config: &Config) -> Self {
        let dir = config
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| config.vibe_home_base.join(".checkpoints"));
        Self::new(dir, config.checkpoint_max_file_bytes)
    }

    fn store(&self, workspace: WorkspaceId) -> store::Store {
        store::Store::new(self.root.join(workspace.to_string()))
    }

    /// Takes a checkpoint of the workspace `workspace` in `dir`. Blocking: call it from a
    /// blocking thread.
    pub fn take(
        &self,
        isolation: &Isolation,
        workspace: WorkspaceId,
        dir: &Path,
    ) -> Result<Manifest, CheckpointError> {
        let store = self.store(workspace);
        let _lock = store.lock()?;
        self.take_locked(&store, isolation, dir)
    }

    fn take_locked(
        &self,
        store: &store::Store,
        isolation: &Isolation,
        dir: &Path,
    ) -> Result<Manifest, CheckpointError> {
        store.start_touching()?;
        let previous = store.latest()?;
        let found = isolation.as_job(|| walk(dir))?;
        let mut manifest = Manifest {
            id: CheckpointId(Uuid::new_v4()),
            taken_at: Utc::now(),
            files: BTreeMap::new(),
            skipped: BTreeMap::new(),
        };
        let stamp = manifest.taken_at.into();
        for (path, meta) in found {
            let stat = StatKey::of(&meta);
            let kind = if meta.file_type().is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::File
            };
            let executable = kind == EntryKind::File && meta.permissions().mode() & 0o111 != 0;
            if kind == EntryKind::File && meta.len() > self.max_file_bytes {
                manifest.skipped.insert(path, meta.len());
                continue;
            }
            if let Some(old) = previous.as_ref().and_then(|p| p.files.get(&path))
                && old.stat == stat
                && old.kind == kind
                && store.touch(&old.hash, stamp)?
            {
                let entry = Entry {
                    executable,
                    ..old.clone()
                };
                manifest.files.insert(path, entry);
                continue;
            }
            let full = dir.join(&path);
            let content = isolation.as_job(|| read_entry(&full, kind, &meta, self.max_file_bytes));
            let (content, stat) = match content {
                Ok(Some(read)) => read,
                // Gone or replaced since the walk: what is there now is the next one's to see.
                Ok(None) => continue,
                Err(e) => return Err(io(format!("reading {}", full.display()))(e)),
            };
            if content.len() as u64 > self.max_file_bytes {
                manifest.skipped.insert(path, content.len() as u64);
                continue;
            }
            let hash = store.put(&content, stamp)?;
            manifest.files.insert(
                path,
                Entry {
                    kind,
                    hash,
                    size: content.len() as u64,
                    executable,
                    stat,
                },
            );
        }
        store.save(&manifest)?;
        Ok(manifest)
    }

    /// The checkpoint `id` of `workspace`.
    pub fn load(
        &self,
        workspace: WorkspaceId,
        id: CheckpointId,
    ) -> Result<Manifest, CheckpointError> {
        self.store(workspace).load(id)
    }

    /// What changed from `before` to `after`, by path.
    pub fn changes(
        &self,
        workspace: WorkspaceId,
        before: CheckpointId,
        after: CheckpointId,
    ) -> Result<Vec<Change>, CheckpointError> {
        let store = self.store(workspace);
        diff::changes(&store, &store.load(before)?, &store.load(after)?)
    }

    /// The unified diff from `before` to `after` (of `path` alone when given), cut after
    /// `max_bytes` with a line that says so.
    pub fn diff(
        &self,
        workspace: WorkspaceId,
        before: CheckpointId,
        after: CheckpointId,
        path: Option<&str>,
        max_bytes: usize,
    ) -> Result<Diff, CheckpointError> {
        let store = self.store(workspace);
        diff::unified(
            &store,
            &store.load(before)?,
            &store.load(after)?,
            path,
            max_bytes,
        )
    }

    /// Puts the workspace's files back as they were in checkpoint `to`: files it does not have
    /// are removed (with directories that become empty), files it has are written back where
    /// they differ. A checkpoint of the present state is taken first ([`Restored::checkpoint_id`]).
    /// Ignored paths and files over the size cap are left alone. Blocking.
    pub fn restore(
        &self,
        isolation: &Isolation,
        workspace: WorkspaceId,
        dir: &Path,
        to: CheckpointId,
    ) -> Result<Restored, CheckpointError> {
        let store = self.store(workspace);
        // Held to the end: no sweep may take the objects of `target` meanwhile.
        let _lock = store.lock()?;
        let target = store.load(to)?;
        let now = self.take_locked(&store, isolation, dir)?;
        let mut restored = Restored {
            checkpoint_id: now.id,
            written: Vec::new(),
            removed: Vec::new(),
            left_alone: Vec::new(),
        };
        for path in now.files.keys() {
            if target.files.contains_key(path) {
                continue;
            }
            if target.skipped.contains_key(path) {
                // Listed below with the checkpoint's other files over the cap.
                continue;
            }
            match isolation.as_job(|| remove_file(dir, path)) {
                Ok(()) => restored.removed.push(path.clone()),
                Err(e) => restored.left_alone.push(LeftAlone {
                    path: path.clone(),
                    reason: format!("could not be removed: {e}"),
                }),
            }
        }
        for (path, entry) in &target.files {
            if now.files.get(path).is_some_and(|e| same_content(e, entry)) {
                continue;
            }
            if now.skipped.contains_key(path) {
                restored.left_alone.push(LeftAlone {
                    path: path.clone(),
                    reason: "over the size cap now".to_owned(),
                });
                continue;
            }
            let content = store.get(&entry.hash)?;
            match isolation.as_job(|| write_entry(dir, path, entry, &content)) {
                Ok(()) => restored.written.push(path.clone()),
                Err(e) => restored.left_alone.push(LeftAlone {
                    path: path.clone(),
                    reason: format!("could not be written: {e}"),
                }),
            }
        }
        for path in target.skipped.keys() {
            restored.left_alone.push(LeftAlone {
                path: path.clone(),
                reason: "over the size cap in the checkpoint restored".to_owned(),
            });
        }
        // A file over the cap that the checkpoint does not have is not removed either: its
        // content was never kept, so removing it could not be undone.
        for path in now.skipped.keys() {
            if !target.files.contains_key(path) && !target.skipped.contains_key(path) {
                restored.left_alone.push(LeftAlone {
                    path: path.clone(),
                    reason: "over the size cap now, and not in the checkpoint restored".to_owned(),
                });
            }
        }
        Ok(restored)
    }

    /// Forgets the checkpoints of `workspace` that are not its latest, not in `keep` and were
    /// taken before `older_than`, and deletes every object that only they held. A take or a
    /// restore of the workspace waits for one step of it at most; the sweep waits up to `wait`
    /// for one to end, each step ([`CheckpointError::Busy`] after that). A workspace with no
    /// store has nothing to sweep. Blocking.
    pub fn sweep(
        &self,
        workspace: WorkspaceId,
        keep: &std::collections::HashSet<CheckpointId>,
        older_than: std::time::SystemTime,
        wait: std::time::Duration,
    ) -> Result<Swept, CheckpointError> {
        self.store(workspace).sweep(keep, older_than, wait)
    }

    /// Forgets every checkpoint of `workspace` (it was deleted).
    pub fn remove_workspace(&self, workspace: WorkspaceId) -> Result<(), CheckpointError> {
        self.store(workspace).remove()
    }
}

fn same_content(a: &Entry, b: &Entry) -> bool {
    a.kind == b.kind && a.hash == b.hash && a.executable == b.executable
}

/// Every file and symlink of `dir` a checkpoint holds, with its `lstat`, sorted by path.
fn walk(dir: &Path) -> Result<Vec<(String, std::fs::Metadata)>, CheckpointError> {
    let mut overrides = ignore::overrides::OverrideBuilder::new(dir);
    for pattern in DEFAULT_IGNORES {
        overrides.add(&format!("!{pattern}"))?;
    }
    let walker = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .git_ignore(true)
        .require_git(false)
        .follow_links(false)
        .same_file_system(true)
        .overrides(overrides.build()?)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut found = Vec::new();
    for entry in walker {
        let entry = entry?;
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if !(kind.is_file() || kind.is_symlink()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(dir) else {
            continue;
        };
        // Names that are not UTF-8 cannot be shown by the API: such files are ignored.
        let Some(rel) = rel.to_str() else {
            continue;
        };
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(io(format!("reading {}", entry.path().display())))?;
        found.push((rel.to_owned(), meta));
    }
    Ok(found)
}

/// The content of the file or symlink `path` that the walk saw as `seen`, and its `lstat` when
/// read; `None` when it is gone or no longer the same kind of thing.
fn read_entry(
    path: &Path,
    kind: EntryKind,
    seen: &std::fs::Metadata,
    max_bytes: u64,
) -> std::io::Result<Option<(Vec<u8>, StatKey)>> {
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        ) || e.raw_os_error() == Some(libc::ELOOP)
    };
    match kind {
        EntryKind::Symlink => {
            let target = match std::fs::read_link(path) {
                Ok(target) => target,
                Err(e) if gone(&e) || e.kind() == std::io::ErrorKind::InvalidInput => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let meta = path.symlink_metadata()?;
            Ok(Some((
                target.into_os_string().into_encoded_bytes(),
                StatKey::of(&meta),
            )))
        }
        EntryKind::File => {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
            {
                Ok(file) => file,
                Err(e) if gone(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            if !meta.is_file() || meta.ino() != seen.ino() || meta.dev() != seen.dev() {
                return Ok(None);
            }
            let mut content = Vec::with_capacity(meta.len().min(max_bytes) as usize);
            file.take(max_bytes + 1).read_to_end(&mut content)?;
            Ok(Some((content, StatKey::of(&meta))))
        }
    }
}

/// Checks that every directory on the way to `rel` in `dir` is a directory, not a symlink (a
/// restore writes only where the checkpoint's own files were), and returns the full path.
fn checked(dir: &Path, rel: &str) -> std::io::Result<PathBuf> {
    let mut at = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(std::io::Error::other("not a relative path"));
    }
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        match at.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    at.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at)?;
            }
            Err(e) => return Err(e),
        }
    }
    at.push(parts[parts.len() - 1]);
    Ok(at)
}

fn remove_file(dir: &Path, rel: &str) -> std::io::Result<()> {
    let path = checked(dir, rel)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Directories the removal emptied go too, as with git.
    let mut parent = path.parent();
    while let Some(p) = parent {
        if p == dir || std::fs::remove_dir(p).is_err() {
            break;
        }
        parent = p.parent();
    }
    Ok(())
}

fn write_entry(dir: &Path, rel: &str, entry: &Entry, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = checked(dir, rel)?;
    // An empty directory where the file goes (its files were removed above) makes way.
    if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir(&path)?;
    }
    let parent = path.parent().unwrap_or(dir);
    let fresh = parent.join(format!(".otter-restore-{}", Uuid::new_v4().simple()));
    let made = match entry.kind {
        EntryKind::Symlink => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(content), &fresh)
        }
        EntryKind::File => (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(if entry.executable { 0o755 } else { 0o644 })
                .open(&fresh)?;
            file.write_all(content)?;
            file.sync_data()
        })(),
    };
    // rename replaces what is at `path` (a symlink itself, never what it points to).
    let renamed = made.and_then(|()| std::fs::rename(&fresh, &path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    renamed
}
