//! Per-target counts of queued jobs and dead letters, kept in memory so metrics and `fanout
//! targets` never count a million-entry queue per request. Counted once at open, then moved by
//! every write that adds or removes a queue entry or a dead letter.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct Counts {
    inner: Mutex<TargetCounts>,
}

/// The counts at one moment, by target name.
#[derive(Clone, Debug, Default)]
pub struct TargetCounts {
    pub queued: HashMap<String, i64>,
    pub dead: HashMap<String, i64>,
}

impl Counts {
    pub(crate) fn queued(&self, target: &str, delta: i64) {
        Self::bump(&mut self.lock().queued, target, delta);
    }

    pub(crate) fn dead(&self, target: &str, delta: i64) {
        Self::bump(&mut self.lock().dead, target, delta);
    }

    pub(crate) fn get(&self) -> TargetCounts {
        self.lock().clone()
    }

    pub(crate) fn set(&self, snapshot: TargetCounts) {
        *self.lock() = snapshot;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TargetCounts> {
        // A panic elsewhere while holding it leaves plain numbers, still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(map: &mut HashMap<String, i64>, target: &str, delta: i64) {
        match map.get_mut(target) {
            Some(n) => *n += delta,
            None => {
                map.insert(target.to_owned(), delta);
            }
        }
    }
}

impl crate::Store {
    /// Counts every queue entry and dead letter; run once at open, before any writer.
    pub(crate) fn count_all(&self) -> crate::Result<()> {
        let mut snapshot = TargetCounts::default();
        for key in self.queue.iter().keys() {
            Counts::bump(&mut snapshot.queued, &crate::queue_target(&key?), 1);
        }
        for entry in self.dead.iter() {
            let (key, value) = entry?;
            if let Some(letter) = self.decoded::<crate::DeadLetter>(&self.dead, &key, &value, "dead letter")? {
                Counts::bump(&mut snapshot.dead, &letter.job.target, 1);
            }
        }
        self.counts.set(snapshot);
        Ok(())
    }

    /// Queued jobs and dead letters per target.
    pub fn counts(&self) -> TargetCounts {
        self.counts.get()
    }
}
