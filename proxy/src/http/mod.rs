//! The HTTP edge every listener shares: one error type that becomes an answer in one place, the
//! bearer-token check, size- and time-limited bodies, JSON answers, connection handling for the
//! servers (`server.rs`), and the outbound client with its TLS (`client.rs`, `tls.rs`).
//!
//! Invariant: a store error's text is logged here and never sent to a client; clients get a plain,
//! stable message and a status that says whether to retry.

pub mod client;
pub mod server;
pub mod tls;

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

pub type Body = Full<Bytes>;

/// A request refused: the status and the message the caller sees (as `{"error": message}`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), allow: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    /// 405, with the `Allow` header naming the one method that is.
    pub fn method_not_allowed(allow: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { allow: Some(allow), ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message) }
    }
    /// 503: the store failed. What failed is logged (with `context`); the caller hears only that
    /// it may retry.
    pub fn unavailable(context: &str, error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!("{context}: {error}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry later")
    }

    /// 500: a handler failed inside the proxy (it panicked). Logged; the caller hears only that.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!("{context}: {error}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the request failed inside the proxy; see its log")
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The one place an error becomes an HTTP answer: JSON for the APIs.
    pub fn into_response(self) -> Response<Body> {
        self.into_answer(|status, message| json(status, &crate::wire::ErrorBody { error: message.to_owned() }))
    }
}

impl ApiError {
    /// The same answer for a browser: `render` makes the page from the status and the message
    /// (the console's error page). The status, and what a store error may say, are decided here.
    pub fn into_answer(self, render: impl FnOnce(StatusCode, &str) -> Response<Body>) -> Response<Body> {
        let mut res = render(self.status, &self.message);
        if let Some(allow) = self.allow {
            res.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        res
    }
}

impl From<fanout_store::StoreError> for ApiError {
    fn from(e: fanout_store::StoreError) -> ApiError {
        ApiError::unavailable("request failed in the store", &e)
    }
}

/// A JSON answer; every listener's API answers this way.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A fixed JSON answer (200), without serializing per request: the webhook's hot path.
pub fn json_static(body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res
}

/// The host a request names (`Host`, or an HTTP/2 request's authority).
pub fn host(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// Whether the request names this host by a loopback address or `localhost`. A listener with no
/// token answers only such requests: a DNS-rebinding page (its own name resolved to 127.0.0.1)
/// sends its own name.
pub fn loopback_host(headers: &HeaderMap, uri: &http::Uri) -> bool {
    let Some(host) = host(headers, uri) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host.as_str(), |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The token of `Authorization: Bearer <token>`; `what` names the token in the refusal.
pub fn bearer<'h>(headers: &'h HeaderMap, what: &str) -> Result<&'h str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized(format!("missing `Authorization: Bearer <{what}>`")))
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Timeout,
    Unreadable(String),
}

impl BodyError {
    /// A short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            BodyError::TooLarge(_) => "body_too_large",
            BodyError::Timeout => "body_timeout",
            BodyError::Unreadable(_) => "body_unreadable",
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge(limit) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body exceeds the {limit}-byte limit"))
            }
            BodyError::Timeout => ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
            BodyError::Unreadable(e) => ApiError::bad_request(format!("could not read the request body: {e}")),
        }
    }
}

/// The whole body, if it is at most `limit` bytes (a declared `Content-Length` over it is refused
/// before reading) and arrives within `timeout`.
pub async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize, timeout: Duration) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge(limit)),
        Ok(Err(e)) => Err(BodyError::Unreadable(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_apart() {
        let uri: http::Uri = "/ui/".parse().unwrap();
        let headers = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            h
        };
        for ok in ["127.0.0.1:9090", "localhost:1", "[::1]:9090", "LOCALHOST", "127.0.0.2"] {
            assert!(loopback_host(&headers(ok), &uri), "{ok}");
        }
        for no in ["evil.example:9090", "10.0.0.1:9090", "localhost.evil.example", ""] {
            assert!(!loopback_host(&headers(no), &uri), "{no}");
        }
        assert!(!loopback_host(&HeaderMap::new(), &uri));
    }
}
