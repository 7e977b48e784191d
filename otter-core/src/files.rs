//! A workspace's files, for the API's file explorer (DESIGN.md §6): resolving a client's path
//! inside the workspace root, listing a directory tree and reading one file.
//!
//! A client path is refused before it touches the disk when it is absolute, names `..`, holds a
//! NUL byte or a backslash, is longer than [`MAX_PATH_BYTES`], has a name longer than
//! [`MAX_NAME_BYTES`], or has a component that would still mean `..` (or hold a separator) if
//! it were percent-decoded once more (see [`RelPath::parse`]). It is then walked one name at a
//! time from the descriptor of the workspace directory that [`open_workspace`] checked (see
//! [`beneath`]): a symlink is read from its own descriptor and followed only while every step
//! stays inside the root, so a link that leads out, even one that comes back in later, is
//! refused. What the walk finds is opened for what it is: a directory's listing is read through
//! its descriptor, a regular file is reopened from its directory and must still be the inode
//! that was checked, and a FIFO, socket or device is never opened at all. A name swapped while
//! it is being read ends in a 409 ([`FilesError::Changed`]), never in reading something else.
//!
//! Everything here is blocking filesystem work: call it from `spawn_blocking`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use nix::sys::stat::FileStat;
use serde::Serialize;

use crate::beneath::{self, Dir, Found, Kind, WalkError};
use crate::config::Config;
use crate::workspace::{self, WorkspaceError};

pub use crate::beneath::MAX_NAME_BYTES;
pub use crate::workspace::MAX_PATH_BYTES;

/// Largest file [`read_file`] returns.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most entries one [`tree`] answer holds.
pub const MAX_TREE_ENTRIES: usize = 5000;
/// Deepest [`tree`] listing.
pub const MAX_TREE_DEPTH: u32 = 16;

/// Why a path was refused or a file could not be read. The messages name the client's path,
/// never where a refused symlink points.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path is malformed (absolute, `..`, NUL, too long, …); the message says why.
    #[error("{0}")]
    InvalidPath(String),
    /// The path, or a symlink on the way, leads outside the workspace root.
    #[error("path {0:?} leads outside the workspace")]
    Escapes(String),
    /// Nothing exists at the path.
    #[error("path {0:?} does not exist")]
    NotFound(String),
    /// A directory was expected.
    #[error("path {0:?} is not a directory")]
    NotADirectory(String),
    /// A file was expected, and this is a directory.
    #[error("path {0:?} is a directory; list it with the tree endpoint")]
    IsADirectory(String),
    /// Neither a regular file nor a directory (a FIFO, socket or device).
    #[error("path {0:?} is not a regular file")]
    NotAFile(String),
    /// The file is larger than the cap.
    #[error("{path:?} is {size} bytes; files larger than {limit} bytes are not served")]
    TooLarge {
        /// The client's path.
        path: String,
        /// The file's size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// The operating system denied access.
    #[error("permission denied: {0:?}")]
    PermissionDenied(String),
    /// What the path names was replaced while it was being read (a rename race): asking again
    /// reads what is there now.
    #[error("path {0:?} changed while being read; try again")]
    Changed(String),
    /// The workspace's directory itself is gone, moved or no longer allowed.
    #[error("{0}")]
    Root(String),
    /// The server is short of a resource (file descriptors, memory): retrying later can work.
    #[error("{0}")]
    Unavailable(String),
    /// An unexpected filesystem failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl FilesError {
    /// Maps an error of the filesystem about the client's `path`, by kind: what a client (or a
    /// process in the workspace) can cause is an answer, a real failure stays a failure.
    fn from_io(path: &str, e: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let shown = path.to_owned();
        match e.kind() {
            ErrorKind::NotFound | ErrorKind::NotADirectory => FilesError::NotFound(shown),
            ErrorKind::PermissionDenied => FilesError::PermissionDenied(shown),
            ErrorKind::IsADirectory => FilesError::IsADirectory(shown),
            ErrorKind::InvalidFilename => FilesError::InvalidPath(name_too_long(path)),
            ErrorKind::WouldBlock | ErrorKind::StaleNetworkFileHandle => FilesError::Changed(shown),
            ErrorKind::OutOfMemory => {
                FilesError::Unavailable("the server is short of memory; retry shortly".to_owned())
            }
            _ => match e.raw_os_error() {
                // Opening a socket, or a device nobody serves.
                Some(libc::ENXIO | libc::ENODEV | libc::EOPNOTSUPP) => FilesError::NotAFile(shown),
                Some(libc::ENAMETOOLONG) => FilesError::InvalidPath(name_too_long(path)),
                Some(libc::ELOOP) => too_many_links(path),
                Some(libc::EMFILE | libc::ENFILE) => FilesError::Unavailable(
                    "the server has too many files open; retry shortly".to_owned(),
                ),
                _ => FilesError::Io {
                    what: format!("reading {path:?}"),
                    source: e,
                },
            },
        }
    }

    /// Maps why a walk to the client's `path` stopped.
    fn from_walk(path: &str, e: WalkError) -> Self {
        let shown = path.to_owned();
        match e {
            WalkError::Escapes => FilesError::Escapes(shown),
            WalkError::TooManyLinks => too_many_links(path),
            // A component on the way is a file: there is nothing at the path.
            WalkError::NotADirectory => FilesError::NotFound(shown),
            WalkError::NameTooLong => FilesError::InvalidPath(name_too_long(path)),
            WalkError::Changed => FilesError::Changed(shown),
            WalkError::Os(e) => FilesError::from_io(path, e),
        }
    }
}

