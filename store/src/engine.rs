//! The store contract: one set of async domain verbs the proxy speaks, answered by the embedded
//! sled engine or by the Postgres engine, with one conformance suite (`conformance.rs`) run
//! against both. The proxy cannot tell which engine it talks to, except through
//! [`Engine::is_shared`] (several replicas may use a Postgres store at once).
//!
//! Lease times are each engine's own clock (sled: a monotonic clock of this process, one process
//! owns the store; Postgres: the database's, which every replica shares), so callers give a lease
//! a duration, never a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chores::Chores;
use crate::pg::{PgStore, Wake};
use crate::{
    Claims, DeadLetter, EventCursor, EventHead, EventRecord, ExportRecord, HistoryEntry, InboxRecord, Ingested, Job,
    JobEvent, JobId, NewJob, Outcome, Owner, OwnerCursor, OwnersPage, QueueCursor, Result, Settled, Store, Sweep,
    TargetCounts,
};

/// How long a replica's word that an inbox has a listener holds: replicas say it every second
/// while it is true.
pub const PRESENCE_FRESH_MS: u64 = 3_000;

/// An inbox this replica counts as online, with its listeners here.
#[derive(Debug, Clone)]
pub struct PresenceBeat {
    pub inbox: String,
    pub listeners: usize,
    pub offered: usize,
}

/// An inbox's listeners on the other replicas: online if any of them said so within
/// [`PRESENCE_FRESH_MS`]; last seen on this replica's clock (an age the database measured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePresence {
    pub inbox: String,
    pub online: bool,
    pub listeners: usize,
    pub offered: usize,
    pub last_seen_ms: u64,
}

/// A store, on either engine.
#[derive(Clone)]
pub enum Engine {
    Sled(SledEngine),
    Postgres(PgStore),
}

/// The sled engine behind the contract, with the clock its lease deadlines are kept on and the
/// threads its scans run on.
#[derive(Clone)]
pub struct SledEngine {
    store: Store,
    epoch: Instant,
    chores: Arc<Chores>,
}

impl SledEngine {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs a scan on the chore threads, with its own handle on the store.
    async fn scan<T: Send + 'static>(&self, work: impl FnOnce(&Store) -> Result<T> + Send + 'static) -> Result<T> {
        let store = self.store.clone();
        self.chores.run_raw(move || work(&store)).await.map_err(|_| crate::StoreError::Closed)?
    }
}

impl Engine {
    pub fn sled(store: Store) -> Engine {
        Engine::Sled(SledEngine { store, epoch: Instant::now(), chores: Chores::start() })
    }

    /// The sled store underneath, for tests that inject its faults.
    #[cfg(feature = "fault-injection")]
    pub fn sled_store(&self) -> Option<&Store> {
        match self {
            Engine::Sled(s) => Some(&s.store),
            Engine::Postgres(_) => None,
        }
    }

    /// Whether other processes may share this store (Postgres): then a replica acts only on what
    /// it knows is its own (the queues of targets it removed, say), not on everything it sees.
    pub fn is_shared(&self) -> bool {
        matches!(self, Engine::Postgres(_))
    }

    /// Takes no more background work and waits, up to `within`, for what is running: a stop
    /// flushes only once nothing writes any more.
    pub async fn close(&self, within: Duration) {
        match self {
            Engine::Sled(s) => s.chores.close(within).await,
            Engine::Postgres(p) => p.close(),
        }
    }

    /// Connects to Postgres (at most `pool` connections; TLS with `tls` when the URL says
    /// `sslmode=require`) and migrates its schema.
    pub async fn postgres(url: &str, pool: usize, tls: rustls::ClientConfig) -> Result<Engine> {
        Ok(Engine::Postgres(PgStore::open(url, pool, tls).await?))
    }

    /// Tells the other replicas that `target` has new work; they look at once instead of at
    /// their next poll.
    pub fn announce(&self, target: &str) {
        if let Engine::Postgres(p) = self {
            p.announce(target);
        }
    }

    /// What the other replicas announce; none with one process.
    pub fn wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wake>> {
        match self {
            Engine::Sled(_) => None,
            Engine::Postgres(p) => Some(p.wakes()),
        }
    }

