//! Wake-ups between replicas on one database. A replica that queues work for a target tells the
//! others with `NOTIFY`, so an event ingested on A reaches a listener polling B, or B's idle
//! worker, at once rather than at B's next poll. The polls stay as the backstop: a notification
//! is only a hint, lost while a replica is disconnected (it then looks at everything once it is
//! back).
//!
//! Notifications are sent outside the ingest transaction and coalesced (one `pg_notify` per
//! few milliseconds naming every target woken meanwhile): a `NOTIFY` inside a transaction takes
//! a database-wide lock at commit, which would serialize every ingest's commit.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel every replica listens on.
const CHANNEL: &str = "fanout_wake";

/// How long wake-ups are gathered before one notification carries them all.
const COALESCE: Duration = Duration::from_millis(20);

/// A notification's payload must stay under Postgres' 8000 bytes.
const PAYLOAD_MAX: usize = 7000;

/// Longest pause between attempts to listen again after the connection was lost.
const RELISTEN_MAX: Duration = Duration::from_secs(5);

/// What another replica asked this one to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// New or re-queued work for this target.
    Target(String),
    /// Anything may have changed (notifications were missed while disconnected): look at every
    /// queue.
    All,
}

/// Targets woken here and not yet announced to the other replicas.
#[derive(Default)]
pub(super) struct Announcer {
    pending: Mutex<BTreeSet<String>>,
    kick: Notify,
}

impl Announcer {
    pub(super) fn announce(&self, target: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.contains(target) {
            pending.insert(target.to_owned());
            if pending.len() == 1 {
                self.kick.notify_one();
            }
        }
    }

    /// Sends what is pending, a few milliseconds' worth at a time, for as long as the store is
    /// open. A failed send is dropped: the other replicas' polls find the work anyway.
    pub(super) async fn run(self: Arc<Self>, pool: Pool, replica: String) {
        loop {
            self.kick.notified().await;
            tokio::time::sleep(COALESCE).await;
            let targets = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            let client = match pool.get().await {
                Ok(client) => client,
                Err(e) => {
                    tracing::debug!("cannot announce new work to the other replicas: {e}");
                    continue;
                }
            };
            announce_now(&client, &replica, &targets).await;
        }
    }
}

/// Tells the other replicas about `targets` now. A failure is logged only: their polls find the
/// work anyway.
pub(super) async fn announce_now(client: &deadpool_postgres::Object, replica: &str, targets: &BTreeSet<String>) {
    for payload in payloads(replica, targets) {
        if let Err(e) = client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await {
            tracing::debug!("cannot announce new work to the other replicas: {e}");
            return;
        }
    }
}

/// `replica\ntarget\ntarget…`, split so each stays under the payload limit.
fn payloads(replica: &str, targets: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = replica.to_owned();
    for target in targets {
        if current.len() + 1 + target.len() > PAYLOAD_MAX && current.len() > replica.len() {
            out.push(std::mem::replace(&mut current, replica.to_owned()));
        }
        current.push('\n');
        current.push_str(target);
    }
    if current.len() > replica.len() {
        out.push(current);
    }
    out
}

/// Listens on its own connection (a pooled one would be recycled) and passes what other
/// replicas announce to `wakes`, until its receiver is dropped. After every (re)connection it
/// sends [`Wake::All`]: what was announced while it was away is looked for by hand.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    replica: String,
    wakes: mpsc::UnboundedSender<Wake>,
) {
    let first = Duration::from_millis(100);
    let mut pause = first;
    while !wakes.is_closed() {
        let began = std::time::Instant::now();
        match listen_once(&config, tls.clone(), &replica, &wakes).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("not listening for other replicas' wake-ups (polls still run): {e}"),
        }
        // A connection that served a while was not part of a run of failures.
        if began.elapsed() > RELISTEN_MAX * 2 {
            pause = first;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RELISTEN_MAX);
    }
}

/// One connection's life: `Ok` once nobody receives any more, `Err` when the connection fails.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    replica: &str,
    wakes: &mpsc::UnboundedSender<Wake>,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(tls).await.map_err(|e| e.to_string())?;
    let (messages, mut received) = mpsc::unbounded_channel();
    // The connection is driven here; notifications come out of it as messages.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if messages.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(e) = listening {
        driver.abort();
        return Err(e.to_string());
    }
    if wakes.send(Wake::All).is_err() {
        driver.abort();
        return Ok(());
    }
    loop {
        let payload = tokio::select! {
            payload = received.recv() => payload,
            _ = wakes.closed() => {
                driver.abort();
                return Ok(());
            }
        };
        // None: the driver ended, the connection closed or failed.
        let Some(payload) = payload else { break };
        let mut lines = payload.lines();
        if lines.next() == Some(replica) {
            continue;
        }
        for target in lines {
            if wakes.send(Wake::Target(target.to_owned())).is_err() {
                driver.abort();
                return Ok(());
            }
        }
    }
    drop(client);
    match driver.await {
        Ok(Err(e)) => Err(e.to_string()),
        _ if wakes.is_closed() => Ok(()),
        _ => Err("the database closed the connection".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_replica_first_and_stay_under_the_limit() {
        let targets: BTreeSet<String> = (0..2000).map(|i| format!("target-{i:05}")).collect();
        let sent = payloads("r1", &targets);
        assert!(sent.len() > 1, "2000 names do not fit one payload");
        let mut seen = Vec::new();
        for p in &sent {
            assert!(p.len() <= PAYLOAD_MAX, "{} bytes", p.len());
            let mut lines = p.lines();
            assert_eq!(lines.next(), Some("r1"));
            seen.extend(lines.map(str::to_owned));
        }
        assert_eq!(seen, targets.into_iter().collect::<Vec<_>>());
        assert!(payloads("r1", &BTreeSet::new()).is_empty());
    }
}
