//! The scripted "model": the scenarios, the knobs read from the environment, and each step.

use std::env;
use std::path::PathBuf;
use std::time::Duration;

use crate::probe;
use crate::stop::Delay;

const HELLO_PATH: &str = "hello.txt";
const HELLO_CONTENT: &str = "Hello from the mock LLM\n";
const HELLO_COMMAND: &str = "cat hello.txt && echo done";
const TOOLS_FINAL: &str =
    "I created `hello.txt` and ran `cat hello.txt`; it printed \"Hello from the mock LLM\". Done.";
const SETUP_FINAL: &str = "I created `hello.txt` and `setup.sh`, ran `cat hello.txt` and made \
                           `setup.sh` executable. Done.";
const REASONING_TEXT: &str = "The user wants a file. I will use the tools.";
const PLAIN_TEXT: &str = "Hello! This is a plain text answer from the mock LLM.";
const RISKY_COMMAND: &str = "rm -rf ./scratch && touch made_by_bash.txt";
const RISKY_FINAL: &str = "Finished the risky step.";
const CHANGE_SET_ADDED: &str = "added.txt";
const CHANGE_SET_ADDED_CONTENT: &str = "a file the job added\n";
const CHANGE_SET_EDITED: &str = "edited.txt";
const CHANGE_SET_EDITED_CONTENT: &str = "line 1\nline two\nline 3\nline 4\n";
const CHANGE_SET_COMMAND: &str = "rm deleted.txt";
const CHANGE_SET_FINAL: &str =
    "I added `added.txt`, edited `edited.txt` and deleted `deleted.txt`.";
const SETUP_SCRIPT: &str = "#!/bin/sh\necho \"setup line 1\"\necho \"setup line 2\"\n\
                            echo \"setup warning\" >&2\nexit 0\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    Tools,
    Rich,
    Text,
    Risky,
    ConfigError,
    MissingKey,
    NoConfig,
    InfraError,
    TurnLimit,
    PriceLimit,
    TokenLimit,
    Slow,
    Hang,
    RateLimit,
    Flood,
    Grandchild,
    GrandchildExit,
    Setup,
    ChangeSet,
    StderrNoise,
    Probe,
    Exit(u8),
}

const SCENARIO_NAMES: &str = "tools, rich, text, risky, config-error, missing-key, no-config, \
                              infra-error, turn-limit, price-limit, token-limit, slow, hang, \
                              rate-limit, flood, \
                              grandchild, grandchild-exit, setup, change-set, stderr-noise, probe, \
                              exit:N";

impl Scenario {
    pub(crate) fn parse(name: &str) -> Option<Scenario> {
        Some(match name {
            "tools" => Scenario::Tools,
            "rich" => Scenario::Rich,
            "text" => Scenario::Text,
            "risky" => Scenario::Risky,
            "config-error" => Scenario::ConfigError,
            "missing-key" => Scenario::MissingKey,
            "no-config" => Scenario::NoConfig,
            "infra-error" => Scenario::InfraError,
            "turn-limit" => Scenario::TurnLimit,
            "price-limit" => Scenario::PriceLimit,
            "token-limit" => Scenario::TokenLimit,
            "slow" => Scenario::Slow,
            "hang" => Scenario::Hang,
            "rate-limit" => Scenario::RateLimit,
            "flood" => Scenario::Flood,
            "grandchild" => Scenario::Grandchild,
            "grandchild-exit" => Scenario::GrandchildExit,
            "setup" => Scenario::Setup,
            "change-set" => Scenario::ChangeSet,
            "stderr-noise" => Scenario::StderrNoise,
            "probe" => Scenario::Probe,
            _ => Scenario::Exit(name.strip_prefix("exit:")?.parse().ok()?),
        })
    }
}

/// Everything the `FAKE_VIBE_*` environment variables choose.
pub(crate) struct Knobs {
    pub(crate) scenario: Scenario,
    pub(crate) sleep: Duration,
    pub(crate) lines: u64,
    pub(crate) pidfile: Option<PathBuf>,
    pub(crate) grandchild_inherit: bool,
    pub(crate) grandchild_secs: u64,
    pub(crate) grandchild_script: Option<PathBuf>,
    setup_subdir: Option<String>,
    pub(crate) no_export: bool,
    pub(crate) hang_after_answer: bool,
    rate_limit_file: Option<PathBuf>,
}

pub(crate) fn env_string(name: &str) -> Option<String> {
    env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match env_string(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("invalid {name} '{v}': expected a non-negative integer")),
    }
}

