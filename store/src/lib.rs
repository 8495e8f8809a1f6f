//! Everything fanout keeps on disk: the event log (which doubles as the replay/dedup index), the
//! per-target retry queues, in-flight leases, `any`-group state and dead letters.
//!
//! Invariant: this crate is the only place that knows sled exists. The proxy speaks to it in
//! domain terms (`ingest`, `lease_due`, `complete`, `retry`, `dead_letter`), so another backend
//! could sit behind the same API. Writes are made durable with [`Store::durable`], which shares one
//! fsync among every caller waiting at the same time (group commit).

mod commit;
mod record;

pub use record::{DeadLetter, Delivery, Disposition, EventRecord, Job, JobId, NewJob};

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use sled::Tree;

/// Errors the proxy acts on: an open failure stops start-up, anything else makes ingest answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}. Check that the directory is writable and that no other `fanout serve` is using it")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
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
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// event id -> EventRecord
    events: Tree,
    /// received_at_ms (BE) ++ event id -> () ; oldest first, for retention.
    events_by_time: Tree,
    /// job id (BE) -> Job
    jobs: Tree,
    /// target ++ 0 ++ due_at_ms (BE) ++ job id (BE) -> () ; each target's queue in due order.
    queue: Tree,
    /// job id (BE) -> () ; jobs handed to a delivery worker and not yet settled.
    leases: Tree,
    /// event id ++ 0 ++ group -> target that delivered it ; for `any` groups, written by the
    /// first member to succeed.
    groups: Tree,
    /// job id (BE) -> DeadLetter
    dead: Tree,
    commit: std::sync::Arc<commit::GroupCommit>,
}

