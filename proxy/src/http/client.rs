//! The outbound HTTP client: what delivery workers POST with, and what the CLI (`listen`, the
//! admin verbs, `send`, backfill) talks through. HTTP/1.1 and HTTP/2 by ALPN; redirects are never
//! followed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::tls::{self, TlsError};
use crate::config::Config;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that trusts the platform's roots plus `extra_ca` if given.
pub fn client(extra_ca: Option<&Path>) -> Result<HttpClient, TlsError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls::client_config(extra_ca)?)
        .https_or_http()
        .enable_all_versions()
        .build();
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector))
}

/// One HTTP client per distinct trust set: the shared one, and one per target with its own CA.
#[derive(Clone)]
pub struct Clients {
    default: HttpClient,
    own_ca: HashMap<String, HttpClient>,
}

impl Clients {
    /// Every client the config needs; fails on a CA file that cannot be used.
    pub fn build(config: &Config) -> Result<Clients, TlsError> {
        let mut own_ca = HashMap::new();
        for t in &config.targets {
            if let Some(ca) = &t.ca {
                own_ca.insert(t.name.clone(), client(Some(ca))?);
            }
        }
        Ok(Clients { default: client(None)?, own_ca })
    }

    pub fn for_target(&self, name: &str) -> &HttpClient {
        self.own_ca.get(name).unwrap_or(&self.default)
    }
}

/// A failed POST: the HTTP status if the other end answered, and what went wrong.
#[derive(Debug)]
pub struct Failure {
    pub status: Option<u16>,
    pub error: String,
}

/// One POST of a delivery, pushed by a worker or forwarded by `fanout listen`: Ok(status) only
/// for a 2xx within `timeout`; otherwise the status (if any) and what went wrong.
pub async fn post(client: &HttpClient, req: Request<Full<Bytes>>, timeout: Duration) -> Result<u16, Failure> {
    let fail = |status: Option<u16>, error: String| Failure { status, error };
    let exchange = async {
        let res = client.request(req).await.map_err(|e| fail(None, error_chain(&e)))?;
        let status = res.status();
        // Read (a bounded part of) the answer so the connection can be reused, and for the error.
        let text = match Limited::new(res.into_body(), 4096).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect::<String>(),
            Err(_) => String::new(),
        };
        Ok::<_, Failure>((status, text))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(fail(None, format!("timed out after {timeout:?}"))),
        Ok(Err(e)) => Err(e),
        Ok(Ok((status, _))) if status.is_success() => Ok(status.as_u16()),
        Ok(Ok((status, _))) if status.is_redirection() => Err(fail(
            Some(status.as_u16()),
            format!("HTTP {status}: redirects are not followed; point the target at the final URL"),
        )),
        Ok(Ok((status, text))) => Err(fail(Some(status.as_u16()), format!("HTTP {status}: {text}"))),
    }
}

/// An error with its sources, one after the other: hyper's "client error (Connect)" alone does not
/// say "connection refused".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
