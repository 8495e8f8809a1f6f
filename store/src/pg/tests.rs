use tokio_postgres::NoTls;

use super::*;
use crate::testing::TestPostgres;
use crate::StoreError;

async fn connect(pg: &TestPostgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.url(), NoTls).await.expect("connects");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let Some(pg) = TestPostgres::start() else { return };
    let mut client = connect(&pg).await;
    let sync: String = client.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
    assert_eq!(sync, "on", "a commit is durable before it returns");
    assert_eq!(migrate(&mut client).await.unwrap(), 0, "a new database");
    assert_eq!(migrate(&mut client).await.unwrap(), SCHEMA_VERSION, "applied once");
    let tables: Vec<String> = client
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in ["dead_letters", "events", "fanout_schema", "group_rounds", "history", "jobs", "owners", "paused"] {
        assert!(tables.iter().any(|t| t == table), "{table} missing from {tables:?}");
    }
    client.execute("UPDATE fanout_schema SET version = 99", &[]).await.unwrap();
    let err = migrate(&mut client).await.unwrap_err();
    assert!(matches!(err, StoreError::Schema { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer fanout"), "{err}");
}

/// Replicas starting together: one migrates, the others wait on the lock and find it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let Some(pg) = TestPostgres::start() else { return };
    let mut replicas = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut client = connect(&pg).await;
        replicas.spawn(async move { migrate(&mut client).await });
    }
    let mut versions: Vec<i32> = replicas.join_all().await.into_iter().map(|r| r.unwrap()).collect();
    versions.sort();
    assert_eq!(versions, [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]);
}

// ---- the engine's core operations, on a real Postgres ------------------------------------

use std::collections::HashSet;
use std::time::Duration;

use crate::{Claims, Delivery, Disposition, EventRecord, Ingested, Job, JobEvent, NewJob, Owner, Settled};

fn event(id: &str, at: u64) -> EventRecord {
    EventRecord {
        id: id.into(),
        event_type: "invoice.paid".into(),
        source: "stripe".into(),
        received_at_ms: at,
        disposition: Disposition::Unrouted,
        body: br#"{"id":"x"}"#.to_vec(),
    }
}

fn to(target: &str, delivery: Delivery) -> NewJob {
    NewJob { target: target.into(), delivery, rule: "r".into() }
}

async fn store(pg: &TestPostgres) -> PgStore {
    PgStore::open(&pg.url(), 8).await.expect("opens and migrates")
}

