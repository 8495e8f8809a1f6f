//! The deliver stage: one worker per target drains that target's queue in the store, so a slow or
//! dead target only ever holds up itself. Each attempt sends the original body with a fresh
//! `Stripe-Signature` made with the target's own secret; the outcome is settled back into the store
//! (`complete`, `retry` with backoff and jitter, or `dead_letter`).
//!
//! Invariant: a job leaves the store only when its target answered 2xx, its `any` group was
//! delivered by another member, or it is dead-lettered; everything else goes back on the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bytes::Bytes;
use fanout_store::{Delivery, Job, JobEvent, Outcome, Settled, Store};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{unix_now_ms, unix_now_secs};
use crate::config::{Config, Endpoint, LiveConfig, RetryPolicy, Target};
use crate::metrics::{Metrics, TargetLabel};
use crate::route::DestinationKind;
use crate::signature;
use crate::tls::{self, HttpClient, TlsError};

/// The delivery workers, one per configured target, and their live state. Ingress wakes them,
/// the admin API reads and pauses them, a config reload adds and removes them.
#[derive(Clone)]
pub struct Deliveries {
    shared: Arc<Shared>,
}

struct Shared {
    live: LiveConfig,
    store: Store,
    metrics: Arc<Metrics>,
    workers: RwLock<HashMap<String, Arc<TargetState>>>,
    clients: RwLock<Clients>,
    /// No new leases once cancelled.
    shutdown: CancellationToken,
    /// Attempts still in flight are cut off (and their jobs leased back) once cancelled.
    abort: CancellationToken,
    /// Worker loops and attempts, so a stop can wait for them.
    tasks: TaskTracker,
}

/// One HTTP client per distinct trust set: the shared one, and one per target with its own CA.
#[derive(Clone)]
pub struct Clients {
    default: HttpClient,
    own_ca: HashMap<String, HttpClient>,
}

impl Clients {
    /// Every client the config needs; fails on a CA file that cannot be used.
    pub fn build(config: &Config) -> Result<Clients, TlsError> {
        let mut own_ca = HashMap::new();
        for t in &config.targets {
            if let Some(ca) = &t.ca {
                own_ca.insert(t.name.clone(), tls::client(Some(ca))?);
            }
        }
        Ok(Clients { default: tls::client(None)?, own_ca })
    }

    fn for_target(&self, name: &str) -> &HttpClient {
        self.own_ca.get(name).unwrap_or(&self.default)
    }
}

/// What the admin API shows for a target besides its queue.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TargetStatus {
    pub paused: bool,
    /// For an inbox: whether a listener is connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbox: Option<InboxStatus>,
    pub in_flight: usize,
    pub last_success_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub last_error: Option<String>,
}

struct TargetState {
    wake: Notify,
    paused: AtomicBool,
    in_flight: AtomicUsize,
    last: Mutex<TargetStatus>,
    /// Stops this worker alone (its target was removed from the config).
    stop: CancellationToken,
    /// Set for an inbox target: its offers and listeners.
    inbox: Option<Arc<InboxState>>,
}

/// A job whose event is still uncommitted after this long is an orphan of a crashed ingest;
/// before it, the ingest that queued it may still be committing.
const ORPHAN_AFTER: Duration = Duration::from_secs(60);

/// How soon a job leased while its ingest was still committing is looked at again.
const UNCOMMITTED_RECHECK: Duration = Duration::from_millis(100);

/// Longest a worker sleeps without re-reading its queue; bounds the effect of a wall-clock jump.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// Jobs moved per store call when a removed target's queue goes to the dead letters.
const SWEEP_BATCH: usize = 500;

impl Deliveries {
    /// Starts one worker per target in the live config.
    pub fn start(
        live: LiveConfig,
        store: Store,
        clients: Clients,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        abort: CancellationToken,
        tasks: TaskTracker,
    ) -> Deliveries {
        let shared = Shared {
            live,
            store,
            metrics,
            workers: RwLock::default(),
            clients: RwLock::new(clients),
            shutdown,
            abort,
            tasks,
        };
        let deliveries = Deliveries { shared: Arc::new(shared) };
        deliveries.reconcile();
        deliveries
    }

    pub fn wake(&self, target: &str) {
        self.shared.wake(target);
    }

