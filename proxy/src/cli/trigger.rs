//! `fanout trigger`: realistic, signed Stripe events and whole flows on demand. Each event is
//! built by [`crate::fixtures`], signed with a source's secret and posted to the proxy's webhook
//! listener, so routing, ownership and dedup apply as to Stripe's own; or, with `--to-target`,
//! signed with one target's secret and posted straight to it. Where each went is then read back
//! from the admin API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use http::Method;
use serde::Serialize;
use serde_json::Value;

use super::ops::{call_found, AdminArgs};
use crate::clock::unix_now_secs;
use crate::config::{Config, Endpoint};
use crate::fixtures::{catalogue, parse_metadata, parse_set, FreshIds, Options};
use crate::signature;
use crate::wire::admin::EventDetail;

/// `println!` that a closed stdout (`fanout trigger --list | head`) does not turn into a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Args, Debug)]
pub struct TriggerArgs {
    /// The event type to send (`--list` shows them).
    #[arg(required_unless_present_any = ["flow", "list"], conflicts_with_all = ["flow", "list"])]
    event_type: Option<String>,
    /// Send a whole flow: its events in order, about the same objects.
    #[arg(long, conflicts_with = "list")]
    flow: Option<String>,
    /// List the event types and flows.
    #[arg(long)]
    list: bool,
    /// Set a field, from the event's root: `--set data.object.customer=cus_123` (repeatable; the
    /// value as JSON when it reads as JSON: 42, true, null, "42").
    #[arg(long = "set", value_name = "PATH=VALUE")]
    sets: Vec<String>,
    /// Put KEY=VALUE in data.object.metadata, and in an invoice's
    /// parent.subscription_details.metadata where Stripe copies its subscription's (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// A Connect event: from this connected account.
    #[arg(long, value_name = "acct_…")]
    account: Option<String>,
    /// Your app's customer: every event names it instead of a fresh one.
    #[arg(long, value_name = "cus_…")]
    customer: Option<String>,
    /// Your app's subscription: every event names it instead of a fresh one.
    #[arg(long, value_name = "sub_…")]
    subscription: Option<String>,
    /// The Event's api_version (default: the fixtures').
    #[arg(long)]
    api_version: Option<String>,
    /// The proxy's routing.yaml: its listen address, the source's secret, the admin API, and the
    /// targets for --to-target (default: ./routing.yaml, unless --secret is given).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Post to this proxy instead of the config's listen address (http://host:port).
    #[arg(long)]
    proxy: Option<String>,
    /// The source to sign as and post to (default: the config's first; Connect events belong to
    /// the source Stripe sends them to, e.g. --source connect).
    #[arg(long)]
    source: Option<String>,
    /// Sign with this secret instead of a source's: no config is read (the path is
    /// /stripe/webhook unless --proxy names one).
    #[arg(long, env = "FANOUT_TRIGGER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Wait up to this long for each event to be delivered (or dead-lettered, dropped,
    /// unrouted) before sending the next, and fail if it was not: for test scripts.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
    /// Skip the proxy: post straight to this target, signed with its own secret.
    #[arg(long, conflicts_with_all = ["proxy", "source", "secret"])]
    to_target: Option<String>,
    /// Print each event and its Stripe-Signature header; send nothing.
    #[arg(long)]
    print: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

/// What `--json` prints for each event sent.
#[derive(Serialize)]
struct Sent {
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    url: String,
    status: u16,
    /// Where it went, from the admin API (when reachable, and not for --to-target).
    routed: Option<EventDetail>,
}

pub async fn run(args: TriggerArgs) -> anyhow::Result<()> {
    let c = catalogue();
    if args.list {
        list();
        return Ok(());
    }
    let options = Options {
        sets: args.sets.iter().map(|s| parse_set(s)).collect::<Result<_, _>>()?,
        metadata: args.metadata.iter().map(|m| parse_metadata(m)).collect::<Result<_, _>>()?,
        account: args.account.clone(),
        customer: args.customer.clone(),
        subscription: args.subscription.clone(),
        api_version: args.api_version.clone(),
    };
    let mut ids = FreshIds::new(c, &options, fastrand::Rng::new());
    let now = unix_now_secs();
    let events = match (&args.flow, &args.event_type) {
        (Some(flow), _) => c.flow(flow, &options, &mut ids, now)?,
        (None, Some(t)) => vec![c.event(t, &options, &mut ids, now)?],
        (None, None) => bail!("name an event type or a --flow (`fanout trigger --list` shows them)"),
    };
    let to = destination(&args)?;
    let mut admin = to.admin.clone();
    for event in events {
        let body = serde_json::to_vec(&event).context("an event is JSON")?;
        if args.print {
            // The bytes as signed: a pretty-printed copy would not verify.
            let header = signature::sign(to.secret.as_bytes(), unix_now_secs(), &body);
            say!("Stripe-Signature: {header}\n{}", String::from_utf8_lossy(&body));
            continue;
        }
        let url = to.url.as_deref().context("no proxy to post to: pass --config or --proxy")?;
        let (id, event_type) = (str_of(&event, "id"), str_of(&event, "type"));
        let (status, _) = super::post_signed(url, &to.secret, body).await?;
        let routed = match admin.as_ref() {
            Some(a) => where_it_went(a, &id, args.wait).await.unwrap_or_else(|e| {
                eprintln!("(where events went is not shown: {e})");
                admin = None;
                None
            }),
            None => None,
        };
        let sent = Sent { event_id: id, event_type, url: url.to_owned(), status, routed };
        report(&sent, args.admin.json);
        if !(200..300).contains(&status) {
            bail!("{url} answered {status} for {}", sent.event_id);
        }
        if let (Some(wait), Some(detail)) = (args.wait, &sent.routed) {
            if detail.summary.state == "pending" {
                bail!("{} was not delivered within {}", sent.event_id, humantime::format_duration(wait));
            }
        }
    }
    Ok(())
}

/// Where a run posts, signed with what, and the admin API that says where events went (none
/// for --to-target, or without a config or --admin).
struct Destination {
    url: Option<String>,
    secret: String,
    admin: Option<AdminArgs>,
}

/// Where to post, with which secret, and the admin API to ask where the events went.
fn destination(args: &TriggerArgs) -> anyhow::Result<Destination> {
    let config = match (&args.config, &args.secret) {
        (Some(path), _) => Some(crate::reload::load(path).with_context(|| format!("cannot read {}", path.display()))?),
        (None, Some(_)) => None,
        (None, None) => Some(
            crate::reload::load(std::path::Path::new("routing.yaml"))
                .context("cannot read ./routing.yaml: pass --config, or --secret (with --proxy to send)")?,
        ),
    };
    if let Some(name) = &args.to_target {
        let config = config.context("--to-target needs the config that names the target")?;
        let target = config.target(name).with_context(|| format!("no target named {name:?} in the config"))?;
        let Endpoint::Url(url) = &target.endpoint else {
            bail!("{name:?} is an inbox: it has no URL to post to; send through the proxy and `fanout listen`")
        };
        return Ok(Destination { url: Some(url.to_string()), secret: target.secret.expose().to_owned(), admin: None });
    }
    let source = match (&config, &args.source) {
        (Some(c), Some(name)) => Some(c.sources.iter().find(|s| &s.name == name).with_context(|| {
            let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
            format!("no source named {name:?}; the config has {}", names.join(", "))
        })?),
        (Some(c), None) => c.sources.first(),
        (None, Some(_)) => bail!("--source names a source of the config; with --secret and no --config there is none"),
        (None, None) => None,
    };
    let base = match (&args.proxy, &config) {
        (Some(p), _) => Some(p.trim_end_matches('/').to_owned()),
        (None, Some(c)) => Some(format!("{}://{}", if c.tls.is_some() { "https" } else { "http" }, loopback(c.listen))),
        (None, None) => None,
    };
    let path = source.map_or("/stripe/webhook", |s| s.path.as_str());
    let secret = match (&args.secret, source) {
        (Some(secret), _) => secret.clone(),
        // The newest secret of a rotation is listed last.
        (None, Some(s)) => s.secrets.last().context("the source has no secret")?.expose().to_owned(),
        (None, None) => bail!("no secret to sign with: pass --secret or --config"),
    };
    let admin = admin_args(args, config.as_ref());
    Ok(Destination { url: base.map(|b| format!("{b}{path}")), secret, admin })
}

/// The admin API: --admin if given (or FANOUT_ADMIN_URL), else the config's admin listener;
/// none with neither.
fn admin_args(args: &TriggerArgs, config: Option<&Config>) -> Option<AdminArgs> {
    let mut admin = args.admin.clone();
    match config {
        Some(config) if admin.url == AdminArgs::DEFAULT_URL => {
            admin.url = format!("http://{}", loopback(config.admin.listen));
            if admin.token.is_none() {
                admin.token = config.admin.token.as_ref().map(|t| t.expose().to_owned());
            }
            Some(admin)
        }
        None if admin.url == AdminArgs::DEFAULT_URL => None,
        _ => Some(admin),
    }
}

/// A listener on every interface is reached on loopback.
fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// The event as the admin API shows it once ingest has recorded it (with `wait`: once it is
/// no longer pending, or the wait is over). An error: the admin API cannot say (unreachable,
/// refused the token); the event was sent all the same.
async fn where_it_went(admin: &AdminArgs, id: &str, wait: Option<Duration>) -> anyhow::Result<Option<EventDetail>> {
    let path = format!("/events/{}", super::ops::encode_segment(id));
    let deadline = std::time::Instant::now() + wait.unwrap_or(Duration::from_secs(1));
    loop {
        let found = call_found::<EventDetail>(admin, Method::GET, &path, &[]).await?;
        let settled = found.as_ref().is_some_and(|d| wait.is_none() || d.summary.state != "pending");
        if settled || std::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(sent: &Sent, json: bool) {
    if json {
        say!("{}", serde_json::to_string(sent).unwrap_or_default());
        return;
    }
    say!("{} {} -> {} {}", sent.event_id, sent.event_type, sent.url, sent.status);
    let Some(detail) = &sent.routed else { return };
    let s = &detail.summary;
    if s.destinations.is_empty() {
        say!("    {} ({})", s.state, s.dropped_by.as_deref().unwrap_or("no rule matched and no default"));
    }
    for d in &s.destinations {
        say!("    -> {:<16} {:<10} via {}", d.name, d.state, d.rule);
    }
}

fn list() {
    let c = catalogue();
    say!("event types ({}):", c.types().len());
    for t in c.types() {
        let thin = if c.thin.contains_key(t) { "  (thin, v2)" } else { "" };
        say!("  {t}{thin}");
    }
    say!("\nflows (--flow NAME):");
    for (name, flow) in &c.flows {
        let steps: Vec<&str> = flow.steps.iter().map(|s| s.event_type.as_str()).collect();
        say!("  {name:<28} {}\n  {:<28} {}", flow.about, "", steps.join(", "));
    }
}

fn str_of(event: &Value, key: &str) -> String {
    event[key].as_str().unwrap_or_default().to_owned()
}
