//! The console in a real browser (headless chromium over WebDriver): signing in, events listed
//! live, an event's attempts and its replay, a dead letter replayed, a developer's narrow view,
//! hostile payloads that must execute nothing, and cross-site or token-less posts refused. Every
//! test saves screenshots under `target/console-screenshots/`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanout_store::testing::TestPostgres;
use fantoccini::Locator;
use http::Method;

use crate::common::browser::Browser;
use crate::common::*;

const ADMIN: &str = "console-admin-token";
const ALICE: &str = "alice-inbox-token";
const BOB: &str = "bob-inbox-token-of-length";
const PAGE: Duration = Duration::from_secs(15);

struct Setup {
    proxy: Proxy,
    staging: Sink,
    flaky: Sink,
    doomed: Sink,
    /// While set, `doomed` answers 500.
    down: Arc<AtomicBool>,
}

/// staging (the default), flaky (fails twice, then recovers), doomed (one attempt, then dead
/// letters, while `down`), and two developers' inboxes, routed by `metadata.env`.
async fn setup(store: &str) -> Setup {
    let staging = Sink::ok().await;
    let flaky = Sink::with(|n| (if n < 2 { 503 } else { 200 }, Duration::ZERO)).await;
    let down = Arc::new(AtomicBool::new(true));
    let d = down.clone();
    let doomed = Sink::with(move |_| (if d.load(Ordering::SeqCst) { 500 } else { 200 }, Duration::ZERO)).await;
    let route = |env: &str| {
        format!("  - {{name: {env}-env, when: {{fields: [{{path: data.object.metadata.env, equals: {env}}}]}}, to: [{env}]}}\n")
    };
    let yaml = format!(
        "{store}admin: {{token: {ADMIN}}}\nsources:\n  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}\n\
         retry: {{initial_delay: 300ms, max_delay: 600ms}}\ntargets:\n\
         \x20 - {{name: staging, url: \"{}\", secret: whsec_staging, timeout: 2s}}\n\
         \x20 - {{name: flaky, url: \"{}\", secret: whsec_flaky, timeout: 2s}}\n\
         \x20 - {{name: doomed, url: \"{}\", secret: whsec_doomed, timeout: 2s, retry: {{max_attempts: 1}}}}\n\
         \x20 - {{name: alice, kind: inbox, token: {ALICE}, secret: whsec_alice, timeout: 2s}}\n\
         \x20 - {{name: bob, kind: inbox, token: {BOB}, secret: whsec_bob, timeout: 2s}}\n\
         routes:\n{}{}{}{}\x20 - {{name: both, when: {{fields: [{{path: data.object.metadata.env, equals: both}}]}}, to: [alice, bob]}}\n\
         default: staging\n",
        staging.url(),
        flaky.url(),
        doomed.url(),
        route("alice"),
        route("bob"),
        route("flaky"),
        route("doomed"),
    );
    Setup { proxy: Proxy::start(&yaml).await, staging, flaky, doomed, down }
}

async fn sign_in(b: &Browser, proxy: &Proxy, token: &str) {
    b.goto(&proxy.admin_url("/ui/login")).await;
    b.fill("#token", token).await;
    b.click("form[action='/ui/login'] button").await;
}

/// A wrong token is refused and leaves no session; the admin token signs in as an operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_the_admin_token_signs_in() {
    let Some(b) = Browser::start("sign-in").await else { return };
    bounded(async {
        let s = setup("").await;
        b.goto(&s.proxy.admin_url("/ui/events")).await;
        assert!(b.client.current_url().await.unwrap().path().ends_with("/ui/login"), "signed out: to the sign-in");
        sign_in(&b, &s.proxy, "not-a-token").await;
        b.wait_for_text("Wrong token", PAGE).await;
        b.screenshot("wrong-token").await;
        b.goto(&s.proxy.admin_url("/ui/events")).await;
        assert!(b.client.current_url().await.unwrap().path().ends_with("/ui/login"), "still signed out");
        sign_in(&b, &s.proxy, ADMIN).await;
        let text = b.wait_for_text("Flow, last hour", PAGE).await;
        assert!(text.contains("operator") && text.contains("staging"), "{text}");
        // The session cookie is out of the page's reach (HttpOnly).
        assert_eq!(b.eval("return document.cookie").await, serde_json::json!(""));
        b.screenshot("overview-empty").await;
    })
    .await;
    b.close().await;
}

