//! Leases: a job handed to a delivery worker stays in `leases` until the worker settles it, its
//! deadline passes (a worker whose settle failed, or that hung, must not hold it for good), or the
//! process stops. Deadlines are kept in memory: one process owns the store, and `open` hands
//! every lease back to its queue anyway, so they never need to outlive it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use sled::IVec;

use crate::faults::Fault;
use crate::record::{Delivery, Job, JobId};
use crate::{id_from, queue_key, Result, Store};

/// One lease of a job: its number (each lease of a job gets a new one, carried in `Job::lease`,
/// so a late settle of an old lease never acts on a newer one) and when it may be reclaimed (ms,
/// on the clock the caller gives `reclaim_expired_leases`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hold {
    lease: u64,
    until: u64,
}

/// job id -> its current lease.
pub(crate) struct Deadlines {
    held: Mutex<HashMap<JobId, Hold>>,
    next: AtomicU64,
    /// Per-job moves (a reclaim's take and writes; a settle's take) are serialized by the
    /// stripe of the job's id, so a settle that finds its job reclaimed finds it queued already.
    moving: [Mutex<()>; STRIPES],
}

const STRIPES: usize = 64;

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { held: Mutex::default(), next: AtomicU64::new(0), moving: std::array::from_fn(|_| Mutex::new(())) }
    }
}

