//! `routing.yaml`: parsed once into typed structs (unknown keys refused), `${VAR}` expanded,
//! durations parsed, names resolved to indices and checked, before anything starts. Every error
//! names the file, the line where it can find one, and what to fix.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;
use wildmatch::WildMatch;

use crate::route::{Action, Condition, Destination, DestinationKind, FieldTest, GroupMode, Offline, Router, Rule};

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
}

impl Config {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The inbox a `fanout listen` token opens. Every inbox's token is compared, in constant
    /// time, so neither the match nor its position leaks through timing.
    pub fn inbox_for_token(&self, token: &str) -> Option<&Target> {
        use subtle::ConstantTimeEq;
        let given = sha2::Sha256::digest(token.as_bytes());
        let mut found = None;
        for t in &self.targets {
            if let Endpoint::Inbox { token: own } = &t.endpoint {
                let own = sha2::Sha256::digest(own.0.as_bytes());
                if bool::from(own.ct_eq(&given)) {
                    found = Some(t);
                }
            }
        }
        found
    }
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
    pub retry: RetryPolicy,
    /// An extra CA (PEM) trusted for this target besides the platform's roots: internal staging
    /// often has a private CA.
    pub ca: Option<PathBuf>,
    /// For an inbox: where its events go while nobody listens, unless the route says otherwise.
    pub offline: Option<Offline>,
}

/// Where a target's deliveries go.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// POSTed to this URL.
    Url(http::Uri),
    /// Queued until a `fanout listen` holding this token fetches them (a laptop behind NAT
    /// cannot be posted to).
    Inbox { token: Secret },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(url) => write!(f, "{url}"),
            Endpoint::Inbox { .. } => f.write_str("inbox (fetched by fanout listen)"),
        }
    }
}

fn endpoint_is_inbox(e: &Endpoint) -> bool {
    matches!(e, Endpoint::Inbox { .. })
}

impl Target {
    pub fn is_inbox(&self) -> bool {
        matches!(self.endpoint, Endpoint::Inbox { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before a job is dead-lettered (for a failover group: rounds through its members).
    pub max_attempts: Option<u32>,
    /// Age after which a job is dead-lettered whatever its attempts (Stripe's own: 3 days).
    pub max_age: Duration,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

/// A configuration problem, with where it is and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

// ---- the file as written --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_data_dir")]
    data_dir: String,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default = "default_header_timeout")]
    header_read_timeout: String,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_body_timeout")]
    body_read_timeout: String,
    #[serde(default = "default_retention", alias = "dedup_retention")]
    retention: String,
    #[serde(default = "default_shutdown_grace")]
    shutdown_grace: String,
    tls: Option<RawTls>,
    #[serde(default)]
    admin: RawAdmin,
    sources: Vec<RawSource>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    groups: Vec<RawGroup>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    default: Option<OneOrMany<String>>,
    #[serde(default)]
    affinity: RawAffinity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    listen: String,
    token: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { listen: default_admin_listen(), token: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    path: String,
    secrets: OneOrMany<String>,
    #[serde(default = "default_tolerance")]
    tolerance: String,
    #[serde(default)]
    allow_livemode: bool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    max_age: Option<String>,
    initial_delay: Option<String>,
    max_delay: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    #[serde(default)]
    kind: RawTargetKind,
    url: Option<String>,
    /// An inbox's `fanout listen` token.
    token: Option<String>,
    /// An inbox's own `offline` fallback, for routes without one and for ownership.
    offline: Option<RawOffline>,
    secret: String,
    #[serde(default = "default_target_timeout")]
    timeout: String,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default)]
    retry: RawRetry,
    ca: Option<String>,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawTargetKind {
    #[default]
    Http,
    Inbox,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffline {
    after: String,
    fallback: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAffinity {
    #[serde(default = "default_true")]
    enabled: bool,
    fields: Option<Vec<String>>,
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
/// points at, most specific first (the first owned one decides).
pub const DEFAULT_AFFINITY_FIELDS: [&str; 6] = [
    "data.object.id",
    "data.object.subscription",
    "data.object.invoice",
    "data.object.payment_intent",
    "data.object.charge",
    "data.object.customer",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    mode: GroupMode,
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(default)]
    when: RawWhen,
    to: Option<OneOrMany<String>>,
    #[serde(default)]
    drop: bool,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
    /// For inbox destinations: what happens while nobody listens (default: hold).
    offline: Option<RawOffline>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    #[serde(rename = "type")]
    event_type: Option<OneOrMany<String>>,
    account: Option<OneOrMany<String>>,
    livemode: Option<bool>,
    #[serde(default)]
    fields: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    path: OneOrMany<String>,
    equals: Option<Value>,
    any_of: Option<Vec<Value>>,
    prefix: Option<String>,
    exists: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
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

/// Names routing itself gives as "the rule that decided", so no route may take them.
const RESERVED_RULE_NAMES: [&str; 3] = [crate::route::DEFAULT_RULE, "manual", "replay"];

/// The reserved destination name that acknowledges and records an event but delivers it nowhere.
pub const DROP: &str = "drop";

// ---- loading --------------------------------------------------------------------------------

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            message: format!("cannot read the config: {e}"),
        })?;
        Config::parse(&path.display().to_string(), &text, |name| std::env::var(name).ok())
    }

