use super::*;

const BASE: &str = "sources:\n  - {name: s, path: /in, secrets: [whsec_a]}\n";

fn parse(extra: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let env = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Config::parse_checking("r.yaml", &format!("{BASE}{extra}"), env, |p| p.starts_with("/exists"))
}

#[test]
fn expansion_uses_the_environment_then_the_default() {
    let cfg = parse(
        "targets:\n  - {name: t, url: \"http://${HOST:-localhost}:${PORT}/x\", secret: \"${S:-whsec_d}\"}\n",
        &[("PORT", "4000")],
    )
    .unwrap();
    assert_eq!(cfg.targets[0].endpoint.to_string(), "http://localhost:4000/x");
    assert_eq!(cfg.targets[0].secret.expose(), "whsec_d");
}

#[test]
fn secrets_never_show_in_debug_or_display() {
    let cfg = parse("targets:\n  - {name: t, url: \"http://h/x\", secret: whsec_topsecret}\n", &[]).unwrap();
    assert!(!format!("{cfg:?}").contains("topsecret"));
    assert_eq!(cfg.targets[0].secret.to_string(), "whsec_…(redacted)");
    // Only a short key-type prefix is ever shown, never a secret without one.
    for plain in ["averylongadmintoken0123", "abc_", "notaprefixatall_secretpart"] {
        assert_eq!(Secret::new(plain).to_string(), "…(redacted)", "{plain}");
    }
}

#[test]
fn the_admin_api_needs_a_token_off_loopback() {
    let cfg = parse("admin: {listen: \"0.0.0.0:0\", token: \"${T}\"}\n", &[("T", "0123456789abcdef0")]).unwrap();
    assert_eq!(cfg.admin.token.as_ref().map(Secret::expose), Some("0123456789abcdef0"));
    let cfg = parse("", &[]).unwrap();
    assert_eq!((cfg.admin.listen.to_string(), cfg.admin.token.is_none()), ("127.0.0.1:8081".to_owned(), true));
    assert_eq!(cfg.retention, Duration::from_secs(30 * 86400));
    assert_eq!(parse("retention: 40d\n", &[]).unwrap().retention, Duration::from_secs(40 * 86400));
}

#[test]
fn retry_settings_inherit_from_the_global_block() {
    let cfg = parse(
        "retry: {max_attempts: 4, initial_delay: 1s}\ntargets:\n  - {name: a, url: \"http://h/a\", secret: x}\n  - {name: b, url: \"http://h/b\", secret: x, retry: {max_attempts: 9, max_age: 1h}}\n",
        &[],
    )
    .unwrap();
    let (a, b) = (&cfg.targets[0].retry, &cfg.targets[1].retry);
    assert_eq!(
        (a.max_attempts, a.initial_delay, a.max_age),
        (Some(4), Duration::from_secs(1), Duration::from_secs(3 * 86400))
    );
    assert_eq!(
        (b.max_attempts, b.initial_delay, b.max_age),
        (Some(9), Duration::from_secs(1), Duration::from_secs(3600))
    );
}

#[test]
fn invalid_configs_are_refused_with_the_reason() {
    let t = "targets:\n  - {name: a, url: \"http://h/a\", secret: x}\n";
    let cases = [
        (format!("{t}groups:\n  - {{name: g, mode: any, members: [a, nope]}}\n"), "member \"nope\" is not a target"),
        (format!("{t}groups:\n  - {{name: a, mode: any, members: [a]}}\n"), "duplicate name \"a\""),
        (format!("{t}groups:\n  - {{name: g, mode: sometimes, members: [a]}}\n"), "unknown variant `sometimes`"),
        (format!("{t}routes:\n  - {{name: r, to: [a], drop: true}}\n"), "both `to` and `drop: true`"),
        (format!("{t}routes:\n  - {{name: r}}\n"), "needs `to: [destinations]` or `drop: true`"),
        (format!("{t}routes:\n  - {{name: r, when: {{fields: [{{path: a.b}}]}}, to: [a]}}\n"), "needs one of equals"),
        (
            format!("{t}routes:\n  - {{name: r, when: {{fields: [{{path: a..b, exists: true}}]}}, to: [a]}}\n"),
            "empty segment",
        ),
        (format!("{t}dedup_retention: 1d\n"), "retention must be at least"),
        ("targets:\n  - {name: drop, url: \"http://h/a\", secret: x}\n".to_owned(), "reserved"),
        ("targets:\n  - {name: a, url: \"http://h/a\", secret: \"${X\"}\n".to_owned(), "unclosed"),
        ("listen: nowhere\n".to_owned(), "not an address"),
        ("admin: {listen: \"0.0.0.0:8081\"}\n".to_owned(), "not loopback, and there is no admin.token"),
        ("admin: {token: short}\n".to_owned(), "at least 16 characters"),
        ("tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n".to_owned(), "is not a readable file"),
        (format!("{t}shutdown_grace: soon\n"), "is not a duration"),
    ];
    for (yaml, want) in cases {
        let err = parse(&yaml, &[]).err().unwrap_or_else(|| panic!("accepted:\n{yaml}")).to_string();
        assert!(err.contains(want), "expected {want:?} in {err}");
        assert!(err.starts_with("r.yaml"), "{err}");
    }
    let err = Config::parse("r.yaml", "listen: 1.2.3.4:5\n", |_| None).err().unwrap().to_string();
    assert!(err.contains("missing field `sources`"), "{err}");
}

