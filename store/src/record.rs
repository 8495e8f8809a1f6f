//! The records fanout keeps, in domain terms. They are plain data so the proxy can build and read
//! them without knowing how they are laid out on disk.

use serde::{Deserialize, Serialize};

/// Unique, monotonic id of one delivery job (one event to one destination). Stable across
/// retries, so targets can use it to recognise a redelivery.
pub type JobId = u64;

/// One Stripe event as it was received, kept so every retry sends the original bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: String,
    pub event_type: String,
    /// Name of the configured source (endpoint) that received it.
    pub source: String,
    pub received_at_ms: u64,
    pub disposition: Disposition,
    /// The raw body, byte for byte as Stripe sent it: re-signing depends on it. Encoded as one
    /// byte string (the same bytes on disk as a sequence of u8, without a call per byte).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// What routing decided for an event; kept so an operator can ask why an event went where it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// Sent to these destinations.
    Routed { destinations: Vec<Routed> },
    /// A rule said to drop it: acknowledged to Stripe, delivered nowhere.
    Dropped { rule: String },
    /// No rule matched and there is no default destination.
    Unrouted,
}

/// One destination routing chose, the rule that chose it, and how many jobs were queued for it
/// (one, or one per member of an `any` group): an event's state needs to know of jobs that have
/// not been tried yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed {
    pub destination: String,
    pub rule: String,
    pub jobs: u32,
}

/// How a job's destination counts as delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// A plain target: it must succeed on its own.
    Target,
    /// One member of an `any` group: every member is tried in parallel and the first success
    /// cancels the others.
    AnyOf { group: String },
    /// A `failover` group: one job walks the members in order, `member` is the current one.
    Failover { group: String, members: Vec<String>, member: usize },
    /// A developer's inbox with somewhere to go while nobody listens: held in the inbox, and moved
    /// on to `fallback` (a target, or a failover group's members in order) once no listener has
    /// been connected for `offline_after_ms`. Without a fallback an inbox job is a plain `Target`.
    Inbox { fallback: Vec<String>, offline_after_ms: u64 },
}

/// One event on its way to one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub event_id: String,
    /// The target this job is queued for now (for failover groups it changes between attempts).
    pub target: String,
    pub delivery: Delivery,
    /// Name of the routing rule that sent the event here.
    pub rule: String,
    /// Attempts made so far.
    pub attempt: u32,
    pub created_at_ms: u64,
    pub due_at_ms: u64,
    pub last_error: Option<String>,
    /// For an `any` group member: the other members' jobs (target, id), cancelled by the first
    /// success.
    pub siblings: Vec<(String, JobId)>,
    /// The ingest that wrote this job. Jobs are queued before their ingest commits, so a worker
    /// delivers one only once the event's index names this ingest (see `Store::event_for`).
    pub ingest: u64,
    /// Queued by an operator's replay, not by Stripe's delivery: targets are told so.
    pub replay: bool,
    /// When the event arrived (for a replay too): history is kept in arrival order beside it, and
    /// a job whose event retention removed can say so.
    pub received_at_ms: u64,
    /// The lease this copy was handed out under (0: none), set by `lease_due`. Not stored: a
    /// settle names its lease with it, so a late settle of an expired lease never acts on a
    /// newer one.
    #[serde(skip)]
    pub lease: u64,
}

impl Job {
    /// The destination routing chose, as recorded in the event's disposition: the target, or
    /// the group the job was queued through.
    pub fn destination(&self) -> &str {
        match &self.delivery {
            Delivery::Target | Delivery::Inbox { .. } => &self.target,
            Delivery::AnyOf { group } | Delivery::Failover { group, .. } => group,
        }
    }

    /// The `any` round this job belongs to: the lowest job id among the members queued together,
    /// so a replay to a group that was delivered before is a new round, not cancelled by the old
    /// one's success.
    pub fn round(&self) -> JobId {
        self.siblings.iter().map(|(_, id)| *id).chain([self.id]).min().unwrap_or(self.id)
    }
}

/// What a worker finds for a leased job's event (see `Store::event_for`).
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// The job's ingest committed: deliver this.
    Ready(EventRecord),
    /// No copy of the event has committed: its ingest is still writing, or died before committing.
    Uncommitted,
    /// Another copy of the event committed: this job belongs to a copy that lost the race (or to
    /// one cut short by a crash) and must never be delivered.
    Superseded,
}

/// A job to create at ingest; the store assigns its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub target: String,
    pub delivery: Delivery,
    pub rule: String,
}

/// The fields of an [`EventRecord`] before its body: what a listing needs, read without copying
/// the body (postcard writes fields in order, so a record's prefix decodes as this).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EventHead {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub received_at_ms: u64,
    pub disposition: Disposition,
}

