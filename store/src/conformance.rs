//! The conformance suite: the same cases against every engine (sled in a temp dir, and a real
//! throwaway Postgres when one is installed — required under `CI=true`). A case takes an
//! [`Engine`] and says nothing of which one it is.

use std::collections::HashSet;
use std::time::Duration;

use crate::engine::Engine;
use crate::testing::TestPostgres;
use crate::{Claims, Delivery, Disposition, EventRecord, Ingested, Job, JobEvent, NewJob, Owner, Settled, Store};

/// Each engine, fresh, with what keeps it alive.
async fn engines() -> Vec<(&'static str, Engine, Box<dyn std::any::Any + Send>)> {
    let dir = tempfile::tempdir().unwrap();
    let sled = Engine::sled(Store::open(dir.path()).unwrap());
    let mut all: Vec<(&'static str, Engine, Box<dyn std::any::Any + Send>)> = vec![("sled", sled, Box::new(dir))];
    if let Some(pg) = TestPostgres::start() {
        let engine = Engine::postgres(&pg.url(), 8).await.expect("Postgres opens and migrates");
        all.push(("postgres", engine, Box::new(pg)));
    }
    all
}

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

fn new_jobs(ingested: Ingested) -> Vec<Job> {
    match ingested {
        Ingested::New(jobs) => jobs,
        Ingested::Duplicate => panic!("expected a new event"),
    }
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_its_jobs_and_claims_commit_together_once() {
    for (name, s, _keep) in engines().await {
        let owner =
            Owner { destinations: vec!["a".into()], via: "r".into(), event_id: Some("evt_1".into()), at_ms: 10 };
        let claims = Claims { ids: vec!["cus_1".into(), "sub_1".into()], owner: owner.clone(), refresh_after_ms: 100 };
        let one = [to("a", Delivery::Target)];
        let jobs = new_jobs(s.ingest_claiming(&event("evt_1", 10), &one, Some(&claims)).await.unwrap());
        assert_eq!(jobs.len(), 1, "{name}");
        let both = [to("a", Delivery::Target), to("b", Delivery::Target)];
        let again = s.ingest_claiming(&event("evt_1", 11), &both, None).await.unwrap();
        assert_eq!(again, Ingested::Duplicate, "{name}: the id is the dedup key");
        assert_eq!((s.queued("a").await.unwrap(), s.queued("b").await.unwrap()), (1, 0), "{name}");
        assert_eq!(s.owner("cus_1").await.unwrap(), Some(owner.clone()), "{name}");
        // The same claim again soon after is not rewritten; another owner is.
        let soon = Claims { owner: Owner { at_ms: 50, ..owner.clone() }, ..claims.clone() };
        s.ingest_claiming(&event("evt_2", 50), &[], Some(&soon)).await.unwrap();
        assert_eq!(s.owner("cus_1").await.unwrap().unwrap().at_ms, 10, "{name}: fresh, read not written");
        let moved = Claims { owner: Owner { destinations: vec!["b".into()], at_ms: 60, ..owner }, ..claims };
        s.ingest_claiming(&event("evt_3", 60), &[], Some(&moved)).await.unwrap();
        assert_eq!(s.owner("sub_1").await.unwrap().unwrap().destinations, ["b"], "{name}");
        match s.event_for(&jobs[0]).await.unwrap() {
            JobEvent::Ready(record) => assert_eq!(record.body, event("evt_1", 10).body, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Four takers racing over one queue: every job leased exactly once, each batch in due order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_takers_lease_each_job_once() {
    for (name, s, _keep) in engines().await {
        let mut all = HashSet::new();
        for i in 0..200u64 {
            let one = [to("a", Delivery::Target)];
            all.insert(new_jobs(s.ingest_claiming(&event(&format!("evt_{i}"), i), &one, None).await.unwrap())[0].id);
        }
        let mut takers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let s = s.clone();
            takers.spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let batch = s.lease_due("a", 1_000, 7, LONG).await.unwrap();
                    if batch.is_empty() {
                        return taken;
                    }
                    assert!(batch.windows(2).all(|w| w[0].due_at_ms <= w[1].due_at_ms));
                    taken.extend(batch.into_iter().map(|j| j.id));
                }
            });
        }
        let taken: Vec<u64> = takers.join_all().await.into_iter().flatten().collect();
        assert_eq!(taken.len(), 200, "{name}: no job taken twice");
        assert_eq!(taken.into_iter().collect::<HashSet<_>>(), all, "{name}");
        assert_eq!((s.queued("a").await.unwrap(), s.in_flight().await.unwrap()), (0, 200), "{name}");
    }
}

/// A lease that expires (a worker or replica that died) comes back; the old holder's settle is
/// refused, the new holder's taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_comes_back_and_only_its_new_holder_settles_it() {
    for (name, s, _keep) in engines().await {
        s.ingest_claiming(&event("evt_1", 10), &[to("a", Delivery::Target)], None).await.unwrap();
        let old = s.lease_due("a", 10, 1, Duration::ZERO).await.unwrap().remove(0);
        assert!(s.lease_due("a", 10, 1, Duration::ZERO).await.unwrap().is_empty(), "{name}: leased, not offered twice");
        let back = s.reclaim_expired_leases(10).await.unwrap();
        assert_eq!(back.iter().map(|j| j.id).collect::<Vec<_>>(), [old.id], "{name}");
        let new = s.lease_due("a", 10, 1, LONG).await.unwrap().remove(0);
        assert_ne!(old.lease, new.lease, "{name}");
        assert!(s.reclaim_expired_leases(10).await.unwrap().is_empty(), "{name}: not expired yet");
        let failed = |j: &Job| Job { attempt: 1, due_at_ms: 20, ..j.clone() };
        assert_eq!(s.retry(&failed(&old), 15).await.unwrap(), Settled::NotLeased, "{name}");
        assert_eq!(s.dead_letter(&old, "x", 15).await.unwrap(), Settled::NotLeased, "{name}");
        assert_eq!(s.retry(&failed(&new), 15).await.unwrap(), Settled::Done, "{name}");
        assert!(s.lease_due("a", 19, 1, LONG).await.unwrap().is_empty(), "{name}: due at 20");
        let third = s.lease_due("a", 20, 1, LONG).await.unwrap().remove(0);
        assert_eq!(third.attempt, 1, "{name}");
        assert_eq!(s.dead_letter(&third, "HTTP 500", 30).await.unwrap(), Settled::Done, "{name}");
        assert_eq!((s.queued("a").await.unwrap(), s.in_flight().await.unwrap()), (0, 0), "{name}");
    }
}

/// An `any` group: the first success stands down the siblings still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_any_member_s_success_cancels_its_queued_siblings() {
    for (name, s, _keep) in engines().await {
        let any = || Delivery::AnyOf { group: "g".into() };
        s.ingest_claiming(&event("evt_1", 10), &[to("a", any()), to("b", any())], None).await.unwrap();
        let a = s.lease_due("a", 10, 1, LONG).await.unwrap().remove(0);
        assert_eq!(a.siblings.len(), 1, "{name}");
        assert_eq!(s.complete(&a, 20).await.unwrap(), 1, "{name}: b was waiting, cancelled");
        assert_eq!((s.queued("b").await.unwrap(), s.in_flight().await.unwrap()), (0, 0), "{name}");
    }
}