    /// Says who listens to each inbox here and hears the other replicas' word.
    pub async fn share_presence(&self, here: &[PresenceBeat]) -> Result<Vec<RemotePresence>> {
        match self {
            Engine::Sled(_) => Ok(Vec::new()),
            Engine::Postgres(p) => p.share_presence(here).await,
        }
    }

    /// Records a new event with its jobs and claims, durably, or reports its id seen before.
    pub async fn ingest_claiming(
        &self,
        event: &EventRecord,
        jobs: &[NewJob],
        claims: Option<&Claims>,
    ) -> Result<Ingested> {
        match self {
            Engine::Sled(s) => {
                let ingested = s.store.ingest_claiming(event, jobs, claims)?;
                s.store.durable().await?;
                Ok(ingested)
            }
            Engine::Postgres(p) => p.ingest_claiming(event, jobs, claims).await,
        }
    }

    /// Up to `max` jobs of `target` due at `now_ms`, leased for `lease_for`.
    pub async fn lease_due(&self, target: &str, now_ms: u64, max: usize, lease_for: Duration) -> Result<Vec<Job>> {
        match self {
            Engine::Sled(s) => s.store.lease_due(target, now_ms, max, s.now() + lease_for.as_millis() as u64),
            Engine::Postgres(p) => p.lease_due(target, now_ms, max, lease_for).await,
        }
    }

    /// Jobs whose lease expired, handed back to their queues.
    pub async fn reclaim_expired_leases(&self, max: usize) -> Result<Vec<Job>> {
        match self {
            Engine::Sled(s) => {
                let now = s.now();
                s.scan(move |store| store.reclaim_expired_leases(now, max)).await
            }
            Engine::Postgres(p) => p.reclaim_expired_leases(max).await,
        }
    }

    /// Keeps `job`'s lease for `lease_for` more while its attempt runs; false if it was reclaimed.
    pub async fn renew_lease(&self, job: &Job, lease_for: Duration) -> Result<bool> {
        match self {
            Engine::Sled(s) => Ok(s.store.renew_lease(job, s.now() + lease_for.as_millis() as u64)),
            Engine::Postgres(p) => p.renew_lease(job, lease_for).await,
        }
    }

    /// Hands the leases this process holds back to their queues (a stop, its attempts ended).
    pub async fn release_leases(&self) -> Result<usize> {
        match self {
            Engine::Sled(s) => s.store.release_leases(),
            Engine::Postgres(p) => p.release_leases().await,
        }
    }

    pub async fn discard(&self, job: &Job, reason: &str, now_ms: u64) -> Result<()> {
        match self {
            Engine::Sled(s) => s.store.discard(job, reason, now_ms),
            Engine::Postgres(p) => p.discard(job, reason, now_ms).await,
        }
    }

    /// When the earliest job waiting for `target` is due, if any.
    pub async fn next_due_ms(&self, target: &str) -> Result<Option<u64>> {
        match self {
            Engine::Sled(s) => s.store.next_due_ms(target),
            Engine::Postgres(p) => p.next_due_ms(target).await,
        }
    }

    pub async fn set_paused(&self, target: &str, paused: bool) -> Result<()> {
        match self {
            Engine::Sled(s) => s.store.set_paused(target, paused),
            Engine::Postgres(p) => p.set_paused(target, paused).await,
        }
    }

    /// Every inbox created at run time.
    pub async fn inboxes(&self) -> Result<Vec<InboxRecord>> {
        match self {
            Engine::Sled(s) => s.store.inboxes(),
            Engine::Postgres(p) => p.inboxes().await,
        }
    }

    /// A new inbox; `false` if one of that name exists already (nothing written).
    pub async fn create_inbox(&self, inbox: &InboxRecord) -> Result<bool> {
        match self {
            Engine::Sled(s) => s.store.create_inbox(inbox),
            Engine::Postgres(p) => p.create_inbox(inbox).await,
        }
    }

    /// An inbox rewritten (a new token and secret); `false` if there is none of that name.
    pub async fn replace_inbox(&self, inbox: &InboxRecord) -> Result<bool> {
        match self {
            Engine::Sled(s) => s.store.replace_inbox(inbox),
            Engine::Postgres(p) => p.replace_inbox(inbox).await,
        }
    }

