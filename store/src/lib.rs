//! Everything fanout keeps on disk: the event log (which doubles as the replay/dedup index), the
//! per-target retry queues, in-flight leases, `any`-group state and dead letters.
//!
//! The layout is shaped by how sled 0.34 spends time and memory (see BENCHMARKS.md): every write
//! clones the leaf it lands in, and every page, in memory or not, keeps metadata in RAM. So big
//! values go where writes are sequential (event records keyed by arrival time, not by random
//! Stripe id), and each job is one entry (the queue entry carries the job).
//!
//! Invariant: this crate is the only place that knows sled exists. The proxy speaks to it in
//! domain terms (`ingest`, `lease_due`, `complete`, `retry`, `dead_letter`), so another backend
//! could sit behind the same API. Writes are made durable with [`Store::durable`], which shares one
//! fsync among every caller waiting at the same time (group commit).

pub mod chores;
mod commit;
#[cfg(test)]
mod conformance;
mod counts;
pub mod engine;
pub mod export;
mod faults;
mod history;
mod inboxes;
mod lease;
mod operator;
mod owners;
pub mod pg;
mod quarantine;
mod record;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use counts::TargetCounts;
pub use engine::{PresenceBeat, RemotePresence, PRESENCE_FRESH_MS};
pub use export::ExportRecord;
pub use history::EventCursor;
pub use operator::QueueCursor;
pub use owners::{OwnerCursor, OwnersPage};
pub use pg::Wake;
pub use record::{
    Claims, DeadLetter, Delivery, Disposition, EventHead, EventRecord, HistoryEntry, InboxRecord, Job, JobEvent, JobId,
    NewJob, Outcome, Owner, Routed, Sweep,
};

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use sled::{IVec, Tree};

use faults::Fault;

