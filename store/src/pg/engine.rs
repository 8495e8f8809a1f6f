//! The Postgres engine's core operations: ingest in one transaction, leasing with
//! `FOR UPDATE SKIP LOCKED` and an expiring `lease_until`, and the settles. The same domain
//! verbs and types as the sled engine, async because every call is a round trip.
//!
//! Lease times are the database's clock (`clock_timestamp()`), so every replica agrees on when a
//! lease expires; due times are the caller's scheduling clock, as in the sled engine.
//!
//! Invariant: an event, its jobs and its ownership claims commit together or not at all, and a
//! settle acts only on the lease it names (`Job::lease`), so a replica whose lease expired and was
//! taken by another cannot settle the other's attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::batch::{Batcher, IngestRow};
use super::cached::Cached;
use super::wake::{self, Announcer, Wake};
use super::{migrate, pool_error};
use crate::history::history_entry;
use crate::record::build_jobs;
use crate::{
    decode, encode, Claims, DeadLetter, Delivery, EventRecord, Ingested, Job, JobEvent, JobId, NewJob, Outcome, Result,
    Settled,
};

/// Longest a new connection may take, and a pooled one's check.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a caller waits for a free connection: shorter than the proxy's lease margin (5 s), so
/// a settle that cannot get a connection fails before its lease could be taken by another.
const POOL_WAIT: Duration = Duration::from_secs(3);

/// The database's clock, in ms since the epoch. `statement_timestamp()` (not `clock_timestamp()`,
/// which is volatile) so the planner can use it against the index on `lease_until_ms`.
const DB_NOW_MS: &str = "(extract(epoch from statement_timestamp()) * 1000)::bigint";

/// Job ids a replica takes from the sequence at a time.
const ID_BLOCK: usize = 256;

