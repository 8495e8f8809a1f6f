use std::collections::HashSet;

use super::*;
use crate::config::{Config, Target};

fn config() -> Config {
    Config::parse(
        "t.yaml",
        "sources:\n  - {name: s, path: /in, secrets: [x]}\nretry: {initial_delay: 1s, max_delay: 8s, max_age: 1h}\ntargets:\n  - {name: a, url: \"http://h/a\", secret: x, retry: {max_attempts: 3}}\n  - {name: b, url: \"http://h/b\", secret: x}\n",
        |_| None,
    )
    .unwrap()
}

/// No target's breaker is open.
const NONE_OPEN: fn(&str) -> bool = |_| false;

fn job(target: &str, delivery: Delivery, attempt: u32) -> Job {
    Job {
        id: 1,
        event_id: "evt_1".into(),
        target: target.into(),
        delivery,
        rule: "r".into(),
        attempt,
        created_at_ms: 1_000_000,
        due_at_ms: 0,
        last_error: None,
        siblings: Vec::new(),
        ingest: 0,
        replay: false,
        received_at_ms: 1_000_000,
        lease: 0,
    }
}

#[test]
fn delays_grow_exponentially_with_jitter_and_are_capped() {
    let policy = &config().targets[0].retry;
    for n in 1..=6 {
        let base = Duration::from_secs(1 << (n - 1).min(3));
        for _ in 0..20 {
            let d = retry_delay(policy, n);
            assert!(d >= base && d <= base * 2, "retry {n}: {d:?} outside {base:?}..{:?}", base * 2);
        }
    }
}

