//! The conformance suite: the same cases against every engine (sled in a temp dir, and a real
//! throwaway Postgres when one is installed — required under `CI=true`). A case takes an
//! [`Engine`] and says nothing of which one it is.

use std::collections::HashSet;
use std::time::Duration;

use crate::engine::Engine;
use crate::testing::TestPostgres;
use crate::{
    Claims, Delivery, Disposition, EventRecord, Ingested, Job, JobEvent, NewJob, Outcome, Owner, Settled, Store,
};

/// Each engine, fresh, with what keeps it alive.
async fn engines() -> Vec<(&'static str, Engine, Box<dyn std::any::Any + Send>)> {
    let dir = tempfile::tempdir().unwrap();
    let sled = Engine::sled(Store::open(dir.path()).unwrap());
    let mut all: Vec<(&'static str, Engine, Box<dyn std::any::Any + Send>)> = vec![("sled", sled, Box::new(dir))];
    if let Some(pg) = TestPostgres::start() {
        let engine =
            Engine::postgres(&pg.url(), 8, crate::testing::plain_tls()).await.expect("Postgres opens and migrates");
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
        // A member in flight when the group succeeds: its retry stands down (not re-queued), and
        // a retry under a lease it lost is refused as such.
        s.ingest_claiming(&event("evt_2", 10), &[to("a", any()), to("b", any())], None).await.unwrap();
        let a = s.lease_due("a", 10, 1, LONG).await.unwrap().remove(0);
        let b = s.lease_due("b", 10, 1, LONG).await.unwrap().remove(0);
        assert_eq!(s.complete(&a, 20).await.unwrap(), 0, "{name}: b is in flight, not cancelled here");
        let lost = Job { lease: b.lease + 1_000, ..b.clone() };
        assert_eq!(s.retry(&lost, 21).await.unwrap(), Settled::NotLeased, "{name}");
        assert_eq!(s.retry(&Job { attempt: 1, ..b }, 21).await.unwrap(), Settled::CancelledByGroup, "{name}");
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

/// Ownership set by hand, paged through, cleared, and expired by retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_claimed_paged_cleared_and_expire() {
    for (name, s, _keep) in engines().await {
        let owner = |at_ms| Owner { destinations: vec!["a".into()], via: "manual".into(), event_id: None, at_ms };
        let old: Vec<String> = (0..5).map(|i| format!("cus_old{i}")).collect();
        s.claim(&old, &owner(10)).await.unwrap();
        s.claim(&["cus_new1".into(), "cus_new2".into()], &owner(100)).await.unwrap();
        let (mut seen, mut after) = (Vec::new(), None::<String>);
        loop {
            let (page, next) = s.owners_page(after.as_deref(), None, 3, 1000).await.unwrap();
            assert!(page.len() <= 3, "{name}");
            seen.extend(page.into_iter().map(|(id, _)| id));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7, "{name}: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{name}: in id order");
        assert!(s.disown("cus_new2").await.unwrap(), "{name}");
        assert!(!s.disown("cus_new2").await.unwrap(), "{name}: gone");
        let (mut purged, mut from) = (0, None::<String>);
        loop {
            let (n, next) = s.purge_owners_before(50, from.as_deref(), 2).await.unwrap();
            purged += n;
            match next {
                Some(n) => from = Some(n),
                None => break,
            }
        }
        assert_eq!(purged, 5, "{name}");
        assert!(s.owner("cus_old0").await.unwrap().is_none(), "{name}");
        assert_eq!(s.owner("cus_new1").await.unwrap(), Some(owner(100)), "{name}");
    }
}

/// An event's story: each attempt and outcome, in order; counts of queued and dead per target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_s_history_and_counts_follow_its_jobs() {
    for (name, s, _keep) in engines().await {
        let two = [to("a", Delivery::Target), to("b", Delivery::Target)];
        s.ingest_claiming(&event("evt_1", 10), &two, None).await.unwrap();
        let a = s.lease_due("a", 10, 1, LONG).await.unwrap().remove(0);
        let failed =
            Outcome::Failed { status: Some(500), latency_ms: 3, error: "HTTP 500".into(), retry_at_ms: Some(20) };
        s.log(&Job { attempt: 1, ..a.clone() }, failed, 11).await.unwrap();
        assert_eq!(s.retry(&Job { attempt: 1, due_at_ms: 20, ..a.clone() }, 11).await.unwrap(), Settled::Done);
        let b = s.lease_due("b", 10, 1, LONG).await.unwrap().remove(0);
        assert_eq!(s.dead_letter(&b, "gave up", 12).await.unwrap(), Settled::Done);
        let a = s.lease_due("a", 20, 1, LONG).await.unwrap().remove(0);
        s.log(&Job { attempt: 2, ..a.clone() }, Outcome::Delivered { status: 200, latency_ms: 2 }, 21).await.unwrap();
        s.complete(&a, 21).await.unwrap();
        let story: Vec<(String, u64)> = s
            .history(10, "evt_1", 100)
            .await
            .unwrap()
            .iter()
            .map(|h| (format!("{}:{:?}", h.target, std::mem::discriminant(&h.outcome)), h.at_ms))
            .collect();
        let times: Vec<u64> = story.iter().map(|(_, at)| *at).collect();
        assert_eq!(times, [11, 12, 21], "{name}: {story:?}");
        assert_eq!(s.history(10, "evt_1", 1).await.unwrap().len(), 1, "{name}: the newest, bounded");
        assert_eq!(s.event("evt_1").await.unwrap().map(|e| e.id), Some("evt_1".into()), "{name}");
        assert!(s.event("evt_none").await.unwrap().is_none(), "{name}");
        let counts = s.counts().await.unwrap();
        assert_eq!(counts.queued.get("a").copied().unwrap_or(0), 0, "{name}");
        assert_eq!(counts.dead.get("b").copied(), Some(1), "{name}");
    }
}

/// Dead letters paged, revived as new jobs and purged; a replay queues new jobs; retention
/// forgets old events (their ids may come again) with their dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replays_and_retention() {
    for (name, s, _keep) in engines().await {
        for i in 0..3 {
            s.ingest_claiming(&event(&format!("evt_{i}"), 10 + i), &[to("a", Delivery::Target)], None).await.unwrap();
        }
        for job in s.lease_due("a", 100, 3, LONG).await.unwrap() {
            assert_eq!(s.dead_letter(&job, "gave up", 20).await.unwrap(), Settled::Done, "{name}");
        }
        let end = s.dead_letters_end().await.unwrap();
        let (page, next) = s.dead_letters_page(Some("a"), None, Some(end), 2, 1000).await.unwrap();
        assert_eq!((page.len(), next.is_some()), (2, true), "{name}");
        let (rest, next) = s.dead_letters_page(Some("a"), next, Some(end), 2, 1000).await.unwrap();
        assert_eq!((rest.len(), next), (1, None), "{name}");
        assert!(s.dead_letters_page(Some("b"), None, None, 10, 1000).await.unwrap().0.is_empty(), "{name}");
        let revived = s.revive_dead_letter(page[0].job.id, 30).await.unwrap().expect("revived");
        assert_ne!(revived.id, page[0].job.id, "{name}: a new job");
        assert!((revived.replay, revived.attempt, revived.due_at_ms) == (true, 0, 30), "{name}");
        assert!(s.find_dead_letter(page[0].job.id).await.unwrap().is_none(), "{name}");
        assert!(s.purge_dead_letter(page[1].job.id, 30).await.unwrap(), "{name}");
        assert!(!s.purge_dead_letter(page[1].job.id, 30).await.unwrap(), "{name}: gone");
        let replayed = s.replay("evt_2", &[to("b", Delivery::Target)], 40).await.unwrap().expect("kept");
        assert_eq!((replayed.len(), replayed[0].replay), (1, true), "{name}");
        assert!(s.replay("evt_none", &[to("b", Delivery::Target)], 40).await.unwrap().is_none(), "{name}");
        assert_eq!((s.queued("a").await.unwrap(), s.queued("b").await.unwrap()), (1, 1), "{name}");
        // Retention: everything received before 12 goes, in steps, with its dead letter.
        while s.purge_events_before(12, 2).await.unwrap() > 0 {}
        assert!(s.event("evt_0").await.unwrap().is_none() && s.event("evt_1").await.unwrap().is_none(), "{name}");
        assert!(s.event("evt_2").await.unwrap().is_some(), "{name}");
        let dead: Vec<String> = s
            .dead_letters_page(None, None, None, 10, 1000)
            .await
            .unwrap()
            .0
            .into_iter()
            .map(|d| d.job.event_id)
            .collect();
        assert_eq!(dead, ["evt_2"], "{name}");
        let again = s.ingest_claiming(&event("evt_0", 50), &[], None).await.unwrap();
        assert!(matches!(again, Ingested::New(_)), "{name}: a forgotten id is new again");
    }
}

