//! Where no cgroup holds the children ([`Containment::Marker`]): the server and the worker
//! become subreapers, so that a process whose parent exits is re-parented to them instead of
//! to init, and they look after what they adopt.
//!
//! An adopted process came from one of their units, with the unit's marker in its environment,
//! or without one if it cleared its environment to hide. Marked ones are left to their unit:
//! killed with it, or kept (a `setup.sh` app). Unmarked ones are killed at once: nothing of
//! Otter's runs without a marker, so such a process escaped its unit. Both are reaped when
//! they exit. The children this process spawned itself are never touched: tokio waits for them
//! (they are registered under the same lock as their spawn).
//!
//! With cgroups the cgroup holds every descendant and no subreaper is needed; but a process
//! that is PID 1 (a container without an init) adopts every orphan anyway, and then reaps
//! them here.
//!
//! Only for the binaries' `main`: a test process running a server or worker in-process has
//! children of its own, which this would take for orphans.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::unit::{MARKER, spawned};
use super::{Containment, Isolation, IsolationError, io, procfs};

/// How often adopted processes are looked at, besides every SIGCHLD.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl Isolation {
    /// With [`Containment::Marker`], makes this process a subreaper and starts looking after
    /// the orphans it adopts until `shutdown` (see the module docs); with cgroups, only reaps
    /// them, and only when this process is PID 1. Call once, from `main`, inside the runtime.
    pub fn supervise_orphans(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<(), IsolationError> {
        let police = matches!(self.containment(), Containment::Marker);
        if police {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| io("PR_SET_CHILD_SUBREAPER")(e.into()))?;
        } else if std::process::id() != 1 {
            return Ok(());
        }
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(io("listening for SIGCHLD"))?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = sigchld.recv() => {}
                    () = tokio::time::sleep(LOOK_EVERY) => {}
                }
                look_after_orphans(police);
            }
        });
        Ok(())
    }
}

/// One pass over the adopted processes: reap the dead, and, when `police`, kill the unmarked.
fn look_after_orphans(police: bool) {
    let me = std::process::id() as i32;
    let adopted: Vec<procfs::Stat> = procfs::all().into_iter().filter(|s| s.ppid == me).collect();
    // Held across the pass: a child spawned meanwhile is registered before it can be seen.
    let spawned = spawned();
    for stat in adopted.into_iter().filter(|s| !spawned.contains(&s.pid)) {
        let pid = Pid::from_raw(stat.pid);
        if stat.is_zombie() {
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        } else if police && procfs::environ_names(stat.pid, MARKER.as_bytes()) == Some(false) {
            tracing::warn!(
                pid = stat.pid,
                "killing an orphan that left its unit without a marker"
            );
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}