impl Deadlines {
    /// A new lease of `id`, reclaimable from `until_ms`; returns its number.
    pub(crate) fn hold(&self, id: JobId, until_ms: u64) -> u64 {
        let lease = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, Hold { lease, until: until_ms });
        lease
    }

    /// Takes the deadline of lease `lease` of job `id`: whoever takes it, a settle or a reclaim,
    /// is the one that moves the job. None if that lease is no longer held (reclaimed, or the job
    /// was leased again since).
    pub(crate) fn take(&self, id: JobId, lease: u64) -> Option<Hold> {
        let mut held = self.lock();
        match held.get(&id) {
            Some(hold) if hold.lease == lease => held.remove(&id),
            _ => None,
        }
    }

    /// Puts back a deadline taken by a settle that then failed, unless the job has a newer one.
    pub(crate) fn restore(&self, id: JobId, hold: Hold) {
        self.lock().entry(id).or_insert(hold);
    }

    /// Moves the deadline of lease `lease` of `id` to `until_ms`; false if that lease is gone.
    pub(crate) fn extend(&self, id: JobId, lease: u64, until_ms: u64) -> bool {
        match self.lock().get_mut(&id).filter(|h| h.lease == lease) {
            Some(hold) => {
                hold.until = until_ms;
                true
            }
            None => false,
        }
    }

    /// Makes lease `lease` of `id` reclaimable at once (a sweep whose settle failed).
    pub(crate) fn expire_now(&self, id: JobId, lease: u64) {
        if let Some(hold) = self.lock().get_mut(&id).filter(|h| h.lease == lease) {
            hold.until = 0;
        }
    }

    /// Holds the moves of job `id` (see `moving`).
    fn moving(&self, id: JobId) -> MutexGuard<'_, ()> {
        self.moving[(id % STRIPES as u64) as usize].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn expired(&self, now_ms: u64, max: usize) -> Vec<(JobId, Hold)> {
        self.lock().iter().filter(|(_, h)| h.until <= now_ms).take(max).map(|(id, h)| (*id, *h)).collect()
    }

    fn forget(&self, id: JobId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Hold>> {
        // A panic elsewhere while holding it leaves plain numbers, still usable.
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store {
    /// Hands every job in flight back to its queue, due when it was due. Called by `open` (after a
    /// crash) and by a graceful stop for attempts cut off at the shutdown deadline, when no
    /// worker settles any more.
    pub fn release_leases(&self) -> Result<usize> {
        let mut released = 0;
        for entry in self.leases.iter() {
            let (key, held) = entry?;
            self.deadlines.forget(id_from(&key));
            if self.unlease(&key, &held)?.is_some() {
                released += 1;
            }
        }
        if released > 0 {
            tracing::info!(released, "re-queued deliveries that were in flight at the last stop");
        }
        Ok(released)
    }

    /// Hands back to its queue, due when it was due, each job (up to `max`) whose lease deadline
    /// (given to `lease_due`) is at or before `now_ms`; returns them so their targets can be
    /// woken. The worker that held one finds it gone when it settles ([`crate::Settled::NotLeased`]).
    pub fn reclaim_expired_leases(&self, now_ms: u64, max: usize) -> Result<Vec<Job>> {
        let mut reclaimed = Vec::new();
        for (id, hold) in self.deadlines.expired(now_ms, max) {
            // One job at a time, under its stripe: a settle that took the deadline first keeps
            // the job; one that comes after finds it reclaimed and queued again.
            let _moving = self.deadlines.moving(id);
            if self.deadlines.take(id, hold.lease).is_none() {
                continue;
            }
            let key = id.to_be_bytes();
            let unleased = match self.leases.get(key) {
                Ok(Some(held)) => self.unlease(&key, &held),
                Ok(None) => Ok(None),
                Err(e) => Err(e.into()),
            };
            match unleased {
                Ok(job) => reclaimed.extend(job),
                Err(e) => {
                    // Left to expire again: the next pass tries it once more. What was reclaimed
                    // so far is returned, so its workers are woken.
                    self.deadlines.restore(id, hold);
                    tracing::error!("cannot hand an expired lease back to its queue: {e}");
                    break;
                }
            }
        }
        if !reclaimed.is_empty() {
            tracing::warn!(
                reclaimed = reclaimed.len(),
                "re-queued deliveries whose lease expired before they were settled"
            );
        }
        Ok(reclaimed)
    }

    /// Puts one leased job back in its queue at its own key; `None` if it is not queued again
    /// (dead-lettered before its lease went, corrupt, or moved meanwhile). The queue entry is
    /// written before the lease goes, so a crash between leaves the job in both places and
    /// `open` puts it back at the same key. The lease goes with a compare-and-swap on the value
    /// read: if it changed meanwhile, whoever changed it decides where the job goes, and the
    /// entry written here is taken back out.
    fn unlease(&self, key: &[u8], held: &IVec) -> Result<Option<Job>> {
        if self.dead.contains_key(key)? {
            // Dead-lettered, and the lease was not removed (a crash or a failed settle between).
            self.leases.remove(key)?;
            return Ok(None);
        }
        let Some(job) = self.decoded::<Job>(&self.leases, key, held, "job")? else {
            return Ok(None);
        };
        let queued = queue_key(&job.target, job.due_at_ms, job.id);
        self.queue.insert(queued.as_slice(), held)?;
        if self.leases.compare_and_swap(key, Some(held), None::<&[u8]>)?.is_err() {
            let _ = self.queue.compare_and_swap(queued, Some(held), None::<&[u8]>)?;
            return Ok(None);
        }
        // Where `complete` finds a retried `any` member (an untried one waits where it computes).
        if matches!(job.delivery, Delivery::AnyOf { .. }) && job.due_at_ms != job.created_at_ms {
            self.requeued.insert(key, queued.as_slice())?;
        }
        self.counts.queued(&job.target, 1);
        Ok(Some(job))
    }

    /// Keeps `job`'s lease until `until_ms` (an attempt still running); false if it expired and
    /// was reclaimed meanwhile.
    pub fn renew_lease(&self, job: &Job, until_ms: u64) -> bool {
        self.deadlines.extend(job.id, job.lease, until_ms)
    }

    /// Runs a settle of `job` under its lease (`job.lease`). The deadline is taken first, so a
    /// settle and a reclaim never both move one job: `held` tells the settle whether it still has
    /// the lease, or a reclaim (or a stop's release) queued the job again, or it was leased again
    /// since. If the settle fails, the deadline goes back: the lease still expires, and a failed
    /// settle strands nothing.
    pub(crate) fn settling<T>(&self, job: &Job, settle: impl FnOnce(bool) -> Result<T>) -> Result<T> {
        let hold = {
            let _moving = self.deadlines.moving(job.id);
            self.deadlines.take(job.id, job.lease)
        };
        // Injected here, after the deadline is taken, so a test goes through the failure path.
        let settled = self.injected_fault(Fault::Settles).and_then(|()| settle(hold.is_some()));
        if let (Err(_), Some(hold)) = (&settled, hold) {
            self.deadlines.restore(job.id, hold);
        }
        settled
    }
}
