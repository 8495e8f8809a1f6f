//! fanout's two clocks. Signatures need the wall clock: Stripe's `t` and a target's tolerance are
//! wall-clock seconds. Scheduling needs a clock that does not jump: a retry due in 5 s must happen
//! in 5 s even if NTP or an operator steps the wall clock back an hour meanwhile. So due times,
//! leases, presence and arrival times read [`unix_now_ms`] — the wall clock as it was when the
//! process started, advanced by the monotonic clock — and signing reads [`unix_now_secs`].
//!
//! A wall-clock step while fanout runs shows only in the signature timestamps (as it must); one
//! while it is stopped shifts the due times it stored, once, at the next start.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
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

/// Milliseconds since the epoch that never jump: the wall clock at the first call, advanced by
/// the monotonic clock since.
pub fn unix_now_ms() -> u64 {
    static START: OnceLock<(u64, Instant)> = OnceLock::new();
    let (wall, at) = START.get_or_init(|| (wall_ms(), Instant::now()));
    wall.saturating_add(at.elapsed().as_millis() as u64)
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
    fn a_wall_clock_step_moves_signatures_but_not_scheduling() {
        let (ms, secs) = (unix_now_ms(), unix_now_secs());
        step_wall_clock(-3_600_000);
        let (ms2, secs2) = (unix_now_ms(), unix_now_secs());
        step_wall_clock(3_600_000);
        assert!(ms2 >= ms && ms2 - ms < 1_000, "scheduling went on: {ms} -> {ms2}");
        assert!((secs - secs2 - 3600).abs() <= 1, "signatures follow the wall clock: {secs} -> {secs2}");
    }
}
