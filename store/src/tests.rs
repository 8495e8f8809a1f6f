use super::*;

fn event(id: &str, at: u64) -> EventRecord {
    EventRecord {
        id: id.into(),
        event_type: "customer.created".into(),
        source: "stripe".into(),
        received_at_ms: at,
        disposition: Disposition::Unrouted,
        body: br#"{"id":"x"}"#.to_vec(),
    }
}

fn to(target: &str) -> NewJob {
    NewJob { target: target.into(), delivery: Delivery::Target, rule: "r".into() }
}

fn any(target: &str) -> NewJob {
    NewJob { target: target.into(), delivery: Delivery::AnyOf { group: "g".into() }, rule: "r".into() }
}

/// Opens a store just dropped: sled's background flusher can hold the directory's lock for a
/// moment after the last handle goes.
fn reopen(path: &std::path::Path) -> Store {
    for _ in 0..100 {
        match Store::open(path) {
            Ok(store) => return store,
            Err(StoreError::Open { .. }) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the store stayed locked after its handles were dropped");
}

/// For tests about anything but expiry.
const NO_DEADLINE: u64 = u64::MAX;

fn jobs(ingested: Ingested) -> Vec<Job> {
    match ingested {
        Ingested::New(jobs) => jobs,
        Ingested::Duplicate => panic!("expected a new event"),
    }
}

#[test]
fn duplicate_event_id_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(jobs(store.ingest(&event("evt_1", 10), &[to("a")]).unwrap()).len(), 1);
    assert_eq!(store.ingest(&event("evt_1", 11), &[to("a"), to("b")]).unwrap(), Ingested::Duplicate);
    assert_eq!(store.queued("a"), 1);
    assert_eq!(store.queued("b"), 0);
}

#[test]
fn lease_takes_only_due_jobs_of_that_target_in_due_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_late", 50), &[to("a")]).unwrap();
    store.ingest(&event("evt_early", 20), &[to("a"), to("b")]).unwrap();
    assert_eq!(store.next_due_ms("a").unwrap(), Some(20));
    let leased = store.lease_due("a", 30, 10, NO_DEADLINE).unwrap();
    assert_eq!(leased.iter().map(|j| j.event_id.as_str()).collect::<Vec<_>>(), ["evt_early"]);
    assert_eq!(store.queued("a"), 1);
    assert_eq!(store.queued("b"), 1);
    assert_eq!(store.in_flight(), 1);
}

#[test]
fn retry_requeues_at_new_due_time_and_dead_letter_keeps_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
    let mut job = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    job.attempt = 1;
    job.due_at_ms = 500;
    job.last_error = Some("HTTP 500".into());
    assert_eq!(store.retry(&job, 1).unwrap(), Settled::Done);
    assert!(store.lease_due("a", 499, 1, NO_DEADLINE).unwrap().is_empty());
    let again = store.lease_due("a", 500, 1, NO_DEADLINE).unwrap().remove(0);
    assert_eq!(again.attempt, 1);
    store.dead_letter(&again, "gave up after 1 attempt", 600).unwrap();
    let dead = store.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "gave up after 1 attempt");
    assert_eq!(store.in_flight(), 0);
    assert!(store.in_flight_job(again.id).unwrap().is_none());
}

#[test]
fn reopening_releases_in_flight_jobs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
        assert_eq!(store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().len(), 1);
        assert_eq!(store.queued("a"), 0);
        store.db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.in_flight(), 0);
    assert_eq!(store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().len(), 1);
}

#[test]
fn any_group_success_cancels_queued_siblings_and_later_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[any("a"), any("b"), any("c")]).unwrap();
    let a = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    let b = store.lease_due("b", 0, 1, NO_DEADLINE).unwrap().remove(0);
    // c is still queued: cancelled outright. b is in flight: cancelled when it settles.
    assert_eq!(store.complete(&a, 1).unwrap(), 1);
    assert_eq!(store.queued("c"), 0);
    assert_eq!(store.dead_letter(&b, "HTTP 500", 1).unwrap(), Settled::CancelledByGroup);
    assert_eq!(store.dead_letter_count(), 0);
    assert_eq!(store.in_flight(), 0);
}

#[tokio::test]
async fn concurrent_durable_calls_all_return() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.ingest(&event(&format!("evt_{i}"), i), &[to("a")]).unwrap();
            store.durable().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Typically one flush for the first ticket and one shared by the 31 that queued behind it;
    // a loaded machine can let a flush end while writers are still taking tickets, so the bound
    // is looser, and still fails if every writer flushed alone.
    assert!(store.commit.flushes() <= 8, "{} flushes for 32 writers", store.commit.flushes());
    assert_eq!(store.queued("a"), 32);
}

#[test]
fn purge_forgets_old_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_old", 10), &[any("a"), any("b")]).unwrap();
    store.ingest(&event("evt_new", 100), &[any("a"), any("b")]).unwrap();
    for job in store.lease_due("a", 100, 10, NO_DEADLINE).unwrap() {
        assert_eq!(store.complete(&job, 100).unwrap(), 1, "b's job cancelled");
    }
    assert_eq!(store.groups.len(), 2);
    assert_eq!(store.purge_events_before(50, 100).unwrap(), 2, "the record and its one history entry (b cancelled)");
    assert_eq!(store.groups.len(), 1, "the old event's group state goes with it");
    assert!(store.event("evt_old").unwrap().is_none());
    assert!(store.event("evt_new").unwrap().is_some());
}

