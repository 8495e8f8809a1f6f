//! Inboxes created at run time, end to end: `fanout inbox create` against a running proxy, a
//! route that names the inbox from the event, `fanout listen --name`, rotation, deletion, a
//! restart, and two hundred developers at once.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(15);

fn config(staging: &Sink) -> String {
    format!(
        r#"
sources:
  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}
retry: {{initial_delay: 100ms, max_delay: 200ms}}
targets:
  - {{name: staging, url: "{}", secret: whsec_staging}}
routes:
  - name: developer-tagged
    when: {{fields: [{{path: [data.object.metadata.developer, data.object.parent.subscription_details.metadata.developer], exists: true}}]}}
    to: ["inbox:{{data.object.metadata.developer|data.object.parent.subscription_details.metadata.developer}}"]
    unknown: staging
default: staging
"#,
        staging.url()
    )
}

/// `fanout inbox ARGS --admin <proxy's>` with its config dir in `dir`.
async fn inbox_cli(proxy: &Proxy, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let admin = proxy.admin_url("");
    let mut all = vec!["inbox"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--admin", &admin]);
    let out = fanout_cli(&all, &[("FANOUT_CONFIG_DIR", dir.to_str().unwrap())]).await;
    (out.status.success(), output_text(&out))
}

/// A create's token and secret, from its `--json`.
fn credentials(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    (v["token"].as_str().unwrap().to_owned(), v["secret"].as_str().unwrap().to_owned())
}

async fn send_for(proxy: &Proxy, id: &str, developer: &str) {
    let body = format!(
        r#"{{"id":"{id}","object":"event","type":"customer.updated","livemode":false,"created":{},"data":{{"object":{{"id":"cus_{id}","object":"customer","metadata":{{"developer":"{developer}"}}}}}}}}"#,
        now()
    );
    assert_eq!(send_signed(&proxy.url("/hook"), &body).await.0, 200);
}

async fn poll(proxy: &Proxy, token: &str) -> (u16, Value) {
    let url = proxy.url("/fanout/inbox/events?wait=1&max=50");
    let (status, text) = request(Method::GET, &url, &[("authorization", format!("Bearer {token}"))], "").await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Create an inbox through the CLI, route a tagged event to it by template, and `fanout listen
/// --name` receives it; the app verifies it with the printed secret. An unknown name goes to
/// `unknown`. The inbox survives a restart. No token shows in the admin API or the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_inbox_is_reached_by_template_and_listen_by_name() {
    bounded(async {
        let (staging, app) = (Sink::ok().await, Sink::ok().await);
        let yaml = config(&staging);
        let proxy = Proxy::start(&yaml).await;
        let dir = tempfile::tempdir().unwrap();
        let (ok, text) = inbox_cli(&proxy, dir.path(), &["create", "alice", "--save", "--json"]).await;
        assert!(ok, "{text}");
        let (token, secret) = credentials(&text);
        assert!(token.starts_with("fo_inbox_") && secret.starts_with("whsec_"), "{text}");
        let saved = std::fs::read_to_string(dir.path().join("inboxes/alice.token")).unwrap();
        assert_eq!(saved, token);
        let (ok, text) = inbox_cli(&proxy, dir.path(), &["create", "alice"]).await;
        assert!(!ok && text.contains("exists already"), "{text}");
        let (ok, text) = inbox_cli(&proxy, dir.path(), &["create", "staging"]).await;
        assert!(!ok && text.contains("share one namespace"), "{text}");

        send_for(&proxy, "evt_for_alice", "alice").await;
        send_for(&proxy, "evt_for_zed", "zed").await;
        assert!(eventually(WITHIN, || staging.for_event("evt_for_zed").len() == 1).await, "no inbox zed: unknown");
        let mut listen =
            Listen::spawn_with(&proxy.url(""), "", &app.url(), &dir.path().join("listen.out"), &["--name", "alice"]);
        assert!(eventually(WITHIN, || app.count() == 1).await, "{}", listen.output());
        let got = &app.received()[0];
        assert_eq!(got.header("fanout-event-id"), "evt_for_alice");
        assert!(stripe_sdk_accepts(got.header("stripe-signature"), &got.body, &secret), "the printed secret verifies");
        assert_eq!(got.header("fanout-route"), "developer-tagged");
        listen.kill();

        for place in [
            proxy.admin(Method::GET, "/inboxes", None).await.1.to_string(),
            proxy.admin(Method::GET, "/targets", None).await.1.to_string(),
        ] {
            assert!(!place.contains(&token) && !place.contains(&secret), "{place}");
        }
        let (ok, list) = inbox_cli(&proxy, dir.path(), &["list"]).await;
        assert!(ok && list.contains("alice") && list.contains("created") && !list.contains(&token), "{list}");

        // A reload whose file names alice is refused: her queue would go to that URL.
        let clash =
            yaml.replace("targets:\n", "targets:\n  - {name: alice, url: \"http://127.0.0.1:9/\", secret: x}\n");
        let mut clash = fanout::config::Config::parse("r.yaml", &clash, |_| None).unwrap();
        clash.listen = proxy.running.addr;
        clash.admin.listen = proxy.running.admin_addr;
        let refused = proxy.running.reload(clash).unwrap_err().to_string();
        assert!(refused.contains("alice") && refused.contains("created at run time"), "{refused}");

        // The table survives a restart: the same token opens the same inbox.
        let proxy = proxy.restart(&yaml).await;
        send_for(&proxy, "evt_after_restart", "alice").await;
        let (status, polled) = poll(&proxy, &token).await;
        assert_eq!(status, 200, "{polled}");
        // (The first event may come again too: the listener was killed maybe before its answer.)
        let ids: Vec<&str> =
            polled["deliveries"].as_array().unwrap().iter().map(|d| d["event_id"].as_str().unwrap()).collect();
        assert!(ids.contains(&"evt_after_restart"), "{polled}");
        proxy.running.stop().await;
    })
    .await;
}

/// Rotation: the old token is refused, the new one works, and what was queued is still there.
/// Deletion: the queue goes to the dead letters saying so; later events for the name go to
/// `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_queue_and_deletion_loses_nothing_silently() {
    bounded(async {
        let staging = Sink::ok().await;
        let proxy = Proxy::start(&config(&staging)).await;
        let dir = tempfile::tempdir().unwrap();
        let (_, text) = inbox_cli(&proxy, dir.path(), &["create", "bob", "--json"]).await;
        let (old, _) = credentials(&text);
        send_for(&proxy, "evt_bob_1", "bob").await;
        send_for(&proxy, "evt_bob_2", "bob").await;
        let (ok, text) = inbox_cli(&proxy, dir.path(), &["rotate", "bob", "--json"]).await;
        assert!(ok, "{text}");
        let (new, _) = credentials(&text);
        assert_ne!(old, new);
        assert_eq!(poll(&proxy, &old).await.0, 401, "the old token no longer opens it");
        let (status, polled) = poll(&proxy, &new).await;
        assert_eq!(status, 200);
        let mut ids: Vec<&str> =
            polled["deliveries"].as_array().unwrap().iter().map(|d| d["event_id"].as_str().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, ["evt_bob_1", "evt_bob_2"], "queued events survive a rotation");

        // A poll waiting with a token when it is rotated is ended, and hands out nothing.
        let (_, text) = inbox_cli(&proxy, dir.path(), &["create", "erin", "--json"]).await;
        let (erin, _) = credentials(&text);
        let url = proxy.url("/fanout/inbox/events?wait=10");
        let waiting = tokio::spawn(async move {
            request(Method::GET, &url, &[("authorization", format!("Bearer {erin}"))], "").await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (ok, text) = inbox_cli(&proxy, dir.path(), &["rotate", "erin"]).await;
        assert!(ok, "{text}");
        send_for(&proxy, "evt_erin", "erin").await;
        let (status, text) = waiting.await.unwrap();
        assert_eq!(status, 401, "{text}");
        assert!(!text.contains("evt_erin"), "{text}");

        // Deleting carol, with two events queued for her.
        let (_, text) = inbox_cli(&proxy, dir.path(), &["create", "carol", "--json"]).await;
        let (carol, _) = credentials(&text);
        send_for(&proxy, "evt_carol_1", "carol").await;
        send_for(&proxy, "evt_carol_2", "carol").await;
        let (ok, text) = inbox_cli(&proxy, dir.path(), &["delete", "carol"]).await;
        assert!(ok && text.contains("went to the dead letters"), "{text}");
        let dead = || async {
            let (_, v) = proxy.admin(Method::GET, "/dead-letters?target=carol", None).await;
            v["dead_letters"].as_array().cloned().unwrap_or_default()
        };
        let deadline = std::time::Instant::now() + WITHIN;
        while dead().await.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "both queued events dead-lettered: {:?}", dead().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            dead().await.iter().all(|d| d["error"].as_str().unwrap().contains("inbox deleted")),
            "{:?}",
            dead().await
        );
        assert_eq!(poll(&proxy, &carol).await.0, 401, "a deleted inbox's token opens nothing");
        send_for(&proxy, "evt_carol_3", "carol").await;
        assert!(eventually(WITHIN, || staging.for_event("evt_carol_3").len() == 1).await, "no inbox carol: unknown");
        let (ok, text) = inbox_cli(&proxy, dir.path(), &["delete", "carol"]).await;
        assert!(!ok && text.contains("no inbox named"), "{text}");
        proxy.running.stop().await;
    })
    .await;
}

/// Two hundred developers, ten events each: every event reaches its own inbox and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_inboxes_each_get_only_their_own_events() {
    bounded_for(Duration::from_secs(150), async {
        let staging = Sink::ok().await;
        let proxy = Proxy::start(&config(&staging)).await;
        let mut tokens = Vec::new();
        for i in 0..200 {
            let body = format!(r#"{{"name":"dev{i}"}}"#);
            let url = proxy.admin_url("/inboxes");
            let (status, text) =
                request(Method::POST, &url, &[("content-type", "application/json".into())], body).await;
            assert_eq!(status, 201, "{text}");
            tokens.push(credentials(&text).0);
        }
        // Fifty senders at a time, as Stripe would.
        for chunk in (0..2000).collect::<Vec<usize>>().chunks(50) {
            let sends =
                chunk.iter().map(|&n| {
                    let proxy = &proxy;
                    async move {
                        send_for(proxy, &format!("evt_d{}_{}", n % 200, n / 200), &format!("dev{}", n % 200)).await
                    }
                });
            futures_util::future::join_all(sends).await;
        }
        assert_eq!(staging.count(), 0, "every name had an inbox");
        let polls = tokens.iter().enumerate().map(|(i, token)| {
            let proxy = &proxy;
            async move {
                let (status, polled) = poll(proxy, token).await;
                assert_eq!((status, polled["inbox"].as_str()), (200, Some(format!("dev{i}").as_str())));
                let mut ids: Vec<String> = polled["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["event_id"].as_str().unwrap().to_owned())
                    .collect();
                ids.sort();
                let mut want: Vec<String> = (0..10).map(|k| format!("evt_d{i}_{k}")).collect();
                want.sort();
                assert_eq!(ids, want, "dev{i}");
            }
        });
        futures_util::future::join_all(polls).await;
        proxy.running.stop().await;
    })
    .await;
}
