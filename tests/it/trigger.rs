//! `fanout trigger`, the real binary against a real proxy: a flow routes by ownership as Stripe's
//! own events would, thin events are owned and routed by their related object, `--to-target`
//! deliveries verify with the target's secret, and bad input is refused clearly.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(10);

fn config(staging: &Sink) -> String {
    format!(
        "sources:\n  - {{name: stripe, path: /stripe/webhook, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: staging, url: \"{}\", secret: whsec_staging}}\n  - {{name: alice, kind: inbox, token: alice-inbox-token-0123456789, secret: whsec_alice}}\nroutes:\n  - {{name: alice-tagged, when: {{fields: [{{path: data.object.metadata.env, equals: alice}}]}}, to: [alice]}}\n  - {{name: meters, when: {{fields: [{{path: related_object.type, equals: billing.meter}}]}}, to: [alice]}}\ndefault: staging\n",
        staging.url()
    )
}

/// `fanout trigger ARGS` against `proxy`, through its webhook listener, signed as the source.
async fn trigger(proxy: &Proxy, args: &[&str]) -> (bool, String) {
    let (url, admin) = (proxy.url(""), proxy.admin_url(""));
    let mut all = vec!["trigger"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--proxy", &url, "--secret", SOURCE_SECRET, "--admin", &admin]);
    let out = fanout_cli(&all, &[]).await;
    (out.status.success(), output_text(&out))
}

/// The events a `--json` run sent, as the admin API shows them.
fn sent(text: &str) -> Vec<Value> {
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

/// A renewal that fails, sent as a flow about a customer a rule gave to alice, goes to alice's
/// inbox by ownership, every event of it; nothing reaches staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_follows_its_customer_to_the_developers_inbox() {
    bounded(async {
        let staging = Sink::ok().await;
        let proxy = Proxy::start(&config(&staging)).await;
        let (ok, text) =
            trigger(&proxy, &["customer.created", "--customer", "cus_alice1", "--metadata", "env=alice"]).await;
        assert!(ok, "{text}");
        assert!(text.contains("-> alice") && text.contains("via alice-tagged"), "{text}");

        let (ok, text) =
            trigger(&proxy, &["--flow", "subscription-renewal-failed", "--customer", "cus_alice1", "--json"]).await;
        assert!(ok, "{text}");
        let events = sent(&text);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["invoice.created", "invoice.finalized", "invoice.payment_failed", "customer.subscription.updated"]
        );
        for e in &events {
            assert_eq!(e["status"], 200, "{e}");
            let routed = &e["routed"]["destinations"];
            assert_eq!(routed[0]["name"], "alice", "{e}");
            // By the customer, then (the subscription event) by the subscription the invoices claimed.
            assert!(routed[0]["rule"].as_str().unwrap().starts_with("owner:"), "{e}");
            assert_eq!(e["routed"]["body"]["data"]["object"]["customer"], "cus_alice1");
        }
        assert_eq!(events[0]["routed"]["destinations"][0]["rule"], "owner:cus_alice1");
        let invoice = |i: usize| events[i]["routed"]["body"]["data"]["object"]["id"].clone();
        assert!(invoice(0) == invoice(2) && invoice(0).as_str().unwrap().starts_with("in_"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(staging.count(), 0, "staging got none of alice's renewal");

        // Run again: fresh ids, so the app's replay protection is not tripped and dedup lets it in.
        let (ok, again) =
            trigger(&proxy, &["--flow", "subscription-renewal-failed", "--customer", "cus_alice1", "--json"]).await;
        assert!(ok, "{again}");
        assert_ne!(sent(&again)[0]["event_id"], events[0]["event_id"]);
        assert_ne!(sent(&again)[0]["routed"]["body"]["data"]["object"]["id"], invoice(0));
        proxy.running.stop().await;
    })
    .await;
}

/// A v2 thin notification is routed by `related_object.type`, and its `related_object.id` is an
/// object it makes its destination the owner of: a later snapshot event about it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_events_route_by_related_object_and_own_it() {
    bounded(async {
        let staging = Sink::ok().await;
        let proxy = Proxy::start(&config(&staging)).await;
        let args = ["v1.billing.meter.error_report_triggered", "--set", "related_object.id=mtr_test_42", "--json"];
        let (ok, text) = trigger(&proxy, &args).await;
        assert!(ok, "{text}");
        let thin = &sent(&text)[0];
        assert_eq!(thin["routed"]["destinations"][0]["rule"], "meters", "{thin}");
        assert_eq!(thin["routed"]["body"]["object"], "v2.core.event");
        // A snapshot event naming the meter: no rule matches it, its owner does.
        let (ok, text) = trigger(&proxy, &["product.created", "--set", "data.object.id=mtr_test_42", "--json"]).await;
        assert!(ok, "{text}");
        let routed = &sent(&text)[0]["routed"]["destinations"][0];
        assert_eq!((routed["name"].as_str(), routed["rule"].as_str()), (Some("alice"), Some("owner:mtr_test_42")));
        proxy.running.stop().await;
    })
    .await;
}

/// `--to-target` posts straight to a target, signed with its own secret (the app's stock check
/// passes); `--print` sends nothing and prints a signature the source's secret verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_target_is_signed_with_the_targets_secret_and_print_sends_nothing() {
    bounded(async {
        let staging = Sink::ok().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routing.yaml");
        std::fs::write(&path, config(&staging)).unwrap();
        let path = path.to_str().unwrap();
        let out = fanout_cli(&["trigger", "invoice.paid", "--config", path, "--to-target", "staging"], &[]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        assert!(eventually(WITHIN, || staging.count() == 1).await);
        let got = &staging.received()[0];
        assert!(stripe_sdk_accepts(got.header("stripe-signature"), &got.body, "whsec_staging"));
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!((body["type"].as_str(), body["livemode"].as_bool()), (Some("invoice.paid"), Some(false)));

        let out = fanout_cli(&["trigger", "invoice.paid", "--config", path, "--to-target", "alice"], &[]).await;
        assert!(!out.status.success() && output_text(&out).contains("is an inbox"), "{}", output_text(&out));

        let out = fanout_cli(&["trigger", "charge.refunded", "--config", path, "--print"], &[]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (header, body) = text.trim_end().split_once('\n').unwrap();
        let header = header.strip_prefix("Stripe-Signature: ").unwrap();
        assert!(stripe_sdk_accepts(header, body.as_bytes(), SOURCE_SECRET), "the printed bytes verify");
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["type"], "charge.refunded");
        assert_eq!(staging.count(), 1, "--print sent nothing");
    })
    .await;
}

/// Bad input: each refusal names what is wrong, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_what_is_wrong() {
    bounded(async {
        let print =
            |more: &[&'static str]| [&["trigger", "invoice.paid", "--print", "--secret", "x"][..], more].concat();
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["trigger", "invoice.paied", "--print", "--secret", "x"],
                "no fixture for event type \"invoice.paied\"",
            ),
            (vec!["trigger", "--flow", "nope", "--print", "--secret", "x"], "no flow named \"nope\""),
            (print(&["--set", "data.object.id.x=1"]), "data.object.id is a string, not an object"),
            (print(&["--set", "data.object"]), "expected PATH=VALUE"),
            (print(&["--set", "data.object.amount_due=12x"]), "it is a number"),
            (print(&["--set", "data.object.x={\"a\":"]), "is not valid JSON"),
            (vec!["trigger", "invoice.paid", "--config", "/nonexistent"], "cannot read /nonexistent"),
            (vec!["trigger", "invoice.paid", "--secret", "x", "--source", "connect"], "--source names a source"),
            (vec!["trigger", "v2.core.account.updated", "--print", "--secret", "x", "--metadata", "a=b"], "thin event"),
            (
                vec![
                    "listen",
                    "--proxy",
                    "http://127.0.0.1:9",
                    "--token",
                    "t",
                    "--forward-to",
                    "http://x/",
                    "--events",
                    "invoice.*,",
                ],
                "separated by commas",
            ),
        ];
        for (args, want) in cases {
            let out = fanout_cli(&args, &[]).await;
            let text = output_text(&out);
            assert!(!out.status.success() && text.contains(want) && !text.contains("panicked"), "{args:?}: {text}");
        }
        let out = fanout_cli(&["trigger", "--list"], &[]).await;
        let text = output_text(&out);
        assert!(text.contains("invoice.payment_failed") && text.contains("subscription-renewal-failed"), "{text}");
    })
    .await;
}

