//! Events as an operator sees them: where each went and what became of it (folded from the
//! store's history), the filters a listing or a bulk replay takes, and replay itself.

use std::collections::HashMap;

use fanout_store::{Disposition, EventCursor, EventHead, EventRecord, HistoryEntry, NewJob, Outcome};
use serde_json::Value;
use wildmatch::WildMatch;

use super::{Admin, Query, MAX_BATCH, MAX_SCAN};
use crate::clock::unix_now_ms;
use crate::config::Config;
use crate::http::ApiError;
use crate::plan::plan;
use crate::route::Decision;
use crate::wire::admin::{
    Attempt, Batch, DestinationSummary, EventDetail, EventSummary, EventsPage, QueuedJob, Replayed, Skipped,
};
use crate::wire::{parse_time, time};

/// Most history entries shown for one event (the newest).
const MAX_HISTORY: usize = 1_000;
/// Most history entries read to tell an event's state in a listing (the newest: the last word of
/// each job is what counts).
const STATE_HISTORY: usize = 100;
/// Most events whose history one listing reads; with [`STATE_HISTORY`] it bounds a request's work.
const MAX_STATE_READS: usize = 2_000;

/// Where an event (or one of its destinations) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Some destination still has a job queued, in flight or waiting for a retry.
    Pending,
    /// Every destination answered 2xx (a group: one member did).
    Delivered,
    /// Some destination gave up: its job is in the dead letters (or was purged from them).
    Dead,
    /// A rule dropped it.
    Dropped,
    /// No rule matched and there is no default.
    Unrouted,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Dead => "dead",
            State::Dropped => "dropped",
            State::Unrouted => "unrouted",
        }
    }

    fn parse(s: &str) -> Result<State, ApiError> {
        [State::Pending, State::Delivered, State::Dead, State::Dropped, State::Unrouted]
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                ApiError::bad_request(format!("state {s:?} is not one of pending, delivered, dead, dropped, unrouted"))
            })
    }
}

/// One destination of an event and where it stands.
#[derive(Debug, PartialEq, Eq)]
pub struct DestinationState {
    pub name: String,
    pub rule: String,
    pub state: State,
}

/// Folds an event's history into the state of each destination routing chose (and of any a
/// replay added), and of the event as a whole. A destination is delivered once any of its jobs
/// answered 2xx; dead once every job it has is settled (dead-lettered, purged, cancelled,
/// discarded) and one died; pending otherwise, including while a job routing queued has no
/// history yet (an `any` member not tried so far).
pub fn event_state(head: &EventHead, history: &[HistoryEntry]) -> (State, Vec<DestinationState>) {
    // Jobs routing queued per destination; replays add theirs through `Replayed` entries.
    let mut destinations: Vec<(DestinationState, u32)> = match &head.disposition {
        Disposition::Dropped { .. } => return (State::Dropped, Vec::new()),
        Disposition::Unrouted if history.is_empty() => return (State::Unrouted, Vec::new()),
        Disposition::Unrouted => Vec::new(),
        Disposition::Routed { destinations } => destinations
            .iter()
            .map(|d| {
                let state =
                    DestinationState { name: d.destination.clone(), rule: d.rule.clone(), state: State::Pending };
                (state, d.jobs)
            })
            .collect(),
    };
    // Each job's last word, and which jobs a replay queued.
    let mut last: HashMap<u64, (&str, &Outcome)> = HashMap::new();
    let mut replayed: Vec<u64> = Vec::new();
    for h in history {
        last.insert(h.job, (&h.destination, &h.outcome));
        if h.outcome == Outcome::Replayed {
            replayed.push(h.job);
        }
        if !destinations.iter().any(|(d, _)| d.name == h.destination) {
            let rule = "replay".to_owned();
            destinations.push((DestinationState { name: h.destination.clone(), rule, state: State::Pending }, 0));
        }
    }
    let dead = |o: &Outcome| matches!(o, Outcome::DeadLettered { .. } | Outcome::Purged);
    let settled = |o: &Outcome| dead(o) || matches!(o, Outcome::Cancelled | Outcome::Discarded { .. });
    for (d, routed_jobs) in &mut destinations {
        let jobs: Vec<(u64, &Outcome)> =
            last.iter().filter(|(_, (dest, _))| *dest == d.name).map(|(id, (_, o))| (*id, *o)).collect();
        let routed_seen = jobs.iter().filter(|(id, _)| !replayed.contains(id)).count() as u32;
        let delivered =
            history.iter().any(|h| h.destination == d.name && matches!(h.outcome, Outcome::Delivered { .. }));
        d.state = if delivered {
            State::Delivered
        } else if routed_seen >= *routed_jobs
            && !jobs.is_empty()
            && jobs.iter().all(|(_, o)| settled(o))
            && jobs.iter().any(|(_, o)| dead(o))
        {
            State::Dead
        } else {
            State::Pending
        };
    }
    let destinations: Vec<DestinationState> = destinations.into_iter().map(|(d, _)| d).collect();
    let state = if destinations.iter().any(|d| d.state == State::Dead) {
        State::Dead
    } else if destinations.iter().all(|d| d.state == State::Delivered) {
        State::Delivered
    } else {
        State::Pending
    };
    (state, destinations)
}