/// An attempt that runs long renews its lease and is not reclaimed; a renewal of a lease that
/// already went is refused. A stop hands leases back, due as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_renew_while_held_and_go_back_at_a_stop() {
    for (name, s, _keep) in engines().await {
        for (i, due) in [(1, 10), (2, 5)] {
            s.ingest_claiming(&event(&format!("evt_{i}"), due), &[to("a", Delivery::Target)], None).await.unwrap();
        }
        assert_eq!(s.next_due_ms("a").await.unwrap(), Some(5), "{name}");
        let jobs = s.lease_due("a", 10, 2, Duration::ZERO).await.unwrap();
        assert_eq!(s.next_due_ms("a").await.unwrap(), None, "{name}: none waiting");
        assert!(s.renew_lease(&jobs[0], LONG).await.unwrap(), "{name}");
        let back = s.reclaim_expired_leases(10).await.unwrap();
        assert_eq!(back.iter().map(|j| j.id).collect::<Vec<_>>(), [jobs[1].id], "{name}: the renewed one stays");
        assert!(!s.renew_lease(&jobs[1], LONG).await.unwrap(), "{name}: gone, not renewed");
        assert_eq!(s.release_leases().await.unwrap(), 1, "{name}");
        assert_eq!((s.queued("a").await.unwrap(), s.in_flight().await.unwrap()), (2, 0), "{name}");
        assert_eq!(s.next_due_ms("a").await.unwrap(), Some(5), "{name}: due as they were");
    }
}

/// A job that must never be delivered leaves the store; a pause is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_job_leaves_and_a_pause_is_kept() {
    for (name, s, _keep) in engines().await {
        s.ingest_claiming(&event("evt_1", 10), &[to("a", Delivery::Target)], None).await.unwrap();
        let job = s.lease_due("a", 10, 1, LONG).await.unwrap().remove(0);
        s.discard(&job, "its event was never committed", 20).await.unwrap();
        assert_eq!((s.queued("a").await.unwrap(), s.in_flight().await.unwrap()), (0, 0), "{name}");
        assert!(!s.is_paused("a").await.unwrap(), "{name}");
        s.set_paused("a", true).await.unwrap();
        assert!(s.is_paused("a").await.unwrap(), "{name}");
        s.set_paused("a", false).await.unwrap();
        assert!(!s.is_paused("a").await.unwrap(), "{name}");
    }
}