fn name_too_long(path: &str) -> String {
    format!(
        "path {path:?} has a name that is too long: names are at most {MAX_NAME_BYTES} bytes \
         (the filesystem's limit)"
    )
}

fn too_many_links(path: &str) -> FilesError {
    FilesError::InvalidPath(format!(
        "path {path:?} has too many levels of symbolic links"
    ))
}

/// A client's path inside a workspace, checked (see [`RelPath::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelPath {
    parts: Vec<String>,
}

impl RelPath {
    /// Checks a client's path: relative to the workspace root (empty or `.` is the root), `/` as
    /// separator, at most [`MAX_PATH_BYTES`] bytes, no NUL byte, no backslash, no `..` component,
    /// and no component that would decode to `..` or hold a separator if it were percent-decoded
    /// again. The API decodes a query parameter exactly once; a proxy or client that decodes a
    /// second time would turn `%2e%2e` into `..`, so such names are refused rather than served.
    /// Empty and `.` components are dropped.
    pub fn parse(raw: &str) -> Result<Self, FilesError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(FilesError::InvalidPath(format!(
                "path is longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        if raw.contains('\0') {
            return Err(FilesError::InvalidPath(
                "path must not contain NUL bytes".to_owned(),
            ));
        }
        if raw.starts_with('/') {
            return Err(FilesError::InvalidPath(format!(
                "path must be relative to the workspace root, got the absolute path {raw:?}"
            )));
        }
        if raw.contains('\\') {
            return Err(FilesError::InvalidPath(format!(
                "path must use '/' as its separator; '\\' is not accepted (got {raw:?})"
            )));
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(FilesError::InvalidPath(format!(
                        "path must not contain '..' (got {raw:?})"
                    )));
                }
                _ if part.len() > MAX_NAME_BYTES => {
                    return Err(FilesError::InvalidPath(format!(
                        "path has a name of {} bytes, which is too long: names are at most \
                         {MAX_NAME_BYTES} bytes (the filesystem's limit)",
                        part.len()
                    )));
                }
                _ if decodes_to_traversal(part) => {
                    return Err(FilesError::InvalidPath(format!(
                        "path must not contain an encoded '..' or separator (got {raw:?}); \
                         percent-encode the path once, not twice"
                    )));
                }
                _ => parts.push(part.to_owned()),
            }
        }
        Ok(Self { parts })
    }

    /// The normalized path (`a/b`; empty for the root).
    pub fn as_string(&self) -> String {
        self.parts.join("/")
    }
}

