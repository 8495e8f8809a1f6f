//! `fanout trigger`: realistic, signed Stripe events and whole flows on demand. Each event is
//! built by [`crate::fixtures`], signed with a source's secret and posted to the proxy's webhook
//! listener, so routing, ownership and dedup apply as to Stripe's own; or, with `--to-target`,
//! signed with one target's secret and posted straight to it. Where each went is then read back
//! from the admin API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http::Method;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::Value;

use super::ops::{call_found, AdminArgs};
use crate::clock::unix_now_secs;
use crate::config::{Config, Endpoint};
use crate::fixtures::{catalogue, parse_metadata, parse_set, FreshIds, Options};
use crate::http::client as outbound;
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
    /// targets for --to-target.
    #[arg(long, default_value = "routing.yaml")]
    config: PathBuf,
    /// Post to this proxy instead of the config's listen address (http://host:port).
    #[arg(long)]
    proxy: Option<String>,
    /// The source to sign as (default: the config's first).
    #[arg(long)]
    source: Option<String>,
    /// Sign with this secret instead of the source's (then no config is needed).
    #[arg(long, env = "FANOUT_TRIGGER_SECRET", hide_env_values = true)]
    secret: Option<String>,
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
    let (url, secret, admin) = destination(&args)?;
    for event in events {
        let body = serde_json::to_vec(&event).context("an event is JSON")?;
        let header = signature::sign(secret.as_bytes(), unix_now_secs(), &body);
        if args.print {
            say!("Stripe-Signature: {header}\n{}", serde_json::to_string_pretty(&event).unwrap_or_default());
            continue;
        }
        let (id, event_type) = (str_of(&event, "id"), str_of(&event, "type"));
        let status = post(&url, &header, body).await?;
        let routed = match &admin {
            Some(admin) if args.to_target.is_none() => where_it_went(admin, &id).await,
            _ => None,
        };
        let sent = Sent { event_id: id, event_type, url: url.clone(), status, routed };
        report(&sent, args.admin.json);
        if !(200..300).contains(&status) {
            bail!("{url} answered {status} for {}", sent.event_id);
        }
    }
    Ok(())
}

/// Where to post, with which secret, and the admin API to ask where the events went.
fn destination(args: &TriggerArgs) -> anyhow::Result<(String, String, Option<AdminArgs>)> {
    let config = if args.secret.is_some() && args.proxy.is_some() && !args.config.exists() {
        None
    } else {
        let loaded = crate::reload::load(&args.config);
        Some(loaded.with_context(|| {
            format!("cannot read {} (pass --config, or --proxy and --secret)", args.config.display())
        })?)
    };
    let admin = admin_args(args, config.as_ref());
    if let Some(name) = &args.to_target {
        let config = config.context("--to-target needs the config that names the target")?;
        let target =
            config.target(name).with_context(|| format!("no target named {name:?} in {}", args.config.display()))?;
        let Endpoint::Url(url) = &target.endpoint else {
            bail!("{name:?} is an inbox: it has no URL to post to; send through the proxy and `fanout listen`")
        };
        return Ok((url.to_string(), target.secret.expose().to_owned(), None));
    }
    let source = match (&config, &args.source) {
        (Some(c), Some(name)) => Some(c.sources.iter().find(|s| &s.name == name).with_context(|| {
            let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
            format!("no source named {name:?}; the config has {}", names.join(", "))
        })?),
        (Some(c), None) => c.sources.first(),
        (None, _) => None,
    };
    let base = match (&args.proxy, &config) {
        (Some(p), _) => p.trim_end_matches('/').to_owned(),
        (None, Some(c)) => format!("{}://{}", if c.tls.is_some() { "https" } else { "http" }, loopback(c.listen)),
        (None, None) => bail!("no proxy to post to: pass --config or --proxy"),
    };
    let path = source.map_or("/stripe/webhook", |s| s.path.as_str());
    let secret = match (&args.secret, source) {
        (Some(secret), _) => secret.clone(),
        // The newest secret of a rotation is listed last.
        (None, Some(s)) => s.secrets.last().context("the source has no secret")?.expose().to_owned(),
        (None, None) => bail!("no secret to sign with: pass --secret or --config"),
    };
    Ok((format!("{base}{path}"), secret, admin))
}

/// The admin API: --admin if given (or FANOUT_ADMIN_URL), else the config's admin listener.
fn admin_args(args: &TriggerArgs, config: Option<&Config>) -> Option<AdminArgs> {
    let mut admin = args.admin.clone();
    let default = AdminArgs::DEFAULT_URL;
    if let (Some(config), true) = (config, admin.url == default) {
        admin.url = format!("http://{}", loopback(config.admin.listen));
        if admin.token.is_none() {
            admin.token = config.admin.token.as_ref().map(|t| t.expose().to_owned());
        }
    }
    Some(admin)
}

/// A listener on every interface is reached on loopback.
fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

async fn post(url: &str, header: &str, body: Vec<u8>) -> anyhow::Result<u16> {
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("stripe-signature", header)
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("{url} is not a valid URL"))?;
    let res = outbound::client(None)?
        .request(req)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {}", outbound::error_chain(&e)))?;
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    Ok(status)
}

/// The event as the admin API shows it, once ingest has recorded it; none if the API cannot be
/// reached (the event was still sent).
async fn where_it_went(admin: &AdminArgs, id: &str) -> Option<EventDetail> {
    for _ in 0..20 {
        match call_found::<EventDetail>(admin, Method::GET, &format!("/events/{id}"), &[]).await {
            Ok(Some(detail)) => return Some(detail),
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => return None,
        }
    }
    None
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
