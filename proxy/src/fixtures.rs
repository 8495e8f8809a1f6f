//! Realistic Stripe events for `fanout trigger`, built from the fixtures compiled into the binary
//! (`proxy/fixtures/`: Stripe's own object fixtures and a catalogue of event types and flows).
//! A team tests its webhook handling in seconds, with stock signature checks left on, instead of
//! waiting an hour for Stripe to send a renewal that fails.
//!
//! Every event gets a fresh `evt_` id and `created` now; every id in its objects is replaced by a
//! fresh one of the same shape, the same within one run, so a flow's events name the same
//! customer, subscription and invoice (or the team's own, with `--customer` and friends).
//!
//! Invariant: no I/O; the clock and the random source are passed in.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The Stripe objects events carry, by the name `events.yaml` uses.
const OBJECTS: &[(&str, &str)] = &[
    ("account", include_str!("../fixtures/objects/account.json")),
    ("application", include_str!("../fixtures/objects/application.json")),
    ("charge", include_str!("../fixtures/objects/charge.json")),
    ("checkout_session", include_str!("../fixtures/objects/checkout_session.json")),
    ("customer", include_str!("../fixtures/objects/customer.json")),
    ("dispute", include_str!("../fixtures/objects/dispute.json")),
    ("invoice", include_str!("../fixtures/objects/invoice.json")),
    ("payment_intent", include_str!("../fixtures/objects/payment_intent.json")),
    ("payment_method", include_str!("../fixtures/objects/payment_method.json")),
    ("payout", include_str!("../fixtures/objects/payout.json")),
    ("price", include_str!("../fixtures/objects/price.json")),
    ("product", include_str!("../fixtures/objects/product.json")),
    ("refund", include_str!("../fixtures/objects/refund.json")),
    ("setup_intent", include_str!("../fixtures/objects/setup_intent.json")),
    ("subscription", include_str!("../fixtures/objects/subscription.json")),
];

const CATALOGUE: &str = include_str!("../fixtures/events.yaml");

/// `events.yaml`, parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub api_version: String,
    pub ids: SharedIds,
    pub events: BTreeMap<String, EventFixture>,
    pub thin: BTreeMap<String, ThinFixture>,
    pub flows: BTreeMap<String, Flow>,
    #[serde(skip)]
    objects: HashMap<String, Value>,
}

/// The fixture ids that `--customer`, `--subscription` and `--account` replace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedIds {
    pub customer: String,
    pub subscription: String,
    pub account: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFixture {
    pub object: String,
    #[serde(default)]
    pub set: Map<String, Value>,
    pub previous_attributes: Option<Value>,
    /// Sent about a connected account: the event carries `account`.
    #[serde(default)]
    pub connect: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThinFixture {
    pub related_object: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub about: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub set: Map<String, Value>,
    pub previous_attributes: Option<Value>,
}

/// Why an event could not be built; each says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerError {
    #[error("no fixture for event type {0:?}; `fanout trigger --list` shows the {1} there are")]
    UnknownType(String, usize),
    #[error("no flow named {0:?}; there are: {1}")]
    UnknownFlow(String, String),
    #[error("--set {0:?}: expected PATH=VALUE, like data.object.customer=cus_123")]
    NotAnAssignment(String),
    #[error("--metadata {0:?}: expected KEY=VALUE, like env=alice")]
    NotMetadata(String),
    #[error("cannot set {path}: {why}")]
    BadPath { path: String, why: String },
    #[error("--set {path}: {why}")]
    BadValue { path: String, why: String },
    #[error("{0} is a thin event: it carries no object, so --metadata does not apply (use --set)")]
    ThinHasNoObject(String),
}

/// The compiled-in catalogue. It is checked by the unit tests, so a parse error here is a build
/// defect, not an input error.
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE_PARSED: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE_PARSED.get_or_init(|| {
        let mut c: Catalogue = serde_yaml_ng::from_str(CATALOGUE).expect("proxy/fixtures/events.yaml parses");
        for (name, text) in OBJECTS {
            let object = serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
            c.objects.insert((*name).to_owned(), object);
        }
        c
    })
}

