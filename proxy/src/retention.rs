//! Retention: events (with their history and dead letters) and object ownership older than
//! `retention` are forgotten, in small batches on the background threads (`blocking`) so ingest
//! never waits on them; and jobs queued for targets a reload removed go to the dead letters.

use std::sync::Arc;
use std::time::Duration;

use fanout_store::Store;
use tokio_util::sync::CancellationToken;

use crate::blocking::Chores;
use crate::clock::unix_now_ms;
use crate::config::LiveConfig;
use crate::deliver::Deliveries;

/// How often retention runs (and re-checks for queues of removed targets).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Entries forgotten per store call.
const BATCH: usize = 500;

/// Owners looked at per pass: ownership is keyed by object id, not time, so it is walked a slice
/// at a time, the cursor kept between passes.
const OWNERS_SLICE: usize = 1000;

pub async fn sweep(
    store: Store,
    live: LiveConfig,
    deliveries: Deliveries,
    chores: Arc<Chores>,
    shutdown: CancellationToken,
) {
    let mut owners_from: Option<String> = None;
    loop {
        let cutoff = unix_now_ms().saturating_sub(live.load().retention.as_millis() as u64);
        loop {
            let s = store.clone();
            let purged = chores.run("retention sweep failed", move || s.purge_events_before(cutoff, BATCH));
            if purged.await != Some(BATCH) || shutdown.is_cancelled() {
                break;
            }
        }
        let (s, from) = (store.clone(), owners_from.clone());
        let owners = move || s.purge_owners_before(cutoff, from.as_deref(), OWNERS_SLICE);
        if let Some((_, next)) = chores.run("retention sweep of object owners failed", owners).await {
            owners_from = next;
        }
        deliveries.sweep_orphan_queues().await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}
