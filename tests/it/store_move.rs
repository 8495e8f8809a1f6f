//! `fanout store export` / `import` with the real binary: a sled store a proxy filled, moved to
//! a real throwaway Postgres (skipped, loudly, where none is installed), and delivered from there.

use std::time::Duration;

use fanout_store::testing::TestPostgres;
use http::Method;

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(15);

fn routing(sink: &Sink) -> String {
    format!(
        "sources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t, timeout: 2s}}\ndefault: t\n",
        sink.url()
    )
}

/// `name` in `dir`, as an argument.
fn file(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

/// A job queued on sled (its target paused) is exported, imported into Postgres, and delivered
/// by a proxy there once the target is resumed; its event id is still known there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_moves_to_postgres_and_its_queue_is_delivered_there() {
    let Some(pg) = TestPostgres::start() else { return };
    bounded(async {
        let sink = Sink::ok().await;
        let proxy = Proxy::start(&routing(&sink)).await;
        assert_eq!(proxy.admin(Method::POST, "/targets/t/pause", None).await.0, 200);
        let body = event("evt_move", "invoice.paid", "x");
        assert_eq!(send_signed(&proxy.url("/hook"), &body).await.0, 200);

        let dir = tempfile::tempdir().unwrap();
        let (sled_yaml, pg_yaml, moved) = (file(&dir, "sled.yaml"), file(&dir, "pg.yaml"), file(&dir, "moved.jsonl"));
        let data = proxy.dir.path().join("data");
        std::fs::write(&sled_yaml, format!("data_dir: {}\n{}", data.display(), routing(&sink))).unwrap();
        let pg_store = format!("store: {{engine: postgres, url: \"{}\", pool: 4}}\n", pg.url());
        std::fs::write(&pg_yaml, format!("{pg_store}{}", routing(&sink))).unwrap();

        let export = ["store", "export", "--config", &sled_yaml, "--out", &moved];
        let locked = fanout_cli(&export, &[]).await;
        assert!(!locked.status.success() && output_text(&locked).contains("fanout serve"), "{}", output_text(&locked));
        let Proxy { running, dir: _data_dir } = proxy;
        running.stop().await;
        let exported = fanout_cli(&export, &[]).await;
        assert!(exported.status.success(), "{}", output_text(&exported));
        assert!(output_text(&exported).contains("job: 1"), "{}", output_text(&exported));

        let import = ["store", "import", "--config", &pg_yaml, "--in", &moved];
        let imported = fanout_cli(&import, &[]).await;
        assert!(imported.status.success(), "{}", output_text(&imported));
        let again = fanout_cli(&import, &[]).await;
        assert!(!again.status.success() && output_text(&again).contains("not empty"), "{}", output_text(&again));

        let proxy = Proxy::start(&format!("{pg_store}{}", routing(&sink))).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.count(), 0, "still paused after the move");
        assert_eq!(proxy.admin(Method::POST, "/targets/t/resume", None).await.0, 200);
        assert!(eventually(WITHIN, || sink.for_event("evt_move").len() == 1).await, "delivered from Postgres");
        let got = &sink.for_event("evt_move")[0];
        assert!(stripe_sdk_accepts(got.header("stripe-signature"), &got.body, "whsec_t"));
        assert_eq!(got.body, body.as_bytes(), "the body moved byte for byte");
        let (status, text) = send_signed(&proxy.url("/hook"), &body).await;
        assert_eq!((status, text.contains("\"duplicate\":true")), (200, true), "{text}");
        proxy.running.stop().await;
    })
    .await;
}

/// A line that does not read is refused with its number, before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_refuses_a_bad_line_by_its_number() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (config, input) = (file(&dir, "routing.yaml"), file(&dir, "bad.jsonl"));
        let yaml = format!(
            "data_dir: {}\nsources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\n",
            file(&dir, "data")
        );
        std::fs::write(&config, yaml).unwrap();
        let header = r#"{"fanout_export":1,"engine":"sled","exported_at_ms":0}"#;
        std::fs::write(&input, format!("{header}\n{{\"kind\":\"lease\"}}\n")).unwrap();
        let out = fanout_cli(&["store", "import", "--config", &config, "--in", &input], &[]).await;
        let text = output_text(&out);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("nothing was imported") && text.contains("line 2: unknown variant `lease`"), "{text}");

        // Cut short after a good record: refused before that record is written.
        let paused = r#"{"kind":"paused","target":"t"}"#;
        std::fs::write(&input, format!("{header}\n{paused}\n")).unwrap();
        let out = fanout_cli(&["store", "import", "--config", &config, "--in", &input], &[]).await;
        let text = output_text(&out);
        assert!(!out.status.success() && text.contains("nothing was imported"), "{text}");
        std::fs::write(&input, format!("{header}\n{paused}\n{{\"fanout_export_end\":1}}\n")).unwrap();
        let out = fanout_cli(&["store", "import", "--config", &config, "--in", &input], &[]).await;
        assert!(out.status.success(), "the store is still empty, so a whole file goes in: {}", output_text(&out));
    })
    .await;
}
