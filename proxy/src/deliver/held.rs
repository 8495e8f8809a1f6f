//! A target whose circuit breaker is open: its transitions logged and counted once each, and its
//! held queue swept while it stays open. The sweep is what keeps "held" from meaning "stuck":
//! jobs past `max_age` are dead-lettered (no attempt would ever reach them), and failover jobs
//! move on to the next member whose breaker is closed, without an attempt.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_store::{Job, QueueCursor};

use super::breaker::{BreakerState, Transition};
use super::policy::held_move;
use super::{Shared, TargetState};
use crate::clock::{mono_ms, unix_now_ms};
use crate::config::Target;

/// How often an open breaker's queue is swept, and how many jobs each look reads: a backlog of a
/// million is walked in under 20 minutes, and an open breaker over it costs fanout about 1% of a
/// core, sweep and probes together (BENCHMARKS.md, `down`).
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
        probe: Option<u64>,
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
            Some(Transition::Closed) => self.breaker_closed(name, "the target answered"),
            None if probe.is_some() && !ok => {
                tracing::debug!(target = %name, "probe failed: the circuit breaker stays open");
            }
            None => {}
        }
    }
}

impl Shared {
    /// A breaker closed (`why`: the target answered, an operator, a reload): logged and counted
    /// once, and the worker looks at its queue at once.
    pub(super) fn breaker_closed(&self, name: &str, why: &str) {
        tracing::info!(target = %name, "circuit breaker closed ({why}): its queue drains again");
        self.metrics.breaker_transition(name, "closed");
        self.wake_here(name);
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
