//! Inboxes created at run time, joined to the config read from routing.yaml: each becomes an
//! inbox target and a destination like those of the file, so delivery, presence, ownership and
//! `offline` fallbacks work for it unchanged. The live config is always routing.yaml joined with
//! the store's inboxes, whichever of the two changed.
//!
//! Invariant: pure; the records are read by the caller.

use std::time::Duration;

use fanout_store::InboxRecord;

use super::{BreakerPolicy, Config, Endpoint, InboxToken, Secret, Target};
use crate::route::{Destination, DestinationKind, GroupMode, Offline};

/// How long an inbox created at run time gives its listener per event, and its concurrency (which
/// an inbox does not use): routing.yaml's own defaults for a target.
const TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENCY: usize = 8;

/// Whether `name` may name an inbox: what routing.yaml allows a target, and not `drop`.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name == super::DROP
    {
        return Err(format!("inbox name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.' (and not \"drop\")"));
    }
    Ok(())
}

impl Config {
    /// This config (routing.yaml's) with `inboxes` added. An inbox whose name routing.yaml uses
    /// is left out (the file wins: an operator's config is not overridden by the store), and a
    /// fallback that names nothing usable is dropped; each such is in the warnings.
    pub fn with_inboxes(&self, inboxes: &[InboxRecord]) -> (Config, Vec<String>) {
        let mut joined = self.clone();
        let mut warnings = Vec::new();
        for record in inboxes {
            if joined.router.destinations.iter().any(|d| d.name == record.name) {
                warnings.push(format!(
                    "inbox {:?} (created at run time) is left out: routing.yaml names a target or group so",
                    record.name
                ));
                continue;
            }
            let offline = match (&record.offline_fallback, record.offline_after_ms) {
                (Some(fallback), after) => match self.fallback(fallback) {
                    Some(members) => Some(Offline {
                        after: Duration::from_millis(after.unwrap_or(0)),
                        fallback: members,
                        fallback_name: fallback.clone(),
                    }),
                    None => {
                        warnings.push(format!(
                            "inbox {:?}: offline fallback {fallback:?} is no longer a target or failover group; its events wait",
                            record.name
                        ));
                        None
                    }
                },
                (None, _) => None,
            };
            let mut retry = self.retry.clone();
            if let Some(ms) = record.max_age_ms {
                retry.max_age = Duration::from_millis(ms);
            }
            joined.targets.push(Target {
                name: record.name.clone(),
                endpoint: Endpoint::Inbox { token: InboxToken::Digest(record.token_sha256.clone()) },
                secret: Secret::new(record.secret.clone()),
                timeout: TIMEOUT,
                concurrency: CONCURRENCY,
                rate: None,
                retry,
                breaker: BreakerPolicy { enabled: false, ..super::resolve::DEFAULT_BREAKER },
                ca: None,
                offline,
            });
            let index = joined.targets.len() - 1;
            // After the groups: the destinations routing.yaml's rules name keep their numbers.
            joined
                .router
                .destinations
                .push(Destination { name: record.name.clone(), kind: DestinationKind::Target(index) });
            joined.router.inboxes.insert(record.name.clone(), joined.router.destinations.len() - 1);
        }
        (joined, warnings)
    }

    /// A fallback by name: a target that is not an inbox, or a failover group's members.
    pub fn fallback(&self, name: &str) -> Option<Vec<usize>> {
        match self.router.destinations.iter().find(|d| d.name == name).map(|d| &d.kind) {
            Some(DestinationKind::Target(i)) if !self.targets[*i].is_inbox() => Some(vec![*i]),
            Some(DestinationKind::Group { mode: GroupMode::Failover, members }) => Some(members.clone()),
            _ => None,
        }
    }
}
