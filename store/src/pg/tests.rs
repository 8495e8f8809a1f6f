use tokio_postgres::NoTls;

use super::*;
use crate::testing::TestPostgres;
use crate::StoreError;

/// An unrouted `invoice.paid` received at `at`.
fn record(id: &str, at: u64) -> crate::EventRecord {
    crate::EventRecord {
        id: id.into(),
        event_type: "invoice.paid".into(),
        source: "s".into(),
        received_at_ms: at,
        disposition: crate::Disposition::Unrouted,
        body: b"{}".to_vec(),
    }
}

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

/// Two replicas on one database: a replica's graceful stop hands back its own leases only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_releases_its_own_leases_only() {
    use std::time::Duration;

    use crate::{Delivery, NewJob};
    let Some(pg) = TestPostgres::start() else { return };
    let (a, b) = (PgStore::open(&pg.url(), 4).await.unwrap(), PgStore::open(&pg.url(), 4).await.unwrap());
    for i in 0..2 {
        let event = record(&format!("evt_{i}"), 10);
        let job = NewJob { target: "t".into(), delivery: Delivery::Target, rule: "r".into() };
        a.ingest_claiming(&event, &[job], None).await.unwrap();
    }
    let long = Duration::from_secs(60);
    assert_eq!(a.lease_due("t", 10, 1, long).await.unwrap().len(), 1);
    assert_eq!(b.lease_due("t", 10, 1, long).await.unwrap().len(), 1, "B takes the other");
    assert_eq!(a.release_leases().await.unwrap(), 1);
    assert_eq!((a.queued("t").await.unwrap(), b.in_flight().await.unwrap()), (1, 1), "B's lease stays B's");
}

/// A job row that does not decode is moved to the quarantine when met; the queue goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_job_is_quarantined_and_the_queue_goes_on() {
    use std::time::Duration;

    use crate::{Delivery, NewJob};
    let Some(pg) = TestPostgres::start() else { return };
    let s = PgStore::open(&pg.url(), 4).await.unwrap();
    let event = record("evt_1", 10);
    let job = NewJob { target: "t".into(), delivery: Delivery::Target, rule: "r".into() };
    s.ingest_claiming(&event, &[job], None).await.unwrap();
    let client = connect(&pg).await;
    client
        .execute(
            "INSERT INTO jobs (id, event_id, target, due_at_ms, job) VALUES (999999, 'evt_x', 't', 5, '\\xff'::bytea)",
            &[],
        )
        .await
        .unwrap();
    let leased = s.lease_due("t", 100, 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(leased.iter().map(|j| j.event_id.as_str()).collect::<Vec<_>>(), ["evt_1"]);
    assert_eq!(s.quarantined().await.unwrap(), 1);
    assert_eq!((s.queued("t").await.unwrap(), s.in_flight().await.unwrap()), (0, 1), "nothing stranded");
}

/// The database goes away under a store and comes back: calls fail within seconds while it is
/// down (never hang), and work again once it is back, on fresh connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_calls_quickly_and_the_store_recovers_on_its_own() {
    use std::time::{Duration, Instant};

    let Some(pg) = TestPostgres::start() else { return };
    let s = PgStore::open(&pg.url(), 2).await.unwrap();
    assert_eq!(s.queued("t").await.unwrap(), 0);
    pg.stop();
    let started = Instant::now();
    assert!(s.queued("t").await.is_err(), "answered while the database is down");
    assert!(started.elapsed() < Duration::from_secs(15), "failed in {:?}, not hung", started.elapsed());
    pg.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match s.queued("t").await {
            Ok(n) => {
                assert_eq!(n, 0);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not recovered 20 s after the database came back: {e}"),
        }
    }
}

/// Retention runs once for the cluster: while another replica sweeps (holds the lock), a pass
/// does nothing; then it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_one_replica_at_a_time() {
    let Some(pg) = TestPostgres::start() else { return };
    let s = PgStore::open(&pg.url(), 4).await.unwrap();
    let old = record("evt_old", 10);
    s.ingest_claiming(&old, &[], None).await.unwrap();
    let mut other = connect(&pg).await;
    let sweeping = other.transaction().await.unwrap();
    sweeping.execute("SELECT pg_advisory_xact_lock($1)", &[&super::engine::RETENTION_LOCK]).await.unwrap();
    assert_eq!(s.purge_events_before(100, 10).await.unwrap(), 0, "another replica is sweeping");
    assert!(s.event("evt_old").await.unwrap().is_some());
    sweeping.rollback().await.unwrap();
    assert_eq!(s.purge_events_before(100, 10).await.unwrap(), 1);
    assert!(s.event("evt_old").await.unwrap().is_none());
}
