//! Developer inboxes end to end: the proxy in-process on a real store, the real `fanout listen`
//! binary connecting out to it, and a real local app, all on 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use http::Method;
use serde_json::Value;

const ALICE: &str = "alice-inbox-token-0123456789";
const BOB: &str = "bob-inbox-token-0123456789";
const WITHIN: Duration = Duration::from_secs(15);

fn config(staging: &Sink) -> String {
    format!(
        r#"
sources:
  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}
retry: {{initial_delay: 100ms, max_delay: 200ms}}
targets:
  - {{name: staging, url: "{}", secret: whsec_staging}}
  - {{name: alice, kind: inbox, token: {ALICE}, secret: whsec_alice, timeout: 1s}}
  - {{name: bob, kind: inbox, token: {BOB}, secret: whsec_bob, timeout: 1s}}
  - {{name: carol, kind: inbox, token: carol-inbox-token-0123456789, secret: whsec_carol}}
routes:
  - {{name: alice-dev, when: {{fields: [{{path: data.object.metadata.env, equals: alice}}]}}, to: [alice]}}
  - {{name: bob-dev, when: {{fields: [{{path: data.object.metadata.env, equals: bob}}]}}, to: [bob]}}
  - {{name: carol-dev, when: {{fields: [{{path: data.object.metadata.env, equals: carol}}]}}, to: [carol],
      offline: {{after: 1s, fallback: staging}}}}
default: staging
"#,
        staging.url()
    )
}

