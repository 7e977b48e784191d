//! The web console in a real browser: headless Chromium (Debian's packages, which
//! scripts/test.sh installs when missing) driven over WebDriver, against the real stack: a
//! server on 127.0.0.1, a fresh PostgreSQL database, a private Redis queue and a worker running
//! the vibe stand-in (which is why these tests live in otter-worker: its binary is this
//! package's). Every wait has a deadline; each test closes its browser and checks that none of
//! its processes is left. The tests also take the screenshots of docs/console/.

mod browser;
mod proxy;

use std::time::Duration;

use browser::{Browser, WAIT};
use otter_testkit::{TestApp, Worker, eventually};
use proxy::CutProxy;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fake_vibe() -> String {
    otter_testkit::reachable_by_jobs(env!("CARGO_BIN_EXE_otter-fake-vibe"))
}

/// A worker running the stand-in's `scenario`, with `more` knobs (`KEY=VALUE`).
async fn worker(app: &TestApp, scenario: &str, more: &[&str]) -> Worker {
    let mut pairs = vec![format!("FAKE_VIBE_SCENARIO={scenario}")];
    pairs.extend(more.iter().map(|s| (*s).to_owned()));
    Worker::start(
        app,
        &fake_vibe(),
        &[("OTTER_VIBE_EXTRA_ENV", &pairs.join(","))],
    )
    .await
}

