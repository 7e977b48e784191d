//! Bounded memory, whatever the output or the client (issue 14): a command's answer keeps at
//! most its caps of bytes and lines while the command runs to its end.

use otter_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::Value;

/// Runs `command` in a fresh workspace of `app`; panics unless the answer is 200.
async fn command(app: &TestApp, name: &str, command: &str) -> (Value, std::path::PathBuf) {
    let ws = app.workspace(name).await;
    let (status, result) = app
        .post(
            &format!("/v1/workspaces/{}/command", ws["id"].as_str().unwrap()),
            serde_json::json!({ "command": command }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    (result, ws["path"].as_str().unwrap().into())
}

#[tokio::test]
async fn a_commands_output_is_capped_by_lines_and_by_bytes_and_it_runs_to_its_end() {
    let app = TestApp::spawn_with(&[
        ("OTTER_COMMAND_MAX_OUTPUT_LINES", "1000"),
        ("OTTER_COMMAND_MAX_OUTPUT_BYTES", "4096"),
    ])
    .await;
    // 8 M empty lines: 1000 are kept, the rest read and dropped, and the command goes on.
    let (result, dir) = command(
        &app,
        "lines",
        r"head -c 8000000 /dev/zero | tr '\0' '\n'; echo done >&2; touch finished",
    )
    .await;
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["truncated"], true);
    assert_eq!(result["stdout"], "\n".repeat(1000));
    assert_eq!(result["stderr"], "done\n");
    assert!(dir.join("finished").exists(), "it ran to its end");

    // Long lines: 4096 bytes kept.
    let (result, _) = command(&app, "bytes", "yes 0123456789 | head -c 1000000").await;
    assert_eq!(result["truncated"], true);
    let stdout = result["stdout"].as_str().unwrap();
    assert!(
        stdout.len() <= 4096 && stdout.len() > 4000,
        "{}",
        stdout.len()
    );
    assert!(stdout.starts_with("0123456789\n0123456789\n"));
}