/// A store on Postgres, shared by any number of replicas.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This replica, as it marks the leases it takes: a graceful stop hands back its own only.
    replica: String,
    /// How to connect outside the pool (the wake-up listener's own connection).
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    announcer: Arc<Announcer>,
    /// Job ids taken from the sequence and not used yet (see [`ID_BLOCK`]).
    spare_ids: Arc<Mutex<Vec<JobId>>>,
    batcher: Batcher,
    /// The announcer and the listener, stopped by [`PgStore::close`].
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl PgStore {
    /// Connects with at most `pool` connections and brings the schema up to date. Every wait is
    /// bounded: with the database down or unreachable a call fails in seconds (the proxy answers
    /// 503, workers back off) instead of hanging, and connections are made again once it is back.
    ///
    /// TLS is used when the URL says `sslmode=require`, and then the server's certificate is
    /// verified against `tls`'s roots (unlike libpq's `require`, which encrypts without checking
    /// who answers). Other modes connect in plain text.
    pub async fn open(url: &str, pool: usize, tls: rustls::ClientConfig) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_ssl_mode() != SslMode::Require {
            // `prefer` (the default) would try TLS and fail on a certificate nobody asked to check.
            config.ssl_mode(SslMode::Disable);
        }
        // A connection the network dropped silently (the LISTEN one sits idle) is noticed
        // within a minute, not after the kernel's two hours.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        // Acknowledged ingests wait for the disk whatever the server's default; settles opt out.
        let options = config.get_options().map_or(String::new(), |o| format!("{o} "));
        config.options(format!("{options}-c synchronous_commit=on"));
        let tls = MakeRustlsConnect::new(tls);
        // A connection that is recycled is checked first, so one broken by an outage is replaced.
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Verified },
        );
        let pool = Pool::builder(manager)
            .max_size(pool.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(pool_error)?;
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let replica = format!("{}-{}", std::process::id(), started.as_nanos());
        let announcer = Arc::new(Announcer::default());
        let (batcher, batching) = Batcher::start(pool.clone());
        let spare_ids = Arc::default();
        let store = PgStore { pool, replica, config, tls, announcer, spare_ids, batcher, tasks: Arc::default() };
        let mut client = store.client().await?;
        migrate(&mut client).await?;
        drop(client);
        store.keep(tokio::spawn(batching).abort_handle());
        let announcing = tokio::spawn(store.announcer.clone().run(store.pool.clone(), store.replica.clone()));
        store.keep(announcing.abort_handle());
        Ok(store)
    }

    fn keep(&self, task: tokio::task::AbortHandle) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    /// Tells the other replicas that `target` has new work (coalesced, after the fact).
    pub fn announce(&self, target: &str) {
        self.announcer.announce(target);
    }

    /// What the other replicas announce, from now on, on a connection of its own.
    pub fn wakes(&self) -> mpsc::UnboundedReceiver<Wake> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let listening = tokio::spawn(wake::listen(self.config.clone(), self.tls.clone(), self.replica.clone(), sender));
        self.keep(listening.abort_handle());
        receiver
    }

    /// Stops batching, announcing and listening. The pool stays usable: a stop still hands its
    /// leases back after this; its connections close as the store is dropped.
    pub fn close(&self) {
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Records a new event with its jobs and claims in one transaction (shared with the
    /// ingests running at the same time: `batch.rs`), or reports that its id was seen before
    /// (nothing written). Durable when it returns (synchronous commit).
    pub async fn ingest_claiming(
        &self,
        event: &EventRecord,
        new_jobs: &[NewJob],
        claims: Option<&Claims>,
    ) -> Result<Ingested> {
        let ids = self.job_ids(new_jobs.len()).await?;
        let at = event.received_at_ms;
        let jobs = build_jobs(&event.id, new_jobs, &ids, at, at, 0, false);
        let mut blobs = Vec::with_capacity(jobs.len());
        for job in &jobs {
            blobs.push(encode(job)?);
        }
        let mut objects = claims.map(|c| c.ids.clone()).unwrap_or_default();
        objects.sort();
        objects.dedup();
        let none = crate::Owner { destinations: Vec::new(), via: String::new(), event_id: None, at_ms: 0 };
        let owner = claims.map_or(&none, |c| &c.owner);
        let row = IngestRow {
            id: event.id.clone(),
            received_at_ms: big(event.received_at_ms),
            event_type: event.event_type.clone(),
            source: event.source.clone(),
            disposition: encode(&event.disposition)?,
            body: event.body.clone(),
            job_ids: jobs.iter().map(|j| big(j.id)).collect(),
            targets: jobs.iter().map(|j| j.target.clone()).collect(),
            dues: jobs.iter().map(|j| big(j.due_at_ms)).collect(),
            blobs,
            destinations: owner.destinations.clone(),
            via: owner.via.clone(),
            claim_event: owner.event_id.clone(),
            claim_at_ms: big(owner.at_ms),
            objects,
            refresh_ms: big(claims.map_or(0, |c| c.refresh_after_ms)),
        };
        if !self.batcher.ingest(row).await? {
            return Ok(Ingested::Duplicate);
        }
        Ok(Ingested::New(jobs))
    }

    /// `n` fresh job ids, from a block this replica took from the sequence (one round trip per
    /// block, not per event).
    async fn job_ids(&self, n: usize) -> Result<Vec<JobId>> {
        loop {
            {
                let mut spare = self.spare_ids.lock().unwrap_or_else(|p| p.into_inner());
                if spare.len() >= n {
                    // Kept newest first, so the ids handed out are the lowest, in order.
                    let at = spare.len() - n;
                    let mut ids = spare.split_off(at);
                    ids.reverse();
                    return Ok(ids);
                }
            }
            let client = self.client().await?;
            let block = next_ids(&client, "job_ids", ID_BLOCK.max(n)).await?;
            self.spare_ids.lock().unwrap_or_else(|p| p.into_inner()).extend(block.into_iter().rev());
        }
    }

    /// Takes up to `max` jobs of `target` due at `now_ms`, leased for `lease_for` (the database's
    /// clock). Jobs another taker holds are skipped, never waited for.
    /// Like sled's, a member of an `any` group delivered meanwhile is stood down here rather than
    /// attempted, and a row that does not decode is moved to the quarantine, not leased. A
    /// paused target leases nothing, whichever replica the operator paused it on.
    pub async fn lease_due(&self, target: &str, now_ms: u64, max: usize, lease_for: Duration) -> Result<Vec<Job>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .rows(
                &format!(
                    "UPDATE jobs SET lease = nextval('lease_ids'), lease_until_ms = {DB_NOW_MS} + $4, leased_by = $5
                     WHERE id IN (SELECT id FROM jobs WHERE target = $1 AND lease IS NULL AND due_at_ms <= $2
                                    AND NOT EXISTS (SELECT 1 FROM paused WHERE paused.target = $1)
                                  ORDER BY due_at_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING job, lease"
                ),
                &[&target, &big(now_ms), &big(max), &big(lease_for.as_millis()), &self.replica],
            )
            .await?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in &rows {
            leased.extend(leased_job(&tx, row).await?);
        }
        let delivered = delivered_rounds(&tx, &leased).await?;
        let mut jobs = Vec::with_capacity(leased.len());
        for job in leased {
            if delivered.contains(&job.id) {
                take_leased(&tx, &job).await?;
                append(&tx, &job, Outcome::Cancelled, now_ms).await?;
                continue;
            }
            jobs.push(job);
        }
        tx.commit().await?;
        jobs.sort_by_key(|j| (j.due_at_ms, j.id));
        Ok(jobs)
    }

    /// Hands back to their queues up to `max` jobs whose lease expired (a replica that died, an
    /// outcome that could not be recorded); returns them so their workers can be woken.
    pub async fn reclaim_expired_leases(&self, max: usize) -> Result<Vec<Job>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                &format!(
                    "UPDATE jobs SET lease = NULL, lease_until_ms = NULL, leased_by = NULL
                     WHERE id IN (SELECT id FROM jobs WHERE lease IS NOT NULL AND lease_until_ms <= {DB_NOW_MS}
                                  LIMIT $1 FOR UPDATE SKIP LOCKED)
                     RETURNING job"
                ),
                &[&big(max)],
            )
            .await?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(0), "job")).collect()
    }

    /// Appends to the job's event history.
    pub async fn log(&self, job: &Job, outcome: Outcome, at_ms: u64) -> Result<()> {
        let client = self.client().await?;
        append(&client, job, outcome, at_ms).await
    }

    /// The event a leased job delivers. Its ingest committed with it, so it is there unless
    /// retention removed it.
    pub async fn event_for(&self, job: &Job) -> Result<JobEvent> {
        Ok(match self.event(&job.event_id).await? {
            Some(record) => JobEvent::Ready(record),
            None => JobEvent::Uncommitted,
        })
    }

    /// The event `id`, if it is kept.
    pub async fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        let client = self.client().await?;
        let row = client.maybe_row(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"), &[&id]).await?;
        row.as_ref().map(event_of).transpose()
    }

    /// Puts a failed job back in its queue as the caller rewrote it, unless its lease is no longer
    /// the caller's ([`Settled::NotLeased`]) or its `any` group was delivered meanwhile.
    pub async fn retry(&self, job: &Job, now_ms: u64) -> Result<Settled> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        settle_without_waiting(&tx).await?;
        if !holds_lease(&tx, job).await? {
            return Ok(Settled::NotLeased);
        }
        if group_delivered(&tx, job).await? {
            return cancel(tx, job, now_ms).await;
        }
        let updated = tx
            .exec(
                "UPDATE jobs SET target = $3, due_at_ms = $4, job = $5, lease = NULL, lease_until_ms = NULL,
                     leased_by = NULL
                 WHERE id = $1 AND lease = $2",
                &[&big(job.id), &big(job.lease), &job.target, &big(job.due_at_ms), &encode(job)?],
            )
            .await?;
        tx.commit().await?;
        Ok(if updated == 1 { Settled::Done } else { Settled::NotLeased })
    }

    /// Gives up on a job: it moves to the dead letters with `error`, unless its lease is no longer
    /// the caller's or its `any` group was delivered meanwhile.
    pub async fn dead_letter(&self, job: &Job, error: &str, now_ms: u64) -> Result<Settled> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        settle_without_waiting(&tx).await?;
        if !holds_lease(&tx, job).await? {
            return Ok(Settled::NotLeased);
        }
        if group_delivered(&tx, job).await? {
            return cancel(tx, job, now_ms).await;
        }
        take_leased(&tx, job).await?;
        bury(&tx, job, error, now_ms).await?;
        tx.commit().await?;
        Ok(Settled::Done)
    }

    /// The job was delivered: it leaves the queue (unless another holder leased it again since:
    /// that one delivers too, at least once, as on sled), and for an `any` group the first success
    /// is recorded and siblings still queued are cancelled. Returns how many were cancelled.
    pub async fn complete(&self, job: &Job, outcome: Option<Outcome>, now_ms: u64) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        settle_without_waiting(&tx).await?;
        if let Some(outcome) = outcome {
            append(&tx, job, outcome, now_ms).await?;
        }
        // Its own row first, then the group's lock: the order every settle and lease takes them.
        tx.exec("DELETE FROM jobs WHERE id = $1 AND (lease IS NULL OR lease = $2)", &[&big(job.id), &big(job.lease)])
            .await?;
        let mut cancelled = 0;
        if let Delivery::AnyOf { group } = &job.delivery {
            lock_group(&tx, job).await?;
            insert_round(&tx, &job.event_id, group, job.round(), &job.target).await?;
            let siblings: Vec<i64> = job.siblings.iter().map(|(_, id)| big(*id)).collect();
            // Siblings another transaction holds are skipped, not waited for: a lease (or a sweep)
            // locks its rows and then waits for this group's lock, so waiting here deadlocked. It
            // finds the round delivered once it has the group's lock, and stands the member down.
            let rows = tx
                .rows(
                    "DELETE FROM jobs WHERE id IN
                         (SELECT id FROM jobs WHERE id = ANY($1) AND lease IS NULL FOR UPDATE SKIP LOCKED)
                     RETURNING job",
                    &[&siblings],
                )
                .await?;
            for row in rows {
                let sibling: Job = decode(row.get::<_, &[u8]>(0), "job")?;
                append(&tx, &sibling, Outcome::Cancelled, now_ms).await?;
                cancelled += 1;
            }
        }
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Keeps `job`'s lease for `lease_for` more (an attempt still running); false if it expired
    /// and another replica may have it.
    pub async fn renew_lease(&self, job: &Job, lease_for: Duration) -> Result<bool> {
        let client = self.client().await?;
        let renewed = client
            .exec(
                &format!("UPDATE jobs SET lease_until_ms = {DB_NOW_MS} + $3 WHERE id = $1 AND lease = $2"),
                &[&big(job.id), &big(job.lease), &big(lease_for.as_millis())],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Hands this replica's leases back to their queues (a graceful stop, once its attempts
    /// ended); other replicas' stay theirs.
    /// The other replicas are told at once, in this call: a stopping replica's announcer is gone.
    pub async fn release_leases(&self) -> Result<usize> {
        let client = self.client().await?;
        let released = client
            .rows(
                "UPDATE jobs SET lease = NULL, lease_until_ms = NULL, leased_by = NULL WHERE leased_by = $1
                 RETURNING target",
                &[&self.replica],
            )
            .await?;
        let targets: std::collections::BTreeSet<String> = released.iter().map(|r| r.get(0)).collect();
        wake::announce_now(&client, &self.replica, &targets).await;
        Ok(released.len())
    }

    /// Forgets a job that must never be delivered, noting why in its history.
    pub async fn discard(&self, job: &Job, reason: &str, now_ms: u64) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        append(&tx, job, Outcome::Discarded { reason: reason.to_owned() }, now_ms).await?;
        tx.exec("DELETE FROM jobs WHERE id = $1 AND (lease IS NULL OR lease = $2)", &[&big(job.id), &big(job.lease)])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// When the earliest job waiting for `target` is due, if any.
    pub async fn next_due_ms(&self, target: &str) -> Result<Option<u64>> {
        let client = self.client().await?;
        let row = client.row("SELECT min(due_at_ms) FROM jobs WHERE target = $1 AND lease IS NULL", &[&target]).await?;
        Ok(row.get::<_, Option<i64>>(0).map(|ms| ms as u64))
    }

    pub async fn set_paused(&self, target: &str, paused: bool) -> Result<()> {
        let client = self.client().await?;
        let sql = if paused {
            "INSERT INTO paused (target) VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM paused WHERE target = $1"
        };
        client.exec(sql, &[&target]).await?;
        Ok(())
    }

    pub async fn is_paused(&self, target: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client.maybe_row("SELECT 1 FROM paused WHERE target = $1", &[&target]).await?.is_some())
    }

    /// Who owns the object `id`, if anyone.
    pub async fn owner(&self, id: &str) -> Result<Option<crate::Owner>> {
        let client = self.client().await?;
        let row =
            client.maybe_row("SELECT destinations, via, event_id, at_ms FROM owners WHERE object = $1", &[&id]).await?;
        Ok(row.map(|r| owner_of(&r, 0)))
    }

    /// Records `owner` for each of `ids` (set by hand: always written, the latest wins).
    pub async fn claim(&self, ids: &[String], owner: &crate::Owner) -> Result<()> {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        let client = self.client().await?;
        client
            .exec(
                "INSERT INTO owners (object, destinations, via, event_id, at_ms)
                 SELECT unnest($1::text[]), $2, $3, $4, $5
                 ON CONFLICT (object) DO UPDATE SET destinations = EXCLUDED.destinations, via = EXCLUDED.via,
                     event_id = EXCLUDED.event_id, at_ms = EXCLUDED.at_ms",
                &[&ids, &owner.destinations, &owner.via, &owner.event_id, &big(owner.at_ms)],
            )
            .await?;
        Ok(())
    }

    /// Forgets who owns `id`; false if nobody did.
    pub async fn disown(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client.exec("DELETE FROM owners WHERE object = $1", &[&id]).await? == 1)
    }

    /// Up to `limit` owned objects in id order after `after`, of `destination` if given, and
    /// where the next page starts. (The index bounds the work; `scan` is the sled engine's.)
    pub async fn owners_page(
        &self,
        after: Option<&str>,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<crate::OwnersPage> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "SELECT object, destinations, via, event_id, at_ms FROM owners
                 WHERE object > $1 AND ($2::text IS NULL OR $2 = ANY(destinations))
                 ORDER BY object LIMIT $3",
                &[&after.unwrap_or(""), &destination, &big(limit).saturating_add(1)],
            )
            .await?;
        let mut page: Vec<(String, crate::Owner)> = rows.iter().map(|r| (r.get(0), owner_of(r, 1))).collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more.then(|| page.last().map(|(id, _)| id.clone())).flatten();
        Ok((page, next))
    }

    /// Removes up to `batch` claims last made before `cutoff_ms`; says whether more may be left.
    pub async fn purge_owners_before(&self, cutoff_ms: u64, batch: usize) -> Result<(usize, bool)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !sweeper(&tx, OWNERS_RETENTION_LOCK).await? {
            return Ok((0, false));
        }
        let purged = tx
            .exec(
                "DELETE FROM owners WHERE object IN (SELECT object FROM owners WHERE at_ms < $1 LIMIT $2)",
                &[&big(cutoff_ms), &big(batch)],
            )
            .await? as usize;
        tx.commit().await?;
        Ok((purged, purged == batch))
    }

    /// The newest `limit` history entries of the event `event_id` received at `received_at_ms`
    /// (not an earlier copy of the same id, forgotten by retention), oldest first.
    pub async fn history(&self, received_at_ms: u64, event_id: &str, limit: usize) -> Result<Vec<crate::HistoryEntry>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "SELECT entry FROM history WHERE event_id = $1 AND received_at_ms = $2 ORDER BY seq DESC LIMIT $3",
                &[&event_id, &big(received_at_ms), &big(limit)],
            )
            .await?;
        let mut entries: Vec<crate::HistoryEntry> =
            rows.iter().map(|r| decode(r.get::<_, &[u8]>(0), "history")).collect::<Result<_>>()?;
        entries.reverse();
        Ok(entries)
    }

    /// Dead letters in id order (oldest first) after `after` and before `upto`, of `target` if
    /// given, up to `limit`; and where the next page starts.
    pub async fn dead_letters_page(
        &self,
        target: Option<&str>,
        after: Option<JobId>,
        upto: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<JobId>)> {
        let client = self.client().await?;
        let (after, upto) = (after.map_or(-1, big), upto.map_or(i64::MAX, big));
        let rows = client
            .rows(
                "SELECT letter FROM dead_letters WHERE id > $1 AND id < $2 AND ($3::text IS NULL OR target = $3)
                 ORDER BY id LIMIT $4",
                &[&after, &upto, &target, &big(limit).saturating_add(1)],
            )
            .await?;
        let mut page: Vec<DeadLetter> =
            rows.iter().map(|r| decode(r.get::<_, &[u8]>(0), "dead letter")).collect::<Result<_>>()?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = page.last().filter(|_| more).map(|l| l.job.id);
        Ok((page, next))
    }

    pub async fn find_dead_letter(&self, id: JobId) -> Result<Option<DeadLetter>> {
        let client = self.client().await?;
        let row = client.maybe_row("SELECT letter FROM dead_letters WHERE id = $1", &[&big(id)]).await?;
        row.map(|r| decode(r.get::<_, &[u8]>(0), "dead letter")).transpose()
    }

    /// One past the newest dead letter's id: a bulk pass that stops here does not chase letters
    /// that die again while it runs.
    pub async fn dead_letters_end(&self) -> Result<JobId> {
        let client = self.client().await?;
        let row = client.row("SELECT coalesce(max(id) + 1, 0) FROM dead_letters", &[]).await?;
        Ok(row.get::<_, i64>(0) as JobId)
    }

    /// Takes a dead letter out and queues its job again (see `record::revived`), in one
    /// transaction. `None` if there is no such letter.
    pub async fn revive_dead_letter(&self, id: JobId, now_ms: u64) -> Result<Option<Job>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx.maybe_row("DELETE FROM dead_letters WHERE id = $1 RETURNING letter", &[&big(id)]).await?
        else {
            return Ok(None);
        };
        let letter: DeadLetter = decode(row.get::<_, &[u8]>(0), "dead letter")?;
        let new_id = next_ids(&tx, "job_ids", 1).await?[0];
        let job = crate::record::revived(&letter.job, new_id, now_ms);
        insert_job(&tx, &job).await?;
        append(&tx, &job, Outcome::Replayed, now_ms).await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Deletes a dead letter for good (noted in its event's history); false if there was none.
    pub async fn purge_dead_letter(&self, id: JobId, now_ms: u64) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx.maybe_row("DELETE FROM dead_letters WHERE id = $1 RETURNING letter", &[&big(id)]).await?
        else {
            return Ok(false);
        };
        let letter: DeadLetter = decode(row.get::<_, &[u8]>(0), "dead letter")?;
        append(&tx, &letter.job, Outcome::Purged, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queues the event `event_id` again for `jobs`, as new jobs due at `now_ms` marked as
    /// replays. `None` if the event is not kept.
    pub async fn replay(&self, event_id: &str, jobs: &[NewJob], now_ms: u64) -> Result<Option<Vec<Job>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx.maybe_row("SELECT received_at_ms FROM events WHERE id = $1", &[&event_id]).await? else {
            return Ok(None);
        };
        let received = row.get::<_, i64>(0) as u64;
        let ids = next_ids(&tx, "job_ids", jobs.len()).await?;
        let jobs = build_jobs(event_id, jobs, &ids, now_ms, received, 0, true);
        for job in &jobs {
            insert_job(&tx, job).await?;
            append(&tx, job, Outcome::Replayed, now_ms).await?;
        }
        tx.commit().await?;
        Ok(Some(jobs))
    }

    /// Forgets up to `batch` events received before `cutoff_ms` (their ids may come again), with
    /// their history, `any`-group state and dead letters, in one transaction; returns how many
    /// rows went (zero: nothing left to forget).
    pub async fn purge_events_before(&self, cutoff_ms: u64, batch: usize) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !sweeper(&tx, RETENTION_LOCK).await? {
            return Ok(0);
        }
        let gone: Vec<String> = tx
            .rows(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at_ms < $1 LIMIT $2) RETURNING id",
                &[&big(cutoff_ms), &big(batch)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut purged = gone.len() as u64;
        purged += tx.exec("DELETE FROM group_rounds WHERE event_id = ANY($1)", &[&gone]).await?;
        purged += tx.exec("DELETE FROM dead_letters WHERE event_id = ANY($1)", &[&gone]).await?;
        purged += tx
            .exec("DELETE FROM history WHERE event_id = ANY($1) AND received_at_ms < $2", &[&gone, &big(cutoff_ms)])
            .await?;
        tx.commit().await?;
        Ok(purged as usize)
    }

    /// The newest `scan` events before the cursor are looked at, in the database; those whose
    /// body holds `needle` come back, and the oldest looked at is where the next look goes on.
    pub async fn events_mentioning(
        &self,
        needle: &str,
        before: Option<&crate::EventCursor>,
        since_ms: u64,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<crate::EventHead>, Option<crate::EventCursor>)> {
        let client = self.client().await?;
        let (ms, id) = match before {
            Some(c) => (big(c.received_at_ms), c.event_id.as_str()),
            None => (i64::MAX, ""),
        };
        // `looked` numbers the window (the body is read once, to match, and not kept); the
        // matches come first, then the window's oldest row, which says how far the look went
        // (a match that is also the oldest comes back twice: the match first).
        let rows = client
            .rows(
                "WITH window_ AS (
                     SELECT id, event_type, source, received_at_ms, disposition,
                            position($5::bytea IN body) > 0 AS matched,
                            row_number() OVER (ORDER BY received_at_ms DESC, id DESC) AS looked
                     FROM (SELECT * FROM events
                           WHERE (received_at_ms < $1 OR (received_at_ms = $1 AND id < $2))
                             AND received_at_ms >= $3
                           ORDER BY received_at_ms DESC, id DESC LIMIT $4) newest)
                 (SELECT id, event_type, source, received_at_ms, disposition, looked, true FROM window_
                  WHERE matched ORDER BY looked LIMIT $6)
                 UNION ALL
                 (SELECT id, event_type, source, received_at_ms, disposition, looked, false FROM window_
                  ORDER BY looked DESC LIMIT 1)
                 ORDER BY looked, 7 DESC",
                &[&ms, &id, &big(since_ms), &big(scan), &needle.as_bytes(), &big(limit)],
            )
            .await?;
        let mut found = Vec::new();
        for r in &rows {
            let head = crate::EventHead {
                id: r.get(0),
                event_type: r.get(1),
                source: r.get(2),
                received_at_ms: r.get::<_, i64>(3) as u64,
                disposition: decode(r.get::<_, &[u8]>(4), "event")?,
            };
            let cursor = crate::EventCursor { received_at_ms: head.received_at_ms, event_id: head.id.clone() };
            if r.get::<_, bool>(6) {
                found.push(head);
                if found.len() >= limit {
                    return Ok((found, Some(cursor)));
                }
            } else {
                // The window's oldest: a full window may have more before it.
                let full = r.get::<_, i64>(5) >= big(scan);
                return Ok((found, full.then_some(cursor)));
            }
        }
        Ok((found, None))
    }

    /// Up to `limit` events received before `before` (or the newest) and at or after `since_ms`,
    /// newest first, without their bodies.
    pub async fn events_before(
        &self,
        before: Option<&crate::EventCursor>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<crate::EventHead>> {
        let client = self.client().await?;
        let (ms, id) = match before {
            Some(c) => (big(c.received_at_ms), c.event_id.as_str()),
            None => (i64::MAX, ""),
        };
        let rows = client
            .rows(
                "SELECT id, event_type, source, received_at_ms, disposition FROM events
                 WHERE (received_at_ms < $1 OR (received_at_ms = $1 AND id < $2)) AND received_at_ms >= $3
                 ORDER BY received_at_ms DESC, id DESC LIMIT $4",
                &[&ms, &id, &big(since_ms), &big(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(crate::EventHead {
                    id: r.get(0),
                    event_type: r.get(1),
                    source: r.get(2),
                    received_at_ms: r.get::<_, i64>(3) as u64,
                    disposition: decode(r.get::<_, &[u8]>(4), "event")?,
                })
            })
            .collect()
    }

    /// Looks at up to `batch` jobs waiting for `target` (in due order, after `from`) and takes out
    /// those `decide` does not keep: queued again as rewritten, or dead-lettered. Returns how many
    /// were taken out, and where the next pass goes on (none: the end was reached).
    pub async fn sweep_queue(
        &self,
        target: &str,
        from: Option<&crate::QueueCursor>,
        batch: usize,
        now_ms: u64,
        mut decide: impl FnMut(&Job) -> crate::Sweep,
    ) -> Result<(usize, Option<crate::QueueCursor>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (due, id) = from.and_then(crate::QueueCursor::position).unwrap_or((-1, -1));
        let rows = tx
            .rows(
                "SELECT job FROM jobs WHERE target = $1 AND lease IS NULL AND (due_at_ms, id) > ($2, $3)
                 ORDER BY due_at_ms, id LIMIT $4 FOR UPDATE SKIP LOCKED",
                &[&target, &due, &id, &big(batch)],
            )
            .await?;
        let mut queued = Vec::with_capacity(rows.len());
        for row in &rows {
            queued.push(decode::<Job>(row.get::<_, &[u8]>(0), "job")?);
        }
        let delivered = delivered_rounds(&tx, &queued).await?;
        let (mut moved, mut last) = (0, None);
        for job in queued {
            last = Some(crate::QueueCursor::at(job.due_at_ms, job.id));
            if delivered.contains(&job.id) {
                // A member of an `any` group delivered meanwhile: stood down, as on sled.
                tx.exec("DELETE FROM jobs WHERE id = $1", &[&big(job.id)]).await?;
                append(&tx, &job, Outcome::Cancelled, now_ms).await?;
                moved += 1;
                continue;
            }
            match decide(&job) {
                crate::Sweep::Keep => continue,
                crate::Sweep::Reroute(rewritten, reason) => {
                    tx.exec(
                        "UPDATE jobs SET target = $2, due_at_ms = $3, job = $4 WHERE id = $1",
                        &[&big(job.id), &rewritten.target, &big(rewritten.due_at_ms), &encode(&*rewritten)?],
                    )
                    .await?;
                    append(&tx, &job, Outcome::Rerouted { to: rewritten.target.clone(), reason }, now_ms).await?;
                }
                crate::Sweep::DeadLetter(reason) => {
                    tx.exec("DELETE FROM jobs WHERE id = $1", &[&big(job.id)]).await?;
                    bury(&tx, &job, &reason, now_ms).await?;
                }
            }
            moved += 1;
        }
        tx.commit().await?;
        Ok((moved, if rows.len() == batch { last } else { None }))
    }

    /// Records who listens to each inbox here (`here`: the inboxes this replica counts as
    /// online), and returns every inbox's listeners on the other replicas. A replica's rows stay
    /// fresh while it beats; rows of replicas gone a week are dropped.
    pub async fn share_presence(&self, here: &[crate::PresenceBeat]) -> Result<Vec<crate::RemotePresence>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Said again within a second: nothing to wait for the disk for.
        settle_without_waiting(&tx).await?;
        let inboxes: Vec<&str> = here.iter().map(|b| b.inbox.as_str()).collect();
        let listeners: Vec<i32> = here.iter().map(|b| b.listeners as i32).collect();
        let offered: Vec<i32> = here.iter().map(|b| b.offered as i32).collect();
        tx.exec(
            &format!(
                "INSERT INTO presence (inbox, replica, seen_at_ms, listeners, offered)
                 SELECT b.inbox, $1, {DB_NOW_MS}, b.listeners, b.offered
                 FROM unnest($2::text[], $3::int[], $4::int[]) AS b(inbox, listeners, offered)
                 ON CONFLICT (inbox, replica) DO UPDATE
                 SET seen_at_ms = excluded.seen_at_ms, listeners = excluded.listeners, offered = excluded.offered"
            ),
            &[&self.replica, &inboxes, &listeners, &offered],
        )
        .await?;
        tx.exec(&format!("DELETE FROM presence WHERE seen_at_ms < {DB_NOW_MS} - 604800000"), &[]).await?;
        let fresh = format!("seen_at_ms >= {DB_NOW_MS} - {}", crate::PRESENCE_FRESH_MS);
        // Ages, not times: the database's clock and this replica's may differ.
        let rows = tx
            .rows(
                &format!(
                    "SELECT inbox, {DB_NOW_MS} - max(seen_at_ms), bool_or({fresh}),
                            coalesce(sum(listeners) FILTER (WHERE {fresh}), 0)::bigint,
                            coalesce(sum(offered) FILTER (WHERE {fresh}), 0)::bigint
                     FROM presence WHERE replica <> $1 GROUP BY inbox"
                ),
                &[&self.replica],
            )
            .await?;
        tx.commit().await?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        Ok(rows
            .iter()
            .map(|r| crate::RemotePresence {
                inbox: r.get(0),
                last_seen_ms: now.saturating_sub(r.get::<_, i64>(1).max(0) as u64),
                online: r.get(2),
                listeners: r.get::<_, i64>(3).max(0) as usize,
                offered: r.get::<_, i64>(4).max(0) as usize,
            })
            .collect())
    }

    /// Queued jobs and dead letters per target.
    pub async fn counts(&self) -> Result<crate::TargetCounts> {
        let client = self.client().await?;
        let mut counts = crate::TargetCounts::default();
        for row in client.rows("SELECT target, count(*) FROM jobs WHERE lease IS NULL GROUP BY target", &[]).await? {
            counts.queued.insert(row.get(0), row.get(1));
        }
        for row in client.rows("SELECT target, count(*) FROM dead_letters GROUP BY target", &[]).await? {
            counts.dead.insert(row.get(0), row.get(1));
        }
        Ok(counts)
    }

    /// Jobs waiting (not leased) for `target`.
    pub async fn queued(&self, target: &str) -> Result<usize> {
        let client = self.client().await?;
        let row = client.row("SELECT count(*) FROM jobs WHERE target = $1 AND lease IS NULL", &[&target]).await?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    /// Rows moved aside because they did not decode.
    pub async fn quarantined(&self) -> Result<usize> {
        let client = self.client().await?;
        Ok(client.row("SELECT count(*) FROM quarantine", &[]).await?.get::<_, i64>(0) as usize)
    }

    /// Jobs leased and not settled, across replicas.
    pub async fn in_flight(&self) -> Result<usize> {
        let client = self.client().await?;
        let row = client.row("SELECT count(*) FROM jobs WHERE lease IS NOT NULL", &[]).await?;
        Ok(row.get::<_, i64>(0) as usize)
    }
}

/// `n` fresh values of a sequence, in one round trip.
async fn next_ids(client: &impl GenericClient, sequence: &str, n: usize) -> Result<Vec<JobId>> {
    let rows = client
        .rows("SELECT nextval($1::text::regclass) FROM generate_series(1, $2::bigint)", &[&sequence, &big(n)])
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as JobId).collect())
}

