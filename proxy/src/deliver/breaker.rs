//! A target's circuit breaker, as a pure state machine over the monotonic clock (ms, passed in).
//! A target that is down costs fanout a doomed attempt per queued job at every retry, and gets
//! the whole backlog at full concurrency the moment it comes back. Once the breaker opens, the
//! queue is held: one probe at a time, with the oldest due job, at an interval that doubles up
//! to a cap. A success closes it and the backlog drains under `rate` and `concurrency`.
//!
//! Held jobs are not attempted, so they spend no attempts; `max_age` still dead-letters them
//! (the worker's sweep while open), so nothing waits forever.
//!
//! Invariant: no I/O; the clock is passed in. The state lives in memory, per process: after a
//! restart it is rebuilt by the first `failures` failed attempts (plus those already in flight
//! when it opens), and each replica has its own.

use std::time::Duration;

use crate::config::BreakerPolicy;

/// What the breaker shows: `fanout targets`, `/targets`, metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Holding the queue until the next probe.
    Open,
    /// Holding the queue while one probe attempt runs.
    Probing,
}

impl BreakerState {
    /// The metric's value: 0 closed, 1 probing, 2 open (higher is worse).
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Probing => 1,
            BreakerState::Open => 2,
        }
    }
}

/// What a worker may start now.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Closed: as many attempts as concurrency and rate allow.
    Pass,
    /// Open: one attempt, the probe with this id. Its outcome is reported with the id, or the
    /// probe is said not made (see [`Breaker::probe_not_made`]).
    Probe(u64),
    /// Open: nothing until then (or until woken: a reset).
    Hold(Duration),
}

/// A state change, to be logged and counted once.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    Opened { failures: u32 },
    Closed,
}

#[derive(Debug, Clone, Default)]
pub struct Breaker {
    phase: Phase,
    /// The last probe id handed out: an answer or a "not made" for an older probe (one from
    /// before a reset, say) must not end the one running now.
    probes: u64,
}

#[derive(Debug, Clone)]
enum Phase {
    /// `failures` in a row, the first of them at `since_ms`.
    Closed { failures: u32, since_ms: u64 },
    /// `probing`: the id of the probe running, if one is.
    Open { opened_ms: u64, probe_at_ms: u64, interval: Duration, probing: Option<u64>, failures: u32 },
}

impl Default for Phase {
    fn default() -> Phase {
        Phase::Closed { failures: 0, since_ms: 0 }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { probing: None, .. } => BreakerState::Open,
            Phase::Open { probing: Some(_), .. } => BreakerState::Probing,
        }
    }

    /// Since when it has been open (ms on the same clock), and when the next probe is due.
    pub fn open_since(&self) -> Option<(u64, u64)> {
        match self.phase {
            Phase::Open { opened_ms, probe_at_ms, .. } => Some((opened_ms, probe_at_ms)),
            Phase::Closed { .. } => None,
        }
    }

    /// Failed attempts in a row (while open: those that opened it and the probes since).
    pub fn failures(&self) -> u32 {
        match self.phase {
            Phase::Closed { failures, .. } | Phase::Open { failures, .. } => failures,
        }
    }

    /// Whether attempts may start now. A `Probe` answer marks the probe as running.
    pub fn gate(&mut self, policy: &BreakerPolicy, now_ms: u64) -> Gate {
        match &mut self.phase {
            _ if !policy.enabled => {
                self.phase = Phase::default();
                Gate::Pass
            }
            Phase::Closed { .. } => Gate::Pass,
            // At most one probe at a time; its outcome moves the breaker on.
            Phase::Open { probing: Some(_), interval, .. } => Gate::Hold(*interval),
            Phase::Open { probe_at_ms, probing, .. } if now_ms >= *probe_at_ms => {
                self.probes += 1;
                *probing = Some(self.probes);
                Gate::Probe(self.probes)
            }
            Phase::Open { probe_at_ms, .. } => Gate::Hold(Duration::from_millis(*probe_at_ms - now_ms)),
        }
    }

    /// Probe `id` was granted but not made (nothing was due, the job had been settled meanwhile,
    /// the store could not be read, the attempt was cut off): the next look may probe again.
    pub fn probe_not_made(&mut self, id: u64) {
        if let Phase::Open { probing, .. } = &mut self.phase {
            if *probing == Some(id) {
                *probing = None;
            }
        }
    }

    /// An attempt's answer from the target (`probe`: the id it was granted as, if it was one).
    /// Any success closes the breaker (a slow attempt that started before it opened counts: the
    /// target answered); failures open it past the policy's thresholds; a failed probe doubles
    /// the wait for the next one.
    pub fn record(&mut self, policy: &BreakerPolicy, ok: bool, probe: Option<u64>, now_ms: u64) -> Option<Transition> {
        if !policy.enabled {
            self.phase = Phase::default();
            return None;
        }
        match (&mut self.phase, ok) {
            (Phase::Closed { failures, .. }, true) => {
                *failures = 0;
                None
            }
            (Phase::Open { .. }, true) => {
                self.phase = Phase::default();
                Some(Transition::Closed)
            }
            (Phase::Closed { failures, since_ms }, false) => {
                if *failures == 0 {
                    *since_ms = now_ms;
                }
                *failures = failures.saturating_add(1);
                let failing_for = Duration::from_millis(now_ms.saturating_sub(*since_ms));
                if *failures < policy.failures && (*failures < 2 || failing_for < policy.failing_for) {
                    return None;
                }
                let failures = *failures;
                self.phase = Phase::Open {
                    opened_ms: now_ms,
                    probe_at_ms: now_ms.saturating_add(policy.probe_interval.as_millis() as u64),
                    interval: policy.probe_interval,
                    probing: None,
                    failures,
                };
                Some(Transition::Opened { failures })
            }
            (Phase::Open { probe_at_ms, interval, probing, failures, .. }, false)
                if probe.is_some() && *probing == probe =>
            {
                *interval = interval.saturating_mul(2).min(policy.max_probe_interval);
                *probe_at_ms = now_ms.saturating_add(interval.as_millis() as u64);
                *probing = None;
                *failures = failures.saturating_add(1);
                None
            }
            // An attempt that started before it opened (or an older probe): already counted for.
            (Phase::Open { .. }, false) => None,
        }
    }

    /// An operator closed it by hand; `true` if it was open.
    pub fn reset(&mut self) -> bool {
        let was_open = matches!(self.phase, Phase::Open { .. });
        self.phase = Phase::default();
        was_open
    }
}

#[cfg(test)]
mod tests;
