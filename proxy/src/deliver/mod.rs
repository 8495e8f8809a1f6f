//! The deliver stage: one worker per target drains that target's queue in the store, so a slow or
//! dead target only ever holds up itself. Each attempt sends the original body with a fresh
//! `Stripe-Signature` made with the target's own secret; the outcome is settled back into the store
//! (`complete`, `retry` with backoff and jitter, or `dead_letter`).
//!
//! Rooms: this file is the registry (one worker per target, started and stopped as reloads
//! change the targets; live status; pause); `push.rs` the worker that POSTs, `pull.rs` an inbox's
//! queue drained by `fanout listen`, `attempt.rs` what both share (load, headers, settle),
//! `policy.rs` the retry policy and rate bucket, `breaker.rs` the circuit breaker.
//!
//! Invariant: deliver/ knows no wire format; it hands domain values to the API layer above.
//! Invariant: a job leaves the store only when its target answered 2xx, its `any` group was
//! delivered by another member, or it is dead-lettered; everything else goes back on the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fanout_store::engine::Engine;
use fanout_store::{Delivery, NewJob, Wake};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::unix_now_ms;
use crate::config::LiveConfig;
use crate::http::client::Clients;
use crate::metrics::Metrics;

/// The delivery workers, one per configured target, and their live state. Ingress wakes them,
/// the admin API reads and pauses them, a config reload adds and removes them.
#[derive(Clone)]
pub struct Deliveries {
    shared: Arc<Shared>,
}

struct Shared {
    live: LiveConfig,
    store: Engine,
    metrics: Arc<Metrics>,
    workers: RwLock<HashMap<String, Arc<TargetState>>>,
    clients: RwLock<Clients>,
    /// No new leases once cancelled.
    shutdown: CancellationToken,
    /// Attempts still in flight are cut off (and their jobs leased back) once cancelled.
    abort: CancellationToken,
    /// Worker loops and attempts, so a stop can wait for them.
    tasks: TaskTracker,
    /// Targets a reload of this process removed. On a shared store (Postgres) only their queues
    /// are swept: another replica, on a newer config, may be delivering a target this one does
    /// not know yet.
    removed_here: Mutex<std::collections::HashSet<String>>,
}

/// Whether a target is paused. Until its task has read the stored answer it is held, but not
/// reported paused; an operator's pause or resume in the meantime wins over the stored answer.
#[derive(Default)]
pub(crate) struct Pause(std::sync::atomic::AtomicU8);

impl Pause {
    const UNKNOWN: u8 = 0;
    const PAUSED: u8 = 1;
    const RUNNING: u8 = 2;

    /// Nothing is to be leased: paused, or not known yet.
    pub(crate) fn holds(&self) -> bool {
        self.0.load(Ordering::SeqCst) != Self::RUNNING
    }

    fn is_paused(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::PAUSED
    }

    /// An operator's pause or resume.
    fn set(&self, paused: bool) {
        self.0.store(if paused { Self::PAUSED } else { Self::RUNNING }, Ordering::SeqCst);
    }

    /// The stored answer, unless an operator answered first.
    fn load(&self, paused: bool) {
        let value = if paused { Self::PAUSED } else { Self::RUNNING };
        let _ = self.0.compare_exchange(Self::UNKNOWN, value, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// What the admin API shows for a target besides its queue.
#[derive(Clone, Debug, Default)]
pub struct TargetStatus {
    pub paused: bool,
    /// For an inbox: whether a listener is connected.
    pub inbox: Option<Presence>,
    pub in_flight: usize,
    pub last_success_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub last_error: Option<String>,
    pub breaker: BreakerStatus,
}

/// A target's circuit breaker as shown (wall-clock times).
#[derive(Clone, Debug)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// Failed attempts in a row.
    pub failures: u32,
    pub open_since_ms: Option<u64>,
    pub next_probe_ms: Option<u64>,
}

impl Default for BreakerStatus {
    fn default() -> Self {
        BreakerStatus { state: BreakerState::Closed, failures: 0, open_since_ms: None, next_probe_ms: None }
    }
}

struct TargetState {
    wake: Notify,
    paused: Pause,
    in_flight: AtomicUsize,
    last: Mutex<TargetStatus>,
    /// Stops this worker alone (its target was removed from the config).
    stop: CancellationToken,
    /// Set for an inbox target: its offers and listeners.
    inbox: Option<Arc<InboxState>>,
    /// The target's `rate` as it is being spent (none without one); made again when it changes.
    bucket: Mutex<Option<Bucket>>,
    breaker: Mutex<Breaker>,
    /// Whether the sweep of a held queue runs (one per target; see `held.rs`).
    sweeping: std::sync::atomic::AtomicBool,
}

impl TargetState {
    /// How many of `want` attempts the target's rate lets start now, or how long until one may.
    fn allowance(&self, rate: Option<crate::config::Rate>, want: usize) -> Result<usize, Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rate) = rate else {
            *bucket = None;
            return Ok(want);
        };
        let now = crate::clock::mono_ms();
        let bucket = match bucket.as_mut() {
            Some(b) if b.rate() == rate => b,
            _ => bucket.insert(Bucket::new(rate, now)),
        };
        match bucket.available(now).min(want) {
            0 => Err(bucket.wait(now).max(Duration::from_millis(1))),
            n => Ok(n),
        }
    }

