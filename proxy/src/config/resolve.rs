//! From the file as written to the config the proxy runs on: `${VAR}` expanded, durations
//! parsed, names resolved to indices and checked, one method per section. Every error names the
//! file, the line where a person would look, and what to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use wildmatch::WildMatch;

use super::raw::*;
use super::{
    shown, Admin, BreakerPolicy, Config, ConfigError, Endpoint, InboxToken, Rate, RetryPolicy, Secret, Source,
    StoreConfig, Target, TlsFiles, DROP, INBOX_PATH,
};
use crate::route::{
    Action, Condition, Destination, DestinationKind, FieldTest, GroupMode, InboxRef, Named, Offline, Router, Rule,
    Unknown,
};

/// Names routing itself gives as "the rule that decided", so no route may take them.
const RESERVED_RULE_NAMES: [&str; 3] = [crate::route::DEFAULT_RULE, "manual", "replay"];

/// How a route's `to` names an inbox rather than a configured destination.
const INBOX_REF: &str = "inbox:";
/// `unknown: unrouted`.
const UNROUTED: &str = "unrouted";

/// Every inbox by name, for `inbox:` destinations to resolve against.
pub(super) fn inbox_names(
    destinations: &[Destination],
    targets: &[Target],
) -> std::collections::HashMap<String, usize> {
    let inbox = |d: &Destination| matches!(d.kind, DestinationKind::Target(i) if targets[i].is_inbox());
    destinations.iter().enumerate().filter(|(_, d)| inbox(d)).map(|(i, d)| (d.name.clone(), i)).collect()
}

/// What every target inherits from the top level unless it says otherwise.
struct TargetDefaults {
    retry: RetryPolicy,
    breaker: BreakerPolicy,
}

/// A breaker that opens on a target really down, not on a flake (20 failures in a row take a
/// target at concurrency 8 well under a minute when it is down, and a burst of bad luck rarely
/// gets there); 2 minutes of nothing but failures catches a quiet target. A recovered target
/// waits at most 5 minutes for its backlog: Stripe's own retries are hours apart.
pub(super) const DEFAULT_BREAKER: BreakerPolicy = BreakerPolicy {
    enabled: true,
    failures: 20,
    failing_for: Duration::from_secs(120),
    probe_interval: Duration::from_secs(5),
    max_probe_interval: Duration::from_secs(300),
};

