//! Wires the stages into a running proxy: opens the store, starts the delivery workers, the
//! retention sweep and the two listeners (webhooks, optionally over TLS; the admin API), and
//! takes them down in order on a stop. Everything stops on cancellation tokens, not flags.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_store::Store;
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

use crate::admin::Admin;
use crate::clock::unix_now_ms;
use crate::config::{Config, LiveConfig};
use crate::deliver::{Clients, Deliveries};
use crate::inbox::{InboxApi, PATH_PREFIX};
use crate::ingress::{Body, Ingress};
use crate::metrics::{Metrics, ReasonLabel};
use crate::tls::{self, TlsError};

/// A running proxy. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub store: Store,
    live: LiveConfig,
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
    /// Stops the listeners; open connections finish the requests they are in.
    accepting: CancellationToken,
    /// Stops the workers' leasing and the background sweeps.
    shutdown: CancellationToken,
    /// Cuts off delivery attempts still running at the end of the grace period.
    abort: CancellationToken,
    connections: TaskTracker,
    delivery_tasks: TaskTracker,
    background: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] fanout_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Admin(String),
}

/// Largest request head (request line and headers) read before the connection is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How often retention runs (and re-checks for queues of removed targets).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub async fn start(config: Config) -> Result<Running, StartError> {
    config.admin.check().map_err(StartError::Admin)?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?.map(TlsAcceptor::from);
    let clients = Clients::build(&config)?;
    let store = Store::open(&config.data_dir)?;
    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| StartError::Listen { addr, source })?;
        Ok::<_, StartError>((listener, local))
    };
    let (listener, addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin.listen).await?;

    let (header_timeout, max_connections) = (config.header_read_timeout, config.max_connections);
    warn_if_fds_are_short(max_connections);
    let live: LiveConfig = Arc::new(ArcSwap::from_pointee(config));
    let metrics = Arc::new(Metrics::default());
    let (accepting, shutdown, abort) = (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
    let (connections, delivery_tasks) = (TaskTracker::new(), TaskTracker::new());
    let deliveries = Deliveries::start(
        live.clone(),
        store.clone(),
        clients,
        metrics.clone(),
        shutdown.clone(),
        abort.clone(),
        delivery_tasks.clone(),
    );
    let ingress = Arc::new(Ingress {
        live: live.clone(),
        store: store.clone(),
        deliveries: deliveries.clone(),
        metrics: metrics.clone(),
    });
    let admin = Arc::new(Admin {
        live: live.clone(),
        store: store.clone(),
        deliveries: deliveries.clone(),
        metrics: metrics.clone(),
        ingress: ingress.clone(),
        scrape: Default::default(),
    });
    let inbox = Arc::new(InboxApi { live: live.clone(), deliveries: deliveries.clone(), stopping: accepting.clone() });
    // One listener for Stripe and for developers' `fanout listen`: both must reach it.
    type Answering = Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;
    let webhooks = move |req: Request<Incoming>| -> Answering {
        if req.uri().path().starts_with(PATH_PREFIX) {
            Box::pin(inbox.clone().handle(req))
        } else {
            Box::pin(ingress.clone().handle(req))
        }
    };
    let listeners =
        Listeners { header_timeout, max_connections, accepting: accepting.clone(), connections: connections.clone() };
    let background = vec![
        tokio::spawn(listeners.clone().accept(listener, tls, webhooks)),
        tokio::spawn(listeners.accept(admin_listener, None, move |req| admin.clone().handle(req))),
        tokio::spawn(sweep(store.clone(), live.clone(), deliveries.clone(), shutdown.clone())),
    ];
    Ok(Running {
        addr,
        admin_addr,
        store,
        live,
        deliveries,
        metrics,
        accepting,
        shutdown,
        abort,
        connections,
        delivery_tasks,
        background,
    })
}

/// Why a new config was not applied; the old one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("{0} (the admin listener keeps its address until a restart)")]
    Admin(String),
}

impl Running {
    pub fn config(&self) -> Arc<Config> {
        self.live.load_full()
    }

