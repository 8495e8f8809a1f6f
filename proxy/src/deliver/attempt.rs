//! What every attempt shares, pushed by a worker or pulled by a listener: loading the leased job's
//! event, the headers a delivery carries, and settling the outcome back into the store
//! (`complete`, `retry` with backoff, fail over, or `dead_letter`).

use std::time::Duration;

use fanout_store::{Delivery, Job, JobEvent, Outcome, Settled, StoreError};
use http::HeaderValue;

use super::policy::{next_step, Step};
use super::{Shared, TargetState, TargetStatus};
use crate::clock::{unix_now_ms, unix_now_secs};
use crate::config::{Config, Target};
use crate::http::client::Failure;
use crate::metrics::TargetLabel;
use crate::signature;

/// A job whose event is still uncommitted after this long is an orphan of a crashed ingest;
/// before it, the ingest that queued it may still be committing.
const ORPHAN_AFTER: Duration = Duration::from_secs(60);

/// How soon a job leased while its ingest was still committing is looked at again.
const UNCOMMITTED_RECHECK: Duration = Duration::from_millis(100);

/// Why an outcome was not recorded: the store reclaimed the lease (it expired, see
/// `Deliveries::reclaim`), so the job is queued again and its next attempt decides.
const LEASE_LOST: &str = "outcome not recorded: the lease expired meanwhile and the job was queued again";

/// What a worker (or an inbox) finds when it loads a leased job's event.
pub(super) enum Loaded {
    Ready(Job, fanout_store::EventRecord),
    /// The store could not be read: a failed attempt with this error.
    Unreadable(Job, String),
    /// Not to be attempted now; already put back, dead-lettered or dropped.
    Settled,
}

impl Shared {
    /// The event a leased job delivers. Jobs whose ingest is still committing are put back for a
    /// moment (not an attempt); those of an ingest that never committed or lost a race are
    /// dropped; those whose event retention removed are dead-lettered.
    pub(super) async fn load_event(&self, config: &Config, mut job: Job) -> Loaded {
        let store = &self.store;
        let target = job.target.clone();
        let now = unix_now_ms();
        match store.event_for(&job).await {
            Ok(JobEvent::Ready(event)) => Loaded::Ready(job, event),
            Ok(JobEvent::Uncommitted) if now.saturating_sub(job.created_at_ms) <= ORPHAN_AFTER.as_millis() as u64 => {
                // Its ingest is still writing: not an attempt, look again shortly.
                job.due_at_ms = now + UNCOMMITTED_RECHECK.as_millis() as u64;
                if let Err(e) = store.retry(&job, now).await {
                    tracing::error!(event_id = %job.event_id, %target, "cannot re-queue a job: {e}");
                }
                Loaded::Settled
            }
            Ok(JobEvent::Uncommitted)
                if job.received_at_ms < now.saturating_sub(config.retention.as_millis() as u64) =>
            {
                // Acknowledged once, but kept past retention (its target was paused, or it was a
                // late replay): nothing to send, and not to be dropped silently either.
                let reason = format!(
                    "its event was removed by retention ({}) before this job was delivered",
                    humantime::format_duration(config.retention)
                );
                if let Err(e) = store.dead_letter(&job, &reason, now).await {
                    tracing::error!(event_id = %job.event_id, %target, "cannot dead-letter a job: {e}");
                }
                tracing::warn!(event_id = %job.event_id, %target, "dead-lettered: {reason}");
                Loaded::Settled
            }
            Ok(JobEvent::Uncommitted) => {
                self.drop_job(
                    &job,
                    "its event was never committed (a crash during ingest, before the 2xx; Stripe resends such events)",
                )
                .await;
                Loaded::Settled
            }
            Ok(JobEvent::Superseded) => {
                self.drop_job(&job, "another copy of its event was committed and is delivered instead").await;
                Loaded::Settled
            }
            Err(e) => {
                // The operator reads the attempt's error in the history; the store's own words
                // stay in the log.
                tracing::error!(event_id = %job.event_id, %target, "cannot read the event from the store: {e}");
                Loaded::Unreadable(job, "the proxy's store could not be read (see its log)".to_owned())
            }
        }
    }

    /// Forgets a job that must never be delivered.
    async fn drop_job(&self, job: &Job, why: &str) {
        tracing::warn!(event_id = %job.event_id, target = %job.target, "dropped a job: {why}");
        if let Err(e) = self.store.discard(job, why, unix_now_ms()).await {
            tracing::error!(event_id = %job.event_id, target = %job.target, "cannot drop a job: {e}");
        }
    }