#[test]
fn racing_copies_of_one_event_commit_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for round in 0..20 {
        let id = format!("evt_race_{round}");
        let outcomes: Vec<Ingested> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (store, id) = (&store, &id);
                    s.spawn(move || store.ingest(&event(id, round * 10 + i), &[to("a"), any("b"), any("c")]).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let new: Vec<&Vec<Job>> =
            outcomes.iter().filter_map(|o| if let Ingested::New(j) = o { Some(j) } else { None }).collect();
        assert_eq!(new.len(), 1, "round {round}: {outcomes:?}");
        let committed = store.event(&id).unwrap().unwrap();
        let queued = |j: &Job| store.queue.contains_key(queue_key(&j.target, j.due_at_ms, j.id)).unwrap();
        assert!(new[0].iter().all(queued), "the winner's jobs are all there");
        for job in new[0] {
            assert!(matches!(store.event_for(job).unwrap(), JobEvent::Ready(_)), "round {round}: {job:?}");
        }
        assert_eq!(store.records.scan_prefix(committed.received_at_ms.to_be_bytes()).count(), 1);
    }
    assert_eq!(store.queued("a"), 20, "one job per event: the losers' jobs were removed");
    assert_eq!(store.queue.len(), 60);
    assert_eq!(store.records.len(), 20);
}

#[test]
fn a_retried_sibling_is_cancelled_where_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[any("a"), any("b"), any("c")]).unwrap();
    let mut b = store.lease_due("b", 0, 1, NO_DEADLINE).unwrap().remove(0);
    b.attempt = 1;
    b.due_at_ms = 1_000;
    assert_eq!(store.retry(&b, 1).unwrap(), Settled::Done);
    let a = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    assert_eq!(store.complete(&a, 1).unwrap(), 2, "b at its retry time, c at its first");
    assert_eq!((store.queued("b"), store.queued("c")), (0, 0));
    assert_eq!(store.requeued.len(), 0);
    assert!(store.lease_due("b", 1_000, 10, NO_DEADLINE).unwrap().is_empty());
}

#[test]
fn a_member_leased_after_its_group_was_delivered_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let jobs = jobs(store.ingest(&event("evt_1", 0), &[any("a"), any("b")]).unwrap());
    // b waits where `complete` does not look (as if its `requeued` entry were lost).
    let mut b = jobs[1].clone();
    store.queue.remove(queue_key("b", 0, b.id)).unwrap();
    b.due_at_ms = 7;
    store.queue.insert(queue_key("b", 7, b.id), encode(&b).unwrap()).unwrap();
    let a = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    assert_eq!(store.complete(&a, 1).unwrap(), 0);
    assert!(store.lease_due("b", 7, 10, NO_DEADLINE).unwrap().is_empty(), "b is dropped, not delivered");
    assert_eq!((store.queued("b"), store.in_flight()), (0, 0));
}

#[test]
fn retention_of_an_orphan_record_keeps_the_committed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // An ingest that died after writing its record but before its index entry.
    store.records.insert(record_key(10, "evt_1"), encode(&event("evt_1", 10)).unwrap()).unwrap();
    store.ingest(&event("evt_1", 100), &[to("a")]).unwrap();
    assert_eq!(store.purge_events_before(50, 10).unwrap(), 1);
    assert_eq!(store.event("evt_1").unwrap().unwrap().received_at_ms, 100);
    assert_eq!(store.ingest(&event("evt_1", 200), &[to("a")]).unwrap(), Ingested::Duplicate);
}

#[test]
fn a_store_in_another_layout_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("jobs").unwrap().insert(b"1", b"old").unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, StoreError::Layout { ref found, .. } if found == "1"), "{err}");
    assert!(err.to_string().contains("another version of fanout"), "{err}");
    // A store of this layout opens again.
    let fresh = tempfile::tempdir().unwrap();
    drop(Store::open(fresh.path()).unwrap());
    reopen(fresh.path());
}

#[test]
fn a_body_encodes_as_the_same_bytes_as_a_sequence_of_u8() {
    let record = event("evt_1", 1);
    #[derive(serde::Serialize)]
    struct Plain<'a> {
        id: &'a str,
        event_type: &'a str,
        source: &'a str,
        received_at_ms: u64,
        disposition: &'a Disposition,
        body: &'a Vec<u8>,
    }
    let plain = Plain {
        id: &record.id,
        event_type: &record.event_type,
        source: &record.source,
        received_at_ms: record.received_at_ms,
        disposition: &record.disposition,
        body: &record.body,
    };
    assert_eq!(encode(&record).unwrap(), encode(&plain).unwrap());
}

#[test]
fn only_the_committed_ingest_s_jobs_are_deliverable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let committed = jobs(store.ingest(&event("evt_1", 10), &[to("a")]).unwrap()).remove(0);
    assert_eq!(store.event_for(&committed).unwrap(), JobEvent::Ready(event("evt_1", 10)));
    // A copy that lost the race, leased by a worker before it could remove its job.
    let loser = Job { id: committed.id + 100, ingest: committed.ingest + 100, ..committed.clone() };
    assert_eq!(store.event_for(&loser).unwrap(), JobEvent::Superseded);
    // A job whose ingest has not committed (yet, or ever).
    let pending = Job { event_id: "evt_2".into(), ..committed };
    assert_eq!(store.event_for(&pending).unwrap(), JobEvent::Uncommitted);
}