    /// Applies a new config: routing, sources, targets and their settings take effect at once;
    /// workers start for new targets, and a removed target's queued jobs go to the dead letters
    /// with that reason. Settings bound at start (listen addresses, data_dir, inbound TLS) are
    /// kept; each one changed is returned as a warning.
    pub fn reload(&self, mut new: Config) -> Result<Vec<String>, ReloadError> {
        let clients = Clients::build(&new).inspect_err(|_| self.count_reload("refused"))?;
        let old = self.live.load_full();
        let mut kept = Vec::new();
        if new.listen != old.listen {
            kept.push(format!("listen stays {} until a restart", old.listen));
        }
        if new.admin.listen != old.admin.listen {
            kept.push(format!("admin.listen stays {} until a restart", old.admin.listen));
        }
        if new.data_dir != old.data_dir {
            kept.push(format!("data_dir stays {} until a restart", old.data_dir.display()));
        }
        if new.tls != old.tls {
            kept.push("tls stays as it was until a restart".to_owned());
        }
        if new.header_read_timeout != old.header_read_timeout || new.max_connections != old.max_connections {
            kept.push("header_read_timeout and max_connections stay as they were until a restart".to_owned());
        }
        (new.listen, new.admin.listen, new.data_dir, new.tls) =
            (old.listen, old.admin.listen, old.data_dir.clone(), old.tls.clone());
        (new.header_read_timeout, new.max_connections) = (old.header_read_timeout, old.max_connections);
        // The listener stays where it is: the token rule applies to where it really listens.
        new.admin.check().map_err(ReloadError::Admin).inspect_err(|_| self.count_reload("refused"))?;
        self.deliveries.set_clients(clients);
        self.live.store(Arc::new(new));
        self.deliveries.reconcile();
        self.count_reload("applied");
        Ok(kept)
    }

    /// Counts a reload the caller refused before it got here (an invalid file).
    pub fn count_reload(&self, result: &str) {
        self.metrics.config_reloads.get_or_create(&ReasonLabel { reason: result.to_owned() }).inc();
    }

    /// Graceful stop: stop accepting; let open requests finish (so what was received is
    /// acknowledged); stop leasing; give attempts in flight `shutdown_grace` to finish, then cut
    /// them off and hand their jobs back to the queue; flush.
    pub async fn stop(self) {
        let config = self.live.load_full();
        self.accepting.cancel();
        self.connections.close();
        // A request in progress has at most its header and body timeouts left.
        let requests = config.header_read_timeout + config.body_read_timeout + Duration::from_secs(1);
        if tokio::time::timeout(requests, self.connections.wait()).await.is_err() {
            tracing::warn!(left = self.connections.len(), "connections still open at shutdown; closed");
        }
        self.shutdown.cancel();
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.delivery_tasks.close();
        if tokio::time::timeout(config.shutdown_grace, self.delivery_tasks.wait()).await.is_err() {
            tracing::warn!(
                in_flight = self.delivery_tasks.len(),
                grace = ?config.shutdown_grace,
                "deliveries still in flight at the end of the grace period: cut off and re-queued"
            );
            self.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.delivery_tasks.wait()).await;
        }
        match self.store.release_leases() {
            Ok(n) if n > 0 => tracing::info!(released = n, "in-flight jobs leased back to their queues"),
            Ok(_) => {}
            Err(e) => tracing::error!("cannot lease jobs back (they are re-queued at the next start): {e}"),
        }
        if let Err(e) = self.store.durable().await {
            tracing::error!("final flush failed: {e}");
        }
        drop(self.deliveries);
    }
}

#[derive(Clone)]
struct Listeners {
    header_timeout: Duration,
    max_connections: usize,
    accepting: CancellationToken,
    connections: TaskTracker,
}

impl Listeners {
    /// Accepts connections until `accepting` is cancelled and serves each (after a TLS handshake,
    /// if there is an acceptor) with `handle`, over HTTP/1.1 or HTTP/2.
    async fn accept<F, Fut>(self, listener: TcpListener, tls: Option<TlsAcceptor>, handle: F)
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
fn warn_if_fds_are_short(max_connections: usize) {
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

/// Forgets events (with their history and dead letters) and object ownership older than the
/// retention, in small batches so ingest never waits on it; and moves jobs queued for removed targets to the dead
/// letters.
async fn sweep(store: Store, live: LiveConfig, deliveries: Deliveries, shutdown: CancellationToken) {
    let mut owners_from: Option<String> = None;
    loop {
        let keep = live.load().retention;
        let cutoff = unix_now_ms().saturating_sub(keep.as_millis() as u64);
        loop {
            match store.purge_events_before(cutoff, 500) {
                Ok(500) => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("retention sweep failed: {e}");
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        // Ownership is keyed by object id: a slice of it per pass, cursor kept between passes.
        match store.purge_owners_before(cutoff, owners_from.as_deref(), 1000) {
            Ok((_, next)) => owners_from = next,
            Err(e) => tracing::error!("retention sweep of object owners failed: {e}"),
        }
        deliveries.sweep_orphan_queues().await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}