    /// `n` attempts started: their tokens are spent.
    fn spend(&self, n: usize) {
        if let Some(bucket) = self.bucket.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            bucket.take(n);
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn breaker_status(&self) -> BreakerStatus {
        let breaker = self.breaker();
        // Shown on the wall clock; the breaker itself runs on the monotonic one.
        let (mono, unix) = (crate::clock::mono_ms(), unix_now_ms());
        let wall = |at: u64| (unix + at).saturating_sub(mono);
        BreakerStatus {
            state: breaker.state(),
            failures: breaker.failures(),
            open_since_ms: breaker.open_since().map(|(since, _)| wall(since)),
            next_probe_ms: breaker.open_since().map(|(_, probe)| wall(probe)),
        }
    }

    fn is_open(&self) -> bool {
        self.breaker().state() != BreakerState::Closed
    }
}

/// How long past its attempt's own bound (the target's timeout, an offer's deadline) a lease is
/// held: time to settle it. A lease past that is taken back by [`Deliveries::reclaim`] and the job
/// attempted again; it happens only when settling failed (a store error) or hung.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How often expired leases are looked for, and how many are handed back per look.
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
const RECLAIM_BATCH: usize = 256;

/// Jobs moved per store call when a removed target's queue goes to the dead letters.
const SWEEP_BATCH: usize = 500;

/// How the workers are stopped and where they run their background work.
pub struct Lifecycle {
    /// No new leases once cancelled.
    pub shutdown: CancellationToken,
    /// Attempts still in flight are cut off (and their jobs leased back) once cancelled.
    pub abort: CancellationToken,
    /// Worker loops and attempts, so a stop can wait for them.
    pub tasks: TaskTracker,
}

impl Deliveries {
    /// Starts one worker per target in the live config.
    pub fn start(
        live: LiveConfig,
        store: Engine,
        clients: Clients,
        metrics: Arc<Metrics>,
        life: Lifecycle,
    ) -> Deliveries {
        let Lifecycle { shutdown, abort, tasks } = life;
        let shared = Shared {
            live,
            store,
            metrics,
            workers: RwLock::default(),
            clients: RwLock::new(clients),
            shutdown,
            abort,
            tasks,
            removed_here: Mutex::default(),
        };
        let deliveries = Deliveries { shared: Arc::new(shared) };
        deliveries.reconcile();
        deliveries.shared.tasks.spawn(deliveries.clone().reclaim());
        if let Some(wakes) = deliveries.shared.store.wakes() {
            deliveries.shared.tasks.spawn(deliveries.clone().hear(wakes));
        }
        if deliveries.shared.store.is_shared() {
            deliveries.shared.tasks.spawn(pull::share_presence(deliveries.shared.clone()));
        }
        deliveries
    }

    /// Wakes the workers other replicas announce work for (a shared store): an event ingested
    /// on another replica, a job it re-queued. Each wakes only this replica's worker; the store's
    /// leases decide who takes the job.
    async fn hear(self, mut wakes: tokio::sync::mpsc::UnboundedReceiver<Wake>) {
        loop {
            let wake = tokio::select! {
                _ = self.shared.shutdown.cancelled() => break,
                wake = wakes.recv() => wake,
            };
            match wake {
                Some(Wake::Target(target)) => self.shared.wake_here(&target),
                Some(Wake::All) => {
                    let names: Vec<String> =
                        self.shared.workers.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
                    names.iter().for_each(|n| self.shared.wake_here(n));
                }
                None => break,
            }
        }
    }

