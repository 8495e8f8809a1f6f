//! The config as a person reads it: the routing table `fanout check` prints and the console's
//! config page shows. Secrets appear as their `Display`, which redacts them.

use super::{Config, RetryPolicy, StoreConfig, Target};
use crate::route::{Action, Condition, DestinationKind, InboxRef, Router, Unknown};

/// The routing table as `fanout check` prints it. Secrets show as their prefix only.
pub fn describe(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let d = |x: std::time::Duration| humantime::format_duration(x).to_string();
    let _ = writeln!(
        out,
        "listen {}  data_dir {}  max_body_bytes {}  retention {}  shutdown_grace {}",
        cfg.listen,
        cfg.data_dir.display(),
        cfg.max_body_bytes,
        d(cfg.retention),
        d(cfg.shutdown_grace)
    );
    let tls = cfg
        .tls
        .as_ref()
        .map_or("off (plain HTTP)".to_owned(), |t| format!("cert {}  key {}", t.cert.display(), t.key.display()));
    let _ = writeln!(out, "tls {tls}");
    let store = match &cfg.store {
        StoreConfig::Sled => format!("sled in {}", cfg.data_dir.display()),
        StoreConfig::Postgres { url, pool, ca } => {
            let ca = ca.as_ref().map(|p| format!("  ca {}", p.display())).unwrap_or_default();
            format!("postgres {url}  pool {pool}{ca}")
        }
    };
    let _ = writeln!(out, "store {store}");
    let token = if cfg.admin.token.is_some() { "required (redacted)" } else { "none (loopback only)" };
    let _ = writeln!(out, "admin {}  token {token}", cfg.admin.listen);
    let _ = writeln!(out, "\nsources:");
    for s in &cfg.sources {
        let secrets: Vec<String> = s.secrets.iter().map(ToString::to_string).collect();
        let live = if s.allow_livemode { "accepted" } else { "refused" };
        let _ = writeln!(
            out,
            "  {:<12} POST {}  secrets [{}]  tolerance {}  livemode {live}",
            s.name,
            s.path,
            secrets.join(", "),
            d(s.tolerance)
        );
    }
    let _ = writeln!(out, "\ntargets:");
    for t in &cfg.targets {
        describe_target(&mut out, t);
    }
    let groups: Vec<_> =
        cfg.router.destinations.iter().filter(|x| matches!(x.kind, DestinationKind::Group { .. })).collect();
    if !groups.is_empty() {
        let _ = writeln!(out, "\ngroups:");
        for g in groups {
            if let DestinationKind::Group { mode, members } = &g.kind {
                let names: Vec<&str> = members.iter().map(|&m| cfg.targets[m].name.as_str()).collect();
                let _ = writeln!(out, "  {:<12} {:?}  [{}]", g.name, mode, names.join(", "));
            }
        }
    }
    out.push_str(&describe_routes(cfg));
    out
}

/// One target's lines in `fanout check`.
fn describe_target(out: &mut String, t: &Target) {
    use std::fmt::Write;
    let d = |x: std::time::Duration| humantime::format_duration(x).to_string();
    let _ = writeln!(
        out,
        "  {:<12} {}  secret {}  timeout {}  concurrency {}  retry {}",
        t.name,
        t.endpoint,
        t.secret,
        d(t.timeout),
        t.concurrency,
        retry(&t.retry)
    );
    if let Some(ca) = &t.ca {
        let _ = writeln!(out, "  {:<12} trusts the extra CA in {}", "", ca.display());
    }
    if let Some(rate) = &t.rate {
        let unit = match rate.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        let _ = writeln!(out, "  {:<12} at most {}/{unit} (burst {})", "", rate.count, rate.burst);
    }
    let b = &t.breaker;
    if !t.is_inbox() {
        let line = if b.enabled {
            format!(
                "breaker opens after {} failures in a row or {} of failures; probes every {} up to {}",
                b.failures,
                d(b.failing_for),
                d(b.probe_interval),
                d(b.max_probe_interval)
            )
        } else {
            "breaker off".to_owned()
        };
        let _ = writeln!(out, "  {:<12} {line}", "");
    }
}