/// What a listing or a bulk replay selects.
struct Filter {
    types: Option<WildMatch>,
    target: Option<String>,
    state: Option<State>,
    since_ms: u64,
    before: Option<EventCursor>,
}

impl Filter {
    fn parse(query: &Query) -> Result<Filter, ApiError> {
        let now = unix_now_ms();
        let until = query.get("until").map(|t| parse_time(t, now).map_err(ApiError::bad_request)).transpose()?;
        let cursor =
            query.get("cursor").map(|c| c.parse::<EventCursor>().map_err(ApiError::bad_request)).transpose()?;
        // `until` is a cursor just before its millisecond; a cursor further back wins.
        let until = until.map(|ms| EventCursor { received_at_ms: ms, event_id: String::new() });
        let before = match (cursor, until) {
            (Some(c), Some(u)) => Some(if u.received_at_ms < c.received_at_ms { u } else { c }),
            (c, u) => c.or(u),
        };
        Ok(Filter {
            types: query.get("type").map(WildMatch::new),
            target: query.get("target").map(str::to_owned),
            state: query.get("state").map(State::parse).transpose()?,
            since_ms: query
                .get("since")
                .map(|t| parse_time(t, now).map_err(ApiError::bad_request))
                .transpose()?
                .unwrap_or(0),
            before,
        })
    }

    fn is_narrowed(&self) -> bool {
        self.types.is_some() || self.target.is_some() || self.state.is_some() || self.since_ms > 0
    }

    /// Matching events newest first (each with the history its state was told from), up to
    /// `want`, looking at no more than [`MAX_SCAN`]; and the cursor to go on from, if the walk
    /// stopped before the end.
    async fn walk(&self, admin: &Admin, want: usize) -> Result<(Vec<Matched>, Option<EventCursor>), ApiError> {
        let (mut found, mut looked, mut read) = (Vec::new(), 0, 0);
        let mut before = self.before.clone();
        loop {
            let page = admin.store.events_before(before.as_ref(), self.since_ms, WALK_PAGE).await?;
            let end = page.len() < WALK_PAGE;
            for head in page {
                looked += 1;
                let cursor = EventCursor { received_at_ms: head.received_at_ms, event_id: head.id.clone() };
                if self.types.as_ref().is_none_or(|t| t.matches(&head.event_type)) {
                    read += 1;
                    if let Some(matched) = self.take(admin, head).await? {
                        found.push(matched);
                        if found.len() >= want {
                            return Ok((found, Some(cursor)));
                        }
                    }
                }
                if looked >= MAX_SCAN || read >= MAX_STATE_READS {
                    return Ok((found, Some(cursor)));
                }
                before = Some(cursor);
            }
            if end {
                return Ok((found, None));
            }
        }
    }

    /// An event whose type matched, with the history its state is told from, if the target and
    /// state filters select it.
    async fn take(&self, admin: &Admin, head: EventHead) -> Result<Option<Matched>, ApiError> {
        let history = admin.store.history(head.received_at_ms, &head.id, STATE_HISTORY).await?;
        Ok(self.selects(&head, &history).then_some((head, history)))
    }

    /// Whether an event whose type matched is selected by the target and state filters.
    fn selects(&self, head: &EventHead, history: &[HistoryEntry]) -> bool {
        let (state, dests) = event_state(head, history);
        let target_ok = self
            .target
            .as_ref()
            .is_none_or(|t| dests.iter().any(|d| &d.name == t) || history.iter().any(|h| &h.target == t));
        target_ok && self.state.is_none_or(|s| s == state)
    }
}

