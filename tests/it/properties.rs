//! Property tests: the three parsers that take input from outside — the Stripe-Signature header,
//! the routing matcher over any JSON an event can carry, and the routing.yaml loader — never
//! panic, whatever they are given, and signing round-trips. CI runs the default 256 cases each;
//! a longer run is `PROPTEST_CASES=200000 cargo test -p fanout --test properties` (RELIABILITY.md).
//! (cargo-fuzz needs a nightly toolchain, which this project's machines do not have.)

use fanout::config::Config;
use fanout::route::KnownOwner;
use fanout::signature;
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, nested a few levels, with the keys routing looks at likely to appear.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_0-9.*]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("type".to_owned()),
        Just("data".to_owned()),
        Just("object".to_owned()),
        Just("metadata".to_owned()),
        Just("env".to_owned()),
        Just("customer".to_owned()),
        Just("account".to_owned()),
        Just("livemode".to_owned()),
        "[a-z0-9]{1,6}",
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn example_config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../routing.yaml")).unwrap()
}

fn parse(text: &str) -> Result<Config, fanout::config::ConfigError> {
    // Every ${VAR} resolves to its default or to a fixed value, so the text alone decides.
    Config::parse("prop.yaml", text, |name| (name == "SET").then(|| "value".to_owned()))
}

proptest! {
    #[test]
    fn the_signature_parser_never_panics(header in any::<String>(), body in any::<Vec<u8>>(), now in any::<i64>()) {
        let _ = signature::parse(&header);
        let _ = signature::verify(&header, &body, &["whsec_a", "whsec_b"], 300, now);
    }

    #[test]
    fn near_misses_of_a_real_header_are_refused_not_panicked_on(
        body in any::<Vec<u8>>(),
        t in 0i64..4_000_000_000,
        cut in 0usize..120,
        junk in "[ -~]{0,8}",
    ) {
        let good = signature::sign(b"whsec_a", t, &body);
        prop_assert!(signature::verify(&good, &body, &["whsec_a"], 300, t).is_ok());
        let mut mangled = good.clone();
        mangled.truncate(cut.min(good.len()));
        mangled.push_str(&junk);
        // A mangled header verifies only if it still carries the whole, right v1 and timestamp.
        if signature::verify(&mangled, &body, &["whsec_a"], 300, t).is_ok() {
            let v1 = good.split_once(",v1=").unwrap().1;
            prop_assert!(mangled.contains(v1) && mangled.starts_with(&format!("t={t},")), "{mangled:?} verified");
        }
        let mut other = body.clone();
        other.push(0);
        prop_assert!(signature::verify(&good, &other, &["whsec_a"], 300, t).is_err());
        prop_assert!(signature::verify(&good, &body, &["whsec_b"], 300, t).is_err());
    }

    #[test]
    fn routing_any_json_never_panics(event in json(), owned in any::<bool>()) {
        let config = parse(&example_config()).unwrap();
        let _ = config.router.route(&event);
        let _ = config.router.references(&event);
        let owner = |_: &str| {
            Ok::<_, ()>(owned.then(|| KnownOwner { destinations: vec!["alice".into()], via: "alice-dev".into() }))
        };
        let decision = config.router.route_with(&event, owner).unwrap();
        let _ = fanout::plan::plan(&config, &decision);
        let _ = fanout::plan::claims(&config, &decision, &event, "evt_prop", 1);
    }

    #[test]
    fn the_event_parser_never_panics_on_any_body(body in any::<Vec<u8>>(), live in any::<bool>()) {
        let _ = fanout::verify::parse(bytes::Bytes::from(body), live);
    }

    #[test]
    fn the_event_parser_takes_any_json_with_an_id_and_a_type(event in json(), id in "evt_[a-zA-Z0-9]{1,20}") {
        let mut event = if event.is_object() { event } else { serde_json::json!({ "data": event }) };
        event["id"] = Value::String(id.clone());
        event["type"] = Value::String("invoice.paid".into());
        event["livemode"] = Value::Bool(false);
        let parsed = fanout::verify::parse(bytes::Bytes::from(event.to_string()), false);
        prop_assert_eq!(parsed.map(|e| e.id).ok(), Some(id));
    }

    #[test]
    fn the_loader_never_panics_on_any_text(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn the_loader_never_panics_on_a_mangled_example(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, "[ -~\n]{0,6}"), 1..6),
    ) {
        let mut lines: Vec<String> = example_config().lines().map(str::to_owned).collect();
        for (at, op, text) in edits {
            let i = at.index(lines.len().max(1)).min(lines.len().saturating_sub(1));
            match op {
                0 => { lines.remove(i); }
                1 => { let l = lines[i].clone(); lines.insert(i, l); }
                2 => lines[i].push_str(&text),
                _ => {
                    let l = &mut lines[i];
                    let cut = l.len() / 2;
                    let cut = (0..=cut).rev().find(|c| l.is_char_boundary(*c)).unwrap_or(0);
                    l.replace_range(cut.., &text);
                }
            }
            if lines.is_empty() { break; }
        }
        let _ = parse(&lines.join("\n"));
    }
}