/// Finding the events that mention an object: newest first, bounded by a limit and by how many
/// events are looked at, going on from the cursor; only whole quoted ids match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_mentioning_an_object_are_found_newest_first_within_a_bounded_look() {
    for (name, s, _keep) in engines().await {
        for i in 0..8u64 {
            let object = if i % 2 == 0 { "cus_a" } else { "cus_ab" };
            let body = format!(r#"{{"id":"evt_{i}","data":{{"object":{{"customer":"{object}"}}}}}}"#);
            let record = EventRecord { body: body.into_bytes(), ..event(&format!("evt_{i}"), 10 + i) };
            s.ingest_claiming(&record, &[], None).await.unwrap();
        }
        let ids = |heads: &[crate::EventHead]| heads.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        let (all, end) = s.events_mentioning("\"cus_a\"", None, 0, 10, 100).await.unwrap();
        assert_eq!(ids(&all), ["evt_6", "evt_4", "evt_2", "evt_0"], "{name}");
        assert_eq!(end, None, "{name}: the whole log was looked at");
        let (two, next) = s.events_mentioning("\"cus_a\"", None, 0, 2, 100).await.unwrap();
        assert_eq!(ids(&two), ["evt_6", "evt_4"], "{name}: limit");
        let next = next.expect("a cursor after a full page");
        let (rest, _) = s.events_mentioning("\"cus_a\"", Some(&next), 0, 10, 100).await.unwrap();
        assert_eq!(ids(&rest), ["evt_2", "evt_0"], "{name}: from the cursor");
        // Looking at three events finds one, and says where the look stopped.
        let (few, stop) = s.events_mentioning("\"cus_a\"", None, 0, 10, 3).await.unwrap();
        assert_eq!(ids(&few), ["evt_6"], "{name}: scan bound");
        assert_eq!(stop.map(|c| c.event_id), Some("evt_5".to_owned()), "{name}");
        // The last event looked at is a match: found, and the look goes on after it.
        let (edge, stop) = s.events_mentioning("\"cus_a\"", None, 0, 10, 4).await.unwrap();
        assert_eq!(ids(&edge), ["evt_6", "evt_4"], "{name}: the window's oldest matches");
        assert_eq!(stop.map(|c| c.event_id), Some("evt_4".to_owned()), "{name}");
        let (since, _) = s.events_mentioning("\"cus_ab\"", None, 14, 10, 100).await.unwrap();
        assert_eq!(ids(&since), ["evt_7", "evt_5"], "{name}: since");
        assert!(s.events_mentioning("\"cus_zz\"", None, 0, 10, 100).await.unwrap().0.is_empty(), "{name}");
    }
}