/// The client-side path of `name` inside the directory `prefix` (empty for the root).
fn child_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Whether `part`, percent-decoded repeatedly, becomes `..` or gains a `/`, `\` or NUL.
fn decodes_to_traversal(part: &str) -> bool {
    let mut current = part.to_owned();
    // Each round removes at least one level of encoding; four levels is more than any real
    // double-decoding chain.
    for _ in 0..4 {
        if !current.contains('%') {
            return false;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            return false;
        }
        if decoded == ".." || decoded.contains(['/', '\\', '\0']) {
            return true;
        }
        current = decoded;
    }
    false
}

/// `%XX` sequences decoded (lossily as UTF-8); anything else kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a workspace's stored directory before it is used and opens it (see
/// [`workspace::open_registered`], which the worker calls too): it must still exist, still be a
/// directory, still be its own canonical path (not replaced by a symlink since it was
/// registered) and still lie inside `OTTER_ALLOWED_ROOTS`.
pub fn open_workspace(config: &Config, stored: &str) -> Result<Dir, FilesError> {
    workspace::open_registered(config, stored).map_err(|e| match e {
        WorkspaceError::Unusable(msg) => FilesError::Root(msg),
        other => FilesError::Root(other.to_string()),
    })
}

/// Like [`open_workspace`], for callers that need only the checked canonical path.
pub fn open_root(config: &Config, stored: &str) -> Result<PathBuf, FilesError> {
    open_workspace(config, stored).map(|dir| dir.path().to_path_buf())
}

/// Resolves `rel` inside the workspace `root`, following symlinks one step at a time; every
/// step must stay inside the root. Returns the real (symlink-free) path, which exists.
pub fn resolve(root: &Dir, rel: &RelPath) -> Result<PathBuf, FilesError> {
    let found = walk(root, rel)?;
    Ok(found.path_in(root))
}

/// Walks to `rel` beneath `root`.
fn walk(root: &Dir, rel: &RelPath) -> Result<Found, FilesError> {
    beneath::resolve(root, &rel.parts).map_err(|e| FilesError::from_walk(&rel.as_string(), e))
}

/// A modification time from a status.
fn modified(stat: &FileStat) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(stat.st_mtime, u32::try_from(stat.st_mtime_nsec).ok()?)
}

/// What a tree entry is. Symlinks are listed as such and never followed by the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link (read it through the file endpoint if it stays inside the workspace).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeEntry {
    /// The file name (lossily decoded when not UTF-8).
    pub name: String,
    /// Its path relative to the workspace root, `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (regular files only).
    pub size: Option<u64>,
    /// Last modification time.
    pub modified: Option<DateTime<Utc>>,
    /// A directory's entries, when the listing reached that deep (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<TreeEntry>>,
}

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tree {
    /// The listed directory, relative to the workspace root (empty for the root).
    pub path: String,
    /// Its entries: directories first, then by name.
    pub entries: Vec<TreeEntry>,
    /// Entries in the answer, at every level.
    pub entry_count: usize,
    /// Whether entries were left out to stay within the entry limit.
    pub truncated: bool,
}

/// An entry before it is nested: its children are indices into the listing's arena.
struct Node {
    entry: TreeEntry,
    /// Its real path below the root, one name per component (a listing's names are real).
    real: Vec<OsString>,
    children: Option<Vec<usize>>,
}