#[test]
fn counts_follow_every_queue_move_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.ingest(&event("evt_1", 0), &[to("a"), to("b")]).unwrap();
        store.ingest(&event("evt_2", 1), &[any("a"), any("c")]).unwrap();
        assert_eq!((store.queued("a"), store.queued("b"), store.queued("c")), (2, 1, 1));
        let leased = store.lease_due("a", 10, 10, NO_DEADLINE).unwrap();
        assert_eq!(store.queued("a"), 0);
        let group_job = leased.iter().find(|j| j.event_id == "evt_2").unwrap();
        assert_eq!(store.complete(group_job, 10).unwrap(), 1, "c's queued member is cancelled");
        assert_eq!(store.queued("c"), 0);
        let plain = leased.iter().find(|j| j.event_id == "evt_1").unwrap();
        store.dead_letter(plain, "HTTP 500", 20).unwrap();
        assert_eq!(store.counts().dead.get("a"), Some(&1));
        store.db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!((store.queued("a"), store.queued("b"), store.queued("c")), (0, 1, 0));
    assert_eq!(store.dead_letter_count(), 1);
}

#[test]
fn history_tells_each_job_s_story() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[any("a"), any("b")]).unwrap();
    let mut a = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    a.attempt = 1;
    let failed = Outcome::Failed { status: Some(500), latency_ms: 3, error: "HTTP 500".into(), retry_at_ms: Some(50) };
    store.log(&a, failed.clone(), 5).unwrap();
    let b = store.lease_due("b", 0, 1, NO_DEADLINE).unwrap().remove(0);
    store.log(&b, Outcome::Delivered { status: 200, latency_ms: 2 }, 6).unwrap();
    store.complete(&b, 6).unwrap();
    // a was in flight when b succeeded: cancelled when it settles.
    a.due_at_ms = 50;
    assert_eq!(store.retry(&a, 7).unwrap(), Settled::CancelledByGroup);
    let history = store.history(0, "evt_1", 100).unwrap();
    let story: Vec<(&str, &Outcome)> = history.iter().map(|h| (h.target.as_str(), &h.outcome)).collect();
    assert_eq!(
        story,
        [("a", &failed), ("b", &Outcome::Delivered { status: 200, latency_ms: 2 }), ("a", &Outcome::Cancelled)]
    );
    assert!(history.iter().all(|h| h.destination == "g"));
    assert_eq!(history[0].attempt, 1);
    assert!(store.history(0, "evt_other", 100).unwrap().is_empty());
}

#[test]
fn listing_pages_newest_first_without_bodies_and_skips_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..5u64 {
        store.ingest(&event(&format!("evt_{i}"), 100 + i), &[]).unwrap();
    }
    // An orphan record: written by an ingest that never committed.
    store.records.insert(record_key(103, "evt_orphan"), encode(&event("evt_orphan", 103)).unwrap()).unwrap();
    let ids = |before: Option<&EventCursor>, since| -> Vec<String> {
        store.events_newest_first(before, since).take(2).map(|h| h.unwrap().id).collect()
    };
    assert_eq!(ids(None, 0), ["evt_4", "evt_3"]);
    let cursor: EventCursor = "103-evt_3".parse().unwrap();
    assert_eq!(cursor.to_string(), "103-evt_3");
    assert_eq!(ids(Some(&cursor), 0), ["evt_2", "evt_1"]);
    assert_eq!(ids(None, 103), ["evt_4", "evt_3"]);
    assert_eq!(store.events_newest_first(None, 104).count(), 1);
    let head = store.events_newest_first(None, 0).next().unwrap().unwrap();
    assert_eq!((head.event_type.as_str(), head.received_at_ms), ("customer.created", 104));
    assert!("nonsense".parse::<EventCursor>().is_err());
}

#[test]
fn replay_queues_new_deliverable_jobs_marked_as_replays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = jobs(store.ingest(&event("evt_1", 0), &[to("a")]).unwrap()).remove(0);
    assert_eq!(store.replay("evt_unknown", &[to("a")], 10).unwrap(), None);
    let replayed = store.replay("evt_1", &[to("b")], 10).unwrap().unwrap().remove(0);
    assert!(replayed.replay && replayed.id != first.id);
    let leased = store.lease_due("b", 10, 1, NO_DEADLINE).unwrap().remove(0);
    assert!(matches!(store.event_for(&leased).unwrap(), JobEvent::Ready(_)));
    assert_eq!(store.history(0, "evt_1", 10).unwrap()[0].outcome, Outcome::Replayed);
}

