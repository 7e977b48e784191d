//! Units: the processes of one run, one command or one `setup.sh` app, found again however
//! they tried to leave (`setsid`, `setpgid`, double forks).
//!
//! - **In the unit before the child runs.** With a cgroup, a child is born in it (`clone3` with
//!   `CLONE_INTO_CGROUP`, see `clone.rs`; only root could take it out again); with the marker it
//!   carries `OTTER_UNIT=<name>` in its environment, which its descendants inherit. Between fork
//!   and exec it switches to the job user, and asks to be killed when the process that started
//!   it dies (`PR_SET_PDEATHSIG`, set after the switch of users, which would clear it).
//! - **Stopped whole.** [`Unit::kill`] kills every process in the unit (`cgroup.kill`, or a
//!   freeze by SIGSTOP then SIGKILL of every process the marker or the process tree names)
//!   and waits until none is left.
//! - **Owned while alive.** The owner holds an exclusive lock on its unit's lock file until the
//!   unit is closed, and the kernel drops it when the owner dies however it dies. The file is
//!   made and locked under a temporary name and only then given the unit's name, before the
//!   cgroup is made: no unit is ever seen unlocked while its owner lives. A unit whose lock
//!   anyone can take, or a cgroup without a lock file, belongs to a dead owner:
//!   [`super::Isolation::sweep`] kills and removes it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::{Containment, Isolation, IsolationError, JobUser, clone, io, procfs};
use crate::db::shell_sessions::ShellSessionId;
use crate::model::{JobId, WorkspaceId};

/// The marker variable of [`Containment::Marker`].
pub(super) const MARKER: &str = "OTTER_UNIT";

/// How long a kill waits for the unit to be empty before it gives up (a process stuck in the
/// kernel, `D` state, takes its time to die).
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often an emptying unit is looked at.
const POLL: Duration = Duration::from_millis(10);

/// What a unit holds; the first part of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// A job's run: vibe, then `setup.sh` (`run.<workspace>.<job>.<attempt>`).
    Run,
    /// A command of the command endpoints (`cmd.<workspace>.<session>.<holder>`).
    Command,
    /// What a successful `setup.sh` left running, kept on purpose (`app.<workspace>.<job>.<attempt>`).
    App,
    /// Anything else Otter runs briefly, e.g. `vibe --version` (`task.<uuid>`).
    Task,
}

impl UnitKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Command => "cmd",
            Self::App => "app",
            Self::Task => "task",
        }
    }
}

/// A unit's name, unique on the host: its kind and the ids of what it holds, dot-separated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitName(String);

impl UnitName {
    /// The unit of attempt `attempt` of `job` in `workspace`.
    pub fn run(workspace: WorkspaceId, job: JobId, attempt: i32) -> Self {
        Self(format!("run.{workspace}.{job}.{attempt}"))
    }

    /// Where what that run's `setup.sh` left running goes.
    pub fn app(workspace: WorkspaceId, job: JobId, attempt: i32) -> Self {
        Self(format!("app.{workspace}.{job}.{attempt}"))
    }

    /// The unit of the command `holder` runs in `session`.
    pub fn command(workspace: WorkspaceId, session: ShellSessionId, holder: Uuid) -> Self {
        Self(format!("cmd.{workspace}.{session}.{holder}"))
    }

    /// A fresh unit for a short task.
    pub fn task() -> Self {
        Self(format!("task.{}", Uuid::new_v4()))
    }

    /// The name as it appears on the host.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its kind, when it is one of Otter's names.
    pub fn kind(&self) -> Option<UnitKind> {
        let prefix = self.0.split('.').next()?;
        [
            UnitKind::Run,
            UnitKind::Command,
            UnitKind::App,
            UnitKind::Task,
        ]
        .into_iter()
        .find(|k| k.prefix() == prefix)
    }

    /// The session and holder of a command's unit.
    pub fn command_hold(&self) -> Option<(ShellSessionId, Uuid)> {
        let mut parts = self.0.split('.');
        (parts.next()? == "cmd").then_some(())?;
        let _workspace = parts.next()?;
        let session = parts.next()?.parse().ok()?;
        let holder = parts.next()?.parse().ok()?;
        Some((ShellSessionId(session), holder))
    }

    /// Whether this is a run unit of `workspace`.
    fn is_run_of(&self, workspace: WorkspaceId) -> bool {
        self.0.starts_with(&format!("run.{workspace}."))
    }