/// The routing table of `fanout check`: rules in order, ownership, the default.
fn describe_routes(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "\nroutes (in order; the first match decides unless it says continue):");
    for (i, r) in cfg.router.rules.iter().enumerate() {
        let when: Vec<String> = r.when.iter().map(condition).collect();
        let when = if when.is_empty() { "always".to_owned() } else { when.join(" and ") };
        let cont = if r.continue_matching { "  (continue)" } else { "" };
        let _ = writeln!(out, "  {}. {:<12} when {when} -> {}{cont}", i + 1, r.name, action(&cfg.router, &r.action));
        if let Some(o) = &r.offline {
            let after = humantime::format_duration(o.after);
            let _ = writeln!(out, "     {:<12} inbox offline for {after} -> {}", "", o.fallback_name);
        }
    }
    match &cfg.router.affinity {
        Some(fields) => {
            let fields: Vec<String> = fields.iter().map(|f| f.join(".")).collect();
            let _ = writeln!(out, "  no rule matched -> the owner of the first of {} that has one", fields.join(", "));
        }
        None => {
            let _ = writeln!(out, "  (ownership routing is off)");
        }
    }
    let default = cfg
        .router
        .default
        .as_ref()
        .map_or("none (unmatched events are recorded as unrouted)".to_owned(), |a| action(&cfg.router, a));
    let _ = writeln!(out, "  default -> {default}");
    out
}

fn retry(p: &RetryPolicy) -> String {
    let attempts = p.max_attempts.map_or("unlimited".to_owned(), |n| n.to_string());
    let d = |x| humantime::format_duration(x).to_string();
    let delays = if p.schedule.is_empty() {
        format!("delay {}..{}", d(p.initial_delay), d(p.max_delay))
    } else {
        format!("schedule [{}]", p.schedule.iter().map(|s| d(*s)).collect::<Vec<_>>().join(", "))
    };
    format!("max_attempts {attempts}, max_age {}, {delays}", d(p.max_age))
}

fn action(router: &Router, a: &Action) -> String {
    let names = |ids: &[usize]| ids.iter().map(|&i| router.destinations[i].name.clone()).collect::<Vec<_>>();
    match a {
        Action::Drop => "drop".to_owned(),
        Action::Deliver(ids) => names(ids).join(", "),
        Action::Named(n) => {
            let mut to = names(&n.fixed);
            to.extend(n.inboxes.iter().map(|r| match r {
                InboxRef::Literal(name) => format!("inbox:{name}"),
                InboxRef::Field(paths) => {
                    let paths: Vec<String> = paths.iter().map(|p| p.join(".")).collect();
                    format!("inbox:{{{}}}", paths.join("|"))
                }
            }));
            let unknown = match &n.unknown {
                Unknown::Skip => "the next rules".to_owned(),
                Unknown::Drop => "drop".to_owned(),
                Unknown::Unrouted => "unrouted".to_owned(),
                Unknown::Deliver(ids) => names(ids).join(", "),
            };
            format!("{} (no such inbox: {unknown})", to.join(", "))
        }
    }
}

fn condition(c: &Condition) -> String {
    match c {
        Condition::Type(p) => format!("type in [{}]", p.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        Condition::Account(a) => format!("account in [{}]", a.join(", ")),
        Condition::Livemode(l) => format!("livemode = {l}"),
        Condition::Field { paths, test } => {
            let paths: Vec<String> = paths.iter().map(|p| p.join(".")).collect();
            let mut tests = Vec::new();
            if let Some(v) = &test.equals {
                tests.push(format!("= {v}"));
            }
            if let Some(v) = &test.any_of {
                tests.push(format!("in {}", serde_json::Value::Array(v.clone())));
            }
            if let Some(p) = &test.prefix {
                tests.push(format!("starts with {p:?}"));
            }
            if let Some(e) = test.exists {
                tests.push(if e { "exists".to_owned() } else { "is absent".to_owned() });
            }
            format!("{} {}", paths.join(" | "), tests.join(" and "))
        }
    }
}
