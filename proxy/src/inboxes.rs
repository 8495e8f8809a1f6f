//! Inboxes created at run time: `fanout inbox create|rotate|delete` through the admin API, kept
//! in the store, served as if routing.yaml had them. A team of hundreds onboards a developer
//! without a config change or a reload.
//!
//! The live config is always routing.yaml (as last read) joined with the store's inboxes (as
//! last read): a reload and an inbox change both rebuild it here. Other replicas of a shared store
//! read the table every [`REFRESH_EVERY`], so an inbox created through one is served by all.
//!
//! Tokens are made here and shown once; the store keeps their SHA-256 only. The webhook secret is
//! kept (every delivery is signed with it) and given again only to the inbox's own token holder
//! (`fanout listen --print-secret`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_store::engine::Engine;
use fanout_store::{InboxRecord, StoreError};

use crate::clock::unix_now_ms;
use crate::config::{token_digest, valid_name, Config, LiveConfig};
use crate::deliver::Deliveries;

/// How often the store's inboxes are read again (changes made through another replica).
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// What an operator asks for.
#[derive(Debug, Clone, Default)]
pub struct NewInbox {
    pub name: String,
    pub max_age: Option<Duration>,
    pub offline_fallback: Option<String>,
    pub offline_after: Option<Duration>,
}

/// A created or rotated inbox: the only time its token is seen. (No `Debug`: nothing should
/// print it by accident.)
#[derive(Clone)]
pub struct Credentials {
    pub name: String,
    pub token: String,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxAdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Taken(String),
    #[error("no inbox named {0:?} was created at run time")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot make a random token: {0}")]
    Random(String),
}

pub struct Inboxes {
    store: Engine,
    live: LiveConfig,
    deliveries: Deliveries,
    /// routing.yaml as last read, and the store's inboxes as last read.
    joined: Mutex<(Arc<Config>, Vec<InboxRecord>)>,
    /// Held from a refresh's read of the store to serving what it read: a refresh that read
    /// before a create (or rotation, or delete) can never serve after that write's own refresh.
    refreshing: tokio::sync::Mutex<()>,
}

impl Inboxes {
    /// `live` holds routing.yaml's config as read at start.
    pub fn new(store: Engine, live: LiveConfig, deliveries: Deliveries) -> Inboxes {
        let file = live.load_full();
        Inboxes { store, live, deliveries, joined: Mutex::new((file, Vec::new())), refreshing: Default::default() }
    }

    /// A new routing.yaml (a reload): joined with the inboxes and served.
    pub fn apply_file(&self, file: Config) {
        let mut joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        joined.0 = Arc::new(file);
        self.serve(&joined);
    }