async fn events_are_listed_live_and_an_event_shows_its_attempts_and_replays(b: &Browser, store: &str) {
    let s = setup(store).await;
    sign_in(b, &s.proxy, ADMIN).await;
    b.wait_for_text("Flow, last hour", PAGE).await;
    b.goto(&s.proxy.admin_url("/ui/events")).await;
    b.wait_for_text("No events match", PAGE).await;
    // Marks this page: still marked after the events appear means the page did not reload.
    b.eval("window.__sameDocument = true; return null").await;
    let hook = s.proxy.url("/hook");
    assert_eq!(send_signed(&hook, &event("evt_console_1", "customer.created", "staging")).await.0, 200);
    assert_eq!(send_signed(&hook, &event("evt_console_2", "invoice.payment_failed", "flaky")).await.0, 200);
    b.wait_for_text("evt_console_1", PAGE).await;
    b.wait_for_text("evt_console_2", PAGE).await;
    assert_eq!(b.eval("return window.__sameDocument === true").await, serde_json::json!(true), "listed live");
    b.screenshot("events-live").await;

    // The flaky target fails twice, then delivers: the page shows all three attempts.
    b.click("a[href='/ui/events/evt_console_2']").await;
    let text = b.wait_for_text("delivered attempt 3", PAGE).await;
    assert!(text.contains("rule flaky-env"), "why it went there: {text}");
    assert_eq!(text.matches("· HTTP 503").count(), 2, "{text}");
    assert!(text.contains("\"invoice.payment_failed\""), "the body: {text}");
    b.screenshot("event-failing-then-recovering").await;
    assert_eq!(s.flaky.for_event("evt_console_2").len(), 3);

    // Replayed from the page: the new attempt appears without a reload.
    b.click("section.replay button").await;
    b.wait_for_text("Replay queued", PAGE).await;
    b.eval("window.__sameDocument = true; return null").await;
    b.wait_for_text("delivered attempt 1", PAGE).await;
    assert!(eventually(PAGE, || s.flaky.for_event("evt_console_2").len() == 4).await, "replayed to flaky");
    let replayed = &s.flaky.for_event("evt_console_2")[3];
    assert_eq!(replayed.header("fanout-replay"), "true");
    assert!(stripe_sdk_accepts(replayed.header("stripe-signature"), &replayed.body, "whsec_flaky"));
    assert_eq!(b.eval("return window.__sameDocument === true").await, serde_json::json!(true));
    b.screenshot("event-replayed").await;

    // Searching the customer finds its event and its owner.
    b.goto(&s.proxy.admin_url("/ui/events?q=cus_evt_console_2")).await;
    let text = b.wait_for_text("Owner of cus_evt_console_2", PAGE).await;
    assert!(text.contains("flaky (claimed by flaky-env"), "{text}");
    assert_eq!(b.count("tr[data-event='evt_console_2']").await, 1, "{text}");
    assert_eq!(b.count("tr[data-event]").await, 1, "only the event that names it: {text}");
    assert_eq!(s.staging.for_event("evt_console_1").len(), 1);

    // The overview: each target's last hour, and the flow from the source through the rules.
    b.goto(&s.proxy.admin_url("/ui/")).await;
    let text = b.wait_for_text("Flow, last hour", PAGE).await;
    let flaky_row = b.text_of("tr[data-target='flaky']").await;
    // Queued, in flight, dead; then delivered and failed in the last hour (the replay's too).
    assert!(flaky_row.contains("delivering") && flaky_row.contains(" 2 2 "), "{flaky_row}");
    let flow = b.text_of("svg.flow").await;
    for node in ["stripe · 2", "flaky-env · 1", "default · 1", "flaky · 1", "staging · 1"] {
        assert!(flow.contains(node), "{node} in {flow}");
    }
    assert!(text.contains("operator"));
    b.screenshot("overview").await;
}

