//! Shared set-up for the end-to-end tests: real HTTP sinks on 127.0.0.1:0, the proxy started
//! in-process on a temp-dir sled store, a signed-POST client, and a Stripe signature verifier
//! written independently of the proxy's own.
#![allow(dead_code)]

pub mod browser;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fanout::config::Config;
use fanout::serve::{self, Running};
use hmac::{Hmac, Mac};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Sha256;

/// One request a sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// What the sink answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// How a sink answers its n-th request (0-based): status and delay before answering.
pub type Behaviour = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

/// A real HTTP server standing in for one environment's webhook endpoint.
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    pub async fn ok() -> Sink {
        Sink::start(Arc::new(|_| (200, Duration::ZERO))).await
    }

    pub async fn with(f: impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static) -> Sink {
        Sink::start(Arc::new(f)).await
    }

    pub async fn start(behaviour: Behaviour) -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, behaviour, count) = (log.clone(), behaviour.clone(), count.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (log, behaviour, count) = (log.clone(), behaviour.clone(), count.clone());
                        async move {
                            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let (status, delay) = behaviour(n);
                            tokio::time::sleep(delay).await;
                            log.lock().unwrap().push(Received {
                                headers: parts.headers,
                                body,
                                at: Instant::now(),
                                status,
                            });
                            let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *res.status_mut() = StatusCode::from_u16(status).unwrap();
                            if (300..400).contains(&status) {
                                res.headers_mut().insert("location", "http://127.0.0.1:1/".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Received requests carrying this Stripe event id.
    pub fn for_event(&self, id: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.header("fanout-event-id") == id).collect()
    }
}

/// A proxy running in this process on a temp-dir store.
pub struct Proxy {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    pub async fn start(yaml: &str) -> Proxy {
        Proxy::start_in(yaml, tempfile::tempdir().unwrap()).await
    }

    pub async fn start_in(yaml: &str, dir: tempfile::TempDir) -> Proxy {
        let mut config = Config::parse("test.yaml", yaml, |_| None).unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("data");
        let running = serve::start(config).await.unwrap();
        Proxy { running, dir }
    }

    /// The sled store under the proxy's engine: its faults injected, its state read directly.
    pub fn sled(&self) -> &fanout_store::Store {
        self.running.store.sled_store().expect("the tests' proxies run on sled")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr)
    }

    /// Calls the admin API with `token`; returns the status and the JSON (or text) answer.
    pub async fn admin(&self, method: http::Method, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let headers: Vec<(&str, String)> =
            token.map(|t| ("authorization", format!("Bearer {t}"))).into_iter().collect();
        let (status, text) = request(method, &self.admin_url(path), &headers, Bytes::new()).await;
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// Stops the proxy and starts a new one on the same store.
    pub async fn restart(self, yaml: &str) -> Proxy {
        let Proxy { running, dir } = self;
        running.stop().await;
        Proxy::start_in(yaml, dir).await
    }
}

pub const SOURCE_SECRET: &str = "whsec_source_test";

/// A Stripe-shaped event body, about a customer of its own (`cus_<event id>`): tests that route
/// by rules are not meant to share objects, which would make ownership routing join in.
pub fn event(id: &str, ty: &str, env: &str) -> String {
    customer_event(id, ty, env, &format!("cus_{id}"))
}

/// An event about the customer `customer`.
pub fn customer_event(id: &str, ty: &str, env: &str, customer: &str) -> String {
    serde_json::json!({
        "id": id, "object": "event", "type": ty, "livemode": false, "api_version": "2024-06-20",
        "created": now(), "data": {"object": {"id": customer, "object": "customer", "metadata": {"env": env}}}
    })
    .to_string()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Stripe's signature, computed here without the proxy's code.
pub fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a target's stock Stripe SDK does: some v1 over `t.body` with its secret, t recent.
pub fn stripe_sdk_accepts(header: &str, body: &[u8], secret: &str) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let expected = stripe_signature(secret, t, body);
    let expected = expected.split_once("v1=").unwrap().1;
    (now() - t).abs() <= 300 && sigs.iter().any(|s| s == expected)
}

/// POSTs `body` with `headers`; returns status and response text.
pub async fn post(url: &str, headers: &[(&str, String)], body: impl Into<Bytes>) -> (u16, String) {
    request(http::Method::POST, url, headers, body).await
}

pub async fn request(
    method: http::Method,
    url: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> (u16, String) {
    try_request(method, url, headers, body).await.expect("proxy reachable")
}

/// Like [`request`], but a connection failure is an `Err` (for tests that kill the proxy).
pub async fn try_request(
    method: http::Method,
    url: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Result<(u16, String), String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url).body(Full::new(body.into())).unwrap();
    for (k, v) in headers {
        req.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let text = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

/// POSTs a correctly signed event, as Stripe would.
pub async fn send_signed(url: &str, body: &str) -> (u16, String) {
    try_send_signed(url, body).await.expect("proxy reachable")
}

pub async fn try_send_signed(url: &str, body: &str) -> Result<(u16, String), String> {
    let signature = stripe_signature(SOURCE_SECRET, now(), body.as_bytes());
    try_request(http::Method::POST, url, &[("stripe-signature", signature)], body.to_owned()).await
}

/// Polls `check` until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Runs `fut` with a hard limit, so a hung test fails instead of stalling CI.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    bounded_for(Duration::from_secs(60), fut).await
}

/// [`bounded`] with a limit of its own, for a test that moves thousands of jobs.
pub async fn bounded_for<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("test exceeded {limit:?}"))
}

/// Runs the `fanout` binary (off the async runtime) and returns its output.
pub async fn fanout_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"));
        cmd.args(&args).env_remove("RUST_LOG").env_remove("FANOUT_ADMIN_URL").env_remove("FANOUT_ADMIN_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run fanout")
    })
    .await
    .unwrap()
}

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The real `fanout serve` binary, its stderr logged to a file.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: std::path::PathBuf,
    /// Kept open so the process never writes to a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Binary {
    /// Starts `fanout serve --config <config>` with `RUST_LOG=info`, logging to `log`, and waits
    /// for the two address lines it prints.
    pub fn spawn(config: &std::path::Path, log: &std::path::Path) -> Binary {
        Binary::spawn_logging(config, log, "info")
    }

    /// Like [`Binary::spawn`], logging at `level` (a `RUST_LOG` value).
    pub fn spawn_logging(config: &std::path::Path, log: &std::path::Path, level: &str) -> Binary {
        Binary::spawn_env(config, log, level, &[])
    }

    /// Like [`Binary::spawn_logging`], with more environment variables.
    pub fn spawn_env(config: &std::path::Path, log: &std::path::Path, level: &str, env: &[(&str, &str)]) -> Binary {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", level)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start fanout");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = |prefix: &str| -> SocketAddr {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let addr = line.trim().strip_prefix(prefix).map(str::to_owned);
            addr.and_then(|a| a.parse().ok()).unwrap_or_else(|| {
                panic!("expected {prefix:?}, got {line:?}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default())
            })
        };
        let addr = line("listening on ");
        let admin = line("admin on ");
        Binary { child, addr, admin, log: log.to_owned(), _stdout: stdout }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status =
            std::process::Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits (off the runtime) for the process to exit, at most `within`.
    pub async fn wait_exit(mut self, within: Duration) -> (Option<std::process::ExitStatus>, String) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (None, self.log_text())
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `fanout listen` process forwarding an inbox to a local app; its stdout goes to a file.
pub struct Listen {
    pub child: std::process::Child,
    pub out: std::path::PathBuf,
}

impl Listen {
    pub fn spawn(proxy: &str, token: &str, forward_to: &str, out: &std::path::Path) -> Listen {
        Listen::spawn_with(proxy, token, forward_to, out, &[])
    }

    /// [`Listen::spawn`] with more arguments (`--events ...`).
    /// No `token`: the listener finds one by `--name` in the directory of `out`
    /// (`FANOUT_CONFIG_DIR`).
    pub fn spawn_with(proxy: &str, token: &str, forward_to: &str, out: &std::path::Path, more: &[&str]) -> Listen {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"));
        if token.is_empty() {
            command.env_remove("FANOUT_INBOX_TOKEN").env("FANOUT_CONFIG_DIR", out.parent().unwrap());
        } else {
            command.env("FANOUT_INBOX_TOKEN", token);
        }
        let child = command
            .args(["listen", "--proxy", proxy, "--forward-to", forward_to])
            .args(more)
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .expect("start fanout listen");
        Listen { child, out: out.to_owned() }
    }

    /// What it printed so far (stdout, then stderr).
    pub fn output(&self) -> String {
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.out), read(&self.out.with_extension("err")))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        self.kill();
    }
}
