//! The push worker: one per HTTP target, leasing its due jobs up to the target's concurrency and
//! POSTing each with a fresh signature. A slow or dead target only ever holds up itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout_store::{Job, StoreError};
use http::Request;
use http_body_util::Full;

use super::attempt::{delivery_headers, Loaded};
use super::breaker::Gate;
use super::{Shared, TargetState};
use crate::clock::{mono_ms, unix_now_ms};
use crate::config::{Config, Endpoint, Target};
use crate::http::client::{post, Failure, HttpClient};

/// Longest a worker sleeps without re-reading its queue; bounds the effect of a wall-clock jump.
const MAX_IDLE: Duration = Duration::from_secs(30);

pub(super) struct Worker {
    pub(super) name: String,
    pub(super) state: Arc<TargetState>,
    pub(super) shared: Arc<Shared>,
}

impl Worker {
    pub(super) async fn run(self) {
        let this = Arc::new(self);
        this.shared.load_paused(&this.name, &this.state).await;
        // Consecutive store errors: a store that keeps failing is asked again after a growing
        // pause, not in a loop at full CPU, and the log says so once, not once per try.
        let mut failing = 0u32;
        loop {
            if this.state.stop.is_cancelled() {
                break;
            }
            let config = this.shared.live.load_full();
            let Some(target) = config.target(&this.name) else { break };
            let looked = this.lease_and_start(&config, target).await;
            let wait = match looked {
                Ok(wait) => {
                    if failing > 0 {
                        tracing::info!(target = %this.name, "the queue is readable again");
                        failing = 0;
                    }
                    wait
                }
                Err(e) => {
                    if failing == 0 {
                        tracing::error!(target = %this.name, "cannot read the queue; backing off until it can: {e}");
                    }
                    failing = failing.saturating_add(1);
                    store_backoff(failing)
                }
            };
            if wait.is_zero() {
                // Due now but the lease raced: yield, then look again.
                tokio::task::yield_now().await;
                continue;
            }
            // While the store fails, new work does not cut the pause short: it would be asked
            // again at the rate events arrive.
            let woken = async {
                if failing == 0 {
                    this.state.wake.notified().await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = this.state.stop.cancelled() => break,
                _ = woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Leases what is due up to the free concurrency and starts an attempt for each; returns how
    /// long to wait before looking again.
    async fn lease_and_start(self: &Arc<Self>, config: &Arc<Config>, target: &Target) -> Result<Duration, StoreError> {
        let busy = self.state.in_flight.load(Ordering::SeqCst);
        if self.state.paused.holds() || busy >= target.concurrency {
            return Ok(MAX_IDLE);
        }
        let mut want = match self.state.allowance(target.rate, target.concurrency - busy) {
            Ok(want) => want,
            Err(until_a_token) => return Ok(until_a_token),
        };
        if !target.breaker.enabled && self.state.breaker().reset() {
            self.shared.breaker_closed(&self.name, "turned off by a reload");
        }
        let mut probe = match self.state.breaker().gate(&target.breaker, mono_ms()) {
            Gate::Pass => None,
            Gate::Hold(until_a_probe) => return Ok(until_a_probe.clamp(Duration::from_millis(1), MAX_IDLE)),
            Gate::Probe(id) => {
                want = 1;
                Some(Probe { state: self.state.clone(), id })
            }
        };
        // An attempt ends within the target's timeout; the margin covers settling it.
        let lease_for = target.timeout + super::LEASE_MARGIN;
        let leased = self.shared.store.lease_due(&self.name, unix_now_ms(), want, lease_for).await?;
        let probe_not_leased = probe.is_some() && leased.is_empty();
        self.state.spend(leased.len());
        for job in leased {
            self.state.in_flight.fetch_add(1, Ordering::SeqCst);
            let (this, config) = (self.clone(), config.clone());
            let probe = probe.take();
            self.shared.tasks.spawn(async move {
                this.attempt(&config, job, probe).await;
                this.state.in_flight.fetch_sub(1, Ordering::SeqCst);
                this.state.wake.notify_one();
            });
        }
        if self.state.in_flight.load(Ordering::SeqCst) >= target.concurrency {
            return Ok(MAX_IDLE);
        }
        let wait = match self.shared.store.next_due_ms(&self.name).await? {
            Some(due) => Duration::from_millis(due.saturating_sub(unix_now_ms())).min(MAX_IDLE),
            None => MAX_IDLE,
        };
        // A probe that found nothing to lease while something is due (on Postgres, a sweep of the
        // held queue has its rows locked) looks again shortly, not in a loop.
        Ok(if probe_not_leased { wait.max(PROBE_AGAIN) } else { wait })
    }

    /// One attempt of `job`; a `probe` is the one its open breaker let through.
    async fn attempt(&self, config: &Config, job: Job, probe: Option<Probe>) {
        let Some(target) = config.target(&self.name) else { return };
        let Endpoint::Url(url) = &target.endpoint else { return };
        let (mut job, event) = match self.shared.load_event(config, job).await {
            Loaded::Ready(job, event) => (job, Ok(event)),
            Loaded::Unreadable(job, error) => (job, Err(Failure { status: None, error })),
            Loaded::Settled => return,
        };
        job.attempt += 1;
        let started = Instant::now();
        let client = self.shared.clients.read().unwrap_or_else(|p| p.into_inner()).for_target(&target.name).clone();
        let result = match event {
            Ok(event) => {
                let result = tokio::select! {
                    result = send(&client, target, url, &job, Bytes::from(event.body)) => result,
                    _ = self.shared.abort.cancelled() => {
                        // Shutdown deadline: the lease stays and is handed back to the queue.
                        tracing::info!(event_id = %job.event_id, target = %target.name, "attempt cut off by shutdown; re-queued");
                        return;
                    }
                };
                // Before settling: a failover step must see the breaker this answer opened.
                let probe_id = probe.as_ref().map(|p| p.id);
                self.shared.answered(&self.name, &self.state, target, result.is_ok(), probe_id);
                result
            }
            Err(e) => Err(e),
        };
        let _ = self.shared.settle(config, &self.state, &self.name, job, result, started.elapsed()).await;
    }
}

/// How soon a probe that found nothing to lease looks again when something is due.
const PROBE_AGAIN: Duration = Duration::from_millis(100);

/// The probe an open breaker granted. An attempt that ends without the target's answer (nothing
/// leased, the job settled meanwhile, the store unreadable, cut off by a stop, a panic) drops it
/// unanswered, and the breaker may grant the next one; once answered, dropping it does nothing.
pub(super) struct Probe {
    state: Arc<TargetState>,
    id: u64,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.state.breaker().probe_not_made(self.id);
    }
}

/// The pause after `n` store errors in a row: 100 ms doubling up to 5 s.
fn store_backoff(n: u32) -> Duration {
    Duration::from_millis(100u64 << n.clamp(1, 7).saturating_sub(1)).min(Duration::from_secs(5))
}

/// One attempt: POST the original body with a fresh signature; Ok(status) only for 2xx.
async fn send(client: &HttpClient, target: &Target, url: &http::Uri, job: &Job, body: Bytes) -> Result<u16, Failure> {
    let mut req = Request::post(url.clone())
        .body(Full::new(body.clone()))
        .map_err(|e| Failure { status: None, error: format!("cannot build the request: {e}") })?;
    for (name, value) in delivery_headers(target, job, &body) {
        req.headers_mut().insert(name, value);
    }
    post(client, req, target.timeout).await
}