    /// Brings the workers in line with the live config (after a reload): starts one for each new
    /// target, stops those whose target is gone and moves their queues to the dead letters.
    /// Targets that stay keep their worker, which reads its settings from the live config.
    pub fn reconcile(&self) {
        let config = self.shared.live.load_full();
        let mut workers = self.shared.workers.write().unwrap_or_else(|p| p.into_inner());
        let removed: Vec<String> = workers.keys().filter(|n| config.target(n).is_none()).cloned().collect();
        for name in &removed {
            if let Some(state) = workers.remove(name) {
                state.stop.cancel();
            }
            tracing::warn!(target = %name, "target removed from the config: its worker stopped");
        }
        for target in &config.targets {
            match workers.get(&target.name) {
                Some(state) if state.inbox.is_some() == target.is_inbox() => continue,
                // Became an inbox, or stopped being one: the other kind of worker takes its queue.
                Some(state) => state.stop.cancel(),
                None => {}
            }
            let paused = self.shared.store.is_paused(&target.name).unwrap_or_else(|e| {
                tracing::error!(target = %target.name, "cannot read whether the target is paused: {e}");
                false
            });
            let state = Arc::new(TargetState {
                wake: Notify::new(),
                paused: AtomicBool::new(paused),
                in_flight: AtomicUsize::new(0),
                last: Mutex::default(),
                stop: self.shared.shutdown.child_token(),
                inbox: target.is_inbox().then(|| Arc::new(InboxState::new(unix_now_ms()))),
            });
            workers.insert(target.name.clone(), state.clone());
            match state.inbox.clone() {
                Some(inbox) => {
                    self.shared.tasks.spawn(inbox::maintain(self.shared.clone(), target.name.clone(), state, inbox));
                }
                None => {
                    let worker = Worker { name: target.name.clone(), state, shared: self.shared.clone() };
                    self.shared.tasks.spawn(worker.run());
                }
            }
        }
        drop(workers);
        if !removed.is_empty() {
            // In the background: a removed target may have a backlog of millions, and a reload
            // (or a SIGTERM right after it) must not wait for it.
            let this = self.clone();
            tokio::spawn(async move { this.sweep_orphan_queues().await });
        }
    }

    /// Replaces the HTTP clients (a reload may change a target's CA).
    pub fn set_clients(&self, clients: Clients) {
        *self.shared.clients.write().unwrap_or_else(|p| p.into_inner()) = clients;
    }

