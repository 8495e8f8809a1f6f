//! fanout on the Postgres engine, end to end: the real proxy on a real throwaway Postgres
//! (skipped, loudly, where none is installed; a failure under CI).

use std::time::Duration;

use fanout_store::testing::TestPostgres;
use http::Method;

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(15);

fn config(pg: &TestPostgres, sink: &Sink) -> String {
    format!(
        "store: {{engine: postgres, url: \"{}\", pool: 4}}\nsources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 100ms, max_delay: 200ms}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t, timeout: 2s}}\ndefault: t\n",
        pg.url(),
        sink.url()
    )
}

/// An event is acknowledged once committed, delivered (a failure retried), re-signed for its
/// target, shown by the admin API; a restart on the same database knows its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_through_postgres_and_survive_a_restart() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        let sink = Sink::with(|n| (if n == 0 { 500 } else { 200 }, Duration::ZERO)).await;
        let yaml = config(&pg, &sink);
        let proxy = Proxy::start(&yaml).await;
        let body = event("evt_pg1", "invoice.paid", "x");
        assert_eq!(send_signed(&proxy.url("/hook"), &body).await.0, 200);
        assert!(eventually(WITHIN, || sink.for_event("evt_pg1").len() == 2).await, "retried, then delivered");
        let got = sink.for_event("evt_pg1");
        assert!(stripe_sdk_accepts(got[1].header("stripe-signature"), &got[1].body, "whsec_t"));
        let deadline = std::time::Instant::now() + WITHIN;
        let v = loop {
            let (status, v) = proxy.admin(Method::GET, "/events/evt_pg1", None).await;
            assert_eq!(status, 200, "{v}");
            if v["state"] == "delivered" {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "not delivered in the admin API's view: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let outcomes: Vec<&str> =
            v["attempts"].as_array().unwrap().iter().filter_map(|a| a["outcome"].as_str()).collect();
        assert_eq!(outcomes, ["failed", "delivered"], "{v}");

        let proxy = proxy.restart(&yaml).await;
        let (status, text) = send_signed(&proxy.url("/hook"), &body).await;
        assert_eq!((status, text.contains("\"duplicate\":true")), (200, true), "{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.for_event("evt_pg1").len(), 2, "not delivered again");
        proxy.running.stop().await;
    })
    .await;
}

/// Two replicas on one database, each event sent to one of them: every event delivered, each
/// exactly once (one replica attempts a job at a time); an inbox's listener polling replica B
/// gets events ingested on replica A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_queue() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        let sink = Sink::ok().await;
        let token = "alice-inbox-token-0123456789";
        let yaml = format!(
            "{}  - {{name: alice, kind: inbox, token: {token}, secret: whsec_alice, timeout: 2s}}\nroutes:\n  - {{name: a, when: {{fields: [{{path: data.object.metadata.env, equals: alice}}]}}, to: [alice]}}\n",
            config(&pg, &sink).replace("default: t\n", "")
        ) + "default: t\n";
        let (a, b) = (Proxy::start(&yaml).await, Proxy::start(&yaml).await);
        for i in 0..40 {
            let replica = if i % 2 == 0 { &a } else { &b };
            let body = event(&format!("evt_r{i}"), "invoice.paid", "x");
            assert_eq!(send_signed(&replica.url("/hook"), &body).await.0, 200);
        }
        assert!(eventually(WITHIN, || (0..40).all(|i| !sink.for_event(&format!("evt_r{i}")).is_empty())).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..40 {
            assert_eq!(sink.for_event(&format!("evt_r{i}")).len(), 1, "evt_r{i} delivered once across replicas");
        }
        // Ingested on A, polled from B.
        assert_eq!(send_signed(&a.url("/hook"), &event("evt_inbox", "invoice.paid", "alice")).await.0, 200);
        let auth = [("authorization", format!("Bearer {token}"))];
        let (status, text) = request(Method::GET, &b.url("/fanout/inbox/events?wait=10&max=5"), &auth, "").await;
        assert_eq!(status, 200, "{text}");
        let polled: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(polled["deliveries"][0]["event_id"], "evt_inbox", "{polled}");
        a.running.stop().await;
        b.running.stop().await;
    })
    .await;
}

/// What `/targets` on `proxy` says of an inbox's listeners.
async fn inbox_on(proxy: &Proxy, inbox: &str) -> serde_json::Value {
    let (status, v) = proxy.admin(Method::GET, "/targets", None).await;
    assert_eq!(status, 200, "{v}");
    v["targets"].as_array().unwrap().iter().find(|t| t["name"] == inbox).unwrap()["inbox"].clone()
}

