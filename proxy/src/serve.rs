//! Wires the stages into a running proxy: opens the store, starts the delivery workers and the
//! retention sweep, then accepts connections. Everything stops on one cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fanout_store::Store;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::deliver;
use crate::ingress::{unix_now_ms, Ingress};

/// A running proxy. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Connections and delivery attempts; each holds the store, which stays locked until the last
    /// one ends, so a stop waits for them (bounded) before it returns.
    tracker: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] fanout_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Largest request head (request line and headers) read before the connection is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub async fn start(config: Config) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let store = Store::open(&config.data_dir)?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (dispatcher, mut tasks) =
        deliver::spawn(config.clone(), store.clone(), deliver::http_client(), shutdown.clone(), tracker.clone());
    tasks.push(tokio::spawn(retention(store.clone(), config.dedup_retention, shutdown.clone())));
    let ingress = Arc::new(Ingress { config: config.clone(), store: store.clone(), dispatcher });
    let accepting = accept(listener, ingress, config.header_read_timeout, shutdown.clone(), tracker.clone());
    tasks.push(tokio::spawn(accepting));
    Ok(Running { addr, store, shutdown, tasks, tracker })
}

impl Running {
    /// Stops accepting, lets workers finish, and flushes the store.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await.is_err() {
            tracing::warn!(left = self.tracker.len(), "stopped with connections or deliveries still running");
        }
        if let Err(e) = self.store.durable().await {
            tracing::error!("final flush failed: {e}");
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

async fn accept(
    listener: TcpListener,
    ingress: Arc<Ingress>,
    header_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(MAX_HEAD_BYTES);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        let _ = stream.set_nodelay(true);
        let (builder, ingress, shutdown) = (builder.clone(), ingress.clone(), shutdown.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| ingress.clone().handle(req));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => if let Err(e) = res {
                    tracing::debug!(%peer, "connection ended: {e}");
                },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                }
            }
        });
    }
}

/// Forgets event ids older than the retention, in small batches so ingest never waits on it.
async fn retention(store: Store, keep: Duration, shutdown: CancellationToken) {
    loop {
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
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}
