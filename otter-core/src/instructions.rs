//! Otter's instructions to vibe: the seed's system prompt, with the job's id and the API base URL.
//!
//! vibe 3.x puts `$VIBE_HOME/AGENTS.md` into its system prompt as user-level instructions, so the
//! worker writes this text there before each run and passes the user's prompt to `--prompt`
//! unchanged (DESIGN.md §4). Older vibe gets them as a prefix of the prompt instead
//! ([`prefixed`]); which of the two a worker uses is [`crate::vibe::InstructionsVia`]. Either way the text reaches vibe as one argument, [`prompt_argument`], whose
//! length Linux bounds: [`max_prompt_bytes`] is the longest prompt that always fits.

use crate::model::JobId;

/// The longest single argument Linux passes to a program, in bytes: `MAX_ARG_STRLEN`, 32 pages
/// of 4 KiB, less the argument's terminating NUL. A longer one makes `execve` fail with `E2BIG`
/// ("Argument list too long").
pub const MAX_ARGUMENT_BYTES: usize = 32 * 4096 - 1;

/// vibe's `--prompt` argument for `text`: one argv entry, so that a prompt starting with `-`
/// does not read as an option (vibe's parser would refuse it as an unexpected argument).
pub fn prompt_argument(text: &str) -> String {
    format!("--prompt={text}")
}

/// What vibe versions that do not read `AGENTS.md` get as their prompt: the instructions, a
/// separator, then the user's prompt.
pub fn prefixed(instructions: &str, prompt: &str) -> String {
    format!("{instructions}\n---\n\n{prompt}")
}

/// The longest prompt, in bytes, that fits in vibe's [`prompt_argument`] whatever vibe version
/// runs it: with the instructions for `api_base_url` before it ([`prefixed`]). The server does
/// not know which vibe a worker has, so it counts the longer of the two.
pub fn max_prompt_bytes(api_base_url: &str) -> usize {
    // Every job id has the same length, so any id gives the instructions' length.
    let overhead = prompt_argument(&prefixed(&render(JobId::new(), api_base_url), "")).len();
    MAX_ARGUMENT_BYTES.saturating_sub(overhead)
}

/// The instructions for one job.
pub fn render(job_id: JobId, api_base_url: &str) -> String {
    format!(
        "# Instructions from Otter (job {job_id})

You are running headless under Otter, an orchestration service. Nobody can answer questions
during this run: decide, act, and report. Follow these rules for every task:

1. Always work in a dedicated project subfolder under the current workspace directory; create it
   if it does not exist. Never write outside the workspace.
2. Install every dependency the project needs before you build or run it.
3. Generate a production-ready `Dockerfile` at the project root.
4. Build and run the generated app inside Docker as the primary execution path.
5. Generate an executable `setup.sh` at the project root that builds and starts the app (Otter
   runs it after you finish and streams its output). Anything it starts in the background must
   redirect its own output to a file.
6. Start the generated app or service in the background.
7. When the app's URL is known, report it to Otter:
   `curl -fsS -X POST {api_base_url}/v1/jobs/{job_id}/preview-url -H 'Content-Type: application/json' -d '{{\"preview_url\": \"http://HOST:PORT\"}}'`
   (add `-H \"Authorization: Bearer $OTTER_API_TOKEN\"` when that variable is set).
8. Finish with clear run and stop instructions and the project's location.
9. Include how to reach the app (URL and host port) in your final answer.

Job ID: {job_id}
Otter API: {api_base_url}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_job_and_the_preview_endpoint() {
        let id = JobId::new();
        let text = render(id, "http://otter:8080");
        assert!(text.contains(&format!("http://otter:8080/v1/jobs/{id}/preview-url")));
        assert!(text.contains("setup.sh"));
        assert!(text.contains("Dockerfile"));
    }

    #[test]
    fn the_longest_prompt_fits_in_one_argument_with_the_instructions() {
        let base = "http://otter-server:8080";
        let max = max_prompt_bytes(base);
        assert!(max > 120 * 1024 && max < MAX_ARGUMENT_BYTES, "{max}");
        let argument =
            |prompt: &str| prompt_argument(&prefixed(&render(JobId::new(), base), prompt));
        assert_eq!(argument(&"x".repeat(max)).len(), MAX_ARGUMENT_BYTES);
        // A longer base URL leaves less room for the prompt.
        assert!(max_prompt_bytes("http://a-much-longer-name.example.com:8080") < max);
    }

    /// The limit is the kernel's: the longest argument runs, one byte more does not.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_takes_the_longest_argument_and_refuses_one_byte_more() {
        let base = "http://otter-server:8080";
        let max = max_prompt_bytes(base);
        let run = |prompt: &str| {
            std::process::Command::new("true")
                .arg(prompt_argument(&prefixed(
                    &render(JobId::new(), base),
                    prompt,
                )))
                .status()
        };
        assert!(
            run(&"x".repeat(max))
                .expect("the longest prompt runs")
                .success()
        );
        let err = run(&"x".repeat(max + 1)).expect_err("one byte more is refused");
        assert_eq!(err.raw_os_error(), Some(libc::E2BIG), "{err}");
    }
}
