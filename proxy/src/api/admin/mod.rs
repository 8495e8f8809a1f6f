//! The operator API, on its own listener: health, metrics, and every event, dead letter, target
//! and owner an operator needs to see or steer. The CLI verbs (`fanout events`, `replay`, ...) are
//! clients of it, reading the same typed answers (`wire::admin`) it writes, so what a script does
//! over HTTP and what a person does at a terminal are the same thing.
//!
//! Invariants: every route but the health checks needs the bearer token when one is configured;
//! every list is paged and bounded, so no request reads the whole store into memory; store scans
//! never run on the threads that answer Stripe (the sled engine runs them on its own); nothing here writes to the
//! store except through its operations.

mod events;
mod inboxes;
mod operate;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use fanout_store::engine::Engine;
use fanout_store::JobId;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use crate::background::Background;
use crate::config::{Config, LiveConfig};
use crate::deliver::Deliveries;
use crate::http::{bearer, json, read_body, text, ApiError, Body};
use crate::ingest::{Accepted, Intake};
use crate::metrics::{Metrics, TargetLabel};
use crate::verify;
use crate::wire::admin::{Ingested, OwnerInfo, SetOwner};
use crate::wire::time;

pub struct Admin {
    pub inboxes: Arc<crate::inboxes::Inboxes>,
    pub live: LiveConfig,
    pub store: Engine,
    pub deliveries: Deliveries,
    pub metrics: Arc<Metrics>,
    pub intake: Arc<Intake>,
    pub scrape: std::sync::Mutex<()>,
    /// Where requests run: behind acknowledgements (see `background`).
    pub background: Background,
    /// Signs console sessions when there is no admin token (see `console::session::key`).
    pub console_seed: [u8; 32],
}

/// Page sizes: what a list returns by default, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// Most entries one request looks at; a filter that matches rarely returns a short page and a
/// cursor to go on from, instead of walking the whole store.
const MAX_SCAN: usize = 10_000;
/// Most items one batch operation (replay by filter, dead letters by target) acts on per call.
const MAX_BATCH: usize = 1_000;
/// Largest body of an owner change.
const MAX_OWNER_BYTES: usize = 64 * 1024;

