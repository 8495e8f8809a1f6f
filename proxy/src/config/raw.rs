//! `routing.yaml` as written: serde types with their defaults, unknown keys refused. Nothing here
//! is checked beyond the YAML's shape; `resolve.rs` turns it into the config the proxy runs on.

use serde::Deserialize;
use serde_json::Value;

use crate::route::GroupMode;
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: String,
    #[serde(default = "default_max_body")]
    pub(super) max_body_bytes: usize,
    #[serde(default = "default_header_timeout")]
    pub(super) header_read_timeout: String,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_body_timeout")]
    pub(super) body_read_timeout: String,
    #[serde(default = "default_retention", alias = "dedup_retention")]
    pub(super) retention: String,
    #[serde(default = "default_shutdown_grace")]
    pub(super) shutdown_grace: String,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    pub(super) sources: Vec<RawSource>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) breaker: RawBreaker,
    #[serde(default)]
    pub(super) targets: Vec<RawTarget>,
    #[serde(default)]
    pub(super) groups: Vec<RawGroup>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    pub(super) default: Option<OneOrMany<String>>,
    #[serde(default)]
    pub(super) affinity: RawAffinity,
    pub(super) store: Option<RawStore>,
}

/// `store: {engine: postgres, url: ..., pool: 16, ca: ...}`; absent: sled in `data_dir`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    pub(super) engine: RawEngine,
    pub(super) url: Option<String>,
    #[serde(default = "default_pool")]
    pub(super) pool: usize,
    /// A CA the database's certificate may chain to, beside the platform's roots.
    pub(super) ca: Option<String>,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawEngine {
    #[default]
    Sled,
    Postgres,
}

fn default_pool() -> usize {
    super::DEFAULT_POOL
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    pub(super) listen: String,
    pub(super) token: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { listen: default_admin_listen(), token: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) name: String,
    pub(super) path: String,
    pub(super) secrets: OneOrMany<String>,
    #[serde(default = "default_tolerance")]
    pub(super) tolerance: String,
    #[serde(default)]
    pub(super) allow_livemode: bool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_attempts: Option<u32>,
    pub(super) max_age: Option<String>,
    pub(super) initial_delay: Option<String>,
    pub(super) max_delay: Option<String>,
    /// Explicit delays before retry 1, 2, ...; the last repeats.
    pub(super) schedule: Option<Vec<String>>,
}

/// `breaker: {failures: 20, failing_for: 2m, probe_interval: 5s, max_probe_interval: 5m}`, or
/// `{enabled: false}`; each key unset inherits the level above.
#[derive(Deserialize, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub(super) enabled: Option<bool>,
    pub(super) failures: Option<u32>,
    pub(super) failing_for: Option<String>,
    pub(super) probe_interval: Option<String>,
    pub(super) max_probe_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: String,
    #[serde(default)]
    pub(super) kind: RawTargetKind,
    pub(super) url: Option<String>,
    /// An inbox's `fanout listen` token.
    pub(super) token: Option<String>,
    /// An inbox's own `offline` fallback, for routes without one and for ownership.
    pub(super) offline: Option<RawOffline>,
    pub(super) secret: String,
    #[serde(default = "default_target_timeout")]
    pub(super) timeout: String,
    #[serde(default = "default_concurrency")]
    pub(super) concurrency: usize,
    /// `50/s`, `600/m`, `1000/h`: attempts started at most this often.
    pub(super) rate: Option<String>,
    /// Attempts that may start at once after a quiet spell (default 1: evenly spaced).
    pub(super) burst: Option<u32>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) breaker: RawBreaker,
    pub(super) ca: Option<String>,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawTargetKind {
    #[default]
    Http,
    Inbox,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOffline {
    pub(super) after: String,
    pub(super) fallback: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAffinity {
    #[serde(default = "default_true")]
    pub(super) enabled: bool,
    pub(super) fields: Option<Vec<String>>,
}

impl Default for RawAffinity {
    fn default() -> Self {
        RawAffinity { enabled: true, fields: None }
    }
}

fn default_true() -> bool {
    true
}

/// The references sticky ownership follows by default: the object itself, then the objects it
/// points at, most specific first (the first owned one decides). An invoice names its subscription
/// under `parent.subscription_details` since API version 2025-03-31; a v2 thin event names its
/// object in `related_object`.
pub const DEFAULT_AFFINITY_FIELDS: [&str; 8] = [
    "data.object.id",
    "data.object.subscription",
    "data.object.parent.subscription_details.subscription",
    "data.object.invoice",
    "data.object.payment_intent",
    "data.object.charge",
    "data.object.customer",
    "related_object.id",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) name: String,
    pub(super) mode: GroupMode,
    pub(super) members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: String,
    #[serde(default)]
    pub(super) when: RawWhen,
    pub(super) to: Option<OneOrMany<String>>,
    #[serde(default)]
    pub(super) drop: bool,
    #[serde(default, rename = "continue")]
    pub(super) continue_matching: bool,
    /// For inbox destinations: what happens while nobody listens (default: hold).
    pub(super) offline: Option<RawOffline>,
    /// For `inbox:…` destinations: where an event goes whose named inbox does not exist
    /// (destinations, `drop` or `unrouted`; unset: as if the route had not matched).
    pub(super) unknown: Option<OneOrMany<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWhen {
    #[serde(rename = "type")]
    pub(super) event_type: Option<OneOrMany<String>>,
    pub(super) account: Option<OneOrMany<String>>,
    pub(super) livemode: Option<bool>,
    #[serde(default)]
    pub(super) fields: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawField {
    pub(super) path: OneOrMany<String>,
    pub(super) equals: Option<Value>,
    pub(super) any_of: Option<Vec<Value>>,
    pub(super) prefix: Option<String>,
    pub(super) exists: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub(super) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> String {
    "./data".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_header_timeout() -> String {
    "10s".into()
}
fn default_max_connections() -> usize {
    1024
}
fn default_body_timeout() -> String {
    "30s".into()
}
fn default_retention() -> String {
    "30d".into()
}
fn default_shutdown_grace() -> String {
    "10s".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_tolerance() -> String {
    "300s".into()
}
fn default_target_timeout() -> String {
    "10s".into()
}
fn default_concurrency() -> usize {
    8
}
