//! A target whose circuit breaker is open: its transitions logged and counted once each, and its
//! held queue swept while it stays open. The sweep is what keeps "held" from meaning "stuck":
//! jobs past `max_age` are dead-lettered (no attempt would ever reach them), and failover jobs
//! move on to the next member whose breaker is closed, without an attempt.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_store::{Delivery, Job, QueueCursor, Sweep};

use super::breaker::{BreakerState, Transition};
use super::policy::first_closed;
use super::{Shared, TargetState};
use crate::clock::{mono_ms, unix_now_ms};
use crate::config::{Config, Target};

/// How often an open breaker's queue is swept, and how many jobs each look reads: a backlog of a
/// million is walked in under 20 minutes for about a millisecond of work a second.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_SLICE: usize = 1000;

impl Shared {
    /// The target answered an attempt (`ok`: 2xx): its breaker hears it. A transition is logged
    /// and counted here, once; an opening starts the held queue's sweep.
    pub(super) fn answered(
        self: &Arc<Self>,
        name: &str,
        state: &Arc<TargetState>,
        target: &Target,
        ok: bool,
        probe: bool,
    ) {
        let policy = &target.breaker;
        let transition = state.breaker().record(policy, ok, probe, mono_ms());
        match transition {
            Some(Transition::Opened { failures }) => {
                tracing::warn!(
                    target = %name,
                    failures,
                    "circuit breaker opened: the queue is held, one probe at a time from {} (up to every {}); `fanout targets reset {name}` closes it",
                    humantime::format_duration(policy.probe_interval),
                    humantime::format_duration(policy.max_probe_interval),
                );
                self.metrics.breaker_transition(name, "open");
                if !state.sweeping.swap(true, Ordering::SeqCst) {
                    self.tasks.spawn(sweep_while_open(self.clone(), name.to_owned(), state.clone()));
                }
            }
            Some(Transition::Closed) => {
                tracing::info!(target = %name, "circuit breaker closed: the target answered; its queue drains again");
                self.metrics.breaker_transition(name, "closed");
            }
            None if probe && !ok => {
                tracing::debug!(target = %name, "probe failed: the circuit breaker stays open");
            }
            None => {}
        }
    }
}

/// While `name`'s breaker stays open, each second a slice of its queue: past `max_age` →
/// dead letters; failover → the next member whose breaker is closed. It walks on from where it
/// stopped, so jobs behind a long held backlog are reached too.
async fn sweep_while_open(shared: Arc<Shared>, name: String, state: Arc<TargetState>) {
    let mut from: Option<QueueCursor> = None;
    loop {
        tokio::select! {
            _ = state.stop.cancelled() => break,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        if state.breaker().state() == BreakerState::Closed {
            state.sweeping.store(false, Ordering::SeqCst);
            // Opened again meanwhile, and its opening saw this sweep still running: go on.
            if state.breaker().state() == BreakerState::Closed || state.sweeping.swap(true, Ordering::SeqCst) {
                break;
            }
        }
        let config = shared.live.load_full();
        let open: HashSet<String> =
            config.targets.iter().filter(|t| shared.is_open(&t.name)).map(|t| t.name.clone()).collect();
        let now = unix_now_ms();
        let woken = Arc::new(Mutex::new(Vec::new()));
        let (cfg, woke) = (config.clone(), woken.clone());
        let decide =
            move |job: &Job| held_move(&cfg, job, &open, now, &mut woke.lock().unwrap_or_else(|p| p.into_inner()));
        match shared.store.sweep_queue(&name, from.take().as_ref(), SWEEP_SLICE, now, decide).await {
            Ok((moved, next)) => {
                from = next;
                if moved > 0 {
                    tracing::info!(target = %name, moved, "circuit breaker open: held jobs failed over or dead-lettered (max_age)");
                }
            }
            Err(e) => tracing::error!(target = %name, "cannot sweep the held queue: {e}"),
        }
        let mut woken = std::mem::take(&mut *woken.lock().unwrap_or_else(|p| p.into_inner()));
        woken.sort();
        woken.dedup();
        woken.iter().for_each(|t| shared.wake(t));
    }
}

/// What becomes of one job held by its target's open breaker (`open`: the targets whose breaker
/// is open). Pure.
fn held_move(config: &Config, job: &Job, open: &HashSet<String>, now_ms: u64, woken: &mut Vec<String>) -> Sweep {
    let Some(target) = config.target(&job.target) else { return Sweep::Keep };
    let max_age = target.retry.max_age;
    if now_ms.saturating_sub(job.created_at_ms) >= max_age.as_millis() as u64 {
        return Sweep::DeadLetter(format!(
            "held by {:?}'s open circuit breaker past max_age ({}); last error: {}",
            job.target,
            humantime::format_duration(max_age),
            job.last_error.as_deref().unwrap_or("none")
        ));
    }
    let Delivery::Failover { members, member, group } = &job.delivery else { return Sweep::Keep };
    let next = first_closed(members, *member + 1, &|m| open.contains(m) || config.target(m).is_none());
    let Some(next) = next.filter(|&n| n != *member) else { return Sweep::Keep };
    let mut moved = job.clone();
    moved.target = members[next].clone();
    moved.delivery = Delivery::Failover { group: group.clone(), members: members.clone(), member: next };
    moved.due_at_ms = now_ms;
    woken.push(moved.target.clone());
    let why =
        format!("{:?}'s circuit breaker is open: failed over to {:?} without an attempt", job.target, moved.target);
    Sweep::Reroute(Box::new(moved), why)
}

#[cfg(test)]
mod tests;