    /// `false` if there was none of that name. Its queue is the caller's to settle.
    pub async fn delete_inbox(&self, name: &str) -> Result<bool> {
        match self {
            Engine::Sled(s) => s.store.delete_inbox(name),
            Engine::Postgres(p) => p.delete_inbox(name).await,
        }
    }

    pub async fn is_paused(&self, target: &str) -> Result<bool> {
        match self {
            Engine::Sled(s) => s.store.is_paused(target),
            Engine::Postgres(p) => p.is_paused(target).await,
        }
    }

    pub async fn retry(&self, job: &Job, now_ms: u64) -> Result<Settled> {
        match self {
            Engine::Sled(s) => s.store.retry(job, now_ms),
            Engine::Postgres(p) => p.retry(job, now_ms).await,
        }
    }

    pub async fn dead_letter(&self, job: &Job, error: &str, now_ms: u64) -> Result<Settled> {
        match self {
            Engine::Sled(s) => s.store.dead_letter(job, error, now_ms),
            Engine::Postgres(p) => p.dead_letter(job, error, now_ms).await,
        }
    }

    pub async fn complete(&self, job: &Job, now_ms: u64) -> Result<usize> {
        match self {
            Engine::Sled(s) => s.store.complete(job, now_ms),
            Engine::Postgres(p) => p.complete(job, None, now_ms).await,
        }
    }

    /// [`Engine::log`] of the attempt that delivered `job`, then [`Engine::complete`]: one
    /// transaction on Postgres instead of two.
    pub async fn complete_logged(&self, job: &Job, outcome: Outcome, now_ms: u64) -> Result<usize> {
        match self {
            Engine::Sled(s) => {
                s.store.log(job, outcome, now_ms)?;
                s.store.complete(job, now_ms)
            }
            Engine::Postgres(p) => p.complete(job, Some(outcome), now_ms).await,
        }
    }

    pub async fn log(&self, job: &Job, outcome: Outcome, at_ms: u64) -> Result<()> {
        match self {
            Engine::Sled(s) => s.store.log(job, outcome, at_ms),
            Engine::Postgres(p) => p.log(job, outcome, at_ms).await,
        }
    }

    pub async fn event_for(&self, job: &Job) -> Result<JobEvent> {
        match self {
            Engine::Sled(s) => s.store.event_for(job),
            Engine::Postgres(p) => p.event_for(job).await,
        }
    }

    pub async fn owner(&self, id: &str) -> Result<Option<Owner>> {
        match self {
            Engine::Sled(s) => s.store.owner(id),
            Engine::Postgres(p) => p.owner(id).await,
        }
    }

    /// Records `owner` for `ids` (set by hand).
    pub async fn claim(&self, ids: &[String], owner: &Owner) -> Result<()> {
        match self {
            Engine::Sled(s) => s.store.claim(ids, owner),
            Engine::Postgres(p) => p.claim(ids, owner).await,
        }
    }

    pub async fn disown(&self, id: &str) -> Result<bool> {
        match self {
            Engine::Sled(s) => s.store.disown(id),
            Engine::Postgres(p) => p.disown(id).await,
        }
    }

    /// Up to `limit` owned objects in id order after `after` (of `destination` if given), and
    /// where the next page starts; sled looks at no more than `scan` entries for it.
    pub async fn owners_page(
        &self,
        after: Option<&str>,
        destination: Option<&str>,
        limit: usize,
        scan: usize,
    ) -> Result<OwnersPage> {
        match self {
            Engine::Sled(s) => {
                let (after, destination) = (after.map(str::to_owned), destination.map(str::to_owned));
                s.scan(move |store| store.owners_page(after.as_deref(), destination.as_deref(), limit, scan)).await
            }
            Engine::Postgres(p) => p.owners_page(after, destination, limit).await,
        }
    }

    /// One retention step over ownership: claims last made before `cutoff_ms`, at most `batch`,
    /// going on from `after`. Returns how many went and where the next step goes on (none: the
    /// pass is over).
    pub async fn purge_owners_before(
        &self,
        cutoff_ms: u64,
        after: Option<&str>,
        batch: usize,
    ) -> Result<(usize, Option<OwnerCursor>)> {
        match self {
            Engine::Sled(s) => {
                let after = after.map(str::to_owned);
                s.scan(move |store| store.purge_owners_before(cutoff_ms, after.as_deref(), batch)).await
            }
            // Found through an index on age, not walked by id: the "cursor" only says go on.
            Engine::Postgres(p) => {
                let (purged, more) = p.purge_owners_before(cutoff_ms, batch).await?;
                Ok((purged, more.then(String::new)))
            }
        }
    }

