//! The admin API and the CLI verbs over it, against a real proxy on a real store, with real
//! sinks, all on 127.0.0.1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use http::Method;
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";
const WITHIN: Duration = Duration::from_secs(10);

/// `ok` delivers; `flaky` answers 500 while `down` is set; customer.* goes to ok, invoice.* to
/// flaky (two attempts, then dead letters), radar.* is dropped.
async fn setup() -> (Proxy, Sink, Sink, Arc<AtomicBool>) {
    let ok = Sink::ok().await;
    let down = Arc::new(AtomicBool::new(true));
    let d = down.clone();
    let flaky = Sink::with(move |_| (if d.load(Ordering::SeqCst) { 500 } else { 200 }, Duration::ZERO)).await;
    let yaml = format!(
        r#"
admin: {{token: {TOKEN}}}
sources:
  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}
retry: {{initial_delay: 10ms, max_delay: 20ms}}
targets:
  - {{name: ok, url: "{}", secret: whsec_ok}}
  - {{name: flaky, url: "{}", secret: whsec_flaky, retry: {{max_attempts: 2}}}}
routes:
  - {{name: customers, when: {{type: "customer.*"}}, to: [ok]}}
  - {{name: invoices, when: {{type: "invoice.*"}}, to: [flaky]}}
  - {{name: noise, when: {{type: "radar.*"}}, drop: true}}
"#,
        ok.url(),
        flaky.url()
    );
    (Proxy::start(&yaml).await, ok, flaky, down)
}

