//! Paths resolved beneath a directory, by descriptor (DESIGN.md §6): the one way Otter walks a
//! path it must keep inside a workspace or an allowed root.
//!
//! - **One name at a time.** Each step opens one name relative to the descriptor of the
//!   directory before it, with `O_PATH | O_NOFOLLOW`: it opens what is there now (a symlink
//!   itself, not its target), and whatever is renamed afterwards, the next step starts from the
//!   directory that was checked, not from a path spelled again.
//! - **Links stay inside.** A symlink is read from its own descriptor (`readlinkat(fd, "")`) and
//!   followed only while every step stays beneath the base: `..` above the base, an absolute
//!   target outside it, and a link that climbs out to come back in are all [`WalkError::Escapes`].
//! - **Nothing is made outside.** With `create`, a missing directory is made with `mkdirat` in
//!   the directory descriptor the walk holds, so it lands where the checked path says.
//! - **Opened for what it is.** Nothing is opened for reading before its type is known from the
//!   descriptor: a FIFO, socket or device is never opened, and a regular file is reopened from
//!   its directory and must still be the same inode ([`WalkError::Changed`] otherwise).
//!
//! Everything here is blocking filesystem work: call it from `spawn_blocking`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};

/// Longest name of one path component, in bytes (Linux's `NAME_MAX`, which most filesystems
/// share).
pub const MAX_NAME_BYTES: usize = 255;

/// Symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A `..` or a symlink on the way leads outside the base directory.
    #[error("leads outside the base directory")]
    Escapes,
    /// More than [`MAX_SYMLINKS`] symlinks on the way.
    #[error("too many levels of symbolic links")]
    TooManyLinks,
    /// A component that must be a directory (it has more components after it) is not one.
    #[error("not a directory")]
    NotADirectory,
    /// A component is longer than [`MAX_NAME_BYTES`].
    #[error("a name is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    /// What was found was replaced before it could be opened (a rename race).
    #[error("changed while being opened")]
    Changed,
    /// The operating system refused a step.
    #[error(transparent)]
    Os(#[from] std::io::Error),
}

impl From<Errno> for WalkError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::ENAMETOOLONG => WalkError::NameTooLong,
            Errno::ELOOP => WalkError::TooManyLinks,
            e => WalkError::Os(e.into()),
        }
    }
}

/// What a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl Kind {
    /// The kind `stat` describes.
    pub fn of(stat: &FileStat) -> Self {
        let format = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        if format == SFlag::S_IFDIR {
            Kind::Directory
        } else if format == SFlag::S_IFREG {
            Kind::File
        } else if format == SFlag::S_IFLNK {
            Kind::Symlink
        } else {
            Kind::Other
        }
    }
}

/// A directory held open, with the path it was opened at.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at the absolute `path` without following a final symlink (a symlink
    /// there is `ELOOP`, a file `ENOTDIR`). Pass a canonical path: it is what [`Dir::path`]
    /// reports and what absolute symlink targets are compared with.
    pub fn open(path: &Path) -> Result<Self, Errno> {
        let fd = openat(
            AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the descriptor really is, as the kernel names it, when `/proc` is mounted.
    pub fn real_path(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).ok()
    }
}

/// What a walk found, opened `O_PATH` (not followed, not opened for reading yet).
#[derive(Debug)]
pub struct Found {
    fd: OwnedFd,
    stat: FileStat,
    /// The directory it is in and its name there (none for the base itself).
    parent: Option<(OwnedFd, OsString)>,
    /// Its real path below the base: the names walked, symlinks resolved.
    rel: Vec<OsString>,
}

impl Found {
    /// What it is.
    pub fn kind(&self) -> Kind {
        Kind::of(&self.stat)
    }

    /// Its status, as read from its descriptor.
    pub fn stat(&self) -> &FileStat {
        &self.stat
    }

    /// Its real path below the base, one name per component (empty for the base).
    pub fn rel(&self) -> &[OsString] {
        &self.rel
    }

    /// Its real path: `base`'s path joined with [`Found::rel`].
    pub fn path_in(&self, base: &Dir) -> PathBuf {
        let mut path = base.path.clone();
        path.extend(&self.rel);
        path
    }

    /// Status of `name` in this directory, not following a symlink.
    pub fn stat_entry(&self, name: &OsStr) -> Result<FileStat, WalkError> {
        Ok(fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?)
    }