#[test]
fn dead_letters_page_by_target_revive_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..4 {
        let target = if i % 2 == 0 { "a" } else { "b" };
        store.ingest(&event(&format!("evt_{i}"), i), &[to(target)]).unwrap();
        let job = store.lease_due(target, 10, 1, NO_DEADLINE).unwrap().remove(0);
        store.dead_letter(&job, "HTTP 500", 20).unwrap();
    }
    let (page, next) = store.dead_letters_page(Some("a"), None, None, 1, 100).unwrap();
    assert_eq!(page[0].job.event_id, "evt_0");
    let (page, next) = store.dead_letters_page(Some("a"), next, None, 1, 100).unwrap();
    assert_eq!(page[0].job.event_id, "evt_2");
    assert_eq!(store.dead_letters_page(Some("a"), next, None, 1, 100).unwrap(), (vec![], None));
    // A bounded scan stops early and says where to go on.
    let (page, next) = store.dead_letters_page(Some("b"), None, None, 10, 1).unwrap();
    assert!(page.is_empty() && next.is_some());

    let revived = store.revive_dead_letter(page_id(&store, "evt_0"), 30).unwrap().unwrap();
    assert!(revived.replay && revived.attempt == 0 && revived.due_at_ms == 30);
    assert_eq!(store.lease_due("a", 30, 5, NO_DEADLINE).unwrap().len(), 1);
    assert!(store.purge_dead_letter(page_id(&store, "evt_1"), 30).unwrap());
    assert!(!store.purge_dead_letter(page_id(&store, "evt_2") + 1000, 30).unwrap());
    assert_eq!(store.dead_letter_count(), 2);
    assert_eq!(store.counts().dead.get("a"), Some(&1));
}

fn page_id(store: &Store, event_id: &str) -> JobId {
    store.dead_letters(100).unwrap().into_iter().find(|d| d.job.event_id == event_id).unwrap().job.id
}

#[test]
fn a_removed_target_s_queue_moves_to_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..3 {
        store.ingest(&event(&format!("evt_{i}"), i), &[to("gone"), to("kept")]).unwrap();
    }
    assert_eq!(store.dead_letter_queue("gone", "target removed", 50, 2).unwrap(), (2, true));
    assert_eq!(store.dead_letter_queue("gone", "target removed", 50, 2).unwrap(), (1, false));
    assert_eq!((store.queued("gone"), store.queued("kept"), store.dead_letter_count()), (0, 3, 3));
    assert_eq!(store.in_flight(), 0);
    assert_eq!(store.dead_letters(1).unwrap()[0].error, "target removed");
}

#[test]
fn retention_takes_history_and_dead_letters_with_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_old", 10), &[to("a")]).unwrap();
    store.ingest(&event("evt_new", 1000), &[to("a")]).unwrap();
    for job in store.lease_due("a", 1000, 2, NO_DEADLINE).unwrap() {
        store.dead_letter(&job, "HTTP 500", 1000).unwrap();
    }
    store.purge_events_before(500, 100).unwrap();
    assert!(store.history(10, "evt_old", 10).unwrap().is_empty());
    assert_eq!(store.history(1000, "evt_new", 10).unwrap().len(), 1);
    let dead: Vec<String> = store.dead_letters(10).unwrap().into_iter().map(|d| d.job.event_id).collect();
    assert_eq!(dead, ["evt_new"]);
    assert_eq!(store.dead_letter_count(), 1);
}

#[test]
fn pause_is_kept_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.set_paused("a", true).unwrap();
        store.set_paused("b", true).unwrap();
        store.set_paused("b", false).unwrap();
        store.db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert!(store.is_paused("a").unwrap());
    assert!(!store.is_paused("b").unwrap());
}

#[test]
fn a_replay_to_a_delivered_any_group_is_a_new_round() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[any("a"), any("b")]).unwrap();
    let a = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    store.complete(&a, 1).unwrap();
    assert_eq!(store.queued("b"), 0, "b's member of the first round is cancelled");
    let replayed = store.replay("evt_1", &[any("a"), any("b")], 10).unwrap().unwrap();
    assert_eq!(replayed.len(), 2);
    let b = store.lease_due("b", 10, 1, NO_DEADLINE).unwrap();
    assert_eq!(b.len(), 1, "the replay's members are not cancelled by the first round's success");
    store.complete(&b[0], 10).unwrap();
    assert_eq!(store.queued("a"), 0, "and the replay round cancels its own other member");
}

#[test]
fn a_lease_left_behind_by_a_dead_letter_is_not_requeued() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
        let job = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
        // A crash between writing the dead letter and removing the lease.
        let letter = DeadLetter { job: job.clone(), error: "HTTP 500".into(), died_at_ms: 1 };
        store.dead.insert(job.id.to_be_bytes(), encode(&letter).unwrap()).unwrap();
        store.db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!((store.queued("a"), store.in_flight(), store.dead_letter_count()), (0, 0, 1));
}

#[test]
fn a_bulk_dead_letter_pass_stops_at_where_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
    let job = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    store.dead_letter(&job, "x", 1).unwrap();
    let end = store.dead_letters_end().unwrap();
    // Revived, and dead again: a new, later letter the pass must not reach.
    let revived = store.revive_dead_letter(job.id, 2).unwrap().unwrap();
    let again = store.lease_due("a", 2, 1, NO_DEADLINE).unwrap().remove(0);
    assert_eq!(again.id, revived.id);
    store.dead_letter(&again, "x", 3).unwrap();
    assert_eq!(store.dead_letters_page(None, None, Some(end), 10, 10).unwrap(), (vec![], None));
    assert_eq!(store.dead_letters_page(None, None, None, 10, 10).unwrap().0.len(), 1);
}