/// Sign in, send signed events through the real proxy and see them listed live; open one and
/// see its attempts (a failing, then recovering target); replay it and see the new attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_live_and_an_event_shows_its_attempts_and_replays_on_sled() {
    let Some(b) = Browser::start("events-sled").await else { return };
    bounded(events_are_listed_live_and_an_event_shows_its_attempts_and_replays(&b, "")).await;
    b.close().await;
}

/// The same on the Postgres engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_live_and_an_event_shows_its_attempts_and_replays_on_postgres() {
    let Some(pg) = TestPostgres::start() else { return };
    let Some(b) = Browser::start("events-postgres").await else { return };
    let store = format!("store: {{engine: postgres, url: \"{}\", pool: 4}}\n", pg.url());
    bounded(events_are_listed_live_and_an_event_shows_its_attempts_and_replays(&b, &store)).await;
    b.close().await;
}

/// A dead letter is replayed from its page, through the confirmation step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_from_the_page() {
    let Some(b) = Browser::start("dead-letter").await else { return };
    bounded(async {
        let s = setup("").await;
        assert_eq!(send_signed(&s.proxy.url("/hook"), &event("evt_doomed", "invoice.paid", "doomed")).await.0, 200);
        assert!(eventually(PAGE, || s.doomed.for_event("evt_doomed").len() == 1).await);
        sign_in(&b, &s.proxy, ADMIN).await;
        b.wait_for_text("Flow, last hour", PAGE).await;
        b.goto(&s.proxy.admin_url("/ui/dead-letters")).await;
        let text = b.wait_for_text("evt_doomed", PAGE).await;
        assert!(text.contains("HTTP 500"), "{text}");
        b.screenshot("dead-letters").await;
        s.down.store(false, Ordering::SeqCst);
        b.click("tr[data-dead] button.replay").await;
        let text = b.wait_for_text("Are you sure?", PAGE).await;
        assert!(text.contains("Replay dead letter") && text.contains("event evt_doomed to doomed"), "{text}");
        assert_eq!(s.doomed.for_event("evt_doomed").len(), 1, "nothing happens before the confirmation");
        b.screenshot("dead-letter-confirm").await;
        b.click("#confirm").await;
        b.wait_for_text("1 dead letter(s) queued for delivery again", PAGE).await;
        b.wait_for_text("No dead letters.", PAGE).await;
        assert!(eventually(PAGE, || s.doomed.for_event("evt_doomed").len() == 2).await, "delivered again");
        assert_eq!(s.doomed.for_event("evt_doomed")[1].status, 200);
        b.screenshot("dead-letter-replayed").await;
    })
    .await;
    b.close().await;
}