/// An event a walk selected, with the history its state was told from.
type Matched = (EventHead, Vec<HistoryEntry>);

/// Events read per store call during a walk.
const WALK_PAGE: usize = 500;

impl Admin {
    pub(crate) async fn events_page(&self, query: &Query) -> Result<EventsPage, ApiError> {
        if let Some(object) = query.get("object") {
            return self.events_mentioning(object, query).await;
        }
        let filter = Filter::parse(query)?;
        let (found, next) = filter.walk(self, query.limit()?).await?;
        let events = found.iter().map(|(head, history)| summary(head, history)).collect();
        Ok(EventsPage { events, next_cursor: next.map(|c| c.to_string()) })
    }

    /// The events whose body names `object` (`cus_…`), newest first, that the filter selects;
    /// a bounded look like every listing.
    async fn events_mentioning(&self, object: &str, query: &Query) -> Result<EventsPage, ApiError> {
        let filter = Filter::parse(query)?;
        let (want, needle) = (query.limit()?, format!("\"{object}\""));
        let (heads, next) = self
            .store
            .events_mentioning(&needle, filter.before.as_ref(), filter.since_ms, MAX_STATE_READS, MAX_SCAN)
            .await?;
        let mut events = Vec::new();
        for head in heads.into_iter().filter(|h| filter.types.as_ref().is_none_or(|t| t.matches(&h.event_type))) {
            if let Some((head, history)) = filter.take(self, head).await? {
                events.push(summary(&head, &history));
                if events.len() >= want {
                    let cursor = EventCursor { received_at_ms: head.received_at_ms, event_id: head.id.clone() };
                    return Ok(EventsPage { events, next_cursor: Some(cursor.to_string()) });
                }
            }
        }
        Ok(EventsPage { events, next_cursor: next.map(|c| c.to_string()) })
    }

    pub(crate) async fn event_detail(&self, id: &str) -> Result<EventDetail, ApiError> {
        let record = self.store.event(id).await?.ok_or_else(|| ApiError::not_found(format!("no event {id}")))?;
        let history = self.store.history(record.received_at_ms, id, MAX_HISTORY).await?;
        Ok(EventDetail {
            summary: summary(&head(&record), &history),
            attempts: history.iter().map(attempt).collect(),
            body: serde_json::from_slice(&record.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&record.body).into_owned())),
        })
    }

    pub(crate) async fn replay_event(&self, config: &Config, id: &str, to: Option<&str>) -> Result<Replayed, ApiError> {
        let record = self.store.event(id).await?.ok_or_else(|| ApiError::not_found(format!("no event {id}")))?;
        let jobs = replay_jobs(config, &head(&record), to, Some(&record.body))?;
        let jobs = self.queue_replay(id, &jobs).await?;
        Ok(Replayed { replayed: 1, jobs })
    }

    /// Replays every event the filter selects, at most [`MAX_BATCH`] per call.
    pub(crate) async fn replay_matching(&self, config: &Config, query: &Query) -> Result<Batch, ApiError> {
        if query.get("object").is_some() {
            return Err(ApiError::bad_request(
                "a bulk replay does not take `object`: list its events with GET /events?object=…, then replay each by id",
            ));
        }
        let filter = Filter::parse(query)?;
        if !filter.is_narrowed() {
            return Err(ApiError::bad_request(
                "a bulk replay needs a filter (type, target, state or since); replay one event by id otherwise",
            ));
        }
        let to = query.get("to");
        if let Some(to) = to {
            destination(config, to)?;
        }
        let (mut replayed, mut skipped) = (0, Vec::new());
        let (found, next) = filter.walk(self, MAX_BATCH).await?;
        for (head, _) in found {
            let body = match head.disposition {
                Disposition::Routed { .. } => None,
                _ => self.store.event(&head.id).await?.map(|r| r.body),
            };
            match replay_jobs(config, &head, to, body.as_deref()) {
                Ok(jobs) => {
                    self.queue_replay(&head.id, &jobs).await?;
                    replayed += 1;
                }
                Err(e) => skipped.push(Skipped { id: head.id.clone(), why: e.message().to_owned() }),
            }
        }
        Ok(Batch { replayed: Some(replayed), skipped, next_cursor: next.map(|c| c.to_string()), ..Batch::default() })
    }

    async fn queue_replay(&self, event_id: &str, jobs: &[NewJob]) -> Result<Vec<QueuedJob>, ApiError> {
        let mut jobs = jobs.to_vec();
        self.deliveries.skip_open_members(&mut jobs);
        let queued = self
            .store
            .replay(event_id, &jobs, unix_now_ms())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no event {event_id}")))?;
        for job in &queued {
            self.deliveries.wake(&job.target);
        }
        Ok(queued.iter().map(|j| QueuedJob { job: j.id.to_string(), target: j.target.clone() }).collect())
    }
}