    /// Records an attempt's outcome (metrics, status, history) and settles the job: complete,
    /// retry, fail over or dead-letter. On a store error the job stays leased and its lease
    /// expires (see `Deliveries::reclaim`): it is attempted again, not lost and not reported
    /// settled. `Ok(false)`: the lease had expired already, and the job's next attempt decides.
    pub(super) async fn settle(
        &self,
        config: &Config,
        state: &TargetState,
        name: &str,
        job: Job,
        result: Result<u16, Failure>,
        latency: Duration,
    ) -> Result<bool, StoreError> {
        let latency_ms = latency.as_millis() as u64;
        let now = unix_now_ms();
        let label = TargetLabel { target: name.to_owned() };
        self.metrics.delivery_latency.get_or_create(&label).observe(latency.as_secs_f64());
        self.metrics.recent.attempt(name, result.is_ok(), latency_ms, now);
        let (event_id, attempt) = (job.event_id.clone(), job.attempt);
        let note = |f: &dyn Fn(&mut TargetStatus)| f(&mut state.last.lock().unwrap_or_else(|p| p.into_inner()));
        let settled = match result {
            Ok(status) => {
                tracing::info!(%event_id, target = %name, attempt, status, latency_ms, "delivered");
                self.metrics.delivery(name, "delivered");
                note(&|s| s.last_success_ms = Some(now));
                self.settle_success(&job, status, latency_ms, now).await
            }
            Err(failure) => {
                tracing::warn!(%event_id, target = %name, attempt, latency_ms, "delivery failed: {}", failure.error);
                note(&|s| {
                    s.last_failure_ms = Some(now);
                    s.last_error = Some(failure.error.clone());
                });
                self.settle_failure(config, name, job, failure, latency_ms, now).await
            }
        };
        settled.inspect_err(|e| {
            tracing::error!(%event_id, target = %name, "cannot record the delivery outcome (the lease expires and it is attempted again): {e}")
        })
    }

    /// A delivery is recorded even if its lease expired meanwhile (the copy queued again goes).
    async fn settle_success(&self, job: &Job, status: u16, latency_ms: u64, now: u64) -> Result<bool, StoreError> {
        let cancelled = self.store.complete_logged(job, Outcome::Delivered { status, latency_ms }, now).await?;
        if cancelled > 0 {
            tracing::info!(event_id = %job.event_id, cancelled, "group delivered; other members' pending jobs cancelled");
        }
        Ok(true)
    }

    async fn settle_failure(
        &self,
        config: &Config,
        name: &str,
        job: Job,
        failure: Failure,
        latency_ms: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let store = &self.store;
        let event_id = job.event_id.clone();
        let step = next_step(job, failure.status, failure.error.clone(), config, now, &|t| self.is_open(t));
        let (job, retry_at_ms) = match &step {
            Step::Retry(j) => (j, Some(j.due_at_ms)),
            Step::Dead(j, _) => (j, None),
        };
        let outcome = Outcome::Failed { status: failure.status, latency_ms, error: failure.error, retry_at_ms };
        // Logged under the target that was tried (a failover step has already moved the job on).
        let tried = Job { target: name.to_owned(), ..job.clone() };
        store.log(&tried, outcome, now).await?;
        match step {
            Step::Retry(job) => {
                self.metrics.delivery(name, "failed");
                let (target, due_in) = (job.target.clone(), job.due_at_ms.saturating_sub(now));
                match store.retry(&job, now).await? {
                    Settled::CancelledByGroup => {
                        tracing::info!(%event_id, "not retried: its group was delivered by another member")
                    }
                    Settled::NotLeased => {
                        tracing::warn!(%event_id, "{LEASE_LOST}");
                        return Ok(false);
                    }
                    Settled::Done if target != name => {
                        tracing::info!(%event_id, next = %target, "failing over to the next group member");
                        self.wake(&target);
                    }
                    Settled::Done => tracing::debug!(%event_id, due_in_ms = due_in, "retry scheduled"),
                }
            }
            Step::Dead(job, reason) => {
                self.metrics.delivery(name, "dead_lettered");
                match store.dead_letter(&job, &reason, now).await? {
                    Settled::Done => tracing::warn!(%event_id, target = %job.target, "dead-lettered: {reason}"),
                    Settled::NotLeased => {
                        tracing::warn!(%event_id, "{LEASE_LOST}");
                        return Ok(false);
                    }
                    Settled::CancelledByGroup => {}
                }
            }
        }
        Ok(true)
    }
}

/// The headers every delivery of `job` carries, pushed or pulled: a fresh `Stripe-Signature` over
/// `body` with the target's own secret, and fanout's own (which event, which attempt, which rule,
/// whether a replay) for people reading their app's logs.
pub(super) fn delivery_headers(target: &Target, job: &Job, body: &[u8]) -> Vec<(&'static str, HeaderValue)> {
    let mut headers = vec![
        ("content-type", "application/json; charset=utf-8".to_owned()),
        ("user-agent", concat!("fanout/", env!("CARGO_PKG_VERSION"), " (Stripe webhook proxy)").to_owned()),
        ("stripe-signature", signature::sign(target.secret.as_ref(), unix_now_secs(), body)),
        ("fanout-event-id", job.event_id.clone()),
        ("fanout-delivery-id", job.id.to_string()),
        ("fanout-attempt", job.attempt.to_string()),
        ("fanout-target", target.name.clone()),
        ("fanout-route", job.rule.clone()),
    ];
    match &job.delivery {
        Delivery::AnyOf { group } | Delivery::Failover { group, .. } => headers.push(("fanout-group", group.clone())),
        Delivery::Target | Delivery::Inbox { .. } => {}
    }
    if job.replay {
        headers.push(("fanout-replay", "true".to_owned()));
    }
    // A value that is not a valid header (a rule name or object id with a newline or non-ASCII)
    // is left out rather than failing the delivery, pushed or pulled alike.
    headers.into_iter().filter_map(|(name, v)| Some((name, HeaderValue::from_str(&v).ok()?))).collect()
}
