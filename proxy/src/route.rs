//! Decides where an event goes. Rules from `routing.yaml` are tried in order over the parsed event;
//! the first that matches decides, unless it says `continue`, in which case its destinations are
//! added and the next rules are tried too. No rule matched: the owner of the first object the
//! event references that has one (sticky ownership), else the default destination, if any.
//!
//! Precedence, and why: an explicit rule is what someone wrote for this event, so it wins; an
//! owner is a fact about an object (who created it), better than the catch-all default.
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
    /// For inbox destinations: where events go while nobody listens (none: they wait).
    pub offline: Option<Offline>,
}

/// What happens to an inbox's events while no listener is connected (a route's `offline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offline {
    /// How long nobody must have listened before events move on.
    pub after: std::time::Duration,
    /// A target, or a failover group's members in order, that takes them instead.
    pub fallback: Vec<usize>,
    pub fallback_name: String,
}

#[derive(Debug, Clone)]
pub enum Action {
    Deliver(Vec<DestId>),
    /// Acknowledge to Stripe, record as dropped, deliver nowhere.
    Drop,
    /// Destinations with inboxes named by the event (`inbox:{data.object.metadata.developer}`)
    /// or by name (`inbox:alice`), resolved when the event is routed against the inboxes there
    /// are then: an inbox created at run time is reached without a config change.
    Named(Box<Named>),
}

#[derive(Debug, Clone)]
pub struct Named {
    /// Plain destinations beside the inboxes.
    pub fixed: Vec<DestId>,
    pub inboxes: Vec<InboxRef>,
    /// What a name that is no inbox (or a field that is absent) leads to.
    pub unknown: Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxRef {
    Literal(String),
    /// The first of these paths present in the event, as a string.
    Field(Vec<Vec<String>>),
}

#[derive(Debug, Clone)]
pub enum Unknown {
    /// As if this rule had not matched (the default): later rules, ownership, the default.
    Skip,
    Deliver(Vec<DestId>),
    Drop,
    /// Recorded as unrouted, delivered nowhere.
    Unrouted,
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
    /// No rule matched; the event references `object`, which routing sent to these destinations
    /// before (by the rule `via`).
    Owned {
        object: String,
        destinations: Vec<DestId>,
        via: String,
    },
    Drop {
        rule: &'r str,
    },
    Unrouted,
}

/// The owner routing remembered for an object: destination names and the rule that first chose
/// them. Names, not indices, because ownership outlives config reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownOwner {
    pub destinations: Vec<String>,
    pub via: String,
}

/// The name under which the default destination shows up as "the rule that matched".
pub const DEFAULT_RULE: &str = "default";

#[derive(Debug, Clone)]
pub struct Router {
    pub destinations: Vec<Destination>,
    pub rules: Vec<Rule>,
    pub default: Option<Action>,
    /// Paths of the object ids sticky ownership records and follows, most specific first; none:
    /// ownership is off.
    pub affinity: Option<Vec<Vec<String>>>,
    /// Every inbox by name (those of routing.yaml and those created at run time): what
    /// [`Action::Named`] resolves against.
    pub inboxes: std::collections::HashMap<String, DestId>,
}