    /// Parses `text` (named `file` in errors), looking `${VAR}`s up with `env`.
    pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: e.location().map(|l| l.line()),
            message: format!("{e}"),
        })?;
        Resolver { file, text, env: &env }.resolve(raw)
    }
}

struct Resolver<'a> {
    file: &'a str,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolver<'_> {
    /// An error at the first non-comment line that mentions `needle` (the typed structs carry no
    /// positions, so this finds the place a person would look).
    fn err(&self, needle: &str, message: impl Into<String>) -> ConfigError {
        self.err_near("", needle, message)
    }

    /// Like [`Resolver::err`], searching from the first line that mentions `anchor` (a route's
    /// name, say) so the line is the one inside that route.
    fn err_near(&self, anchor: &str, needle: &str, message: impl Into<String>) -> ConfigError {
        let lines: Vec<&str> = self.text.lines().collect();
        let find = |from: usize, what: &str| {
            (from..lines.len())
                .find(|&i| !lines[i].trim_start().starts_with('#') && !what.is_empty() && lines[i].contains(what))
        };
        let start = find(0, anchor).unwrap_or(0);
        let line = find(start, needle).or(find(0, needle)).map(|i| i + 1);
        ConfigError { file: self.file.to_owned(), line, message: message.into() }
    }

    /// Expands `${VAR}` and `${VAR:-default}`; a variable that is not set and has no default is
    /// an error naming it.
    fn expand(&self, value: &str) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| self.err(value, format!("unclosed `${{` in {value:?}")))?;
            let (name, default) = match after[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&after[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(value, format!("`${{{name}}}` is not a valid environment variable name")));
            }
            match ((self.env)(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(self.err(
                        &format!("${{{name}"),
                        format!("environment variable {name} is not set; export it, or write ${{{name}:-default}}"),
                    ))
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand_json(&self, value: Value) -> Result<Value, ConfigError> {
        Ok(match value {
            Value::String(s) => Value::String(self.expand(&s)?),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.expand_json(v)).collect::<Result<_, _>>()?)
            }
            other => other,
        })
    }

    fn duration(&self, key: &str, value: &str) -> Result<Duration, ConfigError> {
        let value = self.expand(value)?;
        humantime::parse_duration(&value).map_err(|e| {
            self.err(
                &format!("{key}: {value}"),
                format!("{key}: {value:?} is not a duration ({e}); write e.g. 300s, 10m, 3d"),
            )
        })
    }

    fn name(&self, kind: &str, name: &str, seen: &mut Vec<String>) -> Result<(), ConfigError> {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(self.err(name, format!("{kind} name {name:?} must be letters, digits, '-', '_' or '.'")));
        }
        if name == DROP {
            return Err(
                self.err(name, format!("{kind} name \"drop\" is reserved (it means: acknowledge and deliver nowhere)"))
            );
        }
        if seen.iter().any(|s| s == name) {
            return Err(self.err(name, format!("duplicate name {name:?}: targets and groups share one namespace")));
        }
        seen.push(name.to_owned());
        Ok(())
    }

    fn retry(&self, base: &RetryPolicy, raw: &RawRetry) -> Result<RetryPolicy, ConfigError> {
        let opt = |key: &str, v: &Option<String>, d: Duration| v.as_ref().map_or(Ok(d), |v| self.duration(key, v));
        let policy = RetryPolicy {
            max_attempts: raw.max_attempts.or(base.max_attempts),
            max_age: opt("max_age", &raw.max_age, base.max_age)?,
            initial_delay: opt("initial_delay", &raw.initial_delay, base.initial_delay)?,
            max_delay: opt("max_delay", &raw.max_delay, base.max_delay)?,
        };
        if policy.max_attempts == Some(0) {
            return Err(self.err("max_attempts", "max_attempts must be at least 1"));
        }
        Ok(policy)
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = self.expand(&raw.listen)?;
        let listen = listen
            .parse()
            .map_err(|_| self.err("listen", format!("listen: {listen:?} is not an address like 127.0.0.1:8080")))?;
        if raw.max_body_bytes == 0 {
            return Err(self.err("max_body_bytes", "max_body_bytes must be more than 0"));
        }
        if raw.max_connections == 0 {
            return Err(self.err("max_connections", "max_connections must be at least 1"));
        }

        if raw.sources.is_empty() {
            return Err(self.err("sources", "no sources: add at least one Stripe endpoint under `sources:`"));
        }
        let mut sources: Vec<Source> = Vec::new();
        for s in raw.sources {
            let path = self.expand(&s.path)?;
            if !path.starts_with('/') {
                return Err(self.err(&s.path, format!("source {:?}: path {path:?} must start with '/'", s.name)));
            }
            if path.starts_with(crate::inbox::PATH_PREFIX) {
                return Err(self.err(
                    &s.path,
                    format!(
                        "source {:?}: paths under {} are fanout's own (developer inboxes)",
                        s.name,
                        crate::inbox::PATH_PREFIX
                    ),
                ));
            }
            if sources.iter().any(|o| o.path == path || o.name == s.name) {
                return Err(self.err(&s.path, format!("source {:?}: another source has the same name or path", s.name)));
            }
            let secrets: Vec<Secret> =
                s.secrets.into_vec().iter().map(|v| self.expand(v).map(Secret)).collect::<Result<_, _>>()?;
            if secrets.iter().any(|s| s.0.is_empty()) || secrets.is_empty() {
                return Err(self.err(&s.name, format!("source {:?}: every secret must be non-empty", s.name)));
            }
            sources.push(Source {
                tolerance: self.duration("tolerance", &s.tolerance)?,
                name: s.name,
                path,
                secrets,
                allow_livemode: s.allow_livemode,
            });
        }

        let defaults = RetryPolicy {
            max_attempts: None,
            max_age: Duration::from_secs(3 * 24 * 3600),
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
        };
        let global_retry = self.retry(&defaults, &raw.retry)?;

        let mut names = Vec::new();
        let mut targets = Vec::new();
        let mut own_offline = Vec::new();
        for mut t in raw.targets {
            self.name("target", &t.name, &mut names)?;
            let endpoint = self.endpoint(&t)?;
            if let Endpoint::Inbox { token } = &endpoint {
                if targets
                    .iter()
                    .any(|o: &Target| matches!(&o.endpoint, Endpoint::Inbox { token: other } if other == token))
                {
                    return Err(self.err(
                        &t.name,
                        format!(
                            "target {:?}: another inbox has the same token; each developer needs their own",
                            t.name
                        ),
                    ));
                }
            }
            match t.offline.take() {
                Some(o) if endpoint_is_inbox(&endpoint) => own_offline.push((targets.len(), t.name.clone(), o)),
                Some(_) => {
                    return Err(
                        self.err(&t.name, format!("target {:?}: `offline` is for `kind: inbox` targets", t.name))
                    )
                }
                None => {}
            }
            let secret = self.expand(&t.secret)?;
            if secret.is_empty() {
                return Err(self.err(&t.name, format!("target {:?}: secret is empty", t.name)));
            }
            if t.concurrency == 0 {
                return Err(self.err(&t.name, format!("target {:?}: concurrency must be at least 1", t.name)));
            }
            targets.push(Target {
                timeout: self.duration("timeout", &t.timeout)?,
                retry: self.retry(&global_retry, &t.retry)?,
                ca: t.ca.as_deref().map(|p| self.file(&format!("target {:?}: ca", t.name), p)).transpose()?,
                name: t.name,
                endpoint,
                offline: None,
                secret: Secret(secret),
                concurrency: t.concurrency,
            });
        }

        let mut destinations: Vec<Destination> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| Destination { name: t.name.clone(), kind: DestinationKind::Target(i) })
            .collect();
        for g in raw.groups {
            self.name("group", &g.name, &mut names)?;
            if g.members.is_empty() {
                return Err(self.err(&g.name, format!("group {:?} has no members", g.name)));
            }
            let mut members = Vec::new();
            for m in &g.members {
                let i = targets.iter().position(|t| &t.name == m).ok_or_else(|| {
                    self.err(
                        m,
                        format!(
                            "group {:?}: member {} is not a target (groups hold targets, not groups)",
                            g.name,
                            shown(m)
                        ),
                    )
                })?;
                if members.contains(&i) {
                    return Err(self.err(m, format!("group {:?} lists {m:?} twice", g.name)));
                }
                if targets[i].is_inbox() {
                    return Err(self.err(
                        m,
                        format!(
                            "group {:?}: member {m:?} is an inbox; inboxes cannot be group members (give the route an `offline` fallback instead)",
                            g.name
                        ),
                    ));
                }
                members.push(i);
            }
            destinations.push(Destination { name: g.name, kind: DestinationKind::Group { mode: g.mode, members } });
        }

        for (i, name, raw) in own_offline {
            let offline = self.offline(&format!("target {name:?}"), &name, raw, &destinations, &targets)?;
            targets[i].offline = Some(offline);
        }

        // `anchor` is the text that starts the route in the file, to find the right line.
        let action = |place: &str, anchor: &str, to: Vec<String>| -> Result<Action, ConfigError> {
            if to.iter().any(|d| d == DROP) {
                return if to.len() == 1 {
                    Ok(Action::Drop)
                } else {
                    Err(self.err_near(
                        anchor,
                        DROP,
                        format!("{place}: \"drop\" cannot be combined with other destinations"),
                    ))
                };
            }
            if to.is_empty() {
                return Err(self.err(anchor, format!("{place}: lists no destinations")));
            }
            let ids = to
                .iter()
                .map(|d| {
                    destinations.iter().position(|x| &x.name == d).ok_or_else(|| {
                        let known: Vec<&str> = destinations.iter().map(|x| x.name.as_str()).collect();
                        self.err(
                            d,
                            format!(
                                "{place}: destination {} is neither a target nor a group (known: {})",
                                shown(d),
                                known.join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(Action::Deliver(ids))
        };

        let mut rules: Vec<Rule> = Vec::new();
        for r in raw.routes {
            let place = format!("route {:?}", r.name);
            if RESERVED_RULE_NAMES.contains(&r.name.as_str()) || r.name.starts_with("owner:") {
                return Err(self.err(
                    &r.name,
                    format!("{place}: the name is reserved (it means the default, a hand-set owner, or ownership)"),
                ));
            }
            if rules.iter().any(|o| o.name == r.name) {
                return Err(self.err(&r.name, format!("{place}: duplicate route name")));
            }
            let action = match (r.to, r.drop) {
                (Some(_), true) => {
                    return Err(self.err(&r.name, format!("{place}: has both `to` and `drop: true`; keep one")))
                }
                (None, false) => {
                    return Err(self.err(&r.name, format!("{place}: needs `to: [destinations]` or `drop: true`")))
                }
                (None, true) => Action::Drop,
                (Some(to), false) => action(&place, &r.name, to.into_vec())?,
            };
            let offline = r
                .offline
                .map(|o| self.route_offline(&place, &r.name, o, &action, &destinations, &targets))
                .transpose()?;
            rules.push(Rule {
                when: self.conditions(&place, r.when)?,
                action,
                continue_matching: r.continue_matching,
                offline,
                name: r.name,
            });
        }
        let default = raw.default.map(|d| action("default", "default:", d.into_vec())).transpose()?;

        let retention = self.duration("retention", &raw.retention)?;
        // A job is retried until max_age, and its last retry may be due up to max_delay later;
        // its event must still be there then.
        if let Some(t) = targets.iter().find(|t| t.retry.max_age + t.retry.max_delay > retention) {
            return Err(self.err(
                "retention",
                format!(
                    "retention must be at least every target's max_age + max_delay (target {:?}: {} + {})",
                    t.name,
                    humantime::format_duration(t.retry.max_age),
                    humantime::format_duration(t.retry.max_delay)
                ),
            ));
        }
        let tls = match raw.tls {
            Some(t) => Some(TlsFiles { cert: self.file("tls: cert", &t.cert)?, key: self.file("tls: key", &t.key)? }),
            None => None,
        };
        Ok(Config {
            listen,
            data_dir: PathBuf::from(self.expand(&raw.data_dir)?),
            max_body_bytes: raw.max_body_bytes,
            header_read_timeout: self.duration("header_read_timeout", &raw.header_read_timeout)?,
            max_connections: raw.max_connections,
            body_read_timeout: self.duration("body_read_timeout", &raw.body_read_timeout)?,
            retention,
            shutdown_grace: self.duration("shutdown_grace", &raw.shutdown_grace)?,
            tls,
            admin: self.admin(raw.admin)?,
            sources,
            targets,
            router: Router { destinations, rules, default, affinity: self.affinity(raw.affinity)? },
        })
    }

    fn endpoint(&self, t: &RawTarget) -> Result<Endpoint, ConfigError> {
        let place = format!("target {:?}", t.name);
        match (&t.kind, &t.url, &t.token) {
            (RawTargetKind::Http, Some(url), None) => {
                let url_text = self.expand(url)?;
                let url: http::Uri = url_text
                    .parse()
                    .map_err(|e| self.err(url, format!("{place}: url {url_text:?} is not a URL ({e})")))?;
                if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
                    return Err(self.err(&url_text, format!("{place}: url must be http:// or https:// with a host")));
                }
                Ok(Endpoint::Url(url))
            }
            (RawTargetKind::Http, None, _) => Err(self.err(
                &t.name,
                format!("{place}: needs a `url` (or `kind: inbox` and a `token`, for a developer's `fanout listen`)"),
            )),
            (RawTargetKind::Http, Some(_), Some(_)) => {
                Err(self.err(&t.name, format!("{place}: `token` is for `kind: inbox` targets")))
            }
            (RawTargetKind::Inbox, Some(_), _) => Err(self
                .err(&t.name, format!("{place}: an inbox has no url (its listener fetches its events); remove `url`"))),
            (RawTargetKind::Inbox, None, None) => Err(self.err(
                &t.name,
                format!("{place}: an inbox needs a `token` for its `fanout listen` (e.g. ${{ALICE_INBOX_TOKEN}})"),
            )),
            (RawTargetKind::Inbox, None, Some(token)) => {
                let token = self.expand(token)?;
                if token.len() < 16 {
                    return Err(self.err(&t.name, format!("{place}: an inbox token must be at least 16 characters")));
                }
                Ok(Endpoint::Inbox { token: Secret(token) })
            }
        }
    }

    /// A route's `offline`: only where it sends to an inbox.
    fn route_offline(
        &self,
        place: &str,
        anchor: &str,
        raw: RawOffline,
        action: &Action,
        destinations: &[Destination],
        targets: &[Target],
    ) -> Result<Offline, ConfigError> {
        let is_inbox = |d: &usize| matches!(destinations[*d].kind, DestinationKind::Target(i) if targets[i].is_inbox());
        if !matches!(action, Action::Deliver(to) if to.iter().any(is_inbox)) {
            return Err(self.err_near(
                anchor,
                "offline",
                format!("{place}: `offline` applies to inbox destinations, and `to` lists none"),
            ));
        }
        self.offline(place, anchor, raw, destinations, targets)
    }

    fn offline(
        &self,
        place: &str,
        anchor: &str,
        raw: RawOffline,
        destinations: &[Destination],
        targets: &[Target],
    ) -> Result<Offline, ConfigError> {
        let name = self.expand(&raw.fallback)?;
        let fallback = match destinations.iter().find(|d| d.name == name).map(|d| &d.kind) {
            Some(DestinationKind::Target(i)) if !targets[*i].is_inbox() => vec![*i],
            Some(DestinationKind::Group { mode: GroupMode::Failover, members }) => members.clone(),
            _ => {
                return Err(self.err_near(
                    anchor,
                    "fallback",
                    format!(
                        "{place}: offline fallback {} must be a target that is not an inbox, or a failover group",
                        shown(&name)
                    ),
                ))
            }
        };
        Ok(Offline { after: self.duration("after", &raw.after)?, fallback, fallback_name: name })
    }

    fn affinity(&self, raw: RawAffinity) -> Result<Option<Vec<Vec<String>>>, ConfigError> {
        if !raw.enabled {
            return Ok(None);
        }
        let fields = match raw.fields {
            Some(f) => f.iter().map(|p| self.expand(p)).collect::<Result<Vec<_>, _>>()?,
            None => DEFAULT_AFFINITY_FIELDS.iter().map(|s| (*s).to_owned()).collect(),
        };
        let paths: Vec<Vec<String>> = fields.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect();
        if paths.is_empty() || paths.iter().flatten().any(String::is_empty) {
            return Err(self.err("affinity", "affinity.fields: list dotted paths like data.object.customer"));
        }
        Ok(Some(paths))
    }

    /// A path to a file that must exist (a PEM file, say); relative paths are as written.
    fn file(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let path = PathBuf::from(self.expand(value)?);
        if !path.is_file() {
            return Err(self.err(value, format!("{key}: {} is not a readable file", path.display())));
        }
        Ok(path)
    }

    fn admin(&self, raw: RawAdmin) -> Result<Admin, ConfigError> {
        let text = self.expand(&raw.listen)?;
        let listen: SocketAddr = text
            .parse()
            .map_err(|_| self.err("admin", format!("admin.listen: {text:?} is not an address like 127.0.0.1:8081")))?;
        let token = raw.token.map(|t| self.expand(&t)).transpose()?.filter(|t| !t.is_empty()).map(Secret);
        let admin = Admin { listen, token };
        admin.check().map_err(|e| self.err("admin", e))?;
        Ok(admin)
    }

    fn conditions(&self, place: &str, when: RawWhen) -> Result<Vec<Condition>, ConfigError> {
        let mut out = Vec::new();
        let strings = |v: OneOrMany<String>| v.into_vec().iter().map(|s| self.expand(s)).collect::<Result<Vec<_>, _>>();
        if let Some(types) = when.event_type {
            out.push(Condition::Type(strings(types)?.iter().map(|t| WildMatch::new(t)).collect()));
        }
        if let Some(accounts) = when.account {
            out.push(Condition::Account(strings(accounts)?));
        }
        if let Some(live) = when.livemode {
            out.push(Condition::Livemode(live));
        }
        for f in when.fields {
            let paths: Vec<Vec<String>> =
                strings(f.path)?.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect();
            if paths.iter().flatten().any(String::is_empty) {
                return Err(self.err("path", format!("{place}: a field path has an empty segment (write a.b.c)")));
            }
            let test = FieldTest {
                equals: f.equals.map(|v| self.expand_json(v)).transpose()?,
                any_of: f.any_of.map(|v| self.expand_json(Value::Array(v))).transpose()?.map(|v| match v {
                    Value::Array(items) => items,
                    other => vec![other],
                }),
                prefix: f.prefix.map(|p| self.expand(&p)).transpose()?,
                exists: f.exists,
            };
            if test.equals.is_none() && test.any_of.is_none() && test.prefix.is_none() && test.exists.is_none() {
                return Err(
                    self.err("path", format!("{place}: a field test needs one of equals, any_of, prefix, exists"))
                );
            }
            out.push(Condition::Field { paths, test });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
