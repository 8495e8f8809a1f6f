//! A real browser for the console's tests: Debian's `chromium`, headless, driven over WebDriver
//! by `chromedriver` (package `chromium-driver`) on a free loopback port. Missing: said loudly and
//! the test skips, unless `CI` is set, where it fails (`.ci/test` installs both packages).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

pub struct Browser {
    pub client: Client,
    driver: Child,
    test: String,
    _profile: tempfile::TempDir,
    /// One browser at a time in this process: a chromium each on two cores would turn the
    /// tests' waits into timing tests.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| std::env::split_paths(&path).map(|d| d.join(n)).find(|p| p.is_file()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where screenshots go: `target/console-screenshots/` (kept as the CI run's artifacts).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("console-screenshots")
}

impl Browser {
    /// A fresh headless browser with an empty profile; None (said on stderr) if chromium or
    /// chromedriver is not installed here; panics under `CI=true`.
    pub async fn start(test: &str) -> Option<Browser> {
        let (driver, chromium) = match (find(&["chromedriver"]), find(&["chromium", "chromium-browser"])) {
            (Some(d), Some(c)) => (d, c),
            (d, c) => {
                let why = format!(
                    "console browser test {test}: {} missing (Debian: apt-get install chromium chromium-driver)",
                    [(d.is_none(), "chromedriver"), (c.is_none(), "chromium")]
                        .iter()
                        .filter(|(m, _)| *m)
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>()
                        .join(" and ")
                );
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!("{why}; CI is set, so the browser tests fail instead of skipping");
                }
                eprintln!("\n!!! SKIPPED: {why}\n");
                return None;
            }
        };
        let turn = TURN.lock().await;
        let port = free_port();
        // A process group of its own: chromedriver and the chromium it starts end together.
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1360,1000".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("cannot start a browser session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Some(Browser { client, driver, test: test.to_owned(), _profile: profile, _turn: turn })
    }

    /// Saves what the browser shows as `<test>-<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}-{name}.png", self.test)), png).unwrap();
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The visible text of the page's body (empty while a page is loading).
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the body's text contains `needle` (the page may update itself).
    pub async fn wait_for_text(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                self.screenshot(&format!("timeout-{}", needle.replace(|c: char| !c.is_alphanumeric(), "_"))).await;
                panic!("{needle:?} did not appear within {within:?}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` finds, finding it again if a live part of the page replaced it
    /// in between.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.click().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The text of the element `css` finds, once it is there (found again if replaced).
    pub async fn text_of(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match text {
                Ok(text) => return text,
                Err(e) if Instant::now() > deadline => panic!("read {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// How many elements `css` finds now.
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.map_or(0, |all| all.len())
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Runs a script in the page (WebDriver's, not the page's: the console's content security
    /// policy does not apply to it) and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// The whole group: chromedriver and its chromium, also when a test panicked.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
