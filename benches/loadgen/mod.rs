//! The load generator: signed Stripe-shaped events from many concurrent keep-alive senders, real
//! HTTP sinks that count and time what fanout delivers, and the real `fanout serve` binary run as a
//! child process so its CPU time and memory can be read from /proc. `benches/e2e.rs` drives it at
//! full size; `tests/loadgen_smoke.rs` runs it for a few seconds so it keeps compiling and working.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Sha256;

mod scenarios;
pub use scenarios::*;

pub const SOURCE_SECRET: &str = "whsec_bench_source";
pub const SOURCE_PATH: &str = "/stripe/webhook";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Events

/// A Stripe `invoice.paid`-shaped event padded to about `size` bytes, with a distinct id.
pub fn event_body(run: &str, seq: u64, size: usize) -> String {
    let id = event_id(run, seq);
    // Object ids as scattered as Stripe's random ones. By default every event has its own
    // customer (each a new ownership claim: the worst case); FANOUT_BENCH_CUSTOMERS=N spreads
    // events over N customers and subscriptions, as a real stream does.
    let scatter = |n: u64| n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    let obj = scatter(seq);
    static CUSTOMERS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let customers = *CUSTOMERS
        .get_or_init(|| std::env::var("FANOUT_BENCH_CUSTOMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(0));
    let cus = if customers > 0 { scatter(seq % customers) } else { obj };
    let head = format!(
        r#"{{"id":"{id}","object":"event","api_version":"2024-06-20","created":1700000000,"type":"invoice.paid","livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"data":{{"object":{{"id":"in_{obj:024x}","object":"invoice","customer":"cus_{cus:014x}","subscription":"sub_{cus:014x}","amount_due":2000,"amount_paid":2000,"currency":"usd","status":"paid","metadata":{{"env":"staging"}},"lines":{{"object":"list","data":[],"has_more":false}},"footer":""#
    );
    let tail = r#""}}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = head;
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str(tail);
    body
}

pub fn event_id(run: &str, seq: u64) -> String {
    format!("evt_{run}_{seq}")
}

/// The sequence number back out of an event id made by [`event_id`].
pub fn seq_of(event_id: &str) -> Option<u64> {
    event_id.rsplit('_').next()?.parse().ok()
}

pub fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

// ---------------------------------------------------------------------------------------------
// Senders

/// What a run of senders saw.
#[derive(Debug, Default)]
pub struct SendReport {
    pub acked: usize,
    pub failed: usize,
    pub elapsed: Duration,
    /// Acknowledgement latency of every acked request, sorted, in microseconds.
    pub latencies_us: Vec<u32>,
    pub first_error: Option<String>,
}

impl SendReport {
    pub fn per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }
}

/// Shared clock of when each event was sent, so sinks can time event-sent-to-delivered.
pub struct SendTimes {
    start: Instant,
    sent_us: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(events: usize) -> Arc<SendTimes> {
        Arc::new(SendTimes { start: Instant::now(), sent_us: (0..events).map(|_| AtomicU64::new(0)).collect() })
    }

    fn mark(&self, seq: u64) {
        if let Some(slot) = self.sent_us.get(seq as usize) {
            slot.store(self.start.elapsed().as_micros() as u64 + 1, Ordering::Relaxed);
        }
    }

    fn since_sent_us(&self, seq: u64) -> Option<u64> {
        let sent = self.sent_us.get(seq as usize)?.load(Ordering::Relaxed);
        (sent > 0).then(|| (self.start.elapsed().as_micros() as u64 + 1).saturating_sub(sent))
    }
}

/// How many events a run sends and in what shape.
pub struct Load {
    pub addr: SocketAddr,
    pub run: String,
    pub senders: usize,
    /// Stop after this many events (counting from `first_seq`) ...
    pub events: u64,
    /// ... or after this long, whichever comes first.
    pub duration: Duration,
    pub first_seq: u64,
    pub body_bytes: usize,
    pub times: Option<Arc<SendTimes>>,
}

/// Sends signed events from `senders` keep-alive connections, each waiting for its answer
/// before sending the next (as Stripe does per connection). Signing happens in the loop, so the
/// same client cost is paid against fanout and against the bare ceiling server.
pub async fn send(load: Load) -> SendReport {
    let next = Arc::new(AtomicU64::new(load.first_seq));
    let end = load.first_seq + load.events;
    let deadline = Instant::now() + load.duration;
    let started = Instant::now();
    let load = Arc::new(load);
    let mut tasks = Vec::new();
    for _ in 0..load.senders {
        let (next, load) = (next.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut report = SendReport::default();
            let mut conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= end {
                    break;
                }
                let body = event_body(&load.run, seq, load.body_bytes);
                let signature = stripe_signature(SOURCE_SECRET, unix_now(), body.as_bytes());
                let request = Request::post(format!("http://{}{SOURCE_PATH}", load.addr))
                    .header("host", load.addr.to_string())
                    .header("content-type", "application/json")
                    .header("stripe-signature", signature)
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid request");
                if let Some(times) = &load.times {
                    times.mark(seq);
                }
                let sent = Instant::now();
                let outcome = match conn.as_mut() {
                    Some(c) => c.send_request(request).await.map_err(BoxError::from),
                    None => match connect(load.addr).await {
                        Ok(mut c) => {
                            let r = c.send_request(request).await.map_err(BoxError::from);
                            conn = Some(c);
                            r
                        }
                        Err(e) => Err(e),
                    },
                };
                match outcome {
                    Ok(res) if res.status() == StatusCode::OK => {
                        let _ = res.into_body().collect().await;
                        report.acked += 1;
                        report.latencies_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Ok(res) => {
                        let status = res.status();
                        let body = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        report.failed += 1;
                        report
                            .first_error
                            .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                    Err(e) => {
                        report.failed += 1;
                        report.first_error.get_or_insert_with(|| e.to_string());
                        conn = None;
                    }
                }
            }
            report
        }));
    }
    let mut total = SendReport::default();
    for task in tasks {
        let r = task.await.expect("sender task");
        total.acked += r.acked;
        total.failed += r.failed;
        total.latencies_us.extend(r.latencies_us);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}

async fn connect(addr: SocketAddr) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

// ---------------------------------------------------------------------------------------------
// Servers the load runs against

/// A real HTTP server answering 200 to everything: the bare-hyper ceiling, and the delivery sinks.
/// It counts requests and, given send times, records event-sent-to-delivered latency.
pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<AtomicUsize>,
    latencies_us: Arc<Mutex<Vec<u32>>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub async fn start(times: Option<Arc<SendTimes>>) -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        Sink::serve(listener, times)
    }

    /// A sink on a given address: a target that was down comes back where it was.
    pub async fn start_on(addr: SocketAddr, times: Option<Arc<SendTimes>>) -> Result<Sink, String> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot bind {addr}: {e}"))?;
        Ok(Sink::serve(listener, times))
    }

    fn serve(listener: tokio::net::TcpListener, times: Option<Arc<SendTimes>>) -> Sink {
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(AtomicUsize::new(0));
        let latencies_us = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, lat, stopped) = (received.clone(), latencies_us.clone(), stop.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let (count, lat, times) = (count.clone(), lat.clone(), times.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (count, lat, times) = (count.clone(), lat.clone(), times.clone());
                        async move {
                            let seq = req.headers().get("fanout-event-id").and_then(|v| seq_of(v.to_str().ok()?));
                            let _ = req.into_body().collect().await;
                            if let (Some(times), Some(seq)) = (&times, seq) {
                                if let Some(us) = times.since_sent_us(seq) {
                                    lat.lock().unwrap().push(us.min(u32::MAX as u64) as u32);
                                }
                            }
                            count.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink { addr, received, latencies_us, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn count(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// Delivery latencies seen so far, sorted, in microseconds.
    pub fn latencies_us(&self) -> Vec<u32> {
        let mut l = self.latencies_us.lock().unwrap().clone();
        l.sort_unstable();
        l
    }
}

/// A target that is down the way a hung host is: it accepts connections and never answers, so
/// fanout's per-target concurrency fills with waiting attempts and everything else stays queued.
pub struct BlackHole {
    pub addr: SocketAddr,
}

impl BlackHole {
    pub async fn start() -> BlackHole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        BlackHole { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

// ---------------------------------------------------------------------------------------------
// Servers as child processes, so their CPU time and memory are their own

/// A server run as a child process (`fanout serve`, or the bare ceiling server) that prints
/// `listening on ADDR` on stdout once it accepts connections.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    /// From spawn to the `listening on` line: start-up time, including opening the store.
    pub ready_in: Duration,
    /// The admin listener, for `fanout serve` (its second line, `admin on ADDR`).
    pub admin: Option<SocketAddr>,
}

impl Server {
    /// Starts `fanout serve` on `config`, logging at the default level to `log` as an operator
    /// would, and waits for it to listen.
    pub fn fanout(bin: &Path, config: &Path, env: &[(&str, String)], log: &Path) -> Result<Server, String> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--config"]).arg(config).env_remove("RUST_LOG");
        // Benchmarks log at fanout's default level (info) unless FANOUT_BENCH_LOG says otherwise.
        if let Ok(filter) = std::env::var("FANOUT_BENCH_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::launch(cmd, log, true)
    }

    pub fn start(cmd: Command, log: &Path) -> Result<Server, String> {
        Server::launch(cmd, log, false)
    }

    /// Spawns `cmd` and reads its `listening on` line (and, for fanout, its `admin on` line).
    fn launch(mut cmd: Command, log: &Path, admin_line: bool) -> Result<Server, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let started = Instant::now();
        let bin = cmd.get_program().to_owned();
        cmd.stdout(Stdio::piped()).stderr(log_file);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.to_string_lossy()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let Some(addr) = first.strip_prefix("listening on ").and_then(|a| a.trim().parse().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{} did not start (stdout: {first:?}); log:\n{tail}", bin.to_string_lossy()));
        };
        let ready_in = started.elapsed();
        // Keep draining stdout so the child never blocks on a full pipe.
        let admin = if admin_line {
            lines.next().and_then(Result::ok).and_then(|l| l.strip_prefix("admin on ")?.trim().parse().ok())
        } else {
            None
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { pid: child.id(), child, addr, ready_in, admin })
    }

    pub fn stats(&self) -> ProcStats {
        ProcStats::read(self.pid)
    }

    /// SIGTERM and wait: a clean stop that flushes the store.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time and memory of a process, from /proc (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// user + system CPU seconds so far.
    pub cpu_secs: f64,
    pub user_secs: f64,
    pub sys_secs: f64,
    pub rss_bytes: u64,
    /// Peak resident set size so far (VmHWM).
    pub peak_rss_bytes: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> ProcStats {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // USER_HZ is 100 on every Linux ABI.
        let (user_secs, sys_secs) = (ticks(11) as f64 / 100.0, ticks(12) as f64 / 100.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        ProcStats {
            cpu_secs: user_secs + sys_secs,
            user_secs,
            sys_secs,
            rss_bytes: kb("VmRSS:"),
            peak_rss_bytes: kb("VmHWM:"),
        }
    }
}

/// The database the scenarios' `fanout serve` stores in: none (sled, the default), or a
/// Postgres cluster whose server process is `postmaster` (its CPU is measured too). Set by the
/// bench's `main` for a run; each scenario reads it when it writes its config.
pub struct Database {
    pub url: String,
    pub postmaster: u32,
}

static DATABASE: Mutex<Option<(String, u32)>> = Mutex::new(None);

pub fn use_database(db: Option<&Database>) {
    *DATABASE.lock().unwrap() = db.map(|d| (d.url.clone(), d.postmaster));
}

fn database() -> Option<(String, u32)> {
    DATABASE.lock().unwrap().clone()
}

/// CPU time of the database in use (zero on sled): its postmaster, every live child (the
/// backends serving fanout's connections, the WAL writer, the checkpointer), and the children
/// that already exited (the postmaster's `cutime`/`cstime`).
pub fn database_cpu() -> ProcStats {
    let Some((_, postmaster)) = database() else { return ProcStats::default() };
    let mut total = ProcStats::default();
    let mut add = |pid: u32, with_children: bool| {
        let (user, sys) = cpu_ticks(pid, with_children);
        total.user_secs += user;
        total.sys_secs += sys;
    };
    add(postmaster, true);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if parent_of(pid) == Some(postmaster) {
            add(pid, false);
        }
    }
    total.cpu_secs = total.user_secs + total.sys_secs;
    total
}

/// Fields of /proc/PID/stat after the parenthesised command name (which may hold spaces).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().map(str::to_owned).collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).get(1)?.parse().ok()
}

/// (user, system) CPU seconds of `pid`, plus its reaped children's if asked.
fn cpu_ticks(pid: u32, with_children: bool) -> (f64, f64) {
    let fields = stat_fields(pid);
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0) as f64 / 100.0;
    let (mut user, mut sys) = (ticks(11), ticks(12));
    if with_children {
        user += ticks(13);
        sys += ticks(14);
    }
    (user, sys)
}

/// Total size of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A routing.yaml for a bench run: one source, `targets` (name, url env var), optional `any`
/// groups, and one rule sending every event to `to`.
pub fn write_config(dir: &Path, targets: &[(&str, &str)], groups: &[(&str, &[&str])], to: &[&str]) -> PathBuf {
    let mut yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nshutdown_grace: 2s\ndata_dir: {}\nsources:\n  - name: bench\n    path: {SOURCE_PATH}\n    secrets: [\"{SOURCE_SECRET}\"]\n",
        dir.join("data").display()
    );
    if let Some((url, _)) = database() {
        yaml.push_str(&format!("store: {{engine: postgres, url: \"{url}\", pool: 32}}\n"));
    }
    yaml.push_str("retry:\n  initial_delay: 1s\n  max_delay: 10s\ntargets:\n");
    for (name, url_var) in targets {
        yaml.push_str(&format!(
            "  - name: {name}\n    url: ${{{url_var}}}\n    secret: whsec_bench_{name}\n    timeout: 1h\n    concurrency: 32\n"
        ));
    }
    if !groups.is_empty() {
        yaml.push_str("groups:\n");
        for (name, members) in groups {
            yaml.push_str(&format!("  - name: {name}\n    mode: any\n    members: [{}]\n", members.join(", ")));
        }
    }
    yaml.push_str(&format!("routes:\n  - name: everything\n    to: [{}]\n", to.join(", ")));
    // The rule routes every event, so each claims its objects for ownership routing; `off`
    // measures the pipeline without those writes.
    if std::env::var("FANOUT_BENCH_AFFINITY").is_ok_and(|v| v == "off") {
        yaml.push_str("affinity: {enabled: false}\n");
    }
    let path = dir.join("routing.yaml");
    std::fs::write(&path, yaml).expect("write the bench config");
    path
}

/// Polls `check` every 10 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

/// The bare-hyper ceiling as its own process: the bench binary re-runs itself with
/// [`BARE_SERVER_ENV`] set and lands here, so the ceiling server, like fanout, has its own
/// runtime and its own /proc figures.
pub const BARE_SERVER_ENV: &str = "FANOUT_BENCH_BARE_SERVER";

pub fn serve_bare() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let sink = Sink::start(None).await;
        println!("listening on {}", sink.addr);
        std::future::pending::<()>().await;
    });
}
