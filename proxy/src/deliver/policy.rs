//! The retry policy, as pure functions: what to do with a job whose attempt failed (retry when,
//! fail over to whom, or give up and why), or that an open circuit breaker holds; and a target's
//! rate as a token bucket.
//!
//! Invariant: no I/O; the clock is passed in.

use std::collections::HashSet;
use std::time::Duration;

use backon::BackoffBuilder;

use fanout_store::{Delivery, Job, Sweep};

use crate::config::{Config, Rate, RetryPolicy};
use crate::route::DestinationKind;

/// What to do with a job whose attempt just failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Retry(Job),
    Dead(Job, String),
}

/// The retry policy as a pure function. A plain target backs off after each failure. A failover
/// group moves to its next member at once, and backs off only after a whole round failed; its
/// `max_attempts` counts rounds.
///
/// A target that answered 410 Gone says its endpoint no longer exists: the job is dead-lettered
/// at once with that reason rather than retried for days (a failover group moves on to its next
/// member, as for any failure). A failover walk skips members whose circuit breaker `is_open`.
pub fn next_step(
    mut job: Job,
    status: Option<u16>,
    error: String,
    config: &Config,
    now_ms: u64,
    is_open: &dyn Fn(&str) -> bool,
) -> Step {
    refresh_failover_members(&mut job, config);
    // The policy of the target that failed; for a failover group whose member was just removed,
    // its first member's.
    let policy_target = config.target(&job.target).or_else(|| match &job.delivery {
        Delivery::Failover { members, .. } => members.first().and_then(|m| config.target(m)),
        _ => None,
    });
    let Some(target) = policy_target else {
        let reason = format!("target {:?} is no longer configured; last error: {error}", job.target);
        return Step::Dead(job, reason);
    };
    let policy = &target.retry;
    job.last_error = Some(error.clone());
    if status == Some(410) && !matches!(job.delivery, Delivery::Failover { .. }) {
        let reason = format!("the target answered 410 Gone (its endpoint no longer exists): not retried; {error}");
        return Step::Dead(job, reason);
    }
    let age = Duration::from_millis(now_ms.saturating_sub(job.created_at_ms));
    let too_old = too_old(&job, policy.max_age, now_ms);
    let retries = match &mut job.delivery {
        Delivery::Failover { members, member, .. } => {
            // The next member of this round whose breaker is closed; past the last, a new round
            // from the first such member, after a backoff.
            let next = (*member + 1..members.len()).find(|&i| !is_open(&members[i]));
            *member = next.unwrap_or_else(|| first_closed(members, 0, is_open).unwrap_or(0));
            job.target = members[*member].clone();
            next.is_none().then(|| job.attempt / members.len() as u32)
        }
        _ => Some(job.attempt),
    };
    if too_old {
        let reason = format!(
            "gave up after {} attempts over {}: older than max_age; last error: {error}",
            job.attempt,
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        );
        return Step::Dead(job, reason);
    }
    match retries {
        None => job.due_at_ms = now_ms,
        Some(n) if policy.max_attempts.is_some_and(|max| n >= max) => {
            let reason = format!("gave up after {} attempts (max_attempts); last error: {error}", job.attempt);
            return Step::Dead(job, reason);
        }
        Some(n) => job.due_at_ms = now_ms + retry_delay(policy, n).as_millis() as u64,
    }
    Step::Retry(job)
}

/// A job older than its target's `max_age` is not delivered any more: offered to a listener,
/// held by an open breaker, or (in `next_step`) retried.
pub fn too_old(job: &Job, max_age: Duration, now_ms: u64) -> bool {
    now_ms.saturating_sub(job.created_at_ms) >= max_age.as_millis() as u64
}

/// The first of `members` from `from` on, wrapping round, whose circuit breaker is closed.
pub fn first_closed(members: &[String], from: usize, is_open: &dyn Fn(&str) -> bool) -> Option<usize> {
    (0..members.len()).map(|k| (from + k) % members.len()).find(|&i| !is_open(&members[i]))
}

