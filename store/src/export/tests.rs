use tokio::sync::mpsc;

use super::*;
use crate::engine::Engine;
use crate::record::Delivery;
use crate::testing::{plain_tls, TestPostgres};
use crate::{Claims, Ingested, NewJob, Outcome, Routed, Store};

fn event(id: &str, at: u64, body: &[u8]) -> EventRecord {
    let routed = Routed { destination: "a".into(), rule: "r".into(), jobs: 1 };
    EventRecord {
        id: id.into(),
        event_type: "invoice.paid".into(),
        source: "stripe".into(),
        received_at_ms: at,
        disposition: Disposition::Routed { destinations: vec![routed] },
        body: body.to_vec(),
    }
}

fn to(target: &str, delivery: Delivery) -> NewJob {
    NewJob { target: target.into(), delivery, rule: "r".into() }
}

fn jobs(ingested: Ingested) -> Vec<Job> {
    match ingested {
        Ingested::New(jobs) => jobs,
        Ingested::Duplicate => panic!("expected a new event"),
    }
}

const FOREVER: u64 = u64::MAX;

/// A sled store with a bit of everything: an event with two queued jobs and its owner, a job in
/// flight, a dead letter with its history, an `any` group delivered by one member while the
/// other went back to its queue, an event whose body is not UTF-8, a paused target, an inbox
/// created at run time.
fn filled(path: &std::path::Path) -> Store {
    let s = Store::open(path).unwrap();
    let owner = Owner { destinations: vec!["a".into()], via: "r".into(), event_id: Some("evt_1".into()), at_ms: 10 };
    let claims = Claims { ids: vec!["cus_1".into()], owner, refresh_after_ms: 0 };
    let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    let both = [to("a", Delivery::Target), to("b", Delivery::Target)];
    assert_eq!(jobs(s.ingest_claiming(&event("evt_1", 10, body), &both, Some(&claims)).unwrap()).len(), 2);
    let any = || Delivery::AnyOf { group: "g".into() };
    s.ingest(&event("evt_4", 15, b"{}"), &[to("e", any()), to("f", any())]).unwrap();
    let e = s.lease_due("e", 100, 1, FOREVER).unwrap().remove(0);
    s.lease_due("f", 100, 1, FOREVER).unwrap();
    s.complete(&e, 16).unwrap();
    assert_eq!(s.release_leases().unwrap(), 1, "f waits again, its round delivered");
    s.ingest(&event("evt_2", 20, b"{}"), &[to("c", Delivery::Target)]).unwrap();
    assert_eq!(s.lease_due("c", 100, 1, FOREVER).unwrap().len(), 1, "in flight while exported");
    s.ingest(&event("evt_3", 30, &[0xff, 0xfe, 0]), &[to("d", Delivery::Target)]).unwrap();
    let d = s.lease_due("d", 100, 1, FOREVER).unwrap().remove(0);
    let failed = Outcome::Failed { status: Some(500), latency_ms: 3, error: "HTTP 500".into(), retry_at_ms: None };
    s.log(&d, failed, 35).unwrap();
    assert_eq!(s.dead_letter(&d, "HTTP 500", 40).unwrap(), crate::Settled::Done);
    s.set_paused("z", true).unwrap();
    let inbox = crate::InboxRecord {
        name: "dana".into(),
        token_sha256: "ab".repeat(32),
        secret: "whsec_d".into(),
        max_age_ms: Some(1000),
        offline_fallback: None,
        offline_after_ms: None,
        created_at_ms: 7,
    };
    assert!(s.create_inbox(&inbox).unwrap());
    s
}

/// The export of `engine` as text (the header's engine and time left out), read back through
/// the format, so what moves is what a file holds.
async fn export(engine: &Engine) -> Vec<String> {
    let (sender, mut receiver) = mpsc::channel(4);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(record) = receiver.recv().await {
            all.push(record);
        }
        all
    });
    engine.export(sender).await.unwrap();
    let mut writer = Writer::start(Vec::new(), engine.name(), 0).unwrap();
    for record in collect.await.unwrap() {
        writer.write(&record).unwrap();
    }
    let text = String::from_utf8(writer.finish().unwrap()).unwrap();
    text.lines().skip(1).map(str::to_owned).collect()
}

