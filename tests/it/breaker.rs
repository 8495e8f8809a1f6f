//! The circuit breaker, end to end on real sockets: a target that is down gets only probes while
//! its breaker is open, every surface shows it, a restart rebuilds it, it drains with nothing
//! lost once the target answers, and a failover group goes round an open member.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanout_store::testing::TestPostgres;
use fanout_store::{Delivery, Disposition, EventRecord, NewJob};
use http::Method;

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(20);

/// A sink that answers 503 until `up` is set.
async fn switchable() -> (Sink, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    let sink = Sink::with(move |_| (if flag.load(Ordering::SeqCst) { 200 } else { 503 }, Duration::ZERO)).await;
    (sink, up)
}

fn config(store: &str, sink: &Sink) -> String {
    format!(
        "{store}sources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 20ms, max_delay: 50ms}}\ntargets:\n  - name: t\n    url: {}\n    secret: whsec_t\n    concurrency: 32\n    breaker: {{failures: 5, probe_interval: 300ms, max_probe_interval: 1s}}\ndefault: t\n",
        sink.url()
    )
}

/// `jobs` jobs queued for `t` straight into the store, 20 per event, while `t` is paused.
async fn backlog(proxy: &Proxy, jobs: usize) {
    assert_eq!(proxy.admin(Method::POST, "/targets/t/pause", None).await.0, 200);
    let per_event: Vec<NewJob> =
        (0..20).map(|_| NewJob { target: "t".into(), delivery: Delivery::Target, rule: "r".into() }).collect();
    for i in 0..jobs / 20 {
        let record = EventRecord {
            id: format!("evt_held_{i}"),
            event_type: "invoice.paid".into(),
            source: "s".into(),
            received_at_ms: fanout::clock::unix_now_ms(),
            disposition: Disposition::Unrouted,
            body: event(&format!("evt_held_{i}"), "invoice.paid", "x").into_bytes(),
        };
        proxy.running.store.ingest_claiming(&record, &per_event, None).await.unwrap();
    }
    assert_eq!(proxy.running.store.queued("t").await.unwrap(), jobs);
}

/// Target `t` as `/targets` shows it.
async fn shown(proxy: &Proxy) -> serde_json::Value {
    let (status, v) = proxy.admin(Method::GET, "/targets", None).await;
    assert_eq!(status, 200, "{v}");
    v["targets"].as_array().unwrap().iter().find(|t| t["name"] == "t").unwrap().clone()
}

async fn breaker(proxy: &Proxy) -> serde_json::Value {
    shown(proxy).await["breaker"].clone()
}

