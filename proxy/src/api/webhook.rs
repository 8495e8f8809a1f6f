//! The HTTP endpoint Stripe posts to. It owns the request's life: match the path to a source,
//! bound the body, verify, hand the event to [`Intake`], and only then answer 2xx — so once Stripe
//! hears 2xx the event is on disk, and Stripe stops retrying.
//!
//! Invariant: a 2xx is sent only after `Intake::accept` returned (the event is durable); a store
//! failure answers 503 so Stripe retries.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::clock::unix_now_secs;
use crate::config::LiveConfig;
use crate::http::{json_static, read_body, ApiError, Body, BodyError};
use crate::ingest::{Accepted, Intake};
use crate::metrics::Metrics;
use crate::verify;

pub struct Webhooks {
    pub live: LiveConfig,
    pub intake: Arc<Intake>,
    pub metrics: Arc<Metrics>,
}

/// A refusal and its label in `fanout_rejected_total`.
type Refused = (&'static str, ApiError);

impl Webhooks {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let response = match self.receive(req).await {
            Ok(response) => {
                self.metrics.ack_latency.observe(started.elapsed().as_secs_f64());
                response
            }
            Err((reason, error)) => {
                self.metrics.reject(reason);
                error.into_response()
            }
        };
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        );
        Ok(response)
    }

    async fn receive(&self, req: Request<Incoming>) -> Result<Response<Body>, Refused> {
        let config = self.live.load_full();
        let Some(source) = config.sources.iter().find(|s| s.path == req.uri().path()) else {
            return Err(("unknown_path", ApiError::not_found("no webhook source is configured at this path")));
        };
        if req.method() != Method::POST {
            return Err((
                "method_not_allowed",
                ApiError::method_not_allowed("POST", "webhook sources accept POST only"),
            ));
        }
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, config.max_body_bytes, config.body_read_timeout).await.map_err(
            |e| match e {
                BodyError::TooLarge(limit) => (
                    e.label(),
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body exceeds the {limit}-byte limit (max_body_bytes)"),
                    ),
                ),
                e => (e.label(), ApiError::from(e)),
            },
        )?;
        let event = verify::verify(source, &parts.headers, body, unix_now_secs()).map_err(|rejection| {
            tracing::warn!(source = %source.name, reason = rejection.reason(), "rejected: {rejection}");
            (rejection.reason(), ApiError::bad_request(rejection.to_string()))
        })?;
        match self.intake.accept(&config, &source.name, event).await {
            Ok(Accepted::New) => Ok(json_static(r#"{"received":true}"#)),
            Ok(Accepted::Duplicate) => Ok(json_static(r#"{"received":true,"duplicate":true}"#)),
            // Logged by `accept`, with the event id.
            Err(_) => Err((
                "store_failed",
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the event could not be stored; retry later"),
            )),
        }
    }
}
