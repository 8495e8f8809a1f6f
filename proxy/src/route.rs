//! Decides where an event goes. Rules from `routing.yaml` are tried in order over the parsed event;
//! the first that matches decides, unless it says `continue`, in which case its destinations are
//! added and the next rules are tried too. No rule matched: the default destination, if any.
//!
//! Invariant: pure functions over plain data, no I/O — the same code answers `fanout route` (dry
//! run) and live traffic.

use serde_json::Value;
use wildmatch::WildMatch;

/// Index into [`Router::destinations`].
pub type DestId = usize;

/// Where matching events are sent: one target, or a group that counts as delivered when one member
/// succeeds. Member and target numbers index the config's target list.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub kind: DestinationKind,
}

#[derive(Debug, Clone)]
pub enum DestinationKind {
    Target(usize),
    Group { mode: GroupMode, members: Vec<usize> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    /// Every member tried in parallel; the first 2xx cancels the others.
    Any,
    /// Members tried one after the other; the next one only when the current one fails.
    Failover,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub when: Vec<Condition>,
    pub action: Action,
    pub continue_matching: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    Deliver(Vec<DestId>),
    /// Acknowledge to Stripe, record as dropped, deliver nowhere.
    Drop,
}

/// One test on the event; a rule's conditions must all hold.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `type` matches any of these (`*` is a wildcard: `invoice.*`).
    Type(Vec<WildMatch>),
    /// The Connect `account` the event is about is one of these.
    Account(Vec<String>),
    Livemode(bool),
    /// A field test on the first of `paths` present in the event (metadata lives in different
    /// places on different objects, so a rule may name several).
    Field {
        paths: Vec<Vec<String>>,
        test: FieldTest,
    },
}

/// The tests on one field; all that are set must hold.
#[derive(Debug, Clone, Default)]
pub struct FieldTest {
    pub equals: Option<Value>,
    pub any_of: Option<Vec<Value>>,
    pub prefix: Option<String>,
    pub exists: Option<bool>,
}

/// What routing decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'r> {
    /// Deliver to each destination; the name of the rule that chose it beside it.
    Deliver(Vec<(DestId, &'r str)>),
    Drop {
        rule: &'r str,
    },
    Unrouted,
}

/// The name under which the default destination shows up as "the rule that matched".
pub const DEFAULT_RULE: &str = "default";

#[derive(Debug, Clone)]
pub struct Router {
    pub destinations: Vec<Destination>,
    pub rules: Vec<Rule>,
    pub default: Option<Action>,
}

impl Router {
    pub fn route(&self, event: &Value) -> Decision<'_> {
        let mut chosen: Vec<(DestId, &str)> = Vec::new();
        let mut matched = false;
        for rule in &self.rules {
            if !rule.when.iter().all(|c| c.holds(event)) {
                continue;
            }
            matched = true;
            match &rule.action {
                Action::Drop if chosen.is_empty() => return Decision::Drop { rule: &rule.name },
                Action::Drop => break,
                Action::Deliver(dests) => add(&mut chosen, dests, &rule.name),
            }
            if !rule.continue_matching {
                break;
            }
        }
        if !matched {
            match &self.default {
                Some(Action::Drop) => return Decision::Drop { rule: DEFAULT_RULE },
                Some(Action::Deliver(dests)) => add(&mut chosen, dests, DEFAULT_RULE),
                None => {}
            }
        }
        if chosen.is_empty() {
            Decision::Unrouted
        } else {
            Decision::Deliver(chosen)
        }
    }
}

fn add<'r>(chosen: &mut Vec<(DestId, &'r str)>, dests: &[DestId], rule: &'r str) {
    for &d in dests {
        if !chosen.iter().any(|(c, _)| *c == d) {
            chosen.push((d, rule));
        }
    }
}

impl Condition {
    fn holds(&self, event: &Value) -> bool {
        match self {
            Condition::Type(patterns) => {
                let ty = event.get("type").and_then(Value::as_str).unwrap_or("");
                patterns.iter().any(|p| p.matches(ty))
            }
            Condition::Account(accounts) => {
                event.get("account").and_then(Value::as_str).is_some_and(|a| accounts.iter().any(|x| x == a))
            }
            Condition::Livemode(want) => event.get("livemode").and_then(Value::as_bool) == Some(*want),
            Condition::Field { paths, test } => test.holds(paths.iter().find_map(|p| lookup(event, p))),
        }
    }
}

impl FieldTest {
    fn holds(&self, value: Option<&Value>) -> bool {
        if let Some(want) = self.exists {
            if value.is_some() != want {
                return false;
            }
        }
        let needs_value = self.equals.is_some() || self.any_of.is_some() || self.prefix.is_some();
        let Some(value) = value else {
            return !needs_value;
        };
        self.equals.as_ref().is_none_or(|want| scalar_eq(want, value))
            && self.any_of.as_ref().is_none_or(|set| set.iter().any(|w| scalar_eq(w, value)))
            && self.prefix.as_ref().is_none_or(|p| value.as_str().is_some_and(|s| s.starts_with(p.as_str())))
    }
}