#[test]
fn a_variable_inside_a_match_value_is_expanded() {
    let cfg = parse(
        "targets:\n  - {name: a, url: \"http://h/a\", secret: x}\nroutes:\n  - {name: me, when: {fields: [{path: data.object.metadata.dev, equals: \"${ME}\"}]}, to: [a]}\n",
        &[("ME", "alice")],
    )
    .unwrap();
    let ev = serde_json::json!({"data": {"object": {"metadata": {"dev": "alice"}}}});
    assert_eq!(cfg.router.route(&ev), crate::route::Decision::Deliver(vec![(0, "me")]));
}

#[test]
fn inboxes_offline_fallbacks_and_affinity_are_checked() {
    let inbox = "  - {name: alice, kind: inbox, token: alice-token-0123456789, secret: whsec_alice}\n";
    let base = format!("targets:\n  - {{name: a, url: \"http://h/a\", secret: x}}\n{inbox}");
    let cfg = parse(
        &format!(
            "{base}routes:\n  - {{name: mine, when: {{type: x}}, to: [alice], offline: {{after: 5m, fallback: a}}}}\naffinity: {{fields: [data.object.customer]}}\n"
        ),
        &[],
    )
    .unwrap();
    assert!(cfg.targets[1].is_inbox() && !cfg.targets[0].is_inbox());
    assert_eq!(cfg.inbox_for_token("alice-token-0123456789").map(|t| t.name.as_str()), Some("alice"));
    assert!(cfg.inbox_for_token("alice-token-012345678").is_none());
    let offline = cfg.router.rules[0].offline.as_ref().unwrap();
    assert_eq!((offline.after, offline.fallback.clone()), (Duration::from_secs(300), vec![0]));
    assert_eq!(cfg.router.affinity, Some(vec![vec!["data".to_owned(), "object".to_owned(), "customer".to_owned()]]));
    assert_eq!(parse("affinity: {enabled: false}\n", &[]).unwrap().router.affinity, None);
    let own =
        "  - {name: dan, kind: inbox, token: dan-token-0123456789, secret: x, offline: {after: 2m, fallback: a}}\n";
    let cfg = parse(&format!("{base}{own}"), &[]).unwrap();
    assert_eq!(
        cfg.targets[2].offline.as_ref().map(|o| (o.after, o.fallback_name.as_str())),
        Some((Duration::from_secs(120), "a"))
    );
    assert_eq!(parse("", &[]).unwrap().router.affinity.map(|a| a.len()), Some(DEFAULT_AFFINITY_FIELDS.len()));

    let cases = [
        (format!("{base}groups:\n  - {{name: g, mode: any, members: [a, alice]}}\n"), "is an inbox"),
        (format!("{base}routes:\n  - {{name: r, to: [a], offline: {{after: 1m, fallback: a}}}}\n"), "`to` lists none"),
        (
            format!("{base}routes:\n  - {{name: r, to: [alice], offline: {{after: 1m, fallback: alice}}}}\n"),
            "not an inbox",
        ),
        (
            format!("{base}routes:\n  - {{name: r, to: [alice], offline: {{after: never, fallback: a}}}}\n"),
            "not a duration",
        ),
        ("targets:\n  - {name: b, kind: inbox, secret: x}\n".to_owned(), "needs a `token`"),
        ("targets:\n  - {name: b, kind: inbox, token: short, secret: x}\n".to_owned(), "at least 16"),
        (
            "targets:\n  - {name: b, kind: inbox, url: \"http://h\", token: tttttttttttttttttt, secret: x}\n"
                .to_owned(),
            "has no url",
        ),
        ("targets:\n  - {name: b, secret: x}\n".to_owned(), "needs a `url`"),
        ("affinity: {fields: [\"a..b\"]}\n".to_owned(), "affinity.fields"),
        (format!("{base}  - {{name: bob, kind: inbox, token: alice-token-0123456789, secret: x}}\n"), "same token"),
        (format!("{base}routes:\n  - {{name: default, to: [a]}}\n"), "reserved"),
        (format!("{base}routes:\n  - {{name: \"owner:x\", to: [a]}}\n"), "reserved"),
        (
            "targets:\n  - {name: b, url: \"http://h\", secret: x, offline: {after: 1m, fallback: b}}\n".to_owned(),
            "for `kind: inbox`",
        ),
    ];
    for (yaml, want) in cases {
        let err = parse(&yaml, &[]).err().unwrap_or_else(|| panic!("accepted:\n{yaml}")).to_string();
        assert!(err.contains(want), "expected {want:?} in {err}");
    }
    let err = Config::parse("r.yaml", "sources:\n  - {name: t, path: /fanout/inbox/x, secrets: [s]}\n", |_| None);
    assert!(err.err().unwrap().to_string().contains("fanout's own"));
}

