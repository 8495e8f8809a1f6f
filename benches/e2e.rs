//! End-to-end benchmarks over loopback against the real `fanout` binary (see BENCHMARKS.md).
//!
//!     cargo bench -p fanout --bench e2e                      # ingest, delivery, backlog
//!     cargo bench -p fanout --bench e2e -- ingest delivery   # some of them
//!
//!     cargo bench -p fanout --bench e2e -- admin             # ingest while an operator pages events
//!                                                            # (FANOUT_BENCH_PAGE_EVERY_MS, default 100)
//!
//!     cargo bench -p fanout --bench e2e -- console           # ingest while a console refreshes
//!                                                            # (FANOUT_BENCH_PAGE_EVERY_MS, default 100)
//!
//!     FANOUT_BENCH_STORE=postgres cargo bench -p fanout --bench e2e -- ingest delivery replicas
//!                                   # each scenario on sled, then on a throwaway Postgres on this
//!                                   # machine (its CPU measured too); `replicas`: one vs two
//!                                   # replicas on one database
//!
//! Sizes can be changed with FANOUT_BENCH_SECS (per ingest level), FANOUT_BENCH_LEVELS (ingest
//! concurrency levels, e.g. `1,64`), FANOUT_BENCH_EVENTS (delivery) and FANOUT_BENCH_BACKLOG
//! (backlog jobs). FANOUT_BENCH_BIN runs another build of fanout (an A/B within one run).

#[path = "loadgen/mod.rs"]
mod loadgen;

use std::path::Path;
use std::time::Duration;

use loadgen::{mb, percentile_ms};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::var_os(loadgen::BARE_SERVER_ENV).is_some() {
        loadgen::serve_bare();
        return;
    }
    // cargo passes `--bench`; anything else not starting with `--` names a scenario.
    let mut chosen: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if chosen.is_empty() {
        chosen = vec!["ingest".into(), "delivery".into(), "backlog".into()];
    }
    let other = std::env::var_os("FANOUT_BENCH_BIN").map(std::path::PathBuf::from);
    let bin = other.as_deref().unwrap_or(Path::new(env!("CARGO_BIN_EXE_fanout")));
    let me = std::env::current_exe().expect("the bench's own path");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    println!(
        "machine: {} cores; fanout binary: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display()
    );
    let engines: &[&str] = match std::env::var("FANOUT_BENCH_STORE").as_deref() {
        Err(_) | Ok("sled") => &["sled"],
        Ok("postgres") => &["sled", "postgres"],
        Ok(other) => {
            eprintln!("FANOUT_BENCH_STORE={other:?}: use sled (the default) or postgres (runs both)");
            std::process::exit(1);
        }
    };
    for name in chosen {
        for engine in engines.iter().filter(|e| name != "replicas" || **e == "postgres") {
            // A fresh cluster per scenario, so one's leftovers do not weigh on the next; or the
            // one FANOUT_BENCH_PG_URL names (its server's pid in FANOUT_BENCH_PG_PID), to look
            // inside it with pg_stat_statements.
            if let (true, Ok(url), Ok(pid)) =
                (*engine == "postgres", std::env::var("FANOUT_BENCH_PG_URL"), std::env::var("FANOUT_BENCH_PG_PID"))
            {
                let postmaster = pid.parse().expect("FANOUT_BENCH_PG_PID is a pid");
                loadgen::use_database(Some(&loadgen::Database { url, postmaster }));
                println!("\n# {name} on {engine} (FANOUT_BENCH_PG_URL)");
                run(&rt, &name, bin, &me);
                continue;
            }
            let pg = (*engine == "postgres").then(|| {
                fanout_store::testing::TestPostgres::start().unwrap_or_else(|| {
                    eprintln!("FANOUT_BENCH_STORE=postgres needs Postgres installed (apt-get install postgresql)");
                    std::process::exit(1);
                })
            });
            let db = pg.as_ref().map(|p| loadgen::Database { url: p.url(), postmaster: p.postmaster_pid() });
            loadgen::use_database(db.as_ref());
            println!("\n# {name} on {engine}");
            run(&rt, &name, bin, &me);
        }
    }
}