impl Router {
    /// Routing by the rules alone (no ownership known).
    pub fn route(&self, event: &Value) -> Decision<'_> {
        let no_owners = |_: &str| Ok::<_, std::convert::Infallible>(None);
        match self.route_with(event, no_owners) {
            Ok(decision) => decision,
            Err(never) => match never {},
        }
    }

    /// Routing with `owner` telling who owns an object id (the store, for live traffic). It is
    /// asked only when no rule matched, and its error (an unreadable store) is the caller's:
    /// routing does no I/O and decides nothing on a guess.
    pub fn route_with<E>(
        &self,
        event: &Value,
        mut owner: impl FnMut(&str) -> Result<Option<KnownOwner>, E>,
    ) -> Result<Decision<'_>, E> {
        let mut chosen: Vec<(DestId, &str)> = Vec::new();
        let mut matched = false;
        for rule in &self.rules {
            if !rule.when.iter().all(|c| c.holds(event)) {
                continue;
            }
            let action = match &rule.action {
                Action::Named(named) => match self.resolve(named, event) {
                    Some(action) => action,
                    None => continue,
                },
                other => std::borrow::Cow::Borrowed(other),
            };
            matched = true;
            match action.as_ref() {
                Action::Drop if chosen.is_empty() => return Ok(Decision::Drop { rule: &rule.name }),
                Action::Drop => break,
                Action::Deliver(dests) => add(&mut chosen, dests, &rule.name),
                // Resolved above.
                Action::Named(_) => {}
            }
            if !rule.continue_matching {
                break;
            }
        }
        if !matched {
            if let Some(owned) = self.owned(event, &mut owner)? {
                return Ok(owned);
            }
            match &self.default {
                Some(Action::Drop) => return Ok(Decision::Drop { rule: DEFAULT_RULE }),
                Some(Action::Deliver(dests)) => add(&mut chosen, dests, DEFAULT_RULE),
                // The default names configured destinations only (resolve.rs).
                Some(Action::Named(_)) | None => {}
            }
        }
        Ok(if chosen.is_empty() { Decision::Unrouted } else { Decision::Deliver(chosen) })
    }
}

