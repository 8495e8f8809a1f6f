//! Group commit: many requests waiting for durability share one `flush` (fsync) instead of paying
//! one each. A caller takes a ticket after its writes; whoever holds the lock flushes everything
//! written up to the newest ticket, and every caller whose ticket that covers returns at once.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct GroupCommit {
    requested: AtomicU64,
    durable: AtomicU64,
    flushes: AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    pub(crate) async fn durable(&self, db: &sled::Db) -> crate::Result<()> {
        // Writes made before this ticket are covered by any flush that starts after it.
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _leader = self.lock.lock().await;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let upto = self.requested.load(Ordering::SeqCst);
        let db = db.clone();
        let started = std::time::Instant::now();
        let bytes = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| crate::StoreError::Corrupt { what: "flush task", detail: e.to_string() })??;
        let writers = upto - self.durable.load(Ordering::SeqCst);
        tracing::debug!(writers, bytes, flush_us = started.elapsed().as_micros() as u64, "group commit");
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.durable.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}