/// Records an event; false if its id is there already.
pub(super) async fn insert_event(client: &impl GenericClient, event: &EventRecord) -> Result<bool> {
    let inserted = client
        .exec(
            "INSERT INTO events (id, received_at_ms, event_type, source, disposition, body)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            &[
                &event.id,
                &big(event.received_at_ms),
                &event.event_type,
                &event.source,
                &encode(&event.disposition)?,
                &event.body,
            ],
        )
        .await?;
    Ok(inserted == 1)
}

pub(super) async fn insert_job(client: &impl GenericClient, job: &Job) -> Result<()> {
    client
        .exec(
            "INSERT INTO jobs (id, event_id, target, due_at_ms, job) VALUES ($1, $2, $3, $4, $5)",
            &[&big(job.id), &job.event_id, &job.target, &big(job.due_at_ms), &encode(job)?],
        )
        .await?;
    Ok(())
}

async fn append(client: &impl GenericClient, job: &Job, outcome: Outcome, at_ms: u64) -> Result<()> {
    insert_history(client, &job.event_id, job.received_at_ms, &history_entry(job, outcome, at_ms)).await
}

/// Appends `entry` to the history of the event `event_id` received at `received_at_ms`.
pub(super) async fn insert_history(
    client: &impl GenericClient,
    event_id: &str,
    received_at_ms: u64,
    entry: &crate::HistoryEntry,
) -> Result<()> {
    client
        .exec(
            "INSERT INTO history (event_id, received_at_ms, entry) VALUES ($1, $2, $3)",
            &[&event_id, &big(received_at_ms), &encode(entry)?],
        )
        .await?;
    Ok(())
}

