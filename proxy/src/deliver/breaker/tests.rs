use std::time::Duration;

use super::*;

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        enabled: true,
        failures: 3,
        failing_for: Duration::from_secs(60),
        probe_interval: Duration::from_secs(5),
        max_probe_interval: Duration::from_secs(20),
    }
}

fn fail(b: &mut Breaker, n: u32, at: u64) -> Option<Transition> {
    (0..n).map(|_| b.record(&policy(), false, None, at)).last().flatten()
}

#[test]
fn it_opens_after_the_failures_in_a_row_and_a_success_in_between_starts_over() {
    let mut b = Breaker::default();
    assert_eq!(fail(&mut b, 2, 0), None);
    assert_eq!(b.record(&policy(), true, None, 1), None);
    assert_eq!(fail(&mut b, 2, 2), None);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.gate(&policy(), 2), Gate::Pass);
    assert_eq!(fail(&mut b, 1, 3), Some(Transition::Opened { failures: 3 }));
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.open_since(), Some((3, 5_003)));
}

#[test]
fn it_opens_when_every_attempt_failed_for_the_period() {
    let mut b = Breaker::default();
    assert_eq!(fail(&mut b, 1, 1_000), None);
    assert_eq!(fail(&mut b, 1, 60_999), None, "59.999 s of failures");
    assert_eq!(fail(&mut b, 1, 0), Some(Transition::Opened { failures: 3 }), "the count still applies");
    let mut quiet = Breaker::default();
    fail(&mut quiet, 1, 1_000);
    assert_eq!(fail(&mut quiet, 1, 61_000), Some(Transition::Opened { failures: 2 }));
}

#[test]
fn while_open_it_holds_then_grants_one_probe_at_a_time() {
    let mut b = Breaker::default();
    fail(&mut b, 3, 0);
    assert_eq!(b.gate(&policy(), 1_000), Gate::Hold(Duration::from_millis(4_000)));
    assert_eq!(b.gate(&policy(), 5_000), Gate::Probe(1));
    assert_eq!(b.state(), BreakerState::Probing);
    assert!(matches!(b.gate(&policy(), 5_001), Gate::Hold(_)), "one probe at a time");
    // A failed attempt that started before it opened does not end the probe, nor does an older
    // probe's word.
    assert_eq!(b.record(&policy(), false, None, 5_002), None);
    b.probe_not_made(0);
    assert_eq!(b.record(&policy(), false, Some(0), 5_002), None);
    assert_eq!(b.state(), BreakerState::Probing);
    b.probe_not_made(1);
    assert_eq!(b.gate(&policy(), 5_003), Gate::Probe(2), "a probe not made is granted again");
}

#[test]
fn failed_probes_double_the_interval_up_to_the_cap() {
    let mut b = Breaker::default();
    fail(&mut b, 3, 0);
    let mut at = 0;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let Gate::Hold(wait) = b.gate(&policy(), at) else { panic!("held") };
        at += wait.as_millis() as u64;
        waits.push(wait.as_secs());
        let Gate::Probe(id) = b.gate(&policy(), at) else { panic!("a probe") };
        assert_eq!(b.record(&policy(), false, Some(id), at), None, "still open: no new transition");
    }
    assert_eq!(waits, [5, 10, 20, 20]);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.failures(), 7);
}

#[test]
fn a_success_closes_it_and_a_reset_does_too() {
    let mut b = Breaker::default();
    fail(&mut b, 3, 0);
    assert_eq!(b.gate(&policy(), 5_000), Gate::Probe(1));
    assert_eq!(b.record(&policy(), true, Some(1), 5_100), Some(Transition::Closed));
    assert_eq!(b.gate(&policy(), 5_100), Gate::Pass);
    assert_eq!(b.failures(), 0);
    fail(&mut b, 3, 6_000);
    assert!(b.reset());
    assert!(!b.reset(), "already closed");
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn disabled_it_never_opens() {
    let off = BreakerPolicy { enabled: false, ..policy() };
    let mut b = Breaker::default();
    for at in 0..100 {
        assert_eq!(b.record(&off, false, None, at * 10_000), None);
    }
    assert_eq!(b.gate(&off, 1_000_000), Gate::Pass);
    // Turned off by a reload while open: it lets everything through again.
    let mut open = Breaker::default();
    fail(&mut open, 3, 0);
    assert_eq!(open.gate(&off, 1), Gate::Pass);
    assert_eq!(open.state(), BreakerState::Closed);
}
