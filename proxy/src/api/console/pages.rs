//! The console's pages as maud templates: typed values in (the admin API's own answers), HTML
//! out. maud escapes every `(value)` spliced in, so text from an event (a customer's name,
//! metadata, a description) is shown as text; nothing here marks a string as safe HTML except
//! `draw`'s SVG and JSON, which escape what they splice in the same way.

use maud::{html, Markup, DOCTYPE};

use super::draw;
use super::session::Session;
use crate::recent::{ReloadNote, TargetHour};
use crate::wire::admin::{Attempt, DeadLetter, EventDetail, EventSummary, OwnerInfo, TargetInfo};
use crate::wire::time;

/// The frame every page shares: navigation for the role signed in, and a sign-out form.
pub fn layout(title: &str, who: Option<&Session>, active: &str, body: Markup) -> Markup {
    let operator = who.is_some_and(|s| s.inbox().is_none());
    let tabs: &[(&str, &str, &str)] = if operator {
        &[
            ("overview", "/ui/", "Overview"),
            ("events", "/ui/events", "Events"),
            ("dead-letters", "/ui/dead-letters", "Dead letters"),
            ("owners", "/ui/owners", "Ownership"),
            ("targets", "/ui/targets", "Targets"),
            ("config", "/ui/config", "Config"),
        ]
    } else if who.is_some() {
        &[("events", "/ui/events", "My events")]
    } else {
        &[]
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fanout" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "fanout" }
                    nav {
                        @for (id, href, label) in tabs {
                            a.active[*id == active] href=(href) { (label) }
                        }
                    }
                    @if let Some(s) = who {
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.who {
                                @match s.inbox() {
                                    Some(inbox) => { "inbox " strong { (inbox) } }
                                    None => { "operator" }
                                }
                            }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login(error: Option<&str>, tokenless: bool) -> Markup {
    html! {
        section.login {
            h1 { "Sign in to fanout" }
            p {
                "Operators sign in with the admin token. Developers sign in with their inbox token "
                "(the one " code { "fanout listen" } " uses) and see the events routed to their inbox."
            }
            @if tokenless {
                p.note { "This proxy has no admin token: leave the field empty to sign in as an operator." }
            }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/ui/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" autofocus;
                button type="submit" { "Sign in" }
            }
        }
    }
}

pub fn message(title: &str, text: &str) -> Markup {
    html! { section.message { h1 { (title) } p.error role="alert" { (text) } p { a href="/ui/" { "Back to the console" } } } }
}

/// A target's row on the overview: what `/targets` says, its last hour, and a one-word state.
pub struct TargetRow {
    pub info: TargetInfo,
    pub hour: TargetHour,
}

impl TargetRow {
    /// delivering, idle, paused, failing (breaker open or last attempt failed), listening,
    /// offline; and the badge class.
    pub fn state(&self) -> (&'static str, &'static str) {
        let i = &self.info;
        if i.paused {
            return ("paused", "warn");
        }
        if let Some(p) = &i.inbox {
            return if p.online { ("listening", "ok") } else { ("offline", "muted") };
        }
        if let Some(b) = &i.breaker {
            if b.state != crate::wire::admin::CircuitState::Closed {
                return ("failing · breaker open", "bad");
            }
        }
        let failing = match (&i.last_failure, &i.last_success) {
            (Some(f), Some(s)) => f > s,
            (Some(_), None) => true,
            _ => false,
        };
        if failing {
            ("failing", "bad")
        } else if i.queued > 0 || i.in_flight > 0 || self.hour.delivered > 0 {
            ("delivering", "ok")
        } else {
            ("idle", "muted")
        }
    }
}

pub struct GroupRow {
    pub name: String,
    pub mode: String,
    pub members: Vec<String>,
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(ms) if ms.is_infinite() => "> 46 s".to_owned(),
        Some(ms) if ms >= 1000.0 => format!("≤ {:.1} s", ms / 1000.0),
        Some(ms) => format!("≤ {ms:.0} ms"),
    }
}

fn age(s: Option<u64>) -> String {
    match s {
        None => "–".to_owned(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
    }
}

pub fn overview(rows: &[TargetRow], groups: &[GroupRow], flows: &[(crate::recent::Edge, u64)]) -> Markup {
    html! {
        h1 { "Overview" }
        p.sub { "The last hour on this replica, per minute; queues and dead letters as the store holds them now." }
        div data-live="/ui/live/overview" {
            (overview_live(rows, groups, flows))
        }
    }
}

/// The part of the overview that refreshes itself.
pub fn overview_live(rows: &[TargetRow], groups: &[GroupRow], flows: &[(crate::recent::Edge, u64)]) -> Markup {
    html! {
        table.targets {
            thead { tr {
                th { "Target" } th { "State" } th.n { "Queued" } th.n { "In flight" } th.n { "Dead" }
                th { "Oldest due" } th.n { "Delivered 1h" } th.n { "Failed 1h" } th { "Per minute" }
                th { "p50" } th { "p99" }
            } }
            tbody {
                @for r in rows {
                    @let (state, class) = r.state();
                    tr data-target=(r.info.name) {
                        td { a href={"/ui/events?target=" (urlenc(&r.info.name))} { (r.info.name) } }
                        td { span class={"badge " (class)} { (state) } }
                        td.n { (r.info.queued) }
                        td.n { (r.info.in_flight) }
                        td.n {
                            @if r.info.dead_letters > 0 {
                                a href={"/ui/dead-letters?target=" (urlenc(&r.info.name))} { (r.info.dead_letters) }
                            } @else { "0" }
                        }
                        td { (age(r.info.oldest_due_age_s)) }
                        td.n { (r.hour.delivered) }
                        td.n { (r.hour.failed) }
                        td { (draw::sparkline(&r.hour.per_minute)) }
                        td { (ms(r.hour.p50_ms)) }
                        td { (ms(r.hour.p99_ms)) }
                    }
                }
            }
        }
        @if !groups.is_empty() {
            h2 { "Groups" }
            table.groups {
                thead { tr {
                    th { "Group" } th { "Mode" } th.n { "Queued" } th.n { "Dead" } th.n { "Delivered 1h" }
                    th.n { "Failed 1h" } th { "Members (state)" }
                } }
                tbody {
                    @for g in groups {
                        @let members: Vec<&TargetRow> = rows.iter().filter(|r| g.members.contains(&r.info.name)).collect();
                        tr data-group=(g.name) {
                            td { a href={"/ui/events?target=" (urlenc(&g.name))} { (g.name) } }
                            td { (g.mode) }
                            td.n { (members.iter().map(|r| r.info.queued).sum::<i64>()) }
                            td.n { (members.iter().map(|r| r.info.dead_letters).sum::<i64>()) }
                            td.n { (members.iter().map(|r| r.hour.delivered).sum::<u64>()) }
                            td.n { (members.iter().map(|r| r.hour.failed).sum::<u64>()) }
                            td {
                                @for m in &g.members {
                                    @let state = rows.iter().find(|r| &r.info.name == m).map(|r| r.state());
                                    span class={"badge " (state.map_or("muted", |s| s.1))} { (m) " · " (state.map_or("?", |s| s.0)) }
                                    " "
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Flow, last hour" }
        (draw::flow(flows))
    }
}

/// The filters of the events page, as the form shows them again.
#[derive(Default)]
pub struct EventsFilter {
    pub q: String,
    pub event_type: String,
    pub target: String,
    pub state: String,
    pub since: String,
}

impl EventsFilter {
    pub fn query_string(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("q", &self.q),
            ("type", &self.event_type),
            ("target", &self.target),
            ("state", &self.state),
            ("since", &self.since),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }
}

pub struct EventsView<'a> {
    pub filter: &'a EventsFilter,
    pub events: &'a [EventSummary],
    pub next_cursor: Option<&'a str>,
    /// Live: the first page, to which new events are added; the time (ms) it looked up to.
    pub live: Option<u64>,
    /// The owner of the object searched for (operators only).
    pub owner: Option<Option<&'a OwnerInfo>>,
    pub targets: &'a [String],
    /// A developer's view: the target is their inbox, and no filter picks another.
    pub inbox: Option<&'a str>,
    /// Whether a `fanout listen` is fetching that inbox's events.
    pub listening: Option<bool>,
}

pub fn events(v: &EventsView<'_>) -> Markup {
    let f = v.filter;
    let rows_url = format!("/ui/live/events?{}", f.query_string());
    html! {
        h1 { @if let Some(inbox) = v.inbox { "Events routed to " (inbox) } @else { "Events" } }
        @match (v.inbox, v.listening) {
            (Some(inbox), Some(false)) => {
                p.note { "Nobody is listening on this inbox: its events wait until "
                    code { "fanout listen --name " (inbox) } " runs." }
            }
            (Some(_), Some(true)) => { p.sub { "A " code { "fanout listen" } " is fetching this inbox's events." } }
            _ => {}
        }
        form.filters method="get" action="/ui/events" {
            input type="search" name="q" value=(f.q) placeholder="evt_…, or an object: cus_…, sub_…, in_…" size="34";
            input type="text" name="type" value=(f.event_type) placeholder="type, e.g. invoice.*" size="18";
            @if v.inbox.is_none() {
                select name="target" {
                    option value="" { "any target or group" }
                    @for t in v.targets { option value=(t) selected[*t == f.target] { (t) } }
                }
            }
            select name="state" {
                option value="" { "any state" }
                @for s in ["pending", "delivered", "dead", "dropped", "unrouted"] {
                    option value=(s) selected[s == f.state] { (s) }
                }
            }
            input type="text" name="since" value=(f.since) placeholder="since: 1h, or RFC 3339" size="14";
            button type="submit" { "Filter" }
            a.clear href="/ui/events" { "Clear" }
        }
        @if let Some(owner) = v.owner {
            p.owner {
                "Owner of " code { (f.q) } ": "
                @match owner {
                    Some(o) => { strong { (o.owner.join(", ")) } " (claimed by " (o.via) ", since " (o.since) ")" }
                    None => { "nobody: routing has not claimed it" }
                }
            }
        }
        table.events {
            thead { tr { th { "Received" } th { "Event" } th { "Type" } th { "State" } th { "Destinations" } } }
            @if let Some(after) = v.live {
                tbody #rows data-tail=(rows_url) data-after=(after) { (event_rows(v.events, true)) }
            } @else {
                tbody #rows { (event_rows(v.events, true)) }
            }
        }
        @if v.live.is_some() { p.sub.live-note { "New events appear as they arrive." } }
        @if let Some(next) = v.next_cursor {
            p { a.next href={"/ui/events?" (f.query_string()) "&cursor=" (urlenc(next))} { "Older events →" } }
        }
    }
}

/// The rows of events; `whole`: a page (which says when nothing matched), not a tail's new rows.
pub fn event_rows(events: &[EventSummary], whole: bool) -> Markup {
    html! {
        @if events.is_empty() && whole {
            tr.none { td.empty colspan="5" { "No events match." } }
        }
        @for e in events {
            tr data-event=(e.id) {
                td.time { (short(&e.received_at)) }
                td { a href={"/ui/events/" (urlenc(&e.id))} { code { (e.id) } } }
                td { (e.event_type) }
                td { span class={"badge " (state_class(&e.state))} { (e.state) } }
                td {
                    @for d in &e.destinations {
                        span class={"badge " (state_class(&d.state))} { (d.name) }
                        " "
                        span.by { (routed_by(&d.rule)) }
                    }
                    @if let Some(rule) = &e.dropped_by { span.muted { "dropped by " (rule) } }
                }
            }
        }
    }
}

fn state_class(state: &str) -> &'static str {
    match state {
        "delivered" => "ok",
        "dead" => "bad",
        "pending" => "warn",
        _ => "muted",
    }
}

/// `2026-12-02T18:20:27.123Z` → `2026-12-02 18:20:27`.
fn short(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}

/// Why a destination got the event, in a few words for a listing.
fn routed_by(rule: &str) -> String {
    match rule.strip_prefix("owner:") {
        Some(object) => format!("owner of {object}"),
        None if rule == crate::route::DEFAULT_RULE => "default".to_owned(),
        None if rule == "replay" => "replay".to_owned(),
        None => format!("by {rule}"),
    }
}

/// Why a destination got the event, in words.
fn why(rule: &str) -> Markup {
    html! {
        @if let Some(object) = rule.strip_prefix("owner:") {
            "sticky ownership: no rule matched, and " code { (object) } " belongs to it"
        } @else if rule == crate::route::DEFAULT_RULE {
            "no rule matched: the default route"
        } @else if rule == "replay" {
            "replayed here by an operator"
        } @else {
            "rule " strong { (rule) }
        }
    }
}

pub struct EventView<'a> {
    pub detail: &'a EventDetail,
    /// Where a replay may go: the routed destinations (empty value), or these.
    pub replay_to: &'a [String],
    pub csrf: &'a str,
    pub replayed: Option<u64>,
}

pub fn event(v: &EventView<'_>) -> Markup {
    let e = &v.detail.summary;
    html! {
        p.crumbs { a href="/ui/events" { "← Events" } }
        h1 { code { (e.id) } }
        p.sub { (e.event_type) " · from " (e.source) " · received " (short(&e.received_at)) " · "
            span class={"badge " (state_class(&e.state))} { (e.state) } }
        @if let Some(n) = v.replayed { p.flash role="status" { "Replay queued (" (n) " job(s)). Its attempts appear below." } }
        section.replay {
            form method="post" action={"/ui/events/" (urlenc(&e.id)) "/replay"} {
                input type="hidden" name="csrf" value=(v.csrf);
                label for="to" { "Replay to " }
                select #to name="to" {
                    @if v.replay_to.len() != 1 { option value="" { "the destinations routing chose" } }
                    @for t in v.replay_to { option value=(t) { (t) } }
                }
                button type="submit" { "Replay" }
            }
        }
        div data-live={"/ui/live/events/" (urlenc(&e.id))} { (event_live(v.detail)) }
        h2 { "Body" }
        pre.json { code { (draw::json(&v.detail.body)) } }
    }
}

/// The routing decision and every destination's attempts: the part of an event's page that
/// refreshes itself, so a replay's attempt appears without a reload.
pub fn event_live(d: &EventDetail) -> Markup {
    let e = &d.summary;
    html! {
        h2 { "Where it went, and why" }
        @if e.state == "unrouted" && e.destinations.is_empty() {
            p.decision { "No rule matched, no object it names has an owner, and there is no default: recorded, delivered nowhere." }
        }
        @if let Some(rule) = &e.dropped_by { p.decision { "Dropped by rule " strong { (rule) } ": recorded, delivered nowhere." } }
        @for dest in &e.destinations {
            section.destination data-destination=(dest.name) {
                h3 { (dest.name) " " span class={"badge " (state_class(&dest.state))} { (dest.state) } }
                p.decision { (why(&dest.rule)) }
                (timeline(d.attempts.iter().filter(|a| a.destination == dest.name)))
            }
        }
    }
}

fn timeline<'a>(attempts: impl Iterator<Item = &'a Attempt>) -> Markup {
    let attempts: Vec<&Attempt> = attempts.collect();
    html! {
        @if attempts.is_empty() {
            p.muted { "No attempt yet." }
        } @else {
            ol.timeline {
                @for a in attempts {
                    li class={"outcome-" (a.outcome)} {
                        span.time { (short(&a.at)) }
                        " "
                        span class={"badge " (outcome_class(&a.outcome))} { (a.outcome.replace('_', " ")) }
                        @if a.attempt > 0 { " attempt " (a.attempt) }
                        @if a.target != a.destination { " to " strong { (a.target) } }
                        @if a.replay { " " span.badge.muted { "replay" } }
                        @if let Some(s) = a.status { " · HTTP " (s) }
                        @if let Some(l) = a.latency_ms { " · " (l) " ms" }
                        @if let Some(to) = &a.to { " → " (to) }
                        @if let Some(e) = &a.error { div.error { (e) } }
                        @if let Some(r) = &a.retry_at { div.muted { "next try " (short(r)) } }
                    }
                }
            }
        }
    }
}

fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "delivered" => "ok",
        "failed" | "dead_lettered" => "bad",
        "replay_queued" | "rerouted" => "warn",
        _ => "muted",
    }
}

pub struct DeadLettersView<'a> {
    pub letters: &'a [DeadLetter],
    pub next_cursor: Option<&'a str>,
    pub target: &'a str,
    pub targets: &'a [String],
    pub csrf: &'a str,
    pub done: Option<String>,
}

pub fn dead_letters(v: &DeadLettersView<'_>) -> Markup {
    html! {
        h1 { "Dead letters" }
        @if let Some(done) = &v.done { p.flash role="status" { (done) } }
        form.filters method="get" action="/ui/dead-letters" {
            select name="target" {
                option value="" { "every target" }
                @for t in v.targets { option value=(t) selected[*t == v.target] { (t) } }
            }
            button type="submit" { "Show" }
        }
        @if !v.letters.is_empty() {
            div.bulk {
                @for action in ["replay", "purge"] {
                    form method="post" action={"/ui/dead-letters/" (action)} {
                        input type="hidden" name="csrf" value=(v.csrf);
                        @if v.target.is_empty() { input type="hidden" name="all" value="true"; }
                        @else { input type="hidden" name="target" value=(v.target); }
                        button type="submit" class=(action) {
                            (if action == "replay" { "Replay all" } else { "Purge all" })
                            @if !v.target.is_empty() { " of " (v.target) }
                            "…"
                        }
                    }
                }
            }
        }
        table.dead {
            thead { tr { th { "Died" } th { "Event" } th { "Target" } th.n { "Attempts" } th { "Last error" } th {} } }
            tbody {
                @if v.letters.is_empty() { tr { td.empty colspan="6" { "No dead letters." } } }
                @for d in v.letters {
                    tr data-dead=(d.id) {
                        td.time { (short(&d.died_at)) }
                        td { a href={"/ui/events/" (urlenc(&d.event_id))} { code { (d.event_id) } } }
                        td { (d.target) @if d.destination != d.target { " (" (d.destination) ")" } }
                        td.n { (d.attempts) }
                        td.error { (d.error) }
                        td.actions {
                            @for action in ["replay", "purge"] {
                                form method="post" action={"/ui/dead-letters/" (d.id) "/" (action)} {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button type="submit" class=(action) { (if action == "replay" { "Replay…" } else { "Purge…" }) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = v.next_cursor {
            p { a.next href={"/ui/dead-letters?target=" (urlenc(v.target)) "&cursor=" (urlenc(next))} { "More →" } }
        }
    }
}

/// The step between a destructive button and its effect: the same form again, confirmed.
pub fn confirm(question: &str, action: &str, fields: &[(&str, String)], csrf: &str, back: &str) -> Markup {
    html! {
        section.confirm {
            h1 { "Are you sure?" }
            p { (question) }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="confirm" value="yes";
                @for (k, v) in fields { input type="hidden" name=(k) value=(v); }
                button #confirm type="submit" { "Yes, go ahead" }
                " "
                a href=(back) { "Cancel" }
            }
        }
    }
}

pub struct OwnersView<'a> {
    pub lookup: &'a str,
    pub found: Option<Option<&'a OwnerInfo>>,
    pub recent: &'a [OwnerInfo],
    pub destinations: &'a [String],
    pub csrf: &'a str,
    pub done: Option<String>,
}

pub fn owners(v: &OwnersView<'_>) -> Markup {
    html! {
        h1 { "Ownership" }
        p.sub { "Which environment owns an object (a customer, a subscription): routing sends the object's unmatched events there." }
        @if let Some(done) = &v.done { p.flash role="status" { (done) } }
        form.filters method="get" action="/ui/owners" {
            input type="search" name="id" value=(v.lookup) placeholder="cus_…, sub_…" size="30";
            button type="submit" { "Look up" }
        }
        @if let Some(found) = v.found {
            section.owner-card {
                h2 { code { (v.lookup) } }
                @match found {
                    Some(o) => {
                        p { "Owned by " strong { (o.owner.join(", ")) } " · claimed by " (o.via) " · since " (short(&o.since)) }
                        form method="post" action="/ui/owners/clear" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            input type="hidden" name="id" value=(v.lookup);
                            button type="submit" { "Clear owner" }
                        }
                    }
                    None => { p { "Nobody owns it." } }
                }
                form method="post" action="/ui/owners/set" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="id" value=(v.lookup);
                    label for="owner" { "Set owner " }
                    select #owner name="owner" { @for d in v.destinations { option value=(d) { (d) } } }
                    button type="submit" { "Set" }
                }
                p { a href={"/ui/events?q=" (urlenc(v.lookup))} { "Events that name it →" } }
            }
        }
        h2 { "Owners" }
        table.owners {
            thead { tr { th { "Object" } th { "Owner" } th { "Claimed by" } th { "Since" } } }
            tbody {
                @if v.recent.is_empty() { tr { td.empty colspan="4" { "No object has an owner yet." } } }
                @for o in v.recent {
                    tr {
                        td { a href={"/ui/owners?id=" (urlenc(&o.id))} { code { (o.id) } } }
                        td { (o.owner.join(", ")) }
                        td { (o.via) }
                        td.time { (short(&o.since)) }
                    }
                }
            }
        }
    }
}

pub fn targets(rows: &[TargetRow], csrf: &str) -> Markup {
    html! {
        h1 { "Targets" }
        table.targets {
            thead { tr { th { "Target" } th { "State" } th { "Where" } th.n { "Concurrency" } th { "Breaker" } th { "Last error" } th {} } }
            tbody {
                @for r in rows {
                    @let (state, class) = r.state();
                    @let i = &r.info;
                    tr data-target=(i.name) {
                        td { strong { (i.name) } }
                        td { span class={"badge " (class)} { (state) } }
                        td { @if i.inbox.is_some() { "inbox" } @else { code { (i.url) } } }
                        td.n { (i.concurrency) }
                        td {
                            @if let Some(b) = &i.breaker {
                                (b.state.as_str())
                                @if b.failures > 0 { " · " (b.failures) " failures in a row" }
                                @if let Some(p) = &b.next_probe { " · next probe " (short(p)) }
                            } @else { "–" }
                        }
                        td.error { (i.last_error.as_deref().unwrap_or("")) }
                        td.actions {
                            @let action = if i.paused { "resume" } else { "pause" };
                            form method="post" action={"/ui/targets/" (urlenc(&i.name)) "/" (action)} {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" class=(action) { (if i.paused { "Resume" } else { "Pause" }) }
                            }
                            @if i.breaker.as_ref().is_some_and(|b| b.state != crate::wire::admin::CircuitState::Closed) {
                                form method="post" action={"/ui/targets/" (urlenc(&i.name)) "/reset"} {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "Close breaker" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn config(table: &str, last: Option<&ReloadNote>) -> Markup {
    html! {
        h1 { "Config" }
        @if let Some(r) = last {
            p class={"reload " (if r.applied { "ok" } else { "bad" })} {
                "Last reload, " (short(&time(r.at_ms))) ": " (r.message)
            }
        }
        p.sub { "The routing table as " code { "fanout check" } " prints it; secrets show as their prefix only. Inboxes created at run time are included." }
        pre.config { (table) }
    }
}

/// A path segment or query value: everything but letters, digits and `-._~` percent-encoded.
pub fn urlenc(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}
