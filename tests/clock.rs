//! A wall-clock step does not break a delivery's due time. Alone in its test binary: it steps
//! the process's view of the wall clock, which every test in the same process would see.

#[path = "it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_in_a_second_comes_in_a_second_after_the_clock_steps_back_an_hour() {
    bounded(async {
        let sink = Sink::with(|n| (if n == 0 { 500 } else { 200 }, Duration::ZERO)).await;
        let yaml = format!(
            "sources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 1s, max_delay: 1s}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t}}\ndefault: t\n",
            sink.url()
        );
        let proxy = Proxy::start(&yaml).await;
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_clock", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(Duration::from_secs(5), || sink.count() == 1).await);
        // The step comes once the retry is scheduled (the failure is in the event's history).
        let mut scheduled = false;
        for _ in 0..100 {
            let (_, e) = proxy.admin(http::Method::GET, "/events/evt_clock", None).await;
            if e["attempts"].as_array().is_some_and(|a| a.iter().any(|h| h["outcome"] == "failed")) {
                scheduled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(scheduled, "the failed attempt was never recorded");
        let failed_at = Instant::now();
        fanout::clock::step_wall_clock(-3_600_000);
        let retried = eventually(Duration::from_secs(10), || sink.count() == 2).await;
        let waited = failed_at.elapsed();
        fanout::clock::step_wall_clock(3_600_000);
        assert!(retried, "the retry never came");
        // Due 1-2 s after the failure (backoff with up to 100% jitter), not an hour later.
        assert!(waited < Duration::from_secs(4), "the retry waited {waited:?}");
        // Signatures follow the wall clock, stepped or not: the retry is signed an hour back.
        let t: i64 = sink.received()[1].header("stripe-signature")[2..12].parse().unwrap();
        assert!((now() - 3600 - t).abs() <= 5, "signed at {t}, now {}", now());
        proxy.running.stop().await;
    })
    .await;
}
