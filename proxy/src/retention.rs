//! Retention: events (with their history and dead letters) and object ownership older than
//! `retention` are forgotten, in small batches (the sled engine runs them on its background
//! threads, so ingest never waits on them); and jobs queued for targets a reload removed go to
//! the dead letters.

use std::time::Duration;

use fanout_store::engine::Engine;
use tokio_util::sync::CancellationToken;

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

pub async fn sweep(store: Engine, live: LiveConfig, deliveries: Deliveries, shutdown: CancellationToken) {
    let mut owners_from: Option<String> = None;
    loop {
        let cutoff = unix_now_ms().saturating_sub(live.load().retention.as_millis() as u64);
        loop {
            match store.purge_events_before(cutoff, BATCH).await {
                Ok(n) if n >= BATCH && !shutdown.is_cancelled() => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("retention sweep failed: {e}");
                    break;
                }
            }
        }
        match store.purge_owners_before(cutoff, owners_from.as_deref(), OWNERS_SLICE).await {
            Ok((_, next)) => owners_from = next,
            Err(e) => tracing::error!("retention sweep of object owners failed: {e}"),
        }
        deliveries.sweep_orphan_queues().await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}