    /// This directory, opened for listing its entries.
    pub fn open_listing(&self) -> Result<nix::dir::Dir, WalkError> {
        if self.kind() != Kind::Directory {
            return Err(WalkError::NotADirectory);
        }
        // `.` of the descriptor is the very directory that was walked to.
        Ok(nix::dir::Dir::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// This regular file, opened for reading. It is reopened by name from the directory the walk
    /// found it in (without following a symlink, without blocking, without becoming a
    /// controlling terminal), and must still be the inode that was checked: a file swapped
    /// meanwhile is [`WalkError::Changed`].
    pub fn open_file(&self) -> Result<File, WalkError> {
        let Some((parent, name)) = &self.parent else {
            return Err(WalkError::Changed);
        };
        let fd = openat(
            parent,
            name.as_os_str(),
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // It was a regular file a moment ago: now it is a link, gone, a socket or a device.
            Errno::ELOOP | Errno::ENOENT | Errno::ENXIO | Errno::ENODEV | Errno::EISDIR => {
                WalkError::Changed
            }
            e => e.into(),
        })?;
        let now = fstat(&fd)?;
        if (now.st_dev, now.st_ino) != (self.stat.st_dev, self.stat.st_ino) {
            return Err(WalkError::Changed);
        }
        Ok(File::from(fd))
    }
}

/// Resolves `parts` beneath `base`, following symlinks that stay inside it.
pub fn resolve<S: AsRef<OsStr>>(base: &Dir, parts: &[S]) -> Result<Found, WalkError> {
    walk(base, parts, true, false)
}

/// Like [`resolve`], and makes every missing directory on the way (mode 0777 less the umask,
/// as `mkdir -p` does).
pub fn resolve_or_create<S: AsRef<OsStr>>(base: &Dir, parts: &[S]) -> Result<Found, WalkError> {
    walk(base, parts, true, true)
}

/// Opens `parts` beneath `base` following no symlink at all: for a path made of names a listing
/// found (a symlink there now means it was swapped: [`WalkError::Changed`]).
pub fn open_real<S: AsRef<OsStr>>(base: &Dir, parts: &[S]) -> Result<Found, WalkError> {
    walk(base, parts, false, false)
}

fn walk<S: AsRef<OsStr>>(
    base: &Dir,
    parts: &[S],
    follow: bool,
    create: bool,
) -> Result<Found, WalkError> {
    let mut pending: VecDeque<OsString> = parts.iter().map(|p| p.as_ref().to_owned()).collect();
    // The directories walked into below the base, with their names.
    let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part.is_empty() || part == "." {
            continue;
        }
        if part == ".." {
            // Only a symlink's target can say `..`: the parent of a real directory is the one
            // walked through to reach it.
            if stack.pop().is_none() {
                return Err(WalkError::Escapes);
            }
            continue;
        }
        if part.len() > MAX_NAME_BYTES {
            return Err(WalkError::NameTooLong);
        }
        let dir = current(base, &stack);
        let fd = match open_path(dir, &part) {
            Err(Errno::ENOENT) if create => {
                match mkdirat(dir, part.as_os_str(), Mode::from_bits_truncate(0o777)) {
                    // Made meanwhile by someone else: use it as it is.
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                open_path(dir, &part)?
            }
            other => other?,
        };
        let stat = fstat(&fd)?;
        match Kind::of(&stat) {
            Kind::Directory => stack.push((fd, part)),
            Kind::Symlink if !follow => return Err(WalkError::Changed),
            Kind::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(WalkError::TooManyLinks);
                }
                // The link this descriptor holds, whatever the name points at by now.
                let target = PathBuf::from(readlinkat(&fd, "")?);
                let names = if target.is_absolute() {
                    let inside = target
                        .strip_prefix(&base.path)
                        .map_err(|_| WalkError::Escapes)?;
                    stack.clear();
                    names_of(inside)?
                } else {
                    names_of(&target)?
                };
                for name in names.into_iter().rev() {
                    pending.push_front(name);
                }
            }
            Kind::File | Kind::Other => {
                if !pending.is_empty() {
                    return Err(WalkError::NotADirectory);
                }
                let parent = dir.try_clone_to_owned()?;
                let mut rel: Vec<OsString> = stack.into_iter().map(|(_, name)| name).collect();
                rel.push(part.clone());
                return Ok(Found {
                    fd,
                    stat,
                    parent: Some((parent, part)),
                    rel,
                });
            }
        }
    }
    // The walk ended on a directory: the last one walked into, or the base itself.
    let Some((fd, name)) = stack.pop() else {
        return Ok(Found {
            stat: fstat(&base.fd)?,
            fd: base.fd.try_clone()?,
            parent: None,
            rel: Vec::new(),
        });
    };
    let parent = current(base, &stack).try_clone_to_owned()?;
    let stat = fstat(&fd)?;
    let mut rel: Vec<OsString> = stack.into_iter().map(|(_, name)| name).collect();
    rel.push(name.clone());
    Ok(Found {
        fd,
        stat,
        parent: Some((parent, name)),
        rel,
    })
}

