//! What `/proc` tells about processes: the ones there are, their parents and states, and
//! whether their environment carries a unit's marker.

use std::path::PathBuf;

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) pid: i32,
    pub(super) ppid: i32,
    /// `R`, `S`, `D`, `T`, `Z`...
    pub(super) state: u8,
}

impl Stat {
    pub(super) fn read(pid: i32) -> Option<Self> {
        let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let close = text.iter().rposition(|&b| b == b')')?;
        let mut fields = text[close + 1..]
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty());
        let state = *fields.next()?.first()?;
        let ppid = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
        Some(Self { pid, ppid, state })
    }

    pub(super) fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// Every process there is now.
pub(super) fn all() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(Stat::read)
        .collect()
}

/// Whether the environment of `pid` holds exactly the entry `entry` (`NAME=value`). False
/// when it cannot be read (another user's process, a non-dumpable one, a zombie).
pub(super) fn environ_has(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry))
}

/// Whether the environment of `pid` holds a variable named `name`; `None` when it cannot be read.
pub(super) fn environ_names(pid: i32, name: &[u8]) -> Option<bool> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        env.split(|&b| b == 0)
            .any(|e| e.len() > name.len() && e.starts_with(name) && e[name.len()] == b'='),
    )
}

/// Where the cgroup v2 hierarchy is mounted (the first such mount), from `/proc/self/mountinfo`.
pub(super) fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // `id parent major:minor root mount-point options [optional...] - fstype source opts`
        let (head, tail) = line.split_once(" - ")?;
        if tail.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = head.split(' ');
        let root = fields.nth(3)?;
        let mount = fields.next()?;
        (root == "/").then(|| PathBuf::from(mount.replace("\\040", " ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id() as i32;
        let stat = Stat::read(me).expect("own stat");
        assert_eq!(stat.ppid, std::os::unix::process::parent_id() as i32);
        assert!(!stat.is_zombie());
        assert!(all().iter().any(|s| s.pid == me));
        assert_eq!(environ_names(me, b"PATH"), Some(true));
        assert_eq!(environ_names(me, b"PAT"), Some(false));
    }
}
