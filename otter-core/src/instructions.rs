//! Otter's instructions to vibe: the seed's system prompt, with the job's id and the API base URL.
//!
//! vibe 3.x puts `$VIBE_HOME/AGENTS.md` into its system prompt as user-level instructions, so the
//! worker writes this text there before each run and passes the user's prompt to `--prompt`
//! unchanged (DESIGN.md §4).

use crate::model::JobId;

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
}