/// Writes `job`'s dead letter with `error` and notes it in the event's history (the job row is the
/// caller's to remove).
async fn bury(client: &impl GenericClient, job: &Job, error: &str, now_ms: u64) -> Result<()> {
    let letter = DeadLetter { job: job.clone(), error: error.to_owned(), died_at_ms: now_ms };
    insert_dead_letter(client, &letter).await?;
    append(client, job, Outcome::DeadLettered { reason: error.to_owned() }, now_ms).await
}

pub(super) async fn insert_dead_letter(client: &impl GenericClient, letter: &DeadLetter) -> Result<()> {
    let job = &letter.job;
    client
        .exec(
            "INSERT INTO dead_letters (id, event_id, target, died_at_ms, letter) VALUES ($1, $2, $3, $4, $5)",
            &[&big(job.id), &job.event_id, &job.target, &big(letter.died_at_ms), &encode(letter)?],
        )
        .await?;
    Ok(())
}

/// Records that `delivered_by` delivered `group`'s round `round` of the event (the first success
/// stands).
pub(super) async fn insert_round(
    client: &impl GenericClient,
    event_id: &str,
    group: &str,
    round: JobId,
    delivered_by: &str,
) -> Result<()> {
    client
        .exec(
            "INSERT INTO group_rounds (event_id, grp, round, delivered_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&event_id, &group, &big(round), &delivered_by],
        )
        .await?;
    Ok(())
}

