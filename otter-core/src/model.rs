//! Otter's domain types: ids, projects, workspaces, jobs, their outputs and events, as stored in
//! PostgreSQL and shown by the API (field names are fixed by DESIGN.md §10).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies a project.
    ProjectId
);
id_type!(
    /// Identifies a workspace.
    WorkspaceId
);
id_type!(
    /// Identifies a job.
    JobId
);
id_type!(
    /// Identifies a webhook.
    WebhookId
);
id_type!(
    /// Identifies a webhook delivery (sent as `Otter-Delivery`, the same on every attempt).
    DeliveryId
);

/// A job's state. `paused` is a separate flag on a queued job, not a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to be claimed.
    Queued,
    /// Claimed by a worker, vibe running.
    Running,
    /// vibe exited 0 (and `setup.sh`, when present, has run).
    Succeeded,
    /// Ended without success and without attempts left.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a status name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// A group of workspaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Project {
    /// The project's id.
    pub id: ProjectId,
    /// A human name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// What the project's jobs may cost in all, in USD (`None`: no budget). Once spent, new
    /// prompts are refused (`budget_exhausted`), and every run starts with at most what remains
    /// as its `--max-price`.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// The most of the project's jobs that run at once, over all workers (`None`: the
    /// workers' `OTTER_PROJECT_MAX_RUNNING`, no limit if that is unset). Its other queued jobs
    /// wait, and take their turn when one of its runs ends.
    #[serde(default)]
    pub max_running: Option<i32>,
}

/// What a project's jobs cost and used: the sums over each job's output (its last run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProjectUsage {
    /// The project.
    pub project_id: ProjectId,
    /// Its budget, if it has one.
    pub budget_usd: Option<f64>,
    /// What its jobs cost (export.json's `cost_usd`).
    pub spent_usd: f64,
    /// `budget_usd - spent_usd`, never below 0; `None` without a budget.
    pub remaining_usd: Option<f64>,
    /// Input tokens of its jobs (export.json's `usage.input_tokens`).
    pub prompt_tokens: i64,
    /// Output tokens of its jobs (`usage.output_tokens`).
    pub completion_tokens: i64,
    /// How many jobs it has, in any state.
    pub jobs: i64,
}

impl ProjectUsage {
    /// Whether the budget is spent (never, without one).
    pub fn exhausted(&self) -> bool {
        self.remaining_usd.is_some_and(|r| r <= 0.0)
    }
}

/// A run's limits, each handed to vibe as its flag when set: `--max-turns`, `--max-price`,
/// `--max-tokens`, `--time-limit`; and one Otter keeps itself, `silence_secs`. Every value is
/// positive (checked by [`JobLimits::check`]), but `silence_secs`, where `0` turns the silence
/// watchdog off for the job.
/// Read from a JSON object only (an array is refused, as is an unknown key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JobLimits {
    /// Model turns at most (`--max-turns`).
    pub max_turns: Option<u64>,
    /// What the run may cost, in USD (`--max-price`).
    pub max_price_usd: Option<f64>,
    /// Tokens at most (`--max-tokens`).
    pub max_tokens: Option<u64>,
    /// Seconds at most (`--time-limit`).
    pub time_limit_secs: Option<u64>,
    /// Seconds the run may print nothing before it is stopped as hung (`OTTER_SILENCE_TIMEOUT`
    /// when unset; `0`: never).
    pub silence_secs: Option<u64>,
}

impl<'de> Deserialize<'de> for JobLimits {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(LimitsVisitor)
    }
}

struct LimitsVisitor;

