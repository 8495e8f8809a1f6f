//! Faults the proxy's tests inject on demand (feature `fault-injection`): a full disk, a dead
//! volume, a queue that cannot be read. Without the feature the switches are not compiled in and
//! each check is an empty function.

use crate::{Result, Store};

#[derive(Clone, Copy)]
pub(crate) enum Fault {
    /// Ingests (and so their flushes) fail.
    Writes,
    /// Flushes fail, writes succeed.
    Flushes,
    /// Settling a job fails: `complete`, `retry`, `dead_letter`, `discard`, `log`.
    Settles,
    /// Reading a queue fails: `lease_due`, `next_due_ms`.
    QueueReads,
    /// Leasing fails while the queue can still be looked at: `lease_due` only.
    Leases,
}

#[cfg(feature = "fault-injection")]
#[derive(Default)]
pub(crate) struct Faults {
    on: [std::sync::atomic::AtomicBool; 5],
    /// Errors returned so far: tells a worker that retries in a tight loop from one that backs off.
    hits: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "fault-injection")]
impl Store {
    /// From now on (until called with false), ingests and flushes fail as on a full disk.
    pub fn fail_writes(&self, fail: bool) {
        self.set_fault(Fault::Writes, fail);
    }

    /// From now on (until called with false), writes succeed but flushes fail: an ingest has
    /// written its event when it learns it cannot be made durable.
    pub fn fail_flushes(&self, fail: bool) {
        self.set_fault(Fault::Flushes, fail);
    }

    /// From now on (until called with false), `complete`, `retry`, `dead_letter`, `discard` and
    /// `log` fail as on a full disk, writing nothing: a worker is left holding its lease.
    pub fn fail_settles(&self, fail: bool) {
        self.set_fault(Fault::Settles, fail);
    }

    /// From now on (until called with false), `lease_due` and `next_due_ms` fail.
    pub fn fail_queue_reads(&self, fail: bool) {
        self.set_fault(Fault::QueueReads, fail);
    }

    /// From now on (until called with false), `lease_due` fails while `next_due_ms` still
    /// answers: a worker sees due work it cannot take.
    pub fn fail_leases(&self, fail: bool) {
        self.set_fault(Fault::Leases, fail);
    }

    /// How many injected errors the store has returned so far.
    pub fn faults_hit(&self) -> u64 {
        self.faults.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_fault(&self, fault: Fault, on: bool) {
        self.faults.on[fault as usize].store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Store {
    #[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))]
    pub(crate) fn injected_fault(&self, fault: Fault) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        if self.faults.on[fault as usize].load(std::sync::atomic::Ordering::SeqCst) {
            self.faults.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let error = match fault {
                Fault::QueueReads | Fault::Leases => "injected fault: input/output error",
                Fault::Writes | Fault::Flushes | Fault::Settles => "injected fault: no space left on device",
            };
            return Err(crate::StoreError::Sled(sled::Error::Io(std::io::Error::other(error))));
        }
        Ok(())
    }
}