    /// Reads the store's inboxes and serves them if they changed.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let mut records = self.store.inboxes().await?;
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let mut joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        if joined.1 != records {
            joined.1 = records;
            self.serve(&joined);
        }
        Ok(())
    }

    fn serve(&self, (file, records): &(Arc<Config>, Vec<InboxRecord>)) {
        let (config, warnings) = file.with_inboxes(records);
        for w in warnings {
            tracing::warn!("{w}");
        }
        self.live.store(Arc::new(config));
        self.deliveries.reconcile();
    }

    pub async fn create(&self, new: NewInbox) -> Result<Credentials, InboxAdminError> {
        valid_name(&new.name).map_err(InboxAdminError::Invalid)?;
        let file = self.joined.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        if file.router.destinations.iter().any(|d| d.name == new.name) {
            return Err(InboxAdminError::Taken(format!(
                "routing.yaml already names a target or group {:?}: inboxes and targets share one namespace",
                new.name
            )));
        }
        if let Some(fallback) = &new.offline_fallback {
            if file.fallback(fallback).is_none() {
                return Err(InboxAdminError::Invalid(format!(
                    "offline fallback {fallback:?} must be a target that is not an inbox, or a failover group"
                )));
            }
        }
        let credentials = credentials(&new.name)?;
        let record = InboxRecord {
            name: new.name.clone(),
            token_sha256: token_digest(&credentials.token),
            secret: credentials.secret.clone(),
            max_age_ms: new.max_age.map(|d| d.as_millis() as u64),
            offline_fallback: new.offline_fallback,
            offline_after_ms: new.offline_after.map(|d| d.as_millis() as u64),
            created_at_ms: unix_now_ms(),
        };
        if !self.store.create_inbox(&record).await? {
            return Err(InboxAdminError::Taken(format!("an inbox named {:?} exists already", new.name)));
        }
        tracing::info!(inbox = %new.name, "inbox created");
        self.refresh_after_write().await;
        Ok(credentials)
    }

    /// A new token and secret; the old ones stop working at once (on other replicas within
    /// [`REFRESH_EVERY`]). The queue stays as it is.
    pub async fn rotate(&self, name: &str) -> Result<Credentials, InboxAdminError> {
        let record = self.record(name).await?;
        let credentials = credentials(name)?;
        let rotated = InboxRecord {
            token_sha256: token_digest(&credentials.token),
            secret: credentials.secret.clone(),
            ..record
        };
        if !self.store.replace_inbox(&rotated).await? {
            return Err(InboxAdminError::NotFound(name.to_owned()));
        }
        tracing::info!(inbox = %name, "inbox token and secret rotated");
        self.refresh_after_write().await;
        Ok(credentials)
    }

    /// Deletes an inbox. Its queued events go to the dead letters, each saying its inbox was
    /// deleted, where an operator can replay them elsewhere: nothing is dropped silently.
    pub async fn delete(&self, name: &str) -> Result<(), InboxAdminError> {
        if !self.store.delete_inbox(name).await? {
            return Err(InboxAdminError::NotFound(name.to_owned()));
        }
        tracing::info!(inbox = %name, "inbox deleted; its queued events go to the dead letters");
        self.refresh_after_write().await;
        Ok(())
    }

    /// The write is done: its answer (a token shown once) must not be lost to a failed read;
    /// the next refresh serves it.
    async fn refresh_after_write(&self) {
        if let Err(e) = self.refresh().await {
            tracing::error!("cannot read the store's inboxes after a change; served within {REFRESH_EVERY:?}: {e}");
        }
    }

    /// The names of inboxes created at run time that `file` (a reload) also names: such a file
    /// is refused, or the inbox's queue would go to whatever the file says.
    pub fn clashes(&self, file: &Config) -> Vec<String> {
        let joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        joined
            .1
            .iter()
            .filter(|r| file.router.destinations.iter().any(|d| d.name == r.name))
            .map(|r| r.name.clone())
            .collect()
    }

    async fn record(&self, name: &str) -> Result<InboxRecord, InboxAdminError> {
        let all = self.store.inboxes().await?;
        all.into_iter().find(|r| r.name == name).ok_or_else(|| InboxAdminError::NotFound(name.to_owned()))
    }

    /// When each inbox created at run time was created.
    pub fn created_at(&self) -> Vec<(String, u64)> {
        let joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        joined.1.iter().map(|r| (r.name.clone(), r.created_at_ms)).collect()
    }

    /// Reads the store's inboxes every [`REFRESH_EVERY`] until `stop`.
    pub async fn keep_fresh(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
            }
            match self.refresh().await {
                Ok(()) if failing => {
                    tracing::info!("the store's inboxes are readable again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::error!("cannot read the store's inboxes (the ones known keep serving): {e}");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// A fresh token and webhook secret, from the operating system's random source.
fn credentials(name: &str) -> Result<Credentials, InboxAdminError> {
    let random = |n: usize| -> Result<String, InboxAdminError> {
        let mut bytes = vec![0u8; n];
        getrandom::getrandom(&mut bytes).map_err(|e| InboxAdminError::Random(e.to_string()))?;
        Ok(hex::encode(bytes))
    };
    Ok(Credentials {
        name: name.to_owned(),
        token: format!("fo_inbox_{}", random(24)?),
        secret: format!("whsec_{}", random(24)?),
    })
}
