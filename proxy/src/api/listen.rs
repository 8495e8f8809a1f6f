//! The listen protocol: how `fanout listen` on a developer's laptop fetches its inbox's events and
//! answers for them, on the webhook listener (the one address laptops and Stripe can both reach,
//! with its TLS) under [`PATH_PREFIX`]. Each request carries the inbox's own token, which opens
//! that inbox and nothing else. The wire types are in `wire::listen`.
//!
//! Long polling rather than a stream: every exchange is an ordinary request (through any load
//! balancer, proxy or VPN, over HTTP/1.1 or 2), the answer for each event is its own request that
//! returns once it is durable, and a dropped connection costs nothing but a re-poll — the offered
//! events stay leased and come back if their answer never arrives.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::presence;
use crate::config::{Config, LiveConfig, Target};
use crate::deliver::{Ask, Deliveries, InboxError, LocalOutcome, Offer, Wanted};
use crate::http::{bearer, json, read_body, ApiError, Body};
use crate::wire::listen::{
    parse_types, Answer, InboxInfo, InboxSecret, Offered, Polled, Settled, LISTENER_HEADER, PATH_PREFIX,
};

/// Longest a poll may wait, and the default.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
pub const DEFAULT_WAIT: Duration = Duration::from_secs(25);
/// Most events per poll, and the default.
pub const MAX_BATCH: usize = 100;
pub const DEFAULT_BATCH: usize = 10;

/// Largest answer a listener posts.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The inbox endpoints, beside the webhook sources on the same listener.
pub struct ListenApi {
    pub live: LiveConfig,
    pub deliveries: Deliveries,
    /// Cancelled when the listener stops accepting: waiting polls answer at once, so a graceful
    /// stop does not wait out a long poll.
    pub stopping: CancellationToken,
}

impl ListenApi {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        Ok(self.answer(req).await.unwrap_or_else(ApiError::into_response))
    }

    async fn answer(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let config = self.live.load_full();
        let target = authorize(&config, &req)?;
        let name = target.name.clone();
        let listener = req
            .headers()
            .get(LISTENER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(64).collect::<String>())
            .unwrap_or_else(|| "anonymous".to_owned());
        let rest = req.uri().path().strip_prefix(PATH_PREFIX).unwrap_or_default().to_owned();
        match (req.method().clone(), rest.as_str()) {
            (Method::GET, "" | "/") => {
                let listening = self.deliveries.inbox_status(&name).map(presence);
                Ok(json(StatusCode::OK, &InboxInfo { inbox: name, listening }))
            }
            (Method::GET, "/secret") => {
                Ok(json(StatusCode::OK, &InboxSecret { inbox: name, secret: target.secret.expose().to_owned() }))
            }
            (Method::GET, "/events") => {
                let token = bearer(req.headers(), "inbox token")?;
                self.poll(target, &listener, token, req.uri().query()).await
            }
            (Method::POST, "/answer") => self.settle(&name, &listener, req).await,
            (method, _) => Err(ApiError::not_found(format!("no inbox route {method} {}", req.uri().path()))),
        }
    }

    async fn poll(
        &self,
        target: &Target,
        listener: &str,
        token: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
        let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let wait = number(param("wait"), "wait", DEFAULT_WAIT.as_secs(), MAX_WAIT.as_secs())?;
        let max = number(param("max"), "max", DEFAULT_BATCH as u64, MAX_BATCH as u64)?.max(1) as usize;
        let types =
            parse_types(param("types").unwrap_or("")).map_err(|e| ApiError::bad_request(format!("types: {e}")))?;
        let wanted = Wanted::new(&types);
        let offers = self
            .deliveries
            .poll(
                &target.name,
                listener,
                Ask { max, wanted: &wanted, token },
                Duration::from_secs(wait),
                &self.stopping,
            )
            .await
            .map_err(refused)?;
        let polled = Polled {
            inbox: target.name.clone(),
            timeout_ms: target.timeout.as_millis() as u64,
            deliveries: offers.into_iter().map(offered).collect(),
        };
        Ok(json(StatusCode::OK, &polled))
    }

    async fn settle(&self, name: &str, listener: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, MAX_ANSWER_BYTES, DEFAULT_WAIT).await?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the answer is not {{id, status, latency_ms, error}}: {e}")))?;
        let outcome = LocalOutcome { status: answer.status, latency_ms: answer.latency_ms, error: answer.error };
        if self.deliveries.answer(name, listener, &answer.id, outcome).await.map_err(refused)? {
            Ok(json(StatusCode::OK, &Settled { settled: true }))
        } else {
            Err(ApiError::conflict(format!(
                "delivery {} is not waiting for an answer from inbox {name:?}: it was answered, or it expired and \
                 will be offered again",
                answer.id
            )))
        }
    }
}

/// The inbox whose token the request carries.
fn authorize<'c>(config: &'c Config, req: &Request<Incoming>) -> Result<&'c Target, ApiError> {
    let token = bearer(req.headers(), "inbox token")?;
    config.inbox_for_token(token).ok_or_else(|| ApiError::unauthorized("no inbox has this token"))
}

fn number(value: Option<&str>, key: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map(|n| n.min(max))
            .map_err(|_| ApiError::bad_request(format!("{key}={v:?} is not a whole number"))),
    }
}

fn refused(e: InboxError) -> ApiError {
    match e {
        InboxError::NotAnInbox(name) => ApiError::not_found(format!("{name:?} is no longer an inbox")),
        InboxError::Revoked(name) => {
            ApiError::unauthorized(format!("the token no longer opens inbox {name:?} (it was rotated or deleted)"))
        }
        InboxError::Store(e) => ApiError::unavailable("inbox request failed in the store", &e),
    }
}

fn offered(offer: Offer) -> Offered {
    Offered {
        id: offer.id,
        event_id: offer.event_id,
        event_type: offer.event_type,
        attempt: offer.attempt,
        headers: offer
            .headers
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: offer.body,
    }
}