type Answer = Result<Response<Body>, ApiError>;

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        Ok(self.route(req).await.unwrap_or_else(ApiError::into_response))
    }

    async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Answer {
        let path: Vec<String> = req.uri().path().trim_matches('/').split('/').map(decode_segment).collect();
        let method = req.method().clone();
        // Health checks are for load balancers and orchestrators: no token, nothing revealed.
        let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
        match (&method, path_refs.as_slice()) {
            (&Method::GET, ["healthz"]) => return Ok(text(StatusCode::OK, "ok\n")),
            (&Method::GET, ["readyz"]) => return self.ready().await,
            // The console: pages for browsers, with sessions and CSRF tokens of their own.
            (_, ["ui", ..] | [""]) => return Ok(crate::api::console::handle(self.clone(), req).await),
            _ => {}
        }
        // Not for browsers: a page an operator has open must not be able to post to a loopback
        // admin API that has no token (a browser sends Origin on such requests; the CLI does not).
        if req.headers().contains_key(header::ORIGIN) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "the admin API does not take requests from web pages"));
        }
        // Without a token, a page that rebinds its own name to 127.0.0.1 could read the API with
        // simple GETs (browsers send no Origin on those): only loopback names are answered.
        if self.live.load().admin.token.is_none() && !crate::http::loopback_host(req.headers(), req.uri()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this admin listener has no token, so it answers only to a loopback host name (127.0.0.1, [::1], localhost)",
            ));
        }
        self.authorize(&req)?;
        let (this, m) = (self.clone(), method.clone());
        let work = async move { this.dispatch(&m, path, req).await };
        let answer =
            self.background.run(work).await.map_err(|e| ApiError::internal("an admin request failed", &e))??;
        if method != Method::GET {
            // What an operator changed is on disk before they hear it was done.
            self.store.durable().await?;
        }
        Ok(answer)
    }

    async fn dispatch(self: &Arc<Self>, method: &Method, path: Vec<String>, req: Request<Incoming>) -> Answer {
        let config = self.live.load_full();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let query = Query::parse(req.uri().query());
        let no_route = || Err(ApiError::not_found(format!("no admin route {method} {}", req.uri().path())));
        // The sled engine runs its scans on its own background threads; none runs here.
        match (method, path.as_slice()) {
            (&Method::POST, ["events"]) => self.ingest(&config, &query, req).await,
            (&Method::PUT, ["owners", id]) => ok(self.set_owner(&config, id, req).await),
            (&Method::GET, ["metrics"]) => self.metrics_text().await,
            (&Method::GET, ["events"]) => ok(self.events_page(&query).await),
            (&Method::GET, ["events", id]) => ok(self.event_detail(id).await),
            (&Method::POST, ["events", id, "replay"]) => ok(self.replay_event(&config, id, query.get("to")).await),
            (&Method::POST, ["replay"]) => ok(self.replay_matching(&config, &query).await),
            (&Method::GET, ["dead-letters"]) => ok(self.dead_letters(&query).await),
            (&Method::POST, ["dead-letters", "replay"]) => ok(self.dead_letters_batch(&config, &query, true).await),
            (&Method::POST, ["dead-letters", "purge"]) => ok(self.dead_letters_batch(&config, &query, false).await),
            (&Method::POST, ["dead-letters", id, "replay"]) => ok(self.replay_dead_letter(&config, job_id(id)?).await),
            (&Method::DELETE, ["dead-letters", id]) => ok(self.purge_dead_letter(job_id(id)?).await),
            (&Method::GET, ["targets"]) => ok(self.targets(&config).await),
            (&Method::POST, ["targets", name, "pause"]) => ok(self.pause(name, true).await),
            (&Method::POST, ["targets", name, "resume"]) => ok(self.pause(name, false).await),
            (&Method::POST, ["targets", name, "reset"]) => ok(self.reset_breaker(name)),
            (&Method::GET, ["inboxes"]) => self.list_inboxes().await,
            (&Method::POST, ["inboxes"]) => self.create_inbox(req).await,
            (&Method::POST, ["inboxes", name, "rotate"]) => self.rotate_inbox(name).await,
            (&Method::DELETE, ["inboxes", name]) => self.delete_inbox(name).await,
            (&Method::GET, ["owners"]) => ok(self.owners(&query).await),
            (&Method::GET, ["owners", id]) => match self.owner(id).await? {
                Some(owner) => Ok(json(StatusCode::OK, &owner)),
                None => Err(ApiError::not_found(format!("no environment owns {id:?}"))),
            },
            (&Method::DELETE, ["owners", id]) => ok(self.disown(id).await),
            _ => no_route(),
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let config = self.live.load();
        let Some(token) = &config.admin.token else {
            return Ok(());
        };
        if token.matches(bearer(req.headers(), "admin token")?) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("wrong admin token"))
        }
    }

    async fn ready(self: &Arc<Self>) -> Answer {
        // The store answers a read, and a config is loaded (it always is once serving).
        self.store.event("readyz-probe").await?;
        Ok(text(StatusCode::OK, "ready\n"))
    }

    async fn metrics_text(&self) -> Answer {
        // What the store knows is read first; the gauges are then cleared and refilled at once
        // (two scrapes take turns).
        let config = self.live.load_full();
        // A store that cannot answer leaves its gauges empty; the process's own counters are
        // still served (an outage is when they matter most).
        let counts = self.store.counts().await.inspect_err(|e| tracing::warn!("metrics without queue counts: {e}"));
        let counts = counts.unwrap_or_default();
        let quarantined = self.store.quarantined().await.ok();
        let mut due = Vec::with_capacity(config.targets.len());
        for t in &config.targets {
            due.push(self.store.next_due_ms(&t.name).await.ok().flatten());
        }
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let m = &self.metrics;
        let status = self.deliveries.status();
        let now = crate::clock::unix_now_ms();
        for family in [&m.queue_depth, &m.dead_letters, &m.in_flight, &m.paused, &m.breaker_state] {
            family.clear();
        }
        m.oldest_due_age.clear();
        for (t, due) in config.targets.iter().zip(due) {
            let label = TargetLabel { target: t.name.clone() };
            m.queue_depth.get_or_create(&label).set(counts.queued.get(&t.name).copied().unwrap_or(0));
            m.dead_letters.get_or_create(&label).set(0);
            let s = status.get(&t.name).cloned().unwrap_or_default();
            m.in_flight.get_or_create(&label).set(s.in_flight as i64);
            m.paused.get_or_create(&label).set(i64::from(s.paused));
            if !t.is_inbox() {
                m.breaker_state.get_or_create(&label).set(s.breaker.state.gauge());
            }
            m.oldest_due_age.get_or_create(&label).set(due.map_or(0.0, |d| now.saturating_sub(d) as f64 / 1000.0));
        }
        if let Some(n) = quarantined {
            m.quarantined.set(n as i64);
        }
        // Dead letters outlive their target's removal from the config: they are still there.
        for (target, n) in counts.dead.iter().filter(|(_, n)| **n > 0) {
            m.dead_letters.get_or_create(&TargetLabel { target: target.clone() }).set(*n);
        }
        let mut res = Response::new(http_body_util::Full::new(Bytes::from(m.encode())));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        Ok(res)
    }

    /// An event from Stripe's Events API (`fanout backfill`): already authenticated by the API
    /// key that fetched it, so it skips the signature and takes the same routing and dedup path.
    async fn ingest(&self, config: &Config, query: &Query, req: Request<Incoming>) -> Answer {
        let source = match query.get("source") {
            Some(name) => config
                .sources
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| ApiError::bad_request(format!("no source named {name:?}")))?,
            None => &config.sources[0],
        };
        let json_body = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !json_body.is_some_and(|v| v.starts_with("application/json")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST /events takes the event as Content-Type: application/json",
            ));
        }
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, config.max_body_bytes, config.body_read_timeout).await?;
        let event = verify::parse(body, source.allow_livemode).map_err(|r| ApiError::bad_request(r.to_string()))?;
        let id = event.id.clone();
        let accepted = self.intake.accept(config, &source.name, event).await?;
        Ok(json(StatusCode::OK, &Ingested { id, duplicate: accepted == Accepted::Duplicate }))
    }

    /// `{"owner": "alice"}` (or a list): routing sends the object's unrouted events there.
    async fn set_owner(&self, config: &Config, id: &str, req: Request<Incoming>) -> Result<OwnerInfo, ApiError> {
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, MAX_OWNER_BYTES, config.body_read_timeout).await?;
        let set: SetOwner = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("expected {{\"owner\": \"<destination>\"}}: {e}")))?;
        self.set_owner_to(config, id, set.owner.into_vec()).await
    }

    pub(crate) async fn set_owner_to(
        &self,
        config: &Config,
        id: &str,
        destinations: Vec<String>,
    ) -> Result<OwnerInfo, ApiError> {
        if id.is_empty() || destinations.is_empty() {
            return Err(ApiError::bad_request("name an object id and at least one destination"));
        }
        let known = &config.router.destinations;
        if let Some(unknown) = destinations.iter().find(|d| !known.iter().any(|k| &k.name == *d)) {
            let names: Vec<&str> = known.iter().map(|k| k.name.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "{unknown:?} is neither a target nor a group (known: {})",
                names.join(", ")
            )));
        }
        let at_ms = crate::clock::unix_now_ms();
        let owner = fanout_store::Owner { destinations, via: "manual".to_owned(), event_id: None, at_ms };
        self.store.claim(&[id.to_owned()], &owner).await?;
        tracing::info!(object = id, owner = ?owner.destinations, "ownership set by hand");
        Ok(owner_info(id, &owner))
    }
}

/// A typed answer as JSON (200), or the error as the edge answers it.
fn ok(value: Result<impl serde::Serialize, ApiError>) -> Answer {
    value.map(|v| json(StatusCode::OK, &v))
}

fn owner_info(id: &str, o: &fanout_store::Owner) -> OwnerInfo {
    OwnerInfo {
        id: id.to_owned(),
        owner: o.destinations.clone(),
        via: o.via.clone(),
        event_id: o.event_id.clone(),
        since: time(o.at_ms),
    }
}

pub(crate) fn job_id(s: &str) -> Result<JobId, ApiError> {
    s.parse().map_err(|_| ApiError::bad_request(format!("{s:?} is not a dead letter / job id (a number)")))
}

/// A path segment, percent-decoded (`+` stays a plus: it is not a form).
fn decode_segment(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Query-string parameters, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Query {
        Query(form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub(crate) fn from_pairs<K: Into<String>>(pairs: Vec<(K, String)>) -> Query {
        Query(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!("limit must be 1..={MAX_LIMIT}"))),
            },
        }
    }
}
