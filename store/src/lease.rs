//! Leases: a job handed to a delivery worker stays in `leases` until the worker settles it, its
//! deadline passes (a worker whose settle failed, or that hung, must not hold it for good), or the
//! process stops. Deadlines are kept in memory: one process owns the store, and `open` hands
//! every lease back to its queue anyway, so they never need to outlive it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sled::IVec;

use crate::faults::Fault;
use crate::record::{Delivery, Job, JobId};
use crate::{id_from, queue_key, Result, Store};

/// job id -> when its lease may be reclaimed (ms, the caller's clock).
#[derive(Default)]
pub(crate) struct Deadlines(Mutex<HashMap<JobId, u64>>);

impl Deadlines {
    pub(crate) fn hold(&self, id: JobId, until_ms: u64) {
        self.lock().insert(id, until_ms);
    }

    /// Whoever takes a job's deadline, a settle or a reclaim, is the one that moves the job.
    pub(crate) fn take(&self, id: JobId) -> Option<u64> {
        self.lock().remove(&id)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, u64>> {
        // A panic elsewhere while holding it leaves plain numbers, still usable.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store {
    /// Hands every job in flight back to its queue, due when it was due. Called by `open` (after a
    /// crash) and by a graceful stop for attempts cut off at the shutdown deadline, when no
    /// worker settles any more.
    pub fn release_leases(&self) -> Result<usize> {
        let mut deadlines = self.deadlines.lock();
        let mut released = 0;
        for entry in self.leases.iter() {
            let (key, held) = entry?;
            deadlines.remove(&id_from(&key));
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
        // Held throughout: a settle takes its job's deadline under this lock before it writes, so
        // it either comes first (and the job is not reclaimed) or finds the job reclaimed.
        let mut deadlines = self.deadlines.lock();
        let expired: Vec<(JobId, u64)> = deadlines
            .iter()
            .filter(|(_, until)| **until <= now_ms)
            .map(|(id, until)| (*id, *until))
            .take(max)
            .collect();
        let mut reclaimed = Vec::new();
        for (id, until) in expired {
            deadlines.remove(&id);
            let key = id.to_be_bytes();
            let unleased = match self.leases.get(key) {
                Ok(Some(held)) => self.unlease(&key, &held),
                Ok(None) => Ok(None),
                Err(e) => Err(e.into()),
            };
            match unleased {
                Ok(job) => reclaimed.extend(job),
                Err(e) => {
                    // Left to expire again: the next pass tries it once more.
                    deadlines.insert(id, until);
                    return Err(e);
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

    /// Runs a settle of the job `id`. Its deadline is taken first, so a settle and a reclaim
    /// never both move one job: `held` tells the settle whether it has the lease, or a reclaim
    /// (or a stop's release) queued the job again before. If the settle fails, the deadline goes
    /// back: the lease still expires, and a failed settle strands nothing.
    pub(crate) fn settling<T>(&self, id: JobId, settle: impl FnOnce(bool) -> Result<T>) -> Result<T> {
        let until = self.deadlines.take(id);
        // Injected here, after the deadline is taken, so a test goes through the failure path.
        let settled = self.injected_fault(Fault::Settles).and_then(|()| settle(until.is_some()));
        if let (Err(_), Some(until)) = (&settled, until) {
            self.deadlines.hold(id, until);
        }
        settled
    }
}
