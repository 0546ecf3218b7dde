//! Headless Chromium for the dashboard tests, driven through chromedriver's W3C WebDriver API
//! (plain HTTP + JSON, so no browser-automation crate is needed). Debian's `chromium` and
//! `chromium-driver` packages come from the same build, so the two always match;
//! `scripts/install-deps.sh test` installs both.
//!
//! chromedriver runs in its own process group, and the whole group (driver and browser) is
//! killed when the [`Browser`] is dropped, so a failing test leaves no browser behind.

use super::client;
use super::gateway::{free_port, wait_for_port};
use base64::Engine;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The browser binary (Debian's package puts it here).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page gets to show what a test waits for.
const WAIT: Duration = Duration::from_secs(20);
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    /// The fresh profile directory (`--user-data-dir`), removed on drop.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and, through it, headless Chromium with a fresh profile.
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver not found: `bash scripts/install-deps.sh test` installs it (Debian packages chromium, chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            _profile: profile,
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            wait_for_port(addr, Duration::from_secs(10)),
            "chromedriver did not start"
        );
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--window-size=1280,1000",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let answer = browser.call("POST", "/session", Some(caps)).await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => client().post(&url).json(&body.unwrap_or_else(|| json!({}))),
            "DELETE" => client().delete(&url),
            _ => client().get(&url),
        };
        let resp = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Runs `script` until `done` accepts its result (at most [`WAIT`]); returns that result.
    pub async fn wait_for(&self, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.script(script).await;
            if done(&v) {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.script("return document.body.innerText").await;
                panic!("`{script}` stayed {v}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                &self.session_path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_string()
    }

    /// Types `text` into the (cleared) field `css`, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/clear")),
            None,
        )
        .await;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/value")),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            None,
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self
            .call("GET", &self.session_path("/screenshot"), None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    /// Closes the browser through the driver (the drop then stops the driver).
    pub async fn quit(self) {
        self.call("DELETE", &self.session_path(""), None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's process group: chromedriver and the browser it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--"])
            .arg(format!("-{}", self.driver.id()))
            .status();
        let _ = self.driver.wait();
    }
}