/// Polls `/targets` until `check` holds for `t`.
async fn shows(proxy: &Proxy, check: impl Fn(&serde_json::Value) -> bool) -> bool {
    let deadline = std::time::Instant::now() + WITHIN;
    while std::time::Instant::now() < deadline {
        if check(&shown(proxy).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn breaker_is(proxy: &Proxy, states: &[&str]) -> bool {
    shows(proxy, |t| states.iter().any(|s| t["breaker"]["state"] == *s)).await
}

async fn metrics(proxy: &Proxy) -> String {
    let (status, text) = request(Method::GET, &proxy.admin_url("/metrics"), &[], "").await;
    assert_eq!(status, 200);
    text
}

/// 10,000 jobs for a target that is down: it opens after its failures, then only probes reach
/// the target, one at a time at a growing interval; every surface shows it; a restart rebuilds
/// it (closed, then open again after the same failures); once the target answers, a probe closes
/// it and everything is delivered, once, with no attempt spent while held.
async fn down_then_recovered(store: &str) {
    let (sink, up) = switchable().await;
    let yaml = config(store, &sink);
    let proxy = Proxy::start(&yaml).await;
    backlog(&proxy, 10_000).await;
    assert_eq!(proxy.admin(Method::POST, "/targets/t/resume", None).await.0, 200);
    assert!(breaker_is(&proxy, &["open", "probing"]).await, "{}", breaker(&proxy).await);
    // The attempts in flight when it opened have answered.
    assert!(shows(&proxy, |t| t["in_flight"] == 0).await);
    let opened_after = sink.count();
    assert!((5..=5 + 32 + 1).contains(&opened_after), "{opened_after} attempts before it opened");
    let held_from = sink.count();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let probes = sink.count() - held_from;
    // 300 ms, 600 ms, then 1 s apart: 3 or so in 2.5 s, one at a time.
    assert!((2..=4).contains(&probes), "{probes} probes in 2.5 s");
    let probe_times: Vec<_> = sink.received()[held_from..].iter().map(|r| r.at).collect();
    assert!(probe_times.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(250)), "probes spaced");
    let b = breaker(&proxy).await;
    assert!(b["failures"].as_u64().unwrap() >= 5 && b["open_since"].is_string() && b["next_probe"].is_string(), "{b}");
    let m = metrics(&proxy).await;
    assert!(
        m.contains("fanout_target_breaker_state{target=\"t\"} 2")
            || m.contains("fanout_target_breaker_state{target=\"t\"} 1"),
        "{m}"
    );
    assert!(m.contains("fanout_target_breaker_transitions_total{target=\"t\",to=\"open\"} 1"), "{m}");
    let out = fanout_cli(&["targets", "--admin", &proxy.admin_url("")], &[]).await;
    assert!(output_text(&out).contains("breaker open") || output_text(&out).contains("breaker probing"));
    let (_, dead) = proxy.admin(Method::GET, "/dead-letters", None).await;
    assert_eq!(dead["dead_letters"].as_array().map(Vec::len), Some(0), "held jobs are not dead-lettered: {dead}");

    // Rebuilt after a restart: closed at first, open again after the same failures.
    let before = sink.count();
    let proxy = proxy.restart(&yaml).await;
    assert!(breaker_is(&proxy, &["open", "probing"]).await);
    let spent = sink.count() - before;
    // A probe of the old process during its stop, the failures, those in flight, a probe.
    assert!((5..=1 + 5 + 32 + 1).contains(&spent), "{spent} attempts before it opened again");

    up.store(true, Ordering::SeqCst);
    let delivered = || -> Vec<String> {
        sink.received().iter().filter(|r| r.status == 200).map(|r| r.header("fanout-delivery-id").to_owned()).collect()
    };
    assert!(eventually(Duration::from_secs(90), || delivered().len() >= 10_000).await, "drained after recovery");
    assert!(breaker_is(&proxy, &["closed"]).await);
    let store = &proxy.running.store;
    let deadline = std::time::Instant::now() + WITHIN;
    while (store.queued("t").await.unwrap(), store.in_flight().await.unwrap()) != (0, 0) {
        assert!(std::time::Instant::now() < deadline, "settled after the last delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = metrics(&proxy).await;
    assert!(m.contains("fanout_target_breaker_state{target=\"t\"} 0"), "{m}");
    assert!(m.contains("fanout_target_breaker_transitions_total{target=\"t\",to=\"closed\"} 1"), "{m}");
    // Exactly once each.
    let delivered = delivered();
    let distinct: std::collections::HashSet<&String> = delivered.iter().collect();
    assert_eq!((delivered.len(), distinct.len()), (10_000, 10_000));
    proxy.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_gets_only_probes_then_drains_with_nothing_lost() {
    bounded_for(Duration::from_secs(150), down_then_recovered("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_gets_only_probes_then_drains_with_nothing_lost_on_postgres() {
    let Some(pg) = TestPostgres::start() else { return };
    let store = format!("store: {{engine: postgres, url: \"{}\", pool: 4}}\n", pg.url());
    bounded_for(Duration::from_secs(150), down_then_recovered(&store)).await;
}

/// A failover group goes round a member whose breaker is open: jobs already queued there move
/// on without an attempt, new ones start at the next member; `fanout targets reset` closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_skips_a_member_whose_breaker_is_open_until_it_is_reset() {
    bounded(async {
        let a = Sink::with(|_| (503, Duration::from_millis(150))).await;
        let b = Sink::ok().await;
        let yaml = format!(
            "sources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 20ms, max_delay: 50ms}}\ntargets:\n  - {{name: a, url: \"{}\", secret: whsec_a, concurrency: 1, breaker: {{failures: 3, probe_interval: 1h, max_probe_interval: 1h}}}}\n  - {{name: b, url: \"{}\", secret: whsec_b}}\ngroups:\n  - {{name: g, mode: failover, members: [a, b]}}\ndefault: g\n",
            a.url(),
            b.url()
        );
        let proxy = Proxy::start(&yaml).await;
        for i in 0..10 {
            assert_eq!(send_signed(&proxy.url("/hook"), &event(&format!("evt_f{i}"), "invoice.paid", "x")).await.0, 200);
        }
        // a takes one at a time: 3 fail (each moves to b), it opens, and the 7 still queued for a
        // move to b without an attempt.
        assert!(eventually(WITHIN, || (0..10).all(|i| b.for_event(&format!("evt_f{i}")).len() == 1)).await);
        assert_eq!(a.count(), 3, "only the attempts that opened it");
        let (_, v) = proxy.admin(Method::GET, "/events/evt_f9", None).await;
        assert_eq!(v["state"], "delivered", "{v}");

        for i in 10..15 {
            assert_eq!(send_signed(&proxy.url("/hook"), &event(&format!("evt_f{i}"), "invoice.paid", "x")).await.0, 200);
        }
        assert!(eventually(WITHIN, || b.count() == 15).await);
        assert_eq!(a.count(), 3, "new events start at b while a's breaker is open");

        let out = fanout_cli(&["targets", "reset", "a", "--admin", &proxy.admin_url("")], &[]).await;
        assert!(output_text(&out).contains("circuit breaker closed"), "{}", output_text(&out));
        let (status, v) = proxy.admin(Method::POST, "/targets/nope/reset", None).await;
        assert_eq!(status, 404, "{v}");
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_f15", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || a.count() == 4 && b.count() == 16).await, "a is tried first again");
        proxy.running.stop().await;
    })
    .await;
}
