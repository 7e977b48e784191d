//! Keeping jobs away from Otter, and every process a job starts within Otter's reach.
//!
//! Vibe, `setup.sh` and the command endpoints' `sh -c` are "jobs" here. Two promises hold for
//! all of them (docs/workspace-trust-model.md says what they mean for operators):
//!
//! - **A job reads none of Otter's secrets.** When Otter runs as root, its children run as
//!   [`JobUser`] (`OTTER_JOB_USER`), who can read neither the environment, the memory nor the
//!   files of the server and the worker. Their environment is built, not inherited
//!   ([`Isolation::child_env`]): a short allow-list of harmless variables plus what the caller
//!   adds. The server and the worker also make themselves non-dumpable ([`harden_process`]),
//!   which keeps processes of their own user (the jobs, when Otter is not root) out of their
//!   `/proc/<pid>/environ`, `mem` and `fd`. What Otter itself does in places a job can write
//!   (its `VIBE_HOME`) it does with the job user's filesystem rights ([`Isolation::as_job`]), so
//!   that a symlink the job planted cannot make a root process read or write for it.
//! - **Nothing a job starts outlives it.** Every child is started inside a [`Unit`]: a cgroup
//!   ([`Containment::Cgroup`], cgroup v2) that no process can leave, or, where no cgroup can be
//!   made, a marker in the environment that every descendant inherits. A cgroup needs
//!   `clone3` with `CLONE_INTO_CGROUP` (Linux 5.7), which starts a child in it (`clone.rs`); a
//!   kernel or seccomp profile without it gets the marker
//!   ([`Containment::Marker`]; the binaries then also adopt orphans, see
//!   [`Isolation::supervise_orphans`]). Stopping a unit kills every process in it, not only
//!   those that stayed in the child's process group. A child also dies with the process that
//!   started it (`PR_SET_PDEATHSIG`), and a unit whose owner died is killed by the next sweep
//!   on that host ([`Isolation::sweep`]): the owner holds a lock on its unit while it lives.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use std::os::unix::fs::DirBuilderExt;

use nix::unistd::{Gid, Uid, User};

use crate::config::{CgroupRoot, Config};

mod clone;
mod orphans;
mod procfs;
mod tree;
mod unit;

pub(crate) use unit::Child;
pub(crate) use unit::create_locked_file;
pub use unit::{Unit, UnitKind, UnitName};

/// Why isolation could not be set up, or a unit could not be made. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// Otter runs as root and the job user does not exist.
    #[error(
        "OTTER_JOB_USER {0:?} does not exist: Otter runs as root and starts vibe, setup.sh and \
         commands as that user. Create it (scripts/services.sh start does: useradd --system \
         --create-home otter-job) or name another unprivileged user"
    )]
    NoSuchUser(String),
    /// `OTTER_CGROUP_ROOT` names a directory where cgroups cannot be made.
    #[error("OTTER_CGROUP_ROOT {path}: {reason} (set it to auto or none)")]
    Cgroup {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IsolationError {
    let what = what.into();
    move |source| IsolationError::Io { what, source }
}

/// The unprivileged user Otter's children run as when Otter is root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    /// The user's name.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary group.
    pub gid: Gid,
    /// Its groups (the primary one included), set on every child.
    pub groups: Vec<Gid>,
    /// Its home directory (`HOME` of its children).
    pub home: PathBuf,
    /// Its login shell (`SHELL` of its children).
    pub shell: PathBuf,
}

impl JobUser {
    /// Whom children run as, for `OTTER_JOB_USER=name`: `Some` when this process is root and
    /// `name` is another user; `None` when children run as this process's own user (it is not
    /// root and cannot switch, or `name` is root itself, which gives up the protection).
    pub fn resolve(name: &str) -> Result<Option<JobUser>, IsolationError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let user = User::from_name(name)
            .map_err(|e| io(format!("looking up OTTER_JOB_USER {name:?}"))(e.into()))?
            .ok_or_else(|| IsolationError::NoSuchUser(name.to_owned()))?;
        if user.uid.is_root() {
            return Ok(None);
        }
        let c_name = CString::new(name).map_err(|_| IsolationError::NoSuchUser(name.to_owned()))?;
        let groups = nix::unistd::getgrouplist(&c_name, user.gid)
            .map_err(|e| io(format!("reading the groups of {name:?}"))(e.into()))?;
        Ok(Some(JobUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
            shell: user.shell,
        }))
    }
}

