//! A child born in its unit's cgroup: `clone3(2)` with `CLONE_INTO_CGROUP` (Linux 5.7), then
//! exec.
//!
//! Writing a pid into `cgroup.procs` makes the kernel take its cgroup-migration lock for
//! writing, which waits for an RCU grace period whenever no migration happened just before: on
//! the benchmark machine that was most of the time from a prompt to vibe's start
//! (docs/benchmarks.md, "Dispatch latency"). A child cloned into the cgroup takes that lock
//! only for reading, and is never outside its unit, not even between fork and exec.
//!
//! Between the clone and the exec the child is a copy of a multi-threaded process with one
//! thread: it makes only system calls on values prepared before the clone, and allocates
//! nothing. The credential calls are raw system calls: glibc's `setuid` and friends would try
//! to reach the other threads of the process the child was copied from.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::unit::ChildIds;

/// `clone3` flags (libc's `c_int` constant for the second overflows).
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3`'s argument (`struct clone_args`, version 2: with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The step of the child that failed, reported through the error pipe.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Step {
    Stdio = 1,
    Group,
    Signals,
    Chdir,
    Ids,
    DeathSignal,
    ParentGone,
    Exec,
}

impl Step {
    fn what(code: u32) -> &'static str {
        match code {
            1 => "connecting its stdin, stdout and stderr",
            2 => "making its process group",
            3 => "resetting its signals",
            4 => "changing to its working directory",
            5 => "switching to the job user",
            6 => "asking to die with Otter",
            7 => "starting: Otter was exiting",
            _ => "executing the program",
        }
    }
}

/// What to start.
pub(crate) struct Start<'a> {
    pub program: &'a Path,
    pub args: &'a [OsString],
    /// The whole environment (nothing is inherited).
    pub env: &'a [(OsString, OsString)],
    pub cwd: &'a Path,
    /// The cgroup directory it is born in.
    pub cgroup: BorrowedFd<'a>,
    pub ids: Option<&'a ChildIds>,
}

/// A child started by [`start`]: stdin from /dev/null, stdout and stderr piped, in a process
/// group of its own. Dropped before it was waited for, it is killed and reaped.
#[derive(Debug)]
pub(crate) struct Child {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Starts `start`. Returns once the child has exec'd, or with why it could not.
#[allow(unsafe_code)]
pub(crate) fn start(start: &Start<'_>) -> io::Result<Child> {
    let program = resolve(start.program, start.env)?;
    let program = cstring(program.as_os_str())?;
    let args: Vec<CString> = std::iter::once(Ok(program.clone()))
        .chain(start.args.iter().map(|a| cstring(a)))
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = start
        .env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.clone();
            pair.push("=");
            pair.push(v);
            cstring(&pair)
        })
        .collect::<io::Result<_>>()?;
    let argv = pointers(&args);
    let envp = pointers(&env);
    let cwd = cstring(start.cwd.as_os_str())?;
    let null = std::fs::File::open("/dev/null")?;
    let (out_r, out_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let child = Prepared {
        program: &program,
        argv: &argv,
        envp: &envp,
        cwd: &cwd,
        stdio: [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
        report: report_w.as_raw_fd(),
        ids: start.ids,
        parent: std::process::id() as libc::pid_t,
    };
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: start.cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: in the child, `exec` only makes system calls on what was prepared above (see
    // the module docs) and never returns.
    let pid = unsafe { clone3(&mut args)? };
    if pid == 0 {
        // SAFETY: the child of the clone (see above).
        unsafe { child.exec() }
    }
    // SAFETY: CLONE_PIDFD stored a new descriptor that this process owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((null, out_w, err_w, report_w));
    // The report pipe closes at exec (close-on-exec) or carries why the child gave up.
    let mut report = [0u8; 8];
    let read = read_full(&report_r, &mut report);
    drop(report_r);
    match read {
        Ok(0) => {}
        Ok(_) | Err(_) => {
            let step = u32::from_ne_bytes(report[..4].try_into().unwrap_or_default());
            let errno = i32::from_ne_bytes(report[4..].try_into().unwrap_or_default());
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            let cause = match read {
                Err(e) => e,
                Ok(_) => io::Error::from_raw_os_error(errno),
            };
            return Err(io::Error::new(
                cause.kind(),
                format!("{}: {cause}", Step::what(step)),
            ));
        }
    }
    let mut child = Child {
        pid,
        // SAFETY: an OwnedFd, which keeps its one descriptor open for as long as it lives.
        pidfd: unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?,
        status: None,
        stdout: None,
        stderr: None,
    };
    child.stdout = Some(pipe::Receiver::from_owned_fd(out_r)?);
    child.stderr = Some(pipe::Receiver::from_owned_fd(err_r)?);
    Ok(child)
}

/// Whether a child can be cloned into the cgroup `dir` here (the kernel is new enough, and no
/// seccomp profile refuses clone3): clones one that exits at once.
#[allow(unsafe_code)]
pub(crate) fn probe(dir: BorrowedFd<'_>) -> io::Result<()> {
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: the child only exits.
    let pid = unsafe { clone3(&mut args)? };
    if pid == 0 {
        // SAFETY: the child of the clone; exiting is all it does.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    Ok(())
}

/// `clone3(args)`: the child's pid in this process, 0 in the child.
///
/// # Safety
/// Without `CLONE_VM` and without a stack the child is a copy of this process, like a fork's:
/// until it execs or exits it may only make system calls on values prepared before (see the
/// module docs).
#[allow(unsafe_code)]
unsafe fn clone3(args: &mut CloneArgs) -> io::Result<i32> {
    // SAFETY: `args` is a valid `clone_args` of the size passed; see the function's contract.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_mut(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid as i32)
    }
}

impl Child {
    /// Its pid (not reused before it is waited for).
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for it to exit.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            self.pidfd.readable().await?.clear_ready();
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
        }
    }

    /// Reaps it if it has exited.
    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        let mut raw = 0;
        // SAFETY: waitpid on our own child, which holds its pid until reaped (the pidfd does
        // not keep it, but nobody else reaps children this process registered as spawned).
        #[allow(unsafe_code)]
        let reaped = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
        match reaped {
            0 => Ok(None),
            pid if pid == self.pid => {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                Ok(Some(status))
            }
            _ => Err(io::Error::last_os_error()),
        }
    }
}

impl Drop for Child {
    /// Kills and reaps a child nobody waited for (what `kill_on_drop` does for tokio's).
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: a signal through our own pidfd, which names this child and no other.
        #[allow(unsafe_code)]
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        let pid = nix::unistd::Pid::from_raw(self.pid);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || nix::sys::wait::waitpid(pid, None));
            }
            Err(_) => {
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
    }
}

/// Everything the child needs, made before the clone.
struct Prepared<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    cwd: &'a CString,
    stdio: [RawFd; 3],
    report: RawFd,
    ids: Option<&'a ChildIds>,
    parent: libc::pid_t,
}

impl Prepared<'_> {
    /// In the child: connects its stdio, makes its group, resets its signals, changes
    /// directory, switches to the job user, asks to die with Otter and execs. On a failure it
    /// writes the step and errno to the report pipe and exits 127.
    ///
    /// # Safety
    /// Only in the child of a clone without `CLONE_VM`.
    #[allow(unsafe_code)]
    unsafe fn exec(&self) -> ! {
        // SAFETY: raw system calls on values made before the clone (see the module docs).
        unsafe {
            let fail = |step: Step| -> ! {
                let errno = *libc::__errno_location();
                let mut report = [0u8; 8];
                report[..4].copy_from_slice(&(step as u32).to_ne_bytes());
                report[4..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(self.report, report.as_ptr().cast(), report.len());
                libc::syscall(libc::SYS_exit_group, 127);
                libc::abort()
            };
            for (target, fd) in self.stdio.iter().enumerate() {
                if libc::dup2(*fd, target as RawFd) < 0 {
                    fail(Step::Stdio);
                }
            }
            // Its own group, as a shell would give it (the unit, not the group, is what is killed).
            if libc::setpgid(0, 0) != 0 {
                fail(Step::Group);
            }
            // Rust ignores SIGPIPE and a blocked signal stays blocked across exec: the program
            // gets the defaults.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0
                || libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut()) != 0
            {
                fail(Step::Signals);
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                fail(Step::Chdir);
            }
            if let Some(ids) = self.ids
                && (libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) != 0
                    || libc::syscall(libc::SYS_setgid, ids.gid) != 0
                    || libc::syscall(libc::SYS_setuid, ids.uid) != 0)
            {
                fail(Step::Ids);
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
                fail(Step::DeathSignal);
            }
            // The parent may have died before the death signal was asked for.
            if libc::getppid() != self.parent {
                *libc::__errno_location() = libc::ESRCH;
                fail(Step::ParentGone);
            }
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
            fail(Step::Exec)
        }
    }
}

/// `program` as a path to exec: as given when it names a path, else found on the child's
/// `PATH` (this process's when the child has none), like a shell would.
fn resolve(program: &Path, env: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not on PATH", program.display()),
            )
        })
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or variable holds a NUL byte",
        )
    })
}

/// The null-terminated pointer array of `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Reads until `buf` is full or the end; the bytes read.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match nix::unistd::read(fd, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}
