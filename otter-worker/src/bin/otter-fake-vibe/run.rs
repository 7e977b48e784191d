//! One run, from the parsed command line to the exit code.

use std::env;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::cli::{HELP, OutputMode, parse_args, resolve_prompt};
use crate::continued;
use crate::export::{End, ExportCtx};
use crate::out::{Out, err_line, err_raw, now_ms};
use crate::scenario::{Knobs, Scenario};
use crate::session::{Limits, Session};
use crate::startup::spawn_grandchild;
use crate::stop::Waiter;
use crate::{PROVIDER_KEY_VAR, VIBE_VERSION};

const KEYRING_NOTICE: &str =
    "Reading API keys from the system keyring (set them as environment variables to skip this)";

pub(crate) fn run(
    argv: &[String],
    t0: Instant,
    started_at: DateTime<Utc>,
    sigterm: Option<mpsc::Receiver<()>>,
) -> u8 {
    let args = match parse_args(argv) {
        Ok(args) => args,
        Err(message) => {
            err_raw(&message);
            return 1;
        }
    };
    if args.help {
        Out::new().text(HELP);
        return 0;
    }
    if args.version {
        // FAKE_VIBE_VERSION pretends to be another version (how Otter picks the way it hands
        // over its instructions).
        let version = env::var("FAKE_VIBE_VERSION").unwrap_or_else(|_| VIBE_VERSION.to_owned());
        Out::new().text(&format!("vibe {version}\n"));
        return 0;
    }
    let knobs = Knobs::from_env();
    let mut ctx = ExportCtx {
        dir: args.output_dir.clone(),
        disabled: knobs.as_ref().is_ok_and(|k| k.no_export),
        started_at,
        max_turns: args.max_turns,
        max_price: args.max_price,
        max_tokens: args.max_tokens,
        time_limit: args.time_limit,
        warnings: Vec::new(),
    };
    let config_error = |ctx: &ExportCtx, message: String| {
        err_line(&format!("Error: {message}"));
        let end = End::ConfigError {
            message,
            code: None,
        };
        ctx.write(&end, None);
        end.exit_code()
    };
    let prompt = match resolve_prompt(&args) {
        Ok(prompt) => prompt,
        Err(message) => return config_error(&ctx, message),
    };
    let knobs = match knobs {
        Ok(knobs) => knobs,
        Err(message) => return config_error(&ctx, message),
    };
    let cwd = match env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => return config_error(&ctx, format!("cannot read the working directory: {e}")),
    };
    if env::var_os("MISTRAL_API_KEY").is_none() {
        err_line(KEYRING_NOTICE);
    }
    if !args.trust && cwd.join("AGENTS.md").exists() {
        let warning = format!(
            "Warning: {} is not trusted; project configuration (AGENTS.md) will be ignored. \
             Re-run with --trust to trust this folder temporarily.",
            cwd.display()
        );
        err_line(&warning);
        ctx.warnings.push(warning);
    }
    match knobs.scenario {
        Scenario::MissingKey => {
            return config_error(
                &ctx,
                format!("Missing {PROVIDER_KEY_VAR} environment variable for mock provider"),
            );
        }
        // With no config.toml, vibe falls back to its built-in `mistral` provider.
        Scenario::NoConfig => {
            return config_error(
                &ctx,
                "Missing MISTRAL_API_KEY environment variable for mistral provider".to_owned(),
            );
        }
        _ => {}
    }
    if matches!(
        knobs.scenario,
        Scenario::Grandchild | Scenario::GrandchildExit
    ) && let Err(message) = spawn_grandchild(&knobs)
    {
        return config_error(&ctx, message);
    }

    let deadline = args
        .time_limit
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .and_then(|limit| t0.checked_add(limit));
    let turn_hex = uuid::Uuid::new_v4().simple().to_string();
    let previous = match &args.resume {
        Some(id) => match continued::load_id(id) {
            Some(saved) => Some(saved),
            None => {
                let message = format!("Session not found: {id}");
                err_line(&format!("Error: {message}"));
                let end = End::Usage { message };
                ctx.write(&end, None);
                return end.exit_code();
            }
        },
        None if args.continue_session => continued::load(),
        None => None,
    };
    let mut session = Session {
        out: Out::new(),
        mode: args.output.unwrap_or(OutputMode::Text),
        session_id: previous.as_ref().map_or_else(
            || uuid::Uuid::new_v4().to_string(),
            |p| p.session_id.clone(),
        ),
        turn_id: format!("turn-{turn_hex}"),
        user_entry_id: format!("user-turn-{turn_hex}-1"),
        cwd,
        auto_approve: args.auto_approve,
        keep_entries: knobs.scenario != Scenario::Flood,
        context_chars: prompt.len() as u64 + previous.as_ref().map_or(0, |p| p.context_chars),
        entries: previous.map(|p| p.entries).unwrap_or_default(),
        last_text: None,
        input_tokens: 0,
        output_tokens: 0,
        steps: 0,
        waiter: Waiter {
            sigterm,
            deadline,
            terminated: false,
        },
    };
    let limits = Limits {
        max_turns: args
            .max_turns
            .or((knobs.scenario == Scenario::TurnLimit).then_some(2)),
        max_price: args
            .max_price
            .or((knobs.scenario == Scenario::PriceLimit).then_some(0.001)),
        max_tokens: args
            .max_tokens
            .or((knobs.scenario == Scenario::TokenLimit).then_some(6000)),
    };

    let user_entry_id = session.user_entry_id.clone();
    session.emit_message(&user_entry_id, now_ms(), "user", &prompt);
    // `flood` prints its effects in batches; the user message still goes out at once.
    session.out.batch = knobs.scenario == Scenario::Flood;
    let end = session.drive(&knobs, &limits);

    if matches!(end, End::Finished | End::Stopped(_)) {
        session.print_final();
        if session.keep_entries {
            continued::save(&session.session_id, session.context_chars, &session.entries);
        }
    }
    session.out.flush();
    match &end {
        End::Stopped(stop) => err_line(&format!("Stopped: {}", stop.name())),
        End::ConfigError { message, .. } | End::Infra { message, .. } | End::Usage { message } => {
            err_line(&format!("Error: {message}"));
        }
        End::Finished | End::Unknown(_) => {}
    }
    ctx.write(&end, Some(&session.summary()));
    if knobs.hang_after_answer {
        // Answered and reported, then stuck (a child holding it, an app server that does not
        // stop): deaf to SIGTERM, it only goes when killed.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    end.exit_code()
}