/// Lists the directory `rel` of the workspace `root`, `depth` levels deep (1 = its own
/// entries), with at most `max_entries` entries in all. Levels are filled breadth first, so a
/// large subdirectory cannot crowd out its siblings. Symlinks are listed, never entered.
pub fn tree(root: &Dir, rel: &RelPath, depth: u32, max_entries: usize) -> Result<Tree, FilesError> {
    let shown = rel.as_string();
    let dir = walk(root, rel)?;
    if dir.kind() != Kind::Directory {
        return Err(FilesError::NotADirectory(shown));
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut truncated = false;
    let top = read_level(&dir, &shown, &mut nodes, max_entries, &mut truncated)?;
    let mut queue: VecDeque<(usize, u32)> = top.iter().map(|&i| (i, 2)).collect();
    while let Some((index, level)) = queue.pop_front() {
        if level > depth || nodes[index].entry.kind != EntryKind::Directory {
            continue;
        }
        if nodes.len() >= max_entries {
            truncated = true;
            break;
        }
        let prefix = nodes[index].entry.path.clone();
        // Entered by its real names, following no symlink: a directory swapped for a link since
        // it was listed, or one that cannot be read, is listed without children.
        let Ok(sub) = beneath::open_real(root, &nodes[index].real) else {
            continue;
        };
        let Ok(children) = read_level(&sub, &prefix, &mut nodes, max_entries, &mut truncated)
        else {
            continue;
        };
        queue.extend(children.iter().map(|&i| (i, level + 1)));
        nodes[index].children = Some(children);
    }
    let entry_count = nodes.len();
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    let entries = top.iter().filter_map(|&i| nest(&mut slots, i)).collect();
    Ok(Tree {
        path: shown,
        entries,
        entry_count,
        truncated,
    })
}

/// Turns arena node `index` (and its descendants) into a nested entry.
fn nest(slots: &mut [Option<Node>], index: usize) -> Option<TreeEntry> {
    let node = slots.get_mut(index)?.take()?;
    let mut entry = node.entry;
    if let Some(children) = node.children {
        entry.children = Some(children.iter().filter_map(|&i| nest(slots, i)).collect());
    }
    Some(entry)
}

/// Reads the entries of the directory `dir` (the client's `shown`) into `nodes`, sorted,
/// within the budget; returns their indices. The listing and each entry's status are read
/// through the directory's descriptor: they are of the directory that was walked to.
fn read_level(
    dir: &Found,
    shown: &str,
    nodes: &mut Vec<Node>,
    max_entries: usize,
    truncated: &mut bool,
) -> Result<Vec<usize>, FilesError> {
    let mut listing = dir
        .open_listing()
        .map_err(|e| FilesError::from_walk(shown, e))?;
    let mut names: Vec<OsString> = Vec::new();
    for item in listing.iter() {
        let Ok(item) = item else { continue };
        let name = OsStr::from_bytes(item.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if nodes.len() + names.len() >= max_entries {
            *truncated = true;
            break;
        }
        names.push(name.to_owned());
    }
    let mut level: Vec<Node> = names
        .into_iter()
        .map(|raw| {
            // An entry removed since it was listed is still shown, as what it was: `other`.
            let stat = dir.stat_entry(&raw).ok();
            let kind = match stat.as_ref().map(Kind::of) {
                Some(Kind::Symlink) => EntryKind::Symlink,
                Some(Kind::Directory) => EntryKind::Directory,
                Some(Kind::File) => EntryKind::File,
                Some(Kind::Other) | None => EntryKind::Other,
            };
            let name = raw.to_string_lossy().into_owned();
            let mut real = dir.rel().to_vec();
            real.push(raw);
            Node {
                entry: TreeEntry {
                    path: child_path(shown, &name),
                    name,
                    kind,
                    size: stat
                        .as_ref()
                        .filter(|_| kind == EntryKind::File)
                        .and_then(|s| u64::try_from(s.st_size).ok()),
                    modified: stat.as_ref().and_then(modified),
                    children: None,
                },
                real,
                children: None,
            }
        })
        .collect();
    level.sort_by(|a, b| {
        let dir_first = |n: &Node| n.entry.kind != EntryKind::Directory;
        dir_first(a)
            .cmp(&dir_first(b))
            .then_with(|| {
                a.entry
                    .name
                    .to_lowercase()
                    .cmp(&b.entry.name.to_lowercase())
            })
            .then_with(|| a.entry.name.cmp(&b.entry.name))
    });
    let start = nodes.len();
    nodes.extend(level);
    Ok((start..nodes.len()).collect())
}

/// One file's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileContent {
    /// Its path relative to the workspace root.
    pub path: String,
    /// The file name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: Option<DateTime<Utc>>,
    /// Whether the content is binary (a NUL byte, or not valid UTF-8).
    pub binary: bool,
    /// The text; `null` for a binary file.
    pub content: Option<String>,
}

/// Reads the file `rel` of the workspace `root`: at most `max_bytes`, as text unless binary.
/// Only a regular file is opened; what is read is the file that was walked to.
pub fn read_file(root: &Dir, rel: &RelPath, max_bytes: u64) -> Result<FileContent, FilesError> {
    let shown = rel.as_string();
    if rel.parts.is_empty() {
        return Err(FilesError::IsADirectory(shown));
    }
    let found = walk(root, rel)?;
    match found.kind() {
        Kind::File => {}
        Kind::Directory => return Err(FilesError::IsADirectory(shown)),
        Kind::Symlink | Kind::Other => return Err(FilesError::NotAFile(shown)),
    }
    let too_large = |size| FilesError::TooLarge {
        path: shown.clone(),
        size,
        limit: max_bytes,
    };
    let measured = u64::try_from(found.stat().st_size).unwrap_or_default();
    if measured > max_bytes {
        return Err(too_large(measured));
    }
    let file = found
        .open_file()
        .map_err(|e| FilesError::from_walk(&shown, e))?;
    let meta = file
        .metadata()
        .map_err(|e| FilesError::from_io(&shown, e))?;
    let mut bytes = Vec::with_capacity(meta.len().min(max_bytes) as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FilesError::from_io(&shown, e))?;
    // The file grew since it was measured.
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    let size = bytes.len() as u64;
    let binary = bytes.contains(&0);
    let content = if binary {
        None
    } else {
        String::from_utf8(bytes).ok()
    };
    Ok(FileContent {
        name: rel.parts.last().cloned().unwrap_or_default(),
        path: shown,
        size,
        modified: meta.modified().ok().map(DateTime::<Utc>::from),
        binary: content.is_none(),
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> String {
        match RelPath::parse(raw) {
            Err(FilesError::InvalidPath(msg)) => msg,
            other => panic!("{raw:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn client_paths_are_normalized() {
        for (raw, want) in [
            ("", ""),
            (".", ""),
            ("./", ""),
            ("src", "src"),
            ("src//lib/./main.rs", "src/lib/main.rs"),
            ("src/", "src"),
            ("...", "..."),
            ("..foo", "..foo"),
            ("a%20b", "a%20b"),
            ("%2e", "%2e"),
        ] {
            assert_eq!(RelPath::parse(raw).expect(raw).as_string(), want, "{raw:?}");
        }
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for raw in [
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "./..",
            "a/b/../../..",
            "%2e%2e",
            "%2E%2e/x",
            "%252e%252e/etc",
            "%25252e%25252e",
            "a%2f..%2f..",
            "..%2fetc",
            "%2e%2e%5cetc",
            "a%00b",
        ] {
            let msg = refused(raw);
            assert!(
                msg.contains("..") || msg.contains("encoded"),
                "{raw:?}: {msg}"
            );
        }
        assert!(refused("..\\..\\etc").contains('\\'));
        assert!(refused("a\\b").contains('\\'));
        assert!(refused("/etc/passwd").contains("absolute"));
        assert!(refused("//etc").contains("absolute"));
        assert!(refused("a\0b").contains("NUL"));
        assert!(refused(&"a/".repeat(3000)).contains("longer than"));
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("%2e%2E"), "..");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%25"), "%");
    }

    /// A scratch directory holding a workspace `ws` and a sibling `outside`.
    fn scratch() -> (PathBuf, PathBuf) {
        let base =
            std::env::temp_dir().join(format!("otter-files-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(base.join("ws/src/deep")).expect("mkdir");
        std::fs::create_dir_all(base.join("outside")).expect("mkdir");
        let base = base.canonicalize().expect("canonical");
        std::fs::write(base.join("outside/secret.txt"), "CANARY").expect("write");
        (base.clone(), base.join("ws"))
    }

    fn rel(raw: &str) -> RelPath {
        RelPath::parse(raw).expect(raw)
    }

    fn open(root: &std::path::Path) -> Dir {
        Dir::open(root).expect("open the root")
    }

    #[test]
    fn symlinks_are_followed_only_inside_the_root() {
        use std::os::unix::fs::symlink;
        let (base, root) = scratch();
        std::fs::write(root.join("src/main.rs"), "fn main() {}").expect("write");
        symlink("src/main.rs", root.join("inside")).expect("link");
        symlink(base.join("outside"), root.join("out-abs")).expect("link");
        symlink("../outside/secret.txt", root.join("out-rel")).expect("link");
        symlink("../ws/src/main.rs", root.join("out-and-back")).expect("link");
        symlink("loop", root.join("loop")).expect("link");
        symlink(root.join("src"), root.join("abs-inside")).expect("link");

        let main = root.join("src/main.rs");
        assert_eq!(resolve(&open(&root), &rel("inside")).expect("inside"), main);
        assert_eq!(
            resolve(&open(&root), &rel("abs-inside/main.rs")).expect("inside"),
            main
        );
        for raw in [
            "out-abs",
            "out-abs/secret.txt",
            "out-rel",
            "out-and-back",
            "loop",
        ] {
            let err = resolve(&open(&root), &rel(raw)).expect_err(raw);
            assert!(
                matches!(err, FilesError::Escapes(_) | FilesError::InvalidPath(_)),
                "{raw}: {err:?}"
            );
        }
        assert!(matches!(
            read_file(&open(&root), &rel("out-rel"), MAX_FILE_BYTES),
            Err(FilesError::Escapes(_))
        ));
        assert!(matches!(
            resolve(&open(&root), &rel("missing/x")),
            Err(FilesError::NotFound(_))
        ));
        assert!(matches!(
            resolve(&open(&root), &rel("src/main.rs/x")),
            Err(FilesError::NotFound(_))
        ));
        std::fs::remove_dir_all(base).ok();
    }

    #[test]
    fn trees_list_directories_first_and_stay_bounded() {
        let (base, root) = scratch();
        std::fs::write(root.join("b.txt"), "b").expect("write");
        std::fs::write(root.join("A.txt"), "a").expect("write");
        std::fs::write(root.join("src/deep/x.rs"), "x").expect("write");
        std::os::unix::fs::symlink(base.join("outside"), root.join("zlink")).expect("link");

        let one = tree(&open(&root), &rel(""), 1, MAX_TREE_ENTRIES).expect("tree");
        let names: Vec<_> = one.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["src", "A.txt", "b.txt", "zlink"]);
        assert_eq!(one.entries[0].kind, EntryKind::Directory);
        assert!(one.entries[0].children.is_none());
        assert_eq!(one.entries[1].size, Some(1));
        assert_eq!(one.entries[3].kind, EntryKind::Symlink);
        assert!(!one.truncated);

        let deep = tree(&open(&root), &rel(""), 3, MAX_TREE_ENTRIES).expect("tree");
        let src = &deep.entries[0];
        let deep_dir = &src.children.as_ref().expect("children")[0];
        assert_eq!(deep_dir.path, "src/deep");
        assert_eq!(
            deep_dir.children.as_ref().expect("children")[0].path,
            "src/deep/x.rs"
        );
        assert!(
            deep.entries[3].children.is_none(),
            "a symlink is not entered"
        );
        assert_eq!(deep.entry_count, 6);

        let cut = tree(&open(&root), &rel(""), 3, 2).expect("tree");
        assert!(cut.truncated);
        assert_eq!(cut.entry_count, 2);

        assert!(matches!(
            tree(&open(&root), &rel("A.txt"), 1, 10),
            Err(FilesError::NotADirectory(_))
        ));
        std::fs::remove_dir_all(base).ok();
    }

    #[test]
    fn files_are_read_as_text_or_flagged_binary_within_the_cap() {
        let (base, root) = scratch();
        std::fs::write(root.join("t.txt"), "héllo\n").expect("write");
        std::fs::write(root.join("b.bin"), [0u8, 1, 2]).expect("write");
        std::fs::write(root.join("latin1"), [0xe9u8]).expect("write");
        std::fs::write(root.join("big"), vec![b'a'; 11]).expect("write");

        let text = read_file(&open(&root), &rel("t.txt"), 10).expect("text");
        assert_eq!(text.content.as_deref(), Some("héllo\n"));
        assert!(!text.binary);
        assert_eq!(text.size, 7);
        for raw in ["b.bin", "latin1"] {
            let bin = read_file(&open(&root), &rel(raw), 10).expect(raw);
            assert!(bin.binary && bin.content.is_none(), "{raw}");
        }
        assert!(matches!(
            read_file(&open(&root), &rel("big"), 10),
            Err(FilesError::TooLarge { size: 11, .. })
        ));
        assert!(matches!(
            read_file(&open(&root), &rel("src"), 10),
            Err(FilesError::IsADirectory(_))
        ));
        assert!(matches!(
            read_file(&open(&root), &rel(""), 10),
            Err(FilesError::IsADirectory(_))
        ));
        std::fs::remove_dir_all(base).ok();
    }
}
