//! The deliver stage: one worker per target drains that target's queue in the store, so a slow or
//! dead target only ever holds up itself. Each attempt sends the original body with a fresh
//! `Stripe-Signature` made with the target's own secret; the outcome is settled back into the store
//! (`complete`, `retry` with backoff and jitter, or `dead_letter`).
//!
//! Invariant: a job leaves the store only when its target answered 2xx, its `any` group was
//! delivered by another member, or it is dead-lettered; everything else goes back on the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bytes::Bytes;
use fanout_store::{Delivery, Job, JobEvent, Settled, Store};
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, RetryPolicy, Target};
use crate::ingress::{unix_now_ms, unix_now_secs};
use crate::signature;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Wakes a target's worker when new jobs arrive, so delivery starts without polling.
#[derive(Clone, Default)]
pub struct Dispatcher {
    wakers: Arc<HashMap<String, Arc<Notify>>>,
}

impl Dispatcher {
    pub fn wake(&self, target: &str) {
        if let Some(n) = self.wakers.get(target) {
            n.notify_one();
        }
    }
}

/// Starts one worker per target; they stop when `shutdown` is cancelled (in-flight attempts run
/// to their timeout; anything unsettled is re-queued at the next start).
pub fn spawn(
    config: Arc<Config>,
    store: Store,
    client: HttpClient,
    shutdown: CancellationToken,
    attempts: TaskTracker,
) -> (Dispatcher, Vec<tokio::task::JoinHandle<()>>) {
    let wakers: HashMap<String, Arc<Notify>> =
        config.targets.iter().map(|t| (t.name.clone(), Arc::new(Notify::new()))).collect();
    let dispatcher = Dispatcher { wakers: Arc::new(wakers) };
    let handles = (0..config.targets.len())
        .map(|i| {
            let worker = Worker {
                target: i,
                config: config.clone(),
                store: store.clone(),
                client: client.clone(),
                wake: dispatcher.wakers[&config.targets[i].name].clone(),
                dispatcher: dispatcher.clone(),
                attempts: attempts.clone(),
            };
            tokio::spawn(worker.run(shutdown.clone()))
        })
        .collect();
    (dispatcher, handles)
}

/// The HTTP(S) client for targets: rustls with the platform's roots, HTTP/1.1 and HTTP/2 by ALPN,
/// no redirects followed (a redirect is a failed delivery).
pub fn http_client() -> HttpClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("no platform CA roots ({e}); https targets will fail to verify");
            let roots = rustls::RootCertStore::empty();
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
        }
    };
    let connector = builder.https_or_http().enable_all_versions().build();
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

struct Worker {
    target: usize,
    config: Arc<Config>,
    store: Store,
    client: HttpClient,
    wake: Arc<Notify>,
    dispatcher: Dispatcher,
    /// Attempts in flight, so a stop can wait for them (each holds the store open).
    attempts: TaskTracker,
}

/// A job whose event is still uncommitted after this long is an orphan of a crashed ingest;
/// before it, the ingest that queued it may still be committing.
const ORPHAN_AFTER: Duration = Duration::from_secs(60);

/// How soon a job leased while its ingest was still committing is looked at again.
const UNCOMMITTED_RECHECK: Duration = Duration::from_millis(100);

/// Longest a worker sleeps without re-reading its queue; bounds the effect of a wall-clock jump.
const MAX_IDLE: Duration = Duration::from_secs(30);