/// One line of an event's history: an attempt, or what became of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ms: u64,
    pub job: JobId,
    /// The target the job was queued for at the time.
    pub target: String,
    /// The destination routing chose (the target, or its group).
    pub destination: String,
    /// The attempt number (0 for entries that are not attempts).
    pub attempt: u32,
    pub replay: bool,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The target answered 2xx.
    Delivered { status: u16, latency_ms: u64 },
    /// The attempt failed; `status` is the HTTP status if there was an answer. `retry_at_ms` is
    /// when the next attempt is due (none if the job was dead-lettered instead).
    Failed { status: Option<u16>, latency_ms: u64, error: String, retry_at_ms: Option<u64> },
    /// Gave up: moved to the dead letters.
    DeadLettered { reason: String },
    /// Another member of its `any` group delivered the event first.
    Cancelled,
    /// Dropped without delivery (its event was never committed, or a racing copy was).
    Discarded { reason: String },
    /// Queued again by an operator (replay of the event or of a dead letter).
    Replayed,
    /// Taken out of the queue by an operator (dead letter purged).
    Purged,
    /// Moved to another target without an attempt (an inbox nobody listened to, to its fallback).
    Rerouted { to: String, reason: String },
}

/// What [`Store::sweep_queue`](crate::Store::sweep_queue) does with one queued job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sweep {
    Keep,
    /// Moved without an attempt: back in a queue as rewritten (another target, delivery or due
    /// time), with the reason logged in its history.
    Reroute(Box<Job>, String),
    DeadLetter(String),
}

/// What an ingest claims for sticky ownership: `owner` for each of `ids`. An id already owned the
/// same way, claimed less than `refresh_after_ms` ago, is not written again: most events of a
/// flow reference the same customer and subscription, and a sled write costs far more than a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub ids: Vec<String>,
    pub owner: Owner,
    pub refresh_after_ms: u64,
}

/// Which environment owns a Stripe object (a customer, subscription, invoice...): events that no
/// rule routes but that reference it go there (sticky ownership routing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Destination names (targets or groups), as routing chose them.
    pub destinations: Vec<String>,
    /// How it was decided: the rule's name, `owner:<id>` when inherited from a referenced
    /// object, or `manual`.
    pub via: String,
    /// The event that claimed it (none when set by hand).
    pub event_id: Option<String>,
    /// Last claimed; ownership expires with retention after this.
    pub at_ms: u64,
}

/// A job that gave up, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub job: Job,
    pub error: String,
    pub died_at_ms: u64,
}

/// The jobs of one event, due at `at_ms`, taking their ids from `ids` (one per `new`, in order).
/// Each `any` member knows its siblings, so the first success can cancel them. Every engine
/// builds its jobs here, so they carry the same state.
pub(crate) fn build_jobs(
    event_id: &str,
    new: &[NewJob],
    ids: &[JobId],
    at_ms: u64,
    received_at_ms: u64,
    ingest: u64,
    replay: bool,
) -> Vec<Job> {
    let mut jobs: Vec<Job> = new
        .iter()
        .zip(ids)
        .map(|(n, &id)| Job {
            id,
            event_id: event_id.to_owned(),
            target: n.target.clone(),
            delivery: n.delivery.clone(),
            rule: n.rule.clone(),
            attempt: 0,
            created_at_ms: at_ms,
            due_at_ms: at_ms,
            last_error: None,
            siblings: Vec::new(),
            ingest,
            replay,
            received_at_ms,
            lease: 0,
        })
        .collect();
    let members: Vec<(String, JobId, Delivery)> =
        jobs.iter().map(|j| (j.target.clone(), j.id, j.delivery.clone())).collect();
    for job in &mut jobs {
        if matches!(job.delivery, Delivery::AnyOf { .. }) {
            job.siblings = members
                .iter()
                .filter(|(_, id, d)| *id != job.id && *d == job.delivery)
                .map(|(target, id, _)| (target.clone(), *id))
                .collect();
        }
    }
    jobs
}

/// The job a dead letter becomes when an operator revives it, given its new id: attempts from
/// zero, due at `now_ms`, a failover group from its first member, an `any` member in its original
/// round (its siblings kept), marked as a replay.
pub(crate) fn revived(dead: &Job, id: JobId, now_ms: u64) -> Job {
    let mut job = dead.clone();
    if let Delivery::Failover { members, member, .. } = &mut job.delivery {
        *member = 0;
        job.target = members[0].clone();
    }
    let new = NewJob { target: job.target.clone(), delivery: job.delivery.clone(), rule: job.rule.clone() };
    let mut revived = build_jobs(&job.event_id, &[new], &[id], now_ms, job.received_at_ms, job.ingest, true).remove(0);
    revived.siblings = dead.siblings.clone();
    revived
}

/// A developer inbox created at run time (`fanout inbox create`), kept in the store rather than
/// in routing.yaml, so a team of hundreds needs no config change per developer. The token that
/// opens it is kept only as its SHA-256 digest; the secret is kept, since every delivery is
/// signed with it. Stored as JSON: fields may be added without a migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRecord {
    pub name: String,
    /// Hex SHA-256 of the listen token.
    pub token_sha256: String,
    pub secret: String,
    /// Events older than this are dead-lettered rather than offered (none: the config's `retry`).
    pub max_age_ms: Option<u64>,
    /// Where its events go while nobody listens, after how long.
    pub offline_fallback: Option<String>,
    pub offline_after_ms: Option<u64>,
    pub created_at_ms: u64,
}
