//! The command line, parsed clap-like, with the real CLI's exit code 1 for usage errors.

use std::io::{self, Read as _};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputMode {
    Text,
    Json,
    Streaming,
}

#[derive(Default)]
pub(crate) struct Args {
    /// `None`: no `--prompt`; `Some(None)`: `--prompt` without a value (read stdin).
    pub(crate) prompt: Option<Option<String>>,
    pub(crate) output: Option<OutputMode>,
    pub(crate) trust: bool,
    pub(crate) auto_approve: bool,
    /// `-c`: go on with the last session.
    pub(crate) continue_session: bool,
    /// `--resume <id>`: go on with that session.
    pub(crate) resume: Option<String>,
    pub(crate) version: bool,
    pub(crate) help: bool,
    pub(crate) output_dir: Option<PathBuf>,
    pub(crate) max_turns: Option<u64>,
    pub(crate) max_price: Option<f64>,
    pub(crate) time_limit: Option<f64>,
    pub(crate) max_tokens: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Prompt,
    Output,
    OutputDir,
    MaxTurns,
    MaxPrice,
    TimeLimit,
    MaxTokens,
    Trust,
    AutoApprove,
    Continue,
    Resume,
    Version,
    Help,
}

impl Opt {
    fn lookup(name: &str) -> Option<Opt> {
        Some(match name {
            "-p" | "--prompt" => Opt::Prompt,
            "--output" => Opt::Output,
            "--output-dir" => Opt::OutputDir,
            "--max-turns" => Opt::MaxTurns,
            "--max-price" => Opt::MaxPrice,
            "--time-limit" => Opt::TimeLimit,
            "--max-tokens" => Opt::MaxTokens,
            "--trust" => Opt::Trust,
            "--auto-approve" => Opt::AutoApprove,
            "-c" | "--continue" => Opt::Continue,
            "--resume" => Opt::Resume,
            "-V" | "--version" => Opt::Version,
            "-h" | "--help" => Opt::Help,
            _ => return None,
        })
    }

    /// How clap names the argument in its messages.
    pub(crate) fn display(self) -> &'static str {
        match self {
            Opt::Prompt => "--prompt [<PROMPT>]",
            Opt::Output => "--output <OUTPUT>",
            Opt::OutputDir => "--output-dir <OUTPUT_DIR>",
            Opt::MaxTurns => "--max-turns <MAX_TURNS>",
            Opt::MaxPrice => "--max-price <MAX_PRICE>",
            Opt::TimeLimit => "--time-limit <TIME_LIMIT>",
            Opt::MaxTokens => "--max-tokens <MAX_TOKENS>",
            Opt::Trust => "--trust",
            Opt::AutoApprove => "--auto-approve",
            Opt::Continue => "--continue",
            Opt::Resume => "--resume <SESSION_ID>",
            Opt::Version => "--version",
            Opt::Help => "--help",
        }
    }

    fn takes_value(self) -> bool {
        matches!(
            self,
            Opt::Prompt
                | Opt::Output
                | Opt::OutputDir
                | Opt::MaxTurns
                | Opt::MaxPrice
                | Opt::TimeLimit
                | Opt::MaxTokens
                | Opt::Resume
        )
    }
}

const OUTPUT_VALUES: &str = "  [possible values: text, json, streaming]\n";

pub(crate) const HELP: &str = "Mistral Vibe (Otter's stand-in, otter-fake-vibe)

Usage: vibe [OPTIONS]

Options:
  -p, --prompt [<PROMPT>]        Run headless with this prompt (stdin if no value)
      --output <OUTPUT>          Output format [possible values: text, json, streaming]
      --output-dir <OUTPUT_DIR>  Write export.json into this directory
      --max-turns <MAX_TURNS>    Stop after this many model turns
      --max-price <MAX_PRICE>    Stop once the session costs this much (USD)
      --max-tokens <MAX_TOKENS>  Stop once this many tokens are used
      --time-limit <TIME_LIMIT>  Stop after this many seconds
      --trust                    Trust the working directory for this run
      --auto-approve             Approve every tool call
  -c, --continue                 Continue the last session
      --resume <SESSION_ID>      Resume the session with this id
  -h, --help                     Print help
  -V, --version                  Print version
";

fn clap_error(body: &str, usage: bool) -> String {
    let usage = if usage {
        "\nUsage: vibe [OPTIONS]\n"
    } else {
        ""
    };
    format!("error: {body}\n{usage}\nFor more information, try '--help'.\n")
}