impl Knobs {
    pub(crate) fn from_env() -> Result<Knobs, String> {
        let name = env_string("FAKE_VIBE_SCENARIO").unwrap_or_else(|| "tools".to_owned());
        let scenario = Scenario::parse(name.trim()).ok_or_else(|| {
            format!("unknown FAKE_VIBE_SCENARIO '{name}' (known: {SCENARIO_NAMES})")
        })?;
        let default_sleep = if scenario == Scenario::Slow { 2000 } else { 0 };
        let grandchild_stdio = env_string("FAKE_VIBE_GRANDCHILD_STDIO").unwrap_or_default();
        let grandchild_inherit = match grandchild_stdio.as_str() {
            "" | "null" => false,
            "inherit" => true,
            other => {
                return Err(format!(
                    "invalid FAKE_VIBE_GRANDCHILD_STDIO '{other}': expected null or inherit"
                ));
            }
        };
        Ok(Knobs {
            scenario,
            sleep: Duration::from_millis(env_u64("FAKE_VIBE_SLEEP_MS", default_sleep)?),
            lines: env_u64("FAKE_VIBE_LINES", 1000)?,
            pidfile: env::var_os("FAKE_VIBE_PIDFILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            grandchild_inherit,
            grandchild_secs: env_u64("FAKE_VIBE_GRANDCHILD_SECS", 300)?,
            grandchild_script: env::var_os("FAKE_VIBE_GRANDCHILD_SCRIPT")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            setup_subdir: env_string("FAKE_VIBE_SETUP_SUBDIR").filter(|s| !s.is_empty()),
            no_export: env_string("FAKE_VIBE_NO_EXPORT").is_some_and(|v| !v.is_empty() && v != "0"),
            rate_limit_file: env::var_os("FAKE_VIBE_RATE_LIMIT_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            hang_after_answer: env_string("FAKE_VIBE_HANG_AFTER_ANSWER")
                .is_some_and(|v| !v.is_empty() && v != "0"),
        })
    }
}

/// One action inside a model answer.
pub(crate) enum Tool {
    /// `write_file`, executed for real.
    Write { path: String, content: String },
    /// `bash`, executed for real with `sh -c` in the cwd.
    Bash { command: String },
    /// A `bash` call whose output is made up (not executed; `flood`).
    Canned { command: String, stdout: String },
    /// A raw line on stdout that is not an entry (`stderr-noise`).
    Noise(Vec<u8>),
    /// A raw line on stderr (`stderr-noise`).
    StderrNoise(String),
}

impl Tool {
    pub(crate) fn is_call(&self) -> bool {
        matches!(
            self,
            Tool::Write { .. } | Tool::Bash { .. } | Tool::Canned { .. }
        )
    }
}

/// How a model call fails instead of answering.
#[derive(Clone, Copy)]
pub(crate) enum Failure {
    InvalidKey,
    ServerError,
    RateLimit,
    Exit(u8),
}

/// One model call and its answer.
pub(crate) struct Step {
    pub(crate) delay: Delay,
    pub(crate) reasoning: Option<&'static str>,
    pub(crate) preamble: Option<&'static str>,
    pub(crate) tools: Vec<Tool>,
    /// The final answer: the turn ends after it.
    pub(crate) text: Option<String>,
    pub(crate) failure: Option<Failure>,
}

impl Step {
    pub(crate) fn new(delay: Delay) -> Step {
        Step {
            delay,
            reasoning: None,
            preamble: None,
            tools: Vec::new(),
            text: None,
            failure: None,
        }
    }

    pub(crate) fn tool(mut self, tool: Tool) -> Step {
        self.tools.push(tool);
        self
    }

    pub(crate) fn text(mut self, text: impl Into<String>) -> Step {
        self.text = Some(text.into());
        self
    }
}

fn write_tool(path: &str, content: &str) -> Tool {
    Tool::Write {
        path: path.to_owned(),
        content: content.to_owned(),
    }
}

fn bash_tool(command: &str) -> Tool {
    Tool::Bash {
        command: command.to_owned(),
    }
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The scripted model: answer number `i` (0-based) of the scenario, `None` when the
/// script is over.
pub(crate) fn script(knobs: &Knobs, i: u64) -> Option<Step> {
    let step = Step::new(Delay::For(knobs.sleep));
    let tools_step = |step: Step| match i {
        0 => Some(step.tool(write_tool(HELLO_PATH, HELLO_CONTENT))),
        1 => Some(step.tool(bash_tool(HELLO_COMMAND))),
        2 => Some(step.text(TOOLS_FINAL)),
        _ => None,
    };
    match knobs.scenario {
        Scenario::Tools
        | Scenario::Slow
        | Scenario::PriceLimit
        | Scenario::TokenLimit
        | Scenario::GrandchildExit => tools_step(step),
        Scenario::Rich => {
            let mut step = tools_step(step)?;
            step.reasoning = Some(REASONING_TEXT);
            step.preamble = match i {
                0 => Some("Next I will call write_file."),
                1 => Some("Next I will call bash."),
                _ => None,
            };
            Some(step)
        }
        Scenario::Text => (i == 0).then(|| step.text(PLAIN_TEXT)),
        Scenario::Risky => match i {
            0 => Some(step.tool(bash_tool(RISKY_COMMAND))),
            1 => Some(step.text(RISKY_FINAL)),
            _ => None,
        },
        Scenario::StderrNoise => match i {
            0 => Some(
                step.tool(Tool::Noise(b"warning: not json".to_vec()))
                    .tool(write_tool(HELLO_PATH, HELLO_CONTENT)),
            ),
            1 => Some(
                step.tool(Tool::Noise(
                    b"garbage \xff\xfe\xc3\x28 this line is not UTF-8".to_vec(),
                ))
                .tool(Tool::StderrNoise(
                    "warning: noise on stderr from the fake vibe".to_owned(),
                ))
                .tool(bash_tool(HELLO_COMMAND)),
            ),
            2 => {
                let mut long = b"noise: ".to_vec();
                long.resize(200 * 1024, b'x');
                Some(
                    step.tool(Tool::Noise(Vec::new()))
                        .tool(Tool::Noise(long))
                        .text(TOOLS_FINAL),
                )
            }
            _ => None,
        },
        Scenario::Setup => {
            let setup_path = match &knobs.setup_subdir {
                Some(dir) => format!("{}/setup.sh", dir.trim_end_matches('/')),
                None => "setup.sh".to_owned(),
            };
            match i {
                0 | 1 => tools_step(step),
                2 => Some(step.tool(write_tool(&setup_path, SETUP_SCRIPT))),
                3 => Some(step.tool(bash_tool(&format!("chmod 755 {}", sh_quote(&setup_path))))),
                4 => Some(step.text(SETUP_FINAL)),
                _ => None,
            }
        }
        Scenario::ChangeSet => match i {
            0 => Some(step.tool(write_tool(CHANGE_SET_ADDED, CHANGE_SET_ADDED_CONTENT))),
            1 => Some(step.tool(write_tool(CHANGE_SET_EDITED, CHANGE_SET_EDITED_CONTENT))),
            2 => Some(step.tool(bash_tool(CHANGE_SET_COMMAND))),
            3 => Some(step.text(CHANGE_SET_FINAL)),
            _ => None,
        },
        Scenario::TurnLimit => Some(step.tool(bash_tool(&format!("echo loop {i}")))),
        Scenario::Hang | Scenario::Grandchild => (i == 0).then(|| Step::new(Delay::Forever)),
        Scenario::Probe => (i == 0).then(|| step.text(probe::report().to_string())),
        Scenario::Flood => match i {
            0 => {
                let mut step = step;
                step.tools = (1..=knobs.lines)
                    .map(|n| Tool::Canned {
                        command: format!("echo line {n}"),
                        stdout: format!("line {n}\n"),
                    })
                    .collect();
                Some(step)
            }
            1 => Some(step.text(format!("Printed {} lines.", knobs.lines))),
            _ => None,
        },
        Scenario::ConfigError => (i == 0).then_some(Step {
            failure: Some(Failure::InvalidKey),
            ..step
        }),
        Scenario::InfraError => (i == 0).then_some(Step {
            failure: Some(Failure::ServerError),
            ..step
        }),
        // Limited while FAKE_VIBE_RATE_LIMIT_FILE exists (always, without one); else `tools`.
        Scenario::RateLimit if knobs.rate_limit_file.as_ref().is_some_and(|f| !f.exists()) => {
            tools_step(step)
        }
        Scenario::RateLimit => (i == 0).then_some(Step {
            failure: Some(Failure::RateLimit),
            ..step
        }),
        Scenario::Exit(code) => (i == 0).then_some(Step {
            failure: Some(Failure::Exit(code)),
            ..step
        }),
        // Fails before the session starts (see `run`).
        Scenario::MissingKey | Scenario::NoConfig => None,
    }
}
