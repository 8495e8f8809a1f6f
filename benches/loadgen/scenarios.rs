//! The end-to-end scenarios of BENCHMARKS.md: ingest against the bare ceiling, delivery to local
//! sinks, and a million-job backlog. Each takes its sizes as arguments so the smoke test can run
//! it in seconds, and returns figures rather than printing them, so the smoke test can check them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// One concurrency level of the ingest scenario, against one server.
#[derive(Debug)]
pub struct IngestLevel {
    pub senders: usize,
    pub sent: SendReport,
    /// Server CPU (user + system) per acknowledged event, in microseconds.
    pub cpu_us_per_event: f64,
    pub user_us_per_event: f64,
    pub sys_us_per_event: f64,
    /// The database's CPU (user, system) per acknowledged event; zero on sled.
    pub db_us_per_event: (f64, f64),
}

#[derive(Debug)]
pub struct IngestReport {
    pub fanout: Vec<IngestLevel>,
    pub bare: Vec<IngestLevel>,
    pub fanout_peak_rss: u64,
}

/// Signed 3 KB events at each concurrency in `levels` for `per_level`, first to `fanout serve`
/// (durability on), then to `bare_server`, a hyper server that answers 200 to everything. fanout's one
/// target never answers, so its workers sit on full concurrency and the run measures the
/// acknowledgement path alone: verify, route, one transaction, group-commit fsync, 200.
pub async fn ingest(
    bin: &Path,
    bare_server: Option<Command>,
    levels: &[usize],
    per_level: Duration,
    body_bytes: usize,
) -> Result<IngestReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let down = BlackHole::start().await;
    let config = write_config(dir.path(), &[("down", "DOWN_URL")], &[], &["down"]);
    let fanout = Server::fanout(bin, &config, &[("DOWN_URL", down.url())], &log_path(dir.path(), "ingest"))?;
    let mut report = IngestReport { fanout: Vec::new(), bare: Vec::new(), fanout_peak_rss: 0 };
    let mut seq = 0;
    for &senders in levels {
        report.fanout.push(level(&fanout, "ingest", &mut seq, senders, per_level, body_bytes).await);
    }
    report.fanout_peak_rss = fanout.stats().peak_rss_bytes;
    fanout.stop();

    if let Some(cmd) = bare_server {
        let bare = Server::start(cmd, &dir.path().join("bare.log"))?;
        for &senders in levels {
            report.bare.push(level(&bare, "bare", &mut seq, senders, per_level, body_bytes).await);
        }
        bare.stop();
    }
    Ok(report)
}

async fn level(
    server: &Server,
    run: &str,
    seq: &mut u64,
    senders: usize,
    duration: Duration,
    body_bytes: usize,
) -> IngestLevel {
    let (before, db_before) = (server.stats(), database_cpu());
    let load = Load {
        addr: server.addr,
        run: run.to_owned(),
        senders,
        events: u64::MAX / 2,
        duration,
        first_seq: *seq,
        body_bytes,
        times: None,
    };
    let sent = send(load).await;
    *seq += (sent.acked + sent.failed) as u64;
    let (after, db_after) = (server.stats(), database_cpu());
    let per_event = |secs: f64| secs * 1e6 / sent.acked.max(1) as f64;
    IngestLevel {
        senders,
        cpu_us_per_event: per_event(after.cpu_secs - before.cpu_secs),
        user_us_per_event: per_event(after.user_secs - before.user_secs),
        sys_us_per_event: per_event(after.sys_secs - before.sys_secs),
        db_us_per_event: (
            per_event(db_after.user_secs - db_before.user_secs),
            per_event(db_after.sys_secs - db_before.sys_secs),
        ),
        sent,
    }
}

/// Ingest with and without an operator paging through events on the admin API.
#[derive(Debug)]
pub struct AdminPagingReport {
    pub quiet: IngestLevel,
    pub paging: IngestLevel,
    /// Admin pages served while paging, and their latency (sorted, µs).
    pub pages: usize,
    pub page_latencies_us: Vec<u32>,
}

