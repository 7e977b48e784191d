//! [`Browser`]: a headless Chromium (Debian's `chromium` and `chromium-driver`) driven over
//! WebDriver by fantoccini, for one test. Its driver runs in a process group of its own and
//! Chromium's profile lies in the test's scratch directory, so that when the browser is
//! closed or dropped every process it started is killed, and `assert_no_processes_left`
//! (which looks for the scratch directory) finds any that was not.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use otter_testkit::{TestApp, eventually};
use serde_json::{Value, json};

/// How long a condition in the page may take (a run of the stand-in, a page load).
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Option<Child>,
    pub(crate) base: String,
}

/// The program of `name`, or a failed test: scripts/test.sh installs it (never skipped).
fn program(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = PathBuf::from(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    otter_testkit::prerequisite_missing(
        "the console's browser tests",
        &format!("{name} is not installed (Debian: apt-get install {package})"),
    )
}

impl Browser {
    /// A fresh headless Chromium on `app`, `width` px wide, at `path` (e.g. `/`).
    pub(crate) async fn open(app: &TestApp, width: u32, path: &str) -> Self {
        let chromium = program("chromium", "chromium");
        let chromedriver = program("chromedriver", "chromium-driver");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let profile = app
            .env
            .dir
            .join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                // Names the scratch directory, as Chromium's profile does, so a leftover shows.
                .env("OTTER_TEST_DIR", &app.env.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        eventually(
            Duration::from_secs(20),
            "chromedriver to answer",
            || async {
                probe
                    .get(format!("{webdriver}/status"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            },
        )
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--hide-scrollbars",
                    "--lang=en-GB",
                    format!("--window-size={width},900"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .expect("a WebDriver session in headless Chromium");
        let browser = Self {
            client,
            driver: Some(driver),
            base: app.base.clone(),
        };
        browser.resize(width).await;
        browser.goto(path).await;
        browser
    }

    /// Sets the viewport's width (and a phone's or a laptop's height).
    pub(crate) async fn resize(&self, width: u32) {
        let height = if width < 600 { 844 } else { 900 };
        self.client
            .set_window_size(width, height)
            .await
            .expect("set the window size");
    }

    pub(crate) async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("open the page");
    }

    /// The value of the JavaScript expression `expr` in the page.
    pub(crate) async fn js(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluate {expr}: {e}"))
    }

    /// Waits (up to [`WAIT`]) until the JavaScript expression `expr` is truthy; returns it.
    /// A page that is loading answers nothing yet, which counts as not yet.
    pub(crate) async fn until(&self, what: &str, expr: &str) -> Value {
        let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(v) = self.client.execute(&script, vec![]).await {
                let truthy = match &v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return v;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self
                    .client
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or_default();
                panic!("timed out waiting for {what} ({expr}); the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `css`, finding it again if the page replaced it in between (a live
    /// update), until [`WAIT`].
    pub(crate) async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let tried = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.click().await,
                Err(e) => Err(e),
            };
            match tried {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => panic!("click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Types `text` into the element `css` (after clearing it).
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    /// Saves a PNG of the viewport as `name`: in docs/console/ when `OTTER_CONSOLE_SCREENSHOTS=docs`
    /// (to refresh the documented ones), else in the temporary directory, so that a test run
    /// leaves the clone as it was.
    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = match std::env::var("OTTER_CONSOLE_SCREENSHOTS").as_deref() {
            Ok("docs") => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console"),
            _ => std::env::temp_dir().join("otter-console-screenshots"),
        };
        std::fs::create_dir_all(&dir).expect("docs/console");
        std::fs::write(dir.join(name), png).expect("write the screenshot");
    }

    /// Ends the WebDriver session (Chromium quits), then the driver and its group.
    pub(crate) async fn close(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            let pgid = nix::unistd::Pid::from_raw(driver.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = driver.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}
