//! Config changes while serving: SIGHUP, or the file's content changing (polled, which also works
//! for editors that replace the file and for Kubernetes ConfigMaps that swap a symlink), reloads
//! routing.yaml. A file that fails validation is refused with the reason logged, and the running
//! config keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError, Secret, StoreConfig};
use crate::serve::Running;

/// How often the file is read to see whether it changed.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// What the command line set over the file; re-applied to every reloaded config.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<std::net::SocketAddr>,
    pub admin_listen: Option<std::net::SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// Postgres instead of the config's store (its `pool` kept if it names Postgres; not its
    /// `ca`, which belongs to the URL it replaces).
    pub database_url: Option<String>,
}

/// Reads and parses the config at `path`: `${VAR}`s from the process's environment, the files it
/// names checked on disk.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: None,
        message: format!("cannot read the config: {e}"),
    })?;
    Config::parse_checking(&path.display().to_string(), &text, |name| std::env::var(name).ok(), Path::is_file)
}

impl Overrides {
    pub fn load(&self, path: &Path) -> Result<Config, ConfigError> {
        let mut config = load(path)?;
        config.listen = self.listen.unwrap_or(config.listen);
        config.admin.listen = self.admin_listen.unwrap_or(config.admin.listen);
        config.data_dir = self.data_dir.clone().unwrap_or(config.data_dir);
        if let Some(url) = &self.database_url {
            let pool = match &config.store {
                StoreConfig::Postgres { pool, .. } => *pool,
                StoreConfig::Sled => crate::config::DEFAULT_POOL,
            };
            config.store = StoreConfig::Postgres { url: Secret::new(url.clone()), pool, ca: None };
        }
        Ok(config)
    }
}

/// Serves until SIGTERM or SIGINT, reloading on SIGHUP and on a change of the file.
pub async fn serve_until_signal(path: &Path, overrides: &Overrides, running: &Running) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(t), Ok(h)) => (t, h),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot install signal handlers ({e}); stopping");
            return;
        }
    };
    let mut seen = fingerprint(path);
    let mut poll = tokio::time::interval(POLL_EVERY);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                seen = fingerprint(path);
                reload(path, overrides, running, "SIGHUP");
            }
            _ = poll.tick() => {
                let now = fingerprint(path);
                if now.is_some() && now != seen {
                    seen = now;
                    reload(path, overrides, running, "the file changed");
                }
            }
        }
    }
}

fn reload(path: &Path, overrides: &Overrides, running: &Running, why: &str) {
    let result = overrides.load(path).map_err(crate::serve::ReloadError::from).and_then(|c| running.reload(c));
    match result {
        Ok(kept) => {
            for k in &kept {
                tracing::warn!("config reloaded, but {k}");
            }
            running.note_reload(
                true,
                format!("applied ({why}){}", kept.iter().map(|k| format!("; {k}")).collect::<String>()),
            );
            tracing::info!(config = %path.display(), trigger = why, "config reloaded");
        }
        Err(e) => {
            if matches!(e, crate::serve::ReloadError::Config(_)) {
                running.count_reload("refused");
            }
            tracing::error!(config = %path.display(), trigger = why, "config refused; the previous one keeps serving: {e}");
            running.note_reload(false, format!("refused ({why}); the previous config keeps serving: {e}"));
        }
    }
}

fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|bytes| Sha256::digest(bytes).into())
}