/// Ingest at `senders` for `per_phase` twice against one `fanout serve`: alone, then while an
/// operator pages through every event (`GET /events?limit=500`, following cursors, alternating
/// with a `state=pending` filter that also reads each event's history), a page every `pace` at
/// most (zero: as fast as the API answers). The first phase fills the store the second one pages
/// through.
pub async fn admin_paging(
    bin: &Path,
    senders: usize,
    per_phase: Duration,
    pace: Duration,
    body_bytes: usize,
) -> Result<AdminPagingReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let down = BlackHole::start().await;
    let config = write_config(dir.path(), &[("down", "DOWN_URL")], &[], &["down"]);
    let fanout = Server::fanout(bin, &config, &[("DOWN_URL", down.url())], &log_path(dir.path(), "admin"))?;
    let admin = fanout.admin.ok_or("fanout did not print its admin address")?;
    let mut seq = 0;
    let quiet = level(&fanout, "admin", &mut seq, senders, per_phase, body_bytes).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pager = tokio::spawn(page_events(admin, pace, stop.clone()));
    let paging = level(&fanout, "admin", &mut seq, senders, per_phase, body_bytes).await;
    stop.store(true, Ordering::Relaxed);
    let mut page_latencies_us = pager.await.map_err(|e| e.to_string())??;
    fanout.stop();
    page_latencies_us.sort_unstable();
    Ok(AdminPagingReport { quiet, paging, pages: page_latencies_us.len(), page_latencies_us })
}