    /// A name read from the host, if it is one of Otter's.
    fn parse(name: &str) -> Option<Self> {
        let name = Self(name.to_owned());
        (name.kind().is_some() && !name.0.contains('/')).then_some(name)
    }
}

impl std::fmt::Display for UnitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The pids this process spawned (direct children tokio waits for): the orphan supervisor
/// must never reap or kill those. A spawn and its registration happen under this lock.
static SPAWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

pub(super) fn spawned() -> MutexGuard<'static, BTreeSet<i32>> {
    SPAWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a unit lives: its lock file, and its cgroup when there are cgroups.
struct Place {
    lock_path: PathBuf,
    /// Held while the owner lives.
    _lock: Flock<File>,
    cgroup: Option<Cgroup>,
}

struct Cgroup {
    dir: PathBuf,
    /// The directory, open: what children are cloned into.
    dir_fd: OwnedFd,
    /// Its `cgroup.procs`, which a child writes itself into once the cgroup was killed.
    procs: OwnedFd,
}

/// The processes of one run, command or app (see the module docs).
pub struct Unit {
    name: UnitName,
    isolation: Arc<Isolation>,
    place: Place,
    /// The children started in it (the marker's process tree starts from them).
    roots: Mutex<Vec<i32>>,
    /// Closed or kept: nothing left for `Drop` to do.
    done: AtomicBool,
    /// `cgroup.kill` was written: the kernel (6.18 at least) kills a child cloned into a
    /// cgroup killed before at its birth, so children from now on join it between fork and
    /// exec instead.
    killed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Unit {
    /// Makes unit `name` and takes it. A leftover of the same name (the same attempt of a job
    /// once before on this host) is killed and removed first.
    pub async fn create(
        isolation: &Arc<Isolation>,
        name: UnitName,
    ) -> Result<Arc<Self>, IsolationError> {
        let leftover = Foreign::at(isolation, name.clone());
        if leftover.exists() {
            // This very attempt ran here before (its worker died): it goes first.
            leftover.kill().await;
            leftover.remove();
        }
        let lock_path = isolation.locks().join(name.as_str());
        let lock = take_lock_file(&lock_path)?;
        let cgroup = match isolation.containment() {
            Containment::Cgroup { base } => match make_cgroup(&base.join(name.as_str())) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    let _ = std::fs::remove_file(&lock_path);
                    return Err(e);
                }
            },
            Containment::Marker => None,
        };
        let place = Place {
            lock_path,
            _lock: lock,
            cgroup,
        };
        Ok(Arc::new(Self {
            name,
            isolation: isolation.clone(),
            place,
            roots: Mutex::new(Vec::new()),
            done: AtomicBool::new(false),
            killed: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Its name.
    pub fn name(&self) -> &UnitName {
        &self.name
    }

    /// Starts `program` in this unit, as the job user, with the child environment of
    /// [`Isolation::child_env`] and `env` on top (nothing else is inherited): stdin from
    /// /dev/null, stdout and stderr piped, in a process group of its own (as a shell would give
    /// it; the unit, not the group, is what is killed), killed if dropped before it is waited
    /// for. With a cgroup it is born in it (see `clone.rs`); with the marker it carries it.
    pub(crate) fn start(
        &self,
        program: &Path,
        args: &[OsString],
        cwd: &Path,
        env: &[(String, String)],
    ) -> std::io::Result<Child> {
        let ids = self.isolation.job_user().map(ChildIds::of);
        let base = self.isolation.child_env();
        // Held across the start: the orphan supervisor never sees the child unregistered.
        let mut spawned = spawned();
        let child = match &self.place.cgroup {
            Some(cgroup) if !self.killed.load(Ordering::SeqCst) => {
                let mut vars: Vec<(OsString, OsString)> = Vec::new();
                for (k, v) in base.iter().chain(env) {
                    vars.retain(|(name, _)| name != k.as_str());
                    vars.push((k.into(), v.into()));
                }
                Child::Cloned(clone::start(&clone::Start {
                    program,
                    args,
                    env: &vars,
                    cwd,
                    cgroup: cgroup.dir_fd.as_fd(),
                    ids: ids.as_ref(),
                })?)
            }
            cgroup => {
                let mut command = tokio::process::Command::new(program);
                command.env_clear().envs(base);
                if cgroup.is_none() {
                    command.env(MARKER, self.name.as_str());
                }
                command
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .args(args)
                    .current_dir(cwd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(true);
                let procs = cgroup.as_ref().map(|c| c.procs.as_raw_fd());
                join_in_child(&mut command, procs, ids);
                Child::Forked(command.spawn()?)
            }
        };
        if let Some(pid) = child.id() {
            spawned.insert(pid as i32);
            self.lock_roots().push(pid as i32);
        }
        Ok(child)
    }

    /// The child `pid` has been waited for: its pid may be reused from now on.
    pub(crate) fn reaped(&self, pid: Option<u32>) {
        if let Some(pid) = pid {
            let pid = pid as i32;
            self.lock_roots().retain(|p| *p != pid);
            spawned().remove(&pid);
        }
    }

    /// Sends `signal` to every process in the unit.
    pub fn signal(&self, signal: Signal) {
        for pid in self.members() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Kills every process in the unit and waits (up to 10 s) until none is left; `false`
    /// when some survived that long.
    pub async fn kill(&self) -> bool {
        let roots = self.lock_roots().clone();
        if let Some(cgroup) = &self.place.cgroup
            && populated(&cgroup.dir)
        {
            self.killed.store(true, Ordering::SeqCst);
        }
        kill_all(&self.place_ref(), &roots).await
    }

    /// Kills what is left and removes the unit.
    pub async fn close(&self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        if !self.kill().await {
            tracing::warn!(unit = %self.name, "processes survived SIGKILL for 10 s");
        }
        self.place_ref().remove();
        self.forget_roots();
    }

    /// Keeps what is still running in the unit (the app a successful `setup.sh` started) in
    /// the unit `app`, which no sweep kills, and removes this one.
    pub async fn keep(&self, app: UnitName) -> Result<(), IsolationError> {
        if self.done.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.forget_roots();
        // With the marker, its processes keep it, but no lock file names the unit any more: no
        // sweep or stop looks for them again.
        let result = match &self.place.cgroup {
            Some(cgroup) => {
                let result = move_all(&cgroup.dir, &cgroup.dir.with_file_name(app.as_str())).await;
                let _ = std::fs::remove_dir(&cgroup.dir);
                result
            }
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.place.lock_path);
        result
    }

    /// The pids in the unit now.
    fn members(&self) -> Vec<i32> {
        members(&self.place_ref(), &self.lock_roots())
    }

    fn place_ref(&self) -> PlaceRef<'_> {
        PlaceRef {
            lock_path: &self.place.lock_path,
            cgroup: self.place.cgroup.as_ref().map(|c| c.dir.as_path()),
            name: &self.name,
        }
    }

    fn lock_roots(&self) -> MutexGuard<'_, Vec<i32>> {
        self.roots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_roots(&self) {
        let roots = std::mem::take(&mut *self.lock_roots());
        let mut spawned = spawned();
        for pid in roots {
            spawned.remove(&pid);
        }
    }
}

impl Drop for Unit {
    /// A unit its owner forgot (a task that panicked or was dropped): killed, and removed once
    /// empty (waiting a moment at most; a sweep removes it otherwise).
    fn drop(&mut self) {
        if self.done.load(Ordering::SeqCst) {
            return;
        }
        let place = self.place_ref();
        kill_once(&place, &self.lock_roots());
        if let Some(dir) = place.cgroup {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while populated(dir) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        place.remove();
        self.forget_roots();
    }
}

/// The user a child switches to.
pub(super) struct ChildIds {
    pub(super) uid: libc::uid_t,
    pub(super) gid: libc::gid_t,
    pub(super) groups: Vec<libc::gid_t>,
}

impl ChildIds {
    fn of(user: &JobUser) -> Self {
        Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: user.groups.iter().map(|g| g.as_raw()).collect(),
        }
    }
}

/// A child started in a unit ([`Unit::start`]).
#[derive(Debug)]
pub(crate) enum Child {
    /// Forked by tokio (the marker).
    Forked(tokio::process::Child),
    /// Cloned into the unit's cgroup.
    Cloned(clone::Child),
}

/// A child's stdout or stderr.
pub(crate) type Output = Box<dyn AsyncRead + Unpin + Send>;

impl Child {
    /// Its pid, until it is waited for.
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Self::Forked(child) => child.id(),
            Self::Cloned(child) => Some(child.id()),
        }
    }

    /// Its stdout and stderr, the first time.
    pub(crate) fn take_output(&mut self) -> [Option<Output>; 2] {
        match self {
            Self::Forked(child) => [
                child.stdout.take().map(|o| Box::new(o) as Output),
                child.stderr.take().map(|e| Box::new(e) as Output),
            ],
            Self::Cloned(child) => [
                child.stdout.take().map(|o| Box::new(o) as Output),
                child.stderr.take().map(|e| Box::new(e) as Output),
            ],
        }
    }

    /// Waits for it to exit.
    pub(crate) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Self::Forked(child) => child.wait().await,
            Self::Cloned(child) => child.wait().await,
        }
    }
}

