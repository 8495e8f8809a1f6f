//! Serving connections: the accept loop with its connection limit, TLS handshakes, and the
//! timeouts that keep a silent or slow client from holding a slot. Both listeners (webhooks and
//! the admin API) are served this way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Body;

/// Largest request head (request line and headers) read before the connection is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How connections are served, shared by both listeners.
#[derive(Clone)]
pub struct Listeners {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Cancelled: stop accepting, finish the requests in progress, close.
    pub accepting: CancellationToken,
    pub connections: TaskTracker,
}

impl Listeners {
    /// Accepts connections until `accepting` is cancelled and serves each (after a TLS handshake,
    /// if there is an acceptor) with `handle`, over HTTP/1.1 or HTTP/2.
    pub async fn accept<F, Fut>(self, listener: TcpListener, tls: Option<TlsAcceptor>, handle: F)
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.header_timeout).max_buf_size(MAX_HEAD_BYTES);
        // HTTP/2 peers that vanish are found by pings and closed.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(self.header_timeout))
            .keep_alive_timeout(self.header_timeout);
        let builder = Arc::new(builder);
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        let mut refused_logged: Option<std::time::Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                _ = self.accepting.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // At the limit, a new connection is closed at once (Stripe retries a refused delivery).
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if refused_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(%peer, max_connections = self.max_connections, "connection limit reached: closing new connections");
                    refused_logged = Some(std::time::Instant::now());
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (builder, handle, accepting, tls) =
                (builder.clone(), handle.clone(), self.accepting.clone(), tls.clone());
            let header_timeout = self.header_timeout;
            self.connections.spawn(async move {
                let _slot = slot;
                match tls {
                    None => serve_connection(&builder, stream, handle, &accepting, header_timeout).await,
                    Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(&builder, stream, handle, &accepting, header_timeout).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    },
                }
            });
        }
    }
}

/// Serves one connection. Its first request must have arrived (headers read) within
/// `first_request` of the connection being handed over: a client that connects and says nothing,
/// or stalls inside the HTTP/2 preface or after a TLS handshake, would otherwise hold a
/// connection slot forever (hyper's header timeout starts only once a request has begun).
async fn serve_connection<I, F, Fut>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    handle: F,
    stop: &CancellationToken,
    first_request: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = requested.clone();
    let service = service_fn(move |req| {
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        handle(req)
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let silent = async {
        tokio::time::sleep(first_request).await;
        if requested.load(std::sync::atomic::Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        res = conn.as_mut() => if let Err(e) = res {
            tracing::debug!("connection ended: {e}");
        },
        _ = silent => tracing::debug!("no request in time: connection closed"),
        _ = stop.cancelled() => {
            // Finish the request in progress (it may be an event to acknowledge), then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Two listeners at `max_connections` each, the store's files and outbound connections all need
/// file descriptors; past the process's limit, accepts fail instead of the cap applying.
pub fn warn_if_fds_are_short(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(soft) = soft.filter(|soft| 2 * max_connections + 256 > *soft) {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            "max_connections on two listeners may exceed the open-file limit: raise it (ulimit -n, LimitNOFILE=) or lower max_connections"
        );
    }
}