    /// Hands back to their queues the jobs whose lease expired (an outcome that could not be
    /// recorded, an attempt that hung) and wakes their workers: a stranded job comes back on its
    /// own, without a restart.
    async fn reclaim(self) {
        loop {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => break,
                _ = tokio::time::sleep(RECLAIM_EVERY) => {}
            }
            let reclaimed = self.shared.store.reclaim_expired_leases(RECLAIM_BATCH).await.unwrap_or_else(|e| {
                tracing::error!("cannot look for expired leases: {e}");
                Vec::new()
            });
            for job in reclaimed {
                tracing::warn!(event_id = %job.event_id, target = %job.target, "lease expired: queued again");
                self.shared.wake(&job.target);
            }
        }
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
        self.shared.removed_here.lock().unwrap_or_else(|p| p.into_inner()).extend(removed.iter().cloned());
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
            let state = Arc::new(TargetState {
                wake: Notify::new(),
                paused: Pause::default(),
                in_flight: AtomicUsize::new(0),
                last: Mutex::default(),
                stop: self.shared.shutdown.child_token(),
                inbox: target.is_inbox().then(|| Arc::new(InboxState::new(unix_now_ms()))),
                bucket: Mutex::default(),
                breaker: Mutex::default(),
                sweeping: Default::default(),
            });
            workers.insert(target.name.clone(), state.clone());
            match state.inbox.clone() {
                Some(inbox) => {
                    self.shared.tasks.spawn(pull::maintain(self.shared.clone(), target.name.clone(), state, inbox));
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
            // Tracked, so a stop waits for it and nothing is written after the final flush.
            let this = self.clone();
            self.shared.tasks.spawn(async move { this.sweep_orphan_queues().await });
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
        let counts = match self.shared.store.counts().await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::error!("cannot count the queues: {e}");
                return;
            }
        };
        let removed_here = self.shared.removed_here.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ours = |name: &String| !self.shared.store.is_shared() || removed_here.contains(name);
        for (name, _) in counts.queued.iter().filter(|(n, q)| **q > 0 && config.target(n).is_none() && ours(n)) {
            let reason = format!(
                "target {name:?} was removed (from routing.yaml, or its inbox deleted) before this job was delivered"
            );
            loop {
                if self.shared.shutdown.is_cancelled() {
                    return;
                }
                match self.shared.store.dead_letter_queue(name, &reason, unix_now_ms(), SWEEP_BATCH).await {
                    Ok((_, true)) => {}
                    Ok((moved, false)) => {
                        if moved > 0 {
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
    pub async fn set_paused(&self, target: &str, paused: bool) -> fanout_store::Result<bool> {
        let state = self.shared.workers.read().unwrap_or_else(|p| p.into_inner()).get(target).cloned();
        let Some(state) = state else {
            return Ok(false);
        };
        self.shared.store.set_paused(target, paused).await?;
        state.paused.set(paused);
        self.shared.wake(target);
        tracing::info!(target, paused, "target {}", if paused { "paused" } else { "resumed" });
        Ok(true)
    }

    /// Closes a target's circuit breaker by hand: its queue drains again at once (and if the
    /// target is still down, the breaker opens again after its failures). `None`: no such target.
    pub fn reset_breaker(&self, target: &str) -> Option<bool> {
        let state = self.shared.workers.read().unwrap_or_else(|p| p.into_inner()).get(target).cloned()?;
        let was_open = state.breaker().reset();
        if was_open {
            self.shared.breaker_closed(target, "by an operator");
        }
        Some(was_open)
    }

    /// A failover job planned onto a member whose breaker is open starts at the next member
    /// whose breaker is closed (none: where it was planned, held there).
    pub fn skip_open_members(&self, jobs: &mut [NewJob]) {
        for job in jobs {
            let Delivery::Failover { members, member, .. } = &mut job.delivery else { continue };
            if let Some(next) = first_closed(members, *member, &|m| self.shared.is_open(m)) {
                *member = next;
                job.target = members[next].clone();
            }
        }
    }

    /// Live state of each running worker.
    pub fn status(&self) -> HashMap<String, TargetStatus> {
        let workers = self.shared.workers.read().unwrap_or_else(|p| p.into_inner());
        workers
            .iter()
            .map(|(name, state)| {
                let mut status = state.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                status.paused = state.paused.is_paused();
                status.inbox = state.inbox.as_ref().map(|i| i.status(unix_now_ms()));
                status.in_flight = state.in_flight.load(Ordering::SeqCst);
                status.breaker = state.breaker_status();
                (name.clone(), status)
            })
            .collect()
    }
}

impl Shared {
    /// Whether `target`'s breaker is open (a target with no worker here: no).
    fn is_open(&self, target: &str) -> bool {
        self.workers.read().unwrap_or_else(|p| p.into_inner()).get(target).is_some_and(|s| s.is_open())
    }

    /// Reads whether an operator paused `name` (a worker's first step: until then it is held).
    async fn load_paused(&self, name: &str, state: &TargetState) {
        let paused = self.store.is_paused(name).await.unwrap_or_else(|e| {
            tracing::error!(target = %name, "cannot read whether the target is paused: {e}");
            false
        });
        state.paused.load(paused);
    }

    /// New or re-queued work for `target`: its worker looks at its queue, or its inbox's waiting
    /// polls do, here and on the other replicas of a shared store.
    fn wake(&self, target: &str) {
        self.wake_here(target);
        self.store.announce(target);
    }

    fn wake_here(&self, target: &str) {
        if let Some(state) = self.workers.read().unwrap_or_else(|p| p.into_inner()).get(target) {
            match &state.inbox {
                Some(inbox) => inbox.arrived.notify_waiters(),
                None => state.wake.notify_one(),
            }
        }
    }
}

mod attempt;
mod breaker;
mod held;
mod policy;
mod pull;
mod push;

use breaker::Breaker;
pub use breaker::BreakerState;
use policy::Bucket;
pub use policy::{first_closed, next_step, retry_delay, Step};
use pull::InboxState;
pub use pull::{Ask, InboxError, LocalOutcome, Offer, Presence, Wanted};
use push::Worker;
