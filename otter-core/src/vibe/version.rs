//! Which vibe is installed: `vibe --version`, run the way jobs run it, decides the instructions
//! channel ([`InstructionsVia`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::InstructionsVia;
use crate::config::Config;
use crate::isolation::{Isolation, IsolationError, Unit, UnitName};
use crate::model::OutputStream;
use crate::runner::{self, Line, RunOutcome, RunSpec, RunnerError};

/// How long `vibe --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// Why `vibe --version` could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The unit to run it in could not be made.
    #[error(transparent)]
    Unit(#[from] IsolationError),
    /// vibe could not be started or waited for.
    #[error(transparent)]
    Run(#[from] RunnerError),
    /// vibe did not answer in time.
    #[error("it did not answer within {} s", VERSION_TIMEOUT.as_secs())]
    TimedOut,
}

impl InstructionsVia {
    /// Asks `vibe --version` (run the way jobs run it: as the job user, in a unit of its own);
    /// see [`InstructionsVia::for_version`]. When vibe cannot be run, `AGENTS.md` is assumed:
    /// jobs will say what is wrong with vibe when they run it.
    pub async fn detect(config: &Config, isolation: &Arc<Isolation>) -> Self {
        let output = match version(config, isolation).await {
            Ok(output) => output,
            Err(e) => {
                tracing::warn!(vibe = %config.vibe_bin.display(), error = %e, "cannot run `vibe --version`");
                return Self::AgentsMd;
            }
        };
        let via = Self::for_version(&output);
        tracing::info!(version = output.trim(), instructions = ?via, "vibe found");
        via
    }
}

/// What `vibe --version` prints on stdout.
pub async fn version(config: &Config, isolation: &Arc<Isolation>) -> Result<String, VersionError> {
    let unit = Unit::create(isolation, UnitName::task()).await?;
    let spec = RunSpec {
        program: config.vibe_bin.clone(),
        args: vec!["--version".into()],
        cwd: std::env::temp_dir(),
        unit: unit.clone(),
        env: config.vibe_extra_env.clone(),
        stdout_as: OutputStream::Stdout,
        stderr_as: OutputStream::Stderr,
        timeout: Some(VERSION_TIMEOUT),
        silence: None,
        kill_grace: Duration::from_secs(1),
        output_budget: None,
        spill: None,
        reap_group_on_exit: true,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let outcome = runner::run(&spec, tx, &CancellationToken::new()).await;
    unit.close().await;
    let mut stdout = String::new();
    while let Ok(line) = rx.try_recv() {
        if line.stream == OutputStream::Stdout {
            stdout.push_str(&line.text);
            stdout.push('\n');
        }
    }
    match outcome? {
        RunOutcome::TimedOut => Err(VersionError::TimedOut),
        _ => Ok(stdout),
    }
}