/// What becomes of one job held by its target's open breaker, without an attempt (`open`: the
/// targets whose breaker is open): past `max_age` it is dead-lettered, so nothing waits forever; a
/// failover job moves on to the next member whose breaker is closed (`woken` gets that target).
pub fn held_move(config: &Config, job: &Job, open: &HashSet<String>, now_ms: u64, woken: &mut Vec<String>) -> Sweep {
    let Some(target) = config.target(&job.target) else { return Sweep::Keep };
    let max_age = target.retry.max_age;
    if too_old(job, max_age, now_ms) {
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
    // Due when it was: a job between two rounds keeps its backoff.
    let mut moved = job.clone();
    moved.target = members[next].clone();
    moved.delivery = Delivery::Failover { group: group.clone(), members: members.clone(), member: next };
    woken.push(moved.target.clone());
    let why =
        format!("{:?}'s circuit breaker is open: failed over to {:?} without an attempt", job.target, moved.target);
    Sweep::Reroute(Box::new(moved), why)
}

/// A failover job walks its group's members as configured now, not as they were at ingest: a
/// reload may have replaced a member. If the member it just tried is no longer in the group, the
/// walk goes on from the start.
fn refresh_failover_members(job: &mut Job, config: &Config) {
    let Delivery::Failover { group, members, member } = &mut job.delivery else { return };
    let Some(DestinationKind::Group { members: now, .. }) =
        config.router.destinations.iter().find(|d| &d.name == group).map(|d| &d.kind)
    else {
        return;
    };
    let now: Vec<String> = now.iter().map(|&i| config.targets[i].name.clone()).collect();
    if now == *members {
        return;
    }
    match now.iter().position(|m| *m == job.target) {
        Some(i) => *member = i,
        // Not a member any more: as if the last member had just failed, so the next is the first.
        None => *member = now.len() - 1,
    }
    *members = now;
}

/// Delay before retry number `n` (1 = first retry): exponential from `initial_delay`, capped at
/// `max_delay`, plus up to 100% jitter so a recovering target is not hit by every job at once.
/// With a `schedule`, its `n`th step (the last repeating) plus up to 10%: the steps stay what
/// the operator wrote, and jobs that failed together still spread out.
pub fn retry_delay(policy: &RetryPolicy, n: u32) -> Duration {
    if let Some(last) = policy.schedule.last() {
        let step = policy.schedule.get(n.saturating_sub(1) as usize).unwrap_or(last);
        return step.mul_f64(1.0 + fastrand::f64() / 10.0);
    }
    backon::ExponentialBuilder::default()
        .with_min_delay(policy.initial_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(n.saturating_sub(1).min(64) as usize)
        .unwrap_or(policy.max_delay)
}

/// The timer slack a bucket absorbs (see [`Bucket`]).
const SLACK: Duration = Duration::from_millis(10);

/// A target's rate limit as a token bucket, on the monotonic clock (ms, passed in): tokens come
/// at `count` per `per`, up to `burst`; each attempt started takes one. Waiting for a token is
/// not an attempt: the job stays queued, its attempts untouched.
///
/// The bucket holds what [`SLACK`] of the rate earns beyond the burst: a worker sleeping for its
/// next token wakes a millisecond or more late, and a bucket of exactly one token would lose
/// what came meanwhile (1000/s with a burst of 1 delivered 574/s; BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    pub fn new(rate: Rate, now_ms: u64) -> Bucket {
        Bucket { rate, tokens: f64::from(rate.burst), at_ms: now_ms }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Tokens earned per millisecond.
    fn per_ms(&self) -> f64 {
        f64::from(self.rate.count) / self.rate.per.as_millis().max(1) as f64
    }

    /// The most tokens it holds: the burst and what [`SLACK`] earns (whole tokens only start
    /// attempts, so a slow rate still starts `burst` at most).
    fn cap(&self) -> f64 {
        f64::from(self.rate.burst) + SLACK.as_millis() as f64 * self.per_ms()
    }

    fn refill(&mut self, now_ms: u64) {
        let earned = now_ms.saturating_sub(self.at_ms) as f64 * self.per_ms();
        self.tokens = (self.tokens + earned).min(self.cap());
        self.at_ms = now_ms.max(self.at_ms);
    }

    /// How many attempts may start now.
    pub fn available(&mut self, now_ms: u64) -> usize {
        self.refill(now_ms);
        self.tokens.floor() as usize
    }

    pub fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// How long until one more attempt may start.
    pub fn wait(&mut self, now_ms: u64) -> Duration {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_millis(((1.0 - self.tokens) / self.per_ms()).ceil() as u64)
    }
}

#[cfg(test)]
mod tests;
