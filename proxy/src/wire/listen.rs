//! The listen protocol between `fanout listen` and the proxy's webhook listener.
//!
//! - `GET  {PATH_PREFIX}/events?wait=25&max=10[&types=invoice.*,...]` → [`Polled`]
//! - `POST {PATH_PREFIX}/answer` with an [`Answer`] → [`Settled`]
//! - `GET  {PATH_PREFIX}/secret` → [`InboxSecret`]
//! - `GET  {PATH_PREFIX}` → [`InboxInfo`]

use serde::{Deserialize, Serialize};

pub const PATH_PREFIX: &str = "/fanout/inbox";

/// Most event type patterns one listener may give (`types=`).
pub const MAX_TYPES: usize = 50;

/// `types=invoice.*,customer.subscription.*` on a poll: the event types a listener takes (glob
/// patterns; none: every type). Checked by `fanout listen` before it connects and by the proxy.
pub fn parse_types(value: &str) -> Result<Vec<String>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let patterns: Vec<String> = value.split(',').map(|p| p.trim().to_owned()).collect();
    if patterns.len() > MAX_TYPES {
        return Err(format!("at most {MAX_TYPES} event type patterns"));
    }
    if patterns.iter().any(|p| p.is_empty() || p.len() > 200 || p.contains(char::is_whitespace)) {
        return Err(format!("{value:?}: give event types or globs like invoice.*, separated by commas"));
    }
    Ok(patterns)
}

/// Names the `fanout listen` process, so two terminals on one inbox count as two listeners.
pub const LISTENER_HEADER: &str = "fanout-listener";

/// One event offered to a listener: forward `body` with `headers` (a fresh `Stripe-Signature` made
/// with the inbox's secret among them), then answer for `id`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Offered {
    pub id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub attempt: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A poll's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Polled {
    pub inbox: String,
    /// How long the listener should give the local app per event.
    pub timeout_ms: u64,
    pub deliveries: Vec<Offered>,
}

/// What became of one offered event at the local app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    /// The local app's HTTP status; none if it could not be reached.
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settled {
    pub settled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxSecret {
    pub inbox: String,
    pub secret: String,
}

/// An inbox and who listens to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxInfo {
    pub inbox: String,
    pub listening: Option<Presence>,
}

/// Whether a listener is connected to an inbox (also shown per target by the admin API).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Presence {
    pub online: bool,
    pub listeners: usize,
    pub last_seen_ms: Option<u64>,
    pub offered: usize,
}
