//! The `fanout` command line: argument parsing (clap) and the human output of each verb. The verbs
//! call the same stages the server runs, so a dry run answers exactly what live traffic would do.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};

use crate::config::{Config, RetryPolicy};
use crate::route::{Action, Condition, Decision, DestinationKind, Router};
use crate::{deliver, ingress, serve, signature};

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
    },
    /// Validate a routing.yaml and print its routing table (secrets redacted).
    Check {
        #[arg(default_value = "routing.yaml")]
        config: PathBuf,
    },
    /// Dry run: which destinations an event would go to, and which rule decided.
    Route { config: PathBuf, event: PathBuf },
    /// Print a valid Stripe-Signature header for an event file.
    Sign {
        #[arg(long, env = "FANOUT_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        /// Unix timestamp to sign at (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
        event: PathBuf,
    },
    /// POST an event file to a URL with a correct Stripe-Signature.
    Send {
        #[arg(long)]
        url: http::Uri,
        #[arg(long, env = "FANOUT_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        event: PathBuf,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen, data_dir } => serve_until_signal(&config, listen, data_dir).await,
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            print!("{}", describe(&config, &cfg));
            Ok(())
        }
        Command::Route { config, event } => {
            let cfg = Config::load(&config)?;
            let json: serde_json::Value =
                serde_json::from_slice(&read(&event)?).with_context(|| format!("{} is not JSON", event.display()))?;
            print!("{}", explain(&cfg.router, &cfg.router.route(&json)));
            Ok(())
        }
        Command::Sign { secret, timestamp, event } => {
            let t = timestamp.unwrap_or_else(ingress::unix_now_secs);
            println!("{}", signature::sign(secret.as_bytes(), t, &read(&event)?));
            Ok(())
        }
        Command::Send { url, secret, event } => send(url, &secret, read(&event)?).await,
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn serve_until_signal(
    path: &Path,
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut config = Config::load(path)?;
    config.listen = listen.unwrap_or(config.listen);
    config.data_dir = data_dir.unwrap_or(config.data_dir);
    let running = serve::start(config.clone()).await?;
    let paths: Vec<&str> = config.sources.iter().map(|s| s.path.as_str()).collect();
    tracing::info!(addr = %running.addr, data_dir = %config.data_dir.display(), sources = ?paths, targets = config.targets.len(), "fanout serving");
    // One machine-readable line on stdout, for scripts and tests that start on port 0.
    println!("listening on {}", running.addr);
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn send(url: http::Uri, secret: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let header = signature::sign(secret.as_bytes(), ingress::unix_now_secs(), &body);
    let req = http::Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("stripe-signature", header)
        .body(Full::new(Bytes::from(body)))?;
    let res = deliver::http_client().request(req).await.with_context(|| format!("cannot reach {url}"))?;
    let status = res.status();
    let text = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    println!("{status} {}", String::from_utf8_lossy(&text));
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(())
}

/// The routing table as `fanout check` prints it. Secrets show as their prefix only.
pub fn describe(path: &Path, cfg: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let d = |x: std::time::Duration| humantime::format_duration(x).to_string();
    let _ = writeln!(out, "{}: OK", path.display());
    let _ = writeln!(
        out,
        "listen {}  data_dir {}  max_body_bytes {}",
        cfg.listen,
        cfg.data_dir.display(),
        cfg.max_body_bytes
    );
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
        let _ = writeln!(
            out,
            "  {:<12} {}  secret {}  timeout {}  concurrency {}  retry {}",
            t.name,
            t.url,
            t.secret,
            d(t.timeout),
            t.concurrency,
            retry(&t.retry)
        );
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
    let _ = writeln!(out, "\nroutes (in order; the first match decides unless it says continue):");
    for (i, r) in cfg.router.rules.iter().enumerate() {
        let when: Vec<String> = r.when.iter().map(condition).collect();
        let when = if when.is_empty() { "always".to_owned() } else { when.join(" and ") };
        let cont = if r.continue_matching { "  (continue)" } else { "" };
        let _ = writeln!(out, "  {}. {:<12} when {when} -> {}{cont}", i + 1, r.name, action(&cfg.router, &r.action));
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
    format!("max_attempts {attempts}, max_age {}, delay {}..{}", d(p.max_age), d(p.initial_delay), d(p.max_delay))
}

fn action(router: &Router, a: &Action) -> String {
    match a {
        Action::Drop => "drop".to_owned(),
        Action::Deliver(ids) => {
            ids.iter().map(|&i| router.destinations[i].name.as_str()).collect::<Vec<_>>().join(", ")
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
    }
}