    /// Moves jobs queued for targets that are no longer configured to the dead letters, with
    /// that reason: nothing is left in a queue no worker drains. Run after each reload and by the
    /// periodic sweep (an ingest planned on the old config can queue for a removed target just
    /// after the reload).
    pub async fn sweep_orphan_queues(&self) {
        let config = self.shared.live.load_full();
        let counts = self.shared.store.counts();
        for (name, _) in counts.queued.iter().filter(|(n, q)| **q > 0 && config.target(n).is_none()) {
            let reason = format!("target {name:?} was removed from the config before this job was delivered");
            loop {
                if self.shared.shutdown.is_cancelled() {
                    return;
                }
                match self.shared.store.dead_letter_queue(name, &reason, unix_now_ms(), SWEEP_BATCH) {
                    Ok(n) if n == SWEEP_BATCH => tokio::task::yield_now().await,
                    Ok(n) => {
                        if n > 0 {
                            tracing::warn!(target = %name, "moved queued jobs of a removed target to the dead letters");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::error!(target = %name, "cannot dead-letter a removed target's queue: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Pauses or resumes a target (persisted). `Ok(false)` if no such target is configured.
    pub fn set_paused(&self, target: &str, paused: bool) -> fanout_store::Result<bool> {
        let workers = self.shared.workers.read().unwrap_or_else(|p| p.into_inner());
        let Some(state) = workers.get(target) else {
            return Ok(false);
        };
        self.shared.store.set_paused(target, paused)?;
        state.paused.store(paused, Ordering::SeqCst);
        drop(workers);
        self.shared.wake(target);
        tracing::info!(target, paused, "target {}", if paused { "paused" } else { "resumed" });
        Ok(true)
    }

    /// Live state of each running worker.
    pub fn status(&self) -> HashMap<String, TargetStatus> {
        let workers = self.shared.workers.read().unwrap_or_else(|p| p.into_inner());
        workers
            .iter()
            .map(|(name, state)| {
                let mut status = state.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                status.paused = state.paused.load(Ordering::SeqCst);
                status.inbox = state.inbox.as_ref().map(|i| i.status(unix_now_ms()));
                status.in_flight = state.in_flight.load(Ordering::SeqCst);
                (name.clone(), status)
            })
            .collect()
    }
}

struct Worker {
    name: String,
    state: Arc<TargetState>,
    shared: Arc<Shared>,
}

impl Worker {
    async fn run(self) {
        let this = Arc::new(self);
        loop {
            if this.state.stop.is_cancelled() {
                break;
            }
            let config = this.shared.live.load_full();
            let Some(target) = config.target(&this.name) else { break };
            let mut wait = MAX_IDLE;
            let busy = this.state.in_flight.load(Ordering::SeqCst);
            if !this.state.paused.load(Ordering::SeqCst) && busy < target.concurrency {
                match this.shared.store.lease_due(&this.name, unix_now_ms(), target.concurrency - busy) {
                    Ok(jobs) => {
                        for job in jobs {
                            this.state.in_flight.fetch_add(1, Ordering::SeqCst);
                            let (this, config) = (this.clone(), config.clone());
                            this.shared.tasks.clone().spawn(async move {
                                this.attempt(&config, job).await;
                                this.state.in_flight.fetch_sub(1, Ordering::SeqCst);
                                this.state.wake.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::error!(target = %this.name, "cannot read the queue: {e}"),
                }
                if this.state.in_flight.load(Ordering::SeqCst) < target.concurrency {
                    match this.shared.store.next_due_ms(&this.name) {
                        Ok(Some(due)) => wait = Duration::from_millis(due.saturating_sub(unix_now_ms())).min(MAX_IDLE),
                        Ok(None) => {}
                        Err(e) => tracing::error!(target = %this.name, "cannot read the queue: {e}"),
                    }
                }
            }
            if wait.is_zero() {
                // Due now but the lease raced: yield, then look again.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = this.state.stop.cancelled() => break,
                _ = this.state.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(&self, config: &Config, job: Job) {
        let Some(target) = config.target(&self.name) else { return };
        let Endpoint::Url(url) = &target.endpoint else { return };
        let (mut job, event) = match self.shared.load_event(config, job) {
            Loaded::Ready(job, event) => (job, Ok(event)),
            Loaded::Unreadable(job, error) => (job, Err(Failure { status: None, error })),
            Loaded::Settled => return,
        };
        job.attempt += 1;
        let started = Instant::now();
        let client = self.shared.clients.read().unwrap_or_else(|p| p.into_inner()).for_target(&target.name).clone();
        let result = match event {
            Ok(event) => {
                tokio::select! {
                    result = send(&client, target, url, &job, Bytes::from(event.body)) => result,
                    _ = self.shared.abort.cancelled() => {
                        // Shutdown deadline: the lease stays and is handed back to the queue.
                        tracing::info!(event_id = %job.event_id, target = %target.name, "attempt cut off by shutdown; re-queued");
                        return;
                    }
                }
            }
            Err(e) => Err(e),
        };
        self.shared.settle(config, &self.state, &self.name, job, result, started.elapsed());
    }
}

/// What a worker (or an inbox) finds when it loads a leased job's event.
pub(crate) enum Loaded {
    Ready(Job, fanout_store::EventRecord),
    /// The store could not be read: a failed attempt with this error.
    Unreadable(Job, String),
    /// Not to be attempted now; already put back, dead-lettered or dropped.
    Settled,
}

impl Shared {
    /// New or re-queued work for `target`: its worker looks at its queue, or its inbox's waiting
    /// polls do.
    fn wake(&self, target: &str) {
        if let Some(state) = self.workers.read().unwrap_or_else(|p| p.into_inner()).get(target) {
            match &state.inbox {
                Some(inbox) => inbox.arrived.notify_waiters(),
                None => state.wake.notify_one(),
            }
        }
    }

    /// The event a leased job delivers. Jobs whose ingest is still committing are put back for a
    /// moment (not an attempt); those of an ingest that never committed or lost a race are
    /// dropped; those whose event retention removed are dead-lettered.
    fn load_event(&self, config: &Config, mut job: Job) -> Loaded {
        let store = &self.store;
        let target = job.target.clone();
        match store.event_for(&job) {
            Ok(JobEvent::Ready(event)) => Loaded::Ready(job, event),
            Ok(JobEvent::Uncommitted)
                if unix_now_ms().saturating_sub(job.created_at_ms) <= ORPHAN_AFTER.as_millis() as u64 =>
            {
                // Its ingest is still writing: not an attempt, look again shortly.
                job.due_at_ms = unix_now_ms() + UNCOMMITTED_RECHECK.as_millis() as u64;
                if let Err(e) = store.retry(&job) {
                    tracing::error!(event_id = %job.event_id, %target, "cannot re-queue a job: {e}");
                }
                Loaded::Settled
            }
            Ok(JobEvent::Uncommitted)
                if job.received_at_ms < unix_now_ms().saturating_sub(config.retention.as_millis() as u64) =>
            {
                // Acknowledged once, but kept past retention (its target was paused, or it was a
                // late replay): nothing to send, and not to be dropped silently either.
                let reason = format!(
                    "its event was removed by retention ({}) before this job was delivered",
                    humantime::format_duration(config.retention)
                );
                if let Err(e) = store.dead_letter(&job, &reason, unix_now_ms()) {
                    tracing::error!(event_id = %job.event_id, %target, "cannot dead-letter a job: {e}");
                }
                tracing::warn!(event_id = %job.event_id, %target, "dead-lettered: {reason}");
                Loaded::Settled
            }
            Ok(JobEvent::Uncommitted) => {
                self.drop_job(
                    &job,
                    "its event was never committed (a crash during ingest, before the 2xx; Stripe resends such events)",
                );
                Loaded::Settled
            }
            Ok(JobEvent::Superseded) => {
                self.drop_job(&job, "another copy of its event was committed and is delivered instead");
                Loaded::Settled
            }
            Err(e) => Loaded::Unreadable(job, format!("cannot read the event from the store: {e}")),
        }
    }

    /// Forgets a job that must never be delivered.
    fn drop_job(&self, job: &Job, why: &str) {
        tracing::warn!(event_id = %job.event_id, target = %job.target, "dropped a job: {why}");
        if let Err(e) = self.store.discard(job, why, unix_now_ms()) {
            tracing::error!(event_id = %job.event_id, target = %job.target, "cannot drop a job: {e}");
        }
    }

    /// Records an attempt's outcome (metrics, status, history) and settles the job: complete,
    /// retry, fail over or dead-letter. A store error leaves the lease, re-offered at next start.
    fn settle(
        &self,
        config: &Config,
        state: &TargetState,
        name: &str,
        job: Job,
        result: Result<u16, Failure>,
        latency: Duration,
    ) {
        let store = &self.store;
        let latency_ms = latency.as_millis() as u64;
        let now = unix_now_ms();
        self.metrics
            .delivery_latency
            .get_or_create(&TargetLabel { target: name.to_owned() })
            .observe(latency.as_secs_f64());
        let (event_id, attempt) = (job.event_id.clone(), job.attempt);
        let note = |f: &dyn Fn(&mut TargetStatus)| f(&mut state.last.lock().unwrap_or_else(|p| p.into_inner()));
        let settled = match result {
            Ok(status) => {
                tracing::info!(%event_id, target = %name, attempt, status, latency_ms, "delivered");
                self.metrics.delivery(name, "delivered");
                note(&|s| s.last_success_ms = Some(now));
                store.log(&job, Outcome::Delivered { status, latency_ms }, now).and_then(|()| store.complete(&job)).map(
                    |cancelled| {
                        if cancelled > 0 {
                            tracing::info!(%event_id, cancelled, "group delivered; other members' pending jobs cancelled");
                        }
                    },
                )
            }
            Err(failure) => {
                tracing::warn!(%event_id, target = %name, attempt, latency_ms, "delivery failed: {}", failure.error);
                note(&|s| {
                    s.last_failure_ms = Some(now);
                    s.last_error = Some(failure.error.clone());
                });
                self.settle_failure(config, name, job, failure, latency_ms, now)
            }
        };
        if let Err(e) = settled {
            // The lease stays; the job is re-offered at the next start.
            tracing::error!(%event_id, target = %name, "cannot record the delivery outcome: {e}");
        }
    }

    fn settle_failure(
        &self,
        config: &Config,
        name: &str,
        job: Job,
        failure: Failure,
        latency_ms: u64,
        now: u64,
    ) -> fanout_store::Result<()> {
        let store = &self.store;
        let event_id = job.event_id.clone();
        let step = next_step(job, failure.error.clone(), config, now);
        let (job, retry_at_ms) = match &step {
            Step::Retry(j) => (j, Some(j.due_at_ms)),
            Step::Dead(j, _) => (j, None),
        };
        let outcome = Outcome::Failed { status: failure.status, latency_ms, error: failure.error, retry_at_ms };
        // Logged under the target that was tried (a failover step has already moved the job on).
        let tried = Job { target: name.to_owned(), ..job.clone() };
        store.log(&tried, outcome, now)?;
        match step {
            Step::Retry(job) => {
                self.metrics.delivery(name, "failed");
                let (target, due_in) = (job.target.clone(), job.due_at_ms.saturating_sub(now));
                if store.retry(&job)? == Settled::CancelledByGroup {
                    tracing::info!(%event_id, "not retried: its group was delivered by another member");
                } else if target != name {
                    tracing::info!(%event_id, next = %target, "failing over to the next group member");
                    self.wake(&target);
                } else {
                    tracing::debug!(%event_id, due_in_ms = due_in, "retry scheduled");
                }
            }
            Step::Dead(job, reason) => {
                self.metrics.delivery(name, "dead_lettered");
                if store.dead_letter(&job, &reason, now)? == Settled::Done {
                    tracing::warn!(%event_id, target = %job.target, "dead-lettered: {reason}");
                }
            }
        }
        Ok(())
    }
}

/// A failed attempt: the HTTP status if the target answered, and what went wrong.
pub struct Failure {
    pub status: Option<u16>,
    pub error: String,
}

/// The headers every delivery of `job` carries, pushed or pulled: a fresh `Stripe-Signature` over
/// `body` with the target's own secret, and fanout's own (which event, which attempt, which rule,
/// whether a replay) for people reading their app's logs.
pub fn delivery_headers(target: &Target, job: &Job, body: &[u8]) -> Vec<(&'static str, HeaderValue)> {
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

/// One attempt: POST the original body with a fresh signature; Ok(status) only for 2xx.
async fn send(client: &HttpClient, target: &Target, url: &http::Uri, job: &Job, body: Bytes) -> Result<u16, Failure> {
    let fail = |status: Option<u16>, error: String| Failure { status, error };
    let mut req = Request::post(url.clone())
        .body(Full::new(body.clone()))
        .map_err(|e| fail(None, format!("cannot build the request: {e}")))?;
    for (name, value) in delivery_headers(target, job, &body) {
        req.headers_mut().insert(name, value);
    }
    post(client, req, target.timeout).await
}

/// One POST of a delivery, pushed by a worker or forwarded by `fanout listen`: Ok(status) only
/// for a 2xx within `timeout`; otherwise the status (if any) and what went wrong.
pub async fn post(client: &HttpClient, req: Request<Full<Bytes>>, timeout: Duration) -> Result<u16, Failure> {
    let fail = |status: Option<u16>, error: String| Failure { status, error };
    let exchange = async {
        let res = client.request(req).await.map_err(|e| fail(None, tls::error_chain(&e)))?;
        let status = res.status();
        // Read (a bounded part of) the answer so the connection can be reused, and for the error.
        let text = match Limited::new(res.into_body(), 4096).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect::<String>(),
            Err(_) => String::new(),
        };
        Ok::<_, Failure>((status, text))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(fail(None, format!("timed out after {timeout:?}"))),
        Ok(Err(e)) => Err(e),
        Ok(Ok((status, _))) if status.is_success() => Ok(status.as_u16()),
        Ok(Ok((status, _))) if status.is_redirection() => Err(fail(
            Some(status.as_u16()),
            format!("HTTP {status}: redirects are not followed; point the target at the final URL"),
        )),
        Ok(Ok((status, text))) => Err(fail(Some(status.as_u16()), format!("HTTP {status}: {text}"))),
    }
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
    refresh_failover_members(&mut job, config);
    // The policy of the target that failed; for a failover group whose member was just removed,
    // its first member's.
    let policy_target = config.target(&job.target).or_else(|| match &job.delivery {
        Delivery::Failover { members, .. } => members.first().and_then(|m| config.target(m)),
        _ => None,
    });
    let Some(target) = policy_target else {
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

/// A failover job walks its group's members as configured now, not as they were at ingest: a
/// reload may have replaced a member. If the member it just tried is no longer in the group, the
/// walk goes on from the start.
fn refresh_failover_members(job: &mut Job, config: &Config) {
    let Delivery::Failover { group, members, member } = &mut job.delivery else { return };
    let Some(DestinationKind::Group { members: now, .. }) =
        config.router.destinations.iter().find(|d| &d.name == group).map(|d| &d.kind)
    else {
        return;
    };
    let now: Vec<String> = now.iter().map(|&i| config.targets[i].name.clone()).collect();
    if now == *members {
        return;
    }
    match now.iter().position(|m| *m == job.target) {
        Some(i) => *member = i,
        // Not a member any more: as if the last member had just failed, so the next is the first.
        None => *member = now.len() - 1,
    }
    *members = now;
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

mod inbox;

use inbox::InboxState;
pub use inbox::{InboxError, InboxStatus};

#[cfg(test)]
mod tests;