/// How the processes of a unit are found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Containment {
    /// One cgroup v2 per unit under `base`; a process cannot leave it (only root can move it).
    Cgroup {
        /// The directory the units' cgroups are made in.
        base: PathBuf,
    },
    /// No cgroup: every process of a unit carries `OTTER_UNIT=<name>` in its environment.
    Marker,
}

/// Variables a child inherits from Otter's own environment; everything else is dropped (Otter's
/// secrets first of all). `LC_*` passes too. Operators add more with `OTTER_VIBE_EXTRA_ENV`.
const INHERITED: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Who Otter's children run as and how their processes are kept track of; one per process,
/// shared by every run and command.
#[derive(Debug)]
pub struct Isolation {
    user: Option<JobUser>,
    containment: Containment,
    /// The units' lock files (host-local, private to this user): one per unit, held by its
    /// owner, made before the unit itself.
    locks: PathBuf,
}

impl Isolation {
    /// From `OTTER_JOB_USER` and `OTTER_CGROUP_ROOT`, its units in the installation's scope,
    /// `OTTER_QUEUE_NAME`.
    /// With `OTTER_JOB_DOCKER=true`, the job user also gets the group of the Docker socket.
    pub fn from_config(config: &Config) -> Result<Self, IsolationError> {
        let mut isolation = Self::new(
            Some(&config.job_user),
            &config.cgroup_root,
            &config.queue_name,
        )?;
        if config.job_docker
            && let Some(user) = isolation.user.as_mut()
        {
            user.add_group_of(docker_socket_path(&config.runtime_docker_socket))?;
        }
        Ok(isolation)
    }

    /// Children run as `job_user` (see [`JobUser::resolve`]; `None`: as this process's user),
    /// contained as `cgroup_root` says. Units are made in `scope` (letters, digits, `-`, `_`):
    /// the servers and workers of one installation share it, and only clean each other's units
    /// (one installation's server could not release a session of another's database).
    pub fn new(
        job_user: Option<&str>,
        cgroup_root: &CgroupRoot,
        scope: &str,
    ) -> Result<Self, IsolationError> {
        if scope.is_empty()
            || !scope
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(IsolationError::Io {
                what: format!("the units' scope {scope:?}"),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        let user = match job_user {
            Some(name) => JobUser::resolve(name)?,
            None => None,
        };
        let containment = match containment(cgroup_root)? {
            Containment::Cgroup { base } => {
                let base = base.join(scope);
                std::fs::create_dir_all(&base)
                    .map_err(io(format!("creating cgroup {}", base.display())))?;
                Containment::Cgroup { base }
            }
            Containment::Marker => Containment::Marker,
        };
        let locks = lock_dir()?.join(scope);
        match std::fs::DirBuilder::new().mode(0o700).create(&locks) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(format!("creating {}", locks.display()))(e)),
        }
        Ok(Self {
            user,
            containment,
            locks,
        })
    }

    /// The user children run as, when it is not this process's own.
    pub fn job_user(&self) -> Option<&JobUser> {
        self.user.as_ref()
    }

    /// How units are contained.
    pub fn containment(&self) -> &Containment {
        &self.containment
    }

    /// Removes this scope's directories (its cgroup and its lock directory), with the empty
    /// cgroups of ended units in it (apps whose processes are gone), if nothing else is left in
    /// them: for an installation that goes away, such as a test's.
    pub fn remove_scope_if_empty(&self) {
        if let Containment::Cgroup { base } = &self.containment {
            for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    // Fails for a cgroup that still holds processes.
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
            let _ = std::fs::remove_dir(base);
        }
        let _ = std::fs::remove_dir(&self.locks);
    }

    /// Where the units' lock files are.
    pub(crate) fn locks(&self) -> &Path {
        &self.locks
    }