impl Router {
    /// A rule's named inboxes as they stand now: the destinations they resolve to, and what
    /// `unknown` says if one resolves to none. `None`: skip the rule (`unknown` unset).
    fn resolve(&self, named: &Named, event: &Value) -> Option<std::borrow::Cow<'_, Action>> {
        let mut dests = named.fixed.clone();
        let mut unknown = false;
        for inbox in &named.inboxes {
            let name = match inbox {
                InboxRef::Literal(name) => Some(name.as_str()),
                InboxRef::Field(paths) => paths.iter().find_map(|p| lookup(event, p)).and_then(Value::as_str),
            };
            match name.and_then(|n| self.inboxes.get(n)) {
                Some(&d) if !dests.contains(&d) => dests.push(d),
                Some(_) => {}
                None => unknown = true,
            }
        }
        if unknown {
            match &named.unknown {
                Unknown::Skip if dests.is_empty() => return None,
                Unknown::Skip => {}
                Unknown::Deliver(more) => dests.extend(more.iter().filter(|d| !named.fixed.contains(d))),
                Unknown::Drop if dests.is_empty() => return Some(std::borrow::Cow::Owned(Action::Drop)),
                Unknown::Drop => {}
                // Nothing more to deliver to, but the rule decided: unrouted if nothing else was.
                Unknown::Unrouted => {}
            }
        }
        Some(std::borrow::Cow::Owned(Action::Deliver(dests)))
    }

    /// The object ids `event` carries, in `affinity` order without repeats: a plain id string, or
    /// an expanded object's `id`.
    pub fn references(&self, event: &Value) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for path in self.affinity.iter().flatten() {
            let id = match lookup(event, path) {
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("id") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            if !id.is_empty() && id.len() <= 255 && !ids.iter().any(|i| i == id) {
                ids.push(id.to_owned());
            }
        }
        ids
    }

    /// The first referenced object with an owner whose destinations are still configured.
    fn owned<E>(
        &self,
        event: &Value,
        owner: &mut impl FnMut(&str) -> Result<Option<KnownOwner>, E>,
    ) -> Result<Option<Decision<'_>>, E> {
        for object in self.references(event) {
            let Some(known) = owner(&object)? else { continue };
            if let Some(owned) = self.owned_by(object, known) {
                return Ok(Some(owned));
            }
        }
        Ok(None)
    }

    /// The decision an owner makes for an event no rule matched: its destinations that are still
    /// configured, None if none is. (Ingest asks the store for owners one object at a time, in
    /// `references` order, and stops at the first this answers.)
    pub fn owned_by(&self, object: String, known: KnownOwner) -> Option<Decision<'_>> {
        let destinations: Vec<DestId> = known
            .destinations
            .iter()
            .filter_map(|name| self.destinations.iter().position(|d| &d.name == name))
            .collect();
        (!destinations.is_empty()).then_some(Decision::Owned { object, destinations, via: known.via })
    }

    /// The rule called `name`, if the config still has it.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
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
        Rule { name: name.into(), when, action: Action::Deliver(to.to_vec()), continue_matching: cont, offline: None }
    }

    fn router(rules: Vec<Rule>, default: Option<Action>) -> Router {
        let dest = |name: &str, i| Destination { name: name.into(), kind: DestinationKind::Target(i) };
        let affinity = Some(["data.object.id", "data.object.subscription", "data.object.customer"].map(path).to_vec());
        Router {
            destinations: vec![dest("a", 0), dest("b", 1), dest("c", 2)],
            rules,
            default,
            affinity,
            inboxes: [("c".to_owned(), 2)].into(),
        }
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
            vec![Rule {
                name: "quiet".into(),
                when: livemode,
                action: Action::Drop,
                continue_matching: false,
                offline: None,
            }],
            None,
        );
        assert_eq!(r.route(&invoice("x")), Decision::Drop { rule: "quiet" });
        assert_eq!(r.route(&json!({"livemode": true})), Decision::Unrouted);
        let r = router(vec![], Some(Action::Drop));
        assert_eq!(r.route(&json!({})), Decision::Drop { rule: DEFAULT_RULE });
    }

    #[test]
    fn an_owner_decides_what_no_rule_matched_before_the_default() {
        let metadata = FieldTest { equals: Some(json!("alice")), ..Default::default() };
        let r = router(
            vec![rule("alice", vec![field(&["data.object.metadata.env"], metadata)], &[2], false)],
            Some(Action::Deliver(vec![0])),
        );
        let renewal = json!({"id": "evt_2", "type": "invoice.payment_failed",
            "data": {"object": {"id": "in_1", "subscription": "sub_1", "customer": {"id": "cus_1", "object": "customer"}}}});
        assert_eq!(r.references(&renewal), vec!["in_1", "sub_1", "cus_1"]);
        let owners = |id: &str| {
            Ok::<_, String>(
                (id == "cus_1" || id == "sub_gone")
                    .then(|| KnownOwner { destinations: vec!["c".into()], via: "alice".into() }),
            )
        };
        assert_eq!(
            r.route_with(&renewal, owners),
            Ok(Decision::Owned { object: "cus_1".into(), destinations: vec![2], via: "alice".into() })
        );
        // Without an owner: the default.
        assert_eq!(r.route(&renewal), Decision::Deliver(vec![(0, DEFAULT_RULE)]));
        // A matching rule wins over the owner.
        let tagged = json!({"data": {"object": {"customer": "cus_1", "metadata": {"env": "alice"}}}});
        assert_eq!(r.route_with(&tagged, owners), Ok(Decision::Deliver(vec![(2, "alice")])));
        // An owner whose destinations are gone from the config is passed over.
        let gone =
            |_: &str| Ok::<_, String>(Some(KnownOwner { destinations: vec!["removed".into()], via: "x".into() }));
        assert_eq!(r.route_with(&renewal, gone), Ok(Decision::Deliver(vec![(0, DEFAULT_RULE)])));
        // A store that cannot say who owns an object: its error, not a guess. A matching rule
        // never asks.
        let unreadable = |_: &str| Err::<Option<KnownOwner>, _>("store down");
        assert_eq!(r.route_with(&renewal, unreadable), Err("store down"));
        assert_eq!(r.route_with(&tagged, unreadable), Ok(Decision::Deliver(vec![(2, "alice")])));
    }
}
