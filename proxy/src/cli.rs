//! The `fanout` command line: argument parsing (clap) and the human output of each verb. The verbs
//! call the same stages the server runs, so a dry run answers exactly what live traffic would do.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};

mod backfill;
mod demo;
mod inbox;
mod listen;
mod ops;
mod store;
mod trigger;

use crate::http::client as outbound;
use crate::reload::Overrides;
use crate::route::{Decision, DestinationKind, KnownOwner, Router};
use crate::{clock, reload, serve, signature};
use std::convert::Infallible;

pub use ops::AdminArgs;

#[derive(Parser, Debug)]
#[command(
    name = "fanout",
    version,
    about = "One Stripe test-mode webhook endpoint in; verified, durably queued, routed and re-signed out to every environment."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "FANOUT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, short, default_value = "routing.yaml")]
        config: PathBuf,
        /// Override `listen` from the config (e.g. 127.0.0.1:0 for a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override `data_dir` from the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override `admin.listen` from the config.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
        /// Store events and queues in this Postgres instead of the config's store
        /// (postgres://user:pass@host/db), e.g. to try several replicas on a local database; the
        /// config's `pool` is kept, not its `ca`.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Validate a routing.yaml and print its routing table (secrets redacted).
    Check {
        #[arg(default_value = "routing.yaml")]
        config: PathBuf,
    },
    /// Dry run: which destinations an event would go to, and which rule (or owner) decided.
    Route {
        config: PathBuf,
        event: PathBuf,
        /// Pretend an object is owned: `cus_123=alice` (repeatable).
        #[arg(long = "owner", value_name = "ID=DESTINATION")]
        owners: Vec<String>,
        /// Ask the running proxy's admin API who owns the objects the event references.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print a valid Stripe-Signature header for an event file.
    Sign {
        #[arg(long, env = "FANOUT_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        /// Unix timestamp to sign at (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
        event: PathBuf,
    },
    /// Developers' inboxes created at run time: create, list, rotate, delete.
    Inbox {
        #[command(subcommand)]
        command: inbox::InboxCommand,
    },
    /// Send realistic, signed Stripe events, or a whole flow, through the proxy (or straight to a
    /// target): `fanout trigger invoice.payment_failed --customer cus_123`, `--flow NAME`, `--list`.
    Trigger(trigger::TriggerArgs),
    /// POST an event file to a URL with a correct Stripe-Signature.
    Send {
        #[arg(long)]
        url: http::Uri,
        #[arg(long, env = "FANOUT_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        event: PathBuf,
    },
    /// List recent events with where they went and where they stand (newest first).
    Events {
        #[command(flatten)]
        filter: ops::EventFilter,
        /// Only events whose body names this object (`cus_…`, `sub_…`, `in_…`): a bounded look
        /// at the newest events.
        #[arg(long)]
        object: Option<String>,
        #[command(flatten)]
        page: ops::PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// One event in full: destinations, every attempt (time, target, status, latency, error), body.
    Event {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deliver an event again (re-signed, marked `Fanout-Replay: true`), or every event a filter
    /// selects. Without --to: to the destinations routing chose.
    Replay {
        /// The event to replay; leave out to replay by filter.
        id: Option<String>,
        /// A target or group to send it to instead.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        filter: ops::EventFilter,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List dead letters; or replay or purge them (one by --id, a target's, or --all).
    DeadLetters {
        #[arg(long)]
        target: Option<String>,
        /// One dead letter, by its id.
        #[arg(long)]
        id: Option<String>,
        /// Every dead letter (with --replay or --purge).
        #[arg(long)]
        all: bool,
        #[arg(long, conflicts_with = "purge")]
        replay: bool,
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        page: ops::PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Targets with their live state: paused, breaker, queued, in flight, dead letters, last error.
    #[command(args_conflicts_with_subcommands = true)]
    Targets {
        #[command(subcommand)]
        action: Option<TargetsAction>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pause a target: it keeps queueing and delivers nothing until resumed.
    Pause {
        target: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Resume a paused target where it stopped.
    Resume {
        target: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Who owns a Stripe object: its unrouted events go there (sticky ownership routing).
    Owner {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List owned objects, optionally of one destination.
    Owners {
        /// Only the objects this target or group owns.
        #[arg(long)]
        destination: Option<String>,
        #[command(flatten)]
        page: ops::PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a destination the owner of a Stripe object (`fanout own cus_123 alice`).
    Own {
        id: String,
        #[arg(required = true)]
        destinations: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Forget who owns a Stripe object.
    Disown {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Receive your inbox's events on this machine and forward them to your local app (like
    /// `stripe listen`), through the proxy: no tunnel needed.
    Listen(listen::ListenArgs),
    /// Move a store between engines (sled and Postgres): `export` it as JSON lines, `import`
    /// them into an empty store.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Run a self-contained demo: the proxy, three local apps, a developer's `listen`, and a
    /// realistic sequence of signed events, printing where each went and why.
    Demo {
        /// Keep the proxy and the apps running afterwards (until Ctrl-C), to look around in the
        /// console it prints the address of.
        #[arg(long)]
        keep_running: bool,
    },
    /// Fetch events from Stripe's Events API since a time and ingest those the proxy has not seen
    /// (after an outage), through the same routing and dedup as webhooks. Needs STRIPE_API_KEY.
    Backfill {
        /// RFC 3339 time, unix seconds, or a duration ago (`6h`).
        #[arg(long)]
        since: String,
        /// Only these event types (Stripe's `types[]` filter).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Stripe's API base URL (a local fake in tests).
        #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com")]
        stripe_api: String,
        #[arg(long, env = "STRIPE_API_KEY", hide_env_values = true)]
        stripe_key: String,
        /// The source whose settings (livemode) the events are taken under; default the first.
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `fanout targets reset NAME`.
#[derive(Subcommand, Debug)]
pub enum TargetsAction {
    /// Close a target's circuit breaker by hand: its held queue drains again at once.
    Reset {
        target: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen, data_dir, admin_listen, database_url } => {
            if database_url.as_deref().is_some_and(|url| !crate::config::is_postgres_url(url)) {
                anyhow::bail!("--database-url must start with postgres:// or postgresql://");
            }
            serve_until_signal(&config, Overrides { listen, admin_listen, data_dir, database_url }).await
        }
        Command::Check { config } => {
            let cfg = reload::load(&config)?;
            print!("{}: OK\n{}", config.display(), crate::config::describe(&cfg));
            Ok(())
        }
        Command::Route { config, event, owners, live, admin } => {
            let cfg = reload::load(&config)?;
            let json: serde_json::Value =
                serde_json::from_slice(&read(&event)?).with_context(|| format!("{} is not JSON", event.display()))?;
            let mut known = Vec::new();
            for pair in &owners {
                let (id, dest) =
                    pair.split_once('=').with_context(|| format!("--owner {pair:?} is not ID=DESTINATION"))?;
                known.push((
                    id.to_owned(),
                    KnownOwner { destinations: vec![dest.to_owned()], via: "--owner".to_owned() },
                ));
            }
            if live {
                known.extend(ops::live_owners(&admin, &cfg.router.references(&json)).await?);
            }
            let lookup = |id: &str| Ok::<_, Infallible>(known.iter().find(|(k, _)| k == id).map(|(_, o)| o.clone()));
            let Ok(decision) = cfg.router.route_with(&json, lookup);
            print!("{}", explain(&cfg.router, &decision));
            Ok(())
        }
        Command::Sign { secret, timestamp, event } => {
            let t = timestamp.unwrap_or_else(clock::unix_now_secs);
            println!("{}", signature::sign(secret.as_bytes(), t, &read(&event)?));
            Ok(())
        }
        Command::Trigger(args) => trigger::run(args).await,
        Command::Inbox { command } => inbox::run(command).await,
        Command::Send { url, secret, event } => send(url, &secret, read(&event)?).await,
        Command::Events { filter, object, page, admin } => ops::events(&admin, &filter, object, page).await,
        Command::Event { id, admin } => ops::event(&admin, &id).await,
        Command::Replay { id, to, filter, admin } => ops::replay(&admin, id, to, &filter).await,
        Command::DeadLetters { target, id, all, replay, purge, page, admin } => {
            let action = match (replay, purge) {
                (true, _) => Some("replay"),
                (_, true) => Some("purge"),
                _ => None,
            };
            ops::dead_letters(&admin, ops::DeadLetterArgs { target, id, all, action, page }).await
        }
        Command::Targets { action: None, admin } => ops::targets(&admin).await,
        Command::Targets { action: Some(TargetsAction::Reset { target, admin }), .. } => {
            ops::reset_breaker(&admin, &target).await
        }
        Command::Pause { target, admin } => ops::pause(&admin, &target, true).await,
        Command::Resume { target, admin } => ops::pause(&admin, &target, false).await,
        Command::Owner { id, admin } => ops::owner(&admin, &id).await,
        Command::Owners { destination, page, admin } => ops::owners(&admin, destination, page).await,
        Command::Own { id, destinations, admin } => ops::own(&admin, &id, &destinations).await,
        Command::Disown { id, admin } => ops::own(&admin, &id, &[]).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Store { command } => store::run(command).await,
        Command::Demo { keep_running } => demo::run(keep_running).await,
        Command::Backfill { since, types, stripe_api, stripe_key, source, admin } => {
            backfill::run(&admin, &since, &types, &stripe_api, &stripe_key, source.as_deref()).await
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn serve_until_signal(path: &Path, overrides: Overrides) -> anyhow::Result<()> {
    let config = overrides.load(path)?;
    let running = serve::start(config.clone()).await?;
    let paths: Vec<&str> = config.sources.iter().map(|s| s.path.as_str()).collect();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(%scheme, addr = %running.addr, admin = %running.admin_addr, data_dir = %config.data_dir.display(), sources = ?paths, targets = config.targets.len(), "fanout serving");
    // Machine-readable lines on stdout, for scripts and tests that start on port 0. One write,
    // and a closed stdout is ignored: a reader that stopped after the first line (`| head -1`)
    // must not take the server down (`println!` panics on a broken pipe).
    let lines = format!("listening on {}\nadmin on {}\n", running.addr, running.admin_addr);
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, lines.as_bytes()).and_then(|()| std::io::Write::flush(&mut stdout));
    drop(stdout);
    reload::serve_until_signal(path, &overrides, &running).await;
    tracing::info!("shutting down");
    running.stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn send(url: http::Uri, secret: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let url = url.to_string();
    let (status, text) = post_signed(&url, secret, body).await?;
    println!("{status} {text}");
    if !(200..300).contains(&status) {
        bail!("{url} answered {status}");
    }
    Ok(())
}

/// POSTs `body` signed now with `secret`, as Stripe does; the status and the answer's text.
async fn post_signed(url: &str, secret: &str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    let header = signature::sign(secret.as_bytes(), clock::unix_now_secs(), &body);
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
    let text = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

/// The answer of `fanout route`.
pub fn explain(router: &Router, decision: &Decision<'_>) -> String {
    match decision {
        Decision::Unrouted => {
            "unrouted: no rule matched and there is no default (acknowledged and recorded, delivered nowhere)\n"
                .to_owned()
        }
        Decision::Drop { rule } => format!("drop: by rule {rule:?} (acknowledged and recorded, delivered nowhere)\n"),
        Decision::Deliver(chosen) => chosen
            .iter()
            .map(|&(d, rule)| {
                let dest = &router.destinations[d];
                let kind = match &dest.kind {
                    DestinationKind::Target(_) => "target".to_owned(),
                    DestinationKind::Group { mode, members } => {
                        format!("{mode:?} group of {}", members.len()).to_lowercase()
                    }
                };
                format!("{} ({kind}) by rule {rule:?}\n", dest.name)
            })
            .collect(),
        Decision::Owned { object, destinations, via } => destinations
            .iter()
            .map(|&d| {
                let dest = &router.destinations[d];
                format!(
                    "{} by ownership: no rule matched, and {object} belongs to it (claimed by rule {via:?})\n",
                    dest.name
                )
            })
            .collect(),
    }
}