pub(super) struct Resolver<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) is_file: &'a dyn Fn(&std::path::Path) -> bool,
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
        let exponential = raw.initial_delay.is_some() || raw.max_delay.is_some();
        let mut policy = RetryPolicy {
            max_attempts: raw.max_attempts.or(base.max_attempts),
            max_age: opt("max_age", &raw.max_age, base.max_age)?,
            initial_delay: opt("initial_delay", &raw.initial_delay, base.initial_delay)?,
            max_delay: opt("max_delay", &raw.max_delay, base.max_delay)?,
            // A level that sets either kind of backoff replaces the kind it inherited.
            schedule: if exponential { Vec::new() } else { base.schedule.clone() },
        };
        if let Some(steps) = &raw.schedule {
            if exponential {
                return Err(
                    self.err("schedule", "retry: `schedule` replaces initial_delay/max_delay: set one or the other")
                );
            }
            if steps.is_empty() {
                return Err(self.err("schedule", "retry: schedule needs at least one delay, e.g. [5s, 5m, 30m, 2h]"));
            }
            policy.schedule = steps.iter().map(|s| self.duration("schedule", s)).collect::<Result<_, _>>()?;
        }
        if let (Some(first), Some(longest)) = (policy.schedule.first(), policy.schedule.iter().max()) {
            (policy.initial_delay, policy.max_delay) = (*first, *longest);
        }
        if policy.max_attempts == Some(0) {
            return Err(self.err("max_attempts", "max_attempts must be at least 1"));
        }
        Ok(policy)
    }

    /// The top level's `breaker` (`whose`: none) or a target's.
    fn breaker(
        &self,
        whose: Option<&str>,
        base: &BreakerPolicy,
        raw: &RawBreaker,
    ) -> Result<BreakerPolicy, ConfigError> {
        let opt = |key: &str, v: &Option<String>, d: Duration| v.as_ref().map_or(Ok(d), |v| self.duration(key, v));
        let policy = BreakerPolicy {
            enabled: raw.enabled.unwrap_or(base.enabled),
            failures: raw.failures.unwrap_or(base.failures),
            failing_for: opt("failing_for", &raw.failing_for, base.failing_for)?,
            probe_interval: opt("probe_interval", &raw.probe_interval, base.probe_interval)?,
            max_probe_interval: opt("max_probe_interval", &raw.max_probe_interval, base.max_probe_interval)?,
        };
        let bad = |key: &str, what: &str| {
            let prefix = whose.map(|t| format!("target {t:?}: ")).unwrap_or_default();
            self.err(whose.unwrap_or(key), format!("{prefix}breaker: {what}"))
        };
        if policy.failures == 0 {
            return Err(bad("failures", "failures must be at least 1 (or set enabled: false)"));
        }
        if policy.probe_interval.is_zero() || policy.max_probe_interval < policy.probe_interval {
            return Err(bad("probe_interval", "probe_interval must be more than 0 and at most max_probe_interval"));
        }
        if policy.max_probe_interval > Duration::from_secs(24 * 3600) {
            return Err(bad(
                "max_probe_interval",
                "max_probe_interval is at most 1d (a recovered target waits that long)",
            ));
        }
        Ok(policy)
    }

    pub(super) fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
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
        let sources = self.sources(raw.sources)?;
        let retry = RetryPolicy {
            max_attempts: None,
            max_age: Duration::from_secs(3 * 24 * 3600),
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            schedule: Vec::new(),
        };
        let defaults = TargetDefaults {
            retry: self.retry(&retry, &raw.retry)?,
            breaker: self.breaker(None, &DEFAULT_BREAKER, &raw.breaker)?,
        };
        let mut names = Vec::new();
        let (mut targets, own_offline) = self.targets(raw.targets, &defaults, &mut names)?;
        let destinations = self.destinations(raw.groups, &targets, &mut names)?;
        for (i, name, raw) in own_offline {
            let offline = self.offline(&format!("target {name:?}"), &name, raw, &destinations, &targets)?;
            targets[i].offline = Some(offline);
        }
        let rules = raw.routes.into_iter().try_fold(Vec::new(), |mut rules, r| {
            let rule = self.rule(r, &rules, &destinations, &targets)?;
            rules.push(rule);
            Ok::<_, ConfigError>(rules)
        })?;
        let default =
            raw.default.map(|d| self.action("default", "default:", d.into_vec(), &destinations)).transpose()?;
        let retention = self.retention(&raw.retention, &targets)?;
        let tls = match raw.tls {
            Some(t) => Some(TlsFiles { cert: self.file("tls: cert", &t.cert)?, key: self.file("tls: key", &t.key)? }),
            None => None,
        };
        let store = self.store(raw.store)?;
        let inboxes = inbox_names(&destinations, &targets);
        Ok(Config {
            retry: defaults.retry.clone(),
            listen,
            data_dir: PathBuf::from(self.expand(&raw.data_dir)?),
            store,
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
            router: Router { inboxes, destinations, rules, default, affinity: self.affinity(raw.affinity)? },
        })
    }

    fn sources(&self, raw: Vec<RawSource>) -> Result<Vec<Source>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err("sources", "no sources: add at least one Stripe endpoint under `sources:`"));
        }
        let mut sources: Vec<Source> = Vec::new();
        for s in raw {
            let path = self.expand(&s.path)?;
            if !path.starts_with('/') {
                return Err(self.err(&s.path, format!("source {:?}: path {path:?} must start with '/'", s.name)));
            }
            if path.starts_with(INBOX_PATH) {
                return Err(self.err(
                    &s.path,
                    format!("source {:?}: paths under {INBOX_PATH} are fanout's own (developer inboxes)", s.name),
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
        Ok(sources)
    }

    /// The targets, and the inboxes' own `offline` (resolved once groups are known).
    #[allow(clippy::type_complexity)]
    fn targets(
        &self,
        raw: Vec<RawTarget>,
        defaults: &TargetDefaults,
        names: &mut Vec<String>,
    ) -> Result<(Vec<Target>, Vec<(usize, String, RawOffline)>), ConfigError> {
        let mut targets: Vec<Target> = Vec::new();
        let mut own_offline = Vec::new();
        for mut t in raw {
            self.name("target", &t.name, names)?;
            let endpoint = self.endpoint(&t)?;
            if let Endpoint::Inbox { token } = &endpoint {
                if targets.iter().any(|o| matches!(&o.endpoint, Endpoint::Inbox { token: other } if other == token)) {
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
                Some(o) if matches!(endpoint, Endpoint::Inbox { .. }) => {
                    own_offline.push((targets.len(), t.name.clone(), o))
                }
                Some(_) => {
                    return Err(
                        self.err(&t.name, format!("target {:?}: `offline` is for `kind: inbox` targets", t.name))
                    )
                }
                None => {}
            }
            targets.push(self.target(t, endpoint, defaults)?);
        }
        Ok((targets, own_offline))
    }

    fn target(&self, t: RawTarget, endpoint: Endpoint, defaults: &TargetDefaults) -> Result<Target, ConfigError> {
        let secret = self.expand(&t.secret)?;
        if secret.is_empty() {
            return Err(self.err(&t.name, format!("target {:?}: secret is empty", t.name)));
        }
        if t.concurrency == 0 {
            return Err(self.err(&t.name, format!("target {:?}: concurrency must be at least 1", t.name)));
        }
        let rate = self.rate(&t)?;
        if t.breaker != RawBreaker::default() && matches!(endpoint, Endpoint::Inbox { .. }) {
            return Err(self.err(
                &t.name,
                format!("target {:?}: `breaker` is for url targets; an inbox is held while nobody listens", t.name),
            ));
        }
        Ok(Target {
            rate,
            timeout: self.duration("timeout", &t.timeout)?,
            retry: self.retry(&defaults.retry, &t.retry)?,
            breaker: self.breaker(Some(&t.name), &defaults.breaker, &t.breaker)?,
            ca: t.ca.as_deref().map(|p| self.file(&format!("target {:?}: ca", t.name), p)).transpose()?,
            name: t.name,
            endpoint,
            offline: None,
            secret: Secret(secret),
            concurrency: t.concurrency,
        })
    }

    /// `rate: 50/s` (or `/m`, `/h`) and its `burst`.
    fn rate(&self, t: &RawTarget) -> Result<Option<Rate>, ConfigError> {
        let Some(text) = &t.rate else {
            if t.burst.is_some() {
                return Err(self.err(&t.name, format!("target {:?}: `burst` goes with a `rate`", t.name)));
            }
            return Ok(None);
        };
        let bad = || {
            self.err(
                &t.name,
                format!("target {:?}: rate {text:?} is not like 50/s, 600/m or 1000/h (at least 1)", t.name),
            )
        };
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().ok().filter(|c| *c > 0).ok_or_else(bad)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst = t.burst.unwrap_or(1);
        if burst == 0 {
            return Err(self.err(&t.name, format!("target {:?}: burst must be at least 1", t.name)));
        }
        Ok(Some(Rate { count, per, burst }))
    }

    /// Every destination a route can name: each target, then each group.
    fn destinations(
        &self,
        groups: Vec<RawGroup>,
        targets: &[Target],
        names: &mut Vec<String>,
    ) -> Result<Vec<Destination>, ConfigError> {
        let mut destinations: Vec<Destination> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| Destination { name: t.name.clone(), kind: DestinationKind::Target(i) })
            .collect();
        for g in groups {
            self.name("group", &g.name, names)?;
            if g.members.is_empty() {
                return Err(self.err(&g.name, format!("group {:?} has no members", g.name)));
            }
            let mut members = Vec::new();
            for m in &g.members {
                let i = self.member(&g.name, m, targets)?;
                if members.contains(&i) {
                    return Err(self.err(m, format!("group {:?} lists {m:?} twice", g.name)));
                }
                members.push(i);
            }
            destinations.push(Destination { name: g.name, kind: DestinationKind::Group { mode: g.mode, members } });
        }
        Ok(destinations)
    }

    fn member(&self, group: &str, m: &str, targets: &[Target]) -> Result<usize, ConfigError> {
        let i = targets.iter().position(|t| t.name == m).ok_or_else(|| {
            self.err(
                m,
                format!("group {group:?}: member {} is not a target (groups hold targets, not groups)", shown(m)),
            )
        })?;
        if targets[i].is_inbox() {
            return Err(self.err(
                m,
                format!(
                    "group {group:?}: member {m:?} is an inbox; inboxes cannot be group members (give the route an `offline` fallback instead)"
                ),
            ));
        }
        Ok(i)
    }

    /// A route's or the default's `to`. `anchor` is the text that starts the route in the file,
    /// to find the right line.
    fn action(
        &self,
        place: &str,
        anchor: &str,
        to: Vec<String>,
        destinations: &[Destination],
    ) -> Result<Action, ConfigError> {
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
    }

    fn rule(
        &self,
        r: RawRoute,
        earlier: &[Rule],
        destinations: &[Destination],
        targets: &[Target],
    ) -> Result<Rule, ConfigError> {
        let place = format!("route {:?}", r.name);
        if RESERVED_RULE_NAMES.contains(&r.name.as_str()) || r.name.starts_with("owner:") {
            return Err(self.err(
                &r.name,
                format!("{place}: the name is reserved (it means the default, a hand-set owner, or ownership)"),
            ));
        }
        if earlier.iter().any(|o| o.name == r.name) {
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
            (Some(to), false) => self.named_action(&place, &r.name, to.into_vec(), r.unknown, destinations, targets)?,
        };
        let offline =
            r.offline.map(|o| self.route_offline(&place, &r.name, o, &action, destinations, targets)).transpose()?;
        Ok(Rule {
            when: self.conditions(&place, r.when)?,
            action,
            continue_matching: r.continue_matching,
            offline,
            name: r.name,
        })
    }

    fn store(&self, raw: Option<RawStore>) -> Result<StoreConfig, ConfigError> {
        let Some(raw) = raw else { return Ok(StoreConfig::Sled) };
        match (raw.engine, raw.url) {
            (RawEngine::Sled, None) => Ok(StoreConfig::Sled),
            (RawEngine::Sled, Some(_)) => {
                Err(self.err("store", "store: `url` is for `engine: postgres` (sled keeps its store in data_dir)"))
            }
            (RawEngine::Postgres, None) => Err(self.err(
                "store",
                "store: `engine: postgres` needs a `url` (e.g. ${DATABASE_URL}, postgres://user:pass@host/db)",
            )),
            (RawEngine::Postgres, Some(url)) => {
                let url = self.expand(&url)?;
                if !super::is_postgres_url(&url) {
                    return Err(self.err("url", "store: url must start with postgres:// or postgresql://"));
                }
                if raw.pool == 0 {
                    return Err(self.err("pool", "store: pool must be at least 1"));
                }
                if let Some(mode) = ssl_mode(&url).filter(|m| !["disable", "prefer", "require"].contains(&m.as_str())) {
                    return Err(self.err(
                        "url",
                        format!(
                            "store: sslmode={mode} is not supported: use sslmode=require (TLS, the certificate \
                             verified against the platform's roots and `ca`, as libpq's verify-full)"
                        ),
                    ));
                }
                if raw.ca.is_some() && !asks_for_tls(&url) {
                    return Err(self.err(
                        "ca",
                        "store: `ca` is used only with TLS to the database: add sslmode=require to the url",
                    ));
                }
                let ca = raw.ca.as_deref().map(|p| self.file("store: ca", p)).transpose()?;
                Ok(StoreConfig::Postgres { url: Secret(url), pool: raw.pool, ca })
            }
        }
    }

    /// A job is retried until max_age, and its last retry may be due up to max_delay later; its
    /// event must still be there then.
    fn retention(&self, raw: &str, targets: &[Target]) -> Result<Duration, ConfigError> {
        let retention = self.duration("retention", raw)?;
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
        Ok(retention)
    }

    fn endpoint(&self, t: &RawTarget) -> Result<Endpoint, ConfigError> {
        let place = format!("target {:?}", t.name);
        match (&t.kind, &t.url, &t.token) {
            (RawTargetKind::Http, Some(url), None) => {
                let url_text = self.expand(url)?;
                let url: http::Uri = url_text.parse().map_err(|e| {
                    self.err(url, format!("{place}: url {:?} is not a URL ({e})", super::shown_url(&url_text)))
                })?;
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
                Ok(Endpoint::Inbox { token: InboxToken::Plain(Secret(token)) })
            }
        }
    }

    /// A route's `to`, where entries may name inboxes (`inbox:alice`, or from the event:
    /// `inbox:{data.object.metadata.developer|data.object.parent.subscription_details.metadata.developer}`),
    /// and its `unknown`.
    fn named_action(
        &self,
        place: &str,
        anchor: &str,
        to: Vec<String>,
        unknown: Option<OneOrMany<String>>,
        destinations: &[Destination],
        targets: &[Target],
    ) -> Result<Action, ConfigError> {
        let (refs, plain): (Vec<String>, Vec<String>) = to.into_iter().partition(|d| d.starts_with(INBOX_REF));
        if refs.is_empty() {
            if unknown.is_some() {
                return Err(self.err_near(
                    anchor,
                    "unknown",
                    format!("{place}: `unknown` is for inbox:… destinations"),
                ));
            }
            return self.action(place, anchor, plain, destinations);
        }
        let fixed = match plain.is_empty() {
            true => Vec::new(),
            false => match self.action(place, anchor, plain, destinations)? {
                Action::Deliver(ids) => ids,
                _ => return Err(self.err(anchor, format!("{place}: \"drop\" cannot be combined with inboxes"))),
            },
        };
        let inboxes = refs.iter().map(|r| self.inbox_ref(place, r, destinations, targets)).collect::<Result<_, _>>()?;
        let unknown = match unknown.map(OneOrMany::into_vec) {
            None => Unknown::Skip,
            Some(u) if u == [UNROUTED] => Unknown::Unrouted,
            Some(u) => match self.action(&format!("{place}: unknown"), "unknown", u, destinations)? {
                Action::Drop => Unknown::Drop,
                Action::Deliver(ids) => Unknown::Deliver(ids),
                Action::Named(_) => unreachable!("action() makes no Named"),
            },
        };
        Ok(Action::Named(Box::new(Named { fixed, inboxes, unknown })))
    }

    /// `inbox:alice` or `inbox:{path|path}`. A name that routing.yaml gives a target that is not
    /// an inbox is refused: a template may only ever reach inboxes.
    fn inbox_ref(
        &self,
        place: &str,
        r: &str,
        destinations: &[Destination],
        targets: &[Target],
    ) -> Result<InboxRef, ConfigError> {
        let rest = &r[INBOX_REF.len()..];
        if let Some(paths) = rest.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let paths: Vec<Vec<String>> =
                paths.split('|').map(|p| p.trim().split('.').map(str::to_owned).collect()).collect();
            if paths.iter().flatten().any(String::is_empty) {
                return Err(self.err(
                    r,
                    format!(
                        "{place}: {r:?}: write inbox:{{data.object.metadata.developer}}, alternatives separated by |"
                    ),
                ));
            }
            return Ok(InboxRef::Field(paths));
        }
        match destinations.iter().find(|d| d.name == rest).map(|d| &d.kind) {
            Some(DestinationKind::Target(i)) if targets[*i].is_inbox() => Ok(InboxRef::Literal(rest.to_owned())),
            Some(_) => Err(self.err(r, format!("{place}: {r:?} names {}, which is not an inbox", shown(rest)))),
            None if super::valid_name(rest).is_err() => Err(self.err(
                r,
                format!("{place}: {r:?}: write inbox:NAME, or inbox:{{path}} to take the name from the event"),
            )),
            // An inbox created at run time, maybe later.
            None => Ok(InboxRef::Literal(rest.to_owned())),
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
        let to_inbox = match action {
            Action::Deliver(to) => to.iter().any(is_inbox),
            Action::Named(named) => !named.inboxes.is_empty(),
            Action::Drop => false,
        };
        if !to_inbox {
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
        if !(self.is_file)(&path) {
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

/// Whether a Postgres URL asks for TLS (`sslmode=require`); other modes connect in plain text.
fn asks_for_tls(url: &str) -> bool {
    ssl_mode(url).is_some_and(|m| m == "require")
}

fn ssl_mode(url: &str) -> Option<String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "sslmode").map(|(_, v)| v.into_owned())
}