/// Removes the job if the caller still holds its lease.
async fn take_leased(client: &impl GenericClient, job: &Job) -> Result<bool> {
    let deleted =
        client.exec("DELETE FROM jobs WHERE id = $1 AND lease = $2", &[&big(job.id), &big(job.lease)]).await?;
    Ok(deleted == 1)
}

/// Retention runs once for the cluster, not once per replica: a replica sweeps only while it holds
/// this transaction-level advisory lock; the others find it taken and skip their pass.
pub(crate) const RETENTION_LOCK: i64 = 0x66616e6f75745f32; // "fanout_2"
const OWNERS_RETENTION_LOCK: i64 = 0x66616e6f75745f33; // "fanout_3"

/// Whether this transaction is the cluster's sweeper for `lock` (held until it ends).
async fn sweeper(client: &impl GenericClient, lock: i64) -> Result<bool> {
    Ok(client.row("SELECT pg_try_advisory_xact_lock($1)", &[&lock]).await?.get(0))
}

/// A settle's commit does not wait for the disk: the sled engine does not flush settles either.
/// One lost to a database crash leaves its job leased, so its lease expires and it is attempted
/// again — the at-least-once delivery every settle already allows. Ingest and leasing always
/// wait: an acknowledgement must be durable, and a lease number handed out must never be handed
/// out again (the sequence's advance could otherwise be lost with the commit).
async fn settle_without_waiting(tx: &deadpool_postgres::Transaction<'_>) -> Result<()> {
    tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await?;
    Ok(())
}