/// The jobs a replay queues: to `to` if named; else to the destinations routing chose, as they
/// are configured now; an event that was dropped or unrouted is routed again by the current rules
/// (replaying it after fixing a rule is the usual reason to).
fn replay_jobs(
    config: &Config,
    head: &EventHead,
    to: Option<&str>,
    body: Option<&[u8]>,
) -> Result<Vec<NewJob>, ApiError> {
    if let Some(to) = to {
        return Ok(plan(config, &Decision::Deliver(vec![(destination(config, to)?, "replay")])).0);
    }
    match &head.disposition {
        Disposition::Routed { destinations } => {
            let mut chosen = Vec::new();
            for d in destinations {
                chosen.push((destination(config, &d.destination)?, d.rule.as_str()));
            }
            Ok(plan(config, &Decision::Deliver(chosen)).0)
        }
        Disposition::Dropped { .. } | Disposition::Unrouted => {
            let body = body.ok_or_else(|| ApiError::not_found("the event's body is gone"))?;
            let json: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let jobs = plan(config, &config.router.route(&json)).0;
            if jobs.is_empty() {
                return Err(ApiError::conflict(
                    "the current rules still send this event nowhere; name a target with `to`",
                ));
            }
            Ok(jobs)
        }
    }
}

/// A destination (target or group) of the current config, by name.
fn destination(config: &Config, name: &str) -> Result<usize, ApiError> {
    config
        .router
        .destinations
        .iter()
        .position(|d| d.name == name)
        .ok_or_else(|| ApiError::conflict(format!("{name:?} is not a target or group in the current config")))
}

fn head(record: &EventRecord) -> EventHead {
    EventHead {
        id: record.id.clone(),
        event_type: record.event_type.clone(),
        source: record.source.clone(),
        received_at_ms: record.received_at_ms,
        disposition: record.disposition.clone(),
    }
}

fn summary(head: &EventHead, history: &[HistoryEntry]) -> EventSummary {
    let (state, destinations) = event_state(head, history);
    let dropped_by = match &head.disposition {
        Disposition::Dropped { rule } => Some(rule.clone()),
        _ => None,
    };
    EventSummary {
        id: head.id.clone(),
        event_type: head.event_type.clone(),
        source: head.source.clone(),
        received_at: time(head.received_at_ms),
        state: state.name().to_owned(),
        dropped_by,
        destinations: destinations
            .into_iter()
            .map(|d| DestinationSummary { name: d.name, rule: d.rule, state: d.state.name().to_owned() })
            .collect(),
    }
}