impl<'de> serde::de::Visitor<'de> for LimitsVisitor {
    type Value = JobLimits;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "an object of max_turns, max_price_usd, max_tokens, time_limit_secs, silence_secs",
        )
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JobLimits, A::Error> {
        const FIELDS: &[&str] = &[
            "max_turns",
            "max_price_usd",
            "max_tokens",
            "time_limit_secs",
            "silence_secs",
        ];
        let mut limits = JobLimits::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "max_turns" => limits.max_turns = map.next_value()?,
                "max_price_usd" => limits.max_price_usd = map.next_value()?,
                "max_tokens" => limits.max_tokens = map.next_value()?,
                "time_limit_secs" => limits.time_limit_secs = map.next_value()?,
                "silence_secs" => limits.silence_secs = map.next_value()?,
                other => return Err(serde::de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(limits)
    }
}

impl JobLimits {
    /// Each limit not set here taken from `defaults`.
    pub fn or(self, defaults: JobLimits) -> JobLimits {
        JobLimits {
            max_turns: self.max_turns.or(defaults.max_turns),
            max_price_usd: self.max_price_usd.or(defaults.max_price_usd),
            max_tokens: self.max_tokens.or(defaults.max_tokens),
            time_limit_secs: self.time_limit_secs.or(defaults.time_limit_secs),
            silence_secs: self.silence_secs.or(defaults.silence_secs),
        }
    }

    /// The run's silence bound: `silence_secs` (`0`: none), else `default`
    /// (`OTTER_SILENCE_TIMEOUT`).
    pub fn silence(&self, default: Option<std::time::Duration>) -> Option<std::time::Duration> {
        match self.silence_secs {
            Some(0) => None,
            Some(secs) => Some(std::time::Duration::from_secs(secs)),
            None => default,
        }
    }

    /// These limits with the price at most `remaining_usd` (what the project's budget leaves;
    /// `None`: no budget).
    pub fn within_budget(self, remaining_usd: Option<f64>) -> JobLimits {
        let max_price_usd = match (self.max_price_usd, remaining_usd) {
            (Some(own), Some(left)) => Some(own.min(left)),
            (own, left) => own.or(left),
        };
        JobLimits {
            max_price_usd,
            ..self
        }
    }

    /// `Err` names the first limit that is not positive (or, for the price, not a finite
    /// number), as `limits.<name>`.
    pub fn check(&self) -> Result<(), String> {
        let whole = [
            ("max_turns", self.max_turns),
            ("max_tokens", self.max_tokens),
            ("time_limit_secs", self.time_limit_secs),
        ];
        for (name, value) in whole {
            if value == Some(0) {
                return Err(format!("limits.{name} must be a positive integer (got 0)"));
            }
        }
        for (name, value) in whole
            .into_iter()
            .chain([("silence_secs", self.silence_secs)])
        {
            // Stored as jsonb and handed to vibe as a number: keep it exact in every reader.
            if value.is_some_and(|v| v > MAX_LIMIT) {
                return Err(format!("limits.{name} must be at most {MAX_LIMIT}"));
            }
        }
        if let Some(price) = self.max_price_usd
            && !(price.is_finite() && price > 0.0)
        {
            return Err(format!(
                "limits.max_price_usd must be a positive number of USD (got {price})"
            ));
        }
        Ok(())
    }
}

/// The largest whole-number limit (2^53 - 1: exact as a JSON number everywhere).
pub const MAX_LIMIT: u64 = (1 << 53) - 1;