async fn inbox(proxy: &Proxy, method: Method, path: &str, token: &str, body: &str) -> (u16, Value) {
    let url = proxy.url(&format!("/fanout/inbox{path}"));
    let headers = [("authorization", format!("Bearer {token}"))];
    let (status, text) = request(method, &url, &headers, body.to_owned()).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn target(proxy: &Proxy, name: &str) -> Value {
    let (_, v) = proxy.admin(Method::GET, "/targets", None).await;
    v["targets"].as_array().unwrap().iter().find(|t| t["name"] == name).cloned().unwrap()
}

async fn history(proxy: &Proxy, id: &str) -> Vec<Value> {
    let (_, v) = proxy.admin(Method::GET, &format!("/events/{id}"), None).await;
    v["attempts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_offline_and_arrive_on_connect_acknowledged_only_after_the_local_app_took_them() {
    bounded(async {
        let staging = Sink::ok().await;
        // The local app fails its first request, then takes everything.
        let app = Sink::with(|n| (if n == 0 { 500 } else { 200 }, Duration::ZERO)).await;
        let proxy = Proxy::start(&config(&staging)).await;
        let url = proxy.url("/hook");

        // Nobody listens: the event waits in the inbox.
        assert_eq!(send_signed(&url, &event("evt_a1", "customer.created", "alice")).await.0, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let alice = target(&proxy, "alice").await;
        assert_eq!((alice["queued"].as_u64(), alice["inbox"]["online"].as_bool()), (Some(1), Some(false)), "{alice}");

        let out = proxy.dir.path().join("listen-alice.out");
        let listen = Listen::spawn(&proxy.url(""), ALICE, &format!("{}/webhook", app.url()), &out);
        assert!(eventually(WITHIN, || app.for_event("evt_a1").len() == 2).await, "{}", listen.output());
        // The first answer was 500: not acknowledged, retried, then delivered once taken.
        let got = app.for_event("evt_a1");
        for r in &got {
            assert!(stripe_sdk_accepts(r.header("stripe-signature"), &r.body, "whsec_alice"), "signed for alice");
            assert_eq!(r.header("fanout-target"), "alice");
        }
        assert_eq!(serde_json::from_slice::<Value>(&got[1].body).unwrap()["id"], "evt_a1");
        let delivered = || async {
            history(&proxy, "evt_a1")
                .await
                .iter()
                .map(|h| h["outcome"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        let mut outcomes = Vec::new();
        for _ in 0..50 {
            outcomes = delivered().await;
            if outcomes.iter().any(|o| o == "delivered") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(outcomes, ["failed", "delivered"]);
        let alice = target(&proxy, "alice").await;
        assert_eq!((alice["queued"].as_u64(), alice["inbox"]["online"].as_bool()), (Some(0), Some(true)), "{alice}");
        assert_eq!(alice["inbox"]["listeners"].as_u64(), Some(1));

        // While connected, a new event arrives at once; the terminal shows one line per event.
        assert_eq!(send_signed(&url, &event("evt_a2", "invoice.paid", "alice")).await.0, 200);
        assert!(eventually(WITHIN, || app.for_event("evt_a2").len() == 1).await);
        assert!(eventually(WITHIN, || listen.output().contains("evt_a2")).await);
        let printed = listen.output();
        assert!(printed.contains("Ready! Inbox alice"), "{printed}");
        assert!(
            printed.lines().any(|l| l.contains("customer.created") && l.contains("evt_a1") && l.contains("[500]")),
            "{printed}"
        );
        assert!(
            printed.lines().any(|l| l.contains("invoice.paid") && l.contains("evt_a2") && l.contains("[200]")),
            "{printed}"
        );
        assert_eq!(staging.count(), 0, "nothing of alice's went to staging");

        // --print-secret shows what the local app verifies with.
        let out =
            fanout_cli(&["listen", "--proxy", &proxy.url(""), "--print-secret"], &[("FANOUT_INBOX_TOKEN", ALICE)])
                .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "whsec_alice", "{}", output_text(&out));
        let out = fanout_cli(
            &["listen", "--proxy", &proxy.url(""), "--print-secret"],
            &[("FANOUT_INBOX_TOKEN", "wrong-token-0123456789")],
        )
        .await;
        assert!(
            !out.status.success() && output_text(&out).contains("refused the inbox token"),
            "{}",
            output_text(&out)
        );
        drop(listen);
        proxy.running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_inbox_token_cannot_read_or_answer_for_another_and_unanswered_events_come_back() {
    bounded(async {
        let staging = Sink::ok().await;
        let proxy = Proxy::start(&config(&staging)).await;
        let url = proxy.url("/hook");
        assert_eq!(send_signed(&url, &event("evt_b1", "customer.created", "alice")).await.0, 200);

        let (status, v) = inbox(&proxy, Method::GET, "/events?wait=0", "not-a-token-at-all-000", "").await;
        assert_eq!(status, 401, "{v}");
        let (status, v) = inbox(&proxy, Method::GET, "/events?wait=0", "", "").await;
        assert_eq!(status, 401, "{v}");
        // Bob's token opens bob's inbox, where alice's event is not.
        let (status, v) = inbox(&proxy, Method::GET, "/events?wait=0", BOB, "").await;
        assert_eq!(
            (status, v["inbox"].as_str(), v["deliveries"].as_array().map(Vec::len)),
            (200, Some("bob"), Some(0)),
            "{v}"
        );

        // Alice fetches it and does not answer yet.
        let (status, v) = inbox(&proxy, Method::GET, "/events?wait=5", ALICE, "").await;
        assert_eq!(status, 200, "{v}");
        let offered = &v["deliveries"][0];
        assert_eq!(offered["event_id"], "evt_b1");
        let id = offered["id"].as_str().unwrap().to_owned();
        let body = offered["body"].as_str().unwrap();
        let sig = offered["headers"].as_array().unwrap().iter().find(|h| h[0] == "stripe-signature").unwrap()[1]
            .as_str()
            .unwrap();
        assert!(stripe_sdk_accepts(sig, body.as_bytes(), "whsec_alice"));
        // Leased to alice's listener: a second poll does not get it again.
        let (_, v) = inbox(&proxy, Method::GET, "/events?wait=0", ALICE, "").await;
        assert_eq!(v["deliveries"].as_array().map(Vec::len), Some(0), "{v}");

        // Bob cannot answer for it.
        let answer = format!(r#"{{"id": "{id}", "status": 200, "latency_ms": 3}}"#);
        let (status, v) = inbox(&proxy, Method::POST, "/answer", BOB, &answer).await;
        assert_eq!(status, 409, "{v}");
        let (_, e) = proxy.admin(Method::GET, "/events/evt_b1", None).await;
        assert_eq!(e["state"], "pending", "{e}");

        // Not answered within the inbox's timeout (1 s) per event plus one: offered again.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (_, v) = inbox(&proxy, Method::GET, "/events?wait=5", ALICE, "").await;
        assert_eq!(v["deliveries"][0]["event_id"], "evt_b1", "{v}");
        assert_eq!(v["deliveries"][0]["attempt"], 2);
        // A late answer for the first offer does not settle the second.
        let (status, v2) = inbox(&proxy, Method::POST, "/answer", ALICE, &answer).await;
        assert_eq!(status, 409, "{v2}");
        let id = v["deliveries"][0]["id"].as_str().unwrap().to_owned();
        let answer = format!(r#"{{"id": "{id}", "status": 204, "latency_ms": 3}}"#);
        let (status, v) = inbox(&proxy, Method::POST, "/answer", ALICE, &answer).await;
        assert_eq!(status, 200, "{v}");
        let (status, _) = inbox(&proxy, Method::POST, "/answer", ALICE, &answer).await;
        assert_eq!(status, 409, "answered once only");
        let (_, e) = proxy.admin(Method::GET, "/events/evt_b1", None).await;
        assert_eq!(e["state"], "delivered", "{e}");
        proxy.running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_share_an_inbox_and_an_offline_inbox_falls_back() {
    bounded(async {
        let staging = Sink::ok().await;
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let app = Sink::with(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
            (200, Duration::from_millis(5))
        })
        .await;
        let proxy = Proxy::start(&config(&staging)).await;
        let url = proxy.url("/hook");
        let forward = format!("{}/webhook", app.url());
        let one = Listen::spawn(&proxy.url(""), BOB, &forward, &proxy.dir.path().join("one.out"));
        let two = Listen::spawn(&proxy.url(""), BOB, &forward, &proxy.dir.path().join("two.out"));
        assert!(eventually(WITHIN, || one.output().contains("Ready!") && two.output().contains("Ready!")).await);
        for i in 0..30 {
            assert_eq!(send_signed(&url, &event(&format!("evt_s{i}"), "invoice.paid", "bob")).await.0, 200);
        }
        assert!(eventually(WITHIN, || app.count() >= 30).await, "{} of 30", app.count());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(app.count(), 30, "each event once, not once per listener");
        for i in 0..30 {
            assert_eq!(app.for_event(&format!("evt_s{i}")).len(), 1);
        }
        let bob = target(&proxy, "bob").await;
        assert_eq!(bob["inbox"]["listeners"].as_u64(), Some(2), "{bob}");

        // carol has nobody listening and an offline fallback of 1 s to staging.
        assert_eq!(send_signed(&url, &event("evt_c1", "customer.created", "carol")).await.0, 200);
        assert!(eventually(WITHIN, || staging.for_event("evt_c1").len() == 1).await);
        let got = &staging.for_event("evt_c1")[0];
        assert!(stripe_sdk_accepts(got.header("stripe-signature"), &got.body, "whsec_staging"));
        let outcomes: Vec<String> =
            history(&proxy, "evt_c1").await.iter().map(|h| h["outcome"].as_str().unwrap_or("").to_owned()).collect();
        assert_eq!(outcomes, ["rerouted", "delivered"]);
        proxy.running.stop().await;
    })
    .await;
}

/// An inbox's `rate` is the rate its events are offered at: a listener polling for many gets
/// them one per token, however many it asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_rate_paces_what_its_listener_is_offered() {
    bounded(async {
        let staging = Sink::ok().await;
        let yaml = config(&staging)
            .replace("secret: whsec_alice, timeout: 1s}", "secret: whsec_alice, timeout: 10s, rate: 10/s}");
        let proxy = Proxy::start(&yaml).await;
        for i in 0..10 {
            let body = event(&format!("evt_ir{i}"), "invoice.paid", "alice");
            assert_eq!(send_signed(&proxy.url("/hook"), &body).await.0, 200);
        }
        let started = std::time::Instant::now();
        let (mut got, mut biggest) = (0, 0);
        while got < 10 {
            let (status, v) = inbox(&proxy, Method::GET, "/events?wait=5&max=10", ALICE, "").await;
            assert_eq!(status, 200, "{v}");
            let n = v["deliveries"].as_array().map_or(0, Vec::len);
            (got, biggest) = (got + n, biggest.max(n));
            assert!(started.elapsed() < WITHIN, "only {got} offered");
        }
        let took = started.elapsed();
        assert!(biggest <= 2, "offered {biggest} at once at 10/s (burst 1)");
        assert!(took >= Duration::from_millis(800), "10 offers at 10/s in {took:?}");
        proxy.running.stop().await;
    })
    .await
}
