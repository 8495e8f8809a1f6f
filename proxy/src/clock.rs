//! fanout's two clocks. Signatures need the wall clock: Stripe's `t` and a target's tolerance are
//! wall-clock seconds ([`unix_now_secs`]). Scheduling needs a clock that never goes back: a retry
//! due in 5 s must happen in 5 s even if NTP or an operator steps the wall clock back an hour
//! meanwhile. So due times, leases, presence and arrival times read [`unix_now_ms`], which follows
//! the wall clock while it moves forward (a machine that booted with a wrong clock is corrected at
//! the first NTP step, so stored times stay true) and, when the wall clock steps back, carries on
//! from where it was at the monotonic clock's pace instead.
//!
//! After a backward step, then, fanout's times run ahead of the wall clock by the step (events are
//! kept a little longer, nothing is due late). A forward step makes waiting retries due sooner.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Added to the system's wall clock: [`step_wall_clock`] simulates a clock step in tests.
static STEP_MS: AtomicI64 = AtomicI64::new(0);

fn wall_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now.saturating_add(STEP_MS.load(Ordering::Relaxed)).max(0) as u64
}

/// Wall-clock seconds, for `Stripe-Signature` timestamps and their tolerance.
pub fn unix_now_secs() -> i64 {
    (wall_ms() / 1000) as i64
}

/// Milliseconds since the epoch that never go back: the later of the wall clock and the last
/// reading advanced by the monotonic clock.
pub fn unix_now_ms() -> u64 {
    static LAST: OnceLock<Mutex<(u64, Instant)>> = OnceLock::new();
    let last = LAST.get_or_init(|| Mutex::new((wall_ms(), Instant::now())));
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let carried = last.0.saturating_add(last.1.elapsed().as_millis() as u64);
    let now = wall_ms().max(carried);
    *last = (now, Instant::now());
    now
}

/// Milliseconds of the monotonic clock since this process first asked: for deadlines that live
/// only in this process (leases), which must not all expire at once when NTP steps the wall
/// clock forward.
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Steps this process's view of the wall clock by `by_ms` (negative: back), as NTP or an operator
/// might step the system clock. For tests of what a step does; nothing else calls it.
pub fn step_wall_clock(by_ms: i64) {
    STEP_MS.fetch_add(by_ms, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduling_never_goes_back_and_follows_the_wall_clock_forward() {
        let (ms, secs) = (unix_now_ms(), unix_now_secs());
        step_wall_clock(-3_600_000);
        let (back, secs_back) = (unix_now_ms(), unix_now_secs());
        step_wall_clock(7_200_000);
        let ahead = unix_now_ms();
        step_wall_clock(-3_600_000);
        assert!(back >= ms && back - ms < 1_000, "a step back does not move scheduling back: {ms} -> {back}");
        assert!((secs - secs_back - 3600).abs() <= 1, "signatures follow the wall clock: {secs} -> {secs_back}");
        assert!(ahead >= ms + 3_599_000, "a step forward is followed: {ms} -> {ahead}");
    }
}