#[test]
fn a_breaker_is_on_by_default_and_each_target_may_change_or_turn_it_off() {
    let yaml = "breaker: {failures: 7}\ntargets:\n  - {name: a, url: \"http://h/a\", secret: x}\n  - {name: b, url: \"http://h/b\", secret: x, breaker: {enabled: false}}\n  - {name: c, url: \"http://h/c\", secret: x, breaker: {probe_interval: 1s, max_probe_interval: 2s}}\n";
    let cfg = parse(yaml, &[]).unwrap();
    let [a, b, c] = [0, 1, 2].map(|i| cfg.targets[i].breaker);
    assert!(a.enabled && a.failures == 7 && a.failing_for == Duration::from_secs(120));
    assert_eq!(a.probe_interval, Duration::from_secs(5));
    assert!(!b.enabled && b.failures == 7, "off, the rest inherited");
    assert_eq!(
        (c.failures, c.probe_interval, c.max_probe_interval),
        (7, Duration::from_secs(1), Duration::from_secs(2))
    );
}

#[test]
fn an_inbox_named_by_the_event_resolves_against_the_inboxes_there_are_then() {
    let yaml = "targets:\n  - {name: staging, url: \"http://h/s\", secret: x}\n  - {name: alice, kind: inbox, token: alice-token-0123456789, secret: y}\nroutes:\n  - {name: dev, when: {type: invoice.*}, to: [\"inbox:{data.object.metadata.developer|data.object.parent.subscription_details.metadata.developer}\"], unknown: staging}\n  - {name: skip, when: {type: skip.*}, to: [\"inbox:{data.object.metadata.developer}\"]}\n  - {name: gone, when: {type: gone.*}, to: [\"inbox:{data.object.metadata.developer}\"], unknown: unrouted}\ndefault: staging\n";
    let cfg = parse(yaml, &[]).unwrap();
    let ev =
        |ty: &str, dev: &str| serde_json::json!({"type": ty, "data": {"object": {"metadata": {"developer": dev}}}});
    use crate::route::Decision;
    assert_eq!(cfg.router.route(&ev("invoice.paid", "alice")), Decision::Deliver(vec![(1, "dev")]));
    assert_eq!(cfg.router.route(&ev("invoice.paid", "bob")), Decision::Deliver(vec![(0, "dev")]), "unknown: staging");
    // A run-time inbox joined in: reached by name, without a config change.
    let bob = fanout_store::InboxRecord {
        name: "bob".into(),
        token_sha256: token_digest("bob-token"),
        secret: "whsec_b".into(),
        max_age_ms: None,
        offline_fallback: Some("staging".into()),
        offline_after_ms: Some(1000),
        created_at_ms: 1,
    };
    let (joined, warnings) = cfg.with_inboxes(std::slice::from_ref(&bob));
    assert!(warnings.is_empty(), "{warnings:?}");
    let bob_dest = joined.router.destinations.iter().position(|d| d.name == "bob").unwrap();
    assert_eq!(joined.router.route(&ev("invoice.paid", "bob")), Decision::Deliver(vec![(bob_dest, "dev")]));
    assert!(joined.inbox_for_token("bob-token").is_some_and(|t| t.is_created_inbox()));
    assert!(joined.inbox_for_token("bob-token-x").is_none());
    assert_eq!(joined.target("bob").unwrap().offline.as_ref().map(|o| o.fallback.clone()), Some(vec![0]));
    // Without `unknown`, the route is skipped (here: to the default); `unrouted` records it so.
    let json = ev("skip.me", "zed");
    assert_eq!(cfg.router.route(&json), Decision::Deliver(vec![(0, crate::route::DEFAULT_RULE)]));
    assert_eq!(cfg.router.route(&ev("gone.x", "zed")), Decision::Unrouted);
    // A name the event carries that is a target but not an inbox reaches nothing.
    assert_eq!(cfg.router.route(&ev("gone.x", "staging")), Decision::Unrouted, "never a non-inbox target");
    // routing.yaml wins a name clash.
    let clash = fanout_store::InboxRecord { name: "staging".into(), ..bob };
    let (joined, warnings) = cfg.with_inboxes(&[clash]);
    assert_eq!(joined.targets.len(), cfg.targets.len());
    assert!(warnings[0].contains("left out"), "{warnings:?}");
}