/// A directory vibe works in, with its own `VIBE_HOME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Workspace {
    /// The workspace's id.
    pub id: WorkspaceId,
    /// The project it belongs to, if any.
    pub project_id: Option<ProjectId>,
    /// A human name.
    pub name: String,
    /// Canonical absolute path of the directory.
    pub path: String,
    /// The workspace's own `VIBE_HOME`.
    pub vibe_home: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// What a finished run left: vibe's final answer and export.json's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobOutput {
    /// The last assistant message of the run.
    pub final_text: Option<String>,
    /// Token usage from export.json.
    pub usage: Option<serde_json::Value>,
    /// Cost in USD from export.json.
    pub cost: Option<f64>,
    /// vibe's outcome (`finished`, `turn_limit`, `config_error`, …).
    pub outcome: Option<String>,
    /// vibe's stop reason, when it stopped early.
    pub stop_reason: Option<String>,
    /// The kept part of export.json (its `config` is dropped).
    pub export: Option<serde_json::Value>,
    /// The model vibe ran: the alias export.json's `config.active_model` names (`otter-demo` for
    /// the demo model). Not a column of its own: it is `export`'s `model`, which is what is
    /// stored and what a job read back carries here.
    pub model: Option<String>,
    /// Files the job added, modified or deleted (between the checkpoints taken before its run
    /// and after it ended, `setup.sh` included); `None` when they are not known (no
    /// checkpoints, or one could not be taken).
    pub files_changed: Option<u64>,
    /// Lines added in those files.
    pub additions: Option<u64>,
    /// Lines removed in those files.
    pub deletions: Option<u64>,
    /// Otter ended vibe's processes after its final answer and `export.json`, because vibe had
    /// not exited within `OTTER_EXIT_GRACE` (the job ended as vibe reported).
    #[serde(default)]
    pub forced_exit: bool,
}

/// A prompt to run, and everything known about its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The workspace it runs in.
    pub workspace_id: WorkspaceId,
    /// The workspace's project, if any.
    pub project_id: Option<ProjectId>,
    /// The user's prompt, passed to vibe unchanged.
    pub prompt: String,
    /// Lifecycle state.
    pub status: JobStatus,
    /// A paused job stays queued and is never claimed.
    pub paused: bool,
    /// Higher runs first; within a priority, in turn ([`Job::queue_at`]).
    pub priority: i32,
    /// Runs started so far.
    pub attempts: i32,
    /// Runs allowed before the job fails for good.
    pub max_attempts: i32,
    /// vibe's exit code of the last run.
    pub exit_code: Option<i32>,
    /// Why the job failed or was cancelled.
    pub error: Option<String>,
    /// Where the app the job built can be seen.
    pub preview_url: Option<String>,
    /// Not claimable before this time (retry backoff).
    pub run_after: DateTime<Utc>,
    /// A user asked for the running job to be cancelled; its worker is stopping it.
    pub cancel_requested: bool,
    /// The worker holding the job while it runs.
    pub worker_id: Option<String>,
    /// Until when that worker's claim holds unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the job was submitted.
    pub created_at: DateTime<Utc>,
    /// When its latest run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended for good.
    pub finished_at: Option<DateTime<Utc>>,
    /// Present once the job has finished.
    pub output: Option<JobOutput>,
    /// The job this one follows up: it runs in that job's workspace and resumes its vibe
    /// session.
    #[serde(default)]
    pub parent_job_id: Option<JobId>,
    /// vibe's session id, once known: a follow-up's is its parent's (the session it resumes),
    /// and each run's `export.json` sets it.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The run's limits, as submitted with the defaults applied.
    #[serde(default)]
    pub limits: JobLimits,
    /// The vibe model alias the run uses (`VIBE_ACTIVE_MODEL`); `None`: the worker's
    /// (`OTTER_VIBE_MODEL`).
    #[serde(default)]
    pub model: Option<String>,
    /// The job's turn: at equal priority, queued jobs are claimed in this order. A job takes
    /// its turn at submission when its project (or, without one, the jobs without a project)
    /// has no other job queued, else one turn (an hour) after the project's last queued job,
    /// so that projects' jobs are claimed in turn (fair shares; docs/architecture.md).
    #[serde(default = "DateTime::<Utc>::default")]
    pub queue_at: DateTime<Utc>,
    /// The job's `output_chunk` events and run directories were deleted (`OTTER_RETENTION`):
    /// its row, output, lifecycle events and change summary remain.
    #[serde(default)]
    pub events_purged: bool,
}