/// An error and its causes, `a: b: c`, each said once (some errors repeat their source's text).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Errors the proxy acts on: an open failure stops start-up, anything else makes ingest answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}. Check that the directory is writable and that no other `fanout serve` is using it")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("the database failed: {}", error_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(String),
    /// The error another caller's shared call met (an ingest batch's).
    #[error("the database failed: {0}")]
    Unavailable(String),
    #[error("the store is closing, or one of its background tasks failed (see the log)")]
    Closed,
    #[error("the database was migrated by a newer fanout (schema {found}; this one knows up to {known}): run that version, or this one on another database")]
    Schema { found: i32, known: i32 },
    #[error("store record {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("the export's reader stopped reading")]
    Hangup,
    #[error("cannot import: {0}")]
    Import(String),
    #[error("the store at {path} was written by another version of fanout (layout {found}, this one reads {LAYOUT}). Drain it with that version, or start this one on an empty data directory")]
    Layout { path: PathBuf, found: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Outcome of [`Store::ingest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// First time this event id was seen; these jobs now wait in their targets' queues.
    New(Vec<Job>),
    /// The event id was seen before (a Stripe retry or a replayed capture): nothing was written.
    Duplicate,
}

/// Outcome of [`Store::retry`] and [`Store::dead_letter`]: an `any` group may have been delivered
/// by another member meanwhile, in which case this job is simply finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Done,
    CancelledByGroup,
    /// The lease expired and the job went back to its queue before this settle (or a stop
    /// released it): nothing was written, the queued copy is the job now.
    NotLeased,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// event id -> received_at_ms (BE) ++ ingest id (BE): the dedup index, and the commit point of
    /// an ingest; the ingest id tells a committed copy's jobs from a losing copy's.
    events: Tree,
    /// received_at_ms (BE) ++ event id -> EventRecord ; appended in arrival order, purged oldest
    /// first by retention.
    records: Tree,
    /// target ++ 0 ++ due_at_ms (BE) ++ job id (BE) -> Job ; each target's queue in due order.
    queue: Tree,
    /// job id (BE) -> Job ; jobs handed to a delivery worker and not yet settled.
    leases: Tree,
    /// job id (BE) -> queue key ; where an `any` member waits after a failed attempt, so a
    /// sibling's success can find it (untried members wait at a key `complete` can compute).
    requeued: Tree,
    /// event id ++ 0 ++ group ++ 0 ++ round -> target that delivered it ; for `any` groups,
    /// written by the first member to succeed.
    groups: Tree,
    /// job id (BE) -> DeadLetter
    dead: Tree,
    /// received_at_ms (BE) ++ event id ++ 0 ++ sequence (BE) -> HistoryEntry ; every attempt and
    /// what became of each job: an event's story is one prefix read, and the writes land near
    /// the tail (deliveries follow arrivals), where sled appends cheaply.
    history: Tree,
    /// target -> () ; targets an operator paused (kept across restarts).
    paused: Tree,
    /// Stripe object id -> Owner ; sticky ownership routing (see `owners.rs`).
    owners: Tree,
    /// inbox name -> InboxRecord as JSON ; inboxes created at run time (see `inboxes.rs`).
    inboxes: Tree,
    /// source tree name ++ 0 ++ key there -> raw value ; values that did not decode, moved aside
    /// (see `quarantine.rs`).
    quarantine: Tree,
    commit: std::sync::Arc<commit::GroupCommit>,
    counts: std::sync::Arc<counts::Counts>,
    /// When each lease taken since open expires (see `lease.rs`).
    deadlines: std::sync::Arc<lease::Deadlines>,
    #[cfg(feature = "fault-injection")]
    faults: std::sync::Arc<faults::Faults>,
}

/// sled's page cache. Its default (1 GiB) let RSS grow with the backlog (627 MB after a few
/// hundred thousand events). What is hot is small: the tail of `records`, each queue's head and
/// tail, and the dedup index; sled's accounting undercounts what a cached page costs in RAM, so
/// the figure is kept low (BENCHMARKS.md has the measurements behind it).
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Version of the on-disk layout, kept in the default tree so an older store is refused at start
/// instead of being misread.
const LAYOUT: &str = "3";
const LAYOUT_KEY: &[u8] = b"fanout.layout";

impl Store {
    /// Opens (or creates) the store in `path` and hands every job that was in flight when the
    /// previous process stopped back to its queue, due when it was due: a crash mid-delivery
    /// re-delivers. Values that do not decode are quarantined on the way, not fatal.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        let open_err = |source| StoreError::Open { path: path.to_owned(), source };
        let db = sled::Config::new().path(path).cache_capacity(CACHE_BYTES).open().map_err(open_err)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_err);
        check_layout(&db, path)?;
        let store = Store {
            events: tree("events")?,
            records: tree("records")?,
            queue: tree("queue")?,
            leases: tree("leases")?,
            requeued: tree("requeued")?,
            groups: tree("groups")?,
            dead: tree("dead")?,
            history: tree("history")?,
            paused: tree("paused")?,
            owners: tree("owners")?,
            inboxes: tree("inboxes")?,
            quarantine: tree("quarantine")?,
            commit: std::sync::Arc::new(commit::GroupCommit::default()),
            counts: Default::default(),
            deadlines: Default::default(),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
            db,
        };
        store.release_leases()?;
        store.count_all()?;
        Ok(store)
    }

    /// Records a new event and its jobs, or reports that the id was seen before. Not durable until
    /// [`Store::durable`] returns.
    ///
    /// No sled transaction (it cost ~60 µs of the ~85 µs an ingest took; see BENCHMARKS.md).
    /// Instead the dedup index entry is written last and is the commit point: sled recovers a
    /// prefix of its log, so if the index entry survives a crash, so do the record and the jobs.
    /// Jobs and records written by an ingest that died before its index entry (that event was
    /// never acknowledged, so Stripe sends it again) are orphans: the worker drops such jobs (see
    /// `deliver`) and retention drops such records. Two copies racing past the duplicate check
    /// are settled by a compare-and-swap on the index; the loser removes what it wrote.
    pub fn ingest(&self, event: &EventRecord, new_jobs: &[NewJob]) -> Result<Ingested> {
        self.ingest_claiming(event, new_jobs, None)
    }

    /// [`Store::ingest`], also recording `claims` (object ids and their new owner) before the
    /// commit point, so an acknowledged event's claims are durable with it.
    pub fn ingest_claiming(
        &self,
        event: &EventRecord,
        new_jobs: &[NewJob],
        claims: Option<&Claims>,
    ) -> Result<Ingested> {
        self.injected_fault(Fault::Writes)?;
        if self.events.contains_key(event.id.as_bytes())? {
            return Ok(Ingested::Duplicate);
        }
        let ingest = self.db.generate_id()?;
        let jobs = self.new_jobs(&event.id, new_jobs, event.received_at_ms, event.received_at_ms, ingest, false)?;
        self.enqueue(&jobs)?;
        if let Some(claims) = claims {
            self.claim_unless_fresh(claims)?;
        }
        let received = event.received_at_ms.to_be_bytes();
        let record = record_key(event.received_at_ms, &event.id);
        self.records.insert(record.as_slice(), encode(event)?)?;
        let index = [received, ingest.to_be_bytes()].concat();
        let committed = self.events.compare_and_swap(event.id.as_bytes(), None::<&[u8]>, Some(index))?;
        let Err(lost) = committed else {
            return Ok(Ingested::New(jobs));
        };
        // Another copy of the same event committed first: undo ours. Its record has the same key
        // as ours only if it arrived in the same millisecond, and then it must stay.
        for job in &jobs {
            if self.queue.remove(queue_key(&job.target, job.due_at_ms, job.id))?.is_some() {
                self.counts.queued(&job.target, -1);
            }
        }
        if lost.current.as_deref().and_then(|winner| winner.get(..8)) != Some(&received[..]) {
            self.records.remove(record)?;
        }
        Ok(Ingested::Duplicate)
    }

    /// Jobs for one event, due at `at_ms`, with ids from sled's generator.
    fn new_jobs(
        &self,
        event_id: &str,
        new: &[NewJob],
        at_ms: u64,
        received_at_ms: u64,
        ingest: u64,
        replay: bool,
    ) -> Result<Vec<Job>> {
        let ids = new.iter().map(|_| self.db.generate_id()).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(record::build_jobs(event_id, new, &ids, at_ms, received_at_ms, ingest, replay))
    }

    fn enqueue(&self, jobs: &[Job]) -> Result<()> {
        for job in jobs {
            self.queue.insert(queue_key(&job.target, job.due_at_ms, job.id), encode(job)?)?;
            self.counts.queued(&job.target, 1);
        }
        Ok(())
    }

    /// Waits until every write made before the call is on disk. Concurrent callers share one
    /// flush, so a burst of webhooks pays for a few fsyncs, not one each.
    pub async fn durable(&self) -> Result<()> {
        self.injected_fault(Fault::Writes)?;
        self.injected_fault(Fault::Flushes)?;
        self.commit.durable(&self.db).await
    }

    /// The committed copy of an event.
    pub fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        match self.committed(id)? {
            Some((received, _)) => self.record(received, id).map(Some),
            None => Ok(None),
        }
    }

    /// The event a leased job is to deliver, if the ingest that wrote the job is the one that
    /// committed. Jobs are written before their ingest's commit point, so a worker can lease one
    /// from an ingest still running, or from a copy that lost the race and is removing its jobs.
    pub fn event_for(&self, job: &Job) -> Result<JobEvent> {
        match self.committed(&job.event_id)? {
            None => Ok(JobEvent::Uncommitted),
            Some((_, ingest)) if ingest != job.ingest => Ok(JobEvent::Superseded),
            Some((received, _)) => self.record(received, &job.event_id).map(JobEvent::Ready),
        }
    }

    /// (received_at_ms, ingest id) of the committed copy of an event.
    fn committed(&self, id: &str) -> Result<Option<(u64, u64)>> {
        let Some(index) = self.events.get(id.as_bytes())? else {
            return Ok(None);
        };
        if index.len() != 16 {
            return Err(StoreError::Corrupt { what: "event index", detail: format!("{} bytes", index.len()) });
        }
        Ok(Some((id_from(&index[..8]), id_from(&index[8..]))))
    }

    fn record(&self, received: u64, id: &str) -> Result<EventRecord> {
        match self.records.get(record_key(received, id))? {
            Some(bytes) => decode(&bytes, "event"),
            None => Err(StoreError::Corrupt { what: "event", detail: format!("{id} is indexed but has no record") }),
        }
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// A job that is in flight (leased to a delivery worker).
    pub fn in_flight_job(&self, id: JobId) -> Result<Option<Job>> {
        self.leases.get(id.to_be_bytes())?.map(|v| decode(&v, "job")).transpose()
    }

    /// When the earliest job queued for `target` is due, if any.
    pub fn next_due_ms(&self, target: &str) -> Result<Option<u64>> {
        self.injected_fault(Fault::QueueReads)?;
        let prefix = queue_prefix(target);
        match self.queue.scan_prefix(&prefix).next() {
            Some(entry) => Ok(Some(due_from(&entry?.0, prefix.len()))),
            None => Ok(None),
        }
    }

    /// Number of jobs waiting (not in flight) for `target`; kept in memory, not counted per call.
    pub fn queued(&self, target: &str) -> usize {
        self.counts.get().queued.get(target).copied().unwrap_or(0).max(0) as usize
    }

    /// Number of jobs in flight across all targets.
    pub fn in_flight(&self) -> usize {
        self.leases.len()
    }

    /// Takes up to `max` jobs for `target` that are due at `now_ms`, marking them in flight until
    /// `lease_until_ms` (then [`Store::reclaim_expired_leases`] hands them back). An `any` member
    /// whose group was delivered meanwhile is dropped here (a safety net: `complete` normally
    /// removes it from the queue first).
    pub fn lease_due(&self, target: &str, now_ms: u64, max: usize, lease_until_ms: u64) -> Result<Vec<Job>> {
        self.injected_fault(Fault::QueueReads)?;
        self.injected_fault(Fault::Leases)?;
        let prefix = queue_prefix(target);
        let mut leased = Vec::new();
        for entry in self.queue.scan_prefix(&prefix) {
            if leased.len() >= max {
                break;
            }
            let (key, value) = entry?;
            if due_from(&key, prefix.len()) > now_ms {
                break;
            }
            // Decoded before it is taken: a value that does not decode goes to the quarantine,
            // never to the leases, and the batch goes on.
            let Some(job) = self.decoded::<Job>(&self.queue, &key, &value, "job")? else {
                continue;
            };
            if !self.take_queued(target, &key, &value)? {
                continue;
            }
            // At once: if the rest of this call fails, the jobs it took still expire.
            let mut job = job;
            job.lease = self.deadlines.hold(job.id, lease_until_ms);
            if matches!(job.delivery, Delivery::AnyOf { .. }) {
                self.requeued.remove(job.id.to_be_bytes())?;
                if self.group_delivered(&job)? {
                    self.cancel(&job, now_ms)?;
                    continue;
                }
            }
            leased.push(job);
        }
        Ok(leased)
    }

    /// Moves one queued job to the leases; false if someone else has it (another poll of the
    /// same inbox, a sweep, a retry rewriting it) or it left the queue meanwhile (an `any`
    /// sibling's success). The lease is written before the queue entry goes, so a crash between
    /// the two leaves the job in both places and `open` puts it back at the same key. The lease
    /// is claimed with a compare-and-swap: two takers racing for one job never both win, and the
    /// loser never removes the winner's lease.
    pub(crate) fn take_queued(&self, target: &str, key: &[u8], value: &[u8]) -> Result<bool> {
        let id = id_from(&key[key.len() - 8..]);
        if self.leases.compare_and_swap(id.to_be_bytes(), None::<&[u8]>, Some(value))?.is_err() {
            return Ok(false);
        }
        match self.queue.remove(key) {
            Ok(Some(_)) => {}
            // Gone meanwhile, or unreadable: the lease goes again, so the job is never both
            // queued and leased (a worker would spin on a queue head it cannot take).
            gone_or_failed => {
                self.leases.remove(id.to_be_bytes())?;
                gone_or_failed?;
                return Ok(false);
            }
        }
        self.counts.queued(target, -1);
        Ok(true)
    }

    /// The job was delivered. For an `any` group this also cancels the other members' pending
    /// jobs (noted in their history at `now_ms`); returns how many were cancelled. Recorded even
    /// if the lease expired meanwhile: the copy the reclaim queued is taken back out if it still
    /// waits (if it was leased again already, it is delivered again: at least once).
    pub fn complete(&self, job: &Job, now_ms: u64) -> Result<usize> {
        self.settling(job, |held| {
            let cancelled = self.cancel_siblings(job, now_ms)?;
            self.finish_settled(job, held)?;
            Ok(cancelled)
        })
    }

    /// For an `any` member's success: records it for the group and cancels the members that wait
    /// in a queue. A member in flight is cancelled when it settles.
    fn cancel_siblings(&self, job: &Job, now_ms: u64) -> Result<usize> {
        let Delivery::AnyOf { group } = &job.delivery else {
            return Ok(0);
        };
        // The first success is recorded; a later one (a sibling already in flight) keeps it.
        let _ = self.groups.compare_and_swap(group_key(job, group), None::<&[u8]>, Some(job.target.as_bytes()))?;
        let mut cancelled = 0;
        for (target, id) in &job.siblings {
            // Siblings not yet tried wait at their first due time, the event's arrival.
            let Some((key, value)) = self.take_waiting(target, *id, job.created_at_ms)? else {
                continue;
            };
            match decode::<Job>(&value, "job") {
                Ok(sibling) => {
                    self.append(&sibling, Outcome::Cancelled, now_ms)?;
                    cancelled += 1;
                }
                Err(error) => self.keep_aside(&self.queue, &key, &value, &error)?,
            }
        }
        Ok(cancelled)
    }

    /// Takes the job `id` out of `target`'s queue if it waits there: where `requeued` says (an
    /// `any` member retried or reclaimed), else at `due_ms`. Returns its key and value.
    fn take_waiting(&self, target: &str, id: JobId, due_ms: u64) -> Result<Option<(Vec<u8>, IVec)>> {
        let key = match self.requeued.remove(id.to_be_bytes())? {
            Some(key) => key.to_vec(),
            None => queue_key(target, due_ms, id),
        };
        let Some(value) = self.queue.remove(key.as_slice())? else {
            return Ok(None);
        };
        self.counts.queued(target, -1);
        Ok(Some((key, value)))
    }

    /// Forgets a job that must never be delivered (see [`JobEvent`]), noting why in its history.
    /// Like `complete`, also takes back out a copy a reclaim queued.
    pub fn discard(&self, job: &Job, reason: &str, now_ms: u64) -> Result<()> {
        self.settling(job, |held| {
            self.append(job, Outcome::Discarded { reason: reason.to_owned() }, now_ms)?;
            self.finish_settled(job, held)
        })
    }

    /// Ends the lease of a job that is done with. If its lease was reclaimed (not `held`), the
    /// lease it has now (if any) is someone else's and stays; the copy queued again goes, if it
    /// still waits (at its own due time, where `unlease` put it).
    fn finish_settled(&self, job: &Job, held: bool) -> Result<()> {
        if held {
            return self.finish(job);
        }
        self.take_waiting(&job.target, job.id, job.due_at_ms)?;
        Ok(())
    }

    /// A job whose `any` group another member delivered: finished without an attempt.
    fn cancel(&self, job: &Job, now_ms: u64) -> Result<Settled> {
        self.append(job, Outcome::Cancelled, now_ms)?;
        self.finish(job)?;
        Ok(Settled::CancelledByGroup)
    }

    /// Puts a failed job back in its queue with the attempt, due time, target and error the caller
    /// set, unless its `any` group was delivered meanwhile (cancelled, noted at `now_ms`) or its
    /// lease was reclaimed.
    pub fn retry(&self, job: &Job, now_ms: u64) -> Result<Settled> {
        self.settling_leased(job, || self.requeue(job, now_ms))
    }

    /// The writes of [`Store::retry`], once the lease is known to be held.
    fn requeue(&self, job: &Job, now_ms: u64) -> Result<Settled> {
        if self.group_delivered(job)? {
            return self.cancel(job, now_ms);
        }
        // The lease is rewritten first, so a crash before it is removed re-queues this attempt's
        // state at the same key instead of adding a second copy at the old one. Counted once the
        // lease is gone: if removing it fails, the reclaim that follows counts the entry.
        let value = encode(job)?;
        let key = queue_key(&job.target, job.due_at_ms, job.id);
        self.leases.insert(job.id.to_be_bytes(), value.as_slice())?;
        if matches!(job.delivery, Delivery::AnyOf { .. }) {
            self.requeued.insert(job.id.to_be_bytes(), key.as_slice())?;
        }
        self.queue.insert(key, value)?;
        self.finish(job)?;
        self.counts.queued(&job.target, 1);
        Ok(Settled::Done)
    }

    /// Gives up on a job: it moves to the dead letters with `error` (unless its `any` group was
    /// delivered by another member, in which case nothing was lost, or its lease was reclaimed).
    pub fn dead_letter(&self, job: &Job, error: &str, now_ms: u64) -> Result<Settled> {
        self.settling_leased(job, || self.bury(job, error, now_ms))
    }

    /// The writes of [`Store::dead_letter`], once the lease is known to be held.
    fn bury(&self, job: &Job, error: &str, now_ms: u64) -> Result<Settled> {
        if self.group_delivered(job)? {
            return self.cancel(job, now_ms);
        }
        let letter = DeadLetter { job: job.clone(), error: error.to_owned(), died_at_ms: now_ms };
        // Written before the lease is removed; a lease found with a dead letter at the next open
        // (or by a reclaim) is dropped, not re-queued.
        if self.dead.insert(job.id.to_be_bytes(), encode(&letter)?)?.is_none() {
            self.counts.dead(&job.target, 1);
        }
        self.append(job, Outcome::DeadLettered { reason: error.to_owned() }, now_ms)?;
        self.finish(job)?;
        Ok(Settled::Done)
    }

    /// [`Store::settling`] for a settle that puts the job somewhere (a queue, the dead letters):
    /// if the job is no longer leased, its queued copy is the job and nothing is written.
    fn settling_leased(&self, job: &Job, settle: impl FnOnce() -> Result<Settled>) -> Result<Settled> {
        self.settling(job, |held| {
            if held && self.leases.contains_key(job.id.to_be_bytes())? {
                settle()
            } else {
                Ok(Settled::NotLeased)
            }
        })
    }

    /// Forgets events received before `cutoff_ms` (their ids may then be accepted again) with
    /// their history, and dead letters of jobs created before it; at most `batch` per call so
    /// retention never holds up ingest. The config keeps retention longer than any job's max age,
    /// so no pending job outlives its event.
    pub fn purge_events_before(&self, cutoff_ms: u64, batch: usize) -> Result<usize> {
        let mut purged = 0;
        for entry in self.records.range(..cutoff_ms.to_be_bytes().to_vec()).take(batch) {
            let (key, _) = entry?;
            let (received, event_id) = key.split_at(8);
            // Only if the index points at this record: an orphan record (its ingest died before
            // committing) must not take a later copy's index entry with it.
            let index = self.events.get(event_id)?.filter(|index| index.starts_with(received));
            let unindexed = match index {
                Some(index) => self.events.compare_and_swap(event_id, Some(index), None::<&[u8]>)?.is_ok(),
                None => false,
            };
            if unindexed {
                let mut prefix = event_id.to_vec();
                prefix.push(0);
                for key in self.groups.scan_prefix(&prefix).keys() {
                    self.groups.remove(key?)?;
                }
            }
            self.records.remove(&key)?;
            purged += 1;
        }
        // History is keyed by arrival time too.
        for key in self.history.range(..cutoff_ms.to_be_bytes().to_vec()).keys().take(batch.saturating_sub(purged)) {
            self.history.remove(key?)?;
            purged += 1;
        }
        // Dead letters are in job-id order, which is creation order: the old ones are in front.
        // Without their event's body they could not be replayed, so they go with it.
        for entry in self.dead.iter().take(batch.saturating_sub(purged)) {
            let (key, value) = entry?;
            let Some(letter) = self.decoded::<DeadLetter>(&self.dead, &key, &value, "dead letter")? else {
                continue;
            };
            if letter.job.created_at_ms >= cutoff_ms {
                break;
            }
            if self.dead.remove(&key)?.is_some() {
                self.counts.dead(&letter.job.target, -1);
            }
            purged += 1;
        }
        Ok(purged)
    }

    fn group_delivered(&self, job: &Job) -> Result<bool> {
        let Delivery::AnyOf { group } = &job.delivery else {
            return Ok(false);
        };
        Ok(self.groups.contains_key(group_key(job, group))?)
    }

    /// Ends `job`'s lease. Its deadline goes first, and only if it is still this lease's: the
    /// job may be queued (a retry) and leased again by the time the lease entry goes.
    fn finish(&self, job: &Job) -> Result<()> {
        self.deadlines.take(job.id, job.lease);
        self.leases.remove(job.id.to_be_bytes())?;
        Ok(())
    }
}

/// Stamps a new store with [`LAYOUT`] and refuses one stamped otherwise, or written before
/// stamps existed (it has trees this version does not read).
fn check_layout(db: &sled::Db, path: &Path) -> Result<()> {
    let layout_err = |found: &str| StoreError::Layout { path: path.to_owned(), found: found.to_owned() };
    match db.get(LAYOUT_KEY)? {
        Some(found) if found.as_ref() == LAYOUT.as_bytes() => Ok(()),
        Some(found) => Err(layout_err(&String::from_utf8_lossy(&found))),
        None if db.tree_names().iter().any(|name| name.as_ref() == b"jobs") => Err(layout_err("1")),
        None => {
            db.insert(LAYOUT_KEY, LAYOUT.as_bytes())?;
            Ok(())
        }
    }
}

fn event_prefix(event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(event_id.len() + 9);
    key.extend_from_slice(event_id.as_bytes());
    key.push(0);
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt { what: "to write", detail: e.to_string() })
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

fn queue_prefix(target: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(target.len() + 17);
    key.extend_from_slice(target.as_bytes());
    key.push(0);
    key
}

/// The target a queue key belongs to (what precedes its first 0).
fn queue_target(key: &[u8]) -> Cow<'_, str> {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end])
}

fn queue_key(target: &str, due_ms: u64, id: JobId) -> Vec<u8> {
    let mut key = queue_prefix(target);
    key.extend_from_slice(&due_ms.to_be_bytes());
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn due_from(key: &[u8], prefix_len: usize) -> u64 {
    id_from(&key[prefix_len..prefix_len + 8])
}

fn id_from(bytes: &[u8]) -> u64 {
    let mut be = [0u8; 8];
    be.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(be)
}

fn record_key(ms: u64, event_id: &str) -> Vec<u8> {
    let mut key = ms.to_be_bytes().to_vec();
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// event id ++ 0 ++ group ++ 0 ++ round (`Job::round`).
fn group_key(job: &Job, group: &str) -> Vec<u8> {
    group_round_key(&job.event_id, group, job.round())
}

fn group_round_key(event_id: &str, group: &str, round: JobId) -> Vec<u8> {
    let mut key = event_prefix(event_id);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key.extend_from_slice(&round.to_be_bytes());
    key
}

#[cfg(test)]
mod tests;