/// Makes the child join the cgroup whose `cgroup.procs` is `procs` (if any), switch to `ids`,
/// and die with this process, between fork and exec (the marker's children, and those of a
/// cgroup that was killed; see `clone.rs` for the others).
#[allow(unsafe_code)]
fn join_in_child(command: &mut tokio::process::Command, procs: Option<i32>, ids: Option<ChildIds>) {
    let parent = std::process::id() as libc::pid_t;
    let hook = move || -> std::io::Result<()> {
        let fail = std::io::Error::last_os_error;
        // SAFETY (the whole hook): it runs in the child between fork and exec, where only
        // async-signal-safe functions may be called. It makes raw system calls on values made
        // before the fork (a descriptor, ids, a slice of groups) and allocates nothing; the
        // error values it returns are plain OS error codes.
        unsafe {
            // Into the unit first, while still root: a cgroup's `cgroup.procs` is root's.
            if let Some(fd) = procs
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(fail());
            }
            if let Some(ids) = &ids
                && (libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) != 0
                    || libc::setgid(ids.gid) != 0
                    || libc::setuid(ids.uid) != 0)
            {
                return Err(fail());
            }
            // After the switch, which clears it. It fires when the spawning thread ends: the
            // runtime's worker threads live as long as the runtime.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(fail());
            }
            // The parent may have died before the death signal was asked for.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    };
    // SAFETY: see the hook.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Makes `path` and locks it, made and locked under a temporary name first so that nobody ever