/// Listing newest first in pages, and a sweep that reroutes, dead-letters or keeps queued jobs
/// without an attempt, going on where the last slice stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_newest_first_and_sweeps_move_queued_jobs() {
    for (name, s, _keep) in engines().await {
        for i in 0..5u64 {
            s.ingest_claiming(&event(&format!("evt_{i}"), 10 + i), &[to("i", Delivery::Target)], None).await.unwrap();
        }
        let ids = |heads: &[crate::EventHead]| heads.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        let first = s.events_before(None, 0, 2).await.unwrap();
        assert_eq!(ids(&first), ["evt_4", "evt_3"], "{name}");
        let cursor = crate::EventCursor { received_at_ms: first[1].received_at_ms, event_id: first[1].id.clone() };
        assert_eq!(ids(&s.events_before(Some(&cursor), 0, 2).await.unwrap()), ["evt_2", "evt_1"], "{name}");
        assert_eq!(ids(&s.events_before(Some(&cursor), 12, 10).await.unwrap()), ["evt_2"], "{name}: since");

        let mut n = 0;
        let decide = move |job: &Job| {
            n += 1;
            match n {
                1 => crate::Sweep::Reroute(
                    Box::new(Job { target: "f".into(), due_at_ms: 20, ..job.clone() }),
                    "offline".into(),
                ),
                2 => crate::Sweep::DeadLetter("expired".into()),
                _ => crate::Sweep::Keep,
            }
        };
        let (moved, next) = s.sweep_queue("i", None, 2, 30, decide).await.unwrap();
        assert_eq!((moved, next.is_some()), (2, true), "{name}");
        let (moved, next) = s.sweep_queue("i", next.as_ref(), 10, 30, |_| crate::Sweep::Keep).await.unwrap();
        assert_eq!((moved, next), (0, None), "{name}: the rest looked at and kept");
        assert_eq!((s.queued("i").await.unwrap(), s.queued("f").await.unwrap()), (3, 1), "{name}");
        assert_eq!(s.counts().await.unwrap().dead.get("i").copied(), Some(1), "{name}");
        assert_eq!(
            s.lease_due("f", 20, 5, LONG).await.unwrap()[0].event_id,
            "evt_0",
            "{name}: rerouted, due as rewritten"
        );
    }
}

