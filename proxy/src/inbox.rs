//! The listen protocol: how `fanout listen` on a developer's laptop fetches its inbox's events and
//! answers for them, on the webhook listener (the one address laptops and Stripe can both reach,
//! with its TLS) under [`PATH_PREFIX`]. Each request carries the inbox's own token, which opens
//! that inbox and nothing else.
//!
//! Long polling rather than a stream: every exchange is an ordinary request (through any load
//! balancer, proxy or VPN, over HTTP/1.1 or 2), the answer for each event is its own request that
//! returns once it is durable, and a dropped connection costs nothing but a re-poll — the offered
//! events stay leased and come back if their answer never arrives.
//!
//! - `GET  /fanout/inbox/events?wait=25&max=10` — up to `max` events, waiting up to `wait` s.
//! - `POST /fanout/inbox/answer` — `{"id", "status", "latency_ms", "error"}` for one event.
//! - `GET  /fanout/inbox/secret` — the secret the local app verifies with (`--print-secret`).
//! - `GET  /fanout/inbox` — the inbox's name, queue and listeners.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{Endpoint, LiveConfig, Target};
use crate::deliver::{Deliveries, InboxError};
use crate::ingress::{json_response, reply, Body};

pub const PATH_PREFIX: &str = "/fanout/inbox";

/// Longest a poll may wait, and the default.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
pub const DEFAULT_WAIT: Duration = Duration::from_secs(25);
/// Most events per poll, and the default.
pub const MAX_BATCH: usize = 100;
pub const DEFAULT_BATCH: usize = 10;

/// Names the `fanout listen` process, so two terminals on one inbox count as two listeners.
pub const LISTENER_HEADER: &str = "fanout-listener";

/// One event offered to a listener: forward `body` with `headers` (a fresh `Stripe-Signature` made
/// with the inbox's secret among them), then answer for `id`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Offered {
    pub id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub attempt: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A poll's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Polled {
    pub inbox: String,
    /// How long the listener should give the local app per event.
    pub timeout_ms: u64,
    pub deliveries: Vec<Offered>,
}

/// What became of one offered event at the local app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    /// The local app's HTTP status; none if it could not be reached.
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
}

/// The inbox endpoints, beside the webhook sources on the same listener.
pub struct InboxApi {
    pub live: LiveConfig,
    pub deliveries: Deliveries,
    /// Cancelled when the listener stops accepting: waiting polls answer at once, so a graceful
    /// stop does not wait out a long poll.
    pub stopping: CancellationToken,
}

impl InboxApi {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        Ok(match self.answer(req).await {
            Ok(response) => response,
            Err((status, message)) => reply(status, &message),
        })
    }

    async fn answer(&self, req: Request<Incoming>) -> Result<Response<Body>, (StatusCode, String)> {
        let config = self.live.load_full();
        let target = authorize(&config, &req)?;
        let name = target.name.clone();
        let listener = req
            .headers()
            .get(LISTENER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(64).collect::<String>())
            .unwrap_or_else(|| "anonymous".to_owned());
        let rest = req.uri().path().strip_prefix(PATH_PREFIX).unwrap_or_default();
        let query: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
        let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        match (req.method(), rest) {
            (&Method::GET, "" | "/") => {
                let status = self.deliveries.inbox_status(&name);
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "inbox": name, "listening": status })))
            }
            (&Method::GET, "/secret") => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "inbox": name, "secret": target.secret.expose() }),
            )),
            (&Method::GET, "/events") => {
                let wait = number(param("wait"), "wait", DEFAULT_WAIT.as_secs(), MAX_WAIT.as_secs())?;
                let max = number(param("max"), "max", DEFAULT_BATCH as u64, MAX_BATCH as u64)?.max(1) as usize;
                let deliveries = self
                    .deliveries
                    .poll(&name, &listener, max, Duration::from_secs(wait), &self.stopping)
                    .await
                    .map_err(refused)?;
                let polled = Polled { inbox: name, timeout_ms: target.timeout.as_millis() as u64, deliveries };
                Ok(json_response(StatusCode::OK, &polled))
            }
            (&Method::POST, "/answer") => {
                let body = Limited::new(req.into_body(), 64 * 1024)
                    .collect()
                    .await
                    .map_err(|e| (StatusCode::BAD_REQUEST, format!("could not read the answer: {e}")))?
                    .to_bytes();
                let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
                    (StatusCode::BAD_REQUEST, format!("the answer is not {{id, status, latency_ms, error}}: {e}"))
                })?;
                if self.deliveries.answer(&name, &listener, &answer).await.map_err(refused)? {
                    Ok(json_response(StatusCode::OK, &serde_json::json!({ "settled": true })))
                } else {
                    Err((
                        StatusCode::CONFLICT,
                        format!(
                            "delivery {} is not waiting for an answer from inbox {name:?}: it was answered, or it \
                             expired and will be offered again",
                            answer.id
                        ),
                    ))
                }
            }
            (method, _) => Err((StatusCode::NOT_FOUND, format!("no inbox route {method} {}", req.uri().path()))),
        }
    }
}

/// The inbox whose token the request carries.
fn authorize<'c>(
    config: &'c crate::config::Config,
    req: &Request<Incoming>,
) -> Result<&'c Target, (StatusCode, String)> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| (StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer <inbox token>`".to_owned()))?;
    match config.inbox_for_token(token) {
        Some(t) if matches!(t.endpoint, Endpoint::Inbox { .. }) => Ok(t),
        _ => Err((StatusCode::UNAUTHORIZED, "no inbox has this token".to_owned())),
    }
}

fn number(value: Option<&str>, key: &str, default: u64, max: u64) -> Result<u64, (StatusCode, String)> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map(|n| n.min(max))
            .map_err(|_| (StatusCode::BAD_REQUEST, format!("{key}={v:?} is not a whole number"))),
    }
}

fn refused(e: InboxError) -> (StatusCode, String) {
    match e {
        InboxError::NotAnInbox(name) => (StatusCode::NOT_FOUND, format!("{name:?} is no longer an inbox")),
        InboxError::Store(e) => {
            tracing::error!("inbox request failed in the store: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("store error: {e}"))
        }
    }
}
