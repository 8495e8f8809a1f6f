use super::*;

fn config() -> Config {
    Config::parse(
        "t.yaml",
        "sources:\n  - {name: s, path: /in, secrets: [x]}\nretry: {max_age: 1h}\ntargets:\n  - {name: a, url: \"http://h/a\", secret: x}\n  - {name: b, url: \"http://h/b\", secret: x}\n  - {name: c, url: \"http://h/c\", secret: x}\ngroups:\n  - {name: g, mode: failover, members: [a, b, c]}\n",
        |_| None,
    )
    .unwrap()
}

fn job(target: &str, delivery: Delivery, created_at_ms: u64) -> Job {
    Job {
        id: 1,
        event_id: "evt_1".into(),
        target: target.into(),
        delivery,
        rule: "r".into(),
        attempt: 0,
        created_at_ms,
        due_at_ms: created_at_ms,
        last_error: Some("connection refused".into()),
        siblings: Vec::new(),
        ingest: 0,
        replay: false,
        received_at_ms: created_at_ms,
        lease: 0,
    }
}

fn open(names: &[&str]) -> HashSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

const HOUR_MS: u64 = 3_600_000;

#[test]
fn a_held_job_past_max_age_is_dead_lettered_and_a_younger_one_kept() {
    let (cfg, mut woken) = (config(), Vec::new());
    let now = 10 * HOUR_MS;
    match held_move(&cfg, &job("a", Delivery::Target, now - HOUR_MS), &open(&["a"]), now, &mut woken) {
        Sweep::DeadLetter(why) => {
            assert!(
                why.contains("open circuit breaker past max_age (1h)") && why.contains("connection refused"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        held_move(&cfg, &job("a", Delivery::Target, now - HOUR_MS + 1), &open(&["a"]), now, &mut woken),
        Sweep::Keep
    ));
    assert!(woken.is_empty());
}

#[test]
fn a_held_failover_job_moves_to_the_next_member_whose_breaker_is_closed() {
    let (cfg, mut woken) = (config(), Vec::new());
    let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let failover = |member| Delivery::Failover { group: "g".into(), members: members.clone(), member };
    let now = 10 * HOUR_MS;
    match held_move(&cfg, &job("a", failover(0), now - 5), &open(&["a", "b"]), now, &mut woken) {
        Sweep::Reroute(moved, why) => {
            assert_eq!(
                (moved.target.as_str(), moved.delivery, moved.due_at_ms, moved.attempt),
                ("c", failover(2), now, 0)
            );
            assert!(why.contains("failed over to \"c\" without an attempt"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(woken, ["c"]);
    // The last member wraps round to the first; every member open: held where it is.
    assert!(
        matches!(held_move(&cfg, &job("c", failover(2), now), &open(&["c"]), now, &mut woken), Sweep::Reroute(m, _) if m.target == "a")
    );
    assert!(matches!(
        held_move(&cfg, &job("a", failover(0), now), &open(&["a", "b", "c"]), now, &mut woken),
        Sweep::Keep
    ));
}