async fn submit(app: &TestApp, ws: &Value, prompt: &str) -> String {
    let (status, job) = app
        .post(
            "/v1/prompts",
            json!({ "prompt": prompt, "workspace_id": ws["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job["id"].as_str().expect("id").to_owned()
}

async fn wait_status(app: &TestApp, id: &str, want: &str) {
    eventually(WAIT, &format!("job {id} to be {want}"), || async {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        (job["status"] == want).then_some(())
    })
    .await;
}

/// The ids of the job's output_chunk events, as the API stores them.
async fn chunk_ids(app: &TestApp, id: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = app
            .get(&format!("/v1/jobs/{id}/events?after={after}"))
            .await;
        let items = page["items"].as_array().expect("items").clone();
        if items.is_empty() {
            return ids;
        }
        for e in &items {
            after = e["id"].as_i64().expect("id");
            if e["kind"] == "output_chunk" {
                ids.push(after);
            }
        }
    }
}

/// The output lines the page shows, by event id, in order.
async fn shown_ids(browser: &Browser) -> Vec<i64> {
    let v = browser
        .js("[...document.querySelectorAll('#output .entry')].map(e => Number(e.dataset.id))")
        .await;
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_i64().expect("an id"))
        .collect()
}

#[tokio::test]
async fn logging_in_with_the_form_by_keyboard_and_with_a_token_in_the_fragment() {
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", "console-secret")]).await;
    let browser = Browser::open(&app, 1280, "/").await;

    browser
        .until("the login form", "document.querySelector('#login #token')")
        .await;
    // A wrong token, then the right one, typed and sent with Enter only.
    browser.type_into("#token", "wrong\u{E007}").await;
    let refused = browser
        .until(
            "the refusal",
            "document.querySelector('#login-error:not([hidden])')?.textContent",
        )
        .await;
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("a valid bearer token is required"),
        "the API's own message: {refused}"
    );
    browser.type_into("#token", "console-secret\u{E007}").await;
    browser
        .until("the jobs view", "document.querySelector('#new-prompt')")
        .await;
    assert_eq!(
        browser.js("sessionStorage.getItem('otter.token')").await,
        "console-secret"
    );
    assert_eq!(
        browser.js("localStorage.length").await,
        0,
        "nothing in localStorage"
    );

    // Log out, then come back with the token in the fragment: taken, stored, removed.
    browser.click("#logout").await;
    browser
        .until("the login form again", "document.querySelector('#login')")
        .await;
    assert_eq!(
        browser.js("sessionStorage.getItem('otter.token')").await,
        Value::Null
    );
    browser.goto("/workspaces#token=console-secret").await;
    browser
        .until(
            "the workspaces view",
            "document.querySelector('#new-workspace')",
        )
        .await;
    assert_eq!(
        browser.js("location.href").await,
        format!("{}/workspaces", app.base)
    );
    assert_eq!(
        browser.js("sessionStorage.getItem('otter.token')").await,
        "console-secret"
    );

    browser.close().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_prompt_from_the_form_streams_its_lines_live_by_entry_type() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("shop").await;
    // Each model answer waits, so the lines come one by one while the browser watches.
    let worker = worker(&app, "slow", &["FAKE_VIBE_SLEEP_MS=1200"]).await;
    let browser = Browser::open(&app, 1280, "/").await;

    // No login without tokens.
    browser
        .until("the form", "document.querySelector('#new-prompt')")
        .await;
    assert_eq!(
        browser.js("document.querySelector('#login')").await,
        Value::Null
    );
    let chosen = browser
        .js("document.querySelector('#prompt-workspace').value")
        .await;
    assert_eq!(chosen, ws["id"]);
    browser
        .type_into("#prompt", "Create hello.txt with a greeting")
        .await;
    browser.type_into("#prompt-priority", "3").await;
    browser.click("#prompt-submit").await;

    // The job's page, and its first line while the job still runs.
    browser
        .until("the job page", "location.pathname.startsWith('/jobs/')")
        .await;
    let id = browser.js("location.pathname.split('/')[2]").await;
    let id = id.as_str().unwrap().to_owned();
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["priority"], 3);
    browser
        .until(
            "the user's message",
            "document.querySelector('#output .entry.k-user')",
        )
        .await;
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_ne!(
        job["status"], "succeeded",
        "a line arrived before the end: {job}"
    );
    browser
        .until(
            "a tool call",
            "document.querySelector('#output .entry.k-effect')",
        )
        .await;
    browser.screenshot("job-running-1280.png").await;
    browser.resize(390).await;
    browser.screenshot("job-running-390.png").await;
    browser.resize(1280).await;

    // The end: status, final answer, usage and cost, every line exactly once and in order.
    browser
        .until(
            "succeeded",
            "document.querySelector('#job-status [data-status=\"succeeded\"]')",
        )
        .await;
    browser
        .until(
            "the cost",
            "document.querySelector('#job-summary')?.textContent.includes('$')",
        )
        .await;
    wait_status(&app, &id, "succeeded").await;
    let want = chunk_ids(&app, &id).await;
    browser
        .until(
            "every line",
            &format!(
                "document.querySelectorAll('#output .entry').length === {}",
                want.len()
            ),
        )
        .await;
    assert_eq!(shown_ids(&browser).await, want);
    let text = browser
        .js("document.querySelector('#output').textContent")
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("cat hello.txt && echo done"),
        "the command: {text}"
    );
    assert!(text.contains("hello.txt"), "the file write: {text}");
    assert_eq!(
        browser
            .js("document.querySelector('#output .entry.k-effect .badge').textContent")
            .await,
        "completed"
    );
    let timeline = browser
        .js("[...document.querySelectorAll('#timeline li')].map(li => li.dataset.kind)")
        .await;
    assert_eq!(
        timeline,
        json!(["job_queued", "job_started", "job_succeeded"])
    );

    browser.close().await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn setup_lines_and_stderr_are_apart_and_reasoning_is_collapsed() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("setup").await;
    let worker = worker(&app, "setup", &[]).await;
    let id = submit(&app, &ws, "Make a setup.sh").await;
    wait_status(&app, &id, "succeeded").await;
    let browser = Browser::open(&app, 1280, &format!("/jobs/{id}")).await;
    browser
        .until(
            "the setup lines",
            "document.querySelectorAll('#output .entry.k-setup').length >= 3",
        )
        .await;
    let setup = browser
        .js("[...document.querySelectorAll('#output .entry.k-setup pre')].map(p => p.textContent)")
        .await;
    assert_eq!(
        setup,
        json!(["setup line 1", "setup line 2", "setup warning"])
    );
    assert!(
        browser
            .js("document.querySelectorAll('#output .entry.k-stderr').length")
            .await
            .as_i64()
            >= Some(1),
        "vibe's stderr line is shown apart"
    );
    let timeline = browser
        .js("[...document.querySelectorAll('#timeline li')].map(li => li.dataset.kind)")
        .await;
    assert!(
        timeline
            .as_array()
            .unwrap()
            .contains(&json!("setup_finished")),
        "{timeline}"
    );
    browser.close().await;
    worker.stop().await;

    // Reasoning (the `rich` scenario) is there, collapsed.
    let worker2 = self::worker(&app, "rich", &[]).await;
    let id = submit(&app, &ws, "Think first").await;
    wait_status(&app, &id, "succeeded").await;
    let browser = Browser::open(&app, 1280, &format!("/jobs/{id}")).await;
    browser
        .until(
            "the reasoning",
            "document.querySelector('#output .entry.k-reasoning details')",
        )
        .await;
    assert_eq!(
        browser
            .js("document.querySelector('#output .entry.k-reasoning details').open")
            .await,
        false
    );
    browser.close().await;
    worker2.stop().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn cancelling_a_slow_job_from_the_jobs_page_ends_it_cancelled() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("slow").await;
    let worker = worker(&app, "hang", &[]).await;
    let done = submit(&app, &ws, "An earlier job").await;
    app.post(&format!("/v1/jobs/{done}/cancel"), json!({}))
        .await;
    let running = submit(&app, &ws, "Take your time").await;
    wait_status(&app, &running, "running").await;
    // Queued behind it (one running job per workspace).
    let queued = submit(&app, &ws, "Next in line").await;

    let browser = Browser::open(&app, 1280, "/").await;
    let row = |id: &str, status: &str| {
        format!(
            "document.querySelector('#active-jobs li[data-job=\"{id}\"][data-status=\"{status}\"]')"
        )
    };
    browser
        .until("the running job", &row(&running, "running"))
        .await;
    browser
        .until("the queued job", &row(&queued, "queued"))
        .await;
    browser.screenshot("jobs-1280.png").await;
    browser.resize(390).await;
    browser.screenshot("jobs-390.png").await;
    browser.resize(1280).await;

    // A control the API refuses shows the API's own message.
    let prio = format!("#active-jobs li[data-job=\"{queued}\"] input.prio");
    browser.type_into(&prio, "5000").await;
    browser
        .click(&format!(
            "#active-jobs li[data-job=\"{queued}\"] button[data-action=\"priority\"]"
        ))
        .await;
    let refused = browser
        .until(
            "the refusal",
            "document.querySelector('#jobs-error:not([hidden])')?.textContent",
        )
        .await;
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("priority must be between -1000 and 1000"),
        "{refused}"
    );
    // Pause and resume the queued one: the list follows the stream.
    browser
        .click(&format!(
            "#active-jobs li[data-job=\"{queued}\"] button[data-action=\"pause\"]"
        ))
        .await;
    browser
        .until("paused", &format!("document.querySelector('#active-jobs li[data-job=\"{queued}\"] button[data-action=\"resume\"]')"))
        .await;
    let (_, job) = app.get(&format!("/v1/jobs/{queued}")).await;
    assert_eq!(job["paused"], true);

    // Cancel the running job: it moves to the history as cancelled, live.
    browser
        .click(&format!(
            "#active-jobs li[data-job=\"{running}\"] button[data-action=\"cancel\"]"
        ))
        .await;
    browser
        .until(
            "the cancelled job in the history",
            &format!("document.querySelector('#history-jobs li[data-job=\"{running}\"][data-status=\"cancelled\"]')"),
        )
        .await;
    wait_status(&app, &running, "cancelled").await;
    // A job submitted elsewhere appears without a reload.
    let other = submit(&app, &ws, "Submitted by curl").await;
    browser
        .until(
            "the new job",
            &format!("document.querySelector('#active-jobs li[data-job=\"{other}\"]')"),
        )
        .await;
    // The status filter is in the address and keeps only cancelled jobs.
    browser.goto("/?status=cancelled").await;
    browser
        .until(
            "the filtered history",
            &format!("document.querySelector('#history-jobs li[data-job=\"{running}\"]')"),
        )
        .await;
    assert_eq!(
        browser.js("document.querySelector('#active-jobs')").await,
        Value::Null
    );
    assert_eq!(
        browser.js("[...document.querySelectorAll('#history-jobs li.job')].every(li => li.dataset.status === 'cancelled')").await,
        true
    );
    for id in [&queued, &other] {
        app.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    }
    browser.close().await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_workspace_page_browses_the_tree_opens_a_file_and_runs_commands_in_a_session() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("files").await;
    let wid = ws["id"].as_str().unwrap();
    let (status, made) = app
        .post(
            &format!("/v1/workspaces/{wid}/command"),
            json!({ "command": "mkdir -p src && printf 'print(\"hi\")\\n' > src/main.py && printf '# Shop\\n<b>not bold</b>\\n' > README.md" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let browser = Browser::open(&app, 1280, &format!("/workspaces/{wid}")).await;

    browser
        .until(
            "the tree",
            "document.querySelector('#tree button.node.dir[data-path=\"src\"]')",
        )
        .await;
    browser
        .click("#tree button.node.dir[data-path=\"src\"]")
        .await;
    browser
        .until(
            "src's files",
            "document.querySelector('#tree button.node.file[data-path=\"src/main.py\"]')",
        )
        .await;
    browser
        .click("#tree button.node.file[data-path=\"src/main.py\"]")
        .await;
    let content = browser
        .until(
            "the file",
            "document.querySelector('#viewer-content')?.textContent",
        )
        .await;
    assert_eq!(content, "print(\"hi\")\n");
    browser
        .click("#tree button.node.file[data-path=\"README.md\"]")
        .await;
    browser
        .until(
            "README as text",
            "document.querySelector('#viewer-content')?.textContent.includes('<b>not bold</b>')",
        )
        .await;
    assert_eq!(
        browser
            .js("document.querySelectorAll('#viewer b').length")
            .await,
        0
    );

    // Commands keep their session: cd persists, the cwd is shown.
    browser.type_into("#command", "cd src\u{E007}").await;
    browser
        .until(
            "the cwd",
            "document.querySelector('#cwd').textContent.endsWith('/src')",
        )
        .await;
    browser
        .type_into("#command", "pwd; ls; echo oops >&2\u{E007}")
        .await;
    let out = browser
        .until("the output", "document.querySelectorAll('#command-log .cmdrun').length === 2 && document.querySelectorAll('#command-log .cmdrun')[1].innerText")
        .await;
    let out = out.as_str().unwrap();
    let log = browser
        .js("document.querySelector('#command-log').innerText")
        .await;
    assert!(out.contains("/src\nmain.py"), "{out}; the log: {log}");
    assert!(out.contains("oops"), "{out}");
    assert!(out.contains("exit 0"), "{out}");
    // The runtime is off here: the panel says so with the API's message.
    browser
        .until("the runtime's state", "document.querySelector('#runtime-unavailable')?.textContent.includes('OTTER_RUNTIME_ENABLED')")
        .await;
    browser.screenshot("workspace-1280.png").await;
    browser.resize(390).await;
    browser.screenshot("workspace-390.png").await;

    browser.close().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_reload_in_the_middle_of_a_run_shows_every_line_exactly_once() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("reload").await;
    // The stand-in's `hang`: the job runs until it is cancelled, so the reload is mid-run.
    let worker = worker(&app, "hang", &[]).await;
    let id = submit(&app, &ws, "Take a while").await;
    let browser = Browser::open(&app, 1280, &format!("/jobs/{id}")).await;
    browser
        .until(
            "the first lines",
            "document.querySelectorAll('#output .entry').length >= 2",
        )
        .await;
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        job["status"], "running",
        "reloaded in the middle of the run"
    );
    browser.client.refresh().await.expect("reload");
    browser
        .until("the page again", "document.querySelector('#output .entry')")
        .await;
    // Lines after the reload: the cancel's `Stopped: terminated` and the end.
    app.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    browser
        .until(
            "the end",
            "document.querySelector('#job-status [data-status=\"cancelled\"]')",
        )
        .await;
    wait_status(&app, &id, "cancelled").await;
    let want = chunk_ids(&app, &id).await;
    browser
        .until(
            "every line",
            &format!(
                "document.querySelectorAll('#output .entry').length >= {}",
                want.len()
            ),
        )
        .await;
    // Give a duplicate the time to show up if one were coming: the stream has ended.
    browser
        .until(
            "the stream's end",
            "document.querySelector('#conn').dataset.state === 'ended'",
        )
        .await;
    assert_eq!(shown_ids(&browser).await, want, "each line once, in order");
    browser.close().await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}

/// Nothing the page showed ran: no marker set, no `javascript:` link, no element made from
/// markup in the data, no alert.
async fn assert_no_harm(browser: &Browser) {
    assert_eq!(browser.js("typeof window.__pwned").await, "undefined");
    assert_eq!(
        browser
            .js("document.querySelectorAll('a[href^=\"javascript:\" i]').length")
            .await,
        0
    );
    assert_eq!(
        browser
            .js("document.querySelectorAll('main img, main script, main svg, main iframe').length")
            .await,
        0
    );
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no alert is open"
    );
}

