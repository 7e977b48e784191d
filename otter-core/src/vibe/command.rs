//! How vibe is started for a job (DESIGN.md §4): its command line, its environment, and the
//! channel by which Otter's instructions reach it.
//!
//! ```text
//! vibe --prompt=<prompt> --output streaming --trust --auto-approve --output-dir <run dir>
//!      [--resume <session id>] [--max-turns N] [--max-price USD] [--max-tokens N]
//!      [--time-limit <seconds>]
//! ```
//!
//! `--resume` continues the job's vibe session (a follow-up's parent's), never `-c`, which
//! takes "the latest" session of the home and races. The limits are the job's (`limits`, the
//! price within what its project's budget leaves); `--time-limit` is the shorter of the job's
//! and `OTTER_JOB_TIMEOUT`. Every flag here is one vibe 3.x takes (the captures in
//! `otter-core/tests/data/`); vibe 1.x knows `--resume`, `--max-turns` and `--max-price` but
//! not `--max-tokens` nor `--time-limit` (nor `--trust` and `--output-dir`, which Otter always
//! passes): it refuses them with a usage error, exit 1, and the job fails saying so.
//!
//! Where the process runs (cwd, unit, output budget) is the caller's: this module says only what
//! vibe is told.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::demo;
use crate::instructions;
use crate::model::{JobId, JobLimits};

/// The file in `VIBE_HOME` whose text vibe 3.x puts into its system prompt as user-level
/// instructions.
pub const AGENTS_FILE: &str = "AGENTS.md";

/// How Otter's instructions reach vibe (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstructionsVia {
    /// `$VIBE_HOME/AGENTS.md`, which vibe 3.x puts into its system prompt; the user's prompt goes
    /// to `--prompt` unchanged.
    AgentsMd,
    /// A prefix of the prompt, for older vibe that does not read that file.
    PromptPrefix,
}

impl InstructionsVia {
    /// The way for a `--version` output such as `vibe 3.0.3`: 3.x and later read `AGENTS.md`,
    /// older versions get the prefix. When the version cannot be told (odd output), `AGENTS.md`
    /// is assumed.
    pub fn for_version(output: &str) -> Self {
        let major = output
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .find(|word| word.contains('.'))
            .and_then(|version| version.split('.').next())
            .and_then(|major| major.parse::<u32>().ok());
        match major {
            Some(major) if major < 3 => Self::PromptPrefix,
            _ => Self::AgentsMd,
        }
    }

    /// What goes to `--prompt`: the user's prompt, after the instructions when they cannot go
    /// to `AGENTS.md`.
    pub fn prompt(self, instructions: &str, prompt: &str) -> String {
        match self {
            Self::AgentsMd => prompt.to_owned(),
            Self::PromptPrefix => instructions::prefixed(instructions, prompt),
        }
    }
}

/// Where the instructions are written in a `VIBE_HOME`. They are written whichever the channel:
/// a vibe that reads the file is told, one that does not loses nothing.
pub fn agents_file(vibe_home: &Path) -> PathBuf {
    vibe_home.join(AGENTS_FILE)
}

/// What one run of vibe is about.
#[derive(Debug, Clone, Copy)]
pub struct RunRequest<'a> {
    /// The job.
    pub job_id: JobId,
    /// What goes to `--prompt` (see [`InstructionsVia::prompt`]).
    pub prompt: &'a str,
    /// The workspace's `VIBE_HOME`.
    pub vibe_home: &'a str,
    /// Where vibe writes `export.json` for this attempt.
    pub run_dir: &'a Path,
    /// `OTTER_API_TOKEN`: good only for posting this job's preview URL while this run lasts.
    pub job_token: &'a str,
    /// The vibe session to go on with (`--resume`), a follow-up's.
    pub resume: Option<&'a str>,
    /// The run's limits (the price already within the project's budget).
    pub limits: &'a JobLimits,
    /// The model alias for this run (`VIBE_ACTIVE_MODEL`), over `OTTER_VIBE_MODEL`.
    pub model: Option<&'a str>,
}