/// A developer signed in with their inbox token sees only their inbox's events, and may
/// replay those to their own inbox only; other pages are closed to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_sees_only_their_own_inboxs_events() {
    let Some(b) = Browser::start("developer").await else { return };
    bounded(async {
        let s = setup("").await;
        let hook = s.proxy.url("/hook");
        let sent =
            [("evt_alice_1", "alice"), ("evt_bob_1", "bob"), ("evt_staging_1", "staging"), ("evt_both_1", "both")];
        for (id, env) in sent {
            assert_eq!(send_signed(&hook, &event(id, "customer.created", env)).await.0, 200);
        }
        assert!(eventually(PAGE, || s.staging.for_event("evt_staging_1").len() == 1).await);
        sign_in(&b, &s.proxy, ALICE).await;
        let text = b.wait_for_text("Events routed to alice", PAGE).await;
        assert!(text.contains("evt_alice_1") && text.contains("evt_both_1"), "{text}");
        assert!(!text.contains("evt_bob_1") && !text.contains("evt_staging_1"), "{text}");
        // An event routed to alice and bob shows alice's part only: no other inbox's name.
        let both = b.text_of("tr[data-event='evt_both_1']").await;
        assert!(both.contains("alice") && !both.contains("bob"), "{both}");
        assert!(!text.contains("Dead letters") && !text.contains("Overview"), "operator tabs hidden: {text}");
        b.screenshot("developer-events").await;
        // Another inbox's event is as absent as one that does not exist.
        b.goto(&s.proxy.admin_url("/ui/events/evt_bob_1")).await;
        b.wait_for_text("no event evt_bob_1", PAGE).await;
        b.goto(&s.proxy.admin_url("/ui/events?q=evt_staging_1")).await;
        b.wait_for_text("no event evt_staging_1", PAGE).await;
        for page in ["/ui/dead-letters", "/ui/targets", "/ui/config", "/ui/owners", "/ui/"] {
            b.goto(&s.proxy.admin_url(page)).await;
            let text = b.text().await;
            assert!(
                text.contains("for operators") || (page == "/ui/" && text.contains("Events routed to alice")),
                "{page}: {text}"
            );
        }
        // An operator's action posted with the developer's own valid CSRF token is refused.
        b.eval(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/ui/targets/staging/pause'; \
             const c = document.querySelector('form.signout input[name=csrf]').cloneNode(); f.appendChild(c); \
             document.body.appendChild(f); f.submit(); return null",
        )
        .await;
        b.wait_for_text("for operators", PAGE).await;
        let (_, targets) = s.proxy.admin(Method::GET, "/targets", Some(ADMIN)).await;
        assert!(targets["targets"][0]["paused"] == false, "{targets}");
        b.goto(&s.proxy.admin_url("/ui/events/evt_both_1")).await;
        let text = b.wait_for_text("rule both", PAGE).await;
        assert!(!text.contains("bob"), "another inbox's part is not shown: {text}");
        // Their own event replays to their inbox, whatever destination the form names.
        b.goto(&s.proxy.admin_url("/ui/events/evt_alice_1")).await;
        b.wait_for_text("rule alice-env", PAGE).await;
        let options = b.client.find_all(Locator::Css("#to option")).await.unwrap();
        assert_eq!(options.len(), 1, "only their inbox to replay to");
        b.eval("document.querySelector('#to option').value = 'staging'; return null").await;
        b.click("section.replay button").await;
        b.wait_for_text("Replay queued", PAGE).await;
        b.screenshot("developer-event").await;
        let (_, v) = s.proxy.admin(Method::GET, "/events/evt_alice_1", Some(ADMIN)).await;
        let replays: Vec<&str> = v["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "replay_queued")
            .map(|a| a["target"].as_str().unwrap())
            .collect();
        assert_eq!(replays, ["alice"], "{v}");
        assert!(s.staging.for_event("evt_alice_1").is_empty());
        // An inbox created at run time signs in the same way; rotating its token ends the session.
        let body = r#"{"name": "carol"}"#;
        let (status, created) = request(
            Method::POST,
            &s.proxy.admin_url("/inboxes"),
            &[("authorization", format!("Bearer {ADMIN}")), ("content-type", "application/json".into())],
            body,
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let carol: serde_json::Value = serde_json::from_str(&created).unwrap();
        b.click("form.signout button").await;
        b.wait_for_text("Sign in to fanout", PAGE).await;
        sign_in(&b, &s.proxy, carol["token"].as_str().unwrap()).await;
        b.wait_for_text("Events routed to carol", PAGE).await;
        let (status, _) = s.proxy.admin(Method::POST, "/inboxes/carol/rotate", Some(ADMIN)).await;
        assert_eq!(status, 200);
        b.goto(&s.proxy.admin_url("/ui/events")).await;
        assert!(b.client.current_url().await.unwrap().path().ends_with("/ui/login"), "signed out by the rotation");
    })
    .await;
    b.close().await;
}

/// A customer name and metadata that are markup execute nothing and show as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_execute_nothing() {
    let Some(b) = Browser::start("hostile").await else { return };
    bounded(async {
        let s = setup("").await;
        let img = "<img src=x onerror=\"window.__pwned=1\">";
        let script = "<script>window.__pwned=2</script>";
        let body = serde_json::json!({
            "id": "evt_hostile", "object": "event", "type": "customer.created", "livemode": false,
            "api_version": "2024-06-20", "created": now(),
            "data": {"object": {"id": "cus_hostile", "object": "customer", "name": img,
                     "description": "<svg onload=window.__pwned=3>",
                     "metadata": {"env": "staging", "note": script}}}
        });
        assert_eq!(send_signed(&s.proxy.url("/hook"), &body.to_string()).await.0, 200);
        sign_in(&b, &s.proxy, ADMIN).await;
        b.wait_for_text("Flow, last hour", PAGE).await;
        let made_from_payload = "main img, main script, main svg [onload], main [onerror], main [onload]";
        for page in ["/ui/events", "/ui/events/evt_hostile", "/ui/events?q=cus_hostile", "/ui/owners?id=cus_hostile"] {
            b.goto(&s.proxy.admin_url(page)).await;
            b.wait_for_text("_hostile", PAGE).await;
            if page == "/ui/events/evt_hostile" {
                // After the live part was rewritten by the page's script (innerHTML) too.
                let deadline = std::time::Instant::now() + PAGE;
                while b.count("[data-refreshed]").await == 0 {
                    assert!(std::time::Instant::now() < deadline, "the live part never refreshed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            assert_eq!(b.count(made_from_payload).await, 0, "{page}: no element was made from the payload");
            assert_eq!(b.eval("return typeof window.__pwned").await, serde_json::json!("undefined"), "{page}");
        }
        b.goto(&s.proxy.admin_url("/ui/events/evt_hostile")).await;
        let text = b.wait_for_text("onerror", PAGE).await;
        assert!(
            text.contains("window.__pwned=1") && text.contains("<script>window.__pwned=2</script>"),
            "shown as text: {text}"
        );
        b.screenshot("hostile-event").await;
    })
    .await;
    b.close().await;
}

/// A page on another origin cannot post to the console, and a console form without its CSRF
/// token is refused; the same form with it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_and_posts_without_the_csrf_token_are_refused() {
    let Some(b) = Browser::start("csrf").await else { return };
    bounded(async {
        let s = setup("").await;
        sign_in(&b, &s.proxy, ADMIN).await;
        b.wait_for_text("Flow, last hour", PAGE).await;
        let paused = || async {
            let (_, v) = s.proxy.admin(Method::GET, "/targets", Some(ADMIN)).await;
            v["targets"].as_array().unwrap().iter().find(|t| t["name"] == "staging").unwrap()["paused"] == true
        };

        // Another origin (same host, another port: same site, so the Strict cookie is sent and
        // only the Origin check stands in the way) posts a form to the console.
        let action = s.proxy.admin_url("/ui/targets/staging/pause");
        let attacker = Page::serve(format!(
            "<!doctype html><form id=f method=post action=\"{action}\"><input name=csrf value=guess>\
             <button id=go>win a prize</button></form>"
        ))
        .await;
        b.goto(&attacker.url).await;
        b.click("#go").await;
        let text = b.wait_for_text("cross-origin request refused", PAGE).await;
        assert!(text.contains("Forbidden"), "{text}");
        b.screenshot("cross-site-refused").await;
        assert!(!paused().await, "not paused by another origin");

        // Nor sign a browser in from another origin (login CSRF).
        let login = Page::serve(format!(
            "<!doctype html><form method=post action=\"{}\"><input name=token value={ADMIN}>\
             <button id=go>sign in</button></form>",
            s.proxy.admin_url("/ui/login")
        ))
        .await;
        b.goto(&login.url).await;
        b.click("#go").await;
        b.wait_for_text("cross-origin request refused", PAGE).await;

        // The console's own form without its CSRF token.
        b.goto(&s.proxy.admin_url("/ui/targets")).await;
        b.wait_for_text("Targets", PAGE).await;
        b.eval("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove()); return null").await;
        b.click("tr[data-target='staging'] button.pause").await;
        b.wait_for_text("no valid CSRF token", PAGE).await;
        b.screenshot("csrf-missing-refused").await;
        assert!(!paused().await, "not paused without the token");

        // With it, the same button works.
        b.goto(&s.proxy.admin_url("/ui/targets")).await;
        b.click("tr[data-target='staging'] button.pause").await;
        b.wait_for_text("Resume", PAGE).await;
        assert!(paused().await);
        b.screenshot("targets-paused").await;
    })
    .await;
    b.close().await;
}

/// A fixed HTML page served on its own loopback port: another origin than the console's.
struct Page {
    url: String,
}

impl Page {
    async fn serve(html: String) -> Page {
        use http_body_util::Full;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let html = bytes::Bytes::from(html);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let html = html.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let mut res = http::Response::new(Full::new(html.clone()));
                        res.headers_mut().insert("content-type", "text/html".parse().unwrap());
                        async move { Ok::<_, std::convert::Infallible>(res) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Page { url }
    }
}