#[test]
fn owners_are_claimed_listed_and_expire_with_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let owner = |d: &str, at_ms| Owner { destinations: vec![d.into()], via: "r".into(), event_id: None, at_ms };
    store.claim(&["cus_1".into(), "sub_1".into()], &owner("alice", 100)).unwrap();
    store.claim(&["cus_2".into()], &owner("bob", 5_000)).unwrap();
    assert_eq!(store.owner("cus_1").unwrap().unwrap().destinations, vec!["alice"]);
    let (page, next) = store.owners_page(None, Some("alice"), 10, 100).unwrap();
    assert_eq!(page.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["cus_1", "sub_1"]);
    assert_eq!(next, None);
    let (page, next) = store.owners_page(None, None, 1, 100).unwrap();
    assert_eq!((page.len(), next.as_deref()), (1, Some("cus_1")));
    // A pass in slices of 2 from the start: cus_1 goes, cus_2 (newer) stays, then sub_1.
    let (purged, next) = store.purge_owners_before(1_000, None, 2).unwrap();
    assert_eq!((purged, next.as_deref()), (1, Some("cus_2")));
    let (purged, next) = store.purge_owners_before(1_000, next.as_deref(), 2).unwrap();
    assert_eq!((purged, next), (1, None));
    assert!(store.owner("cus_1").unwrap().is_none() && store.owner("sub_1").unwrap().is_none());
    assert!(store.owner("cus_2").unwrap().is_some());
    assert!(store.disown("cus_2").unwrap() && !store.disown("cus_2").unwrap());
}

#[test]
fn a_sweep_reroutes_or_dead_letters_queued_jobs_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (i, id) in ["evt_1", "evt_2", "evt_3"].into_iter().enumerate() {
        store.ingest(&event(id, 1_000 + i as u64), &[to("inbox")]).unwrap();
    }
    let decide = |job: &Job| match job.event_id.as_str() {
        "evt_1" => Sweep::Reroute(Box::new(Job { target: "staging".into(), ..job.clone() }), "offline".into()),
        "evt_2" => Sweep::DeadLetter("too old".into()),
        _ => Sweep::Keep,
    };
    // In passes of two: the first takes both out and says where to go on; the second reaches
    // the end.
    let (swept, next) = store.sweep_queue("inbox", None, 2, 2_000, decide).unwrap();
    assert_eq!(swept, 2);
    assert!(next.is_some());
    let (swept, next) = store.sweep_queue("inbox", next.as_ref(), 2, 2_000, decide).unwrap();
    assert_eq!((swept, next), (0, None));
    assert_eq!((store.queued("inbox"), store.queued("staging"), store.dead_letter_count()), (1, 1, 1));
    let moved = store.lease_due("staging", 5_000, 10, NO_DEADLINE).unwrap();
    assert_eq!(moved[0].event_id, "evt_1");
    let received = store.event("evt_1").unwrap().unwrap().received_at_ms;
    let history = store.history(received, "evt_1", 10).unwrap();
    assert!(matches!(&history[0].outcome, Outcome::Rerouted { to, reason } if to == "staging" && reason == "offline"));
}

#[test]
fn two_takers_racing_for_one_queue_lease_each_job_once_and_keep_every_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..300 {
        store.ingest(&event(&format!("evt_{i}"), 0), &[to("inbox")]).unwrap();
    }
    let take = || {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let jobs = store.lease_due("inbox", 10, 3, NO_DEADLINE).unwrap();
                if jobs.is_empty() && store.queued("inbox") == 0 {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.id));
            }
        })
    };
    let (a, b) = (take(), take());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let mut all: Vec<JobId> = a.iter().chain(&b).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!((all.len(), a.len() + b.len()), (300, 300), "each job leased exactly once");
    assert_eq!(store.in_flight(), 300, "no taker removed another's lease");
}

#[test]
fn an_unchanged_recent_claim_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let claims = |event: &str, dest: &str, at_ms| Claims {
        ids: vec!["cus_1".into()],
        owner: Owner { destinations: vec![dest.into()], via: "r".into(), event_id: Some(event.into()), at_ms },
        refresh_after_ms: 1_000,
    };
    let claimed_by = || store.owner("cus_1").unwrap().unwrap().event_id.unwrap();
    store.ingest_claiming(&event("evt_1", 0), &[], Some(&claims("evt_1", "alice", 100))).unwrap();
    store.ingest_claiming(&event("evt_2", 0), &[], Some(&claims("evt_2", "alice", 600))).unwrap();
    assert_eq!(claimed_by(), "evt_1", "same owner, claimed 500 ms ago: kept as it was");
    store.ingest_claiming(&event("evt_3", 0), &[], Some(&claims("evt_3", "bob", 700))).unwrap();
    assert_eq!(claimed_by(), "evt_3", "another owner: written");
    store.ingest_claiming(&event("evt_4", 0), &[], Some(&claims("evt_4", "bob", 1_800))).unwrap();
    assert_eq!(claimed_by(), "evt_4", "the same owner after the refresh period: refreshed");
}

#[test]
fn the_store_s_own_history_entries_carry_the_caller_s_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[any("a"), any("b"), any("c")]).unwrap();
    let b = store.lease_due("b", 0, 1, NO_DEADLINE).unwrap().remove(0);
    let a = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    assert_eq!(store.complete(&a, 42).unwrap(), 1, "c cancelled while it waits");
    assert_eq!(store.retry(&b, 43).unwrap(), Settled::CancelledByGroup, "b when it settles");
    let when: Vec<(String, u64)> =
        store.history(0, "evt_1", 10).unwrap().into_iter().map(|h| (h.target, h.at_ms)).collect();
    assert_eq!(when, [("c".to_owned(), 42), ("b".to_owned(), 43)]);
}