/// vibe's command line and environment for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program (`OTTER_VIBE_BIN`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables set for it (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// The hard bound on the run: vibe stops itself at `--time-limit`, this is the backstop.
    pub timeout: Option<Duration>,
}

impl Invocation {
    /// How `config`'s vibe is started for `run`.
    pub fn new(config: &Config, run: &RunRequest<'_>) -> Self {
        // One argument, whose length the server checked at submit (`instructions::max_prompt_bytes`).
        let mut args: Vec<OsString> = vec![instructions::prompt_argument(run.prompt).into()];
        args.extend(
            [
                "--output",
                "streaming",
                "--trust",
                "--auto-approve",
                "--output-dir",
            ]
            .map(OsString::from),
        );
        args.push(run.run_dir.as_os_str().to_owned());
        let mut flag = |name: &str, value: String| {
            args.push(name.into());
            args.push(value.into());
        };
        if let Some(session) = run.resume {
            flag("--resume", session.to_owned());
        }
        let limits = run.limits;
        if let Some(turns) = limits.max_turns {
            flag("--max-turns", turns.to_string());
        }
        if let Some(price) = limits.max_price_usd {
            flag("--max-price", price.to_string());
        }
        if let Some(tokens) = limits.max_tokens {
            flag("--max-tokens", tokens.to_string());
        }
        let job_limit = limits.time_limit_secs.map(Duration::from_secs);
        let time_limit = match (job_limit, config.job_timeout) {
            (Some(job), Some(all)) => Some(job.min(all)),
            (job, all) => job.or(all),
        };
        let mut timeout = None;
        if let Some(limit) = time_limit {
            flag("--time-limit", limit.as_secs().max(1).to_string());
            timeout = Some(limit + config.cancel_grace + Duration::from_secs(30));
        }
        Self {
            program: config.vibe_bin.clone(),
            args,
            env: env(config, run),
            timeout,
        }
    }
}

