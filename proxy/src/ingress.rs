//! The ingress stage: the HTTP endpoint Stripe posts to. It owns the request's life: match the
//! path to a source, bound the body, verify, route, persist, and only then answer 2xx — so once
//! Stripe hears 2xx the event is on disk, and Stripe stops retrying.
//!
//! Invariant: a 2xx is sent only after `Store::durable` returned for this event's writes; a store
//! failure answers 503 so Stripe retries.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout_store::{Claims, Delivery, Disposition, EventRecord, Ingested, NewJob, Owner, Routed, Store};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::clock::{unix_now_ms, unix_now_secs};
use crate::config::{Config, LiveConfig, Target};
use crate::deliver::Deliveries;
use crate::metrics::{Metrics, SourceLabel};
use crate::route::{Decision, DestId, DestinationKind, GroupMode, KnownOwner, Offline, DEFAULT_RULE};
use crate::verify::{self, VerifiedEvent};

pub type Body = Full<Bytes>;

pub struct Ingress {
    pub live: LiveConfig,
    pub store: Store,
    pub deliveries: Deliveries,
    pub metrics: Arc<Metrics>,
}

/// What became of an authenticated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New,
    Duplicate,
}

impl Ingress {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let response = match self.handle_inner(req).await {
            Ok(response) => {
                self.metrics.ack_latency.observe(started.elapsed().as_secs_f64());
                response
            }
            Err((reason, response)) => {
                self.metrics.reject(reason);
                response
            }
        };
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        );
        Ok(response)
    }

    /// A 2xx, or the refusal with its metric label.
    async fn handle_inner(&self, req: Request<Incoming>) -> Result<Response<Body>, (&'static str, Response<Body>)> {
        let config = self.live.load_full();
        let Some(source) = config.sources.iter().find(|s| s.path == req.uri().path()) else {
            return Err(("unknown_path", reply(StatusCode::NOT_FOUND, "no webhook source is configured at this path")));
        };
        if req.method() != Method::POST {
            let mut res = reply(StatusCode::METHOD_NOT_ALLOWED, "webhook sources accept POST only");
            res.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return Err(("method_not_allowed", res));
        }
        let limit = config.max_body_bytes;
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(("body_too_large", too_large(limit)));
        }
        let (parts, body) = req.into_parts();
        let body = match tokio::time::timeout(config.body_read_timeout, Limited::new(body, limit).collect()).await {
            Err(_) => {
                return Err((
                    "body_timeout",
                    reply(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
                ))
            }
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(("body_too_large", too_large(limit)))
            }
            Ok(Err(e)) => {
                let res = reply(StatusCode::BAD_REQUEST, &format!("could not read the request body: {e}"));
                return Err(("body_unreadable", res));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };

        let event = match verify::verify(source, &parts.headers, body, unix_now_secs()) {
            Ok(event) => event,
            Err(rejection) => {
                tracing::warn!(source = %source.name, reason = rejection.reason(), "rejected: {rejection}");
                return Err((rejection.reason(), reply(StatusCode::BAD_REQUEST, &rejection.to_string())));
            }
        };
        match self.accept(&config, &source.name, event).await {
            Ok(Accepted::New) => Ok(json_reply(r#"{"received":true}"#)),
            Ok(Accepted::Duplicate) => Ok(json_reply(r#"{"received":true,"duplicate":true}"#)),
            Err(e) => Err(("store_failed", store_failed(&e))),
        }
    }

    /// Routes, persists, waits for durability, wakes the delivery workers. Also the way in for
    /// events backfilled from Stripe's API through the admin API.
    pub async fn accept(
        &self,
        config: &Config,
        source: &str,
        event: VerifiedEvent,
    ) -> Result<Accepted, fanout_store::StoreError> {
        // A store that cannot say who owns an object cannot route this event right: 503, so
        // Stripe retries, rather than a 200 for a guess.
        let decision = {
            let unreadable = std::cell::RefCell::new(None);
            let owner_of = |object: &str| match self.store.owner(object) {
                Ok(owner) => owner.map(|o| KnownOwner { destinations: o.destinations, via: o.via }),
                Err(e) => {
                    unreadable.borrow_mut().get_or_insert(e);
                    None
                }
            };
            let decision = config.router.route_with(&event.json, &owner_of);
            if let Some(e) = unreadable.into_inner() {
                tracing::error!(event_id = %event.id, "cannot read object owners; answering 503 so Stripe retries: {e}");
                return Err(e);
            }
            decision
        };
        let (jobs, disposition) = plan(config, &decision);
        let claims = claims(config, &decision, &event.json, &event.id);
        let record = EventRecord {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            source: source.to_owned(),
            received_at_ms: unix_now_ms(),
            disposition,
            body: event.body.to_vec(),
        };
        let id = &event.id;
        let failed = |e: fanout_store::StoreError| {
            tracing::error!(event_id = %id, "store failed; answering 503 so Stripe retries: {e}");
            e
        };
        let ingested = self.store.ingest_claiming(&record, &jobs, claims.as_ref()).map_err(failed)?;
        // Also for a duplicate: the first copy may still be on its way to disk.
        if let Err(e) = self.store.durable().await {
            // Written but maybe not on disk: Stripe hears 503 and retries, and the retry finds
            // it (a duplicate). The jobs are queued all the same; deliver them now rather than
            // when their workers next look (a redelivery after a crash is the at-least-once kind).
            if let Ingested::New(jobs) = &ingested {
                for job in jobs {
                    self.deliveries.wake(&job.target);
                }
            }
            return Err(failed(e));
        }
        match ingested {
            Ingested::Duplicate => {
                tracing::info!(event_id = %id, "duplicate event id: acknowledged, not fanned out again");
                self.metrics.deduplicated.inc();
                Ok(Accepted::Duplicate)
            }
            Ingested::New(jobs) => {
                self.metrics.received.get_or_create(&SourceLabel { source: source.to_owned() }).inc();
                match &record.disposition {
                    Disposition::Routed { destinations } => {
                        let to: Vec<&str> = destinations.iter().map(|d| d.destination.as_str()).collect();
                        tracing::info!(event_id = %id, event_type = %record.event_type, to = ?to, "accepted");
                    }
                    Disposition::Dropped { rule } => {
                        self.metrics.dropped.inc();
                        tracing::info!(event_id = %id, event_type = %record.event_type, rule = %rule, "accepted and dropped by rule")
                    }
                    Disposition::Unrouted => {
                        self.metrics.unrouted.inc();
                        tracing::info!(event_id = %id, event_type = %record.event_type, "accepted; no route matched and there is no default")
                    }
                }
                for job in &jobs {
                    self.deliveries.wake(&job.target);
                }
                Ok(Accepted::New)
            }
        }
    }
}

/// Turns a routing decision into the jobs to queue and the disposition to record.
pub fn plan(config: &Config, decision: &Decision<'_>) -> (Vec<NewJob>, Disposition) {
    // Each destination, the rule recorded for it, and the rule whose `offline` applies to an
    // inbox among them (looked up only for inboxes: most events reach none).
    let chosen: Vec<(DestId, String, &str)> = match decision {
        Decision::Drop { rule } => return (Vec::new(), Disposition::Dropped { rule: (*rule).to_owned() }),
        Decision::Unrouted => return (Vec::new(), Disposition::Unrouted),
        Decision::Deliver(chosen) => chosen.iter().map(|&(dest, rule)| (dest, rule.to_owned(), rule)).collect(),
        // Routed like the event that claimed the object, offline fallback included.
        Decision::Owned { object, destinations, via } => {
            destinations.iter().map(|&dest| (dest, format!("owner:{object}"), via.as_str())).collect()
        }
    };
    let mut jobs = Vec::new();
    let mut destinations = Vec::new();
    for (dest, rule, offline_rule) in chosen {
        let dest = &config.router.destinations[dest];
        let before = jobs.len();
        let target = |i: usize| config.targets[i].name.clone();
        let job = |target, delivery| NewJob { target, delivery, rule: rule.clone() };
        match &dest.kind {
            DestinationKind::Target(i) => {
                let delivery = match offline_for(config, &config.targets[*i], offline_rule) {
                    Some(o) => Delivery::Inbox {
                        fallback: o.fallback.iter().map(|&m| target(m)).collect(),
                        offline_after_ms: o.after.as_millis() as u64,
                    },
                    None => Delivery::Target,
                };
                jobs.push(job(target(*i), delivery));
            }
            DestinationKind::Group { mode: GroupMode::Any, members } => {
                for &m in members {
                    jobs.push(job(target(m), Delivery::AnyOf { group: dest.name.clone() }));
                }
            }
            DestinationKind::Group { mode: GroupMode::Failover, members } => {
                let names: Vec<String> = members.iter().map(|&m| target(m)).collect();
                let delivery = Delivery::Failover { group: dest.name.clone(), members: names.clone(), member: 0 };
                jobs.push(job(names[0].clone(), delivery));
            }
        }
        destinations.push(Routed {
            destination: dest.name.clone(),
            rule: rule.clone(),
            jobs: (jobs.len() - before) as u32,
        });
    }
    (jobs, Disposition::Routed { destinations })
}

/// Where an inbox's events go while nobody listens: the route's own fallback, else the inbox's.
/// None for a target that is not an inbox.
pub fn offline_for<'c>(config: &'c Config, target: &'c Target, rule: &str) -> Option<&'c Offline> {
    if !target.is_inbox() {
        return None;
    }
    config.router.rule(rule).and_then(|r| r.offline.as_ref()).or(target.offline.as_ref())
}

/// The objects an event makes its destinations the owners of: those it references, when a rule
/// (not the default) or an owner routed it. Later events about them follow.
pub fn claims(config: &Config, decision: &Decision<'_>, event: &serde_json::Value, event_id: &str) -> Option<Claims> {
    let names = |ids: &mut dyn Iterator<Item = DestId>| -> Vec<String> {
        ids.map(|d| config.router.destinations[d].name.clone()).collect()
    };
    let (destinations, via) = match decision {
        Decision::Deliver(chosen) if chosen.iter().all(|(_, rule)| *rule != DEFAULT_RULE) => {
            (names(&mut chosen.iter().map(|(d, _)| *d)), chosen[0].1.to_owned())
        }
        Decision::Owned { destinations, via, .. } => (names(&mut destinations.iter().copied()), via.clone()),
        _ => return None,
    };
    let ids = config.router.references(event);
    if ids.is_empty() {
        return None;
    }
    let owner = Owner { destinations, via, event_id: Some(event_id.to_owned()), at_ms: unix_now_ms() };
    // A claim is refreshed at most this often while it stays the same: ownership expires with
    // retention after the last refresh, so well before that.
    let refresh_after_ms = (config.retention / 4).min(Duration::from_secs(24 * 3600)).as_millis() as u64;
    Some(Claims { ids, owner, refresh_after_ms })
}

fn store_failed(_: &fanout_store::StoreError) -> Response<Body> {
    reply(StatusCode::SERVICE_UNAVAILABLE, "the event could not be stored; retry later")
}

fn too_large(limit: usize) -> Response<Body> {
    reply(StatusCode::PAYLOAD_TOO_LARGE, &format!("body exceeds the {limit}-byte limit (max_body_bytes)"))
}

pub fn reply(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &serde_json::json!({ "error": message }))
}

/// A JSON answer; every listener's API answers this way.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(serde_json::to_vec(value).unwrap_or_default())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

pub fn json_reply(body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}