/// Whether the caller still holds `job`'s lease; the row stays locked until the transaction ends.
async fn holds_lease(client: &impl GenericClient, job: &Job) -> Result<bool> {
    let row = client
        .maybe_row("SELECT 1 FROM jobs WHERE id = $1 AND lease = $2 FOR UPDATE", &[&big(job.id), &big(job.lease)])
        .await?;
    Ok(row.is_some())
}

/// Serializes the settles of one `any` group's round across replicas: a member's success and a
/// sibling's retry never interleave (the retry would re-queue a member of a delivered group).
async fn lock_group(client: &impl GenericClient, job: &Job) -> Result<()> {
    let Some(key) = group_lock(job) else { return Ok(()) };
    client.exec("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&key]).await?;
    Ok(())
}

/// Which of `jobs` are members of an `any` round another member delivered, under the rounds'
/// locks. The locks are taken all at once and in one order: a transaction holding many jobs'
/// rows needs several, and two taking them in their rows' orders deadlocked. Held until the
/// transaction ends (taking one again later returns at once).
async fn delivered_rounds(client: &impl GenericClient, jobs: &[Job]) -> Result<std::collections::HashSet<JobId>> {
    let members: Vec<(&Job, &String)> = jobs
        .iter()
        .filter_map(|j| match &j.delivery {
            Delivery::AnyOf { group } => Some((j, group)),
            _ => None,
        })
        .collect();
    if members.is_empty() {
        return Ok(Default::default());
    }
    let mut keys: Vec<String> = jobs.iter().filter_map(group_lock).collect();
    keys.sort();
    keys.dedup();
    // A function scan yields the array in order, and the aggregate takes each lock as it comes.
    client
        .row("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) AS k", &[&keys])
        .await?;
    let ids: Vec<i64> = members.iter().map(|(j, _)| big(j.id)).collect();
    let events: Vec<&str> = members.iter().map(|(j, _)| j.event_id.as_str()).collect();
    let groups: Vec<&str> = members.iter().map(|(_, g)| g.as_str()).collect();
    let rounds: Vec<i64> = members.iter().map(|(j, _)| big(j.round())).collect();
    let rows = client
        .rows(
            "SELECT m.id FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS m(id, event_id, grp, round)
             WHERE EXISTS (SELECT 1 FROM group_rounds r
                           WHERE r.event_id = m.event_id AND r.grp = m.grp AND r.round = m.round)",
            &[&ids, &events, &groups, &rounds],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as JobId).collect())
}

