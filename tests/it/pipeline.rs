//! The core pipeline end to end: real proxy, real sled store in a temp dir, real HTTP sinks, all on
//! 127.0.0.1. Retry delays are shortened in the configs so the suite stays fast.

use std::time::Duration;

use crate::common::*;
use http::Method;

/// Sources and fast retries, then `rest` (targets, groups, routes).
fn config(rest: &str) -> String {
    format!(
        r#"
sources:
  - name: stripe
    path: /stripe/webhook
    secrets: ["whsec_old_rotated_out", "{SOURCE_SECRET}"]
retry:
  initial_delay: 20ms
  max_delay: 100ms
{rest}"#
    )
}

fn target(name: &str, sink: &Sink, extra: &str) -> String {
    format!("  - name: {name}\n    url: {}\n    secret: whsec_{name}_own\n{extra}", sink.url())
}

/// A malformed request: name, headers, body, expected status, expected reason.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, u16, &'a str);

const SETTLE: Duration = Duration::from_millis(300);
const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_each_event_to_its_owner_resigned_with_the_owners_secret() {
    bounded(async {
        let (staging, alice) = (Sink::ok().await, Sink::ok().await);
        let yaml = config(&format!(
            "targets:\n{}{}routes:\n  - name: alice-dev\n    when:\n      fields:\n        - path: [data.object.subscription_details.metadata.env, data.object.metadata.env]\n          equals: alice\n    to: [alice]\ndefault: staging\n",
            target("staging", &staging, ""),
            target("alice", &alice, "")
        ));
        let proxy = Proxy::start(&yaml).await;
        let url = proxy.url("/stripe/webhook");
        let for_alice = event("evt_alice", "customer.created", "alice");
        let for_staging = event("evt_staging", "invoice.paid", "staging");
        assert_eq!(send_signed(&url, &for_alice).await.0, 200);
        assert_eq!(send_signed(&url, &for_staging).await.0, 200);

        assert!(eventually(WITHIN, || alice.count() == 1 && staging.count() == 1).await);
        tokio::time::sleep(SETTLE).await;
        let got = &alice.received()[0];
        assert_eq!(got.body, for_alice.as_bytes(), "body must be forwarded byte for byte");
        let sig = got.header("stripe-signature");
        assert!(stripe_sdk_accepts(sig, &got.body, "whsec_alice_own"), "alice's SDK must accept {sig}");
        assert!(!stripe_sdk_accepts(sig, &got.body, SOURCE_SECRET), "must be re-signed, not passed through");
        assert_eq!(got.header("fanout-event-id"), "evt_alice");
        assert_eq!(got.header("fanout-route"), "alice-dev");
        assert_eq!(got.header("fanout-attempt"), "1");
        assert!(!got.header("fanout-delivery-id").is_empty());
        let got = &staging.received()[0];
        assert_eq!(got.header("fanout-event-id"), "evt_staging");
        assert_eq!(got.header("fanout-route"), "default");
        assert!(stripe_sdk_accepts(got.header("stripe-signature"), &got.body, "whsec_staging_own"));
        assert_eq!((alice.count(), staging.count()), (1, 1), "each event only to its owner");
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_answers_its_status_and_reason_and_stores_nothing() {
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = config(&format!("max_body_bytes: 4096\ntargets:\n{}default: all\n", target("all", &sink, "")));
        let proxy = Proxy::start(&yaml).await;
        let url = proxy.url("/stripe/webhook");
        let body = event("evt_bad", "customer.created", "x");
        let t = now();
        let good = |b: &str| stripe_signature(SOURCE_SECRET, t, b.as_bytes());
        let v1 = |h: String| h.split_once(',').unwrap().1.to_owned();
        let sig = ("stripe-signature", good(&body));
        let live = body.replace("\"livemode\":false", "\"livemode\":true");
        let no_id = r#"{"type":"customer.created","livemode":false}"#;
        let no_type = r#"{"id":"evt_x","livemode":false}"#;
        let big = format!("{{\"id\":\"evt_big\",\"type\":\"x\",\"pad\":\"{}\"}}", "a".repeat(5000));
        let cases: Vec<Case> = vec![
            ("missing header", vec![], body.clone(), 400, "missing Stripe-Signature"),
            ("two headers", vec![sig.clone(), sig.clone()], body.clone(), 400, "more than one Stripe-Signature"),
            ("no t", vec![("stripe-signature", v1(good(&body)))], body.clone(), 400, "no timestamp"),
            ("no v1", vec![("stripe-signature", format!("t={t},v0=abc"))], body.clone(), 400, "no v1"),
            ("garbled", vec![("stripe-signature", "nonsense".into())], body.clone(), 400, "malformed"),
            ("bad hex", vec![("stripe-signature", format!("t={t},v1=xyz"))], body.clone(), 400, "malformed"),
            (
                "wrong secret",
                vec![("stripe-signature", stripe_signature("whsec_wrong", t, body.as_bytes()))],
                body.clone(),
                400,
                "no signature matches",
            ),
            ("other body", vec![("stripe-signature", good("{}"))], body.clone(), 400, "no signature matches"),
            (
                "replayed capture",
                vec![("stripe-signature", stripe_signature(SOURCE_SECRET, t - 400, body.as_bytes()))],
                body.clone(),
                400,
                "outside the tolerance",
            ),
            (
                "from the future",
                vec![("stripe-signature", stripe_signature(SOURCE_SECRET, t + 400, body.as_bytes()))],
                body.clone(),
                400,
                "outside the tolerance",
            ),
            ("not json", vec![("stripe-signature", good("hello"))], "hello".into(), 400, "body is not JSON"),
            ("no id", vec![("stripe-signature", good(no_id))], no_id.into(), 400, "no string \\\"id\\\""),
            ("no type", vec![("stripe-signature", good(no_type))], no_type.into(), 400, "no string \\\"type\\\""),
            ("livemode", vec![("stripe-signature", good(&live))], live.clone(), 400, "livemode event refused"),
            ("too large", vec![("stripe-signature", good(&big))], big.clone(), 413, "4096-byte limit"),
        ];
        for (name, headers, body, status, reason) in &cases {
            let (got, text) = post(&url, headers, body.clone()).await;
            assert_eq!(got, *status, "{name}: {text}");
            assert!(text.contains(reason), "{name}: expected {reason:?} in {text}");
            assert!(!text.contains(SOURCE_SECRET), "{name}: secret leaked");
        }
        let (got, _) = post(&proxy.url("/stripe/other"), std::slice::from_ref(&sig), body.clone()).await;
        assert_eq!(got, 404);
        let (got, _) = post(&proxy.url("/stripe/webhook/../webhook"), std::slice::from_ref(&sig), body.clone()).await;
        assert_eq!(got, 404, "paths are matched exactly");
        let (got, text) = request(Method::GET, &url, &[], "").await;
        assert_eq!((got, text.contains("POST only")), (405, true));

        tokio::time::sleep(SETTLE).await;
        assert_eq!(proxy.sled().event_count(), 0, "nothing stored");
        assert_eq!(sink.count(), 0, "nothing delivered");
        // The same event, correctly signed, is accepted: the rejections were for the reasons given.
        assert_eq!(send_signed(&url, &body).await.0, 200);
        assert_eq!(proxy.sled().event_count(), 1);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_event_is_acknowledged_but_not_fanned_out_again_even_after_restart() {
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = config(&format!("targets:\n{}default: all\n", target("all", &sink, "")));
        let proxy = Proxy::start(&yaml).await;
        let body = event("evt_once", "customer.created", "x");
        let (status, text) = send_signed(&proxy.url("/stripe/webhook"), &body).await;
        assert_eq!((status, text.contains("duplicate")), (200, false));
        let (status, text) = send_signed(&proxy.url("/stripe/webhook"), &body).await;
        assert_eq!((status, text.contains("duplicate")), (200, true));
        assert!(eventually(WITHIN, || sink.count() == 1).await);
        let proxy = proxy.restart(&yaml).await;
        let (status, text) = send_signed(&proxy.url("/stripe/webhook"), &body).await;
        assert_eq!((status, text.contains("duplicate")), (200, true));
        tokio::time::sleep(SETTLE).await;
        assert_eq!(sink.count(), 1);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_group_counts_one_success_and_cancels_the_other_members_retries() {
    bounded(async {
        let failing = Sink::with(|_| (500, Duration::ZERO)).await;
        let slow_ok = Sink::with(|_| (200, Duration::from_millis(300))).await;
        let yaml = config(&format!(
            "targets:\n{}{}groups:\n  - name: pool\n    mode: any\n    members: [a, b]\ndefault: pool\n",
            // a's retries wait long enough that b's success finds them queued.
            target("a", &failing, "    retry:\n      initial_delay: 5s\n"),
            target("b", &slow_ok, "")
        ));
        let proxy = Proxy::start(&yaml).await;
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &event("evt_g", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || slow_ok.count() == 1).await);
        let store = proxy.sled();
        assert!(eventually(WITHIN, || store.in_flight() == 0).await);
        assert_eq!(failing.count(), 1, "a was tried in parallel");
        assert_eq!(store.queued("a"), 0, "a's pending retry was cancelled by b's success");
        assert_eq!(store.dead_letter_count(), 0);
        assert_eq!(slow_ok.received()[0].header("fanout-group"), "pool");
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_group_tries_the_next_member_only_when_the_current_one_fails() {
    bounded(async {
        let (primary, secondary) = (Sink::with(|_| (503, Duration::ZERO)).await, Sink::ok().await);
        let healthy = Sink::ok().await;
        let yaml = config(&format!(
            "targets:\n{}{}{}groups:\n  - name: down-first\n    mode: failover\n    members: [p, s]\n  - name: up-first\n    mode: failover\n    members: [h, s]\nroutes:\n  - name: r1\n    when: {{type: invoice.paid}}\n    to: [down-first]\ndefault: up-first\n",
            target("p", &primary, ""),
            target("s", &secondary, ""),
            target("h", &healthy, "")
        ));
        let proxy = Proxy::start(&yaml).await;
        let url = proxy.url("/stripe/webhook");
        assert_eq!(send_signed(&url, &event("evt_f1", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || secondary.count() == 1).await);
        assert_eq!(primary.count(), 1);
        let got = &secondary.received()[0];
        assert!(stripe_sdk_accepts(got.header("stripe-signature"), &got.body, "whsec_s_own"));
        assert_eq!(got.header("fanout-attempt"), "2");

        assert_eq!(send_signed(&url, &event("evt_f2", "customer.created", "x")).await.0, 200);
        assert!(eventually(WITHIN, || healthy.count() == 1).await);
        tokio::time::sleep(SETTLE).await;
        assert_eq!(secondary.count(), 1, "the second member is not tried while the first succeeds");
        assert!(eventually(WITHIN, || proxy.sled().in_flight() == 0).await);
        assert_eq!(proxy.sled().queued("p") + proxy.sled().queued("s"), 0);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_retried_with_backoff_until_it_succeeds() {
    bounded(async {
        let flaky = Sink::with(|n| (if n < 3 { 500 } else { 200 }, Duration::ZERO)).await;
        let yaml = config(&format!("targets:\n{}default: t\n", target("t", &flaky, "")));
        let proxy = Proxy::start(&yaml).await;
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &event("evt_r", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || flaky.count() == 4).await);
        tokio::time::sleep(SETTLE).await;
        let got = flaky.received();
        assert_eq!(got.len(), 4, "no delivery after the success");
        let attempts: Vec<&str> = got.iter().map(|r| r.header("fanout-attempt")).collect();
        assert_eq!(attempts, ["1", "2", "3", "4"]);
        assert!(got.iter().all(|r| r.header("fanout-delivery-id") == got[0].header("fanout-delivery-id")));
        for pair in got.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(gap >= Duration::from_millis(20), "retried after {gap:?}, before initial_delay");
        }
        // Each attempt carries a fresh signature the target accepts.
        assert!(got.iter().all(|r| stripe_sdk_accepts(r.header("stripe-signature"), &r.body, "whsec_t_own")));
        assert_eq!(proxy.sled().dead_letter_count(), 0);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_moves_the_job_to_dead_letters_with_the_last_error() {
    bounded(async {
        let down = Sink::with(|_| (500, Duration::ZERO)).await;
        let redirecting = Sink::with(|_| (302, Duration::ZERO)).await;
        let yaml = config(&format!(
            "targets:\n{}{}routes:\n  - name: all\n    when: {{}}\n    to: [down, moved]\n",
            target("down", &down, "    retry:\n      max_attempts: 3\n"),
            target("moved", &redirecting, "    retry:\n      max_attempts: 1\n")
        ));
        let proxy = Proxy::start(&yaml).await;
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &event("evt_d", "invoice.paid", "x")).await.0, 200);
        let store = proxy.sled();
        assert!(eventually(WITHIN, || store.dead_letter_count() == 2).await);
        tokio::time::sleep(SETTLE).await;
        assert_eq!(down.count(), 3);
        assert_eq!(redirecting.count(), 1, "a redirect is a failure and is not followed");
        let dead = store.dead_letters(10).unwrap();
        let down_letter = dead.iter().find(|d| d.job.target == "down").unwrap();
        assert!(
            down_letter.error.contains("after 3 attempts") && down_letter.error.contains("HTTP 500"),
            "{}",
            down_letter.error
        );
        assert_eq!(down_letter.job.event_id, "evt_d");
        let moved = dead.iter().find(|d| d.job.target == "moved").unwrap();
        assert!(moved.error.contains("redirects are not followed"), "{}", moved.error);
        assert_eq!(store.queued("down") + store.in_flight(), 0);
        proxy.running.stop().await;
    })
    .await
}

/// A target that answers 410 Gone is dead-lettered after that one attempt, saying so; a 404
/// beside it is retried as any failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_answers_410_gone_is_dead_lettered_at_once() {
    bounded(async {
        let gone = Sink::with(|_| (410, Duration::ZERO)).await;
        let missing = Sink::with(|_| (404, Duration::ZERO)).await;
        let yaml = config(&format!(
            "targets:\n{}{}routes:\n  - name: all\n    when: {{}}\n    to: [gone, missing]\n",
            target("gone", &gone, "    retry:\n      max_attempts: 5\n"),
            target("missing", &missing, "    retry:\n      max_attempts: 3\n")
        ));
        let proxy = Proxy::start(&yaml).await;
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &event("evt_g", "invoice.paid", "x")).await.0, 200);
        let store = proxy.sled();
        assert!(eventually(WITHIN, || store.dead_letter_count() == 2).await);
        tokio::time::sleep(SETTLE).await;
        assert_eq!((gone.count(), missing.count()), (1, 3), "410: one attempt; 404: every attempt");
        let dead = store.dead_letters(10).unwrap();
        let letter = dead.iter().find(|d| d.job.target == "gone").unwrap();
        assert!(letter.error.contains("410 Gone") && letter.error.contains("not retried"), "{}", letter.error);
        proxy.running.stop().await;
    })
    .await
}

/// An explicit `schedule`: each retry waits its step (plus up to 10%), the last step repeating.
/// The gaps are checked loosely (at least the step), never as a timed test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_schedule_is_followed() {
    bounded(async {
        let flaky = Sink::with(|n| (if n < 4 { 503 } else { 200 }, Duration::ZERO)).await;
        let yaml = config(&format!(
            "targets:\n{}default: t\n",
            target("t", &flaky, "    retry:\n      schedule: [100ms, 600ms, 300ms]\n")
        ));
        let proxy = Proxy::start(&yaml).await;
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &event("evt_s", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || flaky.count() == 5).await, "four failures, then delivered");
        let got = flaky.received();
        let gaps: Vec<Duration> = got.windows(2).map(|p| p[1].at - p[0].at).collect();
        for (gap, step) in gaps.iter().zip([100, 600, 300, 300]) {
            assert!(
                *gap >= Duration::from_millis(step),
                "a retry {gap:?} after the last, before its {step} ms step: {gaps:?}"
            );
        }
        assert!(gaps[1] > gaps[0] && gaps[1] > gaps[2], "the schedule's shape, not exponential: {gaps:?}");
        proxy.running.stop().await;
    })
    .await
}

/// Deliveries one after another in time order, as a sink saw them.
fn most_in_any_window(got: &[Received], window: Duration) -> usize {
    let times: Vec<std::time::Instant> = got.iter().map(|r| r.at).collect();
    (0..times.len()).map(|i| times[i..].iter().take_while(|t| **t - times[i] < window).count()).max().unwrap_or(0)
}

/// `rate: 20/s`: 20 queued events take about a second to deliver however many attempts the
/// concurrency allows, and a replay of them is held to the same rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_rate_holds_for_deliveries_and_replays() {
    bounded(async {
        let sink = Sink::ok().await;
        let yaml =
            config(&format!("targets:\n{}default: t\n", target("t", &sink, "    rate: 20/s\n    concurrency: 16\n")));
        let proxy = Proxy::start(&yaml).await;
        for i in 0..20 {
            assert_eq!(
                send_signed(&proxy.url("/stripe/webhook"), &event(&format!("evt_rl{i}"), "invoice.paid", "x")).await.0,
                200
            );
        }
        assert!(eventually(WITHIN, || sink.count() == 20).await);
        let (status, v) = proxy.admin(http::Method::POST, "/replay?type=invoice.paid", None).await;
        assert_eq!(status, 200, "{v}");
        assert!(eventually(WITHIN, || sink.count() == 40).await, "replayed");
        let got = sink.received();
        for (name, part) in [("deliveries", &got[..20]), ("replays", &got[20..])] {
            let span = part[19].at - part[0].at;
            assert!(span >= Duration::from_millis(900), "{name}: 20 at 20/s took only {span:?}");
            let most = most_in_any_window(part, Duration::from_millis(500));
            assert!(most <= 11, "{name}: {most} in one half second (20/s allows 10, +1 at its edge)");
        }
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_pending_retries() {
    bounded(async {
        let sink = Sink::with(|n| (if n == 0 { 500 } else { 200 }, Duration::ZERO)).await;
        let yaml = config(&format!(
            "targets:\n{}default: t\n",
            target("t", &sink, "    retry:\n      initial_delay: 700ms\n")
        ));
        let proxy = Proxy::start(&yaml).await;
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &event("evt_p", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || sink.count() == 1 && proxy.sled().queued("t") == 1).await);
        let proxy = proxy.restart(&yaml).await;
        assert_eq!(sink.count(), 1, "the retry was not due before the stop");
        assert!(eventually(WITHIN, || sink.count() == 2).await);
        assert_eq!(sink.received()[1].header("fanout-attempt"), "2");
        assert!(eventually(WITHIN, || proxy.sled().queued("t") + proxy.sled().in_flight() == 0).await);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_does_not_delay_a_fast_one() {
    bounded(async {
        let slow = Sink::with(|_| (200, Duration::from_secs(3))).await;
        let fast = Sink::ok().await;
        let yaml = config(&format!(
            "targets:\n{}{}routes:\n  - name: both\n    when: {{}}\n    to: [slow, fast]\n",
            target("slow", &slow, "    concurrency: 1\n"),
            target("fast", &fast, "")
        ));
        let proxy = Proxy::start(&yaml).await;
        for i in 0..10 {
            let (status, _) =
                send_signed(&proxy.url("/stripe/webhook"), &event(&format!("evt_s{i}"), "invoice.paid", "x")).await;
            assert_eq!(status, 200, "acknowledging does not wait for delivery");
        }
        assert!(eventually(Duration::from_secs(2), || fast.count() == 10).await, "fast got {}", fast.count());
        assert_eq!(slow.count(), 0, "the slow target is still on its first delivery");
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_verifies_with_its_own_secrets() {
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = config(&format!(
            "  - name: connect\n    path: /stripe/connect\n    secrets: whsec_connect_only\ntargets:\n{}default: t\n",
            target("t", &sink, "")
        ))
        // The second source is appended to the `sources:` list of `config()`.
        .replacen("retry:\n", "", 1)
        .replacen("  initial_delay: 20ms\n  max_delay: 100ms\n", "", 1);
        let proxy = Proxy::start(&yaml).await;
        let body = event("evt_connect", "account.updated", "x");
        let signed = |secret: &str| vec![("stripe-signature", stripe_signature(secret, now(), body.as_bytes()))];
        let connect = proxy.url("/stripe/connect");
        assert_eq!(post(&connect, &signed(SOURCE_SECRET), body.clone()).await.0, 400, "account secret on connect");
        assert_eq!(post(&connect, &signed("whsec_connect_only"), body.clone()).await.0, 200);
        let rotated = proxy.url("/stripe/webhook");
        let other = event("evt_rotated", "account.updated", "x");
        let old = vec![("stripe-signature", stripe_signature("whsec_old_rotated_out", now(), other.as_bytes()))];
        assert_eq!(post(&rotated, &old, other.clone()).await.0, 200, "either secret of a rotation is valid");
        assert!(eventually(WITHIN, || sink.count() == 2).await);
        proxy.running.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = config(&format!("header_read_timeout: 300ms\ntargets:\n{}default: t\n", target("t", &sink, "")));
        let proxy = Proxy::start(&yaml).await;
        let mut conn = tokio::net::TcpStream::connect(proxy.running.addr).await.unwrap();
        conn.write_all(b"POST /stripe/webhook HTTP/1.1\r\nHost: x\r\nStripe-Sig").await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        // The proxy closes the connection (possibly after a 408) instead of waiting forever.
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection still open after 5s");
        assert!(started.elapsed() >= Duration::from_millis(250), "closed before the timeout: {:?}", started.elapsed());
        // And it still serves others.
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &event("evt_after", "x.y", "x")).await.0, 200);
        proxy.running.stop().await;
    })
    .await
}
