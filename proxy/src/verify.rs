//! The verify stage: turns an HTTP request that claims to come from Stripe into a
//! [`VerifiedEvent`], or a [`Rejection`] that says exactly why not. Nothing is stored or delivered
//! for a rejected request.
//!
//! Invariant: no I/O; the clock is passed in.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::config::Source;
use crate::signature::{self, SignatureError};

/// An authenticated Stripe event, parsed once here so routing does not parse it again.
#[derive(Debug)]
pub struct VerifiedEvent {
    pub id: String,
    pub event_type: String,
    pub json: Value,
    /// The raw body, byte for byte: deliveries are re-signed over exactly these bytes.
    pub body: Bytes,
}

/// Every reason a request is refused; each answers 400 with this text.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("more than one Stripe-Signature header")]
    DuplicateHeader,
    #[error("Stripe-Signature header is not visible ASCII")]
    HeaderNotText,
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("body is not JSON: {0}")]
    BodyNotJson(String),
    #[error("body is not a Stripe event: no string \"id\"")]
    NoEventId,
    #[error("body is not a Stripe event: no string \"type\"")]
    NoEventType,
    #[error("livemode event refused: this source is for test mode (set allow_livemode: true on the source to accept live events)")]
    Livemode,
}

impl Rejection {
    /// A short stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingHeader => "missing_header",
            Rejection::DuplicateHeader => "duplicate_header",
            Rejection::HeaderNotText => "header_not_text",
            Rejection::Signature(SignatureError::NoTimestamp) => "no_timestamp",
            Rejection::Signature(SignatureError::NoV1) => "no_v1",
            Rejection::Signature(SignatureError::Malformed(_)) => "malformed_header",
            Rejection::Signature(SignatureError::NoMatch) => "no_matching_signature",
            Rejection::Signature(SignatureError::OutsideTolerance { .. }) => "timestamp_outside_tolerance",
            Rejection::BodyNotJson(_) => "body_not_json",
            Rejection::NoEventId => "no_event_id",
            Rejection::NoEventType => "no_event_type",
            Rejection::Livemode => "livemode_refused",
        }
    }
}

pub fn verify(source: &Source, headers: &HeaderMap, body: Bytes, now: i64) -> Result<VerifiedEvent, Rejection> {
    let mut values = headers.get_all("stripe-signature").iter();
    let header = values.next().ok_or(Rejection::MissingHeader)?;
    if values.next().is_some() {
        return Err(Rejection::DuplicateHeader);
    }
    let header = header.to_str().map_err(|_| Rejection::HeaderNotText)?;
    signature::verify(header, &body, &source.secrets, source.tolerance.as_secs(), now)?;
    parse(body, source.allow_livemode)
}

/// The body as a Stripe event. Also the check for events that arrive already authenticated
/// (backfill from Stripe's API through the admin API).
pub fn parse(body: Bytes, allow_livemode: bool) -> Result<VerifiedEvent, Rejection> {
    let json: Value = serde_json::from_slice(&body).map_err(|e| Rejection::BodyNotJson(e.to_string()))?;
    let id = json.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(Rejection::NoEventId)?;
    let event_type = json.get("type").and_then(Value::as_str).ok_or(Rejection::NoEventType)?;
    if !allow_livemode && json.get("livemode").and_then(Value::as_bool) == Some(true) {
        return Err(Rejection::Livemode);
    }
    Ok(VerifiedEvent { id: id.to_owned(), event_type: event_type.to_owned(), body, json })
}
