//! No secret is ever logged or printed: the real binary runs every mode (serving at debug level
//! with good, forged and failing traffic, an inbox listener, the admin CLI with a right and a wrong
//! token, `check`, `route`, configs that fail to load, SIGTERM), and everything it logged and
//! printed is searched for every configured secret.

use std::time::Duration;

use crate::common::*;

const SOURCE: &str = "whsec_SRC_s3cr3t_0001";
const TARGET_OK: &str = "whsec_TGT_s3cr3t_0002";
const TARGET_BAD: &str = "whsec_TGT_s3cr3t_0003";
const INBOX_TOKEN: &str = "inbox-T0KEN-s3cr3t-0004";
const INBOX_SECRET: &str = "whsec_INB_s3cr3t_0005";
const ADMIN_TOKEN: &str = "admin-T0KEN-s3cr3t-0006";
const STRIPE_KEY: &str = "sk_test_K3Y_s3cr3t_0007";
const ALL: [&str; 7] = [SOURCE, TARGET_OK, TARGET_BAD, INBOX_TOKEN, INBOX_SECRET, ADMIN_TOKEN, STRIPE_KEY];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mode_logs_or_prints_a_configured_secret() {
    bounded(async {
        let (ok, bad, app) = (Sink::ok().await, Sink::with(|_| (500, Duration::ZERO)).await, Sink::ok().await);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("routing.yaml");
        let yaml = format!(
            r#"listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0, token: {ADMIN_TOKEN}}}
data_dir: {data}
shutdown_grace: 1s
sources:
  - {{name: stripe, path: /hook, secrets: [{SOURCE}]}}
retry: {{initial_delay: 50ms, max_delay: 100ms}}
targets:
  - {{name: ok, url: "{ok}", secret: {TARGET_OK}}}
  - {{name: bad, url: "{bad}", secret: {TARGET_BAD}, retry: {{max_attempts: 2}}}}
  - {{name: dev, kind: inbox, token: {INBOX_TOKEN}, secret: {INBOX_SECRET}}}
routes:
  - {{name: to-dev, when: {{type: "customer.*"}}, to: [dev]}}
default: [ok, bad]
"#,
            data = dir.path().join("data").display(),
            ok = ok.url(),
            bad = bad.url()
        );
        std::fs::write(&config, &yaml).unwrap();
        let mut printed = String::new();
        let cfg = config.to_str().unwrap();

        // Offline verbs, and configs that fail to load (the error names the place, not the value).
        let event_file = dir.path().join("event.json");
        std::fs::write(&event_file, event("evt_file", "invoice.paid", "x")).unwrap();
        for args in [vec!["check", cfg], vec!["route", cfg, event_file.to_str().unwrap()]] {
            printed += &output_text(&fanout_cli(&args, &[]).await);
        }
        let broken = [
            yaml.replace("secrets: [", "secret: ["),
            yaml.replace(&format!("secret: {TARGET_OK}}}"), &format!("secret: {TARGET_OK}, colour: red}}")),
            yaml.replace(&format!("token: {INBOX_TOKEN}"), &format!("token: {INBOX_TOKEN}, url: \"http://x\"")),
            yaml.replace("default: [ok, bad]", &format!("default: [{SOURCE}]"))
                .replace("routes:", "routes: []\nxroutes:"),
        ];
        for (i, text) in broken.iter().enumerate() {
            let path = dir.path().join(format!("broken{i}.yaml"));
            std::fs::write(&path, text).unwrap();
            let out = fanout_cli(&["check", path.to_str().unwrap()], &[]).await;
            assert!(!out.status.success(), "broken{i} was accepted");
            printed += &output_text(&out);
        }

        // Serving at debug level: a good event to each kind of target, a forged one, a failing target.
        let bin = Binary::spawn_logging(&config, &dir.path().join("serve.log"), "debug");
        let listen =
            Listen::spawn(&bin.url(""), INBOX_TOKEN, &format!("{}/hook", app.url()), &dir.path().join("listen.out"));
        let signed = |body: &str| vec![("stripe-signature", stripe_signature(SOURCE, now(), body.as_bytes()))];
        for (id, ty) in [("evt_inv", "invoice.paid"), ("evt_cus", "customer.created")] {
            let body = event(id, ty, "x");
            assert_eq!(post(&bin.url("/hook"), &signed(&body), body.clone()).await.0, 200);
        }
        let forged = event("evt_forged", "invoice.paid", "x");
        let (status, text) = post(
            &bin.url("/hook"),
            &[("stripe-signature", stripe_signature("whsec_nope", now(), forged.as_bytes()))],
            forged,
        )
        .await;
        assert_eq!(status, 400);
        printed += &text;
        assert!(eventually(Duration::from_secs(15), || ok.count() == 1 && app.count() == 1 && bad.count() == 2).await);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The operator's CLI, with the right token and a wrong one.
        let admin = format!("http://{}", bin.admin);
        for args in [
            vec!["targets"],
            vec!["events"],
            vec!["event", "evt_inv"],
            vec!["dead-letters"],
            vec!["dead-letters", "--json"],
            vec!["events", "--json"],
            vec!["replay", "evt_inv"],
            vec!["pause", "ok"],
            vec!["resume", "ok"],
            vec!["own", "cus_x", "ok"],
            vec!["owner", "cus_x"],
            vec!["owners", "--json"],
        ] {
            let mut args = args;
            args.extend(["--admin", &admin]);
            let out = fanout_cli(&args, &[("FANOUT_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
            assert!(out.status.success(), "{args:?}: {}", output_text(&out));
            printed += &output_text(&out);
        }
        // An inbox created and rotated at run time: its tokens and secrets are printed once, by the
        // command that made them, and appear nowhere else.
        let mut made = Vec::new();
        for args in [vec!["inbox", "create", "dev1", "--json"], vec!["inbox", "rotate", "dev1", "--json"]] {
            let mut args = args;
            args.extend(["--admin", &admin]);
            let out = fanout_cli(&args, &[("FANOUT_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
            assert!(out.status.success(), "{}", output_text(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            made.extend([v["token"].as_str().unwrap().to_owned(), v["secret"].as_str().unwrap().to_owned()]);
        }
        let inbox_url = format!("{}/fanout/inbox/events?wait=0", bin.url(""));
        let (status, _) =
            request(http::Method::GET, &inbox_url, &[("authorization", format!("Bearer {}", made[2]))], "").await;
        assert_eq!(status, 200, "the rotated token opens the inbox");
        for args in [vec!["inbox", "list"], vec!["inbox", "list", "--json"], vec!["targets", "--json"]] {
            let mut args = args;
            args.extend(["--admin", &admin]);
            let out = fanout_cli(&args, &[("FANOUT_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
            assert!(out.status.success(), "{}", output_text(&out));
            printed += &output_text(&out);
        }
        // Backfill with Stripe's API key: against an API that refuses it, and one that is down.
        let refusing = Sink::with(|_| (401, Duration::ZERO)).await;
        for api in [refusing.url().trim_end_matches('/').to_owned(), "http://127.0.0.1:9".to_owned()] {
            let out = fanout_cli(
                &["backfill", "--since", "1h", "--stripe-api", &api, "--admin", &admin],
                &[("STRIPE_API_KEY", STRIPE_KEY), ("FANOUT_ADMIN_TOKEN", ADMIN_TOKEN)],
            )
            .await;
            assert!(!out.status.success(), "{}", output_text(&out));
            printed += &output_text(&out);
        }
        assert!(refusing.count() >= 1, "the backfill did reach the refusing API");
        let out = fanout_cli(&["targets", "--admin", &admin, "--token", "wrong-token-0123456789"], &[]).await;
        assert!(!out.status.success());
        printed += &output_text(&out);
        let (_, metrics) = request(
            http::Method::GET,
            &format!("{admin}/metrics"),
            &[("authorization", format!("Bearer {ADMIN_TOKEN}"))],
            "",
        )
        .await;
        printed += &metrics;

        bin.signal("TERM");
        let (status, log) = bin.wait_exit(Duration::from_secs(15)).await;
        assert!(status.is_some_and(|s| s.success()), "{log}");
        printed += &listen.output();
        assert!(log.contains("evt_inv") && log.contains("DEBUG"), "the log has the traffic in it: {log}");

        for secret in ALL.iter().copied().chain(made.iter().map(String::as_str)) {
            assert!(!log.contains(secret), "the serve log contains {secret}");
            assert!(!printed.contains(secret), "printed output contains {secret}:\n{printed}");
        }
        // The forged request's reason and the failing target's error did get through.
        assert!(printed.contains("no signature matches") && log.contains("HTTP 500"));
        // The one place a secret is printed on purpose (and the search would have seen it):
        // `listen --print-secret`, for the inbox's own token holder.
        let dir2 = tempfile::tempdir().unwrap();
        std::fs::write(
            dir2.path().join("routing.yaml"),
            yaml.replace(
                &dir.path().join("data").display().to_string(),
                &dir2.path().join("data").display().to_string(),
            ),
        )
        .unwrap();
        // That second proxy logs JSON, takes an event and a SIGHUP reload; its log is clean too.
        let json_logs = [("FANOUT_LOG_FORMAT", "json")];
        let bin =
            Binary::spawn_env(&dir2.path().join("routing.yaml"), &dir2.path().join("serve.log"), "debug", &json_logs);
        let out =
            fanout_cli(&["listen", "--proxy", &bin.url(""), "--print-secret"], &[("FANOUT_INBOX_TOKEN", INBOX_TOKEN)])
                .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), INBOX_SECRET);
        let body = event("evt_json", "invoice.paid", "x");
        assert_eq!(post(&bin.url("/hook"), &signed(&body), body.clone()).await.0, 200);
        bin.signal("HUP");
        assert!(eventually(Duration::from_secs(10), || bin.log_text().contains("reload")).await, "{}", bin.log_text());
        bin.signal("TERM");
        let (_, log) = bin.wait_exit(Duration::from_secs(15)).await;
        assert!(log.contains("\"level\":\"DEBUG\"") && log.contains("evt_json"), "{log}");
        for secret in ALL {
            assert!(!log.contains(secret), "the JSON log contains {secret}");
        }
    })
    .await;
}