impl Worker {
    async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let target = &this.config.targets[this.target];
        let permits = Arc::new(Semaphore::new(target.concurrency));
        loop {
            let free = permits.available_permits();
            let mut wait = MAX_IDLE;
            if free > 0 {
                match this.store.lease_due(&target.name, unix_now_ms(), free) {
                    Ok(jobs) => {
                        for job in jobs {
                            // Only this loop takes permits, so `free` of them are there; should that
                            // ever not hold, the job goes back to the queue rather than stay leased.
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                if let Err(e) = this.store.retry(&job) {
                                    tracing::error!(target = %target.name, "cannot re-queue a job: {e}");
                                }
                                continue;
                            };
                            let this = this.clone();
                            this.attempts.clone().spawn(async move {
                                this.attempt(job).await;
                                drop(permit);
                                this.wake.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::error!(target = %target.name, "cannot read the queue: {e}"),
                }
                if permits.available_permits() > 0 {
                    match this.store.next_due_ms(&target.name) {
                        Ok(Some(due)) => wait = Duration::from_millis(due.saturating_sub(unix_now_ms())).min(MAX_IDLE),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(target = %target.name, "cannot read the queue: {e}")
                        }
                    }
                }
            }
            if wait.is_zero() {
                // Due now but permits just ran out or the lease raced: yield, then look again.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(&self, mut job: Job) {
        let target = &self.config.targets[self.target];
        let event = match self.store.event_for(&job) {
            Ok(JobEvent::Ready(event)) => Ok(event),
            Ok(JobEvent::Uncommitted)
                if unix_now_ms().saturating_sub(job.created_at_ms) <= ORPHAN_AFTER.as_millis() as u64 =>
            {
                // Its ingest is still writing: not an attempt, look again shortly.
                job.due_at_ms = unix_now_ms() + UNCOMMITTED_RECHECK.as_millis() as u64;
                if let Err(e) = self.store.retry(&job) {
                    tracing::error!(event_id = %job.event_id, target = %target.name, "cannot re-queue a job: {e}");
                }
                return;
            }
            Ok(JobEvent::Uncommitted) => {
                return self.drop_job(
                    &job,
                    "its event was never committed (a crash during ingest, before the 2xx; Stripe resends such events)",
                );
            }
            Ok(JobEvent::Superseded) => {
                return self.drop_job(&job, "another copy of its event was committed and is delivered instead");
            }
            Err(e) => Err(format!("cannot read the event from the store: {e}")),
        };
        job.attempt += 1;
        let started = Instant::now();
        let result = match event {
            Ok(event) => send(&self.client, target, &job, Bytes::from(event.body)).await,
            Err(e) => Err(e),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let (event_id, attempt) = (job.event_id.clone(), job.attempt);
        let settled = match result {
            Ok(status) => {
                tracing::info!(%event_id, target = %target.name, attempt, status, latency_ms, "delivered");
                self.store.complete(&job).map(|cancelled| {
                    if cancelled > 0 {
                        tracing::info!(%event_id, cancelled, "group delivered; other members' pending jobs cancelled");
                    }
                })
            }
            Err(error) => {
                tracing::warn!(%event_id, target = %target.name, attempt, latency_ms, "delivery failed: {error}");
                self.settle_failure(job, error)
            }
        };
        if let Err(e) = settled {
            // The lease stays; the job is re-offered at the next start.
            tracing::error!(%event_id, target = %target.name, "cannot record the delivery outcome: {e}");
        }
    }

    /// Forgets a job that must never be delivered.
    fn drop_job(&self, job: &Job, why: &str) {
        let target = &self.config.targets[self.target].name;
        tracing::warn!(event_id = %job.event_id, %target, "dropped a job: {why}");
        if let Err(e) = self.store.discard(job) {
            tracing::error!(event_id = %job.event_id, %target, "cannot drop a job: {e}");
        }
    }

    fn settle_failure(&self, job: Job, error: String) -> fanout_store::Result<()> {
        let now = unix_now_ms();
        let event_id = job.event_id.clone();
        match next_step(job, error, &self.config, now) {
            Step::Retry(job) => {
                let (target, due_in) = (job.target.clone(), job.due_at_ms.saturating_sub(now));
                if self.store.retry(&job)? == Settled::CancelledByGroup {
                    tracing::info!(%event_id, "not retried: its group was delivered by another member");
                } else if target != self.config.targets[self.target].name {
                    tracing::info!(%event_id, next = %target, "failing over to the next group member");
                    self.dispatcher.wake(&target);
                } else {
                    tracing::debug!(%event_id, due_in_ms = due_in, "retry scheduled");
                }
            }
            Step::Dead(job, reason) => {
                if self.store.dead_letter(&job, &reason, now)? == Settled::Done {
                    tracing::warn!(%event_id, target = %job.target, "dead-lettered: {reason}");
                }
            }
        }
        Ok(())
    }
}

/// One attempt: POST the original body with a fresh signature; Ok(status) only for 2xx.
async fn send(client: &HttpClient, target: &Target, job: &Job, body: Bytes) -> Result<u16, String> {
    let signature = signature::sign(target.secret.as_ref(), unix_now_secs(), &body);
    let (route, group) = match &job.delivery {
        Delivery::Target => (job.rule.as_str(), None),
        Delivery::AnyOf { group } | Delivery::Failover { group, .. } => (job.rule.as_str(), Some(group.as_str())),
    };
    let mut req = Request::post(target.url.clone())
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::USER_AGENT, concat!("fanout/", env!("CARGO_PKG_VERSION"), " (Stripe webhook proxy)"))
        .header("stripe-signature", signature)
        .header("fanout-event-id", job.event_id.as_str())
        .header("fanout-delivery-id", job.id.to_string())
        .header("fanout-attempt", job.attempt.to_string())
        .header("fanout-target", target.name.as_str())
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    if let Ok(v) = HeaderValue::from_str(route) {
        req.headers_mut().insert("fanout-route", v);
    }
    if let Some(v) = group.and_then(|g| HeaderValue::from_str(g).ok()) {
        req.headers_mut().insert("fanout-group", v);
    }
    let exchange = async {
        let res = client.request(req).await.map_err(|e| connect_error(&e))?;
        let status = res.status();
        // Read (a bounded part of) the answer so the connection can be reused, and for the error.
        let text = match Limited::new(res.into_body(), 4096).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect::<String>(),
            Err(_) => String::new(),
        };
        Ok::<_, String>((status, text))
    };
    match tokio::time::timeout(target.timeout, exchange).await {
        Err(_) => Err(format!("timed out after {:?}", target.timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok((status, _))) if status.is_success() => Ok(status.as_u16()),
        Ok(Ok((status, _))) if status.is_redirection() => {
            Err(format!("HTTP {status}: redirects are not followed; point the target at the final URL"))
        }
        Ok(Ok((status, text))) => Err(format!("HTTP {status}: {text}")),
    }
}

fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// What to do with a job whose attempt just failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Retry(Job),
    Dead(Job, String),
}

/// The retry policy as a pure function. A plain target backs off after each failure. A failover
/// group moves to its next member at once, and backs off only after a whole round failed; its
/// `max_attempts` counts rounds.
pub fn next_step(mut job: Job, error: String, config: &Config, now_ms: u64) -> Step {
    let Some(target) = config.targets.iter().find(|t| t.name == job.target) else {
        let reason = format!("target {:?} is no longer configured; last error: {error}", job.target);
        return Step::Dead(job, reason);
    };
    let policy = &target.retry;
    job.last_error = Some(error.clone());
    let age = Duration::from_millis(now_ms.saturating_sub(job.created_at_ms));
    let retries = match &mut job.delivery {
        Delivery::Failover { members, member, .. } if *member + 1 < members.len() => {
            *member += 1;
            job.target = members[*member].clone();
            None
        }
        Delivery::Failover { members, member, .. } => {
            *member = 0;
            job.target = members[0].clone();
            Some(job.attempt / members.len() as u32)
        }
        _ => Some(job.attempt),
    };
    if age >= policy.max_age {
        let reason = format!(
            "gave up after {} attempts over {}: older than max_age; last error: {error}",
            job.attempt,
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        );
        return Step::Dead(job, reason);
    }
    match retries {
        None => job.due_at_ms = now_ms,
        Some(n) if policy.max_attempts.is_some_and(|max| n >= max) => {
            let reason = format!("gave up after {} attempts (max_attempts); last error: {error}", job.attempt);
            return Step::Dead(job, reason);
        }
        Some(n) => job.due_at_ms = now_ms + retry_delay(policy, n).as_millis() as u64,
    }
    Step::Retry(job)
}

/// Delay before retry number `n` (1 = first retry): exponential from `initial_delay`, capped at
/// `max_delay`, plus up to 100% jitter so a recovering target is not hit by every job at once.
pub fn retry_delay(policy: &RetryPolicy, n: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(policy.initial_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(n.saturating_sub(1).min(64) as usize)
        .unwrap_or(policy.max_delay)
}

#[cfg(test)]
mod tests;