async fn get(proxy: &Proxy, path: &str) -> Value {
    let (status, v) = proxy.admin(Method::GET, path, Some(TOKEN)).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

async fn post(proxy: &Proxy, path: &str) -> (u16, Value) {
    proxy.admin(Method::POST, path, Some(TOKEN)).await
}

fn ids(v: &Value) -> Vec<&str> {
    v["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect()
}

/// Sends the three events of the scenario and waits until each has settled.
async fn three_events(proxy: &Proxy, ok: &Sink) {
    let url = proxy.url("/hook");
    for (id, ty) in
        [("evt_a", "customer.created"), ("evt_b", "invoice.paid"), ("evt_c", "radar.early_fraud_warning.created")]
    {
        assert_eq!(send_signed(&url, &event(id, ty, "x")).await.0, 200);
    }
    assert!(eventually(WITHIN, || ok.count() == 1 && proxy.sled().dead_letter_count() == 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_everything_but_health_and_metrics_count_what_happened() {
    bounded(async {
        let (proxy, ok, _flaky, _down) = setup().await;
        assert_eq!(proxy.admin(Method::GET, "/healthz", None).await.0, 200);
        assert_eq!(proxy.admin(Method::GET, "/readyz", None).await.0, 200);
        for path in ["/metrics", "/events", "/targets", "/dead-letters"] {
            let (status, v) = proxy.admin(Method::GET, path, None).await;
            assert_eq!(status, 401, "{path} without a token");
            assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
            let (status, v) = proxy.admin(Method::GET, path, Some("wrong-token-0123456789")).await;
            assert_eq!((status, v["error"].as_str()), (401, Some("wrong admin token")), "{path}");
        }
        three_events(&proxy, &ok).await;
        assert_eq!(post(&proxy, "/targets/ok/pause").await.0, 200);
        assert_eq!(proxy.admin(Method::POST, "/targets/ok/resume", Some("nope-nope-nope-nope")).await.0, 401);
        // Not from a web page, even with the token; an ingest must say it is JSON.
        let from_page = [("authorization", format!("Bearer {TOKEN}")), ("origin", "https://evil.example".to_owned())];
        assert_eq!(
            request(Method::POST, &proxy.admin_url("/dead-letters/purge?all=true"), &from_page, "").await.0,
            403
        );
        let auth = [("authorization", format!("Bearer {TOKEN}"))];
        let body = event("evt_form", "customer.created", "x");
        assert_eq!(request(Method::POST, &proxy.admin_url("/events"), &auth, body.clone()).await.0, 415);
        let json = [auth[0].clone(), ("content-type", "application/json".to_owned())];
        let (status, text) = request(Method::POST, &proxy.admin_url("/events"), &json, body.clone()).await;
        assert_eq!((status, text.contains(r#""duplicate":false"#)), (200, true), "{text}");
        let (status, text) = request(Method::POST, &proxy.admin_url("/events"), &json, body).await;
        assert_eq!((status, text.contains(r#""duplicate":true"#)), (200, true), "{text}");
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_q", "customer.updated", "x")).await.0, 200);
        let bad = post_with_signature(&proxy, &format!("t=1,v1={}", "0".repeat(64))).await;
        assert_eq!(bad, 400);
        let (status, text) =
            request(Method::GET, &proxy.admin_url("/metrics"), &[("authorization", format!("Bearer {TOKEN}"))], "")
                .await;
        assert_eq!(status, 200);
        for line in [
            r#"fanout_events_received_total{source="stripe"} 5"#,
            "fanout_events_deduplicated_total 1",
            "fanout_events_dropped_total 1",
            r#"fanout_events_rejected_total{reason="no_matching_signature"} 1"#,
            r#"fanout_deliveries_total{target="flaky",outcome="failed"} 1"#,
            r#"fanout_deliveries_total{target="flaky",outcome="dead_lettered"} 1"#,
            r#"fanout_dead_letters{target="flaky"} 1"#,
            r#"fanout_target_paused{target="ok"} 1"#,
            r#"fanout_queue_depth{target="ok"} 2"#,
            "fanout_ack_latency_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("fanout_queue_oldest_due_age_seconds{target=\"ok\"}"), "{text}");
        assert_eq!(text.matches("# TYPE fanout_events_received counter").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
        assert!(text.contains("fanout_delivery_latency_seconds_bucket{"), "{text}");
        proxy.running.stop().await;
    })
    .await
}

async fn post_with_signature(proxy: &Proxy, signature: &str) -> u16 {
    let body = event("evt_forged", "customer.created", "x");
    crate::common::post(&proxy.url("/hook"), &[("stripe-signature", signature.to_owned())], body).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_filter_page_and_show_every_attempt() {
    bounded(async {
        let (proxy, ok, _flaky, _down) = setup().await;
        three_events(&proxy, &ok).await;
        let all = get(&proxy, "/events").await;
        assert_eq!(ids(&all), ["evt_c", "evt_b", "evt_a"], "newest first");
        let states: Vec<&str> =
            all["events"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["dropped", "dead", "delivered"]);
        assert_eq!(all["next_cursor"], Value::Null);

        assert_eq!(ids(&get(&proxy, "/events?type=invoice.*").await), ["evt_b"]);
        assert_eq!(ids(&get(&proxy, "/events?state=delivered").await), ["evt_a"]);
        assert_eq!(ids(&get(&proxy, "/events?target=flaky").await), ["evt_b"]);
        assert!(ids(&get(&proxy, "/events?since=2099-01-01T00:00:00Z").await).is_empty());
        assert_eq!(ids(&get(&proxy, "/events?until=1h").await), Vec::<&str>::new());
        let first = get(&proxy, "/events?limit=2").await;
        assert_eq!(ids(&first), ["evt_c", "evt_b"]);
        let cursor = first["next_cursor"].as_str().expect("a cursor to the next page");
        assert_eq!(ids(&get(&proxy, &format!("/events?limit=2&cursor={cursor}")).await), ["evt_a"]);
        let (status, v) = proxy.admin(Method::GET, "/events?state=lost", Some(TOKEN)).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(proxy.admin(Method::GET, "/events?limit=100000", Some(TOKEN)).await.0, 400);

        let b = get(&proxy, "/events/evt_b").await;
        assert_eq!((b["state"].as_str(), b["type"].as_str()), (Some("dead"), Some("invoice.paid")));
        assert_eq!(b["destinations"][0]["rule"], "invoices");
        assert_eq!(b["body"]["id"], "evt_b", "the body is shown as JSON");
        let attempts = b["attempts"].as_array().unwrap();
        let outcomes: Vec<(&str, Value)> =
            attempts.iter().map(|a| (a["outcome"].as_str().unwrap(), a["status"].clone())).collect();
        assert_eq!(
            outcomes,
            [("failed", Value::from(500)), ("failed", Value::from(500)), ("dead_lettered", Value::Null)]
        );
        assert!(attempts[0]["latency_ms"].is_u64() && attempts[0]["error"].as_str().unwrap().contains("HTTP 500"));
        assert!(attempts[0]["retry_at"].is_string() && attempts[1]["retry_at"].is_null());
        assert_eq!(attempts[1]["attempt"], 2);
        assert_eq!(proxy.admin(Method::GET, "/events/evt_nope", Some(TOKEN)).await.0, 404);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_and_dead_letters_are_new_re_signed_jobs_marked_as_replays() {
    bounded(async {
        let (proxy, ok, flaky, down) = setup().await;
        three_events(&proxy, &ok).await;

        // One event, to its own destinations: a fresh job, re-signed, marked as a replay.
        let (status, v) = post(&proxy, "/events/evt_a/replay").await;
        assert_eq!(status, 200, "{v}");
        assert!(eventually(WITHIN, || ok.count() == 2).await);
        let again = &ok.received()[1];
        assert_eq!(again.header("fanout-replay"), "true");
        assert_eq!(again.header("fanout-attempt"), "1");
        assert!(stripe_sdk_accepts(again.header("stripe-signature"), &again.body, "whsec_ok"));
        assert_ne!(again.header("fanout-delivery-id"), ok.received()[0].header("fanout-delivery-id"));
        assert_eq!(ok.received()[0].header("fanout-replay"), "", "a first delivery is not marked");

        // To a named target; to an unknown one; of an unknown event.
        down.store(false, Ordering::SeqCst);
        assert_eq!(post(&proxy, "/events/evt_a/replay?to=flaky").await.0, 200);
        assert!(eventually(WITHIN, || flaky.for_event("evt_a").len() == 1).await);
        assert!(stripe_sdk_accepts(
            flaky.for_event("evt_a")[0].header("stripe-signature"),
            &flaky.for_event("evt_a")[0].body,
            "whsec_flaky"
        ));
        assert_eq!(post(&proxy, "/events/evt_a/replay?to=nowhere").await.0, 409);
        assert_eq!(post(&proxy, "/events/evt_zzz/replay").await.0, 404);

        // A dropped event replayed is routed again by the current rules: still nowhere.
        let (status, v) = post(&proxy, "/events/evt_c/replay").await;
        assert_eq!(status, 409, "{v}");

        // The dead letter, replayed now that the target is up: delivered, and the event too.
        let dead = get(&proxy, "/dead-letters").await;
        let letters = dead["dead_letters"].as_array().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!((letters[0]["event_id"].as_str(), letters[0]["attempts"].as_u64()), (Some("evt_b"), Some(2)));
        assert!(letters[0]["error"].as_str().unwrap().contains("HTTP 500"));
        let id = letters[0]["id"].as_str().unwrap();
        let before = flaky.for_event("evt_b").len();
        assert_eq!(post(&proxy, &format!("/dead-letters/{id}/replay")).await.0, 200);
        assert!(eventually(WITHIN, || flaky.for_event("evt_b").len() == before + 1).await);
        assert_eq!(flaky.for_event("evt_b").last().unwrap().header("fanout-replay"), "true");
        assert_eq!(post(&proxy, &format!("/dead-letters/{id}/replay")).await.0, 404, "gone once replayed");
        assert!(eventually(WITHIN, || proxy.sled().dead_letter_count() == 0).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(get(&proxy, "/events/evt_b").await["state"], "delivered");

        // By filter: needs a filter; replays what it selects.
        assert_eq!(post(&proxy, "/replay").await.0, 400);
        let (status, v) = post(&proxy, "/replay?type=customer.*").await;
        assert_eq!((status, v["replayed"].as_u64()), (200, Some(1)), "{v}");
        assert!(eventually(WITHIN, || ok.count() == 3).await);

        // Purge one by id, then the rest by target.
        down.store(true, Ordering::SeqCst);
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_e", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || proxy.sled().dead_letter_count() == 1).await);
        let id = get(&proxy, "/dead-letters").await["dead_letters"][0]["id"].as_str().unwrap().to_owned();
        let (status, v) = proxy.admin(Method::DELETE, &format!("/dead-letters/{id}"), Some(TOKEN)).await;
        assert_eq!((status, v["purged"].as_u64()), (200, Some(1)), "{v}");
        assert_eq!(proxy.sled().dead_letter_count(), 0);
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_d", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || proxy.sled().dead_letter_count() == 1).await);
        assert_eq!(post(&proxy, "/dead-letters/purge").await.0, 400, "needs target or all");
        let (status, v) = post(&proxy, "/dead-letters/purge?target=flaky").await;
        assert_eq!((status, v["purged"].as_u64()), (200, Some(1)), "{v}");
        assert_eq!(proxy.sled().dead_letter_count(), 0);
        assert_eq!(
            get(&proxy, "/events/evt_d").await["attempts"].as_array().unwrap().last().unwrap()["outcome"],
            "purged"
        );
        assert_eq!(proxy.admin(Method::DELETE, "/dead-letters/12345", Some(TOKEN)).await.0, 404);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_target_queues_and_resumes_where_it_stopped() {
    bounded(async {
        let (proxy, ok, _flaky, _down) = setup().await;
        assert_eq!(post(&proxy, "/targets/ok/pause").await.0, 200);
        assert_eq!(post(&proxy, "/targets/nope/pause").await.0, 404);
        for i in 0..3 {
            assert_eq!(
                send_signed(&proxy.url("/hook"), &event(&format!("evt_{i}"), "customer.updated", "x")).await.0,
                200
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ok.count(), 0, "a paused target delivers nothing");
        let targets = get(&proxy, "/targets").await;
        let t = targets["targets"].as_array().unwrap().iter().find(|t| t["name"] == "ok").unwrap().clone();
        assert_eq!((t["paused"].as_bool(), t["queued"].as_i64()), (Some(true), Some(3)), "{t}");
        assert!(t["oldest_due_age_s"].is_u64());

        // Paused survives a restart.
        let yaml = proxy.running.config();
        let dir = proxy.dir;
        proxy.running.stop().await;
        let mut config = (*yaml).clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let running = fanout::serve::start(config).await.unwrap();
        let proxy = Proxy { running, dir };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ok.count(), 0, "still paused after a restart");

        assert_eq!(post(&proxy, "/targets/ok/resume").await.0, 200);
        assert!(eventually(WITHIN, || ok.count() == 3).await);
        let t = get(&proxy, "/targets").await;
        let t = t["targets"].as_array().unwrap().iter().find(|t| t["name"] == "ok").unwrap().clone();
        assert_eq!((t["paused"].as_bool(), t["queued"].as_i64()), (Some(false), Some(0)));
        assert!(t["last_success"].is_string());
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_verbs_print_tables_or_json_and_say_what_is_wrong() {
    bounded(async {
        let (proxy, ok, _flaky, down) = setup().await;
        three_events(&proxy, &ok).await;
        let admin = proxy.admin_url("");
        let env = [("FANOUT_ADMIN_URL", admin.as_str()), ("FANOUT_ADMIN_TOKEN", TOKEN)];
        let run = |args: &'static [&'static str]| fanout_cli(args, &env);

        let out = run(&["events"]).await;
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        assert!(text.starts_with("RECEIVED"), "{text}");
        assert!(text.contains("evt_b") && text.contains("invoice.paid") && text.contains("flaky:dead"), "{text}");
        let out = run(&["events", "--state", "delivered", "--json"]).await;
        let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        assert_eq!(ids(&v), ["evt_a"]);

        let out = run(&["event", "evt_b"]).await;
        let text = output_text(&out);
        assert!(text.contains("dead_lettered") && text.contains("HTTP 500") && text.contains("LATENCY"), "{text}");

        let out = run(&["dead-letters"]).await;
        let text = output_text(&out);
        assert!(text.contains("evt_b") && text.contains("flaky"), "{text}");
        down.store(false, Ordering::SeqCst);
        let out = run(&["dead-letters", "--replay", "--all"]).await;
        assert!(output_text(&out).contains("replayed 1 dead letters"), "{}", output_text(&out));
        let out = run(&["dead-letters", "--replay"]).await;
        assert!(!out.status.success() && output_text(&out).contains("--id N, --target NAME, or --all"));

        let out = run(&["replay", "evt_a"]).await;
        assert!(output_text(&out).contains("replay of evt_a queued to ok"), "{}", output_text(&out));
        assert!(eventually(WITHIN, || ok.count() == 2).await);
        let out = run(&["replay", "--type", "customer.*"]).await;
        assert!(output_text(&out).contains("replayed 1 events"), "{}", output_text(&out));
        let out = run(&["replay"]).await;
        assert!(!out.status.success() && output_text(&out).contains("say what to replay"));

        let out = run(&["pause", "ok"]).await;
        assert!(output_text(&out).contains("ok paused"), "{}", output_text(&out));
        let out = run(&["targets"]).await;
        let text = output_text(&out);
        let line = text.lines().find(|l| l.starts_with("ok ")).unwrap_or_default();
        assert!(line.contains("paused"), "{text}");
        assert!(run(&["resume", "ok"]).await.status.success());
        let out = run(&["pause", "nope"]).await;
        assert!(
            !out.status.success() && output_text(&out).contains("no target named \"nope\""),
            "{}",
            output_text(&out)
        );

        // A wrong token, and no proxy at all.
        let wrong = fanout_cli(
            &["events"],
            &[("FANOUT_ADMIN_URL", admin.as_str()), ("FANOUT_ADMIN_TOKEN", "wrong-wrong-wrong-wrong")],
        )
        .await;
        assert!(!wrong.status.success());
        assert!(
            output_text(&wrong).contains("wrong admin token") && output_text(&wrong).contains("--token"),
            "{}",
            output_text(&wrong)
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let nowhere = format!("http://{closed}");
        let out = fanout_cli(&["targets", "--admin", &nowhere], &[]).await;
        let text = output_text(&out);
        assert!(!out.status.success());
        assert!(text.contains("cannot reach the admin API") && text.contains("Is `fanout serve` running?"), "{text}");
        proxy.running.stop().await;
    })
    .await
}

/// Path segments are percent-decoded as paths are, not as forms: `+` stays a plus, `%2B` is a
/// plus, `%20` a space, `%2F` a slash inside one segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_path_segments_are_percent_decoded() {
    bounded(async {
        let (proxy, ..) = setup().await;
        let auth = [("authorization", format!("Bearer {TOKEN}"))];
        let owner = r#"{"owner": "ok"}"#;
        let (status, text) =
            request(Method::PUT, &proxy.admin_url("/owners/cus%2Bplus"), &auth, owner.to_owned()).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(get(&proxy, "/owners/cus+plus").await["id"], "cus+plus", "a plus is a plus");
        let (status, text) =
            request(Method::PUT, &proxy.admin_url("/owners/cus%20a%2Fb"), &auth, owner.to_owned()).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(get(&proxy, "/owners/cus%20a%2Fb").await["id"], "cus a/b");
        proxy.running.stop().await;
    })
    .await;
}