#[test]
fn plain_target_retries_then_dies_at_max_attempts() {
    let cfg = config();
    let now = 1_000_500;
    match next_step(job("a", Delivery::Target, 2), None, "HTTP 500".into(), &cfg, now, &NONE_OPEN) {
        Step::Retry(j) => {
            assert!(j.due_at_ms >= now + 2000 && j.due_at_ms <= now + 4000, "{}", j.due_at_ms);
            assert_eq!(j.last_error.as_deref(), Some("HTTP 500"));
        }
        other => panic!("{other:?}"),
    }
    match next_step(job("a", Delivery::Target, 3), None, "HTTP 500".into(), &cfg, now, &NONE_OPEN) {
        Step::Dead(_, reason) => {
            assert!(reason.contains("after 3 attempts") && reason.contains("HTTP 500"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn max_age_kills_even_with_attempts_left() {
    let cfg = config();
    let an_hour_later = 1_000_000 + 3_600_000;
    assert!(matches!(
        next_step(job("b", Delivery::Target, 1), None, "e".into(), &cfg, an_hour_later, &NONE_OPEN),
        Step::Dead(..)
    ));
}

#[test]
fn failover_moves_to_the_next_member_at_once_then_backs_off_from_the_first() {
    let cfg = config();
    let members = vec!["b".to_owned(), "a".to_owned()];
    let failover = |member| Delivery::Failover { group: "g".into(), members: members.clone(), member };
    match next_step(job("b", failover(0), 1), None, "down".into(), &cfg, 1_000_100, &NONE_OPEN) {
        Step::Retry(j) => assert_eq!((j.target.as_str(), j.due_at_ms, j.delivery), ("a", 1_000_100, failover(1))),
        other => panic!("{other:?}"),
    }
    match next_step(job("a", failover(1), 2), None, "down".into(), &cfg, 1_000_100, &NONE_OPEN) {
        Step::Retry(j) => {
            assert_eq!((j.target.as_str(), j.delivery), ("b", failover(0)));
            assert!(j.due_at_ms >= 1_001_100, "a whole round failed: back off");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failover_skips_members_whose_breaker_is_open() {
    let mut cfg = config();
    cfg.targets.push(Target { name: "c".into(), ..cfg.targets[1].clone() });
    let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let failover = |member| Delivery::Failover { group: "g".into(), members: members.clone(), member };
    let b_open = |t: &str| t == "b";
    match next_step(job("a", failover(0), 1), None, "down".into(), &cfg, 1_000_100, &b_open) {
        Step::Retry(j) => assert_eq!((j.target.as_str(), j.due_at_ms, j.delivery), ("c", 1_000_100, failover(2))),
        other => panic!("{other:?}"),
    }
    // The round is over; the next one starts at the first member whose breaker is closed.
    let a_open = |t: &str| t == "a";
    match next_step(job("c", failover(2), 2), None, "down".into(), &cfg, 1_000_100, &a_open) {
        Step::Retry(j) => {
            assert_eq!((j.target.as_str(), j.delivery), ("b", failover(1)));
            assert!(j.due_at_ms > 1_000_100, "a whole round failed: back off");
        }
        other => panic!("{other:?}"),
    }
    // Every breaker open: the walk goes on as configured (and is held where it lands).
    match next_step(job("a", failover(0), 1), None, "down".into(), &cfg, 1_000_100, &|_| true) {
        Step::Retry(j) => assert_eq!(j.target, "a"),
        other => panic!("{other:?}"),
    }
    assert_eq!(first_closed(&members, 1, &b_open), Some(2));
    assert_eq!(first_closed(&members, 2, &|t| t != "a"), Some(0));
    assert_eq!(first_closed(&members, 0, &|_| true), None);
}

#[test]
fn a_job_for_a_target_no_longer_configured_is_dead_lettered() {
    match next_step(job("gone", Delivery::Target, 1), None, "x".into(), &config(), 1_000_001, &NONE_OPEN) {
        Step::Dead(_, reason) => assert!(reason.contains("no longer configured"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failover_job_follows_the_group_as_reloaded() {
    let cfg = Config::parse(
        "t.yaml",
        "sources:\n  - {name: s, path: /in, secrets: [x]}\ntargets:\n  - {name: a, url: \"http://h/a\", secret: x}\n  - {name: c, url: \"http://h/c\", secret: x}\ngroups:\n  - {name: g, mode: failover, members: [a, c]}\n",
        |_| None,
    )
    .unwrap();
    // Queued when the group was [a, b]; b has since been replaced by c.
    let old = |member| Delivery::Failover { group: "g".into(), members: vec!["a".into(), "b".into()], member };
    match next_step(job("a", old(0), 1), None, "HTTP 500".into(), &cfg, 1_000_500, &NONE_OPEN) {
        Step::Retry(j) => {
            assert_eq!((j.target.as_str(), j.due_at_ms), ("c", 1_000_500), "on to the new member at once")
        }
        other => panic!("{other:?}"),
    }
    // Failing on b, which left the group: the walk goes on from the start.
    match next_step(job("b", old(1), 2), None, "HTTP 500".into(), &cfg, 1_000_500, &NONE_OPEN) {
        Step::Retry(j) => assert_eq!(j.target, "a"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_schedule_is_followed_step_by_step_with_a_little_jitter_and_its_last_step_repeats() {
    let cfg = Config::parse(
        "t.yaml",
        "sources:\n  - {name: s, path: /in, secrets: [x]}\nretry: {schedule: [5s, 5m, 30m], max_age: 3d}\ntargets:\n  - {name: a, url: \"http://h/a\", secret: x}\n  - {name: b, url: \"http://h/b\", secret: x, retry: {initial_delay: 1s, max_delay: 2s}}\n",
        |_| None,
    )
    .unwrap();
    let policy = &cfg.targets[0].retry;
    let steps = [5, 300, 1800, 1800, 1800].map(Duration::from_secs);
    for (n, step) in (1..).zip(steps) {
        for _ in 0..20 {
            let d = retry_delay(policy, n);
            assert!(d >= step && d <= step.mul_f64(1.1), "retry {n}: {d:?} is not {step:?} + up to 10%");
        }
    }
    assert_eq!(policy.max_delay, Duration::from_secs(1800), "the longest step bounds the retention check");
    // A target's own exponential backoff replaces the schedule it would inherit.
    let own = &cfg.targets[1].retry;
    assert!(own.schedule.is_empty());
    assert!(retry_delay(own, 1) <= Duration::from_secs(2));
}

#[test]
fn a_410_gone_is_dead_lettered_at_once_but_a_failover_group_moves_on() {
    let cfg = config();
    match next_step(job("b", Delivery::Target, 1), Some(410), "HTTP 410".into(), &cfg, 1_000_100, &NONE_OPEN) {
        Step::Dead(_, reason) => assert!(reason.contains("410 Gone"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match next_step(job("b", Delivery::Target, 1), Some(404), "HTTP 404".into(), &cfg, 1_000_100, &NONE_OPEN) {
        Step::Retry(_) => {}
        other => panic!("a 404 is retried: {other:?}"),
    }
    let failover = Delivery::Failover { group: "g".into(), members: vec!["a".into(), "b".into()], member: 0 };
    match next_step(job("a", failover, 1), Some(410), "HTTP 410".into(), &cfg, 1_000_100, &NONE_OPEN) {
        Step::Retry(j) => assert_eq!(j.target, "b"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bucket_spaces_attempts_at_its_rate_after_its_burst() {
    use crate::config::Rate;
    let rate = Rate { count: 10, per: Duration::from_secs(1), burst: 3 };
    let mut b = Bucket::new(rate, 1_000);
    assert_eq!(b.available(1_000), 3, "a burst at first");
    b.take(3);
    assert_eq!(b.available(1_000), 0);
    assert_eq!(b.wait(1_000), Duration::from_millis(100), "one token every 100 ms");
    assert_eq!(b.available(1_050), 0);
    assert_eq!(b.available(1_100), 1);
    b.take(1);
    assert_eq!(b.available(60_000), 3, "never more than the burst, however long the pause");
    // A fast rate also holds what 10 ms earn, so a worker that wakes late loses nothing.
    let fast = Rate { count: 1000, per: Duration::from_secs(1), burst: 1 };
    let mut b = Bucket::new(fast, 0);
    b.take(1);
    assert_eq!(b.available(60_000), 11);
    b.take(11);
    assert_eq!((b.available(60_001), b.available(60_003)), (1, 3), "still one per ms on average");
}

#[test]
fn a_worker_that_always_wakes_late_still_gets_the_rate() {
    use crate::config::Rate;
    for count in [20, 100, 150, 1000] {
        let rate = Rate { count, per: Duration::from_secs(1), burst: 1 };
        let (mut b, mut now, mut started) = (Bucket::new(rate, 0), 0u64, 0usize);
        while now < 10_000 {
            let n = b.available(now);
            b.take(n);
            started += n;
            // Every sleep for the next token ends 1 to 2 ms late.
            now += b.wait(now).as_millis() as u64 + 1 + now % 2;
        }
        let per_s = started as f64 / 10.0;
        assert!((per_s / f64::from(count) - 1.0).abs() < 0.05, "{count}/s: {per_s}/s");
    }
}

fn held_config() -> Config {
    Config::parse(
        "t.yaml",
        "sources:\n  - {name: s, path: /in, secrets: [x]}\nretry: {max_age: 1h}\ntargets:\n  - {name: a, url: \"http://h/a\", secret: x}\n  - {name: b, url: \"http://h/b\", secret: x}\n  - {name: c, url: \"http://h/c\", secret: x}\ngroups:\n  - {name: g, mode: failover, members: [a, b, c]}\n",
        |_| None,
    )
    .unwrap()
}

fn held_job(target: &str, delivery: Delivery, created_at_ms: u64) -> Job {
    let last_error = Some("connection refused".into());
    Job {
        created_at_ms,
        due_at_ms: created_at_ms,
        received_at_ms: created_at_ms,
        last_error,
        ..job(target, delivery, 0)
    }
}

fn open(names: &[&str]) -> HashSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

const HOUR_MS: u64 = 3_600_000;

#[test]
fn a_held_job_past_max_age_is_dead_lettered_and_a_younger_one_kept() {
    let (cfg, mut woken) = (held_config(), Vec::new());
    let now = 10 * HOUR_MS;
    match held_move(&cfg, &held_job("a", Delivery::Target, now - HOUR_MS), &open(&["a"]), now, &mut woken) {
        Sweep::DeadLetter(why) => {
            assert!(
                why.contains("open circuit breaker past max_age (1h)") && why.contains("connection refused"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        held_move(&cfg, &held_job("a", Delivery::Target, now - HOUR_MS + 1), &open(&["a"]), now, &mut woken),
        Sweep::Keep
    ));
    assert!(woken.is_empty());
}

#[test]
fn a_held_failover_job_moves_to_the_next_member_whose_breaker_is_closed() {
    let (cfg, mut woken) = (held_config(), Vec::new());
    let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let failover = |member| Delivery::Failover { group: "g".into(), members: members.clone(), member };
    let now = 10 * HOUR_MS;
    match held_move(&cfg, &held_job("a", failover(0), now - 5), &open(&["a", "b"]), now, &mut woken) {
        Sweep::Reroute(moved, why) => {
            assert_eq!(
                (moved.target.as_str(), moved.delivery, moved.due_at_ms, moved.attempt),
                ("c", failover(2), now - 5, 0),
                "due when it was, no attempt spent"
            );
            assert!(why.contains("failed over to \"c\" without an attempt"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(woken, ["c"]);
    // The last member wraps round to the first; every member open: held where it is.
    assert!(
        matches!(held_move(&cfg, &held_job("c", failover(2), now), &open(&["c"]), now, &mut woken), Sweep::Reroute(m, _) if m.target == "a")
    );
    assert!(matches!(
        held_move(&cfg, &held_job("a", failover(0), now), &open(&["a", "b", "c"]), now, &mut woken),
        Sweep::Keep
    ));
}
