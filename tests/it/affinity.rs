//! Sticky ownership routing over real sockets: a rule routes `customer.created` by its metadata,
//! and the renewal invoice that carries no metadata follows its customer — across a restart, and
//! as an operator set it by hand.

use std::time::Duration;

use crate::common::*;
use http::Method;

const WITHIN: Duration = Duration::from_secs(10);

fn config(staging: &Sink, alice: &Sink) -> String {
    format!(
        r#"
sources:
  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}
targets:
  - {{name: staging, url: "{}", secret: whsec_staging}}
  - {{name: alice, url: "{}", secret: whsec_alice}}
routes:
  - {{name: alice-dev, when: {{fields: [{{path: data.object.metadata.env, equals: alice}}]}}, to: [alice]}}
default: staging
"#,
        staging.url(),
        alice.url()
    )
}

fn renewal(id: &str, customer: &str) -> String {
    serde_json::json!({
        "id": id, "object": "event", "type": "invoice.payment_failed", "livemode": false, "created": now(),
        "data": {"object": {"id": format!("in_{id}"), "object": "invoice", "customer": customer,
                 "subscription": format!("sub_{id}"), "metadata": {}}}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_without_metadata_follows_its_customer_across_a_restart() {
    bounded(async {
        let (staging, alice) = (Sink::ok().await, Sink::ok().await);
        let yaml = config(&staging, &alice);
        let proxy = Proxy::start(&yaml).await;
        let url = proxy.url("/hook");

        // Before anyone owns cus_123, a renewal goes to the default.
        assert_eq!(send_signed(&url, &renewal("evt_r0", "cus_123")).await.0, 200);
        assert!(eventually(WITHIN, || staging.for_event("evt_r0").len() == 1).await);

        // The rule sends alice's customer to alice, and alice now owns cus_123.
        assert_eq!(send_signed(&url, &customer_event("evt_c1", "customer.created", "alice", "cus_123")).await.0, 200);
        assert!(eventually(WITHIN, || alice.for_event("evt_c1").len() == 1).await);
        let (status, owner) = proxy.admin(Method::GET, "/owners/cus_123", None).await;
        assert_eq!(
            (status, owner["owner"][0].as_str(), owner["via"].as_str()),
            (200, Some("alice"), Some("alice-dev"))
        );

        assert_eq!(send_signed(&url, &renewal("evt_r1", "cus_123")).await.0, 200);
        assert!(eventually(WITHIN, || alice.for_event("evt_r1").len() == 1).await);
        assert_eq!(alice.for_event("evt_r1")[0].header("fanout-route"), "owner:cus_123");
        // The invoice it carried is alice's too now.
        let (_, owner) = proxy.admin(Method::GET, "/owners/in_evt_r1", None).await;
        assert_eq!(owner["owner"][0], "alice", "{owner}");

        // The map is on disk: after a restart the next renewal still goes to alice.
        let proxy = proxy.restart(&yaml).await;
        let url = proxy.url("/hook");
        assert_eq!(send_signed(&url, &renewal("evt_r2", "cus_123")).await.0, 200);
        assert!(eventually(WITHIN, || alice.for_event("evt_r2").len() == 1).await);
        assert_eq!(staging.for_event("evt_r1").len() + staging.for_event("evt_r2").len(), 0);

        // By hand, through the CLI: cus_999 belongs to alice; `route --live` says why.
        let admin = proxy.admin_url("");
        let out = fanout_cli(&["own", "cus_999", "alice", "--admin", &admin], &[]).await;
        assert!(
            out.status.success() && output_text(&out).contains("cus_999 is owned by alice (set by hand"),
            "{}",
            output_text(&out)
        );
        let out = fanout_cli(&["owner", "cus_999", "--admin", &admin], &[]).await;
        assert!(output_text(&out).contains("owned by alice"), "{}", output_text(&out));
        let (file, event_file) = (proxy.dir.path().join("r.yaml"), proxy.dir.path().join("ev.json"));
        std::fs::write(&file, &yaml).unwrap();
        std::fs::write(&event_file, renewal("evt_r3", "cus_999")).unwrap();
        let route = |extra: &'static [&'static str]| {
            let mut args = vec!["route", file.to_str().unwrap(), event_file.to_str().unwrap(), "--admin", &admin];
            args.extend_from_slice(extra);
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            async move { fanout_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await }
        };
        let out = route(&[]).await;
        assert!(output_text(&out).contains("staging (target) by rule \"default\""), "{}", output_text(&out));
        let out = route(&["--live"]).await;
        assert!(
            output_text(&out).contains("alice by ownership: no rule matched, and cus_999 belongs to it"),
            "{}",
            output_text(&out)
        );
        let out = route(&["--owner", "sub_evt_r3=staging"]).await;
        assert!(output_text(&out).contains("staging by ownership"), "{}", output_text(&out));
        assert_eq!(send_signed(&url, &renewal("evt_r3", "cus_999")).await.0, 200);
        assert!(eventually(WITHIN, || alice.for_event("evt_r3").len() == 1).await);

        // A destination that does not exist is refused; disowning sends renewals to the default.
        let out = fanout_cli(&["own", "cus_999", "nobody", "--admin", &admin], &[]).await;
        assert!(
            !out.status.success() && output_text(&out).contains("neither a target nor a group"),
            "{}",
            output_text(&out)
        );
        let out = fanout_cli(&["disown", "cus_999", "--admin", &admin], &[]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        let out = fanout_cli(&["owner", "cus_999", "--admin", &admin], &[]).await;
        assert!(!out.status.success() && output_text(&out).contains("no environment owns"), "{}", output_text(&out));
        let (_, list) = proxy.admin(Method::GET, "/owners?destination=alice", None).await;
        let ids: Vec<&str> = list["owners"].as_array().unwrap().iter().filter_map(|o| o["id"].as_str()).collect();
        assert!(ids.contains(&"cus_123") && !ids.contains(&"cus_999"), "{list}");
        proxy.running.stop().await;
    })
    .await;
}