/// Pages through `/events` until `stop`, one request at a time, at most one per `pace`; returns
/// each page's latency.
async fn page_events(
    admin: std::net::SocketAddr,
    pace: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<u32>, String> {
    let mut conn = connect(admin).await.map_err(|e| e.to_string())?;
    let (mut latencies, mut cursor, mut filtered) = (Vec::new(), None::<String>, false);
    while !stop.load(Ordering::Relaxed) {
        let mut path = format!("/events?limit=500{}", if filtered { "&state=pending" } else { "" });
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let req = Request::get(format!("http://{admin}{path}"))
            .header("host", admin.to_string())
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let started = Instant::now();
        let res = conn.send_request(req).await.map_err(|e| format!("admin API: {e}"))?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if status != StatusCode::OK {
            return Err(format!("admin API answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        let page: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            filtered = !filtered;
        }
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
    Ok(latencies)
}

/// Ingest alone, while an operator's console refreshes, and alone again (the two quiet phases
/// say how much is noise).
#[derive(Debug)]
pub struct ConsoleReport {
    /// Each phase in order, and whether the console was refreshing during it: alone and with
    /// the console in turn, starting and ending alone, so each console phase has an alone
    /// phase either side to be compared with (the store grows, and ingest slows, as it runs).
    pub phases: Vec<(bool, IngestLevel)>,
    /// Console pages served, and their latency (sorted, µs).
    pub page_latencies_us: Vec<u32>,
}

/// Ingest at `senders` for `per_phase` five times against one `fanout serve`, alone and while a
/// signed-in console loads its pages (overview, its live part, the events list, a filter that
/// matches nothing, the live tail), one every `pace`, in turn: alone, console, alone, console,
/// alone.
pub async fn console_refresh(
    bin: &Path,
    senders: usize,
    per_phase: Duration,
    pace: Duration,
    body_bytes: usize,
) -> Result<ConsoleReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let down = BlackHole::start().await;
    let config = write_config(dir.path(), &[("down", "DOWN_URL")], &[], &["down"]);
    let fanout = Server::fanout(bin, &config, &[("DOWN_URL", down.url())], &log_path(dir.path(), "console"))?;
    let admin = fanout.admin.ok_or("fanout did not print its admin address")?;
    let mut seq = 0;
    let mut phases = Vec::new();
    let mut page_latencies_us = Vec::new();
    for with_console in [false, true, false, true, false] {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let viewer = with_console.then(|| tokio::spawn(view_console(admin, pace, stop.clone())));
        let phase = level(&fanout, "console", &mut seq, senders, per_phase, body_bytes).await;
        stop.store(true, Ordering::Relaxed);
        if let Some(viewer) = viewer {
            page_latencies_us.extend(viewer.await.map_err(|e| e.to_string())??);
        }
        phases.push((with_console, phase));
    }
    fanout.stop();
    page_latencies_us.sort_unstable();
    Ok(ConsoleReport { phases, page_latencies_us })
}

/// Signs in to the console (the bench's admin listener has no token) and loads its pages in
/// turn until `stop`, one at a time, at most one per `pace`; returns each page's latency.
async fn view_console(
    admin: std::net::SocketAddr,
    pace: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<u32>, String> {
    let mut conn = connect(admin).await.map_err(|e| e.to_string())?;
    let login = Request::post(format!("http://{admin}/ui/login"))
        .header("host", admin.to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"token=")))
        .expect("valid request");
    let res = conn.send_request(login).await.map_err(|e| format!("console sign-in: {e}"))?;
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| format!("console sign-in answered {} without a session", res.status()))?
        .to_owned();
    let _ = res.into_body().collect().await;
    // The overview and its live part; the events page, a filter that matches nothing (the
    // worst case: a whole bounded walk, as a developer's view of a quiet inbox), and the live
    // tail's look at the last seconds.
    let pages = ["/ui/", "/ui/live/overview", "/ui/events", "/ui/events?state=dead", "/ui/live/events?after="];
    let mut latencies = Vec::new();
    for page in pages.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let path = match page.strip_suffix("after=") {
            Some(tail) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                format!("{tail}after={}", now.as_millis().saturating_sub(5_000))
            }
            None => page.to_string(),
        };
        let req = Request::get(format!("http://{admin}{path}"))
            .header("host", admin.to_string())
            .header("cookie", &cookie)
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let started = Instant::now();
        let res = conn.send_request(req).await.map_err(|e| format!("console: {e}"))?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if status != StatusCode::OK {
            return Err(format!("console {path} answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
    Ok(latencies)
}

#[derive(Debug)]
pub struct DeliveryReport {
    pub events: usize,
    pub acked: usize,
    pub deliveries: usize,
    /// From the first event sent to every destination having it.
    pub elapsed: Duration,
    /// Event-sent-to-delivered latency of every delivery, sorted, microseconds.
    pub latencies_us: Vec<u32>,
    pub cpu_us_per_event: f64,
    /// User and system CPU per event, in microseconds.
    pub user_sys_us_per_event: (f64, f64),
    /// The database's CPU (user, system) per event; zero on sled.
    pub db_us_per_event: (f64, f64),
    pub peak_rss: u64,
    pub ingest: SendReport,
}

impl DeliveryReport {
    pub fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }
}

/// `events` events, each to three destinations — targets `a` and `b`, and an `any` group of
/// `g1` and `g2` — all local sinks answering 200, sent by `senders` concurrent senders.
pub async fn delivery(bin: &Path, events: usize, senders: usize, body_bytes: usize) -> Result<DeliveryReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let times = SendTimes::new(events);
    let mut sinks = Vec::new();
    for _ in 0..4 {
        sinks.push(Sink::start(Some(times.clone())).await);
    }
    let names = [("a", "A_URL"), ("b", "B_URL"), ("g1", "G1_URL"), ("g2", "G2_URL")];
    let config = write_config(dir.path(), &names, &[("g", &["g1", "g2"])], &["a", "b", "g"]);
    let env: Vec<(&str, String)> = names.iter().zip(&sinks).map(|((_, var), s)| (*var, s.url())).collect();
    let fanout = Server::fanout(bin, &config, &env, &log_path(dir.path(), "delivery"))?;
    let (before, db_before) = (fanout.stats(), database_cpu());
    let started = Instant::now();
    let load = Load {
        addr: fanout.addr,
        run: "delivery".into(),
        senders,
        events: events as u64,
        duration: Duration::from_secs(600),
        first_seq: 0,
        body_bytes,
        times: Some(times.clone()),
    };
    let ingest = send(load).await;
    let all_there = || {
        sinks[0].count() >= ingest.acked
            && sinks[1].count() >= ingest.acked
            && sinks[2].count() + sinks[3].count() >= ingest.acked
    };
    if !wait_until(Duration::from_secs(600), all_there) {
        return Err(format!(
            "not everything was delivered: sinks saw {:?}",
            sinks.iter().map(Sink::count).collect::<Vec<_>>()
        ));
    }
    let elapsed = started.elapsed();
    let (stats, db) = (fanout.stats(), database_cpu());
    fanout.stop();
    let mut latencies_us: Vec<u32> = sinks.iter().flat_map(Sink::latencies_us).collect();
    latencies_us.sort_unstable();
    Ok(DeliveryReport {
        events,
        acked: ingest.acked,
        deliveries: sinks.iter().map(Sink::count).sum(),
        elapsed,
        latencies_us,
        cpu_us_per_event: (stats.cpu_secs - before.cpu_secs) * 1e6 / ingest.acked.max(1) as f64,
        user_sys_us_per_event: (
            (stats.user_secs - before.user_secs) * 1e6 / ingest.acked.max(1) as f64,
            (stats.sys_secs - before.sys_secs) * 1e6 / ingest.acked.max(1) as f64,
        ),
        db_us_per_event: (
            (db.user_secs - db_before.user_secs) * 1e6 / ingest.acked.max(1) as f64,
            (db.sys_secs - db_before.sys_secs) * 1e6 / ingest.acked.max(1) as f64,
        ),
        peak_rss: stats.peak_rss_bytes,
        ingest,
    })
}

#[derive(Debug)]
pub struct BacklogReport {
    pub jobs: usize,
    pub queueing: SendReport,
    /// RSS sampled as the backlog grew: (jobs acknowledged so far, RSS bytes).
    pub rss_samples: Vec<(usize, u64)>,
    pub peak_rss_queueing: u64,
    pub store_bytes: u64,
    pub restart_ready_in: Duration,
    pub first_delivery_in: Duration,
    pub drain_elapsed: Duration,
    pub peak_rss_draining: u64,
    pub cpu_us_per_event_queueing: f64,
    /// User and system CPU per queued event, in microseconds.
    pub user_sys_us_queueing: (f64, f64),
    pub cpu_us_per_delivery_draining: f64,
    pub user_sys_us_draining: (f64, f64),
}

impl BacklogReport {
    pub fn drain_per_sec(&self) -> f64 {
        self.jobs as f64 / self.drain_elapsed.as_secs_f64()
    }
}

/// `jobs` events queue for a target that never answers; then fanout restarts with the target
/// back, and drains the backlog into a sink.
pub async fn backlog(bin: &Path, jobs: usize, senders: usize, body_bytes: usize) -> Result<BacklogReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let down = BlackHole::start().await;
    let config = write_config(dir.path(), &[("t", "T_URL")], &[], &["t"]);
    let log = log_path(dir.path(), "backlog");
    let fanout = Server::fanout(bin, &config, &[("T_URL", down.url())], &log)?;

    // Send in slices so RSS can be sampled as the backlog grows.
    let slices = 10;
    let mut queueing = SendReport::default();
    let mut rss_samples = Vec::new();
    let before = fanout.stats();
    for i in 0..slices {
        let first = (jobs * i / slices) as u64;
        let end = (jobs * (i + 1) / slices) as u64;
        let load = Load {
            addr: fanout.addr,
            run: "backlog".into(),
            senders,
            events: end - first,
            duration: Duration::from_secs(3600),
            first_seq: first,
            body_bytes,
            times: None,
        };
        let part = send(load).await;
        queueing.acked += part.acked;
        queueing.failed += part.failed;
        queueing.elapsed += part.elapsed;
        queueing.latencies_us.extend(part.latencies_us);
        queueing.first_error = queueing.first_error.or(part.first_error);
        rss_samples.push((queueing.acked, fanout.stats().rss_bytes));
    }
    queueing.latencies_us.sort_unstable();
    let stats = fanout.stats();
    let cpu_us_per_event_queueing = (stats.cpu_secs - before.cpu_secs) * 1e6 / queueing.acked.max(1) as f64;
    let user_sys_us_queueing = (
        (stats.user_secs - before.user_secs) * 1e6 / queueing.acked.max(1) as f64,
        (stats.sys_secs - before.sys_secs) * 1e6 / queueing.acked.max(1) as f64,
    );
    fanout.stop();
    let store_bytes = dir_bytes(&dir.path().join("data"));

    let sink = Sink::start(None).await;
    let fanout = Server::fanout(bin, &config, &[("T_URL", sink.url())], &log)?;
    let restart_ready_in = fanout.ready_in;
    let back = Instant::now();
    if !wait_until(Duration::from_secs(60), || sink.count() > 0) {
        return Err("no delivery within 60 s of the restart".into());
    }
    let first_delivery_in = back.elapsed();
    // Every job queued before the stop, less the few that were in flight and may be delivered twice.
    let drained = wait_until(Duration::from_secs(3600), || sink.count() >= queueing.acked);
    let drain_elapsed = back.elapsed();
    let drain_stats = fanout.stats();
    fanout.stop();
    if !drained {
        return Err(format!("drained only {} of {} jobs", sink.count(), queueing.acked));
    }
    Ok(BacklogReport {
        jobs: queueing.acked,
        peak_rss_queueing: stats.peak_rss_bytes,
        queueing,
        rss_samples,
        store_bytes,
        restart_ready_in,
        first_delivery_in,
        drain_elapsed,
        peak_rss_draining: drain_stats.peak_rss_bytes,
        cpu_us_per_event_queueing,
        user_sys_us_queueing,
        cpu_us_per_delivery_draining: drain_stats.cpu_secs * 1e6 / sink.count().max(1) as f64,
        user_sys_us_draining: (
            drain_stats.user_secs * 1e6 / sink.count().max(1) as f64,
            drain_stats.sys_secs * 1e6 / sink.count().max(1) as f64,
        ),
    })
}