/// Event kinds (DESIGN.md §5); the SSE `event:` field carries them.
pub mod kinds {
    /// A job was submitted.
    pub const JOB_QUEUED: &str = "job_queued";
    /// A worker claimed the job and started vibe.
    pub const JOB_STARTED: &str = "job_started";
    /// One line of vibe's or setup.sh's output.
    pub const OUTPUT_CHUNK: &str = "output_chunk";
    /// A failed run will be retried.
    pub const JOB_RETRY_SCHEDULED: &str = "job_retry_scheduled";
    /// The job succeeded.
    pub const JOB_SUCCEEDED: &str = "job_succeeded";
    /// The job failed for good.
    pub const JOB_FAILED: &str = "job_failed";
    /// The job was cancelled.
    pub const JOB_CANCELLED: &str = "job_cancelled";
    /// The job was paused.
    pub const JOB_PAUSED: &str = "job_paused";
    /// The job was resumed.
    pub const JOB_RESUMED: &str = "job_resumed";
    /// The job's priority changed.
    pub const JOB_PRIORITY_CHANGED: &str = "job_priority_changed";
    /// setup.sh started.
    pub const SETUP_STARTED: &str = "setup_started";
    /// setup.sh ended.
    pub const SETUP_FINISHED: &str = "setup_finished";
    /// A preview URL was posted for the job.
    pub const PREVIEW_URL_SET: &str = "preview_url_set";
    /// A runtime image build started (recorded on the workspace's newest job).
    pub const RUNTIME_BUILD_STARTED: &str = "runtime_build_started";
    /// A runtime image build ended; `payload.ok` says whether it succeeded.
    pub const RUNTIME_BUILD_FINISHED: &str = "runtime_build_finished";
    /// A checkpoint of the workspace could not be taken before or after the run (the job's
    /// result stands; its changes are not known).
    pub const CHECKPOINT_FAILED: &str = "checkpoint_failed";
    /// The workspace's files were put back as they were before or after the job.
    pub const WORKSPACE_RESTORED: &str = "workspace_restored";
    /// The run printed nothing for its silence bound and was stopped (`quiet_secs`).
    pub const JOB_SILENT: &str = "job_silent";
    /// vibe had answered and reported its end but did not exit within `OTTER_EXIT_GRACE`:
    /// Otter ended its processes (the job ends as vibe reported).
    pub const JOB_FORCED_EXIT: &str = "job_forced_exit";
    /// The run ended on the model provider's rate limit: the job waits, queued, until `until`
    /// (the attempt not counted), and so do the provider's other jobs.
    pub const JOB_RATE_LIMITED: &str = "job_rate_limited";

    /// Whether an event of this kind ends its job's stream.
    pub fn is_terminal(kind: &str) -> bool {
        matches!(kind, JOB_SUCCEEDED | JOB_FAILED | JOB_CANCELLED)
    }
}

/// Which stream a line of output came from: the `stream` of an `output_chunk` event, of a
/// runner's [`crate::runner::Line`] and of a runtime container's log line. The one name of a
/// stream everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// A process's stdout: vibe's (NDJSON entries), a command's, a container's.
    Stdout,
    /// A process's stderr.
    Stderr,
    /// setup.sh's stdout and stderr.
    Setup,
    /// A runtime image's build log.
    Runtime,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Event {
    /// Global, increasing id: the SSE `id:` and the resume cursor.
    pub id: i64,
    /// The job it belongs to.
    pub job_id: JobId,
    /// The job's workspace.
    pub workspace_id: WorkspaceId,
    /// The job's project, if any.
    pub project_id: Option<ProjectId>,
    /// Position within the job's own events, from 1.
    pub seq: i64,
    /// What happened (see [`kinds`]).
    pub kind: String,
    /// Details; for `output_chunk`: `{"stream", "text", "entry"?}`.
    pub payload: serde_json::Value,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// An event about to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened (see [`kinds`]).
    pub kind: &'static str,
    /// Details.
    pub payload: serde_json::Value,
}