/// Runs one scenario and prints its table; exits on failure.
fn run(rt: &tokio::runtime::Runtime, name: &str, bin: &Path, me: &Path) {
    let outcome = rt.block_on(async {
        match name {
            "ingest" => {
                let secs = env_or("FANOUT_BENCH_SECS", 5);
                let mut bare = std::process::Command::new(me);
                bare.env(loadgen::BARE_SERVER_ENV, "1");
                let levels: Vec<usize> = std::env::var("FANOUT_BENCH_LEVELS")
                    .ok()
                    .and_then(|v| v.split(',').map(|l| l.trim().parse().ok()).collect())
                    .unwrap_or_else(|| vec![1, 4, 16, 64, 256]);
                let r = loadgen::ingest(bin, Some(bare), &levels, Duration::from_secs(secs), 3000).await?;
                print_ingest(&r);
                Ok(())
            }
            "delivery" => {
                let events = env_or("FANOUT_BENCH_EVENTS", 100_000) as usize;
                let r = loadgen::delivery(bin, events, 64, 3000).await?;
                print_delivery(&r);
                Ok(())
            }
            "admin" => {
                let secs = env_or("FANOUT_BENCH_SECS", 10);
                let pace = Duration::from_millis(env_or("FANOUT_BENCH_PAGE_EVERY_MS", 100));
                let r = loadgen::admin_paging(bin, 64, Duration::from_secs(secs), pace, 3000).await?;
                print_admin(&r, pace);
                Ok(())
            }
            "console" => {
                let secs = env_or("FANOUT_BENCH_SECS", 10);
                let pace = Duration::from_millis(env_or("FANOUT_BENCH_PAGE_EVERY_MS", 100));
                let r = loadgen::console_refresh(bin, 64, Duration::from_secs(secs), pace, 3000).await?;
                print_console(&r, pace);
                Ok(())
            }
            "backlog" => {
                let jobs = env_or("FANOUT_BENCH_BACKLOG", 1_000_000) as usize;
                let r = loadgen::backlog(bin, jobs, 64, 1000).await?;
                print_backlog(&r);
                Ok(())
            }
            "down" => {
                let jobs = env_or("FANOUT_BENCH_BACKLOG", 1_000_000) as usize;
                let held = Duration::from_secs(env_or("FANOUT_BENCH_SECS", 60));
                let rate = env_or("FANOUT_BENCH_RATE", 1000) as u32;
                let window = Duration::from_secs(env_or("FANOUT_BENCH_DRAIN_SECS", 30));
                let modes: &[bool] = match std::env::var("FANOUT_BENCH_BREAKER").as_deref() {
                    Ok("off") => &[false],
                    Ok("on") => &[true],
                    _ => &[false, true],
                };
                let mut reports = Vec::new();
                for &breaker in modes {
                    reports.push(loadgen::down(bin, jobs, 64, held, breaker, rate, window).await?);
                }
                print_down(&reports);
                Ok(())
            }
            "replicas" => {
                let secs = env_or("FANOUT_BENCH_SECS", 5);
                let senders = env_or("FANOUT_BENCH_SENDERS", 64) as usize;
                let r = loadgen::replicas(bin, senders, Duration::from_secs(secs), 3000).await?;
                print_replicas(&r);
                Ok(())
            }
            other => Err(format!(
                "unknown scenario {other:?}: use ingest, delivery, backlog, admin, console, down or replicas"
            )),
        }
    });
    if let Err(e) = outcome {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// The database's CPU per event, or a dash on sled (nothing to measure).
fn db_cpu((user, sys): (f64, f64)) -> String {
    if user + sys == 0.0 {
        "–".into()
    } else {
        format!("{:.1} ({user:.1} + {sys:.1})", user + sys)
    }
}

fn print_replicas(r: &loadgen::ReplicasReport) {
    println!(
        "\n## replicas: signed 3 KB events, {} senders in all, to one replica, then split over two\n",
        r.one.senders
    );
    println!("| replicas | ev/s | p50 ms | p99 ms | fanout CPU µs/ev (user + sys) | Postgres CPU µs/ev (user + sys) | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (n, l) in [(1, &r.one), (2, &r.two)] {
        println!(
            "| {n} | {:.0} | {:.2} | {:.2} | {:.1} ({:.1} + {:.1}) | {} | {} |",
            l.sent.per_sec(),
            l.sent.percentile_ms(0.50),
            l.sent.percentile_ms(0.99),
            l.cpu_us_per_event,
            l.user_us_per_event,
            l.sys_us_per_event,
            db_cpu(l.db_us_per_event),
            l.sent.failed,
        );
    }
}

fn print_ingest(r: &loadgen::IngestReport) {
    println!("\n## ingest: signed 3 KB events, durability on (fsync before 200)\n");
    println!("| senders | fanout ev/s | p50 ms | p99 ms | p99.9 ms | CPU µs/ev (user + sys) | Postgres CPU µs/ev (user + sys) | bare ev/s | bare p99 ms | bare CPU µs/req | fanout/bare | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (f, b) in r.fanout.iter().zip(&r.bare) {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} ({:.1} + {:.1}) | {} | {:.0} | {:.2} | {:.1} | {:.0}% | {} |",
            f.senders,
            f.sent.per_sec(),
            f.sent.percentile_ms(0.50),
            f.sent.percentile_ms(0.99),
            f.sent.percentile_ms(0.999),
            f.cpu_us_per_event,
            f.user_us_per_event,
            f.sys_us_per_event,
            db_cpu(f.db_us_per_event),
            b.sent.per_sec(),
            b.sent.percentile_ms(0.99),
            b.cpu_us_per_event,
            100.0 * f.sent.per_sec() / b.sent.per_sec(),
            f.sent.failed + b.sent.failed,
        );
        if let Some(e) = f.sent.first_error.as_ref().or(b.sent.first_error.as_ref()) {
            println!("  first error: {e}");
        }
    }
    println!("\nfanout peak RSS: {:.1} MB", mb(r.fanout_peak_rss));
}

fn print_down(reports: &[loadgen::DownReport]) {
    let Some(first) = reports.first() else { return };
    println!(
        "\n## down: {} jobs queued for a target that refuses connections (max_delay 1h), held {:?}\n",
        first.jobs, first.held
    );
    println!("| circuit breaker | fanout CPU, % of one core | user + sys s | failed attempts | attempts/s |");
    println!("|---|---:|---:|---:|---:|");
    for r in reports {
        println!(
            "| {} | {:.2} | {:.2} + {:.2} | {} | {:.1} |",
            if r.breaker { "on (default)" } else { "off (as before issue 15)" },
            r.cpu_percent,
            r.user_sys_secs.0,
            r.user_sys_secs.1,
            r.attempts,
            r.attempts as f64 / r.held.as_secs_f64()
        );
    }
    for d in reports.iter().filter_map(|r| r.drain.as_ref()) {
        let measured = d.delivered as f64 / d.window.as_secs_f64();
        println!("\n### the target back: the backlog drains under `rate: {}/s`\n", d.rate);
        println!("| first delivery after | window | delivered | per s | of the rate | slowest s | fastest s | fanout CPU % |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {:.1} s | {} s | {} | {:.1} | {:+.2}% | {} | {} | {:.1} |",
            d.recovered_in.as_secs_f64(),
            d.window.as_secs(),
            d.delivered,
            measured,
            (measured / f64::from(d.rate) - 1.0) * 100.0,
            d.slowest_second,
            d.fastest_second,
            d.cpu_percent
        );
    }
}

fn print_delivery(r: &loadgen::DeliveryReport) {
    println!("\n## delivery: {} events x 3 destinations (a, b, any-group g1|g2), sinks answer 200\n", r.events);
    println!("| acked | deliveries | seconds | deliveries/s | sent→delivered p50 ms | p99 ms | ack p99 ms | CPU µs/event (user + sys) | Postgres CPU µs/event (user + sys) | peak RSS MB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} ({:.1} + {:.1}) | {} | {:.1} |",
        r.acked,
        r.deliveries,
        r.elapsed.as_secs_f64(),
        r.deliveries_per_sec(),
        percentile_ms(&r.latencies_us, 0.50),
        percentile_ms(&r.latencies_us, 0.99),
        r.ingest.percentile_ms(0.99),
        r.cpu_us_per_event,
        r.user_sys_us_per_event.0,
        r.user_sys_us_per_event.1,
        db_cpu(r.db_us_per_event),
        mb(r.peak_rss),
    );
}

fn print_backlog(r: &loadgen::BacklogReport) {
    println!("\n## backlog: {} jobs queued for a target that never answers, then drained\n", r.jobs);
    println!(
        "queueing: {:.0} ev/s, ack p99 {:.2} ms, {:.1} CPU µs/event ({:.1} user + {:.1} sys), peak RSS {:.1} MB, store on disk {:.0} MB",
        r.queueing.per_sec(),
        r.queueing.percentile_ms(0.99),
        r.cpu_us_per_event_queueing,
        r.user_sys_us_queueing.0,
        r.user_sys_us_queueing.1,
        mb(r.peak_rss_queueing),
        mb(r.store_bytes)
    );
    let samples: Vec<String> = r.rss_samples.iter().map(|(n, rss)| format!("{n}: {:.0} MB", mb(*rss))).collect();
    println!("RSS as the backlog grew: {}", samples.join(", "));
    println!(
        "restart: listening in {:.2} s, first delivery {:.2} s after; drained in {:.1} s = {:.0} deliveries/s, {:.1} CPU µs/delivery ({:.1} user + {:.1} sys), peak RSS {:.1} MB",
        r.restart_ready_in.as_secs_f64(),
        r.first_delivery_in.as_secs_f64(),
        r.drain_elapsed.as_secs_f64(),
        r.drain_per_sec(),
        r.cpu_us_per_delivery_draining,
        r.user_sys_us_draining.0,
        r.user_sys_us_draining.1,
        mb(r.peak_rss_draining)
    );
}

fn print_console(r: &loadgen::ConsoleReport, pace: Duration) {
    println!(
        "\n## console: ingest at 64 senders, alone and while a signed-in console loads a page every {} ms, in turn\n",
        pace.as_millis()
    );
    println!("| phase | ev/s | p50 ms | p99 ms | p99.9 ms | CPU µs/ev (user + sys) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (with_console, l) in &r.phases {
        let name = if *with_console { "console refreshing" } else { "alone" };
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} ({:.1} + {:.1}) |",
            l.sent.per_sec(),
            l.sent.percentile_ms(0.50),
            l.sent.percentile_ms(0.99),
            l.sent.percentile_ms(0.999),
            l.cpu_us_per_event,
            l.user_us_per_event,
            l.sys_us_per_event
        );
    }
    // Each console phase against the mean of the alone phases either side of it, so the
    // store's growth over the run (which slows ingest) is not read as the console's cost.
    let p99 = |l: &loadgen::IngestLevel| l.sent.percentile_ms(0.99);
    let moved: Vec<String> = r
        .phases
        .windows(3)
        .filter(|w| w[1].0 && !w[0].0 && !w[2].0)
        .map(|w| {
            let alone = (p99(&w[0].1) + p99(&w[2].1)) / 2.0;
            format!("{:+.0}% ({:.2} ms against {:.2})", (p99(&w[1].1) / alone - 1.0) * 100.0, p99(&w[1].1), alone)
        })
        .collect();
    println!("\ningest p99 while the console refreshes, against the alone phases either side: {}", moved.join(", "));
    println!(
        "console pages served: {} (overview, its live part, events, a filter matching nothing, the live tail, in turn), latency p50 {:.1} ms, p99 {:.1} ms",
        r.page_latencies_us.len(),
        percentile_ms(&r.page_latencies_us, 0.50),
        percentile_ms(&r.page_latencies_us, 0.99)
    );
}

fn print_admin(r: &loadgen::AdminPagingReport, pace: Duration) {
    println!(
        "\n## admin: ingest at 64 senders, alone and while an operator pages through every event (a page every {} ms at most)\n",
        pace.as_millis()
    );
    println!("| phase | ev/s | p50 ms | p99 ms | p99.9 ms | CPU µs/ev (user + sys) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, l) in [("alone", &r.quiet), ("while paging", &r.paging)] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} ({:.1} + {:.1}) |",
            l.sent.per_sec(),
            l.sent.percentile_ms(0.50),
            l.sent.percentile_ms(0.99),
            l.sent.percentile_ms(0.999),
            l.cpu_us_per_event,
            l.user_us_per_event,
            l.sys_us_per_event
        );
    }
    println!(
        "\nadmin pages served while paging: {} (500 events each), page latency p50 {:.1} ms, p99 {:.1} ms",
        r.pages,
        percentile_ms(&r.page_latencies_us, 0.50),
        percentile_ms(&r.page_latencies_us, 0.99)
    );
}