#[test]
fn the_store_is_sled_by_default_or_postgres_with_a_url() {
    assert_eq!(parse("", &[]).unwrap().store, StoreConfig::Sled);
    let pg = parse("store: {engine: postgres, url: \"${DB}\", pool: 3}\n", &[("DB", "postgres://u:pw@h/db")]).unwrap();
    assert_eq!(pg.store, StoreConfig::Postgres { url: Secret::new("postgres://u:pw@h/db"), pool: 3, ca: None });
    assert!(!format!("{:?}", pg.store).contains("pw"), "the URL's password is not shown");
    for (yaml, want) in [
        ("store: {engine: postgres}\n", "needs a `url`"),
        ("store: {url: \"postgres://h/db\"}\n", "is for `engine: postgres`"),
        ("store: {engine: postgres, url: \"mysql://h/db\"}\n", "must start with postgres://"),
        ("store: {engine: postgres, url: \"postgres://h/db\", pool: 0}\n", "pool must be at least 1"),
        ("store: {engine: postgres, url: \"postgres://h/db\", ca: /etc/hosts}\n", "add sslmode=require"),
        ("retry: {schedule: [5s], initial_delay: 1s}\n", "`schedule` replaces initial_delay/max_delay"),
        ("retry: {schedule: []}\n", "schedule needs at least one delay"),
        ("targets:\n  - {name: t, url: \"http://h/t\", secret: x, rate: 5/d}\n", "is not like 50/s"),
        ("targets:\n  - {name: t, url: \"http://h/t\", secret: x, rate: 0/s}\n", "is not like 50/s"),
        ("targets:\n  - {name: t, url: \"http://h/t\", secret: x, burst: 5}\n", "`burst` goes with a `rate`"),
        ("targets:\n  - {name: t, url: \"http://h/t\", secret: x, rate: 5/s, burst: 0}\n", "burst must be at least 1"),
        ("retry: {schedule: [5s, soon]}\n", "schedule"),
        ("breaker: {failures: 0}\n", "failures must be at least 1"),
        (
            "targets:\n  - {name: t, url: \"http://h/t\", secret: x}\nroutes:\n  - {name: r, to: [\"inbox:t\"]}\n",
            "names \"t\", which is not an inbox",
        ),
        (
            "targets:\n  - {name: t, url: \"http://h/t\", secret: x}\nroutes:\n  - {name: r, to: [t], unknown: t}\n",
            "`unknown` is for inbox:",
        ),
        ("routes:\n  - {name: r, to: [\"inbox:{a..b}\"]}\n", "alternatives separated by |"),
        ("routes:\n  - {name: r, to: [\"inbox:{a}b\"]}\n", "write inbox:NAME"),
        ("routes:\n  - {name: r, to: [\"inbox:{a}\"], unknown: nowhere}\n", "neither a target nor a group"),
        ("breaker: {probe_interval: 10m}\n", "at most max_probe_interval"),
        ("breaker: {opens_after: 3}\n", "unknown field"),
        ("breaker: {max_probe_interval: 2d}\n", "at most 1d"),
        (
            "targets:\n  - {name: t, url: \"http://h/t\", secret: x, breaker: {failures: 0}}\n",
            "target \"t\": breaker: failures",
        ),
        (
            "targets:\n  - {name: i, kind: inbox, token: i-token-0123456789, secret: x, breaker: {failures: 3}}\n",
            "`breaker` is for url targets",
        ),
        (
            "store: {engine: postgres, url: \"postgres://h/db?sslmode=verify-full\"}\n",
            "sslmode=verify-full is not supported",
        ),
        ("store: {engine: postgres, url: \"postgres://h/db?sslmode=require\", ca: /nope.pem}\n", "store: ca"),
        ("store: {engine: oracle}\n", "unknown variant"),
    ] {
        let err = parse(yaml, &[]).err().unwrap_or_else(|| panic!("accepted: {yaml}")).to_string();
        assert!(err.contains(want), "expected {want:?} in {err}");
    }
}

#[test]
fn urls_are_shown_without_credentials_or_query() {
    use super::shown_url;
    assert_eq!(shown_url("https://user:pw@host:8443/hook?key=s3cret#x"), "https://…@host:8443/hook?…");
    assert_eq!(shown_url("http://localhost:4000/x"), "http://localhost:4000/x");
    assert_eq!(shown_url("http://h?token=1"), "http://h?…");
    assert_eq!(shown_url("http://a@b@h/p"), "http://…@h/p");
    assert_eq!(shown_url("not a url"), "not a url");
}