/// `fanout listen --events 'invoice.*'` takes only invoices; a customer event stays in the inbox,
/// and a listener that takes every type gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_events_takes_only_those_types_and_leaves_the_rest_in_the_inbox() {
    bounded(async {
        let (staging, app) = (Sink::ok().await, Sink::ok().await);
        let proxy = Proxy::start(&config(&staging)).await;
        let mut ids = Vec::new();
        for t in ["customer.created", "invoice.paid", "invoice.payment_failed"] {
            let (ok, text) = trigger(&proxy, &[t, "--metadata", "env=alice", "--json"]).await;
            assert!(ok, "{text}");
            ids.push(sent(&text)[0]["event_id"].as_str().unwrap().to_owned());
        }
        let dir = tempfile::tempdir().unwrap();
        let token = "alice-inbox-token-0123456789";
        let mut invoices = Listen::spawn_with(
            &proxy.url(""),
            token,
            &app.url(),
            &dir.path().join("a.out"),
            &["--events", "invoice.*"],
        );
        assert!(eventually(WITHIN, || app.count() == 2).await, "{}", invoices.output());
        assert!(invoices.output().contains("forwarding invoice.* to"), "{}", invoices.output());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let types: Vec<String> = app
            .received()
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types.iter().filter(|t| t.starts_with("invoice.")).count(), 2, "{types:?}");
        let (_, customer) = proxy.admin(Method::GET, &format!("/events/{}", ids[0]), None).await;
        assert_eq!(customer["state"], "pending", "still in alice's inbox: {customer}");
        invoices.kill();

        let mut everything = Listen::spawn(&proxy.url(""), token, &app.url(), &dir.path().join("b.out"));
        // Put back for NOT_WANTED_AGAIN (5 s) by the first listener, then offered to this one.
        assert!(eventually(WITHIN + Duration::from_secs(5), || app.count() == 3).await, "{}", everything.output());
        assert_eq!(app.for_event(&ids[0]).len(), 1, "the customer event, once");
        everything.kill();
        proxy.running.stop().await;
    })
    .await;
}

/// `--wait` returns once each event is delivered, and fails when one is not in time: a test
/// script's next line never races the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_once_delivered_and_fails_when_not_in_time() {
    bounded(async {
        let staging = Sink::ok().await;
        let proxy = Proxy::start(&config(&staging)).await;
        let (ok, text) = trigger(&proxy, &["--flow", "payment-succeeded", "--wait", "10s", "--json"]).await;
        assert!(ok, "{text}");
        assert!(sent(&text).iter().all(|e| e["routed"]["state"] == "delivered"), "{text}");
        assert_eq!(staging.count(), 3, "each delivered before the command returned");
        // Alice's inbox has no listener: not delivered within the wait.
        let (ok, text) = trigger(&proxy, &["customer.created", "--metadata", "env=alice", "--wait", "300ms"]).await;
        assert!(!ok && text.contains("was not delivered within 300ms"), "{text}");
        proxy.running.stop().await;
    })
    .await;
}
