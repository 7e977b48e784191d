//! One workspace's checkpoint store: `objects/<2 hex>/<62 hex>` (contents by SHA-256),
//! `checkpoints/<id>.json` (manifests), and `latest` (the id of the newest, the stat cache of
//! the next checkpoint). Every file is written under a temporary name and renamed into place,
//! so a reader never sees half of one, and a crash leaves only a temporary file behind.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

    pub(super) fn has(&self, hash: &str) -> bool {
        self.object(hash).is_ok_and(|p| p.is_file())
    }

    /// Stores `content` (once: an object already there is kept) and returns its hash.
    pub(super) fn put(&self, content: &[u8]) -> Result<String, CheckpointError> {
        let hash = hex(&Sha256::digest(content));
        let path = self.object(&hash)?;
        if !path.is_file() {
            write_new(&path, content)?;
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

    /// Writes `manifest` and makes it the latest.
    pub(super) fn save(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let json = serde_json::to_vec(manifest)
            .map_err(|e| CheckpointError::Damaged(format!("encoding a manifest: {e}")))?;
        write_new(&self.manifest(manifest.id), &json)?;
        write_new(&self.dir.join("latest"), manifest.id.to_string().as_bytes())
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

    pub(super) fn remove(&self) -> Result<(), CheckpointError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("removing {}", self.dir.display()))(e)),
        }
    }
}

/// Writes `content` to `path` through a temporary name in the same directory (made, mode 0700,
/// with its parents), then renames it into place.
fn write_new(path: &Path, content: &[u8]) -> Result<(), CheckpointError> {
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