    /// The newest `limit` history entries of the event `event_id` received at `received_at_ms`,
    /// oldest first.
    pub async fn history(&self, received_at_ms: u64, event_id: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
        match self {
            Engine::Sled(s) => {
                let event_id = event_id.to_owned();
                s.scan(move |store| store.history(received_at_ms, &event_id, limit)).await
            }
            Engine::Postgres(p) => p.history(received_at_ms, event_id, limit).await,
        }
    }

    pub async fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        match self {
            Engine::Sled(s) => s.store.event(id),
            Engine::Postgres(p) => p.event(id).await,
        }
    }

    /// Dead letters in id order after `after` and before `upto`, of `target` if given, up to
    /// `limit` (sled looks at no more than `scan`); and where the next page starts.
    pub async fn dead_letters_page(
        &self,
        target: Option<&str>,
        after: Option<JobId>,
        upto: Option<JobId>,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<DeadLetter>, Option<JobId>)> {
        match self {
            Engine::Sled(s) => {
                let target = target.map(str::to_owned);
                s.scan(move |store| store.dead_letters_page(target.as_deref(), after, upto, limit, scan)).await
            }
            Engine::Postgres(p) => p.dead_letters_page(target, after, upto, limit).await,
        }
    }

    pub async fn find_dead_letter(&self, id: JobId) -> Result<Option<DeadLetter>> {
        match self {
            Engine::Sled(s) => s.store.find_dead_letter(id),
            Engine::Postgres(p) => p.find_dead_letter(id).await,
        }
    }

    pub async fn dead_letters_end(&self) -> Result<JobId> {
        match self {
            Engine::Sled(s) => s.store.dead_letters_end(),
            Engine::Postgres(p) => p.dead_letters_end().await,
        }
    }

    pub async fn revive_dead_letter(&self, id: JobId, now_ms: u64) -> Result<Option<Job>> {
        match self {
            Engine::Sled(s) => s.store.revive_dead_letter(id, now_ms),
            Engine::Postgres(p) => p.revive_dead_letter(id, now_ms).await,
        }
    }

    pub async fn purge_dead_letter(&self, id: JobId, now_ms: u64) -> Result<bool> {
        match self {
            Engine::Sled(s) => s.store.purge_dead_letter(id, now_ms),
            Engine::Postgres(p) => p.purge_dead_letter(id, now_ms).await,
        }
    }

    pub async fn replay(&self, event_id: &str, jobs: &[NewJob], now_ms: u64) -> Result<Option<Vec<Job>>> {
        match self {
            Engine::Sled(s) => s.store.replay(event_id, jobs, now_ms),
            Engine::Postgres(p) => p.replay(event_id, jobs, now_ms).await,
        }
    }

    /// One retention step over events (with their history and dead letters) received before
    /// `cutoff_ms`; at most `batch` rows. Zero: nothing left to forget.
    pub async fn purge_events_before(&self, cutoff_ms: u64, batch: usize) -> Result<usize> {
        match self {
            Engine::Sled(s) => s.scan(move |store| store.purge_events_before(cutoff_ms, batch)).await,
            Engine::Postgres(p) => p.purge_events_before(cutoff_ms, batch).await,
        }
    }

    /// Waits until every write made before the call is durable (Postgres: each commit already is).
    pub async fn durable(&self) -> Result<()> {
        match self {
            Engine::Sled(s) => s.store.durable().await,
            Engine::Postgres(_) => Ok(()),
        }
    }

    /// Up to `limit` events received before `before` (or the newest) and at or after `since_ms`,
    /// newest first, without their bodies. (Sled skips orphan records of crashed ingests.)
    pub async fn events_before(
        &self,
        before: Option<&EventCursor>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<EventHead>> {
        match self {
            Engine::Sled(s) => {
                let before = before.cloned();
                s.scan(move |store| store.events_newest_first(before.as_ref(), since_ms).take(limit).collect()).await
            }
            Engine::Postgres(p) => p.events_before(before, since_ms, limit).await,
        }
    }

    /// See `Store::events_mentioning`: events whose body holds `needle`, newest first, a bounded
    /// look.
    pub async fn events_mentioning(
        &self,
        needle: &str,
        before: Option<&EventCursor>,
        since_ms: u64,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<EventHead>, Option<EventCursor>)> {
        match self {
            Engine::Sled(s) => {
                let (needle, before) = (needle.as_bytes().to_vec(), before.cloned());
                s.scan(move |store| store.events_mentioning(&needle, before.as_ref(), since_ms, limit, scan)).await
            }
            Engine::Postgres(p) => p.events_mentioning(needle, before, since_ms, limit, scan).await,
        }
    }

    /// See `Store::sweep_queue`: a slice of `target`'s queue, each job kept, rerouted or
    /// dead-lettered as `decide` says, without an attempt.
    pub async fn sweep_queue(
        &self,
        target: &str,
        from: Option<&QueueCursor>,
        batch: usize,
        now_ms: u64,
        decide: impl FnMut(&Job) -> Sweep + Send + 'static,
    ) -> Result<(usize, Option<QueueCursor>)> {
        match self {
            Engine::Sled(s) => {
                let (target, from) = (target.to_owned(), from.cloned());
                s.scan(move |store| store.sweep_queue(&target, from.as_ref(), batch, now_ms, decide)).await
            }
            Engine::Postgres(p) => p.sweep_queue(target, from, batch, now_ms, decide).await,
        }
    }

    /// Moves up to `batch` jobs queued for `target` to the dead letters with `reason` (the target
    /// was removed from the config); how many moved, and whether more may be left.
    pub async fn dead_letter_queue(
        &self,
        target: &str,
        reason: &str,
        now_ms: u64,
        batch: usize,
    ) -> Result<(usize, bool)> {
        let reason = reason.to_owned();
        let (moved, next) =
            self.sweep_queue(target, None, batch, now_ms, move |_| Sweep::DeadLetter(reason.clone())).await?;
        Ok((moved, next.is_some()))
    }

    /// Queued jobs and dead letters per target.
    pub async fn counts(&self) -> Result<TargetCounts> {
        match self {
            Engine::Sled(s) => Ok(s.store.counts()),
            Engine::Postgres(p) => p.counts().await,
        }
    }

    /// Jobs waiting (not leased) for `target`.
    pub async fn queued(&self, target: &str) -> Result<usize> {
        match self {
            Engine::Sled(s) => Ok(s.store.queued(target)),
            Engine::Postgres(p) => p.queued(target).await,
        }
    }

    /// Entries moved aside because they did not decode.
    pub async fn quarantined(&self) -> Result<usize> {
        match self {
            Engine::Sled(s) => s.scan(|store| Ok(store.quarantined())).await,
            Engine::Postgres(p) => p.quarantined().await,
        }
    }

    /// Jobs leased and not settled.
    pub async fn in_flight(&self) -> Result<usize> {
        match self {
            Engine::Sled(s) => Ok(s.store.in_flight()),
            Engine::Postgres(p) => p.in_flight().await,
        }
    }

    /// The engine's name, as an export's header gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Sled(_) => "sled",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// Sends every record of the store to `to`, in the export's order (see `export.rs`); fails
    /// with [`StoreError::Hangup`](crate::StoreError::Hangup) if the receiver goes away.
    pub async fn export(&self, to: tokio::sync::mpsc::Sender<ExportRecord>) -> Result<()> {
        match self {
            Engine::Sled(s) => s.scan(move |store| store.export(&to)).await,
            Engine::Postgres(p) => p.export(&to).await,
        }
    }

    /// Writes a batch of an export, durably. Meant for an empty store ([`Engine::is_empty`]):
    /// records are written as they come, not merged with what is there.
    pub async fn import(&self, batch: Vec<ExportRecord>) -> Result<()> {
        match self {
            Engine::Sled(s) => {
                s.scan(move |store| store.import(batch)).await?;
                s.store.durable().await
            }
            Engine::Postgres(p) => p.import(batch).await,
        }
    }

    /// Whether nothing was ever kept in this store.
    pub async fn is_empty(&self) -> Result<bool> {
        match self {
            Engine::Sled(s) => s.scan(|store| Ok(store.is_empty())).await,
            Engine::Postgres(p) => p.is_empty().await,
        }
    }
}
