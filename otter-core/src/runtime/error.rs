//! Why a runtime operation failed.

use crate::db::DbError;
use crate::model::WorkspaceId;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `OTTER_RUNTIME_ENABLED` is false.
    #[error("the runtime is disabled (OTTER_RUNTIME_ENABLED=false)")]
    Disabled,
    /// The Docker engine does not answer.
    #[error("the Docker engine at {socket} is unreachable: {reason}")]
    Unreachable {
        /// `OTTER_RUNTIME_DOCKER_SOCKET`.
        socket: String,
        /// What failed.
        reason: String,
    },
    /// The workspace has no Dockerfile; the message says where it was looked for.
    #[error("{0}")]
    NoDockerfile(String),
    /// The build context could not be read.
    #[error("the build context could not be prepared: {0}")]
    Context(String),
    /// The build context is too large to send.
    #[error(
        "the build context {dir} is larger than {limit_mib} MiB: add a .dockerignore that leaves out what the image does not need"
    )]
    ContextTooLarge {
        /// The folder.
        dir: String,
        /// The cap.
        limit_mib: u64,
    },
    /// The image build failed; `message` is the engine's error.
    #[error("the image build failed: {message}")]
    BuildFailed {
        /// The engine's error line.
        message: String,
        /// The last lines of the build log.
        log_tail: Vec<String>,
    },
    /// The container was created but the engine could not start it.
    #[error("the container could not be started: {0}")]
    StartFailed(String),
    /// The workspace has no runtime container.
    #[error("workspace {0} has no runtime container: start it first")]
    NoContainer(WorkspaceId),
    /// The workspace's container exists but does not run.
    #[error("the runtime container of workspace {0} is not running: start it first")]
    NotRunning(WorkspaceId),
    /// A parameter is not acceptable; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The engine answered with an unexpected error.
    #[error("the Docker engine failed: {0}")]
    Docker(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}
