//! One workspace's checkpoint store: `objects/<2 hex>/<62 hex>` (contents by SHA-256),
//! `checkpoints/<id>.json` (manifests), and `latest` (the id of the newest, the stat cache of
//! the next checkpoint). Every file is written under a temporary name and renamed into place,
//! so a reader never sees half of one, and a crash leaves only a temporary file behind.
//!
//! The sweep ([`Store::sweep`]) deletes manifests no one needs and the objects no manifest it
//! keeps can refer to, without reading the manifests it keeps. It can, because of one rule: a
//! manifest's mtime is the time its checkpoint was taken (`taken_at`), and every object a
//! checkpoint refers to has an mtime no older than that (the take *touches* it, whether it wrote
//! it, found it already stored, or kept it from the stat cache; a touch never moves an mtime
//! back). So an object older than the oldest manifest kept is in no manifest kept. A take and
//! each step of a sweep exclude each other with `flock` on the store's `lock` file
//! ([`Store::lock`]); an object a take touches between two steps is newer than the sweep, and
//! stays.
//! Manifests written before Otter touched objects (a store from an older Otter) are listed, on
//! the first take that touches, in `untouched`: the sweep reads those it keeps, and keeps what
//! they name.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, Flock, FlockArg};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{CheckpointError, CheckpointId, Manifest, io};

pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn object(&self, hash: &str) -> Result<PathBuf, CheckpointError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CheckpointError::Damaged(format!("object name {hash:?}")));
        }
        Ok(self.dir.join("objects").join(&hash[..2]).join(&hash[2..]))
    }

    fn manifest(&self, id: CheckpointId) -> PathBuf {
        self.dir.join("checkpoints").join(format!("{id}.json"))
    }

    /// Whether the object `hash` is stored; if it is, its mtime is made no older than `stamp`
    /// (the `taken_at` of the checkpoint that refers to it).
    pub(super) fn touch(&self, hash: &str, stamp: SystemTime) -> Result<bool, CheckpointError> {
        let path = self.object(hash)?;
        let meta = match path.symlink_metadata() {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        if mtime(&meta) < stamp {
            set_mtime(&path, stamp).map_err(io(format!("touching {}", path.display())))?;
        }
        Ok(true)
    }

    /// Stores `content` (once: an object already there is kept, and touched) for a checkpoint
    /// taken at `stamp`, and returns its hash.
    pub(super) fn put(&self, content: &[u8], stamp: SystemTime) -> Result<String, CheckpointError> {
        let hash = hex(&Sha256::digest(content));
        if !self.touch(&hash, stamp)? {
            write_new(&self.object(&hash)?, content, Some(stamp))?;
        }
        Ok(hash)
    }

    /// The object `hash`, checked against its name.
    pub(super) fn get(&self, hash: &str) -> Result<Vec<u8>, CheckpointError> {
        let path = self.object(hash)?;
        let content = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
        if hex(&Sha256::digest(&content)) != hash {
            return Err(CheckpointError::Damaged(format!(
                "{} does not hash to its name",
                path.display()
            )));
        }
        Ok(content)
    }

    /// Writes `manifest` (its mtime its `taken_at`) and makes it the latest.
    pub(super) fn save(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let json = serde_json::to_vec(manifest)
            .map_err(|e| CheckpointError::Damaged(format!("encoding a manifest: {e}")))?;
        write_new(
            &self.manifest(manifest.id),
            &json,
            Some(manifest.taken_at.into()),
        )?;
        write_new(
            &self.dir.join("latest"),
            manifest.id.to_string().as_bytes(),
            None,
        )
    }

    pub(super) fn load(&self, id: CheckpointId) -> Result<Manifest, CheckpointError> {
        let path = self.manifest(id);
        let json = match std::fs::read(&path) {
            Ok(json) => json,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::NotFound(id));
            }
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_slice(&json)
            .map_err(|e| CheckpointError::Damaged(format!("{}: {e}", path.display())))
    }

    /// The newest checkpoint, if any (and readable: a damaged one only costs the stat cache).
    pub(super) fn latest(&self) -> Result<Option<Manifest>, CheckpointError> {
        let Ok(text) = std::fs::read_to_string(self.dir.join("latest")) else {
            return Ok(None);
        };
        let Ok(id) = Uuid::parse_str(text.trim()) else {
            return Ok(None);
        };
        match self.load(CheckpointId(id)) {
            Ok(manifest) => Ok(Some(manifest)),
            Err(CheckpointError::NotFound(_) | CheckpointError::Damaged(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the store's lock, made with the store if need be; waits for it as long as it takes.
    pub(super) fn lock(&self) -> Result<Lock, CheckpointError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(format!("creating {}", self.dir.display())))?;
        let file = self.lock_file()?.ok_or_else(|| {
            io(format!("opening {}", self.dir.join("lock").display()))(
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        self.acquire(file, None)
    }

    /// A sweep's lock: `None` when the store is gone (its workspace was deleted meanwhile;
    /// nothing is made again), `Busy` when it could not be had within `wait`.
    fn try_lock(&self, wait: Duration) -> Result<Option<Lock>, CheckpointError> {
        match self.lock_file()? {
            Some(file) => self
                .acquire(file, Some(std::time::Instant::now() + wait))
                .map(Some),
            None => Ok(None),
        }
    }

    /// The store's `lock` file, made if the store's folder is there; `None` if it is not.
    fn lock_file(&self) -> Result<Option<std::fs::File>, CheckpointError> {
        let path = self.dir.join("lock");
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("opening {}", path.display()))(e)),
        }
    }

    fn acquire(
        &self,
        mut file: std::fs::File,
        deadline: Option<std::time::Instant>,
    ) -> Result<Lock, CheckpointError> {
        loop {
            let how = if deadline.is_some() {
                FlockArg::LockExclusiveNonblock
            } else {
                FlockArg::LockExclusive
            };
            match Flock::lock(file, how) {
                Ok(held) => return Ok(Lock { _held: held }),
                Err((back, Errno::EINTR)) => file = back,
                Err((back, Errno::EWOULDBLOCK)) => match deadline {
                    Some(at) if std::time::Instant::now() < at => {
                        std::thread::sleep(Duration::from_millis(20));
                        file = back;
                    }
                    _ => return Err(CheckpointError::Busy),
                },
                Err((_, errno)) => {
                    let path = self.dir.join("lock");
                    return Err(io(format!("locking {}", path.display()))(errno.into()));
                }
            }
        }
    }

    /// Before a take touches anything: a store that has never been touched lists the manifests
    /// it already holds in `untouched` (their objects have no mtime the sweep could trust).
    /// Under the lock.
    pub(super) fn start_touching(&self) -> Result<(), CheckpointError> {
        let list = self.dir.join("untouched");
        if list.symlink_metadata().is_ok() {
            return Ok(());
        }
        let text: String = self
            .manifests()?
            .iter()
            .map(|id| format!("{id}\n"))
            .collect();
        write_new(&list, text.as_bytes(), None)
    }

    /// The ids of every manifest stored.
    fn manifests(&self) -> Result<Vec<CheckpointId>, CheckpointError> {
        let found = entries(&self.dir.join("checkpoints"))?;
        Ok(found
            .into_iter()
            .filter_map(|(name, _, _)| manifest_id(&name))
            .collect())
    }

    /// Deletes the manifests that are not the latest, not in `keep` and older than
    /// `older_than`, then every object that no manifest kept can refer to (and temporary files
    /// older than `older_than`). The lock is taken for each step alone (the list of manifests,
    /// then each of the 256 folders of objects), waiting up to `wait` for it each time, so that
    /// a take waits for one step at most: an object a take touches between two steps is newer
    /// than the sweep, and stays. The manifests forgotten are deleted between the steps.
    pub(super) fn sweep(
        &self,
        keep: &HashSet<CheckpointId>,
        older_than: SystemTime,
        wait: Duration,
    ) -> Result<Swept, CheckpointError> {
        let started = SystemTime::now();
        let mut swept = Swept::default();
        let (forgotten, named, oldest_kept) = {
            let Some(_lock) = self.try_lock(wait)? else {
                return Ok(swept);
            };
            self.forget(keep, older_than)?
        };
        // Outside the lock: no take reads a manifest but `latest`, which is never among them.
        for path in forgotten {
            remove(&path)?;
            swept.checkpoints += 1;
        }
        // An object older than every manifest kept (and than the sweep), and named by none of
        // the untouched ones, is in no manifest kept.
        let keep_from = oldest_kept.map_or(started, |o| o.min(started));
        for (prefix, meta, path) in entries(&self.dir.join("objects"))? {
            if !meta.is_dir() || prefix.len() != 2 {
                continue;
            }
            let Some(_lock) = self.try_lock(wait)? else {
                return Ok(swept);
            };
            for (rest, meta, path) in entries(&path)? {
                let at = mtime(&meta);
                if rest.starts_with(".tmp-") {
                    if at < older_than {
                        remove(&path)?;
                    }
                    continue;
                }
                if at >= keep_from || named.contains(&format!("{prefix}{rest}")) {
                    continue;
                }
                remove(&path)?;
                swept.objects += 1;
                swept.bytes += meta.len();
            }
        }
        Ok(swept)
    }

    /// The sweep's first step: the manifests no one keeps (to delete), the objects the
    /// untouched manifests kept name, and the oldest `taken_at` of the others kept. Under the
    /// lock.
    #[allow(clippy::type_complexity)]
    fn forget(
        &self,
        keep: &HashSet<CheckpointId>,
        older_than: SystemTime,
    ) -> Result<(Vec<PathBuf>, HashSet<String>, Option<SystemTime>), CheckpointError> {
        let latest = std::fs::read_to_string(self.dir.join("latest"))
            .ok()
            .and_then(|text| Uuid::parse_str(text.trim()).ok())
            .map(CheckpointId);
        // `None`: the store was never touched, so every manifest is one to read.
        let untouched: Option<HashSet<CheckpointId>> =
            std::fs::read_to_string(self.dir.join("untouched"))
                .ok()
                .map(|text| {
                    text.lines()
                        .filter_map(|l| Uuid::parse_str(l.trim()).ok())
                        .map(CheckpointId)
                        .collect()
                });
        let mut oldest_kept: Option<SystemTime> = None;
        let mut named: HashSet<String> = HashSet::new();
        let mut still_untouched = Vec::new();
        let mut forgotten = Vec::new();
        for (name, meta, path) in entries(&self.dir.join("checkpoints"))? {
            let at = mtime(&meta);
            let Some(id) = manifest_id(&name) else {
                if name.starts_with(".tmp-") && at < older_than {
                    remove(&path)?;
                }
                continue;
            };
            if Some(id) != latest && !keep.contains(&id) && at < older_than {
                forgotten.push(path);
                continue;
            }
            if untouched.as_ref().is_none_or(|u| u.contains(&id)) {
                let manifest = self.load(id)?;
                named.extend(manifest.files.into_values().map(|e| e.hash));
                still_untouched.push(id);
            } else {
                oldest_kept = Some(oldest_kept.map_or(at, |o| o.min(at)));
            }
        }
        if untouched
            .as_ref()
            .is_some_and(|u| u.len() != still_untouched.len())
        {
            let text: String = still_untouched.iter().map(|id| format!("{id}\n")).collect();
            write_new(&self.dir.join("untouched"), text.as_bytes(), None)?;
        }
        Ok((forgotten, named, oldest_kept))
    }

    pub(super) fn remove(&self) -> Result<(), CheckpointError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("removing {}", self.dir.display()))(e)),
        }
    }
}

