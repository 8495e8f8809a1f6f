use tokio_postgres::NoTls;

use super::*;
use crate::testing::{plain_tls, TestPostgres};
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
    let (a, b) = (
        PgStore::open(&pg.url(), 4, plain_tls()).await.unwrap(),
        PgStore::open(&pg.url(), 4, plain_tls()).await.unwrap(),
    );
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
    let s = PgStore::open(&pg.url(), 4, plain_tls()).await.unwrap();
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
    let s = PgStore::open(&pg.url(), 2, plain_tls()).await.unwrap();
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
    let s = PgStore::open(&pg.url(), 4, plain_tls()).await.unwrap();
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

/// What one replica announces reaches the others, not itself; each listener starts with a
/// "look at everything" (it may have missed announcements before it listened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_wake_the_other_replicas() {
    use std::time::Duration;

    use crate::Wake;
    let Some(pg) = TestPostgres::start() else { return };
    let (a, b) = (
        PgStore::open(&pg.url(), 2, plain_tls()).await.unwrap(),
        PgStore::open(&pg.url(), 2, plain_tls()).await.unwrap(),
    );
    let (mut heard_a, mut heard_b) = (a.wakes(), b.wakes());
    async fn next(heard: &mut tokio::sync::mpsc::UnboundedReceiver<Wake>) -> Option<Wake> {
        tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.expect("heard in time")
    }
    assert_eq!(next(&mut heard_a).await, Some(Wake::All));
    assert_eq!(next(&mut heard_b).await, Some(Wake::All));
    a.announce("t1");
    a.announce("t2");
    a.announce("t1");
    let mut got = vec![next(&mut heard_b).await, next(&mut heard_b).await];
    got.sort_by_key(|w| format!("{w:?}"));
    assert_eq!(got, [Some(Wake::Target("t1".into())), Some(Wake::Target("t2".into()))]);
    b.announce("t3");
    assert_eq!(next(&mut heard_a).await, Some(Wake::Target("t3".into())), "A hears B, not its own");
    a.close();
    b.close();
}

/// Each replica says which inboxes have listeners there and hears the others' word, never its
/// own; a word not renewed goes stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_between_replicas() {
    use crate::PresenceBeat;
    let Some(pg) = TestPostgres::start() else { return };
    let (a, b) = (
        PgStore::open(&pg.url(), 2, plain_tls()).await.unwrap(),
        PgStore::open(&pg.url(), 2, plain_tls()).await.unwrap(),
    );
    let beat = PresenceBeat { inbox: "alice".into(), listeners: 2, offered: 1 };
    assert!(a.share_presence(&[beat]).await.unwrap().is_empty(), "A hears nobody else");
    let heard = b.share_presence(&[]).await.unwrap();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!((heard[0].inbox.as_str(), heard[0].online, heard[0].listeners, heard[0].offered), ("alice", true, 2, 1));
    assert!(heard[0].last_seen_ms > 0);
    let client = connect(&pg).await;
    client.execute("UPDATE presence SET seen_at_ms = seen_at_ms - 60000", &[]).await.unwrap();
    let stale = b.share_presence(&[]).await.unwrap();
    assert_eq!((stale[0].online, stale[0].listeners), (false, 0), "{stale:?}");
}

/// Members of `any` groups leased in batches and completed on two targets at once, as two
/// workers do: no transaction ever waits on another in a cycle (each lock order was once the
/// other's, and Postgres aborted one side with "deadlock detected" every few hundred events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_settled_concurrently_never_deadlock() {
    use std::time::Duration;

    use crate::{Delivery, NewJob};
    let Some(pg) = TestPostgres::start() else { return };
    let s = PgStore::open(&pg.url(), 8, plain_tls()).await.unwrap();
    let events = 300;
    let any = |t: &str| NewJob { target: t.into(), delivery: Delivery::AnyOf { group: "g".into() }, rule: "r".into() };
    for i in 0..events {
        s.ingest_claiming(&record(&format!("evt_{i:04}"), 10), &[any("g1"), any("g2")], None).await.unwrap();
    }
    let drain = |target: &'static str| {
        let s = s.clone();
        tokio::spawn(async move {
            loop {
                let jobs = s.lease_due(target, 10, 16, Duration::from_secs(60)).await?;
                if jobs.is_empty() {
                    return Ok::<_, StoreError>(());
                }
                for job in jobs {
                    s.complete(&job, None, 20).await?;
                }
            }
        })
    };
    let workers = [drain("g1"), drain("g2"), drain("g1"), drain("g2")];
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w).await.expect("bounded").unwrap().expect("no deadlock");
    }
    assert_eq!((s.queued("g1").await.unwrap(), s.queued("g2").await.unwrap()), (0, 0));
    assert_eq!(s.in_flight().await.unwrap(), 0);
}
