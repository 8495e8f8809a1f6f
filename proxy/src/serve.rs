//! Wires the stages into a running proxy: opens the store, starts the delivery workers, the
//! retention sweep and the two listeners (webhooks, optionally over TLS; the admin API), and
//! takes them down in order on a stop. Everything stops on cancellation tokens, not flags.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_store::engine::Engine;
use fanout_store::Store;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::admin::Admin;
use crate::api::listen::ListenApi;
use crate::api::webhook::Webhooks;
use crate::background::Background;
use crate::config::{Config, LiveConfig, StoreConfig, INBOX_PATH};
use crate::deliver::{Deliveries, Lifecycle};
use crate::http::client::Clients;
use crate::http::server::{warn_if_fds_are_short, Listeners};
use crate::http::tls::{self, TlsError};
use crate::http::Body;
use crate::inboxes::{Inboxes, REFRESH_EVERY};
use crate::ingest::Intake;
use crate::metrics::{Metrics, ReasonLabel};
use crate::retention;

/// A running proxy. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub store: Engine,
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
    inboxes: Arc<Inboxes>,
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
    #[error("cannot start the admin API's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Opens the store `config` names (sled in `data_dir`, or Postgres), as `serve` and `fanout store
/// export|import` both do.
pub async fn open_store(config: &Config) -> Result<Engine, StartError> {
    Ok(match &config.store {
        StoreConfig::Sled => Engine::sled(Store::open(&config.data_dir)?),
        StoreConfig::Postgres { url, pool, ca } => {
            Engine::postgres(url.expose(), *pool, tls::client_config(ca.as_deref())?).await?
        }
    })
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    config.admin.check().map_err(StartError::Admin)?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?.map(TlsAcceptor::from);
    let clients = Clients::build(&config)?;
    let store = open_store(&config).await?;
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
    let at_ms = crate::clock::unix_now_ms();
    metrics.recent.reloaded(crate::recent::ReloadNote { at_ms, applied: true, message: "loaded at start".into() });
    let (accepting, shutdown, abort) = (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
    let (connections, delivery_tasks) = (TaskTracker::new(), TaskTracker::new());
    let life = Lifecycle { shutdown: shutdown.clone(), abort: abort.clone(), tasks: delivery_tasks.clone() };
    let deliveries = Deliveries::start(live.clone(), store.clone(), clients, metrics.clone(), life);
    let inboxes = Arc::new(Inboxes::new(store.clone(), live.clone(), deliveries.clone()));
    // Before anything is served: an inbox created at run time is routable from the first event.
    if let Err(e) = inboxes.refresh().await {
        tracing::error!("cannot read the store's inboxes; looking again every {:?}: {e}", REFRESH_EVERY);
    }
    let intake = Arc::new(Intake { store: store.clone(), deliveries: deliveries.clone(), metrics: metrics.clone() });
    let webhooks = Arc::new(Webhooks { live: live.clone(), intake: intake.clone(), metrics: metrics.clone() });
    let admin = Arc::new(Admin {
        inboxes: inboxes.clone(),
        live: live.clone(),
        store: store.clone(),
        deliveries: deliveries.clone(),
        metrics: metrics.clone(),
        intake,
        scrape: Default::default(),
        background: Background::start().map_err(StartError::Runtime)?,
        console_seed: console_seed()?,
    });
    let listen =
        Arc::new(ListenApi { live: live.clone(), deliveries: deliveries.clone(), stopping: accepting.clone() });
    // One listener for Stripe and for developers' `fanout listen`: both must reach it.
    type Answering = Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;
    let webhooks = move |req: Request<Incoming>| -> Answering {
        if req.uri().path().starts_with(INBOX_PATH) {
            Box::pin(listen.clone().handle(req))
        } else {
            Box::pin(webhooks.clone().handle(req))
        }
    };
    let listeners =
        Listeners { header_timeout, max_connections, accepting: accepting.clone(), connections: connections.clone() };
    let background = vec![
        tokio::spawn(listeners.clone().accept(listener, tls, webhooks)),
        tokio::spawn(listeners.accept(admin_listener, None, move |req| admin.clone().handle(req))),
        tokio::spawn(retention::sweep(store.clone(), live.clone(), deliveries.clone(), shutdown.clone())),
        tokio::spawn(inboxes.clone().keep_fresh(shutdown.clone())),
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
        inboxes,
    })
}

/// A random key for console sessions when there is no admin token to derive one from.
fn console_seed() -> Result<[u8; 32], StartError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| StartError::Admin(format!("no OS random source for console sessions: {e}")))?;
    Ok(seed)
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
    #[error("the config names {0}, which are inboxes created at run time: rename them in the file, or `fanout inbox delete` them first")]
    Inbox(String),
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
        if new.store != old.store {
            kept.push("store stays as it was until a restart".to_owned());
        }
        if new.tls != old.tls {
            kept.push("tls stays as it was until a restart".to_owned());
        }
        if new.header_read_timeout != old.header_read_timeout || new.max_connections != old.max_connections {
            kept.push("header_read_timeout and max_connections stay as they were until a restart".to_owned());
        }
        (new.listen, new.admin.listen, new.data_dir, new.tls, new.store) =
            (old.listen, old.admin.listen, old.data_dir.clone(), old.tls.clone(), old.store.clone());
        (new.header_read_timeout, new.max_connections) = (old.header_read_timeout, old.max_connections);
        let clashes = self.inboxes.clashes(&new);
        if !clashes.is_empty() {
            self.count_reload("refused");
            return Err(ReloadError::Inbox(clashes.join(", ")));
        }
        // The listener stays where it is: the token rule applies to where it really listens.
        new.admin.check().map_err(ReloadError::Admin).inspect_err(|_| self.count_reload("refused"))?;
        self.deliveries.set_clients(clients);
        // Joined with the inboxes created at run time, then served.
        self.inboxes.apply_file(new);
        self.count_reload("applied");
        Ok(kept)
    }

    /// What the console's config page shows as the last reload.
    pub fn note_reload(&self, applied: bool, message: String) {
        let at_ms = crate::clock::unix_now_ms();
        self.metrics.recent.reloaded(crate::recent::ReloadNote { at_ms, applied, message });
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
        for mut task in self.background {
            // Each stops at the token within a batch; one that does not is cut off, not left
            // running past the final flush.
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
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
        // Background store work (a retention batch, a sweep) ends before the last writes.
        self.store.close(Duration::from_secs(5)).await;
        match self.store.release_leases().await {
            Ok(n) if n > 0 => tracing::info!(released = n, "in-flight jobs leased back to their queues"),
            Ok(_) => {}
            Err(e) => tracing::error!("cannot lease jobs back (their leases expire and they are attempted again): {e}"),
        }
        if let Err(e) = self.store.durable().await {
            tracing::error!("final flush failed: {e}");
        }
        drop(self.deliveries);
    }
}