/// sled's page cache. Its default (1 GiB) let RSS grow with the backlog (627 MB after a few
/// hundred thousand events); jobs belong on disk, and the hot part of each queue is its head.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the store in `path` and hands every job that was in flight when the
    /// previous process stopped back to its queue, due now: a crash mid-delivery re-delivers.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        let open_err = |source| StoreError::Open { path: path.to_owned(), source };
        let db = sled::Config::new().path(path).cache_capacity(CACHE_BYTES).open().map_err(open_err)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_err);
        let store = Store {
            events: tree("events")?,
            events_by_time: tree("events_by_time")?,
            jobs: tree("jobs")?,
            queue: tree("queue")?,
            leases: tree("leases")?,
            groups: tree("groups")?,
            dead: tree("dead")?,
            commit: std::sync::Arc::new(commit::GroupCommit::default()),
            db,
        };
        store.release_leases()?;
        Ok(store)
    }

    fn release_leases(&self) -> Result<usize> {
        let mut released = 0;
        for entry in self.leases.iter() {
            let (key, _) = entry?;
            if let Some(job) = self.job(id_from(&key))? {
                self.queue.insert(queue_key(&job.target, job.due_at_ms, job.id), &[])?;
                released += 1;
            }
            self.leases.remove(key)?;
        }
        if released > 0 {
            tracing::info!(released, "re-queued deliveries that were in flight at the last stop");
        }
        Ok(released)
    }

    /// Records a new event and its jobs, or reports that the id was seen before. Not durable until
    /// [`Store::durable`] returns.
    ///
    /// No sled transaction (it cost ~60 µs of the ~85 µs an ingest took; see BENCHMARKS.md).
    /// Instead the event record is written last and is the commit point: sled recovers a prefix
    /// of its log, so if the record survives a crash, so do its jobs. Jobs whose record never
    /// made it (the process died before the event was acknowledged, so Stripe sends it again)
    /// are orphans; the worker drops them (see `deliver`). Two copies racing past the duplicate
    /// check are settled by a compare-and-swap on the record; the loser removes its jobs.
    pub fn ingest(&self, event: &EventRecord, new_jobs: &[NewJob]) -> Result<Ingested> {
        if self.events.contains_key(event.id.as_bytes())? {
            return Ok(Ingested::Duplicate);
        }
        let mut jobs = Vec::with_capacity(new_jobs.len());
        for new in new_jobs {
            jobs.push(Job {
                id: self.db.generate_id()?,
                event_id: event.id.clone(),
                target: new.target.clone(),
                delivery: new.delivery.clone(),
                rule: new.rule.clone(),
                attempt: 0,
                created_at_ms: event.received_at_ms,
                due_at_ms: event.received_at_ms,
                last_error: None,
                siblings: Vec::new(),
            });
        }
        // Each `any` member knows its siblings, so the first success can cancel them.
        let ids: Vec<(JobId, Delivery)> = jobs.iter().map(|j| (j.id, j.delivery.clone())).collect();
        for job in &mut jobs {
            if matches!(job.delivery, Delivery::AnyOf { .. }) {
                job.siblings =
                    ids.iter().filter(|(id, d)| *id != job.id && *d == job.delivery).map(|(id, _)| *id).collect();
            }
        }
        for job in &jobs {
            self.jobs.insert(job.id.to_be_bytes(), encode(job)?)?;
        }
        for job in &jobs {
            self.queue.insert(queue_key(&job.target, job.due_at_ms, job.id), &[])?;
        }
        let by_time = time_key(event.received_at_ms, &event.id);
        self.events_by_time.insert(by_time.as_slice(), &[])?;
        let committed = self.events.compare_and_swap(event.id.as_bytes(), None::<&[u8]>, Some(encode(event)?))?;
        if committed.is_ok() {
            return Ok(Ingested::New(jobs));
        }
        // Another copy of the same event committed first: undo ours (its by_time key differs from
        // ours unless it arrived in the same millisecond).
        for job in &jobs {
            self.queue.remove(queue_key(&job.target, job.due_at_ms, job.id))?;
            self.jobs.remove(job.id.to_be_bytes())?;
        }
        if self.event(&event.id)?.is_some_and(|e| e.received_at_ms != event.received_at_ms) {
            self.events_by_time.remove(by_time)?;
        }
        Ok(Ingested::Duplicate)
    }

    /// Waits until every write made before the call is on disk. Concurrent callers share one
    /// flush, so a burst of webhooks pays for a few fsyncs, not one each.
    pub async fn durable(&self) -> Result<()> {
        self.commit.durable(&self.db).await
    }

    pub fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        self.events.get(id.as_bytes())?.map(|v| decode(&v, "event")).transpose()
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.jobs.get(id.to_be_bytes())?.map(|v| decode(&v, "job")).transpose()
    }

    /// When the earliest job queued for `target` is due, if any.
    pub fn next_due_ms(&self, target: &str) -> Result<Option<u64>> {
        let prefix = queue_prefix(target);
        match self.queue.scan_prefix(&prefix).next() {
            Some(entry) => Ok(Some(due_from(&entry?.0, prefix.len()))),
            None => Ok(None),
        }
    }

    /// Number of jobs waiting (not in flight) for `target`.
    pub fn queued(&self, target: &str) -> usize {
        self.queue.scan_prefix(queue_prefix(target)).count()
    }

    /// Number of jobs in flight across all targets.
    pub fn in_flight(&self) -> usize {
        self.leases.len()
    }

    /// Takes up to `max` jobs for `target` that are due at `now_ms`, marking them in flight.
    pub fn lease_due(&self, target: &str, now_ms: u64, max: usize) -> Result<Vec<Job>> {
        let prefix = queue_prefix(target);
        let mut leased = Vec::new();
        for entry in self.queue.scan_prefix(&prefix) {
            if leased.len() >= max {
                break;
            }
            let (key, _) = entry?;
            if due_from(&key, prefix.len()) > now_ms {
                break;
            }
            let id = id_from(&key[key.len() - 8..]);
            // Lease before unqueueing: a crash between the two leaves the job in both places, and
            // the lease is released back to the same queue key at the next open.
            self.leases.insert(id.to_be_bytes(), &[])?;
            // An `any` sibling's success may have cancelled it meanwhile.
            if self.queue.remove(&key)?.is_none() {
                self.leases.remove(id.to_be_bytes())?;
                continue;
            }
            match self.job(id)? {
                Some(job) => leased.push(job),
                None => {
                    self.leases.remove(id.to_be_bytes())?;
                    tracing::warn!(job_id = id, "queue entry without a job; skipped");
                }
            }
        }
        Ok(leased)
    }

    /// The job was delivered. For an `any` group this also cancels the other members' pending
    /// jobs; returns how many were cancelled.
    pub fn complete(&self, job: &Job) -> Result<usize> {
        let mut cancelled = 0;
        if let Delivery::AnyOf { group } = &job.delivery {
            // The first success is recorded; a later one (a sibling already in flight) keeps it.
            let key = group_key(&job.event_id, group);
            let _ = self.groups.compare_and_swap(key, None::<&[u8]>, Some(job.target.as_bytes()))?;
            for sibling in &job.siblings {
                if let Some(other) = self.job(*sibling)? {
                    let queued = queue_key(&other.target, other.due_at_ms, other.id);
                    if self.queue.remove(queued)?.is_some() {
                        self.jobs.remove(other.id.to_be_bytes())?;
                        cancelled += 1;
                    }
                }
            }
        }
        self.finish(job.id)?;
        Ok(cancelled)
    }

    /// Forgets a job that can never be delivered: an orphan of an ingest that crashed before its
    /// event record was written (that event was never acknowledged; Stripe sends it again).
    pub fn discard(&self, job: &Job) -> Result<()> {
        self.finish(job.id)
    }

    /// Puts a failed job back in its queue with the attempt, due time, target and error the caller
    /// set, unless its `any` group was delivered meanwhile.
    pub fn retry(&self, job: &Job) -> Result<Settled> {
        if self.group_delivered(job)? {
            self.finish(job.id)?;
            return Ok(Settled::CancelledByGroup);
        }
        self.jobs.insert(job.id.to_be_bytes(), encode(job)?)?;
        self.queue.insert(queue_key(&job.target, job.due_at_ms, job.id), &[])?;
        self.leases.remove(job.id.to_be_bytes())?;
        Ok(Settled::Done)
    }

    /// Gives up on a job: it moves to the dead letters with `error` (unless its `any` group was
    /// delivered by another member, in which case nothing was lost).
    pub fn dead_letter(&self, job: &Job, error: &str, now_ms: u64) -> Result<Settled> {
        if self.group_delivered(job)? {
            self.finish(job.id)?;
            return Ok(Settled::CancelledByGroup);
        }
        let letter = DeadLetter { job: job.clone(), error: error.to_owned(), died_at_ms: now_ms };
        self.dead.insert(job.id.to_be_bytes(), encode(&letter)?)?;
        self.finish(job.id)?;
        Ok(Settled::Done)
    }

    /// Dead letters, oldest job first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.dead.iter().take(limit).map(|e| decode(&e?.1, "dead letter")).collect()
    }

    pub fn dead_letter_count(&self) -> usize {
        self.dead.len()
    }

    /// Forgets events received before `cutoff_ms` (their ids may then be accepted again), at most
    /// `batch` per call so retention never holds up ingest. The config keeps retention longer than
    /// any job's max age, so no pending job outlives its event.
    pub fn purge_events_before(&self, cutoff_ms: u64, batch: usize) -> Result<usize> {
        let mut purged = 0;
        for entry in self.events_by_time.range(..cutoff_ms.to_be_bytes().to_vec()).take(batch) {
            let (key, _) = entry?;
            let event_id = &key[8..];
            self.events.remove(event_id)?;
            let mut group_prefix = event_id.to_vec();
            group_prefix.push(0);
            for group in self.groups.scan_prefix(&group_prefix).keys() {
                self.groups.remove(group?)?;
            }
            self.events_by_time.remove(&key)?;
            purged += 1;
        }
        Ok(purged)
    }

    fn group_delivered(&self, job: &Job) -> Result<bool> {
        let Delivery::AnyOf { group } = &job.delivery else {
            return Ok(false);
        };
        Ok(self.groups.contains_key(group_key(&job.event_id, group))?)
    }

    fn finish(&self, id: JobId) -> Result<()> {
        self.jobs.remove(id.to_be_bytes())?;
        self.leases.remove(id.to_be_bytes())?;
        Ok(())
    }
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

fn time_key(ms: u64, event_id: &str) -> Vec<u8> {
    let mut key = ms.to_be_bytes().to_vec();
    key.extend_from_slice(event_id.as_bytes());
    key
}

fn group_key(event_id: &str, group: &str) -> Vec<u8> {
    let mut key = event_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(group.as_bytes());
    key
}

#[cfg(test)]
mod tests;