/// sees it unlocked while its owner lives.
fn take_lock_file(path: &Path) -> Result<Flock<File>, IsolationError> {
    create_locked_file(path, None).map_err(io(format!("creating and locking {}", path.display())))
}

/// Creates `path` fresh (mode 0600, close-on-exec), locked, and given to `owner` when there is
/// one. It is made, locked and given under a hidden temporary name in the same directory
/// (`.<name>.<random>`), then renamed into place, so that nobody who looks for locked files by
/// their names (a sweep of a dead owner's files) ever sees it unlocked or not yet given. On an
/// error nothing is left.
pub(crate) fn create_locked_file(
    path: &Path,
    owner: Option<&JobUser>,
) -> std::io::Result<Flock<File>> {
    let fresh = path.with_file_name(format!(
        ".{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        Uuid::new_v4().simple()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fresh)?;
    let prepared = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| std::io::Error::from(e))
        .and_then(|file| {
            if let Some(user) = owner {
                nix::unistd::fchown(&*file, Some(user.uid), Some(user.gid))?;
            }
            std::fs::rename(&fresh, path)?;
            Ok(file)
        });
    if prepared.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    prepared
}

/// Makes the cgroup `dir` and opens it and its `cgroup.procs`.
fn make_cgroup(dir: &Path) -> Result<Cgroup, IsolationError> {
    std::fs::create_dir(dir).map_err(io(format!("creating cgroup {}", dir.display())))?;
    let opened = open_dir(dir).and_then(|dir_fd| {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.procs"))?;
        Ok((dir_fd, procs.into()))
    });
    match opened {
        Ok((dir_fd, procs)) => Ok(Cgroup {
            dir: dir.to_path_buf(),
            dir_fd,
            procs,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir(dir);
            Err(io(format!("opening cgroup {}", dir.display()))(e))
        }
    }
}

/// `dir` open as a directory (close-on-exec), as `CLONE_INTO_CGROUP` takes it.
pub(super) fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
}

/// A unit as the operations on it need it (also for units of other owners).
struct PlaceRef<'a> {
    lock_path: &'a Path,
    cgroup: Option<&'a Path>,
    name: &'a UnitName,
}

impl PlaceRef<'_> {
    /// Removes the cgroup (which fails while processes are in it: a kill that timed out), then
    /// the lock file.
    fn remove(&self) {
        if let Some(dir) = self.cgroup {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_file(self.lock_path);
    }
}

