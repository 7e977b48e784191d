//! What the end of a vibe run means for its job (DESIGN.md §3): the exit code, read with
//! `export.json`'s outcome.
//!
//! | exit | meaning | job |
//! | --- | --- | --- |
//! | 0 | finished | succeeded |
//! | 1 | usage or configuration error (a missing or invalid API key) | failed, not retried |
//! | 2 | infrastructure error (the model API failing after retries) | failed, retried |
//! | 3 | stopped early (turn, price, token or time limit; SIGTERM) | failed with the outcome, not retried |
//! | other, or a signal | unexpected | failed, retried |
//! | silent for the silence bound | hung | failed (`silent`), retried |
//!
//! A run Otter itself stopped is [`Verdict::Stopped`]: why (a cancel, a lost lease, shutdown)
//! is the caller's to say. A run Otter ended because vibe had answered and reported its end
//! but did not exit ([`decide_forced_exit`]) ends as vibe reported it.

use std::time::Duration;

use super::export::RunExport;
use crate::runner::RunOutcome;

/// How vibe's run ends its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// vibe finished.
    Succeeded,
    /// vibe failed; `retryable` when another attempt may go better.
    Failed {
        /// What went wrong, for the job's error.
        error: String,
        /// Whether another attempt may go better.
        retryable: bool,
    },
    /// Otter stopped the run before vibe ended.
    Stopped,
    /// vibe gave up on the model provider's rate limit (HTTP 429, after its own retries): the
    /// job waits for the limit's reset, the attempt not counted.
    RateLimited {
        /// When the limit resets, if vibe's message says (`Retry-After`, "try again in …").
        reset_in: Option<Duration>,
        /// vibe's message.
        message: String,
    },
}

/// A run's [`Verdict`] and vibe's exit code, if it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// How the job ends.
    pub verdict: Verdict,
    /// vibe's exit code.
    pub exit_code: Option<i32>,
}

/// Maps how vibe ended to how its job ends (see the module docs). `job_timeout` is
/// `OTTER_JOB_TIMEOUT`, named in the error of a run that outlived it.
pub fn decide(
    outcome: RunOutcome,
    export: Option<&RunExport>,
    job_timeout: Option<Duration>,
) -> Decision {
    let failed = |error: String, retryable: bool, exit_code: Option<i32>| Decision {
        verdict: Verdict::Failed { error, retryable },
        exit_code,
    };
    match outcome {
        RunOutcome::Exited(0) => Decision {
            verdict: Verdict::Succeeded,
            exit_code: Some(0),
        },
        RunOutcome::Exited(1) => failed(
            "vibe configuration error (exit 1)".to_owned(),
            false,
            Some(1),
        ),
        RunOutcome::Exited(2) => match rate_limited(export) {
            Some(message) => Decision {
                verdict: Verdict::RateLimited {
                    reset_in: reset_hint(message),
                    message: message.to_owned(),
                },
                exit_code: Some(2),
            },
            None => failed(
                "vibe infrastructure error (exit 2)".to_owned(),
                true,
                Some(2),
            ),
        },
        RunOutcome::Exited(3) => {
            let reason = export
                .and_then(|e| e.outcome.as_deref())
                .unwrap_or("unknown");
            failed(format!("vibe stopped early: {reason}"), false, Some(3))
        }
        RunOutcome::Exited(code) => {
            failed(format!("vibe exited with code {code}"), true, Some(code))
        }
        RunOutcome::Signalled(sig) => {
            failed(format!("vibe was killed by signal {sig}"), true, None)
        }
        RunOutcome::TimedOut => failed(
            format!(
                "timed out after {}s (OTTER_JOB_TIMEOUT)",
                job_timeout.map(|t| t.as_secs()).unwrap_or_default()
            ),
            false,
            None,
        ),
        RunOutcome::Silent(quiet) => failed(
            format!(
                "{SILENT}: printed nothing for {}s (OTTER_SILENCE_TIMEOUT or limits.silence_secs)",
                quiet.as_secs()
            ),
            true,
            None,
        ),
        RunOutcome::Cancelled => Decision {
            verdict: Verdict::Stopped,
            exit_code: None,
        },
    }
}