/// YAML `equals: 42` should match JSON `42` and `"42"` alike: metadata values are always strings
/// in Stripe, while people write numbers and booleans bare in YAML.
fn scalar_eq(want: &Value, got: &Value) -> bool {
    want == got
        || match (want, got) {
            (Value::String(w), other) | (other, Value::String(w)) if !other.is_string() => match other {
                Value::Number(n) => n.to_string() == *w,
                Value::Bool(b) => b.to_string() == *w,
                _ => false,
            },
            _ => false,
        }
}

/// Follows a dotted path; numeric segments index arrays. `null` counts as absent, as Stripe sends
/// unset fields as `null`.
pub fn lookup<'v>(event: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut at = event;
    for segment in path {
        at = match at {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!at.is_null()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    fn field(paths: &[&str], test: FieldTest) -> Condition {
        Condition::Field { paths: paths.iter().map(|p| path(p)).collect(), test }
    }

    fn rule(name: &str, when: Vec<Condition>, to: &[DestId], cont: bool) -> Rule {
        Rule { name: name.into(), when, action: Action::Deliver(to.to_vec()), continue_matching: cont }
    }

    fn router(rules: Vec<Rule>, default: Option<Action>) -> Router {
        let dest = |name: &str, i| Destination { name: name.into(), kind: DestinationKind::Target(i) };
        Router { destinations: vec![dest("a", 0), dest("b", 1), dest("c", 2)], rules, default }
    }

    fn invoice(env: &str) -> Value {
        json!({"id": "evt_1", "type": "invoice.paid", "livemode": false, "account": "acct_9",
               "data": {"object": {"metadata": {}, "lines": {"data": [{"price": {"id": "price_7"}}]},
               "subscription_details": {"metadata": {"env": env}}, "amount_due": 500}}})
    }

    #[test]
    fn first_matching_rule_decides_unless_it_continues() {
        let r = router(
            vec![
                rule("types", vec![Condition::Type(vec![WildMatch::new("invoice.*")])], &[0], true),
                rule("acct", vec![Condition::Account(vec!["acct_9".into()])], &[1, 0], false),
                rule("never", vec![], &[2], false),
            ],
            None,
        );
        assert_eq!(r.route(&invoice("x")), Decision::Deliver(vec![(0, "types"), (1, "acct")]));
    }

    #[test]
    fn alternative_paths_use_the_first_present() {
        let test = FieldTest { equals: Some(json!("alice")), ..Default::default() };
        let when = vec![field(&["data.object.metadata.env", "data.object.subscription_details.metadata.env"], test)];
        let r = router(vec![rule("alice", when, &[2], false)], Some(Action::Deliver(vec![0])));
        assert_eq!(r.route(&invoice("alice")), Decision::Deliver(vec![(2, "alice")]));
        assert_eq!(r.route(&invoice("bob")), Decision::Deliver(vec![(0, DEFAULT_RULE)]));
    }

    #[test]
    fn field_tests_equals_any_of_prefix_exists_and_array_index() {
        let ev = invoice("alice");
        let holds = |p: &str, t: FieldTest| field(&[p], t).holds(&ev);
        let t = FieldTest::default;
        assert!(holds("data.object.amount_due", FieldTest { equals: Some(json!("500")), ..t() }));
        assert!(!holds("data.object.amount_due", FieldTest { equals: Some(json!(501)), ..t() }));
        assert!(holds("type", FieldTest { any_of: Some(vec![json!("x"), json!("invoice.paid")]), ..t() }));
        assert!(holds("data.object.lines.data.0.price.id", FieldTest { prefix: Some("price_".into()), ..t() }));
        assert!(!holds("data.object.lines.data.1.price.id", FieldTest { exists: Some(true), ..t() }));
        assert!(holds("data.object.customer", FieldTest { exists: Some(false), ..t() }));
        assert!(!holds("data.object.customer", FieldTest { prefix: Some("cus_".into()), ..t() }));
        assert!(!holds("livemode", FieldTest { prefix: Some("f".into()), ..t() }));
    }

    #[test]
    fn drop_and_unrouted() {
        let livemode = vec![Condition::Livemode(false)];
        let r = router(
            vec![Rule { name: "quiet".into(), when: livemode, action: Action::Drop, continue_matching: false }],
            None,
        );
        assert_eq!(r.route(&invoice("x")), Decision::Drop { rule: "quiet" });
        assert_eq!(r.route(&json!({"livemode": true})), Decision::Unrouted);
        let r = router(vec![], Some(Action::Drop));
        assert_eq!(r.route(&json!({})), Decision::Drop { rule: DEFAULT_RULE });
    }
}