    /// The environment every child starts from: the harmless variables (`PATH`, locale, `TZ`,
    /// `TERM`, `TMPDIR`, proxies, CA paths) and `LC_*` of this
    /// process, and the identity (`HOME`, `USER`, `LOGNAME`, `SHELL`) of the user it runs as.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| INHERITED.contains(&k.as_str()) || k.starts_with("LC_"))
            .collect();
        match &self.user {
            Some(user) => env.extend([
                ("HOME".to_owned(), user.home.display().to_string()),
                ("USER".to_owned(), user.name.clone()),
                ("LOGNAME".to_owned(), user.name.clone()),
                ("SHELL".to_owned(), user.shell.display().to_string()),
            ]),
            None => env.extend(
                ["HOME", "USER", "LOGNAME", "SHELL"]
                    .iter()
                    .filter_map(|k| Some(((*k).to_owned(), std::env::var(k).ok()?))),
            ),
        }
        env
    }

    /// Runs `f` on this thread with the job user's filesystem identity (`setfsuid`,
    /// `setfsgid`): every path `f` touches is checked as it would be for the job, so a symlink
    /// or hard link the job planted leads nowhere the job could not go itself, and what `f`
    /// creates belongs to the job user. For blocking code only (the identity is the thread's,
    /// and an `.await` could move the task). Without a job user, it just runs `f`.
    pub fn as_job<T>(&self, f: impl FnOnce() -> T) -> T {
        let Some(user) = &self.user else {
            return f();
        };
        struct Restore(Uid, Gid);
        impl Drop for Restore {
            fn drop(&mut self) {
                nix::unistd::setfsuid(self.0);
                nix::unistd::setfsgid(self.1);
            }
        }
        // The group first: once the uid is not root, the group can no longer be changed.
        let gid = nix::unistd::setfsgid(user.gid);
        let uid = nix::unistd::setfsuid(user.uid);
        let _restore = Restore(uid, gid);
        f()
    }

    /// Reads the regular file `path` as the job would ([`Isolation::as_job`]) without following
    /// a symlink or waiting on a FIFO: what Otter reads back from where the job writes (vibe's
    /// `export.json`). `Ok(None)` when there is no such file; an error past `max_bytes`.
    pub fn read_job_file(&self, path: &Path, max_bytes: u64) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt;
        self.as_job(|| {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(std::io::Error::other(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            if meta.len() > max_bytes {
                return Err(std::io::Error::other(format!(
                    "{} is larger than {max_bytes} bytes",
                    path.display()
                )));
            }
            let mut bytes = Vec::new();
            file.take(max_bytes).read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        })
    }

    /// See [`JobUser::give_tree`]; a no-op without a job user.
    pub fn give_tree(&self, dir: &Path) -> Result<(), IsolationError> {
        self.user.as_ref().map_or(Ok(()), |u| u.give_tree(dir))
    }
}

impl JobUser {
    /// Gives `dir` and everything below it that is not already the job user's to the job user,
    /// without ever following a symlink, leaving the file system, or touching a file with more
    /// than one link (a hard link the job made to someone else's file). For Otter's own
    /// directories only (a workspace's `VIBE_HOME`), never a user's. A no-op when `dir`
    /// already belongs to the job user.
    pub fn give_tree(&self, dir: &Path) -> Result<(), IsolationError> {
        tree::give(dir, self.uid, self.gid).map_err(io(format!(
            "giving {} to {}",
            dir.display(),
            self.name
        )))
    }

    /// Adds the group that owns `path` (the Docker socket) to the groups of the job user's
    /// children.
    pub fn add_group_of(&mut self, path: &Path) -> Result<(), IsolationError> {
        use std::os::unix::fs::MetadataExt;
        let gid = std::fs::metadata(path)
            .map_err(io(format!(
                "OTTER_JOB_DOCKER is set, but the Docker socket {}",
                path.display()
            )))?
            .gid();
        let gid = Gid::from_raw(gid);
        if !self.groups.contains(&gid) {
            self.groups.push(gid);
        }
        Ok(())
    }