/// A listener polling replica B shows on replica A's `/targets`, and A does not move the inbox's
/// events to its offline fallback while that listener is there; with nobody listening anywhere,
/// the fallback gets them (once, whichever replica moves them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_offline_fallbacks_span_replicas() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        let sink = Sink::ok().await;
        let token = "alice-inbox-token-0123456789";
        let yaml = format!(
            "{}  - {{name: alice, kind: inbox, token: {token}, secret: whsec_alice, timeout: 2s, offline: {{after: 1s, fallback: t}}}}\nroutes:\n  - {{name: a, when: {{fields: [{{path: data.object.metadata.env, equals: alice}}]}}, to: [alice]}}\n",
            config(&pg, &sink).replace("default: t\n", "")
        );
        let (a, b) = (Proxy::start(&yaml).await, Proxy::start(&yaml).await);

        // Nobody listens: after a second the fallback has it, delivered once.
        assert_eq!(send_signed(&a.url("/hook"), &event("evt_nobody", "invoice.paid", "alice")).await.0, 200);
        assert!(eventually(WITHIN, || !sink.for_event("evt_nobody").is_empty()).await, "moved to the fallback");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(sink.for_event("evt_nobody").len(), 1, "moved once across replicas");

        // A listener polls B, without pause, until it has the event.
        let poll_url = b.url("/fanout/inbox/events?wait=2&max=5");
        let listener = tokio::spawn(async move {
            let auth = [("authorization", format!("Bearer {token}"))];
            loop {
                let (status, text) = request(Method::GET, &poll_url, &auth, "").await;
                assert_eq!(status, 200, "{text}");
                if text.contains("evt_present") {
                    return;
                }
            }
        });
        let deadline = std::time::Instant::now() + WITHIN;
        loop {
            let seen = inbox_on(&a, "alice").await;
            if seen["online"] == true && seen["listeners"] == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "A never saw B's listener: {seen}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(send_signed(&a.url("/hook"), &event("evt_present", "invoice.paid", "alice")).await.0, 200);
        tokio::time::timeout(WITHIN, listener).await.expect("the listener on B got it").unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(sink.for_event("evt_present").is_empty(), "not moved away from a listened-to inbox");
        a.running.stop().await;
        b.running.stop().await;
    })
    .await;
}

/// `sslmode=require`: the proxy speaks TLS to the database (which refuses plain-text TCP here)
/// and checks its certificate against the configured `ca`; without it, start-up fails and says
/// why rather than trusting whoever answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::operate::pki(dir.path());
        pg.require_tls(&std::fs::read_to_string(&pki.cert).unwrap(), &std::fs::read_to_string(&pki.key).unwrap());
        let sink = Sink::ok().await;
        let plain = config(&pg, &sink);
        let tls_url = format!("{}?sslmode=require", pg.url());
        let refused = fanout::config::Config::parse("r.yaml", &plain, |_| None).unwrap();
        let err = fanout::serve::start(refused).await.err().expect("plain text is refused by this server");
        assert!(err.to_string().contains("database"), "{err}");

        let untrusted = plain.replace(&pg.url(), &tls_url);
        let config = fanout::config::Config::parse("r.yaml", &untrusted, |_| None).unwrap();
        let err = fanout::serve::start(config).await.err().expect("an unknown CA is refused").to_string();
        assert!(err.contains("certificate"), "{err}");

        let trusted =
            plain.replace(&format!("url: \"{}\"", pg.url()), &format!("url: \"{tls_url}\", ca: {}", pki.ca.display()));
        let proxy = Proxy::start(&trusted).await;
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_tls", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || sink.for_event("evt_tls").len() == 1).await);
        proxy.running.stop().await;
    })
    .await;
}

/// An inbox created through one replica is served by the other within a refresh: its token
/// opens it there, and an event ingested on the first reaches a listener polling the second;
/// a rotation on the first closes the old token on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_created_on_one_replica_is_served_by_all() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = config(&pg, &sink).replace(
            "default: t\n",
            "routes:\n  - {name: dev, to: [\"inbox:{data.object.metadata.developer}\"], unknown: t}\ndefault: t\n",
        );
        let (a, b) = (Proxy::start(&yaml).await, Proxy::start(&yaml).await);
        let create = |proxy: &Proxy, path: &str| {
            let url = proxy.admin_url(path);
            async move { request(Method::POST, &url, &[], r#"{"name":"dana"}"#).await }
        };
        let (status, text) = create(&a, "/inboxes").await;
        assert_eq!(status, 201, "{text}");
        let token = serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"].as_str().unwrap().to_owned();
        let poll = |proxy: &Proxy, token: &str| {
            let (url, auth) = (proxy.url("/fanout/inbox/events?wait=1"), format!("Bearer {token}"));
            async move { request(Method::GET, &url, &[("authorization", auth)], "").await }
        };
        let deadline = std::time::Instant::now() + WITHIN;
        while poll(&b, &token).await.0 != 200 {
            assert!(std::time::Instant::now() < deadline, "replica B never served the inbox");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let body = format!(
            r#"{{"id":"evt_dana","object":"event","type":"customer.updated","created":{},"data":{{"object":{{"id":"cus_dana","metadata":{{"developer":"dana"}}}}}}}}"#,
            now()
        );
        assert_eq!(send_signed(&a.url("/hook"), &body).await.0, 200);
        let deadline = std::time::Instant::now() + WITHIN;
        loop {
            let (status, text) = poll(&b, &token).await;
            assert_eq!(status, 200, "{text}");
            if text.contains("evt_dana") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the event never reached B's listener");
        }
        assert_eq!(sink.count(), 0, "dana has an inbox: not the unknown target");
        let (status, text) = create(&a, "/inboxes/dana/rotate").await;
        assert_eq!(status, 200);
        let new = serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"].as_str().unwrap().to_owned();
        let deadline = std::time::Instant::now() + WITHIN;
        while poll(&b, &token).await.0 != 401 {
            assert!(std::time::Instant::now() < deadline, "the old token still opens the inbox on B");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(poll(&b, &new).await.0, 200, "the new one does");
        a.running.stop().await;
        b.running.stop().await;
    })
    .await;
}
