//! The plan stage: what a routing decision means for the store. It turns a [`Decision`] into the
//! jobs to queue (one per target, one per member of an `any` group, one walking a `failover`
//! group's members, an inbox job carrying its offline fallback) and the disposition to record,
//! and says which objects the event makes its destinations the owners of. Ingest, admin replay
//! and an inbox's offline move all plan through here.
//!
//! Invariant: pure functions over the config and the decision, no I/O; the clock is passed in.

use std::time::Duration;

use fanout_store::{Claims, Delivery, Disposition, NewJob, Owner, Routed};
use serde_json::Value;

use crate::config::{Config, Target};
use crate::route::{Decision, DestId, DestinationKind, GroupMode, Offline, DEFAULT_RULE};

/// Turns a routing decision into the jobs to queue and the disposition to record.
pub fn plan(config: &Config, decision: &Decision<'_>) -> (Vec<NewJob>, Disposition) {
    // Each destination, the rule recorded for it, and the rule whose `offline` applies to an
    // inbox among them (looked up only for inboxes: most events reach none).
    let chosen: Vec<(DestId, String, &str)> = match decision {
        Decision::Drop { rule } => return (Vec::new(), Disposition::Dropped { rule: (*rule).to_owned() }),
        Decision::Unrouted => return (Vec::new(), Disposition::Unrouted),
        Decision::Deliver(chosen) => chosen.iter().map(|&(dest, rule)| (dest, rule.to_owned(), rule)).collect(),
        // Routed like the event that claimed the object, offline fallback included.
        Decision::Owned { object, destinations, via } => {
            destinations.iter().map(|&dest| (dest, format!("owner:{object}"), via.as_str())).collect()
        }
    };
    let mut jobs = Vec::new();
    let mut destinations = Vec::new();
    for (dest, rule, offline_rule) in chosen {
        let before = jobs.len();
        jobs.extend(destination_jobs(config, dest, &rule, offline_rule));
        destinations.push(Routed {
            destination: config.router.destinations[dest].name.clone(),
            rule,
            jobs: (jobs.len() - before) as u32,
        });
    }
    (jobs, Disposition::Routed { destinations })
}

/// The jobs one destination gets.
fn destination_jobs(config: &Config, dest: DestId, rule: &str, offline_rule: &str) -> Vec<NewJob> {
    let dest = &config.router.destinations[dest];
    let target = |i: usize| config.targets[i].name.clone();
    let job = |target, delivery| NewJob { target, delivery, rule: rule.to_owned() };
    match &dest.kind {
        DestinationKind::Target(i) => {
            let delivery = match offline_for(config, &config.targets[*i], offline_rule) {
                Some(o) => Delivery::Inbox {
                    fallback: o.fallback.iter().map(|&m| target(m)).collect(),
                    offline_after_ms: o.after.as_millis() as u64,
                },
                None => Delivery::Target,
            };
            vec![job(target(*i), delivery)]
        }
        DestinationKind::Group { mode: GroupMode::Any, members } => {
            members.iter().map(|&m| job(target(m), Delivery::AnyOf { group: dest.name.clone() })).collect()
        }
        DestinationKind::Group { mode: GroupMode::Failover, members } => {
            let names: Vec<String> = members.iter().map(|&m| target(m)).collect();
            let first = names[0].clone();
            vec![job(first, Delivery::Failover { group: dest.name.clone(), members: names, member: 0 })]
        }
    }
}

/// Where an inbox's events go while nobody listens: the route's own fallback, else the inbox's.
/// None for a target that is not an inbox.
pub fn offline_for<'c>(config: &'c Config, target: &'c Target, rule: &str) -> Option<&'c Offline> {
    if !target.is_inbox() {
        return None;
    }
    config.router.rule(rule).and_then(|r| r.offline.as_ref()).or(target.offline.as_ref())
}

/// The objects an event makes its destinations the owners of: those it references, when a rule
/// (not the default) or an owner routed it. Later events about them follow.
pub fn claims(config: &Config, decision: &Decision<'_>, event: &Value, event_id: &str, now_ms: u64) -> Option<Claims> {
    let names = |ids: &mut dyn Iterator<Item = DestId>| -> Vec<String> {
        ids.map(|d| config.router.destinations[d].name.clone()).collect()
    };
    let (destinations, via) = match decision {
        Decision::Deliver(chosen) if chosen.iter().all(|(_, rule)| *rule != DEFAULT_RULE) => {
            (names(&mut chosen.iter().map(|(d, _)| *d)), chosen[0].1.to_owned())
        }
        Decision::Owned { destinations, via, .. } => (names(&mut destinations.iter().copied()), via.clone()),
        _ => return None,
    };
    let ids = config.router.references(event);
    if ids.is_empty() {
        return None;
    }
    let owner = Owner { destinations, via, event_id: Some(event_id.to_owned()), at_ms: now_ms };
    // A claim is refreshed at most this often while it stays the same: ownership expires with
    // retention after the last refresh, so well before that.
    let refresh_after_ms = (config.retention / 4).min(Duration::from_secs(24 * 3600)).as_millis() as u64;
    Some(Claims { ids, owner, refresh_after_ms })
}