/// Imports the lines `export` returned into an empty `engine`, in small batches.
async fn import(engine: &Engine, lines: &[String]) {
    assert!(engine.is_empty().await.unwrap(), "{}: empty before", engine.name());
    let text = format!("{{\"fanout_export\":1,\"engine\":\"x\",\"exported_at_ms\":0}}\n{}\n", lines.join("\n"));
    let records: Vec<ExportRecord> = Reader::new(text.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
    for batch in records.chunks(3) {
        engine.import(batch.to_vec()).await.unwrap();
    }
    assert!(!engine.is_empty().await.unwrap(), "{}", engine.name());
}

/// sled → Postgres → sled: the three exports are equal line for line (the job in flight moves
/// as queued), and the last store works as the first did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_round_trips_sled_to_postgres_to_sled() {
    let Some(pg) = TestPostgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let first = Engine::sled(filled(&dir.path().join("first")));
    let exported = export(&first).await;
    let kinds = ["paused", "inbox", "event", "history", "group_round", "job", "dead_letter", "owner"];
    for kind in kinds {
        assert!(exported.iter().any(|l| l.contains(&format!("\"kind\":\"{kind}\""))), "{kind}: {exported:#?}");
    }
    assert!(exported.iter().any(|l| l.contains(r#""body_hex":"fffe00""#)), "not UTF-8: in hex");
    let newest = first.sled_store().unwrap().dead_letters(10).unwrap()[0].job.id;

    let postgres = Engine::postgres(&pg.url(), 4, plain_tls()).await.unwrap();
    import(&postgres, &exported).await;
    let from_postgres = export(&postgres).await;
    assert_eq!(from_postgres, exported, "Postgres holds what sled held");
    let one = [to("a", Delivery::Target)];
    let after = jobs(postgres.ingest_claiming(&event("evt_5", 50, b"{}"), &one, None).await.unwrap());
    assert!(after[0].id > newest, "Postgres hands out ids past the imported ones");

    let last = Engine::sled(Store::open(dir.path().join("last")).unwrap());
    import(&last, &from_postgres).await;
    assert_eq!(export(&last).await, exported, "and back");
    works_as_before(&last, newest).await;
}

/// What a store filled by [`filled`] answers after a move.
async fn works_as_before(s: &Engine, newest: JobId) {
    let again = s.ingest_claiming(&event("evt_1", 60, b"{}"), &[to("a", Delivery::Target)], None).await.unwrap();
    assert_eq!(again, Ingested::Duplicate, "the dedup id moved");
    let long = std::time::Duration::from_secs(60);
    for target in ["a", "b", "c"] {
        let leased = s.lease_due(target, 100, 10, long).await.unwrap();
        assert_eq!(leased.len(), 1, "{target}'s job leases");
        assert!(matches!(s.event_for(&leased[0]).await.unwrap(), crate::JobEvent::Ready(_)), "{target}");
        assert_eq!(s.complete(&leased[0], 70).await.unwrap(), 0);
    }
    assert!(s.lease_due("f", 100, 10, long).await.unwrap().is_empty(), "its `any` round was delivered");
    let (dead, _) = s.dead_letters_page(None, None, None, 10, 100).await.unwrap();
    assert_eq!((dead.len(), dead[0].error.as_str(), dead[0].job.target.as_str()), (1, "HTTP 500", "d"));
    let history = s.history(30, "evt_3", 10).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(s.event("evt_3").await.unwrap().unwrap().body, [0xff, 0xfe, 0]);
    assert_eq!(s.owner("cus_1").await.unwrap().unwrap().destinations, ["a"]);
    assert!(s.is_paused("z").await.unwrap());
    let fresh = jobs(s.ingest_claiming(&event("evt_6", 80, b"{}"), &[to("a", Delivery::Target)], None).await.unwrap());
    assert!(fresh[0].id > newest, "sled hands out ids past the imported ones");
}

/// What an import checks first: a store that holds anything at all (a paused target) is not empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_holds_anything_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let s = Engine::sled(Store::open(dir.path()).unwrap());
    assert!(s.is_empty().await.unwrap());
    s.set_paused("z", true).await.unwrap();
    assert!(!s.is_empty().await.unwrap());
}

fn read_all(text: &str) -> Result<Vec<ExportRecord>, ImportError> {
    Reader::new(text.as_bytes())?.collect()
}

/// Input that is not a whole export of a format this fanout reads is refused, with its line.
#[test]
fn a_bad_export_is_refused_with_its_line() {
    let header = "{\"fanout_export\":1,\"engine\":\"sled\",\"exported_at_ms\":0}\n";
    let paused = "{\"kind\":\"paused\",\"target\":\"z\"}\n";
    let end = |n: u64| format!("{{\"fanout_export_end\":{n}}}\n");
    assert_eq!(read_all(&format!("{header}{paused}\n{}", end(1))).unwrap().len(), 1, "blank lines pass");
    let refused = |text: &str, says: &str| {
        let err = read_all(text).unwrap_err().to_string();
        assert!(err.contains(says), "{err:?} should say {says:?}");
    };
    refused("", "line 1: the input is empty");
    refused("{\"kind\":\"paused\",\"target\":\"z\"}\n", "line 1: not a fanout export");
    refused("{\"fanout_export\":2,\"engine\":\"sled\",\"exported_at_ms\":0}\n", "line 1: written by a newer fanout");
    refused(&format!("{header}{paused}{{not json\n{}", end(1)), "line 3: key must be a string");
    refused(&format!("{header}{{\"kind\":\"lease\",\"id\":1}}\n{}", end(1)), "line 2: unknown variant `lease`");
    let no_body = "{\"kind\":\"event\",\"id\":\"e\",\"event_type\":\"t\",\"source\":\"s\",\"received_at_ms\":1,\"disposition\":\"Unrouted\"}\n";
    refused(&format!("{header}{no_body}{}", end(1)), "line 2: event e needs one of `body` and `body_hex`");
    refused(&format!("{header}{paused}"), "line 2: the export ends without its end line after 1 records");
    refused(&format!("{header}{paused}{}", end(2)), "line 3: the end line counts 2 records, but 1 came");
    refused(&format!("{header}{}{paused}", end(0)), "line 3: a line after the end line");
}
