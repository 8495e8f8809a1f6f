//! The configuration the proxy runs on: `routing.yaml` parsed once into typed structs
//! (`raw.rs`, unknown keys refused), then resolved (`resolve.rs`: `${VAR}`, durations, names to
//! indices) before anything starts. Every stage reads these resolved types, never the YAML.

mod describe;
mod inboxes;
mod raw;
mod resolve;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

pub use describe::describe;
pub use inboxes::valid_name;
use raw::RawConfig;
pub use raw::DEFAULT_AFFINITY_FIELDS;
use resolve::Resolver;

use crate::route::{Offline, Router};

/// fanout's own paths on the webhook listener (the listen protocol of developers' inboxes); no
/// source may take them.
pub use crate::wire::listen::PATH_PREFIX as INBOX_PATH;

/// The reserved destination name that acknowledges and records an event but delivers it nowhere.
pub const DROP: &str = "drop";

/// A webhook signing secret. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, compared as SHA-256 digests in constant time, so neither
    /// its bytes nor its length leak through timing. Every token check goes through here.
    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        let (given, own) = (sha2::Sha256::digest(given.as_bytes()), sha2::Sha256::digest(self.0.as_bytes()));
        bool::from(own.ct_eq(&given))
    }
}

impl AsRef<[u8]> for Secret {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key-type prefix (`whsec_`, `sk_`) says which secret it is without revealing any of it.
        match self.0.split_once('_') {
            Some((prefix, rest))
                if !rest.is_empty() && prefix.len() <= 6 && prefix.chars().all(|c| c.is_ascii_lowercase()) =>
            {
                write!(f, "{prefix}_…(redacted)")
            }
            _ => f.write_str("…(redacted)"),
        }
    }
}

/// A name from the file, quoted for an error message — unless it looks like a pasted secret
/// (`whsec_…`, `sk_…`, `rk_…`), which errors must not repeat.
fn shown(value: &str) -> String {
    if ["whsec_", "sk_", "rk_"].iter().any(|p| value.starts_with(p)) {
        format!("\"{}\" (it looks like a secret)", Secret::new(value))
    } else {
        format!("{value:?}")
    }
}

/// The configuration every stage reads, swapped whole by a reload: a reader sees the old or the
/// new config, never a mix.
pub type LiveConfig = std::sync::Arc<arc_swap::ArcSwap<Config>>;

/// The resolved configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where events and queues live: sled in `data_dir` (the default), or Postgres.
    pub store: StoreConfig,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    /// Connections served at once per listener; more are closed as they arrive, so slow or idle
    /// clients cannot exhaust file descriptors.
    pub max_connections: usize,
    pub body_read_timeout: Duration,
    /// How long events, their history, dead letters and dedup entries are kept.
    pub retention: Duration,
    /// How long in-flight deliveries may run on after SIGTERM before they are cut off and leased
    /// back to the queue.
    pub shutdown_grace: Duration,
    /// Inbound TLS: PEM files for the webhook listener.
    pub tls: Option<TlsFiles>,
    pub admin: Admin,
    pub sources: Vec<Source>,
    pub targets: Vec<Target>,
    pub router: Router,
    /// The top-level `retry`: what an inbox created at run time gets.
    pub retry: RetryPolicy,
}

impl Config {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The inbox a `fanout listen` token opens. Every inbox's token is compared, in constant
    /// time, so neither the match nor its position leaks through timing.
    pub fn inbox_for_token(&self, token: &str) -> Option<&Target> {
        // Hashed once, for every inbox created at run time to be compared with.
        let digest = token_digest(token);
        let mut found = None;
        for t in &self.targets {
            if matches!(&t.endpoint, Endpoint::Inbox { token: own } if own.matches_hashed(token, &digest)) {
                found = Some(t);
            }
        }
        found
    }
}

/// Connections per replica when `store: {engine: postgres}` does not say.
pub const DEFAULT_POOL: usize = 16;

/// Whether `url` names a Postgres database (what `store.url` and `--database-url` accept).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The store engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Embedded, in `data_dir`.
    Sled,
    /// Shared by any number of replicas. The URL may hold a password, so it is a `Secret`. With
    /// `sslmode=require` the connection is TLS, verified against the platform's roots and `ca`.
    Postgres { url: Secret, pool: usize, ca: Option<PathBuf> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The operator API's listener.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token every request except health checks must carry; required off loopback.
    pub token: Option<Secret>,
}

impl Admin {
    /// No token off loopback. Checked when the file is read, and again on the config that is
    /// actually served (after `--admin-listen`, and after a reload, which keeps the listener).
    pub fn check(&self) -> Result<(), String> {
        if self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "admin.listen is {}, not loopback, and there is no admin.token: anyone who reaches it could \
                 replay and purge events. Set admin.token (e.g. ${{FANOUT_ADMIN_TOKEN}}) or listen on 127.0.0.1",
                self.listen
            ));
        }
        if self.token.as_ref().is_some_and(|t| t.0.len() < 16) {
            return Err("admin.token must be at least 16 characters".to_owned());
        }
        Ok(())
    }
}

