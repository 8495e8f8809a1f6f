//! The operator API, on its own listener: health, metrics, and every event, dead letter and target
//! an operator needs to see or steer. The CLI verbs (`fanout events`, `replay`, ...) are clients of
//! it, so what a script does over HTTP and what a person does at a terminal are the same thing.
//!
//! Invariants: every route but the health checks needs the bearer token when one is configured
//! (compared in constant time); every list is paged and bounded, so no request reads the whole
//! store into memory; nothing here writes to sled directly, only through the store's operations.

mod events;

pub use events::parse_time;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use fanout_store::{JobId, Store};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::unix_now_ms;
use crate::config::{Config, LiveConfig};
use crate::deliver::Deliveries;
use crate::ingress::{json_response, Accepted, Body, Ingress};
use crate::metrics::{Metrics, TargetLabel};
use crate::verify;

pub struct Admin {
    pub live: LiveConfig,
    pub store: Store,
    pub deliveries: Deliveries,
    pub metrics: Arc<Metrics>,
    pub ingress: Arc<Ingress>,
    pub scrape: std::sync::Mutex<()>,
}

/// Page sizes: what a list returns by default, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// Most entries one request looks at; a filter that matches rarely returns a short page and a
/// cursor to go on from, instead of walking the whole store.
const MAX_SCAN: usize = 10_000;
/// Most items one batch operation (replay by filter, dead letters by target) acts on per call.
const MAX_BATCH: usize = 1_000;

/// A refusal: status and the message the caller sees.
pub(crate) struct Refusal(StatusCode, String);