#[cfg(feature = "fault-injection")]
#[test]
fn injected_faults_fail_settles_and_queue_reads_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
    store.fail_queue_reads(true);
    assert!(store.lease_due("a", 0, 1, NO_DEADLINE).is_err());
    assert!(store.next_due_ms("a").is_err());
    store.fail_queue_reads(false);
    let job = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    store.fail_settles(true);
    assert!(store.log(&job, Outcome::Delivered { status: 200, latency_ms: 1 }, 1).is_err());
    assert!(store.complete(&job, 1).is_err());
    assert!(store.retry(&job, 1).is_err());
    assert!(store.dead_letter(&job, "HTTP 500", 1).is_err());
    assert!(store.discard(&job, "superseded", 1).is_err());
    assert_eq!(store.faults_hit(), 7);
    assert_eq!((store.in_flight(), store.dead_letter_count(), store.queued("a")), (1, 0, 0), "nothing settled");
    assert!(store.history(0, "evt_1", 10).unwrap().is_empty());
    store.fail_settles(false);
    assert_eq!(store.complete(&job, 2).unwrap(), 0);
    assert_eq!((store.faults_hit(), store.in_flight()), (7, 0));
}

/// Bytes no record decodes from (a varint cut short).
const GARBAGE: &[u8] = b"\xff\xff\xff";

fn event_ids(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|j| j.event_id.as_str()).collect()
}

#[test]
fn corrupt_entries_are_quarantined_at_open_and_the_rest_stays_deliverable() {
    let dir = tempfile::tempdir().unwrap();
    let queued_garbage = queue_key("a", 1, 1_000_001);
    {
        let store = Store::open(dir.path()).unwrap();
        for (id, at) in [("evt_1", 0), ("evt_2", 2), ("evt_3", 4)] {
            store.ingest(&event(id, at), &[to("a")]).unwrap();
        }
        // In flight at the stop: released by the next open.
        assert_eq!(store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().len(), 1);
        store.queue.insert(queued_garbage.as_slice(), GARBAGE).unwrap();
        store.leases.insert(1_000_002u64.to_be_bytes(), GARBAGE).unwrap();
        store.dead.insert(1_000_003u64.to_be_bytes(), GARBAGE).unwrap();
        store.db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.quarantined(), 2, "the lease and the dead letter, met by open");
    assert_eq!((store.in_flight(), store.dead_letter_count()), (0, 0));
    let leased = store.lease_due("a", 10, 10, NO_DEADLINE).unwrap();
    assert_eq!(event_ids(&leased), ["evt_1", "evt_2", "evt_3"]);
    assert_eq!(store.quarantined(), 3, "and the queue entry, met by the lease");
    assert_eq!(store.counts().queued.get("a"), Some(&0), "no longer counted as queued");
    assert_eq!((store.in_flight(), store.queue.len()), (3, 0));
    let aside = store.quarantine.get([b"queue\0".as_slice(), &queued_garbage].concat()).unwrap();
    assert_eq!(aside.as_deref(), Some(GARBAGE), "kept raw, under its tree's name and key");
    drop(store);
    assert_eq!(reopen(dir.path()).quarantined(), 3, "counted from disk");
}

#[test]
fn a_corrupt_entry_in_a_leased_batch_strands_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
    store.ingest(&event("evt_2", 2), &[to("a")]).unwrap();
    store.queue.insert(queue_key("a", 1, 1_000_001), GARBAGE).unwrap();
    let leased = store.lease_due("a", 10, 2, NO_DEADLINE).unwrap();
    assert_eq!(event_ids(&leased), ["evt_1", "evt_2"], "the corrupt entry takes no place in the batch");
    assert_eq!(store.in_flight(), 2, "only what was returned is leased");
    assert!(store.leases.get(1_000_001u64.to_be_bytes()).unwrap().is_none());
    assert_eq!((store.quarantined(), store.queue.len()), (1, 0));
}

#[test]
fn a_sweep_a_group_success_and_retention_quarantine_what_they_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("inbox")]).unwrap();
    store.queue.insert(queue_key("inbox", 0, 1_000_001), GARBAGE).unwrap();
    let dead = |_: &Job| Sweep::DeadLetter("too old".into());
    assert_eq!(store.sweep_queue("inbox", None, 10, 5, dead).unwrap().0, 1);
    // An untried sibling whose queue entry does not decode.
    let members = jobs(store.ingest(&event("evt_2", 0), &[any("a"), any("b")]).unwrap());
    store.queue.insert(queue_key("b", 0, members[1].id), GARBAGE).unwrap();
    let a = store.lease_due("a", 0, 1, NO_DEADLINE).unwrap().remove(0);
    assert_eq!(store.complete(&a, 1).unwrap(), 0, "nothing readable to cancel");
    assert_eq!(store.queued("b"), 0);
    // A dead letter in front of the one retention removes.
    store.dead.insert(0u64.to_be_bytes(), GARBAGE).unwrap();
    store.purge_events_before(100, 100).unwrap();
    assert_eq!(store.dead_letter_count(), 0, "evt_1's letter went with its event");
    assert_eq!((store.quarantined(), store.queue.len(), store.dead.len()), (3, 0, 0));
}

