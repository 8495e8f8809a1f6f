//! The deliver stage for inbox targets: pull instead of push. A developer's laptop behind NAT
//! cannot be posted to, so its events wait in the inbox's queue like any target's, and a
//! `fanout listen` fetches them (long poll), forwards each to the local app, and answers for it.
//! An offered job stays leased until that answer; one not answered in time is a failed attempt
//! and is offered again, so a listener that dies mid-event loses nothing.
//!
//! Invariant: an inbox job leaves the store exactly as a pushed one does — delivered (the local
//! app answered 2xx), dead-lettered, or moved to its route's offline fallback — and one job is
//! offered to one listener at a time (leasing takes it out of the queue).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout_store::{Delivery, Job, JobId, PresenceBeat, QueueCursor, RemotePresence, Sweep};
use http::HeaderValue;

use super::attempt::{delivery_headers, Loaded};
use super::policy::too_old;
use super::{Deliveries, Shared, TargetState};
use crate::clock::{mono_ms, unix_now_ms};
use crate::config::{Config, Endpoint, Target};
use crate::http::client::Failure;

/// A listener counts as connected while it polls or holds offered events, and this long after:
/// it polls again as soon as it has answered for a batch.
const PRESENCE_WINDOW_MS: u64 = 5_000;

/// Queued jobs looked at per maintenance pass (expiry, offline fallback), each pass going on
/// where the last stopped.
const SWEEP_SLICE: usize = 1000;

/// How often expired offers and offline inboxes are looked at.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// How long an event a listener's `--events` does not want waits before it is looked at again
/// (by another listener, or this one's next poll): the listeners' polls go on to the events
/// behind it meanwhile.
pub const NOT_WANTED_AGAIN: Duration = Duration::from_secs(5);
const NOT_WANTED_PAUSE: Duration = Duration::from_millis(200);

/// What one poll asks for: up to `max` events of the types `wanted`, with `token`, checked
/// again each time the poll looks (a rotation ends it).
pub struct Ask<'a> {
    pub max: usize,
    pub wanted: &'a Wanted,
    pub token: &'a str,
}

/// The event types a listener takes (`fanout listen --events 'invoice.*,customer.*'`): glob
/// patterns; none takes every type. The others stay in the inbox, for a listener that takes them.
#[derive(Debug, Default, Clone)]
pub struct Wanted(Vec<wildmatch::WildMatch>);

impl Wanted {
    pub fn new(patterns: &[String]) -> Wanted {
        Wanted(patterns.iter().map(|p| wildmatch::WildMatch::new(p)).collect())
    }

    fn takes(&self, event_type: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.matches(event_type))
    }
}

/// An inbox's live state: what is offered and who is listening. In memory: after a restart,
/// offers are leases the store hands back, and presence starts as "offline since now".
pub struct InboxState {
    offers: Mutex<HashMap<JobId, Held>>,
    presence: Mutex<Attendance>,
    /// Its listeners on the other replicas (a shared store), as last heard, and when that was
    /// (`clock::mono_ms`; 0: not yet).
    elsewhere: Mutex<RemotePresence>,
    heard_ms: std::sync::atomic::AtomicU64,
    /// Woken when jobs arrive, so waiting polls answer at once.
    pub(super) arrived: tokio::sync::Notify,
}

/// An offer waiting for its answer.
struct Held {
    job: Job,
    /// On the monotonic clock (`clock::mono_ms`).
    deadline_ms: u64,
    offered: Instant,
}

/// One event handed to a listener: forward `body` with `headers` (a fresh `Stripe-Signature` made
/// with the inbox's secret among them), then answer for `id`.
pub struct Offer {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub body: String,
}

/// What the local app made of an offered event, as its listener reports it.
pub struct LocalOutcome {
    /// The local app's HTTP status; none if it could not be reached.
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
}

struct Attendance {
    polling: usize,
    /// Last poll or answer; none since this process started.
    last_seen_ms: Option<u64>,
    started_ms: u64,
    /// Listener id (one per `fanout listen` process) → last seen.
    listeners: HashMap<String, u64>,
}

/// Whether anyone listens to an inbox.
#[derive(Clone, Debug, Default)]
pub struct Presence {
    pub online: bool,
    pub listeners: usize,
    pub last_seen_ms: Option<u64>,
    pub offered: usize,
}