/// vibe's message, when export.json says the run ended on a rate limit: `error.code`
/// `rate_limit` (vibe 3.0.3, captured in otter-core/tests/data/vibe-captures, `rate-limit`), or a
/// message naming HTTP 429.
fn rate_limited(export: Option<&RunExport>) -> Option<&str> {
    let error = export?.error.as_ref()?;
    let message = error.message.as_deref().unwrap_or("");
    (error.code.as_deref() == Some("rate_limit") || message.contains("429 Too Many Requests"))
        .then_some(message)
}

/// The reset time a rate limit's message gives, if any: `Retry-After: 30`, `retry after 30s`,
/// `try again in 30 seconds` (or `500ms`, `2 minutes`), case-insensitive.
pub fn reset_hint(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    ["retry-after:", "retry after", "try again in"]
        .iter()
        .filter_map(|marker| {
            let at = lower.find(marker)? + marker.len();
            let rest = lower[at..].trim_start();
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number: f64 = rest[..digits].parse().ok()?;
            let unit = rest[digits..].trim_start();
            let secs = if unit.starts_with("ms") || unit.starts_with("milli") {
                number / 1000.0
            } else if unit.starts_with('m') {
                number * 60.0
            } else if unit.starts_with('h') {
                number * 3600.0
            } else {
                number
            };
            (secs.is_finite() && secs > 0.0 && secs <= 86_400.0)
                .then(|| Duration::from_secs_f64(secs))
        })
        .next()
}

/// The reason of a run stopped by the silence watchdog (and the start of its error).
pub const SILENT: &str = "silent";

