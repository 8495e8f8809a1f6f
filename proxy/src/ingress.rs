//! The ingress stage: the HTTP endpoint Stripe posts to. It owns the request's life: match the
//! path to a source, bound the body, verify, route, persist, and only then answer 2xx — so once
//! Stripe hears 2xx the event is on disk, and Stripe stops retrying.
//!
//! Invariant: a 2xx is sent only after `Store::durable` returned for this event's writes; a store
//! failure answers 503 so Stripe retries.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fanout_store::{Delivery, Disposition, EventRecord, Ingested, NewJob, Store};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::Config;
use crate::deliver::Dispatcher;
use crate::route::{Decision, DestinationKind, GroupMode};
use crate::verify::{self, VerifiedEvent};

pub type Body = Full<Bytes>;

pub struct Ingress {
    pub config: Arc<Config>,
    pub store: Store,
    pub dispatcher: Dispatcher,
}

impl Ingress {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let response = self.handle_inner(req).await;
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        );
        Ok(response)
    }

    async fn handle_inner(&self, req: Request<Incoming>) -> Response<Body> {
        let Some(source) = self.config.sources.iter().find(|s| s.path == req.uri().path()) else {
            return reply(StatusCode::NOT_FOUND, "no webhook source is configured at this path");
        };
        if req.method() != Method::POST {
            let mut res = reply(StatusCode::METHOD_NOT_ALLOWED, "webhook sources accept POST only");
            res.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return res;
        }
        let limit = self.config.max_body_bytes;
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return too_large(limit);
        }
        let (parts, body) = req.into_parts();
        let body = match tokio::time::timeout(self.config.body_read_timeout, Limited::new(body, limit).collect()).await
        {
            Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(limit),
            Ok(Err(e)) => return reply(StatusCode::BAD_REQUEST, &format!("could not read the request body: {e}")),
            Ok(Ok(collected)) => collected.to_bytes(),
        };

        let event = match verify::verify(source, &parts.headers, body, unix_now_secs()) {
            Ok(event) => event,
            Err(rejection) => {
                tracing::warn!(source = %source.name, reason = rejection.reason(), "rejected: {rejection}");
                return reply(StatusCode::BAD_REQUEST, &rejection.to_string());
            }
        };
        self.accept(&source.name, event).await
    }

    /// Routes, persists, waits for durability, wakes the delivery workers, answers.
    async fn accept(&self, source: &str, event: VerifiedEvent) -> Response<Body> {
        let (jobs, disposition) = plan(&self.config, &self.config.router.route(&event.json));
        let record = EventRecord {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            source: source.to_owned(),
            received_at_ms: unix_now_ms(),
            disposition,
            body: event.body.to_vec(),
        };
        let id = &event.id;
        let ingested = match self.store.ingest(&record, &jobs) {
            Ok(i) => i,
            Err(e) => return store_failed(id, &e),
        };
        // Also for a duplicate: the first copy may still be on its way to disk.
        if let Err(e) = self.store.durable().await {
            return store_failed(id, &e);
        }
        match ingested {
            Ingested::Duplicate => {
                tracing::info!(event_id = %id, "duplicate event id: acknowledged, not fanned out again");
                json_reply(r#"{"received":true,"duplicate":true}"#)
            }
            Ingested::New(jobs) => {
                match &record.disposition {
                    Disposition::Routed { destinations } => {
                        let to: Vec<&str> = destinations.iter().map(|(d, _)| d.as_str()).collect();
                        tracing::info!(event_id = %id, event_type = %record.event_type, to = ?to, "accepted");
                    }
                    Disposition::Dropped { rule } => {
                        tracing::info!(event_id = %id, event_type = %record.event_type, rule = %rule, "accepted and dropped by rule")
                    }
                    Disposition::Unrouted => {
                        tracing::info!(event_id = %id, event_type = %record.event_type, "accepted; no route matched and there is no default")
                    }
                }
                for job in &jobs {
                    self.dispatcher.wake(&job.target);
                }
                json_reply(r#"{"received":true}"#)
            }
        }
    }
}

/// Turns a routing decision into the jobs to queue and the disposition to record.
pub fn plan(config: &Config, decision: &Decision<'_>) -> (Vec<NewJob>, Disposition) {
    match decision {
        Decision::Drop { rule } => (Vec::new(), Disposition::Dropped { rule: (*rule).to_owned() }),
        Decision::Unrouted => (Vec::new(), Disposition::Unrouted),
        Decision::Deliver(chosen) => {
            let mut jobs = Vec::new();
            let mut destinations = Vec::new();
            for &(dest, rule) in chosen {
                let dest = &config.router.destinations[dest];
                destinations.push((dest.name.clone(), rule.to_owned()));
                let target = |i: usize| config.targets[i].name.clone();
                let job = |target, delivery| NewJob { target, delivery, rule: rule.to_owned() };
                match &dest.kind {
                    DestinationKind::Target(i) => jobs.push(job(target(*i), Delivery::Target)),
                    DestinationKind::Group { mode: GroupMode::Any, members } => {
                        for &m in members {
                            jobs.push(job(target(m), Delivery::AnyOf { group: dest.name.clone() }));
                        }
                    }
                    DestinationKind::Group { mode: GroupMode::Failover, members } => {
                        let names: Vec<String> = members.iter().map(|&m| target(m)).collect();
                        let delivery =
                            Delivery::Failover { group: dest.name.clone(), members: names.clone(), member: 0 };
                        jobs.push(job(names[0].clone(), delivery));
                    }
                }
            }
            (jobs, Disposition::Routed { destinations })
        }
    }
}

fn store_failed(event_id: &str, e: &fanout_store::StoreError) -> Response<Body> {
    tracing::error!(event_id, "store failed; answering 503 so Stripe retries: {e}");
    reply(StatusCode::SERVICE_UNAVAILABLE, "the event could not be stored; retry later")
}

fn too_large(limit: usize) -> Response<Body> {
    reply(StatusCode::PAYLOAD_TOO_LARGE, &format!("body exceeds the {limit}-byte limit (max_body_bytes)"))
}

fn reply(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

fn json_reply(body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

pub fn unix_now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}