impl InboxState {
    pub(super) fn new(now_ms: u64) -> InboxState {
        InboxState {
            offers: Mutex::default(),
            presence: Mutex::new(Attendance {
                polling: 0,
                last_seen_ms: None,
                started_ms: now_ms,
                listeners: HashMap::new(),
            }),
            elsewhere: Mutex::default(),
            heard_ms: std::sync::atomic::AtomicU64::new(0),
            arrived: tokio::sync::Notify::new(),
        }
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, Attendance> {
        self.presence.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn offers(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Held>> {
        self.offers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen(&self, listener: &str, now_ms: u64) {
        let mut p = self.presence();
        p.last_seen_ms = Some(p.last_seen_ms.unwrap_or(0).max(now_ms));
        p.listeners.insert(listener.to_owned(), now_ms);
        p.listeners.retain(|_, at| now_ms.saturating_sub(*at) < PRESENCE_WINDOW_MS);
    }

    fn elsewhere(&self) -> std::sync::MutexGuard<'_, RemotePresence> {
        self.elsewhere.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a listener polls this replica, holds its offers, or did a moment ago.
    fn online_here(&self, now_ms: u64) -> bool {
        let p = self.presence();
        p.polling > 0
            || p.last_seen_ms.is_some_and(|at| now_ms.saturating_sub(at) < PRESENCE_WINDOW_MS)
            || !self.offers().is_empty()
    }

    fn online(&self, now_ms: u64) -> bool {
        self.online_here(now_ms) || self.elsewhere().online
    }

    /// Whether the other replicas' word is recent (`mono` on `clock::mono_ms`): until it is (a
    /// replica just started, the database unreachable), nobody can say the inbox is offline.
    fn heard_lately(&self, mono: u64) -> bool {
        let heard = self.heard_ms.load(std::sync::atomic::Ordering::SeqCst);
        heard > 0 && mono.saturating_sub(heard) < fanout_store::PRESENCE_FRESH_MS
    }

    /// How long nobody has listened, here or on another replica (zero while someone does); a
    /// restart counts as the start of it, so a fallback's grace period is never cut short by one.
    fn offline_for_ms(&self, now_ms: u64) -> u64 {
        if self.online(now_ms) {
            return 0;
        }
        let seen_elsewhere = self.elsewhere().last_seen_ms;
        let p = self.presence();
        now_ms.saturating_sub(p.last_seen_ms.unwrap_or(p.started_ms).max(seen_elsewhere))
    }

    fn listeners_here(&self, now_ms: u64) -> usize {
        let p = self.presence();
        p.listeners.values().filter(|at| now_ms.saturating_sub(**at) < PRESENCE_WINDOW_MS).count()
    }

    /// Every replica's listeners and offers, as this one last heard of the others.
    pub fn status(&self, now_ms: u64) -> Presence {
        let online = self.online(now_ms);
        let elsewhere = self.elsewhere().clone();
        let listeners = self.listeners_here(now_ms) + elsewhere.listeners;
        let last_seen_ms = self
            .presence()
            .last_seen_ms
            .into_iter()
            .chain((elsewhere.last_seen_ms > 0).then_some(elsewhere.last_seen_ms))
            .max();
        Presence { online, listeners, last_seen_ms, offered: self.offers().len() + elsewhere.offered }
    }
}

/// How often a replica on a shared store says which inboxes have listeners here, and hears the
/// others: within a second or two every replica shows a listener wherever it polls, and an
/// inbox's offline fallback waits for every replica's listeners, not one's.
const SHARE_PRESENCE_EVERY: Duration = Duration::from_secs(1);

/// A shared store's presence loop (see [`SHARE_PRESENCE_EVERY`]). While the store cannot be
/// reached, the other replicas' word grows stale, and a stale word moves nothing to a fallback.
pub(super) async fn share_presence(shared: Arc<Shared>) {
    let mut failing = false;
    loop {
        let now = unix_now_ms();
        let inboxes: Vec<(String, Arc<InboxState>)> = {
            let workers = shared.workers.read().unwrap_or_else(|p| p.into_inner());
            workers.iter().filter_map(|(n, s)| Some((n.clone(), s.inbox.clone()?))).collect()
        };
        if inboxes.is_empty() {
            // No inbox here: nothing to say, and nothing to hear about.
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                _ = tokio::time::sleep(SHARE_PRESENCE_EVERY) => continue,
            }
        }
        let beats: Vec<PresenceBeat> = inboxes
            .iter()
            .filter(|(_, inbox)| inbox.online_here(now))
            .map(|(name, inbox)| PresenceBeat {
                inbox: name.clone(),
                listeners: inbox.listeners_here(now),
                offered: inbox.offers().len(),
            })
            .collect();
        match shared.store.share_presence(&beats).await {
            Ok(remote) => {
                failing = false;
                let mut heard: HashMap<String, RemotePresence> =
                    remote.into_iter().map(|r| (r.inbox.clone(), r)).collect();
                let at = mono_ms().max(1);
                for (name, inbox) in &inboxes {
                    *inbox.elsewhere() = heard.remove(name).unwrap_or_default();
                    inbox.heard_ms.store(at, std::sync::atomic::Ordering::SeqCst);
                }
            }
            // What was heard last stays shown, but grows stale: no offline fallback meanwhile.
            Err(e) => {
                if !failing {
                    tracing::error!("cannot share which inboxes have listeners with the other replicas: {e}");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep(SHARE_PRESENCE_EVERY) => {}
        }
    }
}

/// A poll in progress: the inbox counts as connected while it lasts.
struct Polling<'a> {
    inbox: &'a InboxState,
    listener: &'a str,
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.inbox.presence().polling -= 1;
        self.inbox.seen(self.listener, unix_now_ms());
    }
}

/// Why a poll or an answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("{0:?} is not an inbox")]
    NotAnInbox(String),
    /// The token the poll came with no longer opens the inbox (rotated, deleted).
    #[error("the token no longer opens {0:?}")]
    Revoked(String),
    #[error("the store failed: {0}")]
    Store(#[from] fanout_store::StoreError),
}

impl Deliveries {
    fn inbox(&self, name: &str) -> Result<(Arc<TargetState>, Arc<InboxState>), InboxError> {
        let workers = self.shared.workers.read().unwrap_or_else(|p| p.into_inner());
        let state = workers.get(name).cloned().ok_or_else(|| InboxError::NotAnInbox(name.to_owned()))?;
        let inbox = state.inbox.clone().ok_or_else(|| InboxError::NotAnInbox(name.to_owned()))?;
        Ok((state, inbox))
    }

    /// Live state of an inbox, for the admin API and the listen protocol.
    pub fn inbox_status(&self, name: &str) -> Option<Presence> {
        self.inbox(name).ok().map(|(_, inbox)| inbox.status(unix_now_ms()))
    }

    /// Up to `max` events for the inbox's listener, re-signed with the inbox's secret; waits up to
    /// `wait` for one to arrive, and answers empty when `stop` is cancelled (a shutdown).
    pub async fn poll(
        &self,
        name: &str,
        listener: &str,
        ask: Ask<'_>,
        wait: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<Offer>, InboxError> {
        let (state, inbox) = self.inbox(name)?;
        inbox.presence().polling += 1;
        inbox.seen(listener, unix_now_ms());
        let _polling = Polling { inbox: &inbox, listener };
        let until = Instant::now() + wait;
        loop {
            let arrived = inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let config = self.shared.live.load_full();
            if config.target(name).filter(|t| t.is_inbox()).is_none() {
                return Err(InboxError::NotAnInbox(name.to_owned()));
            }
            // A rotation mid-poll: what the old token asked for is not handed out.
            let opens = |t: &Target| matches!(&t.endpoint, Endpoint::Inbox { token } if token.matches(ask.token));
            if !config.target(name).is_some_and(opens) {
                return Err(InboxError::Revoked(name.to_owned()));
            }
            let (max, wanted) = (ask.max, ask.wanted);
            let mut next = until.saturating_duration_since(Instant::now());
            // Stopping: nothing more is handed out that could not be answered for.
            if stop.is_cancelled() || state.stop.is_cancelled() {
                return Ok(Vec::new());
            }
            // An inbox's `rate` is the rate events are offered at: held by it, the poll asks the
            // store nothing until the next token.
            let rate = config.target(name).and_then(|t| t.rate);
            match state.allowance(rate, max) {
                Err(until_a_token) => next = next.min(until_a_token),
                Ok(_) if state.paused.holds() => {}
                Ok(allowed) => {
                    let (offered, put_back) = self.offer(&config, (&state, &inbox), name, allowed, wanted).await?;
                    if !offered.is_empty() {
                        return Ok(offered);
                    }
                    if let Some(due) = self.shared.store.next_due_ms(name).await? {
                        next = next.min(Duration::from_millis(due.saturating_sub(unix_now_ms())));
                    }
                    if put_back {
                        // A batch this listener did not want: the next one after a pause, so a
                        // filtered listener walks a backlog of others' events at a bounded pace.
                        next = next.max(NOT_WANTED_PAUSE);
                    }
                }
            }
            if next.is_zero() && Instant::now() >= until {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(Vec::new()),
                _ = state.stop.cancelled() => return Ok(Vec::new()),
                _ = arrived => {}
                // Bounded, so a due retry or a wall-clock jump is noticed.
                _ = tokio::time::sleep(next.min(MAINTAIN_EVERY).max(Duration::from_millis(10))) => {}
            }
            if Instant::now() >= until {
                return Ok(Vec::new());
            }
        }
    }

    /// Leases due jobs and turns them into offers. Jobs past `max_age` are dead-lettered here
    /// rather than handed to a listener that reconnected days later; jobs the listener's `wanted`
    /// does not take go back (the flag: some did).
    async fn offer(
        &self,
        config: &Config,
        (state, inbox): (&TargetState, &InboxState),
        name: &str,
        max: usize,
        wanted: &Wanted,
    ) -> Result<(Vec<Offer>, bool), InboxError> {
        let Some(target) = config.target(name) else { return Ok((Vec::new(), false)) };
        let now = unix_now_ms();
        // Held until the last offer's deadline (below), and a margin for its answer to be settled.
        let held_for = target.timeout.saturating_mul(max as u32 + 1) + super::LEASE_MARGIN;
        let jobs = self.shared.store.lease_due(name, now, max, held_for).await?;
        let (jobs_leased, mut put_back) = (jobs.len(), 0);
        let (mut offered, mut ready) = (Vec::new(), Vec::new());
        for job in jobs {
            if too_old(&job, target.retry.max_age, now) {
                // On a store error the job stays leased until its lease expires; the
                // rest of the batch goes on.
                let reason = expired_reason(target.retry.max_age);
                match self.shared.store.dead_letter(&job, &reason, now).await {
                    Ok(_) => tracing::warn!(event_id = %job.event_id, target = %name, "dead-lettered: {reason}"),
                    Err(e) => {
                        tracing::error!(event_id = %job.event_id, target = %name, "cannot dead-letter a job: {e}")
                    }
                }
                continue;
            }
            match self.shared.load_event(config, job).await {
                Loaded::Ready(mut job, event) if !wanted.takes(&event.event_type) => {
                    // Not for this listener: back in the inbox, not an attempt.
                    put_back += 1;
                    job.due_at_ms = now + NOT_WANTED_AGAIN.as_millis() as u64;
                    if let Err(e) = self.shared.store.retry(&job, now).await {
                        tracing::error!(event_id = %job.event_id, target = %name, "cannot put back a job: {e}");
                    }
                }
                Loaded::Ready(mut job, event) => {
                    job.attempt += 1;
                    ready.push((job, event));
                }
                Loaded::Unreadable(mut job, error) => {
                    job.attempt += 1;
                    let failed = Err(Failure { status: None, error });
                    let _ = self.shared.settle(config, state, name, job, failed, Duration::ZERO).await;
                }
                Loaded::Settled => {}
            }
        }
        // What was put back was not offered: it spends none of the inbox's rate.
        state.spend(jobs_leased.saturating_sub(put_back));
        // The listener forwards a batch one event at a time, each within the target's timeout;
        // one more timeout covers the round trips. Unanswered by then: a failed attempt.
        let allowed = target.timeout.saturating_mul(ready.len() as u32 + 1);
        // On the monotonic clock, like the lease: a wall-clock step expires no offer.
        let deadline = mono_ms().saturating_add(allowed.as_millis() as u64);
        let mut offers = inbox.offers();
        for (job, event) in ready {
            // Bodies were parsed as JSON at ingest, so they are UTF-8; sign exactly what is sent.
            let body = String::from_utf8_lossy(&event.body).into_owned();
            offered.push(Offer {
                id: offer_id(&job),
                event_id: job.event_id.clone(),
                event_type: event.event_type.clone(),
                attempt: job.attempt,
                headers: delivery_headers(target, &job, body.as_bytes()),
                body,
            });
            offers.insert(job.id, Held { job, deadline_ms: deadline, offered: Instant::now() });
        }
        Ok((offered, put_back > 0))
    }

    /// A listener's answer for offer `id`: the local app's status, or why it could not be
    /// reached. `Ok(false)`: nothing of this inbox is waiting for that answer (it expired and
    /// will be offered again, or the id is not this inbox's). An error: the outcome could not be
    /// recorded, and the event will be offered again once its lease expires.
    pub async fn answer(&self, name: &str, listener: &str, id: &str, answer: LocalOutcome) -> Result<bool, InboxError> {
        let (state, inbox) = self.inbox(name)?;
        let now = unix_now_ms();
        inbox.seen(listener, now);
        // An answer names the attempt it is for: a late answer to an offer that expired (and was
        // offered again, maybe to another listener) must not settle the new one.
        let Some(offer) = take_offer(&inbox, id) else {
            return Ok(false);
        };
        let result = match answer.status {
            Some(status) if (200..300).contains(&status) => Ok(status),
            status => Err(Failure {
                status,
                error: match (&answer.error, status) {
                    (Some(e), _) => format!("local app: {e}"),
                    (None, Some(s)) => format!("local app answered HTTP {s}"),
                    (None, None) => "local app: no answer".to_owned(),
                },
            }),
        };
        let config = self.shared.live.load_full();
        let latency =
            Duration::from_millis(answer.latency_ms.unwrap_or_else(|| offer.offered.elapsed().as_millis() as u64));
        // Not recorded (its lease expired meanwhile): the answer is for an offer that is gone.
        let recorded = self.shared.settle(&config, &state, name, offer.job, result, latency).await?;
        self.shared.store.durable().await?;
        Ok(recorded)
    }
}

/// The members an inbox job falls back to under the current config: its route's `offline`, else
/// the inbox's own; none if neither is configured any more.
fn current_fallback(config: &Config, inbox: &Target, rule: &str) -> Option<Vec<String>> {
    let offline = crate::plan::offline_for(config, inbox, rule)?;
    Some(offline.fallback.iter().map(|&i| config.targets[i].name.clone()).collect())
}

/// An offer's id: the job and the lease it was offered under, so an answer for an offer that
/// expired never settles a later offer of the same job (even as the same attempt, when the first
/// attempt's outcome could not be recorded).
fn offer_id(job: &Job) -> String {
    format!("{}.{}", job.id, job.lease)
}

fn take_offer(inbox: &InboxState, id: &str) -> Option<Held> {
    let (job, lease) = id.split_once('.')?;
    let (job, lease): (JobId, u64) = (job.parse().ok()?, lease.parse().ok()?);
    let mut offers = inbox.offers();
    match offers.get(&job) {
        Some(offer) if offer.job.lease == lease => offers.remove(&job),
        _ => None,
    }
}

fn expired_reason(max_age: Duration) -> String {
    format!("no listener fetched it within max_age ({})", humantime::format_duration(max_age))
}

/// An inbox's background loop: offers not answered in time become failed attempts, and while
/// nobody listens, jobs past `max_age` are dead-lettered and those whose route has an offline
/// fallback move on once nobody has listened for its grace period.
pub(super) async fn maintain(shared: Arc<Shared>, name: String, state: Arc<TargetState>, inbox: Arc<InboxState>) {
    // Each pass looks at a slice of the queue and goes on from there the next second, so jobs
    // behind a long held backlog are reached too.
    let mut from: Option<QueueCursor> = None;
    shared.load_paused(&name, &state).await;
    loop {
        tokio::select! {
            _ = state.stop.cancelled() => break,
            _ = tokio::time::sleep(MAINTAIN_EVERY) => {}
        }
        let config = shared.live.load_full();
        if !config.target(&name).is_some_and(|t| t.is_inbox()) {
            break;
        }
        let now = unix_now_ms();
        expire_offers(&shared, &config, &state, &inbox, &name, mono_ms()).await;
        let unknown = shared.store.is_shared() && !inbox.heard_lately(mono_ms());
        if state.paused.holds()
            || inbox.online(now)
            || unknown
            || shared.store.next_due_ms(&name).await.ok().flatten().is_none()
        {
            continue;
        }
        let offline_for = inbox.offline_for_ms(now);
        let woken = Arc::new(Mutex::new(Vec::new()));
        let (cfg, inbox_name, woke) = (config.clone(), name.clone(), woken.clone());
        let decide = move |job: &Job| {
            let Some(target) = cfg.target(&inbox_name) else { return Sweep::Keep };
            let mut woke = woke.lock().unwrap_or_else(|p| p.into_inner());
            offline_move(&cfg, target, job, offline_for, now, &mut woke)
        };
        let (moved, next) = match shared.store.sweep_queue(&name, from.take().as_ref(), SWEEP_SLICE, now, decide).await
        {
            Ok(swept) => swept,
            Err(e) => {
                tracing::error!(target = %name, "cannot sweep the inbox queue: {e}");
                continue;
            }
        };
        from = next;
        if moved > 0 {
            tracing::info!(target = %name, moved, "inbox offline: jobs moved to their fallback or dead-lettered");
            if let Err(e) = shared.store.durable().await {
                tracing::error!(target = %name, "cannot flush the store: {e}");
            }
            let mut woken = std::mem::take(&mut *woken.lock().unwrap_or_else(|p| p.into_inner()));
            woken.dedup();
            for t in woken {
                shared.wake(&t);
            }
        }
    }
    hand_back(&shared, &name, &inbox).await;
}

/// Offers past their deadline (`now` on the monotonic clock) are failed attempts: the listener
/// disconnected or its app hung.
async fn expire_offers(
    shared: &Shared,
    config: &Config,
    state: &TargetState,
    inbox: &InboxState,
    name: &str,
    now: u64,
) {
    let expired: Vec<Held> = {
        let mut offers = inbox.offers();
        let ids: Vec<JobId> = offers.iter().filter(|(_, o)| o.deadline_ms <= now).map(|(id, _)| *id).collect();
        ids.iter().filter_map(|id| offers.remove(id)).collect()
    };
    for offer in expired {
        let error = "no answer from the listener in time (it disconnected or the local app hung)".to_owned();
        let latency = offer.offered.elapsed();
        let _ = shared.settle(config, state, name, offer.job, Err(Failure { status: None, error }), latency).await;
    }
}

/// What becomes of a job of an inbox nobody has listened to for `offline_for` ms: dead-lettered
/// past `max_age`, moved to its fallback once its grace period is over, else kept. Fallbacks
/// moved to are added to `woken`.
fn offline_move(
    config: &Config,
    inbox: &Target,
    job: &Job,
    offline_for: u64,
    now: u64,
    woken: &mut Vec<String>,
) -> Sweep {
    let max_age = inbox.retry.max_age;
    if too_old(job, max_age, now) {
        return Sweep::DeadLetter(expired_reason(max_age));
    }
    let Delivery::Inbox { fallback, offline_after_ms } = &job.delivery else { return Sweep::Keep };
    if fallback.is_empty() || offline_for < *offline_after_ms {
        return Sweep::Keep;
    }
    // The fallback as configured now (a reload may have changed its group); as planned if its
    // route is gone.
    let fallback = current_fallback(config, inbox, &job.rule).unwrap_or_else(|| fallback.clone());
    let Some(first) = fallback.first().cloned() else { return Sweep::Keep };
    let moved = Job {
        target: first.clone(),
        delivery: Delivery::Failover { group: inbox.name.clone(), members: fallback, member: 0 },
        due_at_ms: now,
        ..job.clone()
    };
    woken.push(first);
    let reason = format!(
        "no listener on inbox {:?} for {}",
        inbox.name,
        humantime::format_duration(Duration::from_secs(offline_for / 1000))
    );
    Sweep::Reroute(Box::new(moved), reason)
}

/// The inbox stops (removed from the config, no longer an inbox, or the proxy is stopping):
/// events offered and not answered go back to its queue, where the new worker, the removed
/// targets' sweep or the next start takes them (if that fails, their leases expire); none stays
/// leased to a listener nobody serves.
async fn hand_back(shared: &Shared, name: &str, inbox: &InboxState) {
    let offers: Vec<Held> = inbox.offers().drain().map(|(_, o)| o).collect();
    for offer in offers {
        let job = Job { due_at_ms: unix_now_ms(), ..offer.job };
        if let Err(e) = shared.store.retry(&job, unix_now_ms()).await {
            tracing::error!(event_id = %job.event_id, target = %name, "cannot hand an offered event back: {e}");
        }
    }
}