fn attempt(h: &HistoryEntry) -> Attempt {
    let mut to = None;
    let (outcome, status, latency_ms, error, retry_at) = match &h.outcome {
        Outcome::Delivered { status, latency_ms } => ("delivered", Some(*status), Some(*latency_ms), None, None),
        Outcome::Failed { status, latency_ms, error, retry_at_ms } => {
            ("failed", *status, Some(*latency_ms), Some(error.clone()), retry_at_ms.map(time))
        }
        Outcome::DeadLettered { reason } => ("dead_lettered", None, None, Some(reason.clone()), None),
        Outcome::Cancelled => ("cancelled", None, None, None, None),
        Outcome::Discarded { reason } => ("discarded", None, None, Some(reason.clone()), None),
        Outcome::Replayed => ("replay_queued", None, None, None, None),
        Outcome::Purged => ("purged", None, None, None, None),
        Outcome::Rerouted { to: target, reason } => {
            to = Some(target.clone());
            ("rerouted", None, None, Some(reason.clone()), None)
        }
    };
    Attempt {
        at: time(h.at_ms),
        job: h.job.to_string(),
        target: h.target.clone(),
        destination: h.destination.clone(),
        attempt: h.attempt,
        replay: h.replay,
        outcome: outcome.to_owned(),
        status,
        latency_ms,
        error,
        retry_at,
        to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(disposition: Disposition) -> EventHead {
        EventHead {
            id: "evt_1".into(),
            event_type: "invoice.paid".into(),
            source: "s".into(),
            received_at_ms: 0,
            disposition,
        }
    }

    fn entry(job: u64, destination: &str, outcome: Outcome) -> HistoryEntry {
        HistoryEntry {
            at_ms: 0,
            job,
            target: destination.into(),
            destination: destination.into(),
            attempt: 1,
            replay: false,
            outcome,
        }
    }

    fn routed(names: &[&str]) -> Disposition {
        routed_jobs(&names.iter().map(|n| (*n, 1)).collect::<Vec<_>>())
    }

    fn routed_jobs(names: &[(&str, u32)]) -> Disposition {
        let destinations = names
            .iter()
            .map(|(n, jobs)| fanout_store::Routed { destination: n.to_string(), rule: "r".into(), jobs: *jobs })
            .collect();
        Disposition::Routed { destinations }
    }

    fn failed() -> Outcome {
        Outcome::Failed { status: Some(500), latency_ms: 1, error: "HTTP 500".into(), retry_at_ms: Some(5) }
    }

    #[test]
    fn states_fold_from_history() {
        let ok = Outcome::Delivered { status: 200, latency_ms: 1 };
        let dead = Outcome::DeadLettered { reason: "x".into() };
        let h = head(routed(&["a", "b"]));
        assert_eq!(event_state(&h, &[]).0, State::Pending);
        assert_eq!(event_state(&h, &[entry(1, "a", ok.clone())]).0, State::Pending, "b has not answered");
        let both = [entry(1, "a", ok.clone()), entry(2, "b", failed()), entry(2, "b", ok.clone())];
        assert_eq!(event_state(&h, &both).0, State::Delivered);
        let (state, dests) = event_state(&h, &[entry(1, "a", ok.clone()), entry(2, "b", dead.clone())]);
        assert_eq!((state, dests[1].state), (State::Dead, State::Dead));
        // A dead letter replayed is pending again, and delivered once its replay is.
        let revived = [entry(2, "b", dead.clone()), entry(3, "b", Outcome::Replayed)];
        assert_eq!(event_state(&head(routed(&["b"])), &revived).0, State::Pending);
        // An `any` group of two: one member dead, the other retrying or not yet tried, is not dead.
        let group = [entry(4, "g", dead.clone()), entry(5, "g", failed())];
        assert_eq!(event_state(&head(routed_jobs(&[("g", 2)])), &group).0, State::Pending);
        let untried = [entry(4, "g", dead.clone())];
        assert_eq!(event_state(&head(routed_jobs(&[("g", 2)])), &untried).0, State::Pending);
        let both = [entry(4, "g", dead.clone()), entry(5, "g", Outcome::Cancelled), entry(5, "g", dead.clone())];
        assert_eq!(event_state(&head(routed_jobs(&[("g", 2)])), &both).0, State::Dead);
        assert_eq!(event_state(&head(Disposition::Dropped { rule: "noise".into() }), &[]).0, State::Dropped);
        assert_eq!(event_state(&head(Disposition::Unrouted), &[]).0, State::Unrouted);
        // An unrouted event replayed to a target shows that destination.
        let (state, dests) = event_state(&head(Disposition::Unrouted), &[entry(6, "x", ok)]);
        assert_eq!((state, dests[0].name.as_str(), dests[0].rule.as_str()), (State::Delivered, "x", "replay"));
    }

    #[test]
    fn times_parse_in_three_forms() {
        let now = 10_000_000;
        assert_eq!(parse_time("1700000000", now).ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("1h", now).ok(), Some(now - 3_600_000));
        assert_eq!(parse_time("2026-11-24T00:00:00Z", now).ok(), Some(1_795_478_400_000));
        assert!(parse_time("yesterday-ish", now).is_err());
        assert!(parse_time("99999999999999999", now).is_err(), "overflow is an error, not a panic");
        assert_eq!(time(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(time(1_795_478_400_000), "2026-11-24T00:00:00.000Z");
    }
}
