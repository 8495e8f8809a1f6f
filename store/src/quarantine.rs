//! Values that do not decode (written by a buggy version, or damaged on disk) are moved aside
//! instead of failing whatever met them: one bad entry must not stop `open`, a target's queue or
//! retention. Their raw bytes stay in the `quarantine` tree for someone to look at, and they are
//! counted from it, so the count survives restarts.

use serde::de::DeserializeOwned;
use sled::Tree;

use crate::{decode, queue_target, Result, Store, StoreError};

impl Store {
    /// How many values were quarantined since the store was created. Counted on disk (sled walks
    /// the tree): for a metric scraped now and then, not for a hot path.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// `value`, read at `key` in `tree`, decoded; `None` if it does not decode, and then it has
    /// been moved to the quarantine.
    pub(crate) fn decoded<T: DeserializeOwned>(
        &self,
        tree: &Tree,
        key: &[u8],
        value: &[u8],
        what: &'static str,
    ) -> Result<Option<T>> {
        match decode(value, what) {
            Ok(decoded) => Ok(Some(decoded)),
            Err(error) => {
                self.quarantine(tree, key, value, &error)?;
                Ok(None)
            }
        }
    }

    /// Moves a value that does not decode out of `tree`. Copied aside first, so a crash between
    /// the two leaves it in both places (met and moved again), never lost. Removed with a
    /// compare-and-swap, so a value rewritten meanwhile is not taken for the bad one.
    pub(crate) fn quarantine(&self, tree: &Tree, key: &[u8], value: &[u8], error: &StoreError) -> Result<()> {
        let name = tree.name();
        let aside = aside_key(&name, key);
        self.quarantine.insert(aside.as_slice(), value)?;
        match tree.compare_and_swap(key, Some(value), None::<&[u8]>)? {
            Ok(()) => {
                // Queue entries are counted from their keys at open, decoded or not.
                if name == self.queue.name() {
                    self.counts.queued(&queue_target(key), -1);
                }
                report(&name, key, error);
            }
            // Rewritten meanwhile: the bad value is gone, and the new one is not for us to judge.
            Err(cas) if cas.current.is_some() => {
                self.quarantine.remove(aside)?;
            }
            // Taken meanwhile, by another reader that moved it aside too or a remover that will.
            Err(_) => {}
        }
        Ok(())
    }

    /// Keeps aside a value already taken out of `tree` (and uncounted) that does not decode.
    pub(crate) fn keep_aside(&self, tree: &Tree, key: &[u8], value: &[u8], error: &StoreError) -> Result<()> {
        let name = tree.name();
        self.quarantine.insert(aside_key(&name, key), value)?;
        report(&name, key, error);
        Ok(())
    }
}

/// source tree name ++ 0 ++ the value's key there.
fn aside_key(tree: &[u8], key: &[u8]) -> Vec<u8> {
    [tree, &[0], key].concat()
}

fn report(tree: &[u8], key: &[u8], error: &StoreError) {
    let tree = String::from_utf8_lossy(tree);
    tracing::error!(%tree, key = %key.escape_ascii(), "{error}; moved to the quarantine, the rest goes on");
}