/// The lock of `job`'s `any` group round, if it is in one.
fn group_lock(job: &Job) -> Option<String> {
    let Delivery::AnyOf { group } = &job.delivery else { return None };
    // Unit separators: a text parameter cannot hold NUL, and names never hold U+001F.
    Some(format!("{}\u{1f}{group}\u{1f}{}", job.event_id, job.round()))
}

/// Whether `job`'s `any` group was delivered, under the group's lock (see `lock_group`).
async fn group_delivered(client: &impl GenericClient, job: &Job) -> Result<bool> {
    let Delivery::AnyOf { group } = &job.delivery else { return Ok(false) };
    lock_group(client, job).await?;
    let row = client
        .maybe_row(
            "SELECT 1 FROM group_rounds WHERE event_id = $1 AND grp = $2 AND round = $3",
            &[&job.event_id, group, &big(job.round())],
        )
        .await?;
    Ok(row.is_some())
}

/// A job whose `any` group another member delivered: finished without an attempt.
async fn cancel(tx: deadpool_postgres::Transaction<'_>, job: &Job, now_ms: u64) -> Result<Settled> {
    if take_leased(&tx, job).await? {
        append(&tx, job, Outcome::Cancelled, now_ms).await?;
    }
    tx.commit().await?;
    Ok(Settled::CancelledByGroup)
}