/// The pids in a unit: its cgroup's, or those whose environment carries its marker and the
/// living descendants of `roots`.
fn members(place: &PlaceRef<'_>, roots: &[i32]) -> Vec<i32> {
    match place.cgroup {
        Some(dir) => std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default(),
        None => {
            let marker = format!("{MARKER}={}", place.name);
            let all = procfs::all();
            let mut found: BTreeSet<i32> = BTreeSet::new();
            let mut frontier: Vec<i32> = roots.to_vec();
            for stat in all.iter().filter(|s| !s.is_zombie()) {
                if procfs::environ_has(stat.pid, marker.as_bytes()) {
                    found.insert(stat.pid);
                    frontier.push(stat.pid);
                }
            }
            // Descendants of what was found, whatever their environment.
            while let Some(parent) = frontier.pop() {
                for stat in all.iter().filter(|s| s.ppid == parent && !s.is_zombie()) {
                    if found.insert(stat.pid) {
                        frontier.push(stat.pid);
                    }
                }
            }
            found.into_iter().collect()
        }
    }
}

/// One SIGKILL to every process in the unit, without waiting.
fn kill_once(place: &PlaceRef<'_>, roots: &[i32]) {
    if let Some(dir) = place.cgroup
        && write_file(&dir.join("cgroup.kill"), b"1").is_ok()
    {
        return;
    }
    for pid in members(place, roots) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Kills every process in the unit and waits until none is left; `false` after [`KILL_WAIT`].
async fn kill_all(place: &PlaceRef<'_>, roots: &[i32]) -> bool {
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    match place.cgroup {
        // Nothing to kill (most runs leave nothing behind): the cgroup stays one children can
        // be cloned into (see `Unit::killed`).
        Some(dir) if !populated(dir) => true,
        Some(dir) => {
            // `cgroup.kill` (Linux 5.14) kills the cgroup at once, forks in flight included;
            // without it, freeze the cgroup so that nothing forks, then kill each process.
            let killed_at_once = write_file(&dir.join("cgroup.kill"), b"1").is_ok();
            let frozen = !killed_at_once && write_file(&dir.join("cgroup.freeze"), b"1").is_ok();
            loop {
                if !killed_at_once {
                    for pid in members(place, roots) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                if !populated(dir) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(POLL).await;
            }
            if frozen {
                let _ = write_file(&dir.join("cgroup.freeze"), b"0");
            }
            true
        }
        None => loop {
            // Freeze first: a stopped process forks no more, so every pass finds more of
            // them until none is left running; then all of them are killed at once.
            let mut stopped: BTreeSet<i32> = BTreeSet::new();
            loop {
                let fresh: Vec<i32> = members(place, roots)
                    .into_iter()
                    .filter(|pid| !stopped.contains(pid))
                    .collect();
                if fresh.is_empty() {
                    break;
                }
                for pid in fresh {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
                    stopped.insert(pid);
                }
            }
            if stopped.is_empty() {
                return true;
            }
            for pid in &stopped {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        },
    }
}

/// Whether a cgroup still holds a process (`cgroup.events`); a cgroup that is gone holds none.
fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// Moves every process of cgroup `from` into cgroup `to` (made if needed), freezing `from`
/// first so that nothing forks meanwhile.
async fn move_all(from: &Path, to: &Path) -> Result<(), IsolationError> {
    let name = UnitName(String::new());
    let pids = |dir: &Path| {
        let place = PlaceRef {
            lock_path: dir,
            cgroup: Some(dir),
            name: &name,
        };
        members(&place, &[])
    };
    if pids(from).is_empty() {
        return Ok(());
    }
    match std::fs::create_dir(to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("creating cgroup {}", to.display()))(e)),
    }
    let frozen = write_file(&from.join("cgroup.freeze"), b"1").is_ok();
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    loop {
        let left = pids(from);
        if left.is_empty() {
            break;
        }
        for pid in left {
            // A process leaving a frozen cgroup for a thawed one runs again.
            let _ = write_file(&to.join("cgroup.procs"), pid.to_string().as_bytes());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(io(format!("moving processes to {}", to.display()))(
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    if frozen {
        let _ = write_file(&from.join("cgroup.freeze"), b"0");
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(bytes)
}

/// A unit on this host that this process does not own.
struct Foreign {
    name: UnitName,
    lock_path: PathBuf,
    cgroup: Option<PathBuf>,
}

impl Foreign {
    fn at(isolation: &Isolation, name: UnitName) -> Self {
        let cgroup = match isolation.containment() {
            Containment::Cgroup { base } => Some(base.join(name.as_str())),
            Containment::Marker => None,
        };
        Self {
            lock_path: isolation.locks().join(name.as_str()),
            cgroup,
            name,
        }
    }

    fn place(&self) -> PlaceRef<'_> {
        PlaceRef {
            lock_path: &self.lock_path,
            cgroup: self.cgroup.as_deref(),
            name: &self.name,
        }
    }

    fn exists(&self) -> bool {
        self.lock_path.exists() || self.cgroup.as_ref().is_some_and(|c| c.exists())
    }

    /// Whether its owner is gone: its lock can be taken, or it has none (the lock file is made
    /// before the cgroup and removed after it).
    fn orphaned(&self) -> bool {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.lock_path);
        match opened {
            Ok(file) => Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    async fn kill(&self) -> bool {
        kill_all(&self.place(), &[]).await
    }

    fn remove(&self) {
        self.place().remove();
    }
}

impl Isolation {
    /// The names of the units of `kinds` on this host: those with a lock file, and cgroups.
    fn units(&self, kinds: &[UnitKind]) -> Vec<UnitName> {
        let mut dirs = vec![self.locks()];
        if let Containment::Cgroup { base } = self.containment() {
            dirs.push(base);
        }
        let mut names: Vec<UnitName> = dirs
            .into_iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter_map(|e| UnitName::parse(e.file_name().to_str()?))
            .filter(|n| n.kind().is_some_and(|k| kinds.contains(&k)))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names.dedup();
        names
    }

    /// Kills and removes every unit of `kinds` on this host whose owner is gone (a server or
    /// worker killed with SIGKILL leaves its units behind), and removes empty app units.
    /// Returns the names of the units it killed. Safe to run at any time, by any number of
    /// processes: a live owner's lock keeps its units out of reach.
    pub async fn sweep(&self, kinds: &[UnitKind]) -> Vec<UnitName> {
        let mut swept = Vec::new();
        for name in self.units(kinds) {
            let unit = Foreign::at(self, name);
            if unit.name.kind() == Some(UnitKind::App) {
                // An app lives as long as it likes; its empty cgroup goes.
                if let Some(dir) = &unit.cgroup {
                    let _ = std::fs::remove_dir(dir);
                }
                continue;
            }
            if !unit.orphaned() {
                continue;
            }
            tracing::warn!(unit = %unit.name, "killing what a dead server or worker left running");
            if !unit.kill().await {
                tracing::warn!(unit = %unit.name, "processes survived SIGKILL for 10 s");
                continue;
            }
            unit.remove();
            swept.push(unit.name);
        }
        swept
    }

    /// Kills and removes every run unit of `workspace` on this host, whoever owns it. Called
    /// once a claim of the workspace is real: PostgreSQL says no other run of it is going on,
    /// so any still here is a lost one (its worker died, or lost its lease), and the new run
    /// must not start beside it. Returns how many there were.
    pub async fn stop_runs_of(&self, workspace: WorkspaceId) -> usize {
        let lost: Vec<UnitName> = self
            .units(&[UnitKind::Run])
            .into_iter()
            .filter(|n| n.is_run_of(workspace))
            .collect();
        for name in &lost {
            tracing::warn!(unit = %name, "stopping a lost run of this workspace before its next one");
            let unit = Foreign::at(self, name.clone());
            unit.kill().await;
            unit.remove();
        }
        lost.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_what_they_hold() {
        let (ws, job) = (WorkspaceId::new(), JobId::new());
        let run = UnitName::run(ws, job, 2);
        assert_eq!(run.kind(), Some(UnitKind::Run));
        assert!(run.is_run_of(ws));
        assert!(!run.is_run_of(WorkspaceId::new()));
        assert_eq!(UnitName::app(ws, job, 2).kind(), Some(UnitKind::App));
        let (session, holder) = (ShellSessionId::new(), Uuid::new_v4());
        let cmd = UnitName::command(ws, session, holder);
        assert_eq!(cmd.command_hold(), Some((session, holder)));
        assert_eq!(run.command_hold(), None);
        assert_eq!(UnitName::parse(cmd.as_str()), Some(cmd));
        assert_eq!(UnitName::parse("probe-1234"), None);
        assert_eq!(UnitName::task().kind(), Some(UnitKind::Task));
    }
}