/// fanout's log for a scenario: kept in FANOUT_BENCH_LOG_DIR if set (to read after the run),
/// else in the scenario's temporary directory.
fn log_path(tmp: &Path, scenario: &str) -> PathBuf {
    match std::env::var_os("FANOUT_BENCH_LOG_DIR") {
        Some(dir) => Path::new(&dir).join(format!("{scenario}.log")),
        None => tmp.join("fanout.log"),
    }
}

/// One replica, then two on the same database, each with the same total of senders (split
/// evenly between the two). Needs a database (`use_database`): replicas share nothing else.
#[derive(Debug)]
pub struct ReplicasReport {
    pub one: IngestLevel,
    /// Both replicas together: acknowledged per second, the two replicas' CPU summed.
    pub two: IngestLevel,
}

pub async fn replicas(
    bin: &Path,
    senders: usize,
    per_level: Duration,
    body_bytes: usize,
) -> Result<ReplicasReport, String> {
    if database().is_none() {
        return Err("the replicas scenario needs FANOUT_BENCH_STORE=postgres".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let down = BlackHole::start().await;
    let config = write_config(dir.path(), &[("down", "DOWN_URL")], &[], &["down"]);
    let env = [("DOWN_URL", down.url())];
    let a = Server::fanout(bin, &config, &env, &log_path(dir.path(), "replica-a"))?;
    let mut seq = 0;
    let one = level(&a, "one", &mut seq, senders, per_level, body_bytes).await;
    let b = Server::fanout(bin, &config, &env, &log_path(dir.path(), "replica-b"))?;
    let (before, db_before) = ((a.stats(), b.stats()), database_cpu());
    let half = |server: &Server, run: &str, first_seq: u64| Load {
        addr: server.addr,
        run: run.to_owned(),
        senders: senders / 2,
        events: u64::MAX / 4,
        duration: per_level,
        first_seq,
        body_bytes,
        times: None,
    };
    let (on_a, on_b) = tokio::join!(send(half(&a, "two-a", seq)), send(half(&b, "two-b", seq + (1 << 40))));
    let (after, db_after) = ((a.stats(), b.stats()), database_cpu());
    a.stop();
    b.stop();
    let acked = on_a.acked + on_b.acked;
    let per_event = |secs: f64| secs * 1e6 / acked.max(1) as f64;
    let user = (after.0.user_secs - before.0.user_secs) + (after.1.user_secs - before.1.user_secs);
    let sys = (after.0.sys_secs - before.0.sys_secs) + (after.1.sys_secs - before.1.sys_secs);
    let mut latencies_us: Vec<u32> = on_a.latencies_us.iter().chain(&on_b.latencies_us).copied().collect();
    latencies_us.sort_unstable();
    let sent = SendReport {
        acked,
        failed: on_a.failed + on_b.failed,
        elapsed: on_a.elapsed.max(on_b.elapsed),
        latencies_us,
        first_error: on_a.first_error.or(on_b.first_error),
    };
    let two = IngestLevel {
        senders,
        cpu_us_per_event: per_event(user + sys),
        user_us_per_event: per_event(user),
        sys_us_per_event: per_event(sys),
        db_us_per_event: (
            per_event(db_after.user_secs - db_before.user_secs),
            per_event(db_after.sys_secs - db_before.sys_secs),
        ),
        sent,
    };
    Ok(ReplicasReport { one, two })
}

/// A target that refuses connections, with a backlog queued for it: what fanout spends while
/// it is down, with its circuit breaker off (every due job a doomed attempt: before issue 15)
/// and on; and with the breaker on, how the backlog drains under `rate` once the target is back.
#[derive(Debug)]
pub struct DownReport {
    pub breaker: bool,
    pub jobs: usize,
    pub held: Duration,
    /// fanout's CPU over `held`, in percent of one core, and its user and system seconds.
    pub cpu_percent: f64,
    pub user_sys_secs: (f64, f64),
    /// Failed attempts over `held` (from `/metrics`).
    pub attempts: u64,
    pub drain: Option<DrainReport>,
}

/// The target back, its backlog draining under a `rate`.
#[derive(Debug)]
pub struct DrainReport {
    pub rate: u32,
    /// From the target accepting connections to its first delivery (the next probe).
    pub recovered_in: Duration,
    pub window: Duration,
    pub delivered: usize,
    /// Deliveries in the slowest and fastest whole second of the window.
    pub slowest_second: usize,
    pub fastest_second: usize,
    /// fanout's CPU over the window, in percent of one core.
    pub cpu_percent: f64,
}

/// Queues `jobs` for a target whose port is closed (retry `max_delay` 1 h, fanout's default),
/// then measures fanout for `held`. With `breaker`, the target then listens again and the
/// drain under `rate` per second is measured for `window` (the breaker's probes capped at 10 s
/// so the bench does not wait the default 5 minutes for the next one).
pub async fn down(
    bin: &Path,
    jobs: usize,
    senders: usize,
    held: Duration,
    breaker: bool,
    rate: u32,
    window: Duration,
) -> Result<DownReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?;
    let config = write_config(dir.path(), &[("t", "T_URL")], &[], &["t"]);
    let yaml = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
    let yaml = yaml.replace("max_delay: 10s", "max_delay: 1h");
    let yaml = if breaker {
        yaml.replace("    concurrency: 32\n", &format!("    concurrency: 32\n    rate: {rate}/s\n"))
            + "breaker: {max_probe_interval: 10s}\n"
    } else {
        yaml + "breaker: {enabled: false}\n"
    };
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let url = format!("http://{closed}/hook");
    let fanout = Server::fanout(bin, &config, &[("T_URL", url)], &log_path(dir.path(), "down"))?;
    let admin = fanout.admin.ok_or("fanout did not print its admin address")?;
    let load = Load {
        addr: fanout.addr,
        run: "down".into(),
        senders,
        events: jobs as u64,
        duration: Duration::from_secs(3600),
        first_seq: 0,
        body_bytes: 1000,
        times: None,
    };
    let queued = send(load).await;
    let (before, attempts_before) = (fanout.stats(), failed_attempts(admin).await?);
    tokio::time::sleep(held).await;
    let (after, attempts_after) = (fanout.stats(), failed_attempts(admin).await?);
    let drain = if breaker { Some(drain(&fanout, closed, rate, window).await?) } else { None };
    fanout.stop();
    Ok(DownReport {
        breaker,
        jobs: queued.acked,
        held,
        cpu_percent: (after.cpu_secs - before.cpu_secs) * 100.0 / held.as_secs_f64(),
        user_sys_secs: (after.user_secs - before.user_secs, after.sys_secs - before.sys_secs),
        attempts: attempts_after.saturating_sub(attempts_before),
        drain,
    })
}

/// The target listens again on its old port: how soon deliveries resume, and at what rate.
async fn drain(
    fanout: &Server,
    addr: std::net::SocketAddr,
    rate: u32,
    window: Duration,
) -> Result<DrainReport, String> {
    let sink = Sink::start_on(addr, None).await?;
    let back = Instant::now();
    if !wait_until(Duration::from_secs(60), || sink.count() > 0) {
        return Err("no delivery within 60 s of the target coming back".into());
    }
    let recovered_in = back.elapsed();
    // Whole seconds from the first delivery, so the first token burst is inside one of them.
    let (start, cpu_start) = (sink.count(), fanout.stats());
    let mut per_second = Vec::new();
    let mut last = start;
    for _ in 0..window.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sink.count();
        per_second.push(now - last);
        last = now;
    }
    let cpu = fanout.stats();
    Ok(DrainReport {
        rate,
        recovered_in,
        window,
        delivered: last - start,
        slowest_second: per_second.iter().copied().min().unwrap_or(0),
        fastest_second: per_second.iter().copied().max().unwrap_or(0),
        cpu_percent: (cpu.cpu_secs - cpu_start.cpu_secs) * 100.0 / window.as_secs_f64(),
    })
}

/// `fanout_deliveries_total{outcome="failed",target="t"}` from the admin API's `/metrics`.
async fn failed_attempts(admin: std::net::SocketAddr) -> Result<u64, String> {
    let mut conn = connect(admin).await.map_err(|e| e.to_string())?;
    let req = Request::get(format!("http://{admin}/metrics"))
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let res = conn.send_request(req).await.map_err(|e| format!("admin API: {e}"))?;
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("fanout_deliveries_total{") && l.contains("outcome=\"failed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}
