//! Giving a directory tree to the job user as root, safely although the job can change the tree
//! while it is walked: every step opens the next entry relative to its parent's descriptor
//! without following a symlink, so nothing outside the tree is ever reached; files with more
//! than one link are left alone (a hard link to someone else's file is not the job's to get);
//! other file systems are not entered.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::{Gid, Uid, fchown};

/// Deepest directory followed.
const MAX_DEPTH: usize = 64;

pub(super) fn give(dir: &Path, uid: Uid, gid: Gid) -> std::io::Result<()> {
    let top = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let stat = fstat(&top)?;
    if stat.st_uid == uid.as_raw() {
        // Everything Otter writes there later it writes as the job user.
        return Ok(());
    }
    fchown(&top, Some(uid), Some(gid))?;
    walk(top, stat.st_dev, uid, gid, 0)
}

fn walk(dir: OwnedFd, dev: u64, uid: Uid, gid: Gid, depth: usize) -> std::io::Result<()> {
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let names: Vec<(std::ffi::CString, Option<Type>)> = {
        let mut listing = Dir::from_fd(dir.try_clone()?)?;
        listing
            .iter()
            .flatten()
            .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
            .map(|e| (e.file_name().to_owned(), e.file_type()))
            .collect()
    };
    for (name, kind) in names {
        match kind {
            Some(Type::Symlink) => {
                // The link itself, never what it points to.
                let _ = nix::unistd::fchownat(
                    dir.as_fd(),
                    name.as_c_str(),
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                );
            }
            Some(Type::Directory) | None | Some(Type::File) => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                // Opened, not named again: what is checked is what gets changed.
                let Ok(fd) = openat(
                    dir.as_fd(),
                    name.as_c_str(),
                    flags | OFlag::O_NOCTTY,
                    Mode::empty(),
                ) else {
                    continue;
                };
                let Ok(stat) = fstat(&fd) else { continue };
                if stat.st_dev != dev {
                    continue;
                }
                let file_type = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
                if file_type == SFlag::S_IFDIR {
                    give_one(&fd, &stat, uid, gid)?;
                    walk(fd, dev, uid, gid, depth + 1)?;
                } else if file_type == SFlag::S_IFREG && stat.st_nlink == 1 {
                    give_one(&fd, &stat, uid, gid)?;
                }
            }
            // Sockets, FIFOs and devices are left as they are.
            Some(_) => {}
        }
    }
    Ok(())
}

fn give_one(fd: &OwnedFd, stat: &FileStat, uid: Uid, gid: Gid) -> std::io::Result<()> {
    if stat.st_uid != uid.as_raw() || stat.st_gid != gid.as_raw() {
        fchown(fd, Some(uid), Some(gid))?;
    }
    Ok(())
}