#[tokio::test]
async fn hostile_output_file_names_and_commands_run_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("hostile").await;
    let wid = ws["id"].as_str().unwrap();
    let worker = worker(&app, "tools", &[]).await;
    let hostile = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> \
                   [click](javascript:window.__pwned=3) <a href=\"javascript:window.__pwned=4\">link</a> \
                   <svg onload=\"window.__pwned = 5\"></svg>";
    let id = submit(&app, &ws, hostile).await;
    wait_status(&app, &id, "succeeded").await;
    let (status, _) = app
        .post(
            &format!("/v1/jobs/{id}/preview-url"),
            json!({ "preview_url": "http://127.0.0.1:9/?q=<script>window.__pwned=6</script>" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, made) = app
        .post(
            &format!("/v1/workspaces/{wid}/command"),
            json!({ "command": "printf '<script>window.__pwned=7</script>' > '<img src=x onerror=window.__pwned=8>.html'" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");

    // The job's page: the prompt and its echo are text.
    let browser = Browser::open(&app, 1280, &format!("/jobs/{id}")).await;
    browser
        .until(
            "the echoed prompt",
            "document.querySelector('#output .entry.k-user')",
        )
        .await;
    browser
        .until("the preview link", "document.querySelector('.preview a')")
        .await;
    assert_eq!(
        browser
            .js("document.querySelector('#output .entry.k-user .msg').textContent")
            .await,
        hostile
    );
    assert_eq!(
        browser
            .js("document.querySelector('#job-prompt').textContent")
            .await,
        hostile
    );
    let href = browser
        .js("document.querySelector('.preview a').href")
        .await;
    assert!(
        href.as_str().unwrap().starts_with("http://127.0.0.1:9/"),
        "{href}"
    );
    assert_no_harm(&browser).await;

    // The jobs list shows the prompt as text too.
    browser.goto("/").await;
    browser
        .until(
            "the job's row",
            &format!("document.querySelector('li[data-job=\"{id}\"] .prompt')?.textContent"),
        )
        .await;
    assert_no_harm(&browser).await;

    // A file whose name and content are HTML, and a command that prints HTML.
    browser.goto(&format!("/workspaces/{wid}")).await;
    let name = "<img src=x onerror=window.__pwned=8>.html";
    let shown = browser
        .until("the file's name", "[...document.querySelectorAll('#tree button.node.file')].map(b => b.textContent).join('|')")
        .await;
    assert!(shown.as_str().unwrap().contains(name), "{shown}");
    browser
        .client
        .execute(
            "[...document.querySelectorAll('#tree button.node.file')].find(b => b.dataset.path === arguments[0]).click()",
            vec![json!(name)],
        )
        .await
        .expect("open the file");
    let content = browser
        .until(
            "the file's content",
            "document.querySelector('#viewer-content')?.textContent",
        )
        .await;
    assert_eq!(content, "<script>window.__pwned=7</script>");
    browser
        .type_into(
            "#command",
            "echo '<img src=x onerror=window.__pwned=9><script>window.__pwned=10</script>'\u{E007}",
        )
        .await;
    browser
        .until(
            "the command's output",
            "document.querySelector('#command-log pre.out')?.textContent.includes('<script>')",
        )
        .await;
    assert_no_harm(&browser).await;

    browser.close().await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_job_with_many_lines_keeps_at_most_a_page_of_them_in_the_page() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("flood").await;
    let worker = worker(&app, "flood", &["FAKE_VIBE_LINES=20000"]).await;
    let id = submit(&app, &ws, "Print a lot").await;
    wait_status(&app, &id, "succeeded").await;
    let total = chunk_ids(&app, &id).await.len();
    assert!(total > 20000, "{total}");
    let browser = Browser::open(&app, 1280, &format!("/jobs/{id}")).await;
    browser
        .until(
            "every line counted",
            &format!(
                "document.querySelector('#line-count')?.textContent.startsWith('{total} line')"
            ),
        )
        .await;
    let nodes = browser
        .js("document.querySelectorAll('#output .entry').length")
        .await;
    assert!(
        nodes.as_i64().unwrap() <= 500,
        "at most a page in the DOM: {nodes}"
    );
    // The page still answers at once, and pages back to the first line.
    let started = std::time::Instant::now();
    browser.click("#page-first").await;
    browser
        .until(
            "the first page",
            "document.querySelector('#page-label')?.textContent.startsWith('page 1 of')",
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        browser
            .js("document.querySelector('#output .entry.k-user') !== null")
            .await,
        true
    );
    browser.close().await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_jobs_changes_diff_restore_follow_up_limits_and_session_filter() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("changes").await;
    let wid = ws["id"].as_str().unwrap();
    let (status, made) = app
        .post(
            &format!("/v1/workspaces/{wid}/command"),
            json!({ "command": "printf 'line 1\\nline 2\\nline 3\\n' > edited.txt && printf 'gone\\n' > deleted.txt" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let worker = worker(&app, "change-set", &[]).await;
    let id = submit(&app, &ws, "Change three files").await;
    wait_status(&app, &id, "succeeded").await;

    let browser = Browser::open(&app, 1280, &format!("/jobs/{id}")).await;
    let listed = browser
        .until(
            "the change list",
            "document.querySelectorAll('#change-list li').length === 3 && [...document.querySelectorAll('#change-list li')].map(li => li.dataset.path + ':' + li.dataset.status).join(' ')",
        )
        .await;
    assert_eq!(
        listed,
        "added.txt:added deleted.txt:deleted edited.txt:modified"
    );
    browser
        .click("#change-list li[data-path=\"edited.txt\"] button")
        .await;
    let diff = browser
        .until(
            "the file's diff",
            "document.querySelector('#diff')?.textContent",
        )
        .await;
    assert!(diff.as_str().unwrap().contains("+line two"), "{diff}");
    assert!(diff.as_str().unwrap().contains("-line 2"), "{diff}");
    browser.screenshot("job-changes-1280.png").await;

    // Restore to before the job: two clicks (the first asks to confirm).
    browser.click("#restore-before").await;
    browser.click("#restore-before").await;
    browser
        .until(
            "the restore's result",
            "document.querySelector('#restore-result')?.textContent.includes('Restored to before')",
        )
        .await;
    let (status, _) = app
        .get(&format!("/v1/workspaces/{wid}/file?path=added.txt"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "added.txt is gone again");
    let (_, back) = app
        .get(&format!("/v1/workspaces/{wid}/file?path=deleted.txt"))
        .await;
    assert_eq!(back["content"], "gone\n");

    // A follow-up from the job's page resumes its session.
    browser
        .type_into("#follow-up", "And now one more thing")
        .await;
    browser.click("#follow-up-submit").await;
    browser
        .until(
            "the follow-up's page",
            &format!(
                "location.pathname.startsWith('/jobs/') && !location.pathname.endsWith('{id}')"
            ),
        )
        .await;
    let next = browser.js("location.pathname.split('/')[2]").await;
    let next = next.as_str().unwrap().to_owned();
    let (_, job) = app.get(&format!("/v1/jobs/{next}")).await;
    assert_eq!(job["parent_job_id"], id.as_str());
    assert_eq!(job["prompt"], "And now one more thing");
    browser
        .until(
            "the parent link",
            &format!("document.querySelector('#job-summary a[href=\"/jobs/{id}\"]')"),
        )
        .await;
    wait_status(&app, &next, "succeeded").await;
    let (_, first) = app.get(&format!("/v1/jobs/{id}")).await;
    let session = first["session_id"].as_str().expect("a session").to_owned();

    // The session filter lists the conversation.
    browser.goto(&format!("/?session_id={session}")).await;
    let rows = browser
        .until(
            "the conversation",
            "document.querySelectorAll('#history-jobs li.job').length === 2 && [...document.querySelectorAll('#history-jobs li.job')].map(li => li.dataset.job)",
        )
        .await;
    assert_eq!(rows, json!([next, id]));

    // Limits and model from the form reach the job.
    browser.goto("/").await;
    browser
        .until(
            "the form",
            "document.querySelector('#prompt-limits summary')",
        )
        .await;
    browser.click("#prompt-limits summary").await;
    browser.type_into("#prompt", "With limits").await;
    browser.type_into("#limit-turns", "7").await;
    browser.type_into("#limit-price", "0.5").await;
    browser.type_into("#prompt-model", "devstral-small").await;
    browser.click("#prompt-submit").await;
    browser
        .until(
            "the new job's page",
            "location.pathname.startsWith('/jobs/')",
        )
        .await;
    let limited = browser.js("location.pathname.split('/')[2]").await;
    let (_, job) = app
        .get(&format!("/v1/jobs/{}", limited.as_str().unwrap()))
        .await;
    assert_eq!(job["limits"]["max_turns"], 7, "{job}");
    assert_eq!(job["limits"]["max_price_usd"], 0.5, "{job}");
    assert_eq!(job["model"], "devstral-small", "{job}");
    wait_status(&app, limited.as_str().unwrap(), "succeeded").await;

    browser.close().await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_dropped_stream_resumes_with_last_event_id_losing_nothing_and_repeating_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.workspace("dropped").await;
    // The stand-in's `hang`: the job runs until it is cancelled, so the cut is mid-run.
    let worker = worker(&app, "hang", &[]).await;
    let id = submit(&app, &ws, "Take a while").await;
    // The browser reaches the server through a proxy that can cut its connections.
    let proxy = CutProxy::start(&app.base).await;
    let mut browser = Browser::open(&app, 1280, "/console/icon.svg").await;
    browser.base = proxy.base.clone();
    browser.goto(&format!("/jobs/{id}")).await;
    browser
        .until(
            "the first lines",
            "document.querySelectorAll('#output .entry').length >= 2",
        )
        .await;
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "running", "cut in the middle of the run");
    proxy.cut_all();
    eventually(WAIT, "a resumed stream (Last-Event-ID)", || async {
        (proxy.resumed.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    // Lines after the cut: the cancel's `Stopped: terminated`, then the end.
    let (status, body) = app.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    browser
        .until(
            "the end",
            "document.querySelector('#conn').dataset.state === 'ended'",
        )
        .await;
    wait_status(&app, &id, "cancelled").await;
    let want = chunk_ids(&app, &id).await;
    assert_eq!(shown_ids(&browser).await, want, "each line once, in order");
    browser.close().await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}