/// What the command line adds to every event of a run.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `--set PATH=VALUE`, applied last, from the event's root.
    pub sets: Vec<Assignment>,
    /// `--metadata KEY=VALUE`: into `data.object.metadata`, and an invoice's
    /// `parent.subscription_details.metadata`.
    pub metadata: Vec<(String, String)>,
    pub account: Option<String>,
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub api_version: Option<String>,
}

/// One `--set PATH=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub path: Vec<String>,
    pub value: SetValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    /// It read as JSON: `42`, `true`, `null`, `"42"`, `{"a": 1}`.
    Json(Value),
    /// Plain text (`cus_123`): a string, where the field holds a string or nothing.
    Text(String),
}

/// `PATH=VALUE`: a dotted path, and the value as JSON when it reads as JSON, else as text. Text
/// that starts like JSON (`{`, `[`, `"`) and is not is refused rather than sent as a string.
pub fn parse_set(arg: &str) -> Result<Assignment, TriggerError> {
    let (path, value) = arg.split_once('=').ok_or_else(|| TriggerError::NotAnAssignment(arg.to_owned()))?;
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(TriggerError::BadPath { path: path.to_owned(), why: "a path has no empty parts".into() });
    }
    let value = match serde_json::from_str(value) {
        Ok(json) => SetValue::Json(json),
        Err(e) if value.trim_start().starts_with(['{', '[', '"']) => {
            return Err(TriggerError::BadValue {
                path: path.to_owned(),
                why: format!("{value} is not valid JSON: {e}"),
            })
        }
        Err(_) => SetValue::Text(value.to_owned()),
    };
    Ok(Assignment { path: segments, value })
}

impl Assignment {
    /// Sets it in `event`. Text where the field holds a number, a boolean, a list or an object is
    /// a mistake (`amount_due=12x`), not a string to send.
    fn apply(&self, event: &mut Value) -> Result<(), TriggerError> {
        let value = match &self.value {
            SetValue::Json(v) => v.clone(),
            SetValue::Text(text) => {
                let pointer: String =
                    self.path.iter().map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1"))).collect();
                match event.pointer(&pointer) {
                    Some(held) if !held.is_null() && !held.is_string() => {
                        return Err(TriggerError::BadValue {
                            path: self.path.join("."),
                            why: format!(
                                "it is {} and {text:?} is not one (quote text as JSON, '\"{text}\"', to put a string there)",
                                kind(held)
                            ),
                        })
                    }
                    _ => Value::String(text.clone()),
                }
            }
        };
        set_path(event, &self.path, value)
    }
}

pub fn parse_metadata(arg: &str) -> Result<(String, String), TriggerError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(TriggerError::NotMetadata(arg.to_owned())),
    }
}

/// The fresh ids of one run: each fixture id maps to one fresh id, everywhere in the run.
pub struct FreshIds {
    map: HashMap<String, String>,
    rng: fastrand::Rng,
}

impl FreshIds {
    /// The team's own customer, subscription and account (`options`) stand for the fixtures'.
    pub fn new(catalogue: &Catalogue, options: &Options, rng: fastrand::Rng) -> FreshIds {
        let mut map = HashMap::new();
        let ids = &catalogue.ids;
        for (fixture, own) in [
            (&ids.customer, &options.customer),
            (&ids.subscription, &options.subscription),
            (&ids.account, &options.account),
        ] {
            if let Some(own) = own {
                map.insert(fixture.clone(), own.clone());
            }
        }
        FreshIds { map, rng }
    }

    fn id(&mut self, fixture: &str) -> String {
        if let Some(id) = self.map.get(fixture) {
            return id.clone();
        }
        let (prefix, rest) = fixture.rsplit_once('_').unwrap_or(("id", fixture));
        let fresh = format!("{prefix}_{}", self.random(rest.len().max(14)));
        self.map.insert(fixture.to_owned(), fresh.clone());
        fresh
    }

    fn random(&mut self, len: usize) -> String {
        (0..len).map(|_| self.rng.alphanumeric()).collect()
    }

    /// Every id in `v` made fresh: whole strings that look like ids first, then those ids where
    /// other strings contain them (a client secret, a URL).
    fn refresh(&mut self, v: &mut Value) {
        self.whole(v);
        let mut known: Vec<(String, String)> = self.map.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
        known.sort_by_key(|(old, _)| std::cmp::Reverse(old.len()));
        within(v, &known);
    }