/// The directory the walk is in.
fn current<'a>(base: &'a Dir, stack: &'a [(OwnedFd, OsString)]) -> BorrowedFd<'a> {
    stack.last().map_or(base.fd.as_fd(), |(fd, _)| fd.as_fd())
}

/// Opens `name` in `dir` as it is: a symlink itself, a FIFO without opening it.
fn open_path(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The components of a symlink target (relative, or made relative to the base), as names.
fn names_of(path: &Path) -> Result<Vec<OsString>, WalkError> {
    path.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name.to_owned()),
            Component::ParentDir => Ok(OsString::from("..")),
            Component::CurDir => Ok(OsString::from(".")),
            Component::RootDir | Component::Prefix(_) => Err(WalkError::Escapes),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// A scratch directory holding a base `b` and a sibling `out`.
    fn scratch() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("otter-beneath-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("b/sub")).unwrap();
        std::fs::create_dir_all(dir.join("out")).unwrap();
        dir.canonicalize().unwrap()
    }

    fn names(path: &str) -> Vec<&str> {
        path.split('/').filter(|p| !p.is_empty()).collect()
    }

    #[test]
    fn links_are_followed_only_beneath_the_base() {
        let dir = scratch();
        let b = dir.join("b");
        std::fs::write(b.join("sub/f"), "F").unwrap();
        symlink("sub/f", b.join("rel")).unwrap();
        symlink(b.join("sub"), b.join("abs")).unwrap();
        symlink("../out", b.join("up")).unwrap();
        symlink(dir.join("out"), b.join("out-abs")).unwrap();
        symlink("../b/sub/f", b.join("out-and-back")).unwrap();
        symlink("self", b.join("self")).unwrap();
        let base = Dir::open(&b).unwrap();

        let found = resolve(&base, &names("rel")).unwrap();
        assert_eq!(found.kind(), Kind::File);
        assert_eq!(found.path_in(&base), b.join("sub/f"));
        let mut text = String::new();
        found
            .open_file()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "F");
        assert_eq!(
            resolve(&base, &names("abs/f")).unwrap().path_in(&base),
            b.join("sub/f")
        );
        assert_eq!(resolve(&base, &names("")).unwrap().rel().len(), 0);
        for path in ["up", "up/x", "out-abs", "out-and-back", "sub/../.."] {
            assert!(
                matches!(resolve(&base, &names(path)), Err(WalkError::Escapes)),
                "{path}"
            );
        }
        assert!(matches!(
            resolve(&base, &names("self")),
            Err(WalkError::TooManyLinks)
        ));
        assert!(matches!(
            resolve(&base, &names("sub/f/x")),
            Err(WalkError::NotADirectory)
        ));
        assert!(matches!(
            open_real(&base, &names("rel")),
            Err(WalkError::Changed)
        ));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn directories_are_made_beneath_the_base_only() {
        let dir = scratch();
        let b = dir.join("b");
        symlink(dir.join("out"), b.join("escape")).unwrap();
        symlink("sub", b.join("inner")).unwrap();
        let base = Dir::open(&b).unwrap();
        let made = resolve_or_create(&base, &names("inner/x/y")).unwrap();
        assert_eq!(made.kind(), Kind::Directory);
        assert_eq!(made.path_in(&base), b.join("sub/x/y"));
        assert!(b.join("sub/x/y").is_dir());
        assert!(matches!(
            resolve_or_create(&base, &names("escape/new")),
            Err(WalkError::Escapes)
        ));
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            resolve_or_create(&base, &[long.as_str()]),
            Err(WalkError::NameTooLong)
        ));
        assert_eq!(std::fs::read_dir(dir.join("out")).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_file_swapped_after_the_walk_is_not_opened() {
        let dir = scratch();
        let b = dir.join("b");
        std::fs::write(b.join("f"), "first").unwrap();
        let base = Dir::open(&b).unwrap();
        let found = resolve(&base, &["f"]).unwrap();
        std::fs::write(b.join("g"), "second").unwrap();
        std::fs::rename(b.join("g"), b.join("f")).unwrap();
        assert!(matches!(found.open_file(), Err(WalkError::Changed)));
        // A FIFO is found without being opened.
        let fifo = std::process::Command::new("mkfifo")
            .arg(b.join("pipe"))
            .status()
            .unwrap();
        assert!(fifo.success());
        assert_eq!(resolve(&base, &["pipe"]).unwrap().kind(), Kind::Other);
        std::fs::remove_dir_all(dir).ok();
    }
}
