//! The admin API's answers (and its one request body), read back by the CLI's operator verbs.
//! Times are RFC 3339 strings in UTC; ids of jobs and dead letters are decimal strings (they are
//! u64s, and JSON numbers lose precision past 2^53 in many clients).

use serde::{Deserialize, Serialize};

use super::listen::Presence;

/// One destination of an event and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DestinationSummary {
    pub name: String,
    pub rule: String,
    pub state: String,
}

/// An event in a listing: where it went and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub received_at: String,
    /// pending, delivered, dead, dropped or unrouted.
    pub state: String,
    pub dropped_by: Option<String>,
    pub destinations: Vec<DestinationSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<EventSummary>,
    pub next_cursor: Option<String>,
}

/// One event in full: every attempt and what became of each job, and the body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub summary: EventSummary,
    pub attempts: Vec<Attempt>,
    pub body: serde_json::Value,
}

/// An entry of an event's history: an attempt, or what became of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub at: String,
    pub job: String,
    pub target: String,
    pub destination: String,
    pub attempt: u32,
    pub replay: bool,
    /// delivered, failed, dead_lettered, cancelled, discarded, replay_queued, purged, rerouted.
    pub outcome: String,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub retry_at: Option<String>,
    /// Where a rerouted job went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// An event taken in through `POST /events` (backfill).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ingested {
    pub id: String,
    pub duplicate: bool,
}

/// A job queued by a replay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuedJob {
    pub job: String,
    pub target: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Replayed {
    pub replayed: u64,
    pub jobs: Vec<QueuedJob>,
}

/// An item a batch operation left alone, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub why: String,
}

/// One call of a bulk replay or purge. `next_cursor`: where the next call goes on; `upto`: where
/// a dead-letter pass ends (the letters that existed when it began).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<u64>,
    pub skipped: Vec<Skipped>,
    pub next_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upto: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub event_id: String,
    pub target: String,
    pub destination: String,
    pub attempts: u32,
    pub error: String,
    pub created_at: String,
    pub died_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLettersPage {
    pub dead_letters: Vec<DeadLetter>,
    pub next_cursor: Option<String>,
}

/// One dead letter replayed or purged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeadLetterDone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A target and where its deliveries stand.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetInfo {
    pub name: String,
    pub url: String,
    pub inbox: Option<Presence>,
    pub paused: bool,
    pub queued: i64,
    pub in_flight: usize,
    pub dead_letters: i64,
    pub oldest_due_age_s: Option<u64>,
    pub concurrency: usize,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_error: Option<String>,
    /// Its circuit breaker (none for an inbox).
    pub breaker: Option<BreakerInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BreakerInfo {
    pub state: CircuitState,
    /// Failed attempts in a row.
    pub failures: u32,
    pub open_since: Option<String>,
    pub next_probe: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CircuitState {
    Closed,
    /// The queue held until the next probe.
    Open,
    /// The queue held while one probe runs.
    Probing,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::Probing => "probing",
        }
    }
}

/// `POST /targets/{name}/reset`: the breaker closed by hand.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BreakerReset {
    pub target: String,
    pub was_open: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Targets {
    pub targets: Vec<TargetInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Paused {
    pub target: String,
    pub paused: bool,
}

/// Who owns an object (sticky ownership), and since when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnerInfo {
    pub id: String,
    pub owner: Vec<String>,
    /// The rule that claimed it, or `manual`.
    pub via: String,
    pub event_id: Option<String>,
    pub since: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnersPage {
    pub owners: Vec<OwnerInfo>,
    pub next_cursor: Option<String>,
}

/// `PUT /owners/{id}`: `{"owner": "alice"}` or a list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetOwner {
    pub owner: OneOrMany,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(d) => vec![d],
            OneOrMany::Many(d) => d,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Disowned {
    pub id: String,
    pub disowned: bool,
}

/// `POST /inboxes`: a developer's inbox, created at run time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInbox {
    pub name: String,
    /// `1d`: events older than this are dead-lettered rather than offered (default: `retry.max_age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// A target (not an inbox) or failover group that takes its events while nobody listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_fallback: Option<String>,
    /// How long nobody must have listened first (default `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_after: Option<String>,
}

/// A created or rotated inbox: the only answer that shows its token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxCredentials {
    pub inbox: String,
    pub token: String,
    pub secret: String,
}

/// An inbox as `GET /inboxes` shows it (never its token or secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxOut {
    pub name: String,
    /// Created at run time (`fanout inbox create`), not written in routing.yaml.
    pub created_at_run_time: bool,
    pub created_at: Option<String>,
    pub online: bool,
    pub listeners: usize,
    pub queued: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxesList {
    pub inboxes: Vec<InboxOut>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxDeleted {
    pub inbox: String,
    /// Its queued events went to the dead letters, saying so.
    pub queued_to_dead_letters: i64,
}