    fn whole(&mut self, v: &mut Value) {
        match v {
            Value::String(s) if looks_like_id(s) => *s = self.id(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.whole(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.whole(i)),
            _ => {}
        }
    }
}

/// Known ids inside other strings replaced, each only where it ends the id (the next character
/// is not a letter or digit), longest first: an id is never taken for the start of a longer one.
fn within(v: &mut Value, known: &[(String, String)]) {
    match v {
        Value::String(s) => {
            for (old, new) in known {
                if s.contains(old.as_str()) {
                    *s = replace_whole(s, old, new);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| within(i, known)),
        Value::Object(map) => map.values_mut().for_each(|i| within(i, known)),
        _ => {}
    }
}

fn replace_whole(s: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(old) {
        let after = &rest[at + old.len()..];
        let whole = !after.starts_with(|c: char| c.is_ascii_alphanumeric());
        out.push_str(&rest[..at]);
        out.push_str(if whole { new } else { old });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `cus_QXg1o8vcGmoR32`, `cs_test_a1YS…`: a lowercase prefix, then letters and digits with at
/// least one digit or capital (so `charge_automatically` is not an id).
fn looks_like_id(s: &str) -> bool {
    let Some((prefix, rest)) = s.rsplit_once('_') else { return false };
    !prefix.is_empty()
        && prefix.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        && rest.len() >= 8
        && rest.chars().all(|c| c.is_ascii_alphanumeric())
        && rest.chars().any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

impl Catalogue {
    /// Every event type there is a fixture for, thin ones included, sorted.
    pub fn types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.events.keys().chain(self.thin.keys()).map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// One event of `event_type`, as Stripe would send it now (`now_secs`).
    pub fn event(
        &self,
        event_type: &str,
        options: &Options,
        ids: &mut FreshIds,
        now_secs: i64,
    ) -> Result<Value, TriggerError> {
        self.step(
            &Step { event_type: event_type.to_owned(), set: Map::new(), previous_attributes: None },
            options,
            ids,
            now_secs,
        )
    }

    /// The events of flow `name`, in order, about the same objects.
    pub fn flow(
        &self,
        name: &str,
        options: &Options,
        ids: &mut FreshIds,
        now_secs: i64,
    ) -> Result<Vec<Value>, TriggerError> {
        let flow = self.flows.get(name).ok_or_else(|| {
            TriggerError::UnknownFlow(name.to_owned(), self.flows.keys().cloned().collect::<Vec<_>>().join(", "))
        })?;
        flow.steps.iter().map(|step| self.step(step, options, ids, now_secs)).collect()
    }

    fn step(&self, step: &Step, options: &Options, ids: &mut FreshIds, now_secs: i64) -> Result<Value, TriggerError> {
        let mut event = if let Some(thin) = self.thin.get(&step.event_type) {
            self.thin_event(&step.event_type, thin, options, ids, now_secs)?
        } else {
            let fixture = self.events.get(&step.event_type).ok_or_else(|| {
                TriggerError::UnknownType(step.event_type.clone(), self.events.len() + self.thin.len())
            })?;
            self.snapshot_event(&step.event_type, fixture, step, options, ids, now_secs)?
        };
        for set in &options.sets {
            set.apply(&mut event)?;
        }
        Ok(event)
    }

    /// A snapshot event: the object as the fixture has it, then the event type's and the step's
    /// changes; its times are now.
    fn snapshot_event(
        &self,
        event_type: &str,
        fixture: &EventFixture,
        step: &Step,
        options: &Options,
        ids: &mut FreshIds,
        now_secs: i64,
    ) -> Result<Value, TriggerError> {
        let mut object = self.objects.get(&fixture.object).cloned().unwrap_or_else(|| json!({}));
        for (path, value) in fixture.set.iter().chain(&step.set) {
            set_path(&mut object, &split(path), value.clone())?;
        }
        stamp(&mut object, now_secs);
        let mut data = json!({ "object": object });
        if let Some(previous) = step.previous_attributes.as_ref().or(fixture.previous_attributes.as_ref()) {
            data["previous_attributes"] = previous.clone();
        }
        ids.refresh(&mut data);
        // An invoice of a subscription carries the subscription's metadata where Stripe copies it.
        let of_subscription = data["object"]["parent"]["subscription_details"].is_object();
        for (key, value) in &options.metadata {
            // The key as one segment: a metadata key may hold a dot.
            let mut path = split("object.metadata");
            path.push(key.clone());
            set_path(&mut data, &path, json!(value))?;
            if of_subscription {
                let mut path = split("object.parent.subscription_details.metadata");
                path.push(key.clone());
                set_path(&mut data, &path, json!(value))?;
            }
        }
        let mut event = json!({
            "id": format!("evt_{}", ids.random(24)),
            "object": "event",
            "api_version": options.api_version.as_deref().unwrap_or(&self.api_version),
            "created": now_secs,
            "data": data,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": event_type,
        });
        if fixture.connect || options.account.is_some() {
            event["account"] = json!(ids.id(&self.ids.account));
        }
        Ok(event)
    }

    /// A v2 thin event notification: what happened and to which object, nothing more (the app
    /// fetches the object).
    fn thin_event(
        &self,
        event_type: &str,
        thin: &ThinFixture,
        options: &Options,
        ids: &mut FreshIds,
        now_secs: i64,
    ) -> Result<Value, TriggerError> {
        if !options.metadata.is_empty() {
            return Err(TriggerError::ThinHasNoObject(event_type.to_owned()));
        }
        let mut related = thin.related_object.clone().unwrap_or(Value::Null);
        ids.refresh(&mut related);
        let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now_secs.max(0) as u64);
        Ok(json!({
            "id": format!("evt_test_{}", ids.random(40)),
            "object": "v2.core.event",
            "type": event_type,
            "livemode": false,
            "created": humantime::format_rfc3339_millis(created).to_string(),
            "related_object": related,
            "context": options.account.as_ref().map(|_| ids.id(&self.ids.account)),
        }))
    }
}

/// The time Stripe's fixtures use for every timestamp.
const FIXTURE_TIME: i64 = 1_234_567_890;

/// Every fixture timestamp becomes `now`: `created`, a period's start and end, an arrival date.
fn stamp(v: &mut Value, now: i64) {
    match v {
        Value::Number(n) if n.as_i64() == Some(FIXTURE_TIME) => *v = json!(now),
        Value::Array(items) => items.iter_mut().for_each(|i| stamp(i, now)),
        Value::Object(map) => map.values_mut().for_each(|i| stamp(i, now)),
        _ => {}
    }
}

fn split(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}

/// Sets `value` at `path` under `root`, making the objects on the way; a number indexes an array.
pub fn set_path(root: &mut Value, path: &[String], value: Value) -> Result<(), TriggerError> {
    let shown = || path.join(".");
    let Some((last, parents)) = path.split_last() else {
        return Err(TriggerError::BadPath { path: String::new(), why: "the path is empty".into() });
    };
    let mut at = root;
    for (i, key) in parents.iter().enumerate() {
        let here = || path[..=i].join(".");
        at = match at {
            Value::Object(map) => {
                let next = map.entry(key.clone()).or_insert_with(|| json!({}));
                if next.is_null() {
                    *next = json!({});
                }
                next
            }
            Value::Array(items) => {
                let len = items.len();
                let index = key.parse::<usize>().ok().filter(|&n| n < len).ok_or_else(|| TriggerError::BadPath {
                    path: shown(),
                    why: format!("{} is a list of {len}: {key:?} is not an index in it", path[..i].join(".")),
                })?;
                &mut items[index]
            }
            other => {
                return Err(TriggerError::BadPath {
                    path: shown(),
                    why: format!("{} is {}, not an object", here(), kind(other)),
                })
            }
        };
    }
    match at {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let len = items.len();
            let slot =
                last.parse::<usize>().ok().and_then(|n| items.get_mut(n)).ok_or_else(|| TriggerError::BadPath {
                    path: shown(),
                    why: format!("{} is a list of {len}: {last:?} is not an index in it", parents.join(".")),
                })?;
            *slot = value;
            Ok(())
        }
        other => Err(TriggerError::BadPath {
            path: shown(),
            why: format!("{} is {}, not an object", parents.join("."), kind(other)),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