fn new_jobs(ingested: Ingested) -> Vec<Job> {
    match ingested {
        Ingested::New(jobs) => jobs,
        Ingested::Duplicate => panic!("expected a new event"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_its_jobs_and_claims_commit_together_once() {
    let Some(pg) = TestPostgres::start() else { return };
    let s = store(&pg).await;
    let owner = Owner { destinations: vec!["a".into()], via: "r".into(), event_id: Some("evt_1".into()), at_ms: 10 };
    let claims = Claims { ids: vec!["cus_1".into(), "sub_1".into()], owner: owner.clone(), refresh_after_ms: 100 };
    let jobs =
        new_jobs(s.ingest_claiming(&event("evt_1", 10), &[to("a", Delivery::Target)], Some(&claims)).await.unwrap());
    assert_eq!(jobs.len(), 1);
    let both = [to("a", Delivery::Target), to("b", Delivery::Target)];
    let again = s.ingest_claiming(&event("evt_1", 11), &both, None).await.unwrap();
    assert_eq!(again, Ingested::Duplicate, "the id is the dedup key");
    assert_eq!((s.queued("a").await.unwrap(), s.queued("b").await.unwrap()), (1, 0));
    assert_eq!(s.owner("cus_1").await.unwrap(), Some(owner.clone()));
    // The same claim again soon after is not rewritten; another owner is.
    let soon = Claims { owner: Owner { at_ms: 50, ..owner.clone() }, ..claims.clone() };
    s.ingest_claiming(&event("evt_2", 50), &[], Some(&soon)).await.unwrap();
    assert_eq!(s.owner("cus_1").await.unwrap().unwrap().at_ms, 10, "fresh: read, not written");
    let moved = Claims { owner: Owner { destinations: vec!["b".into()], at_ms: 60, ..owner }, ..claims };
    s.ingest_claiming(&event("evt_3", 60), &[], Some(&moved)).await.unwrap();
    assert_eq!(s.owner("sub_1").await.unwrap().unwrap().destinations, ["b"]);
    match s.event_for(&jobs[0]).await.unwrap() {
        JobEvent::Ready(record) => assert_eq!(record.body, event("evt_1", 10).body),
        other => panic!("{other:?}"),
    }
}

/// Four takers racing over one queue: every job leased exactly once, in due order per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_takers_lease_each_job_once() {
    let Some(pg) = TestPostgres::start() else { return };
    let s = store(&pg).await;
    let mut all = HashSet::new();
    for i in 0..200u64 {
        let jobs = new_jobs(
            s.ingest_claiming(&event(&format!("evt_{i}"), i), &[to("a", Delivery::Target)], None).await.unwrap(),
        );
        all.insert(jobs[0].id);
    }
    let mut takers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let s = s.clone();
        takers.spawn(async move {
            let mut taken = Vec::new();
            loop {
                let batch = s.lease_due("a", 1_000, 7, Duration::from_secs(60)).await.unwrap();
                if batch.is_empty() {
                    return taken;
                }
                assert!(batch.windows(2).all(|w| w[0].due_at_ms <= w[1].due_at_ms));
                taken.extend(batch.into_iter().map(|j| j.id));
            }
        });
    }
    let taken: Vec<u64> = takers.join_all().await.into_iter().flatten().collect();
    assert_eq!(taken.len(), 200, "no job taken twice");
    assert_eq!(taken.into_iter().collect::<HashSet<_>>(), all);
    assert_eq!((s.queued("a").await.unwrap(), s.in_flight().await.unwrap()), (0, 200));
}

/// A lease that expires (a replica that died) comes back; the old holder's settle is refused,
/// the new holder's taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_comes_back_and_only_its_new_holder_settles_it() {
    let Some(pg) = TestPostgres::start() else { return };
    let s = store(&pg).await;
    s.ingest_claiming(&event("evt_1", 10), &[to("a", Delivery::Target)], None).await.unwrap();
    let old = s.lease_due("a", 10, 1, Duration::ZERO).await.unwrap().remove(0);
    assert!(s.lease_due("a", 10, 1, Duration::ZERO).await.unwrap().is_empty(), "leased: not offered twice");
    let back = s.reclaim_expired_leases(10).await.unwrap();
    assert_eq!(back.iter().map(|j| j.id).collect::<Vec<_>>(), [old.id]);
    let new = s.lease_due("a", 10, 1, Duration::from_secs(60)).await.unwrap().remove(0);
    assert_ne!(old.lease, new.lease);
    assert!(s.reclaim_expired_leases(10).await.unwrap().is_empty(), "not expired yet");
    let failed = |j: &Job| Job { attempt: 1, due_at_ms: 20, ..j.clone() };
    assert_eq!(s.retry(&failed(&old), 15).await.unwrap(), Settled::NotLeased);
    assert_eq!(s.dead_letter(&old, "x", 15).await.unwrap(), Settled::NotLeased);
    assert_eq!(s.retry(&failed(&new), 15).await.unwrap(), Settled::Done);
    assert!(s.lease_due("a", 19, 1, Duration::from_secs(60)).await.unwrap().is_empty(), "due at 20");
    let third = s.lease_due("a", 20, 1, Duration::from_secs(60)).await.unwrap().remove(0);
    assert_eq!(third.attempt, 1);
    assert_eq!(s.dead_letter(&third, "HTTP 500", 30).await.unwrap(), Settled::Done);
    assert_eq!((s.queued("a").await.unwrap(), s.in_flight().await.unwrap()), (0, 0));
}

/// An `any` group: the first success stands down the siblings still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_any_member_s_success_cancels_its_queued_siblings() {
    let Some(pg) = TestPostgres::start() else { return };
    let s = store(&pg).await;
    let any = || Delivery::AnyOf { group: "g".into() };
    s.ingest_claiming(&event("evt_1", 10), &[to("a", any()), to("b", any())], None).await.unwrap();
    let a = s.lease_due("a", 10, 1, Duration::from_secs(60)).await.unwrap().remove(0);
    assert_eq!(a.siblings.len(), 1);
    assert_eq!(s.complete(&a, 20).await.unwrap(), 1, "b was waiting: cancelled");
    assert_eq!(s.queued("b").await.unwrap(), 0);
    assert_eq!(s.in_flight().await.unwrap(), 0);
}
