//! `fanout listen`: a developer's inbox on their laptop. It connects out to the proxy (so NAT and
//! firewalls do not matter), long-polls for the inbox's events, forwards each to the local app
//! with the headers the proxy made (a `Stripe-Signature` with the inbox's secret among them), and
//! answers for each only after the local app did: an event the app did not take with a 2xx is
//! retried by the proxy, one the laptop never answered for is offered again.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use backon::BackoffBuilder;
use bytes::Bytes;
use clap::Args;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use serde::de::DeserializeOwned;

use crate::http::client::{self as outbound, Failure, HttpClient};
use crate::wire::listen::{Answer, InboxInfo, InboxSecret, Offered, Polled, LISTENER_HEADER, PATH_PREFIX};
use crate::wire::ErrorBody;

#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// The proxy's webhook listener (where Stripe posts), e.g. https://fanout.internal.
    #[arg(long, env = "FANOUT_PROXY_URL")]
    pub proxy: String,
    /// This inbox's token (the target's `token` in the proxy's routing.yaml, or what `fanout inbox
    /// create` printed).
    #[arg(long, env = "FANOUT_INBOX_TOKEN", hide_env_values = true, required_unless_present = "name")]
    pub token: Option<String>,
    /// The inbox whose token `fanout inbox create --save` wrote (when no --token is given).
    #[arg(long)]
    pub name: Option<String>,
    /// The local app's webhook endpoint, e.g. http://localhost:3000/webhook.
    #[arg(long, required_unless_present = "print_secret")]
    pub forward_to: Option<http::Uri>,
    /// Print the secret the local app verifies Stripe-Signature with, and exit.
    #[arg(long)]
    pub print_secret: bool,
    /// A CA (PEM) to trust for the proxy's TLS besides the platform's roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Most events fetched per poll.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Only these event types, like `stripe listen --events`: `invoice.*,customer.subscription.*`.
    /// The others stay in the inbox for a listener that takes them (or until max_age).
    #[arg(long, value_parser = events_filter, default_value = "")]
    pub events: EventsFilter,
}

/// `--events`, checked before connecting (a bad filter is not worth a reconnect loop).
#[derive(Debug, Clone, Default)]
pub struct EventsFilter(pub Vec<String>);

fn events_filter(value: &str) -> Result<EventsFilter, String> {
    crate::wire::listen::parse_types(value).map(EventsFilter)
}

/// Polls wait this long on the proxy; the client allows a margin on top.
const POLL_WAIT_S: u64 = 25;

enum PollError {
    /// Retrying will not help (the token was refused).
    Fatal(anyhow::Error),
    /// The proxy is unreachable or answered an error: back off and retry.
    Retry(String),
}

pub async fn run(mut args: ListenArgs) -> anyhow::Result<()> {
    if args.token.is_none() {
        let name = args.name.as_deref().context("give --token (or FANOUT_INBOX_TOKEN) or --name")?;
        let path = super::inbox::token_path(name)?;
        let token = std::fs::read_to_string(&path).with_context(|| {
            format!("no token for inbox {name:?} at {} (`fanout inbox create {name} --save` writes it)", path.display())
        })?;
        args.token = Some(token.trim().to_owned());
    }
    let client = outbound::client(args.ca.as_deref())?;
    let base = args.proxy.trim_end_matches('/').to_owned();
    let listener = format!("{}-{}", std::process::id(), unix_nanos() % 1_000_000);
    if args.print_secret {
        let url = format!("{base}{PATH_PREFIX}/secret");
        let secret: InboxSecret = get_json(&client, &url, args.token.as_deref().unwrap_or_default(), &listener)
            .await
            .map_err(|e| match e {
            PollError::Fatal(e) => e,
            PollError::Retry(e) => anyhow::anyhow!("cannot reach the proxy at {base}: {e}"),
        })?;
        println!("{}", secret.secret);
        return Ok(());
    }
    let Some(forward_to) = args.forward_to.clone() else { bail!("--forward-to is required") };
    // Ctrl-C stops at once, mid-event too: an event not answered for is offered again later.
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        done = forward_until_refused(&args, &client, &base, &listener, &forward_to) => done,
    }
}