/// What [`event_of`] reads.
pub(super) const EVENT_COLUMNS: &str = "id, received_at_ms, event_type, source, disposition, body";

/// An event from a row of [`EVENT_COLUMNS`].
pub(super) fn event_of(row: &tokio_postgres::Row) -> Result<EventRecord> {
    Ok(EventRecord {
        id: row.get(0),
        received_at_ms: row.get::<_, i64>(1) as u64,
        event_type: row.get(2),
        source: row.get(3),
        disposition: decode(row.get::<_, &[u8]>(4), "event")?,
        body: row.get(5),
    })
}

/// An owner from a row whose columns from `first` are destinations, via, event_id, at_ms.
pub(super) fn owner_of(row: &tokio_postgres::Row, first: usize) -> crate::Owner {
    crate::Owner {
        destinations: row.get(first),
        via: row.get(first + 1),
        event_id: row.get(first + 2),
        at_ms: row.get::<_, i64>(first + 3) as u64,
    }
}

/// A leased row (job, lease) as a job; None if it does not decode, and then it has been moved
/// to the quarantine (logged with its id) so the queue goes on.
async fn leased_job(client: &impl GenericClient, row: &tokio_postgres::Row) -> Result<Option<Job>> {
    let bytes: &[u8] = row.get(0);
    match decode::<Job>(bytes, "job") {
        Ok(mut job) => {
            job.lease = row.get::<_, i64>(1) as u64;
            Ok(Some(job))
        }
        Err(error) => {
            let lease: i64 = row.get(1);
            let moved = client
                .maybe_row("DELETE FROM jobs WHERE lease = $1 RETURNING id", &[&lease])
                .await?
                .map(|r| r.get::<_, i64>(0));
            client
                .exec(
                    "INSERT INTO quarantine (source, key, value) VALUES ('jobs', $1, $2)",
                    &[&moved.unwrap_or_default().to_string(), &bytes],
                )
                .await?;
            tracing::error!(job = ?moved, "{error}; moved to the quarantine, the rest goes on");
            Ok(None)
        }
    }
}

/// A `u64` (or `usize`) as Postgres' bigint, saturating: `u64::MAX`, "no bound", stays the
/// largest, never wraps to -1.
pub(super) fn big(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}