/// How a run ends that Otter stopped after vibe had printed its final answer and written
/// `export.json`, but did not exit: as if vibe had exited with the code it reported (the
/// export's `exit_code`, else the one its `outcome` stands for). Without a readable outcome the
/// end is unknown, and the run counts as killed (retried).
pub fn decide_forced_exit(export: Option<&RunExport>, job_timeout: Option<Duration>) -> Decision {
    let reported = export.and_then(|e| {
        e.exit_code.or_else(|| match e.outcome.as_deref()? {
            "finished" => Some(0),
            "config_error" | "usage_error" => Some(1),
            "infrastructure_failure" => Some(2),
            "turn_limit" | "price_limit" | "token_limit" | "deadline" | "terminated" => Some(3),
            _ => None,
        })
    });
    match reported {
        Some(code) => Decision {
            // vibe did not exit: the code is what it reported, not what a process returned.
            exit_code: None,
            ..decide(RunOutcome::Exited(code), export, job_timeout)
        },
        None => decide(RunOutcome::Signalled(15), export, job_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(
        outcome: RunOutcome,
        export: Option<&RunExport>,
    ) -> (Option<(String, bool)>, Option<i32>) {
        let decision = decide(outcome, export, Some(Duration::from_secs(60)));
        let failure = match decision.verdict {
            Verdict::Failed { error, retryable } => Some((error, retryable)),
            Verdict::Succeeded | Verdict::Stopped | Verdict::RateLimited { .. } => None,
        };
        (failure, decision.exit_code)
    }

    #[test]
    fn exit_codes_mean_what_vibe_says() {
        assert_eq!(
            decide(RunOutcome::Exited(0), None, None).verdict,
            Verdict::Succeeded
        );
        let cases = [
            (
                RunOutcome::Exited(1),
                "vibe configuration error (exit 1)",
                false,
                Some(1),
            ),
            (
                RunOutcome::Exited(2),
                "vibe infrastructure error (exit 2)",
                true,
                Some(2),
            ),
            (
                RunOutcome::Exited(3),
                "vibe stopped early: unknown",
                false,
                Some(3),
            ),
            (
                RunOutcome::Exited(7),
                "vibe exited with code 7",
                true,
                Some(7),
            ),
            (
                RunOutcome::Signalled(9),
                "vibe was killed by signal 9",
                true,
                None,
            ),
            (
                RunOutcome::TimedOut,
                "timed out after 60s (OTTER_JOB_TIMEOUT)",
                false,
                None,
            ),
        ];
        for (outcome, error, retryable, code) in cases {
            assert_eq!(
                verdict(outcome, None),
                (Some((error.to_owned(), retryable)), code),
                "{outcome:?}"
            );
        }
        assert_eq!(
            decide(RunOutcome::Cancelled, None, None).verdict,
            Verdict::Stopped
        );
    }

    #[test]
    fn a_rate_limit_is_told_apart_from_other_infrastructure_errors() {
        let limited = RunExport {
            outcome: Some("infrastructure_failure".to_owned()),
            error: Some(crate::vibe::ExportError {
                message: Some(
                    "Client error '429 Too Many Requests' for url 'http://x/v1/chat/completions'\n\
                     For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/429: \
                     Rate limit exceeded"
                        .to_owned(),
                ),
                code: Some("rate_limit".to_owned()),
            }),
            ..RunExport::default()
        };
        match decide(RunOutcome::Exited(2), Some(&limited), None).verdict {
            Verdict::RateLimited { reset_in, message } => {
                assert_eq!(reset_in, None);
                assert!(message.contains("429"));
            }
            other => panic!("{other:?}"),
        }
        let backend = RunExport {
            error: Some(crate::vibe::ExportError {
                message: Some("Server error '500 Internal Server Error'".to_owned()),
                code: Some("backend_error".to_owned()),
            }),
            ..RunExport::default()
        };
        assert!(matches!(
            decide(RunOutcome::Exited(2), Some(&backend), None).verdict,
            Verdict::Failed {
                retryable: true,
                ..
            }
        ));
        // Only an exit 2 is vibe giving up on the limit.
        assert!(matches!(
            decide(RunOutcome::Exited(0), Some(&limited), None).verdict,
            Verdict::Succeeded
        ));
    }

    #[test]
    fn a_reset_time_is_read_from_the_message() {
        for (message, secs) in [
            ("429: Retry-After: 30", Some(30.0)),
            ("Rate limit exceeded, retry after 2.5s", Some(2.5)),
            ("Please try again in 500ms.", Some(0.5)),
            ("Try again in 2 minutes", Some(120.0)),
            ("Rate limit exceeded for the key", None),
            ("retry after soon", None),
            ("try again in 0 seconds", None),
        ] {
            assert_eq!(
                reset_hint(message),
                secs.map(Duration::from_secs_f64),
                "{message}"
            );
        }
    }

    #[test]
    fn a_silent_run_is_retried_and_says_how_long_it_was_quiet() {
        let (failure, code) = verdict(RunOutcome::Silent(Duration::from_secs(901)), None);
        let (error, retryable) = failure.expect("failed");
        assert!(
            error.starts_with("silent: printed nothing for 901s"),
            "{error}"
        );
        assert!(retryable);
        assert_eq!(code, None);
    }

    #[test]
    fn a_forced_exit_ends_as_vibe_reported() {
        let finished = RunExport {
            outcome: Some("finished".to_owned()),
            ..RunExport::default()
        };
        assert_eq!(
            decide_forced_exit(Some(&finished), None),
            Decision {
                verdict: Verdict::Succeeded,
                exit_code: None
            }
        );
        let limited = RunExport {
            outcome: Some("turn_limit".to_owned()),
            exit_code: Some(3),
            ..RunExport::default()
        };
        assert_eq!(
            decide_forced_exit(Some(&limited), None).verdict,
            Verdict::Failed {
                error: "vibe stopped early: turn_limit".to_owned(),
                retryable: false
            }
        );
        let unknown = RunExport {
            outcome: Some("novel".to_owned()),
            ..RunExport::default()
        };
        for export in [None, Some(&unknown)] {
            assert!(matches!(
                decide_forced_exit(export, None).verdict,
                Verdict::Failed {
                    retryable: true,
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_run_stopped_early_names_export_jsons_outcome() {
        let export = RunExport {
            outcome: Some("turn_limit".to_owned()),
            ..RunExport::default()
        };
        let (failure, _) = verdict(RunOutcome::Exited(3), Some(&export));
        assert_eq!(
            failure,
            Some(("vibe stopped early: turn_limit".to_owned(), false))
        );
    }
}