/// Polls and forwards until the proxy refuses the token; reconnects with backoff otherwise.
async fn forward_until_refused(
    args: &ListenArgs,
    client: &HttpClient,
    base: &str,
    listener: &str,
    forward_to: &http::Uri,
) -> anyhow::Result<()> {
    let mut backoff = reconnect_backoff();
    let mut connected = false;
    let mut poll_url = format!("{base}{PATH_PREFIX}/events?wait={POLL_WAIT_S}&max={}", args.batch.clamp(1, 100));
    let types = &args.events.0;
    if !types.is_empty() {
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("types", &types.join(",")).finish();
        poll_url = format!("{poll_url}&{query}");
    }
    let which = if types.is_empty() { String::new() } else { format!(" {}", types.join(", ")) };
    let status_url = format!("{base}{PATH_PREFIX}");
    loop {
        // Connecting is asking for the inbox's state (it checks the token); then polls follow.
        let polled = if connected {
            get_json::<Polled>(client, &poll_url, args.token.as_deref().unwrap_or_default(), listener).await
        } else {
            get_json::<InboxInfo>(client, &status_url, args.token.as_deref().unwrap_or_default(), listener).await.map(|info| {
                println!(
                    "Ready! Inbox {} is forwarding{which} to {forward_to} (the app verifies with `fanout listen --print-secret`). Ctrl-C to stop.",
                    info.inbox
                );
                Polled { inbox: info.inbox, timeout_ms: 0, deliveries: Vec::new() }
            })
        };
        let polled = match polled {
            Ok(polled) => polled,
            Err(PollError::Fatal(e)) => return Err(e),
            Err(PollError::Retry(e)) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                if connected {
                    eprintln!("lost the proxy ({e}); reconnecting");
                } else {
                    eprintln!("cannot reach the proxy at {base} ({e}); retrying in {:.1}s", wait.as_secs_f64());
                }
                connected = false;
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if !connected {
            connected = true;
            backoff = reconnect_backoff();
            continue;
        }
        let timeout = Duration::from_millis(polled.timeout_ms.max(100));
        for offered in polled.deliveries {
            let answer = forward(client, forward_to, &offered, timeout).await;
            let when = humantime::format_rfc3339_seconds(SystemTime::now());
            let outcome = match (&answer.status, &answer.error) {
                (Some(s), _) => format!("[{s}]"),
                (None, Some(e)) => format!("[ERR] {e}"),
                (None, None) => "[ERR]".to_owned(),
            };
            println!(
                "{when}  {:<36} {}  {outcome}  {} ms{}",
                offered.event_type,
                offered.event_id,
                answer.latency_ms.unwrap_or(0),
                if offered.attempt > 1 { format!("  (attempt {})", offered.attempt) } else { String::new() }
            );
            if let Err(e) =
                send_answer(client, base, args.token.as_deref().unwrap_or_default(), listener, &answer).await
            {
                eprintln!("  could not answer for {} ({e}); the proxy will offer it again", offered.event_id);
            }
        }
    }
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn authorized(method: Method, url: &str, token: &str, listener: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(LISTENER_HEADER, listener)
}

async fn get_json<T: DeserializeOwned>(
    client: &HttpClient,
    url: &str,
    token: &str,
    listener: &str,
) -> Result<T, PollError> {
    let req = authorized(Method::GET, url, token, listener)
        .body(Full::new(Bytes::new()))
        .map_err(|e| PollError::Fatal(anyhow::anyhow!("{url} is not a valid proxy URL: {e}")))?;
    let exchange = async {
        let res = client.request(req).await.map_err(|e| PollError::Retry(outbound::error_chain(&e)))?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| PollError::Retry(e.to_string()))?.to_bytes();
        let message = || {
            serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned())
        };
        match status {
            s if s.is_success() => serde_json::from_slice(&body).map_err(|e| {
                PollError::Fatal(anyhow::anyhow!(
                    "the proxy's answer is not what this fanout expects ({e}); are both the same version?"
                ))
            }),
            // A request this listener made wrong: asking again will not help.
            StatusCode::BAD_REQUEST => {
                Err(PollError::Fatal(anyhow::anyhow!("the proxy refused the request: {}", message())))
            }
            StatusCode::UNAUTHORIZED => Err(PollError::Fatal(anyhow::anyhow!(
                "the proxy refused the inbox token: {}. Use the `token` of your inbox target in the proxy's routing.yaml",
                message()
            ))),
            StatusCode::NOT_FOUND => Err(PollError::Fatal(anyhow::anyhow!(
                "the proxy has no inbox endpoint at {url} ({}); --proxy is its webhook listener's address",
                message()
            ))),
            s => Err(PollError::Retry(format!("HTTP {s}: {}", message()))),
        }
    };
    match tokio::time::timeout(Duration::from_secs(POLL_WAIT_S + 15), exchange).await {
        Ok(r) => r,
        Err(_) => Err(PollError::Retry("no answer to a poll in time".to_owned())),
    }
}

/// POSTs one event to the local app exactly as the proxy would have.
async fn forward(client: &HttpClient, to: &http::Uri, offered: &Offered, timeout: Duration) -> Answer {
    let started = Instant::now();
    let mut req = Request::post(to.clone());
    for (name, value) in &offered.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let result = match req.body(Full::new(Bytes::from(offered.body.clone()))) {
        Ok(req) => outbound::post(client, req, timeout).await,
        Err(e) => Err(Failure { status: None, error: format!("cannot build the request: {e}") }),
    };
    let (status, error) = match result {
        Ok(status) => (Some(status), None),
        Err(f) => (f.status, Some(f.error)),
    };
    Answer { id: offered.id.clone(), status, latency_ms: Some(started.elapsed().as_millis() as u64), error }
}

async fn send_answer(
    client: &HttpClient,
    base: &str,
    token: &str,
    listener: &str,
    answer: &Answer,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(answer)?;
    let req = authorized(Method::POST, &format!("{base}{PATH_PREFIX}/answer"), token, listener)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .context("no answer in time")?
        .map_err(|e| anyhow::anyhow!(outbound::error_chain(&e)))?;
    let status = res.status();
    if !status.is_success() {
        let text = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&text));
    }
    Ok(())
}