impl NewEvent {
    /// An event of `kind` with `payload`.
    pub fn new(kind: &'static str, payload: serde_json::Value) -> Self {
        Self { kind, payload }
    }

    /// An `output_chunk` for one line: the raw text, and the parsed vibe entry when the line is JSON.
    pub fn output(stream: OutputStream, text: String, entry: Option<serde_json::Value>) -> Self {
        let mut payload = serde_json::Map::new();
        payload.insert(
            "stream".to_owned(),
            serde_json::to_value(stream).unwrap_or_default(),
        );
        payload.insert("text".to_owned(), serde_json::Value::String(text));
        if let Some(entry) = entry {
            payload.insert("entry".to_owned(), entry);
        }
        Self::new(kinds::OUTPUT_CHUNK, serde_json::Value::Object(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_take_defaults_and_the_budget_caps_the_price() {
        let own = JobLimits {
            max_turns: Some(3),
            max_price_usd: Some(2.0),
            ..JobLimits::default()
        };
        let defaults = JobLimits {
            max_turns: Some(50),
            max_tokens: Some(1000),
            ..JobLimits::default()
        };
        let limits = own.or(defaults);
        assert_eq!(limits.max_turns, Some(3), "the job's own wins");
        assert_eq!(limits.max_tokens, Some(1000), "a default fills the gap");
        assert_eq!(limits.within_budget(Some(0.5)).max_price_usd, Some(0.5));
        assert_eq!(limits.within_budget(Some(9.0)).max_price_usd, Some(2.0));
        assert_eq!(limits.within_budget(None).max_price_usd, Some(2.0));
        assert_eq!(
            JobLimits::default().within_budget(Some(0.25)).max_price_usd,
            Some(0.25),
            "the remaining budget is a limit of its own"
        );
    }

    #[test]
    fn a_jobs_silence_bound_is_its_own_or_the_workers_and_zero_is_none() {
        let worker = Some(std::time::Duration::from_secs(900));
        let of = |silence_secs| JobLimits {
            silence_secs,
            ..JobLimits::default()
        };
        assert_eq!(of(None).silence(worker), worker);
        assert_eq!(
            of(Some(30)).silence(worker),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(of(Some(0)).silence(worker), None);
        assert_eq!(of(None).silence(None), None);
    }

    #[test]
    fn limits_are_positive_and_read_from_an_object_only() {
        assert!(JobLimits::default().check().is_ok());
        for bad in [
            JobLimits {
                max_turns: Some(0),
                ..JobLimits::default()
            },
            JobLimits {
                max_tokens: Some(MAX_LIMIT + 1),
                ..JobLimits::default()
            },
            JobLimits {
                max_price_usd: Some(f64::NAN),
                ..JobLimits::default()
            },
            JobLimits {
                max_price_usd: Some(-1.0),
                ..JobLimits::default()
            },
        ] {
            let message = bad.check().expect_err("refused");
            assert!(message.starts_with("limits."), "{message}");
        }
        let read: JobLimits =
            serde_json::from_str(r#"{"max_turns": 2, "max_price_usd": null}"#).unwrap();
        assert_eq!(read.max_turns, Some(2));
        assert!(serde_json::from_str::<JobLimits>("[1, 2]").is_err());
        let unknown = serde_json::from_str::<JobLimits>(r#"{"max_steps": 1}"#).unwrap_err();
        assert!(unknown.to_string().contains("max_steps"), "{unknown}");
        // Stored with every key, read back the same.
        let all = JobLimits {
            max_turns: Some(1),
            max_price_usd: Some(0.5),
            max_tokens: Some(7),
            time_limit_secs: Some(9),
            silence_secs: Some(0),
        };
        let text = serde_json::to_string(&all).unwrap();
        assert_eq!(serde_json::from_str::<JobLimits>(&text).unwrap(), all);
    }
}