/// One Stripe webhook endpoint fanout answers on.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub path: String,
    /// Every secret that currently signs for this endpoint (more than one during a rotation).
    pub secrets: Vec<Secret>,
    pub tolerance: Duration,
    pub allow_livemode: bool,
}

/// One environment's webhook endpoint, or a developer's inbox.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
    /// The secret the target's own Stripe SDK verifies with; every attempt is signed with it.
    pub secret: Secret,
    pub timeout: Duration,
    pub concurrency: usize,
    /// At most this many attempts started per period, with this burst (per replica).
    pub rate: Option<Rate>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// An extra CA (PEM) trusted for this target besides the platform's roots: internal staging
    /// often has a private CA.
    pub ca: Option<PathBuf>,
    /// For an inbox: where its events go while nobody listens, unless the route says otherwise.
    pub offline: Option<Offline>,
}

/// A target's rate limit: `count` attempts per `per`, up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

/// Where a target's deliveries go.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// POSTed to this URL.
    Url(http::Uri),
    /// Queued until a `fanout listen` holding this token fetches them (a laptop behind NAT
    /// cannot be posted to).
    Inbox { token: InboxToken },
}

/// What opens an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxToken {
    /// Written in routing.yaml.
    Plain(Secret),
    /// An inbox created at run time: only the token's hex SHA-256 is kept.
    Digest(String),
}

impl InboxToken {
    /// Compared in constant time either way (see [`Secret::matches`]).
    pub fn matches(&self, given: &str) -> bool {
        self.matches_hashed(given, &token_digest(given))
    }

    /// [`InboxToken::matches`] with the given token's digest already made.
    fn matches_hashed(&self, given: &str, digest: &str) -> bool {
        match self {
            InboxToken::Plain(own) => own.matches(given),
            InboxToken::Digest(hex) => {
                use subtle::ConstantTimeEq;
                bool::from(digest.as_bytes().ct_eq(hex.as_bytes()))
            }
        }
    }
}

/// The hex SHA-256 of an inbox token: what the store keeps of it.
pub fn token_digest(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A URL as logs, `fanout check`, the admin API and the console show it: a password or token in
/// its user info or query string (`https://user:pw@host/hook?key=…`) is not shown.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.find(['/', '?', '#']).map_or((rest, ""), |i| rest.split_at(i));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => authority.to_owned(),
    };
    let path = match path.find(['?', '#']) {
        Some(i) => format!("{}?…", &path[..i]),
        None => path.to_owned(),
    };
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{scheme}{authority}{path}")
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(url) => f.write_str(&shown_url(&url.to_string())),
            Endpoint::Inbox { .. } => f.write_str("inbox (fetched by fanout listen)"),
        }
    }
}

impl Target {
    pub fn is_inbox(&self) -> bool {
        matches!(self.endpoint, Endpoint::Inbox { .. })
    }

    /// An inbox created at run time (`fanout inbox create`), not written in routing.yaml.
    pub fn is_created_inbox(&self) -> bool {
        matches!(self.endpoint, Endpoint::Inbox { token: InboxToken::Digest(_) })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before a job is dead-lettered (for a failover group: rounds through its members).
    pub max_attempts: Option<u32>,
    /// Age after which a job is dead-lettered whatever its attempts (Stripe's own: 3 days).
    pub max_age: Duration,
    pub initial_delay: Duration,
    /// The longest delay between two attempts (with a schedule: its longest step).
    pub max_delay: Duration,
    /// Delays before retry 1, 2, ... (the last repeats), instead of exponential backoff from
    /// `initial_delay` when not empty.
    pub schedule: Vec<Duration>,
}

/// When a target's circuit breaker opens and how it probes while open (see `deliver/breaker.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub enabled: bool,
    /// Consecutive failed attempts that open it ...
    pub failures: u32,
    /// ... or every attempt failed for this long.
    pub failing_for: Duration,
    /// The first probe comes this long after it opens; the interval doubles up to the max.
    pub probe_interval: Duration,
    pub max_probe_interval: Duration,
}

/// A configuration problem, with where it is and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Config {
    /// Parses `text` (named `file` in errors), looking `${VAR}`s up with `env`. Files it names
    /// (TLS, a target's CA) are not looked at; [`Config::parse_checking`] does.
    pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse_checking(file, text, env, |_| true)
    }

    /// [`Config::parse`], with `is_file` telling whether a file it names can be read. The caller
    /// asks the system (`reload::load`); this module does no I/O.
    pub fn parse_checking(
        file: &str,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        is_file: impl Fn(&Path) -> bool,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: e.location().map(|l| l.line()),
            message: format!("{e}"),
        })?;
        Resolver { file, text, env: &env, is_file: &is_file }.resolve(raw)
    }
}

#[cfg(test)]
mod tests;