/// The store's lock, held until dropped.
pub(super) struct Lock {
    _held: Flock<std::fs::File>,
}

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Manifests.
    pub checkpoints: u64,
    /// Objects.
    pub objects: u64,
    /// The objects' bytes.
    pub bytes: u64,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, other: Swept) {
        self.checkpoints += other.checkpoints;
        self.objects += other.objects;
        self.bytes += other.bytes;
    }
}

/// The entries of `dir` (none when it does not exist): name, `lstat`, path.
fn entries(dir: &Path) -> Result<Vec<(String, std::fs::Metadata, PathBuf)>, CheckpointError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
    };
    let mut found = Vec::new();
    for entry in read {
        let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
        let path = entry.path();
        let meta = match path.symlink_metadata() {
            Ok(meta) => meta,
            // Removed meanwhile (another sweep's temporary file, a rename).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        found.push((name, meta, path));
    }
    Ok(found)
}

/// The id of the manifest named `name` (`<id>.json`).
fn manifest_id(name: &str) -> Option<CheckpointId> {
    let id = name.strip_suffix(".json")?;
    Uuid::parse_str(id).ok().map(CheckpointId)
}

fn remove(path: &Path) -> Result<(), CheckpointError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

/// `meta`'s mtime; now, were it unknown (so that the sweep keeps what it cannot date).
fn mtime(meta: &std::fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or_else(|_| SystemTime::now())
}

/// Sets `path`'s mtime (never following a symlink), leaving its atime alone.
fn set_mtime(path: &Path, at: SystemTime) -> std::io::Result<()> {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    utimensat(
        AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::from_duration(since),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}

/// Writes `content` to `path` through a temporary name in the same directory (made, mode 0700,
/// with its parents), its mtime `mtime` when given, then renames it into place.
fn write_new(
    path: &Path,
    content: &[u8],
    mtime: Option<SystemTime>,
) -> Result<(), CheckpointError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io(format!("creating {}", parent.display())))?;
    let fresh = parent.join(format!(".tmp-{}", Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&fresh)?;
        file.write_all(content)?;
        if let Some(at) = mtime {
            file.set_modified(at)?;
        }
        std::fs::rename(&fresh, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    written.map_err(io(format!("writing {}", path.display())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