fn parse_number<T: std::str::FromStr>(opt: Opt, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| {
        clap_error(
            &format!("invalid value '{value}' for '{}': {e}", opt.display()),
            false,
        )
    })
}

/// Parses the arguments; `Err` holds clap's complete message for stderr.
pub(crate) fn parse_args(raw: &[String]) -> Result<Args, String> {
    let mut args = Args::default();
    let mut seen: Vec<Opt> = Vec::new();
    let mut rest = raw.iter().peekable();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let Some(opt) = Opt::lookup(name) else {
            return Err(clap_error(
                &format!("unexpected argument '{arg}' found"),
                true,
            ));
        };
        if seen.contains(&opt) {
            return Err(clap_error(
                &format!(
                    "the argument '{}' cannot be used multiple times",
                    opt.display()
                ),
                true,
            ));
        }
        // As clap's group: one way to pick the session.
        let other = match opt {
            Opt::Continue => Some(Opt::Resume),
            Opt::Resume => Some(Opt::Continue),
            _ => None,
        };
        if let Some(other) = other.filter(|o| seen.contains(o)) {
            return Err(clap_error(
                &format!(
                    "the argument '{}' cannot be used with '{}'",
                    other.display(),
                    opt.display()
                ),
                true,
            ));
        }
        seen.push(opt);
        if !opt.takes_value()
            && let Some(value) = inline
        {
            return Err(clap_error(
                &format!("unexpected value '{value}' for '{name}' found; no more were expected"),
                true,
            ));
        }
        // Like clap: a following argument that looks like a flag is not taken as a value
        // (use `--prompt=<value>` for values starting with '-').
        let value = match inline {
            Some(value) => Some(value),
            None if opt.takes_value() => rest
                .next_if(|next| !next.starts_with('-') || next.as_str() == "-")
                .cloned(),
            None => None,
        };
        let required = |value: Option<String>| {
            value.ok_or_else(|| {
                let mut message = clap_error(
                    &format!(
                        "a value is required for '{}' but none was supplied",
                        opt.display()
                    ),
                    false,
                );
                if opt == Opt::Output {
                    message = message.replacen('\n', &format!("\n{OUTPUT_VALUES}"), 1);
                }
                message
            })
        };
        match opt {
            Opt::Prompt => args.prompt = Some(value),
            Opt::Output => {
                let value = required(value)?;
                args.output = Some(match value.as_str() {
                    "text" => OutputMode::Text,
                    "json" => OutputMode::Json,
                    "streaming" => OutputMode::Streaming,
                    _ => {
                        return Err(format!(
                            "error: invalid value '{value}' for '{}'\n{OUTPUT_VALUES}\n\
                             For more information, try '--help'.\n",
                            opt.display()
                        ));
                    }
                });
            }
            Opt::OutputDir => args.output_dir = Some(PathBuf::from(required(value)?)),
            Opt::MaxTurns => args.max_turns = Some(parse_number(opt, &required(value)?)?),
            Opt::MaxPrice => args.max_price = Some(parse_number(opt, &required(value)?)?),
            Opt::TimeLimit => args.time_limit = Some(parse_number(opt, &required(value)?)?),
            Opt::MaxTokens => args.max_tokens = Some(parse_number(opt, &required(value)?)?),
            Opt::Trust => args.trust = true,
            Opt::AutoApprove => args.auto_approve = true,
            Opt::Continue => args.continue_session = true,
            Opt::Resume => args.resume = Some(required(value)?),
            Opt::Version => args.version = true,
            Opt::Help => args.help = true,
        }
    }
    Ok(args)
}

/// The prompt, or the real CLI's error message (without the `Error: ` prefix).
pub(crate) fn resolve_prompt(args: &Args) -> Result<String, String> {
    const NO_PROMPT: &str = "No prompt provided for programmatic mode";
    match &args.prompt {
        None => {
            Err("Interactive mode needs a terminal. Use -p/--prompt to run without one.".to_owned())
        }
        Some(Some(prompt)) if prompt.trim().is_empty() => Err(NO_PROMPT.to_owned()),
        Some(Some(prompt)) => Ok(prompt.clone()),
        Some(None) => {
            let mut bytes = Vec::new();
            let _ = io::stdin().lock().read_to_end(&mut bytes);
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                Err(NO_PROMPT.to_owned())
            } else {
                Ok(text.to_owned())
            }
        }
    }
}