/// vibe's environment for `run`.
fn env(config: &Config, run: &RunRequest<'_>) -> Vec<(String, String)> {
    let mut env = vec![("VIBE_HOME".to_owned(), run.vibe_home.to_owned())];
    if let Some(key) = &config.mistral_api_key {
        env.push(("MISTRAL_API_KEY".to_owned(), key.expose().to_owned()));
    }
    if config.demo {
        // The demo model, whatever OTTER_VIBE_MODEL says, and its dummy key.
        env.extend(demo::vibe_env());
    } else {
        if let Some(model) = run.model.or(config.vibe_model.as_deref()) {
            // vibe 3.x reads only VIBE_ACTIVE_MODEL; older versions the other two (DESIGN.md §4).
            for name in ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"] {
                env.push((name.to_owned(), model.to_owned()));
            }
        }
        if let Some(provider) = &config.vibe_provider {
            env.push(("VIBE_PROVIDER".to_owned(), provider.clone()));
        }
    }
    env.push(("OTTER_JOB_ID".to_owned(), run.job_id.to_string()));
    env.push(("OTTER_API_TOKEN".to_owned(), run.job_token.to_owned()));
    env.push(("OTTER_API_BASE_URL".to_owned(), config.api_base_url.clone()));
    env.extend(config.vibe_extra_env.iter().cloned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_decides_how_instructions_are_handed_over() {
        for (output, want) in [
            ("vibe 3.0.3\n", InstructionsVia::AgentsMd),
            ("vibe 4.1.0", InstructionsVia::AgentsMd),
            ("vibe 2.26.1\n", InstructionsVia::PromptPrefix),
            ("mistral-vibe 1.3.5", InstructionsVia::PromptPrefix),
            ("", InstructionsVia::AgentsMd),
            ("garbage", InstructionsVia::AgentsMd),
        ] {
            assert_eq!(InstructionsVia::for_version(output), want, "{output:?}");
        }
    }

    #[test]
    fn only_older_vibe_gets_the_instructions_in_its_prompt() {
        assert_eq!(InstructionsVia::AgentsMd.prompt("rules", "do it"), "do it");
        let prefixed = InstructionsVia::PromptPrefix.prompt("rules", "do it");
        assert!(prefixed.starts_with("rules") && prefixed.ends_with("do it"));
    }

    #[test]
    fn argv_and_environment_of_a_run() {
        let vars: std::collections::HashMap<String, String> = [
            ("OTTER_DATABASE_URL", "postgres://otter@db/otter"),
            ("OTTER_REDIS_URL", "redis://redis:6379"),
            ("OTTER_VIBE_BIN", "/opt/vibe"),
            ("OTTER_VIBE_MODEL", "devstral"),
            ("OTTER_JOB_TIMEOUT", "5m"),
            ("OTTER_CANCEL_GRACE", "10s"),
            ("OTTER_VIBE_EXTRA_ENV", "EXTRA=1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::from_map(&vars).expect("valid");
        let job_id = JobId::new();
        let run = RunRequest {
            job_id,
            prompt: "-starts with a dash",
            vibe_home: "/homes/w/.vibe",
            run_dir: Path::new("/homes/w/.vibe/runs/j-1"),
            job_token: "tok",
            resume: None,
            limits: &JobLimits::default(),
            model: None,
        };
        let invocation = Invocation::new(&config, &run);
        assert_eq!(invocation.program, PathBuf::from("/opt/vibe"));
        let args: Vec<&str> = invocation
            .args
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--prompt=-starts with a dash",
                "--output",
                "streaming",
                "--trust",
                "--auto-approve",
                "--output-dir",
                "/homes/w/.vibe/runs/j-1",
                "--time-limit",
                "300",
            ]
        );
        assert_eq!(invocation.timeout, Some(Duration::from_secs(340)));
        let env = |name: &str| {
            invocation
                .env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(env("VIBE_HOME"), Some("/homes/w/.vibe"));
        for name in ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"] {
            assert_eq!(env(name), Some("devstral"), "{name}");
        }
        assert_eq!(env("OTTER_JOB_ID"), Some(job_id.to_string().as_str()));
        assert_eq!(env("OTTER_API_TOKEN"), Some("tok"));
        assert_eq!(env("EXTRA"), Some("1"));
        assert_eq!(
            invocation.env.last().map(|(k, _)| k.as_str()),
            Some("EXTRA")
        );
    }

    #[test]
    fn a_follow_up_resumes_its_session_with_its_limits_and_model() {
        let vars: std::collections::HashMap<String, String> = [
            ("OTTER_DATABASE_URL", "postgres://otter@db/otter"),
            ("OTTER_REDIS_URL", "redis://redis:6379"),
            ("OTTER_VIBE_MODEL", "devstral"),
            ("OTTER_JOB_TIMEOUT", "5m"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::from_map(&vars).expect("valid");
        let limits = JobLimits {
            max_turns: Some(7),
            max_price_usd: Some(0.25),
            max_tokens: Some(9000),
            time_limit_secs: Some(600),
            silence_secs: Some(30),
        };
        let run = RunRequest {
            job_id: JobId::new(),
            prompt: "and now blue",
            vibe_home: "/h",
            run_dir: Path::new("/h/runs/j-1"),
            job_token: "tok",
            resume: Some("5f0c-session"),
            limits: &limits,
            model: Some("mistral-small"),
        };
        let invocation = Invocation::new(&config, &run);
        let args: Vec<&str> = invocation
            .args
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect();
        assert_eq!(
            &args[7..],
            [
                "--resume",
                "5f0c-session",
                "--max-turns",
                "7",
                "--max-price",
                "0.25",
                "--max-tokens",
                "9000",
                // The shorter of the job's 600 s and OTTER_JOB_TIMEOUT's 300 s.
                "--time-limit",
                "300",
            ]
        );
        assert!(!args.contains(&"-c") && !args.contains(&"--continue"));
        for name in ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"] {
            let value = invocation
                .env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            assert_eq!(value, Some("mistral-small"), "{name}");
        }
        let shorter = JobLimits {
            time_limit_secs: Some(20),
            ..JobLimits::default()
        };
        let invocation = Invocation::new(
            &config,
            &RunRequest {
                limits: &shorter,
                resume: None,
                ..run
            },
        );
        let args: Vec<&str> = invocation
            .args
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect();
        assert_eq!(&args[7..], ["--time-limit", "20"]);
    }
}
