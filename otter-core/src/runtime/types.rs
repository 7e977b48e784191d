//! What the runtime answers: the state of a container, what an operation did, a build's
//! summary, a log line, what a cleanup removed.

use serde::Serialize;

use crate::model::{JobId, OutputStream, WorkspaceId};

/// A runtime container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    /// No container.
    None,
    /// The image is being built (a container may exist from before).
    Building,
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Stopped or exited on its own.
    Exited,
    /// Being removed.
    Removing,
    /// Failed in the engine.
    Dead,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    /// The port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host address it is published on.
    pub host_ip: String,
    /// The host port.
    pub host_port: u16,
}

/// What the runtime knows of one workspace's container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeInfo {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The container's state.
    pub status: RuntimeStatus,
    /// The container's name (whether or not it exists).
    pub container_name: String,
    /// The container's id, when it exists.
    pub container_id: Option<String>,
    /// The image's name.
    pub image: String,
    /// The id of the image the container runs (or of the built image, without a container).
    pub image_id: Option<String>,
    /// The network the container is attached to.
    pub network: String,
    /// Published ports (empty unless the container runs).
    pub ports: Vec<PublishedPort>,
    /// `OTTER_RUNTIME_DEFAULT_HOST:<host port>` of the app's main port, while it runs.
    pub runtime_url: Option<String>,
    /// When the container last started.
    pub started_at: Option<String>,
    /// When it last stopped.
    pub finished_at: Option<String>,
    /// The app's exit code, once it exited.
    pub exit_code: Option<i64>,
    /// The engine's error about the container, if any.
    pub error: Option<String>,
}

/// What `start`, `restart` or `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeAction {
    /// The container was running already: nothing was done.
    AlreadyRunning,
    /// A new container was created and started.
    Created,
    /// The image changed (or the port): the old container was replaced.
    Recreated,
    /// The existing, stopped container was started.
    Started,
    /// The running container was restarted.
    Restarted,
    /// The container was stopped.
    Stopped,
    /// The container was not running: nothing was done.
    AlreadyStopped,
}

/// A finished image build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildSummary {
    /// The image's name.
    pub image: String,
    /// Its id.
    pub image_id: String,
    /// The folder that was built (holding the Dockerfile).
    pub context_dir: String,
    /// Lines of build output.
    pub log_lines: usize,
    /// The last [`BUILD_LOG_TAIL`](super::BUILD_LOG_TAIL) lines.
    pub log_tail: Vec<String>,
    /// The job whose events hold the build log (the workspace's newest), if it has one.
    pub job_id: Option<JobId>,
    /// How long the build took.
    pub duration_ms: u64,
}

/// The result of `start`, `restart` or `stop`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeOutcome {
    /// What was done.
    pub action: RuntimeAction,
    /// The state afterwards.
    pub runtime: RuntimeInfo,
    /// The build, when one ran.
    pub build: Option<BuildSummary>,
}

/// Options of `start` and `restart`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The app's main port inside the container (published even when not exposed).
    pub port: Option<u16>,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// [`OutputStream::Stdout`] or [`OutputStream::Stderr`].
    pub stream: OutputStream,
    /// The line, without its line end.
    pub text: String,
}

/// What was removed for one workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Whether a container was removed.
    pub container: bool,
    /// Whether an image was removed.
    pub image: bool,
}

/// What [`Runtime::cleanup_orphans`](super::Runtime::cleanup_orphans) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Names of the containers removed.
    pub containers_removed: Vec<String>,
    /// Names of the images removed.
    pub images_removed: Vec<String>,
    /// Managed containers kept (their workspace exists).
    pub containers_kept: usize,
}