    /// Gives the one directory `dir` (not what is in it) to the job user: a workspace directory
    /// Otter has just created. Never follows a symlink.
    pub fn give_dir(&self, dir: &Path) -> Result<(), IsolationError> {
        std::os::unix::fs::lchown(dir, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
            .map_err(io(format!("giving {} to {}", dir.display(), self.name)))
    }
}

/// The file of a Docker endpoint `unix:///path` (or a bare path).
fn docker_socket_path(endpoint: &str) -> &Path {
    Path::new(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// Makes this process non-dumpable, so that no process of its own user can read its
/// environment, memory or open files through `/proc` (nor attach a debugger), and, when it is
/// root, drops its supplementary groups (root needs none, and a thread working as the job user,
/// see [`Isolation::as_job`], must not keep them). For the first lines of the server's and the
/// worker's `main`.
pub fn harden_process() -> Result<(), IsolationError> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| io("PR_SET_DUMPABLE")(e.into()))?;
    if nix::unistd::geteuid().is_root() {
        nix::unistd::setgroups(&[]).map_err(|e| io("dropping supplementary groups")(e.into()))?;
    }
    Ok(())
}

/// Decides the containment for `OTTER_CGROUP_ROOT`.
fn containment(root: &CgroupRoot) -> Result<Containment, IsolationError> {
    match root {
        CgroupRoot::None => Ok(Containment::Marker),
        CgroupRoot::Path(path) => {
            cgroup_containment(path).map_err(|reason| IsolationError::Cgroup {
                path: path.clone(),
                reason,
            })
        }
        CgroupRoot::Auto => {
            // Moving a process into a cgroup takes root (or a delegated subtree, which an
            // operator names with a path).
            if !nix::unistd::geteuid().is_root() {
                return Ok(Containment::Marker);
            }
            let Some(mount) = procfs::cgroup2_mount() else {
                tracing::info!("no cgroup v2 mounted; runs are tracked by an environment marker");
                return Ok(Containment::Marker);
            };
            let base = mount.join("otter");
            match cgroup_containment(&base) {
                Ok(containment) => Ok(containment),
                Err(reason) => {
                    tracing::info!(base = %base.display(), %reason, "cgroups unusable; runs are tracked by an environment marker");
                    Ok(Containment::Marker)
                }
            }
        }
    }
}

/// `base` as the parent of the units' cgroups, once a cgroup could be made in it.
fn cgroup_containment(base: &Path) -> Result<Containment, String> {
    std::fs::create_dir_all(base).map_err(|e| format!("cannot create it: {e}"))?;
    if !base.join("cgroup.procs").is_file() {
        return Err("not a cgroup v2 directory".to_owned());
    }
    let probe = base.join(format!("probe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&probe).map_err(|e| format!("cannot create a cgroup in it: {e}"))?;
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .open(probe.join("cgroup.procs"))
        .map(drop);
    let born = unit::open_dir(&probe).and_then(|dir| clone::probe(std::os::fd::AsFd::as_fd(&dir)));
    let _ = std::fs::remove_dir(&probe);
    writable.map_err(|e| format!("cannot move processes into its cgroups: {e}"))?;
    born.map_err(|e| {
        format!(
            "cannot start processes in its cgroups (clone3 with CLONE_INTO_CGROUP, Linux 5.7): {e}"
        )
    })?;
    Ok(Containment::Cgroup {
        base: base.to_path_buf(),
    })
}

/// The units' private lock directory in the temporary directory.
fn lock_dir() -> Result<PathBuf, IsolationError> {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid();
    let locks = std::env::temp_dir().join(format!("otter-units-{euid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&locks) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("creating {}", locks.display()))(e)),
    }
    // In a shared /tmp the name could have been taken by someone else, or be a symlink.
    let meta =
        std::fs::symlink_metadata(&locks).map_err(io(format!("reading {}", locks.display())))?;
    if !meta.is_dir() || meta.uid() != euid.as_raw() || meta.mode() & 0o077 != 0 {
        return Err(IsolationError::Io {
            what: format!(
                "{} is not a private directory of this user",
                locks.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
    }
    Ok(locks)
}
