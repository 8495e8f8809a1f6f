//! Keeps the load generator and the end-to-end bench scenarios compiling and working: each runs
//! for a second or two against the real `fanout` binary. The figures are not checked against
//! goals (that is BENCHMARKS.md's job, on a release build); what is checked is that every event
//! sent was acknowledged and every acknowledged event was delivered.

use crate::loadgen;

use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fanout"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_scenario_acknowledges_everything_it_sends() {
    let report = loadgen::ingest(bin(), None, &[1, 8], Duration::from_millis(700), 3000).await.unwrap();
    assert_eq!(report.fanout.len(), 2);
    for level in &report.fanout {
        assert_eq!(level.sent.failed, 0, "{:?}", level.sent.first_error);
        assert!(level.sent.acked > 0, "nothing acknowledged at {} senders", level.senders);
        assert_eq!(level.sent.latencies_us.len(), level.sent.acked);
        assert!(level.cpu_us_per_event > 0.0, "CPU time was read from /proc");
    }
    assert!(report.fanout_peak_rss > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_scenario_delivers_every_event_to_every_destination() {
    let report = loadgen::delivery(bin(), 300, 16, 1000).await.unwrap();
    assert_eq!(report.acked, 300, "{:?}", report.ingest.first_error);
    assert!(report.deliveries >= 900, "a, b and the group each got all 300: {}", report.deliveries);
    assert!(report.latencies_us.len() >= 900, "every delivery was timed against its send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_scenario_restarts_and_drains() {
    let report = loadgen::backlog(bin(), 2000, 16, 500).await.unwrap();
    assert_eq!(report.jobs, 2000, "{:?}", report.queueing.first_error);
    assert_eq!(report.rss_samples.len(), 10);
    assert!(report.store_bytes > 0);
    assert!(report.drain_per_sec() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_scenario_loads_pages_while_ingesting() {
    let pace = Duration::from_millis(50);
    let report = loadgen::console_refresh(bin(), 4, Duration::from_millis(600), pace, 500).await.unwrap();
    assert_eq!(report.phases.iter().filter(|(console, _)| *console).count(), 2);
    for (_, phase) in &report.phases {
        assert!(phase.sent.acked > 0 && phase.sent.first_error.is_none(), "{:?}", phase.sent.first_error);
    }
    assert!(report.page_latencies_us.len() >= 4, "every console page answered 200: {}", report.page_latencies_us.len());
}