#[test]
fn an_expired_lease_goes_back_to_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
    store.ingest(&event("evt_2", 1), &[to("a")]).unwrap();
    let leased = store.lease_due("a", 1, 10, 100).unwrap();
    assert!(store.reclaim_expired_leases(99, 10).unwrap().is_empty());
    assert_eq!(store.in_flight(), 2);
    assert_eq!(store.reclaim_expired_leases(100, 1).unwrap().len(), 1, "at most `max`");
    assert_eq!(store.reclaim_expired_leases(100, 1).unwrap().len(), 1);
    assert_eq!((store.in_flight(), store.queued("a")), (0, 2));
    let again = store.lease_due("a", 1, 10, 200).unwrap();
    let unleased = |jobs: Vec<Job>| jobs.into_iter().map(|j| Job { lease: 0, ..j }).collect::<Vec<_>>();
    assert_eq!(unleased(again), unleased(leased), "due when they were due, as they were");
    assert!(store.reclaim_expired_leases(199, 10).unwrap().is_empty(), "a new lease, a new deadline");
}

#[test]
fn a_settle_after_a_reclaim_makes_no_second_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a"), to("b")]).unwrap();
    let mut a = store.lease_due("a", 0, 1, 100).unwrap().remove(0);
    let b = store.lease_due("b", 0, 1, 100).unwrap().remove(0);
    assert_eq!(store.reclaim_expired_leases(100, 10).unwrap().len(), 2);
    a.attempt = 1;
    a.due_at_ms = 500;
    assert_eq!(store.retry(&a, 150).unwrap(), Settled::NotLeased);
    assert_eq!(store.dead_letter(&b, "HTTP 500", 150).unwrap(), Settled::NotLeased);
    assert_eq!((store.queue.len(), store.queued("a"), store.queued("b")), (2, 1, 1), "one copy each");
    assert_eq!((store.dead_letter_count(), store.in_flight()), (0, 0));
    assert!(store.history(0, "evt_1", 10).unwrap().is_empty(), "nothing written");
    assert_eq!(store.lease_due("a", 0, 10, NO_DEADLINE).unwrap().len(), 1, "where the reclaim put it");
}

#[test]
fn a_job_settled_as_done_after_a_reclaim_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a"), to("b")]).unwrap();
    let a = store.lease_due("a", 0, 1, 100).unwrap().remove(0);
    let b = store.lease_due("b", 0, 1, 100).unwrap().remove(0);
    assert_eq!(store.reclaim_expired_leases(100, 10).unwrap().len(), 2);
    assert_eq!(store.complete(&a, 150).unwrap(), 0);
    store.discard(&b, "superseded", 150).unwrap();
    assert_eq!((store.queue.len(), store.queued("a"), store.queued("b"), store.in_flight()), (0, 0, 0, 0));
    assert!(store.lease_due("a", 1_000, 10, NO_DEADLINE).unwrap().is_empty());
}

#[test]
fn a_reclaimed_any_member_is_cancelled_where_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[any("a"), any("b")]).unwrap();
    let mut b = store.lease_due("b", 0, 1, NO_DEADLINE).unwrap().remove(0);
    b.attempt = 1;
    b.due_at_ms = 50;
    assert_eq!(store.retry(&b, 1).unwrap(), Settled::Done);
    store.lease_due("b", 50, 1, 60).unwrap().remove(0);
    assert_eq!(store.reclaim_expired_leases(60, 10).unwrap().len(), 1);
    assert_eq!(store.requeued.len(), 1, "a retried member's key is indexed again");
    let a = store.lease_due("a", 60, 1, NO_DEADLINE).unwrap().remove(0);
    assert_eq!(store.complete(&a, 70).unwrap(), 1);
    assert_eq!((store.queued("b"), store.requeued.len()), (0, 0));
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_failed_settle_leaves_the_lease_to_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_1", 0), &[to("a")]).unwrap();
    let mut job = store.lease_due("a", 0, 1, 100).unwrap().remove(0);
    job.attempt = 1;
    job.due_at_ms = 50;
    store.fail_settles(true);
    assert!(store.retry(&job, 10).is_err());
    store.fail_settles(false);
    assert_eq!(store.reclaim_expired_leases(100, 10).unwrap().len(), 1);
    assert_eq!(store.lease_due("a", 100, 10, NO_DEADLINE).unwrap().len(), 1);
}

#[test]
fn settles_racing_a_reclaim_leave_each_job_in_exactly_one_place() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..300 {
            store.ingest(&event(&format!("evt_{round}_{i}"), 0), &[to("a")]).unwrap();
        }
        let leased = store.lease_due("a", 0, 300, 100).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| while !store.reclaim_expired_leases(100, 7).unwrap().is_empty() {});
            for (i, job) in leased.iter().enumerate() {
                let settled = match i % 3 {
                    0 => store.retry(&Job { attempt: 1, due_at_ms: 500, ..job.clone() }, 50).unwrap(),
                    1 => store.dead_letter(job, "HTTP 500", 50).unwrap(),
                    _ => {
                        store.complete(job, 50).unwrap();
                        Settled::Done
                    }
                };
                assert_ne!(settled, Settled::CancelledByGroup);
            }
        });
        let mut places: Vec<JobId> = store.queue.iter().keys().map(|k| id_from(&k.unwrap()[2 + 8..])).collect();
        places.extend(store.dead.iter().keys().map(|k| id_from(&k.unwrap())));
        places.sort();
        let undelivered: Vec<JobId> =
            leased.iter().enumerate().filter(|(i, _)| i % 3 != 2).map(|(_, j)| j.id).collect();
        assert_eq!(places, undelivered, "each failed job queued or dead, once; no delivered one queued again");
        assert_eq!(store.in_flight(), 0);
        assert_eq!((store.queued("a"), store.dead_letter_count()), (store.queue.len(), store.dead.len()));
    }
}

