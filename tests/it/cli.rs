//! The `fanout` binary's verbs and its start-up errors, run as a user would run them.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

fn fanout(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fanout")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

const VALID: &str = r#"
sources:
  - name: stripe
    path: /stripe/webhook
    secrets: ["${TEST_SOURCE_SECRET}", "${TEST_OLD_SECRET:-whsec_fallback_old}"]
targets:
  - name: staging
    url: ${TEST_STAGING_URL:-http://127.0.0.1:9/hook}
    secret: ${TEST_STAGING_SECRET}
  - name: alice
    url: http://127.0.0.1:9/alice
    secret: whsec_alice_in_file
routes:
  - name: alice-dev
    when:
      type: "customer.*"
      fields:
        - path: [data.object.metadata.env, data.object.subscription_details.metadata.env]
          equals: alice
    to: [alice]
default: staging
"#;

const SECRETS: &[(&str, &str)] =
    &[("TEST_SOURCE_SECRET", "whsec_source_from_env_123"), ("TEST_STAGING_SECRET", "whsec_staging_from_env_456")];

#[test]
fn check_expands_variables_and_prints_the_table_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "routing.yaml", VALID);
    let out = fanout(&["check", &path], &[SECRETS, &[("TEST_STAGING_URL", "http://127.0.0.1:4001/from-env")]].concat());
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("http://127.0.0.1:4001/from-env"), "URL from the environment: {shown}");
    assert!(
        shown.contains("alice-dev") && shown.contains("-> alice") && shown.contains("default -> staging"),
        "{shown}"
    );
    assert!(
        shown.contains("breaker opens after 20 failures in a row or 2m of failures; probes every 5s up to 5m"),
        "{shown}"
    );
    for secret in
        ["whsec_source_from_env_123", "whsec_staging_from_env_456", "whsec_fallback_old", "whsec_alice_in_file"]
    {
        assert!(!shown.contains(secret), "secret {secret} printed: {shown}");
    }
}

#[test]
fn a_missing_variable_is_a_start_up_error_naming_it_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "routing.yaml", VALID);
    let out = fanout(&["serve", "--config", &path], &SECRETS[..1]);
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(shown.contains(&format!("{path}:9:")), "line of ${{TEST_STAGING_SECRET}}: {shown}");
    assert!(shown.contains("environment variable TEST_STAGING_SECRET is not set"), "{shown}");
}

#[test]
fn an_admin_listener_moved_off_loopback_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "routing.yaml", VALID);
    let data = dir.path().join("data").display().to_string();
    let args =
        ["serve", "--config", &path, "--listen", "127.0.0.1:0", "--data-dir", &data, "--admin-listen", "0.0.0.0:0"];
    let out = fanout(&args, SECRETS);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("not loopback, and there is no admin.token"), "{shown}");
}

#[test]
fn config_errors_say_where_and_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            VALID.replace("    secret: whsec_alice_in_file", "    secret: whsec_x\n    retries: 3"),
            ":13:",
            "unknown field `retries`",
        ),
        (
            "unknown target",
            VALID.replace("to: [alice]", "to: [alicee]"),
            ":20:",
            "\"alicee\" is neither a target nor a group",
        ),
        ("duplicate name", VALID.replace("name: alice\n", "name: staging\n"), "", "duplicate name \"staging\""),
        (
            "bad duration",
            VALID.replace("    secret: whsec_alice_in_file", "    secret: whsec_x\n    timeout: 10 parsecs"),
            ":13:",
            "\"10 parsecs\" is not a duration",
        ),
        (
            "bad url",
            VALID.replace("http://127.0.0.1:9/alice", "ftp://files/alice"),
            ":11:",
            "must be http:// or https://",
        ),
        ("drop mixed", VALID.replace("to: [alice]", "to: [alice, drop]"), ":20:", "cannot be combined"),
        ("not yaml", "sources: [".to_owned(), "", "did not find expected"),
    ];
    for (name, yaml, line, message) in cases {
        let path = write(dir.path(), &format!("{}.yaml", name.replace(' ', "_")), &yaml);
        let out = fanout(&["check", &path], SECRETS);
        let shown = text(&out);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(shown.contains(&format!("{path}{line}")), "{name}: expected {path}{line} in {shown}");
        assert!(shown.contains(message), "{name}: expected {message:?} in {shown}");
        assert!(!shown.contains("panicked"), "{name}: {shown}");
    }
}

#[test]
fn route_dry_run_names_the_destination_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "routing.yaml", VALID);
    let renewal = serde_json::json!({"id": "evt_1", "type": "customer.subscription.updated", "data": {"object": {
        "metadata": {}, "subscription_details": {"metadata": {"env": "alice"}}}}});
    let ev = write(dir.path(), "renewal.json", &renewal.to_string());
    let out = fanout(&["route", &path, &ev], SECRETS);
    assert_eq!(text(&out), "alice (target) by rule \"alice-dev\"\n");
    let other = write(dir.path(), "other.json", &event("evt_2", "invoice.paid", "alice"));
    let out = fanout(&["route", &path, &other], SECRETS);
    assert_eq!(text(&out), "staging (target) by rule \"default\"\n", "type does not match customer.*");
}

#[test]
fn sign_prints_a_header_stripe_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let body = event("evt_sign", "invoice.paid", "x");
    let ev = write(dir.path(), "event.json", &body);
    let out = fanout(&["sign", "--secret", "whsec_cli", &ev], &[]);
    assert!(out.status.success());
    let header = String::from_utf8(out.stdout).unwrap();
    assert!(stripe_sdk_accepts(header.trim(), body.as_bytes(), "whsec_cli"), "{header}");
    assert!(!stripe_sdk_accepts(header.trim(), body.as_bytes(), "whsec_other"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_posts_a_signed_event_that_the_proxy_accepts() {
    let sink = Sink::ok().await;
    let yaml = format!(
        "sources:\n  - {{name: s, path: /in, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t}}\ndefault: t\n",
        sink.url()
    );
    let proxy = Proxy::start(&yaml).await;
    let dir = tempfile::tempdir().unwrap();
    let ev = write(dir.path(), "event.json", &event("evt_send", "invoice.paid", "x"));
    let url = proxy.url("/in");
    let ok = tokio::task::spawn_blocking(move || fanout(&["send", "--url", &url, "--secret", SOURCE_SECRET, &ev], &[]))
        .await
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(eventually(std::time::Duration::from_secs(10), || sink.count() == 1).await);
    let dir2 = tempfile::tempdir().unwrap();
    let ev = write(dir2.path(), "event.json", &event("evt_send2", "invoice.paid", "x"));
    let url = proxy.url("/in");
    let bad =
        tokio::task::spawn_blocking(move || fanout(&["send", "--url", &url, "--secret", "whsec_wrong", &ev], &[]))
            .await
            .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("400"), "{}", text(&bad));
    proxy.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_to_completion_and_says_where_each_event_went() {
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), fanout_cli(&["demo"], &[]))
        .await
        .expect("demo under a minute");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    for want in [
        "rule \"alice-dev\" matched",
        "it references sub_alice1, which alice owns",
        "Ready! Inbox alice",
        "answers 503 (simulated outage)",
        "delivered to staging (3 attempts)",
        "delivered to dogfood-2 (2 attempts)",
        "it references cus_dog1, which dogfood owns",
        "moved to staging: no listener on inbox \"alice\"",
        "Every event ended up with the environment that owns it",
    ] {
        assert!(text.contains(want), "expected {want:?} in:\n{text}");
    }
    assert!(!text.contains("INVALID"), "{text}");
}