/// A member queued again after its group was delivered (a revived dead letter of that round) is
/// stood down when leased, not attempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_a_delivered_group_is_stood_down_at_lease() {
    for (name, s, _keep) in engines().await {
        let any = || Delivery::AnyOf { group: "g".into() };
        s.ingest_claiming(&event("evt_1", 10), &[to("a", any()), to("b", any())], None).await.unwrap();
        let b = s.lease_due("b", 10, 1, LONG).await.unwrap().remove(0);
        assert_eq!(s.dead_letter(&b, "HTTP 500", 11).await.unwrap(), Settled::Done, "{name}");
        let a = s.lease_due("a", 10, 1, LONG).await.unwrap().remove(0);
        s.complete(&a, 12).await.unwrap();
        s.revive_dead_letter(b.id, 13).await.unwrap().expect("revived");
        assert_eq!(s.queued("b").await.unwrap(), 1, "{name}");
        assert!(s.lease_due("b", 20, 5, LONG).await.unwrap().is_empty(), "{name}: stood down, not attempted");
        assert_eq!((s.queued("b").await.unwrap(), s.in_flight().await.unwrap()), (0, 0), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inboxes_are_created_once_rotated_listed_and_deleted() {
    for (name, s, _keep) in engines().await {
        let alice = crate::InboxRecord {
            name: "alice".into(),
            token_sha256: "ab".repeat(32),
            secret: "whsec_a".into(),
            max_age_ms: Some(86_400_000),
            offline_fallback: Some("staging".into()),
            offline_after_ms: Some(600_000),
            created_at_ms: 5,
        };
        assert!(s.create_inbox(&alice).await.unwrap(), "{name}");
        let taken = crate::InboxRecord { secret: "whsec_other".into(), ..alice.clone() };
        assert!(!s.create_inbox(&taken).await.unwrap(), "{name}: a name is created once");
        let bob = crate::InboxRecord { name: "bob".into(), offline_fallback: None, ..alice.clone() };
        assert!(s.create_inbox(&bob).await.unwrap());
        assert_eq!(s.inboxes().await.unwrap(), vec![alice.clone(), bob.clone()], "{name}");
        let rotated = crate::InboxRecord { token_sha256: "cd".repeat(32), secret: "whsec_b".into(), ..alice.clone() };
        assert!(s.replace_inbox(&rotated).await.unwrap());
        assert!(!s.replace_inbox(&crate::InboxRecord { name: "carol".into(), ..alice.clone() }).await.unwrap());
        assert!(s.delete_inbox("bob").await.unwrap());
        assert!(!s.delete_inbox("bob").await.unwrap(), "{name}: deleted once");
        assert_eq!(s.inboxes().await.unwrap(), vec![rotated], "{name}");
    }
}