/// A settle that comes late, after its lease expired and the job was leased again, acts on its
/// own lease only: it neither re-queues nor finishes the newer one, whose deadline stays.
#[test]
fn a_late_settle_of_an_expired_lease_leaves_the_newer_lease_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ingest(&event("evt_late_settle", 10), &[to("a")]).unwrap();
    let old = store.lease_due("a", 10, 1, 100).unwrap().remove(0);
    assert_eq!(store.reclaim_expired_leases(100, 10).unwrap().len(), 1);
    let new = store.lease_due("a", 10, 1, 1_000).unwrap().remove(0);
    assert_ne!(old.lease, new.lease, "each lease has its own number");
    // The old holder's retry and dead letter are refused; its complete records the delivery
    // but leaves the new lease and its deadline in place.
    assert_eq!(store.retry(&Job { due_at_ms: 20, ..old.clone() }, 10).unwrap(), Settled::NotLeased);
    assert_eq!(store.dead_letter(&old, "x", 10).unwrap(), Settled::NotLeased);
    store.complete(&old, 10).unwrap();
    assert_eq!(store.in_flight(), 1, "the newer lease is still held");
    assert_eq!(store.queued("a"), 0);
    assert!(store.reclaim_expired_leases(999, 10).unwrap().is_empty(), "the new deadline is intact");
    assert_eq!(store.reclaim_expired_leases(1_000, 10).unwrap().len(), 1, "and still expires");
    // A retry due at once, leased again right away: the first lease's end does not take the
    // second lease's deadline.
    let first = store.lease_due("a", 10, 1, 2_000).unwrap().remove(0);
    assert_eq!(store.retry(&Job { due_at_ms: 10, attempt: 1, ..first }, 10).unwrap(), Settled::Done);
    let second = store.lease_due("a", 10, 1, 3_000).unwrap().remove(0);
    assert!(store.reclaim_expired_leases(2_500, 10).unwrap().is_empty());
    assert_eq!(store.reclaim_expired_leases(3_000, 10).unwrap()[0].id, second.id);
}

/// An owner, a history entry, an event record or a dead letter that does not decode is moved
/// aside where it is read: routing, listings and retention go on past it instead of failing at
/// it on every request.
#[test]
fn corrupt_owners_history_records_and_dead_letters_do_not_block_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let owner = Owner { destinations: vec!["alice".into()], via: "r".into(), event_id: None, at_ms: 5 };
    store.claim(&["cus_good".to_owned()], &owner).unwrap();
    store.owners.insert("cus_bad", GARBAGE).unwrap();
    assert_eq!(store.owner("cus_bad").unwrap(), None, "no owner, not an error");
    let claims = Claims { ids: vec!["cus_bad2".into()], owner: owner.clone(), refresh_after_ms: 10 };
    store.owners.insert("cus_bad2", GARBAGE).unwrap();
    store.claim_unless_fresh(&claims).unwrap();
    assert_eq!(store.owner("cus_bad2").unwrap(), Some(owner.clone()), "claimed afresh");
    store.owners.insert("cus_bad3", GARBAGE).unwrap();
    let (page, _) = store.owners_page(None, None, 10, 100).unwrap();
    assert_eq!(page.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["cus_bad2", "cus_good"]);
    store.owners.insert("cus_bad4", GARBAGE).unwrap();
    assert_eq!(store.purge_owners_before(u64::MAX, None, 10).unwrap().0, 2, "retention goes past it");

    let job = jobs(store.ingest(&event("evt_1", 10), &[to("a")]).unwrap()).remove(0);
    store.log(&job, Outcome::Replayed, 11).unwrap();
    let mut bad = history_prefix_for(&job);
    bad.extend_from_slice(&u64::MAX.to_be_bytes());
    store.history.insert(bad, GARBAGE).unwrap();
    assert_eq!(store.history(10, "evt_1", 10).unwrap().len(), 1, "the readable entry still shows");
    store.records.insert(record_key(20, "evt_bad"), GARBAGE).unwrap();
    let heads: Vec<String> = store.events_newest_first(None, 0).map(|h| h.unwrap().id).collect();
    assert_eq!(heads, ["evt_1"], "a listing pages past a corrupt record");
    store.dead.insert(1_000_003u64.to_be_bytes(), GARBAGE).unwrap();
    assert!(store.dead_letters_page(None, None, None, 10, 100).unwrap().0.is_empty());
    assert_eq!(store.quarantined(), 7);
}

fn history_prefix_for(job: &Job) -> Vec<u8> {
    let mut key = job.received_at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(job.event_id.as_bytes());
    key.push(0);
    key
}