impl Refusal {
    fn bad(msg: impl Into<String>) -> Refusal {
        Refusal(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Refusal {
        Refusal(StatusCode::NOT_FOUND, msg.into())
    }
}

impl From<fanout_store::StoreError> for Refusal {
    fn from(e: fanout_store::StoreError) -> Refusal {
        tracing::error!("admin request failed in the store: {e}");
        Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("store error: {e}"))
    }
}

type Answer = Result<Response<Body>, Refusal>;

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let response = match self.route(req).await {
            Ok(r) => r,
            Err(Refusal(status, message)) => json_response(status, &json!({ "error": message })),
        };
        Ok(response)
    }

    async fn route(&self, req: Request<Incoming>) -> Answer {
        let path: Vec<String> = req.uri().path().trim_matches('/').split('/').map(decode_segment).collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let method = req.method().clone();
        // Health checks are for load balancers and orchestrators: no token, nothing revealed.
        match (&method, path.as_slice()) {
            (&Method::GET, ["healthz"]) => return Ok(text(StatusCode::OK, "ok\n")),
            (&Method::GET, ["readyz"]) => return self.ready(),
            _ => {}
        }
        // Not for browsers: a page an operator has open must not be able to post to a loopback
        // admin API that has no token (a browser sends Origin on such requests; the CLI does not).
        if req.headers().contains_key(header::ORIGIN) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "the admin API does not take requests from web pages".to_owned(),
            ));
        }
        self.authorize(&req)?;
        let answer = self.dispatch(&method, &path, req).await?;
        if method != Method::GET {
            // What an operator changed is on disk before they hear it was done.
            self.store.durable().await?;
        }
        Ok(answer)
    }

    async fn dispatch(&self, method: &Method, path: &[&str], req: Request<Incoming>) -> Answer {
        let query = Query::parse(req.uri().query());
        let config = self.live.load_full();
        match (method, path) {
            (&Method::GET, ["metrics"]) => Ok(self.metrics_text()),
            (&Method::GET, ["events"]) => self.list_events(&config, &query),
            (&Method::POST, ["events"]) => self.ingest(&config, &query, req).await,
            (&Method::GET, ["events", id]) => self.show_event(&config, id),
            (&Method::POST, ["events", id, "replay"]) => self.replay_one(&config, id, query.get("to")),
            (&Method::POST, ["replay"]) => self.replay_matching(&config, &query),
            (&Method::GET, ["dead-letters"]) => self.list_dead_letters(&query),
            (&Method::POST, ["dead-letters", "replay"]) => self.dead_letters_batch(&config, &query, true),
            (&Method::POST, ["dead-letters", "purge"]) => self.dead_letters_batch(&config, &query, false),
            (&Method::POST, ["dead-letters", id, "replay"]) => self.replay_dead_letter(&config, job_id(id)?),
            (&Method::DELETE, ["dead-letters", id]) => self.purge_dead_letter(job_id(id)?),
            (&Method::GET, ["targets"]) => Ok(json_response(StatusCode::OK, &self.targets(&config))),
            (&Method::POST, ["targets", name, "pause"]) => self.pause(name, true),
            (&Method::POST, ["targets", name, "resume"]) => self.pause(name, false),
            (&Method::GET, ["owners"]) => self.list_owners(&query),
            (&Method::GET, ["owners", id]) => self.show_owner(id),
            (&Method::PUT, ["owners", id]) => self.set_owner(&config, id, req).await,
            (&Method::DELETE, ["owners", id]) => self.disown(id),
            _ => Err(Refusal::not_found(format!("no admin route {method} {}", req.uri().path()))),
        }
    }

    /// Constant-time comparison of SHA-256 digests, so neither the token's bytes nor its length
    /// leak through timing.
    fn authorize(&self, req: &Request<Incoming>) -> Result<(), Refusal> {
        let config = self.live.load();
        let Some(token) = &config.admin.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Refusal(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer <admin token>`".to_owned())
            })?;
        let (given, expected) = (Sha256::digest(given.as_bytes()), Sha256::digest(token.expose().as_bytes()));
        if bool::from(given.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(Refusal(StatusCode::UNAUTHORIZED, "wrong admin token".to_owned()))
        }
    }

    fn ready(&self) -> Answer {
        // The store answers a read, and a config is loaded (it always is once serving).
        self.store.event("readyz-probe")?;
        Ok(text(StatusCode::OK, "ready\n"))
    }

    fn metrics_text(&self) -> Response<Body> {
        // Gauges are cleared and refilled per scrape; two scrapes at once take turns.
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let m = &self.metrics;
        let config = self.live.load();
        let counts = self.store.counts();
        let status = self.deliveries.status();
        let now = unix_now_ms();
        for family in [&m.queue_depth, &m.dead_letters, &m.in_flight, &m.paused] {
            family.clear();
        }
        m.oldest_due_age.clear();
        for t in &config.targets {
            let label = TargetLabel { target: t.name.clone() };
            let queued = counts.queued.get(&t.name).copied().unwrap_or(0);
            m.queue_depth.get_or_create(&label).set(queued);
            m.dead_letters.get_or_create(&label).set(0);
            let s = status.get(&t.name).cloned().unwrap_or_default();
            m.in_flight.get_or_create(&label).set(s.in_flight as i64);
            m.paused.get_or_create(&label).set(i64::from(s.paused));
            let due = self.store.next_due_ms(&t.name).ok().flatten();
            let age = due.map_or(0.0, |d| now.saturating_sub(d) as f64 / 1000.0);
            m.oldest_due_age.get_or_create(&label).set(age);
        }
        // Dead letters outlive their target's removal from the config: they are still there.
        for (target, n) in counts.dead.iter().filter(|(_, n)| **n > 0) {
            m.dead_letters.get_or_create(&TargetLabel { target: target.clone() }).set(*n);
        }
        let mut res = Response::new(Full::new(Bytes::from(m.encode())));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        res
    }

    /// An event from Stripe's Events API (`fanout backfill`): already authenticated by the API
    /// key that fetched it, so it skips the signature and takes the same routing and dedup path.
    async fn ingest(&self, config: &Config, query: &Query, req: Request<Incoming>) -> Answer {
        let source = match query.get("source") {
            Some(name) => config
                .sources
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Refusal::bad(format!("no source named {name:?}")))?,
            None => &config.sources[0],
        };
        let json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !json.is_some_and(|v| v.starts_with("application/json")) {
            return Err(Refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST /events takes the event as Content-Type: application/json".to_owned(),
            ));
        }
        let body = Limited::new(req.into_body(), config.max_body_bytes)
            .collect()
            .await
            .map_err(|e| Refusal::bad(format!("cannot read the body: {e}")))?
            .to_bytes();
        let event = verify::parse(body, source.allow_livemode).map_err(|r| Refusal::bad(r.to_string()))?;
        let id = event.id.clone();
        let accepted = self.ingress.accept(config, &source.name, event).await?;
        Ok(json_response(StatusCode::OK, &json!({ "id": id, "duplicate": accepted == Accepted::Duplicate })))
    }

    fn list_dead_letters(&self, query: &Query) -> Answer {
        let limit = query.limit()?;
        let after = query.get("cursor").map(job_id).transpose()?;
        let (page, next) = self.store.dead_letters_page(query.get("target"), after, None, limit, MAX_SCAN)?;
        let items: Vec<Value> = page.iter().map(events::dead_letter_json).collect();
        Ok(json_response(StatusCode::OK, &json!({ "dead_letters": items, "next_cursor": next.map(|n| n.to_string()) })))
    }

    /// Replays (or purges) the dead letters of one target, or all, at most [`MAX_BATCH`] per call;
    /// `next_cursor` and `upto` say where the next call goes on and where the pass ends (the
    /// letters that existed when it began: a replayed job that dies again is not chased).
    fn dead_letters_batch(&self, config: &Config, query: &Query, replay: bool) -> Answer {
        let target = query.get("target");
        if query.get("all").is_none() && target.is_none() {
            return Err(Refusal::bad("say which dead letters: target=<name>, or all=true"));
        }
        let after = query.get("cursor").map(job_id).transpose()?;
        let upto = match query.get("upto") {
            Some(u) => job_id(u)?,
            None => self.store.dead_letters_end()?,
        };
        let (page, next) = self.store.dead_letters_page(target, after, Some(upto), MAX_BATCH, MAX_SCAN)?;
        let (mut done, mut skipped) = (0, Vec::new());
        for letter in &page {
            let result = if replay {
                self.revive(config, letter.job.id).map(|_| ())
            } else {
                self.store.purge_dead_letter(letter.job.id, unix_now_ms()).map_err(Refusal::from).map(|_| ())
            };
            match result {
                Ok(()) => done += 1,
                Err(Refusal(_, why)) => skipped.push(json!({ "id": letter.job.id.to_string(), "why": why })),
            }
        }
        let verb = if replay { "replayed" } else { "purged" };
        Ok(json_response(
            StatusCode::OK,
            &json!({
                verb: done,
                "skipped": skipped,
                "next_cursor": next.map(|n| n.to_string()),
                "upto": upto.to_string(),
            }),
        ))
    }

    fn replay_dead_letter(&self, config: &Config, id: JobId) -> Answer {
        let job = self.revive(config, id)?;
        Ok(json_response(StatusCode::OK, &json!({ "replayed": 1, "job": job.id.to_string(), "target": job.target })))
    }

    fn revive(&self, config: &Config, id: JobId) -> Result<fanout_store::Job, Refusal> {
        let letter =
            self.store.find_dead_letter(id)?.ok_or_else(|| Refusal::not_found(format!("no dead letter {id}")))?;
        let target = letter.job.target.as_str();
        if self.store.event(&letter.job.event_id)?.is_none() {
            return Err(Refusal(
                StatusCode::GONE,
                format!(
                    "event {} is past retention; its body is gone, so it cannot be sent again",
                    letter.job.event_id
                ),
            ));
        }
        if config.target(target).is_none() {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!("target {target:?} is no longer configured; replay the event to another target instead"),
            ));
        }
        let job = self.store.revive_dead_letter(id, unix_now_ms())?.ok_or_else(|| Refusal::not_found("gone"))?;
        self.deliveries.wake(&job.target);
        Ok(job)
    }

    fn purge_dead_letter(&self, id: JobId) -> Answer {
        if !self.store.purge_dead_letter(id, unix_now_ms())? {
            return Err(Refusal::not_found(format!("no dead letter {id}")));
        }
        Ok(json_response(StatusCode::OK, &json!({ "purged": 1 })))
    }

    fn targets(&self, config: &Config) -> Value {
        let counts = self.store.counts();
        let status = self.deliveries.status();
        let now = unix_now_ms();
        let list: Vec<Value> = config
            .targets
            .iter()
            .map(|t| {
                let s = status.get(&t.name).cloned().unwrap_or_default();
                let due = self.store.next_due_ms(&t.name).ok().flatten();
                json!({
                    "name": t.name,
                    "url": t.endpoint.to_string(),
                    "inbox": s.inbox,
                    "paused": s.paused,
                    "queued": counts.queued.get(&t.name).copied().unwrap_or(0),
                    "in_flight": s.in_flight,
                    "dead_letters": counts.dead.get(&t.name).copied().unwrap_or(0),
                    "oldest_due_age_s": due.map(|d| now.saturating_sub(d) / 1000),
                    "concurrency": t.concurrency,
                    "last_success": s.last_success_ms.map(events::time),
                    "last_failure": s.last_failure_ms.map(events::time),
                    "last_error": s.last_error,
                })
            })
            .collect();
        json!({ "targets": list })
    }

    fn pause(&self, name: &str, paused: bool) -> Answer {
        if !self.deliveries.set_paused(name, paused)? {
            return Err(Refusal::not_found(format!("no target named {name:?}")));
        }
        Ok(json_response(StatusCode::OK, &json!({ "target": name, "paused": paused })))
    }
}

/// Sticky ownership, for operators: who owns an object, and setting it by hand.
impl Admin {
    fn list_owners(&self, query: &Query) -> Answer {
        let (page, next) =
            self.store.owners_page(query.get("cursor"), query.get("destination"), query.limit()?, MAX_SCAN)?;
        let items: Vec<Value> = page.iter().map(|(id, o)| owner_json(id, o)).collect();
        Ok(json_response(StatusCode::OK, &json!({ "owners": items, "next_cursor": next })))
    }

    fn show_owner(&self, id: &str) -> Answer {
        match self.store.owner(id)? {
            Some(owner) => Ok(json_response(StatusCode::OK, &owner_json(id, &owner))),
            None => Err(Refusal::not_found(format!("no environment owns {id:?}"))),
        }
    }

    /// `{"owner": "alice"}` (or a list): routing sends the object's unrouted events there.
    async fn set_owner(&self, config: &Config, id: &str, req: Request<Incoming>) -> Answer {
        let body = Limited::new(req.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| Refusal::bad(format!("cannot read the body: {e}")))?
            .to_bytes();
        #[derive(serde::Deserialize)]
        struct SetOwner {
            owner: OneOrMany,
        }
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let set: SetOwner = serde_json::from_slice(&body)
            .map_err(|e| Refusal::bad(format!("expected {{\"owner\": \"<destination>\"}}: {e}")))?;
        let destinations = match set.owner {
            OneOrMany::One(d) => vec![d],
            OneOrMany::Many(d) => d,
        };
        if id.is_empty() || destinations.is_empty() {
            return Err(Refusal::bad("name an object id and at least one destination"));
        }
        let known = &config.router.destinations;
        if let Some(unknown) = destinations.iter().find(|d| !known.iter().any(|k| &k.name == *d)) {
            let names: Vec<&str> = known.iter().map(|k| k.name.as_str()).collect();
            return Err(Refusal::bad(format!(
                "{unknown:?} is neither a target nor a group (known: {})",
                names.join(", ")
            )));
        }
        let owner =
            fanout_store::Owner { destinations, via: "manual".to_owned(), event_id: None, at_ms: unix_now_ms() };
        self.store.claim(&[id.to_owned()], &owner)?;
        tracing::info!(object = id, owner = ?owner.destinations, "ownership set by hand");
        Ok(json_response(StatusCode::OK, &owner_json(id, &owner)))
    }

    fn disown(&self, id: &str) -> Answer {
        if self.store.disown(id)? {
            Ok(json_response(StatusCode::OK, &json!({ "id": id, "disowned": true })))
        } else {
            Err(Refusal::not_found(format!("no environment owns {id:?}")))
        }
    }
}

fn owner_json(id: &str, o: &fanout_store::Owner) -> Value {
    json!({
        "id": id,
        "owner": o.destinations,
        "via": o.via,
        "event_id": o.event_id,
        "since": events::time(o.at_ms),
    })
}

fn job_id(s: &str) -> Result<JobId, Refusal> {
    s.parse().map_err(|_| Refusal::bad(format!("{s:?} is not a dead letter / job id (a number)")))
}

fn decode_segment(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Query-string parameters, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn limit(&self) -> Result<usize, Refusal> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(Refusal::bad(format!("limit must be 1..={MAX_LIMIT}"))),
            },
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res
}
