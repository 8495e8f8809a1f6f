//! Real `fanout serve` processes on one real Postgres, and the faults a fleet of replicas meets:
//! a replica killed with attempts in flight, the database gone for a few seconds under load.
//! The figures are printed for RELIABILITY.md.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout_store::testing::TestPostgres;

use crate::common::*;

/// A config for replicas of one fleet: the target `t` at `sink`, answering within `timeout`.
fn write_config(dir: &Path, pg: &TestPostgres, sink: &Sink, timeout: &str) -> std::path::PathBuf {
    let path = dir.join("routing.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\ndata_dir: {}\nstore: {{engine: postgres, url: \"{}\", pool: 8}}\nsources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 50ms, max_delay: 200ms}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t, timeout: {timeout}}}\ndefault: t\n",
        dir.join("data").display(),
        pg.url(),
        sink.url()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn in_flight(replica: &Binary) -> u64 {
    let url = format!("http://{}/targets", replica.admin);
    let (status, text) = request(http::Method::GET, &url, &[], "").await;
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["targets"][0]["in_flight"].as_u64().unwrap_or(0)
}

/// Replica A dies (kill -9) with five attempts in flight. Replica B, running all along and never
/// restarted, delivers those jobs once their leases expire (target timeout 2 s + 5 s margin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_leased_jobs_are_delivered_by_another() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        // The first five requests hang (A's attempts); any later one is answered at once.
        let sink = Sink::with(|n| if n < 5 { (200, Duration::from_secs(60)) } else { (200, Duration::ZERO) }).await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &pg, &sink, "2s");
        let a = Binary::spawn_logging(&config, &dir.path().join("a.log"), "warn");
        for i in 0..5 {
            assert_eq!(send_signed(&a.url("/hook"), &event(&format!("evt_k{i}"), "invoice.paid", "x")).await.0, 200);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while in_flight(&a).await < 5 {
            assert!(Instant::now() < deadline, "A never had its five attempts in flight");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = Binary::spawn_logging(&config, &dir.path().join("b.log"), "warn");
        let mut a = a;
        a.child.kill().unwrap(); // SIGKILL, attempts in flight
        a.child.wait().unwrap();
        let killed = Instant::now();
        let all = || (0..5).all(|i| !sink.for_event(&format!("evt_k{i}")).is_empty());
        assert!(
            eventually(Duration::from_secs(20), all).await,
            "B delivered A's leased jobs; B's log:\n{}",
            b.log_text()
        );
        let took = killed.elapsed();
        eprintln!("replica killed with 5 attempts in flight: the other delivered all 5 in {took:?} (lease 7 s)");
        assert!(took >= Duration::from_secs(4), "not before the leases expired: {took:?}");
        drop(b);
    })
    .await;
}

/// Replica A stops (SIGTERM) with five attempts in flight: once its grace period is over it
/// hands their jobs back and says so, and replica B delivers them at once, not when the leases
/// would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_hands_its_jobs_to_another_at_once() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        let sink = Sink::with(|n| if n < 5 { (200, Duration::from_secs(60)) } else { (200, Duration::ZERO) }).await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &pg, &sink, "10s");
        let yaml = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("shutdown_grace: 500ms\n{yaml}")).unwrap();
        let a = Binary::spawn_logging(&config, &dir.path().join("a.log"), "info");
        let sent = 5;
        for i in 0..sent {
            assert_eq!(send_signed(&a.url("/hook"), &event(&format!("evt_s{i}"), "invoice.paid", "x")).await.0, 200);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while in_flight(&a).await < 5 {
            assert!(Instant::now() < deadline, "A never had its five attempts in flight");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = Binary::spawn_logging(&config, &dir.path().join("b.log"), "warn");
        a.signal("TERM");
        let stopped = Instant::now();
        let all = || (0..sent).all(|i| !sink.for_event(&format!("evt_s{i}")).is_empty());
        assert!(eventually(Duration::from_secs(20), all).await, "B delivered them; B's log:\n{}", b.log_text());
        let took = stopped.elapsed();
        eprintln!("replica stopped with 5 attempts in flight: the other delivered them {took:?} after SIGTERM");
        assert!(took < Duration::from_secs(8), "handed back, not left to expire (a lease is 10 s + 5 s): {took:?}");
        let (status, log) = a.wait_exit(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "{log}");
        assert!(log.contains("leased back"), "{log}");
    })
    .await;
}

/// Postgres stopped (as a crash) for three seconds while eight senders post: the proxy answers
/// 503 meanwhile, recovers on its own once the database is back, and every event it
/// acknowledged, before, during or after, is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_is_503s_then_recovery_and_loses_nothing() {
    let Some(pg) = TestPostgres::start() else { return };
    let pg = Arc::new(pg);
    bounded(async {
        let sink = Sink::ok().await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &pg, &sink, "2s");
        let proxy = Binary::spawn_logging(&config, &dir.path().join("fanout.log"), "warn");
        let url = proxy.url("/hook");
        let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (stop, refused) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let senders: Vec<_> = (0..8)
            .map(|s| {
                let (url, acked, stop, refused) = (url.clone(), acked.clone(), stop.clone(), refused.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let id = format!("evt_{s}_{i}");
                        i += 1;
                        let body = event(&id, "invoice.paid", "x");
                        let sent = tokio::time::timeout(Duration::from_secs(10), try_send_signed(&url, &body));
                        match sent.await {
                            Ok(Ok((200, _))) => {
                                acked.lock().unwrap().insert(id);
                            }
                            Ok(Ok((503, _))) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            other => panic!("{id}: neither acknowledged nor 503: {other:?}"),
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = acked.lock().unwrap().len();
        let pg2 = pg.clone();
        tokio::task::spawn_blocking(move || pg2.stop()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = acked.lock().unwrap().len() - before;
        let pg2 = pg.clone();
        tokio::task::spawn_blocking(move || pg2.start_server()).await.unwrap();
        let back = Instant::now();
        let recovered = eventually(Duration::from_secs(15), || acked.lock().unwrap().len() > before + during + 50).await;
        let recovery = back.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::SeqCst);
        for s in senders {
            s.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        let delivered = || sink.received().iter().map(|r| r.header("fanout-event-id").to_owned()).collect::<HashSet<_>>();
        let all_there = eventually(Duration::from_secs(20), || acked.is_subset(&delivered())).await;
        let missing: Vec<_> = acked.difference(&delivered()).take(5).cloned().collect();
        eprintln!(
            "database down 3 s under 8 senders: acknowledged {} ({before} before), 503s {}, acknowledged while down {during}, \
             acknowledging again {recovery:?} after the restart, delivered {} (missing {})",
            acked.len(),
            refused.load(Ordering::SeqCst),
            delivered().len(),
            acked.len() - acked.intersection(&delivered()).count()
        );
        assert!(recovered, "acknowledging again after the database came back; log:\n{}", proxy.log_text());
        assert!(refused.load(Ordering::SeqCst) > 0, "the outage was answered with 503s");
        assert!(all_there, "acknowledged but never delivered (first 5): {missing:?}");
    })
    .await;
}
