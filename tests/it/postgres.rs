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
