//! Why a run stops early: SIGTERM and the time limit, and the waits that watch for both.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Listens for SIGTERM on a small tokio runtime in its own thread (no `unsafe` needed)
/// and forwards each one as a message. The handler is registered before this returns.
pub(crate) fn install_sigterm_listener() -> Option<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let mut sigterm = {
        let _guard = runtime.enter();
        signal(SignalKind::terminate()).ok()?
    };
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("sigterm".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                while sigterm.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        })
        .ok()?;
    Some(rx)
}

/// Why a run stopped early (exit code 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    TurnLimit,
    PriceLimit,
    TokenLimit,
    Deadline,
    Terminated,
}

impl Stop {
    /// The name in `Stopped: <name>` and the export's `outcome`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stop::TurnLimit => "turn_limit",
            Stop::PriceLimit => "price_limit",
            Stop::TokenLimit => "token_limit",
            Stop::Deadline => "deadline",
            Stop::Terminated => "terminated",
        }
    }

    /// The export's `stop_reason`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Stop::TurnLimit => "limit",
            Stop::PriceLimit | Stop::TokenLimit | Stop::Deadline | Stop::Terminated => {
                "interrupted"
            }
        }
    }
}

/// How long the "model" takes to answer.
#[derive(Clone, Copy)]
pub(crate) enum Delay {
    For(Duration),
    Forever,
}

/// Sleeps that wake early on SIGTERM or when the `--time-limit` deadline passes.
pub(crate) struct Waiter {
    pub(crate) sigterm: Option<mpsc::Receiver<()>>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) terminated: bool,
}

impl Waiter {
    pub(crate) fn poll(&mut self) -> Result<(), Stop> {
        if !self.terminated
            && self
                .sigterm
                .as_ref()
                .is_some_and(|rx| rx.try_recv().is_ok())
        {
            self.terminated = true;
        }
        if self.terminated {
            return Err(Stop::Terminated);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Deadline);
        }
        Ok(())
    }

    pub(crate) fn sleep(&mut self, delay: Delay) -> Result<(), Stop> {
        let until = match delay {
            Delay::For(d) => Instant::now().checked_add(d),
            Delay::Forever => None,
        };
        loop {
            self.poll()?;
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) {
                return Ok(());
            }
            let wake = [until, self.deadline].into_iter().flatten().min();
            let timeout = wake.map_or(Duration::from_secs(3600), |w| {
                w.saturating_duration_since(now)
            });
            match &self.sigterm {
                Some(rx) => match rx.recv_timeout(timeout) {
                    Ok(()) => self.terminated = true,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => self.sigterm = None,
                },
                None => std::thread::sleep(timeout.min(Duration::from_millis(50))),
            }
        }
    }
}
