//! The operator verbs (`events`, `event`, `replay`, `dead-letters`, `targets`, `pause`, `resume`):
//! clients of the admin API that print a table for people, or the API's JSON with `--json`.

use std::fmt::Write;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::client as outbound;
use crate::wire::admin::{
    Batch, BreakerReset, CircuitState, DeadLetterDone, DeadLettersPage, Disowned, EventDetail, EventsPage, OwnerInfo,
    OwnersPage, Paused, Replayed, SetOwner, Skipped, Targets,
};
use crate::wire::ErrorBody;

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// The admin API of a running `fanout serve`.
    #[arg(long = "admin", env = "FANOUT_ADMIN_URL", default_value = AdminArgs::DEFAULT_URL)]
    pub url: String,
    /// The admin token (admin.token in the proxy's config).
    #[arg(long, env = "FANOUT_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl AdminArgs {
    pub const DEFAULT_URL: &'static str = "http://127.0.0.1:8081";
}

/// One page of a list: its size, and where the previous one stopped.
#[derive(Args, Debug, Clone)]
pub struct PageArgs {
    /// Items per page (at most 500).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Go on from where a previous page stopped.
    #[arg(long)]
    pub cursor: Option<String>,
}

impl PageArgs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("limit", self.limit.to_string())];
        q.extend(self.cursor.clone().map(|c| ("cursor", c)));
        q
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct EventFilter {
    /// Event type; `*` is a wildcard (`invoice.*`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// A destination (target or group) the event went to.
    #[arg(long)]
    pub target: Option<String>,
    /// pending, delivered, dead, dropped or unrouted.
    #[arg(long)]
    pub state: Option<String>,
    /// Received at or after: RFC 3339, unix seconds, or a duration ago (`2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Received before (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
}

impl EventFilter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let fields = [
            ("type", &self.event_type),
            ("target", &self.target),
            ("state", &self.state),
            ("since", &self.since),
            ("until", &self.until),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        q
    }
}

/// A call to the admin API; errors say what to do (start the proxy, fix the token, ...).
pub(super) async fn call<T: DeserializeOwned>(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<T> {
    call_with_body(admin, method, path, query, Bytes::new()).await
}

pub(super) async fn call_with_body<T: DeserializeOwned>(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<T> {
    match exchange(admin, method, path, query, body).await? {
        Ok(value) => Ok(value),
        Err(not_found) => bail!("the admin API answered 404 Not Found: {not_found}"),
    }
}

/// Like [`call_with_body`], but "no such thing" (a 404) is `Ok(None)` rather than an error.
pub(super) async fn call_found<T: DeserializeOwned>(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<Option<T>> {
    Ok(exchange(admin, method, path, query, Bytes::new()).await?.ok())
}

/// One request: the answer, `Ok(Err(message))` for a 404, or an error that says what to do.
async fn exchange<T: DeserializeOwned>(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<Result<T, String>> {
    let mut url = format!("{}{path}", admin.url.trim_end_matches('/'));
    if !query.is_empty() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            q.append_pair(k, v);
        }
        url = format!("{url}?{}", q.finish());
    }
    let mut req = Request::builder().method(method).uri(&url).header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = &admin.token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(body)).with_context(|| format!("{url} is not a valid admin URL"))?;
    let res = outbound::client(None)?.request(req).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the admin API at {}: {}. Is `fanout serve` running? Point --admin (or FANOUT_ADMIN_URL) at its admin listener",
            admin.url,
            outbound::error_chain(&e)
        )
    })?;
    let status = res.status();
    let bytes = res.into_body().collect().await.context("the admin API's answer was cut off")?.to_bytes();
    if status.is_success() {
        let answer = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the admin API's answer is not what this fanout expects (are both the same version?): {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        return Ok(Ok(answer));
    }
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
    match status {
        // An unknown route is a version mismatch, not "no such thing".
        StatusCode::NOT_FOUND if !message.starts_with("no admin route") => Ok(Err(message)),
        StatusCode::UNAUTHORIZED => {
            bail!("the admin API refused the request: {message}. Pass the proxy's admin.token with --token or FANOUT_ADMIN_TOKEN")
        }
        s => bail!("the admin API answered {s}: {message}"),
    }
}

pub(super) fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// An optional value in a table cell.
fn opt(v: &Option<impl ToString>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// A plain text table: columns padded to their widest cell.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, header.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

/// `2026-11-24T10:00:00.123Z` → `2026-11-24 10:00:00`.
fn short_time(t: &str) -> String {
    t.get(..19).map(|t| t.replace('T', " ")).unwrap_or_else(|| t.to_owned())
}

fn short_time_opt(t: &Option<String>) -> String {
    t.as_deref().map_or_else(|| "-".to_owned(), short_time)
}

fn more(next: &Option<String>, what: &str) {
    if let Some(cursor) = next {
        println!("(more {what}: add --cursor {cursor})");
    }
}

/// A path segment, percent-encoded.
pub(super) fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub async fn events(
    admin: &AdminArgs,
    filter: &EventFilter,
    object: Option<String>,
    page: PageArgs,
) -> anyhow::Result<()> {
    let mut query = filter.pairs();
    query.extend(object.map(|o| ("object", o)));
    query.extend(page.pairs());
    let page: EventsPage = call(admin, Method::GET, "/events", &query).await?;
    if admin.json {
        print_json(&page);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .events
        .iter()
        .map(|e| {
            let dests: Vec<String> = e.destinations.iter().map(|d| format!("{}:{}", d.name, d.state)).collect();
            vec![short_time(&e.received_at), e.id.clone(), e.event_type.clone(), e.state.clone(), dests.join(" ")]
        })
        .collect();
    if rows.is_empty() {
        println!("no events match");
    } else {
        print!("{}", table(&["RECEIVED", "ID", "TYPE", "STATE", "DESTINATIONS"], &rows));
    }
    more(&page.next_cursor, "events");
    Ok(())
}

pub async fn event(admin: &AdminArgs, id: &str) -> anyhow::Result<()> {
    let path = format!("/events/{}", encode_segment(id));
    let v: EventDetail = call(admin, Method::GET, &path, &[]).await?;
    if admin.json {
        print_json(&v);
        return Ok(());
    }
    let e = &v.summary;
    println!("{}  {}", e.id, e.event_type);
    println!("received {} on source {}", e.received_at, e.source);
    println!("state    {}", e.state);
    for d in &e.destinations {
        println!("  -> {} ({}), by rule {}", d.name, d.state, d.rule);
    }
    if let Some(rule) = &e.dropped_by {
        println!("  dropped by rule {rule}");
    }
    let rows: Vec<Vec<String>> = v
        .attempts
        .iter()
        .map(|a| {
            let latency = a.latency_ms.map_or("-".to_owned(), |ms| format!("{ms}ms"));
            let outcome = if a.replay { format!("{} (replay)", a.outcome) } else { a.outcome.clone() };
            let mut error = opt(&a.error);
            if let Some(next) = &a.retry_at {
                error = format!("{error}; retry at {}", short_time(next));
            }
            vec![short_time(&a.at), a.target.clone(), a.attempt.to_string(), outcome, opt(&a.status), latency, error]
        })
        .collect();
    println!();
    if rows.is_empty() {
        println!("no attempts yet");
    } else {
        print!("{}", table(&["TIME", "TARGET", "ATTEMPT", "OUTCOME", "STATUS", "LATENCY", "ERROR"], &rows));
    }
    Ok(())
}

pub async fn replay(
    admin: &AdminArgs,
    id: Option<String>,
    to: Option<String>,
    filter: &EventFilter,
) -> anyhow::Result<()> {
    let to_query: Vec<(&str, String)> = to.iter().map(|t| ("to", t.clone())).collect();
    if let Some(id) = id {
        if !filter.pairs().is_empty() {
            bail!("give an event id or a filter (--type, --target, --state, --since, --until), not both");
        }
        let path = format!("/events/{}/replay", encode_segment(&id));
        let v: Replayed = call(admin, Method::POST, &path, &to_query).await?;
        if admin.json {
            print_json(&v);
        } else {
            let targets: Vec<&str> = v.jobs.iter().map(|j| j.target.as_str()).collect();
            println!("replay of {id} queued to {}", targets.join(", "));
        }
        return Ok(());
    }
    if filter.pairs().is_empty() {
        bail!("say what to replay: an event id, or a filter (--type, --target, --state, --since, --until)");
    }
    let (mut replayed, mut skipped, mut cursor) = (0, Vec::new(), None::<String>);
    loop {
        let mut query = filter.pairs();
        query.extend(to_query.iter().cloned());
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let v: Batch = call(admin, Method::POST, "/replay", &query).await?;
        replayed += v.replayed.unwrap_or(0);
        skipped.extend(v.skipped);
        match v.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    report_batch(admin, "replayed", replayed, &skipped, "events");
    Ok(())
}

fn report_batch(admin: &AdminArgs, verb: &str, done: u64, skipped: &[Skipped], what: &str) {
    if admin.json {
        let mut total = Batch { skipped: skipped.to_vec(), ..Batch::default() };
        *(if verb == "replayed" { &mut total.replayed } else { &mut total.purged }) = Some(done);
        print_json(&total);
        return;
    }
    println!("{verb} {done} {what}");
    for s in skipped {
        println!("  skipped {}: {}", s.id, s.why);
    }
}

pub struct DeadLetterArgs {
    pub target: Option<String>,
    pub id: Option<String>,
    pub all: bool,
    pub action: Option<&'static str>,
    pub page: PageArgs,
}

pub async fn dead_letters(admin: &AdminArgs, args: DeadLetterArgs) -> anyhow::Result<()> {
    let Some(action) = args.action else {
        if args.id.is_some() || args.all {
            bail!("--id and --all go with --replay or --purge");
        }
        return list_dead_letters(admin, &args).await;
    };
    let verb = if action == "replay" { "replayed" } else { "purged" };
    if let Some(id) = &args.id {
        let (method, path) = match action {
            "replay" => (Method::POST, format!("/dead-letters/{}/replay", encode_segment(id))),
            _ => (Method::DELETE, format!("/dead-letters/{}", encode_segment(id))),
        };
        let v: DeadLetterDone = call(admin, method, &path, &[]).await?;
        if admin.json {
            print_json(&v);
        } else {
            println!("{verb} dead letter {id}");
        }
        return Ok(());
    }
    let mut query: Vec<(&str, String)> = match (&args.target, args.all) {
        (Some(t), false) => vec![("target", t.clone())],
        (None, true) => vec![("all", "true".to_owned())],
        _ => bail!("say which dead letters to {action}: --id N, --target NAME, or --all"),
    };
    let (mut done, mut skipped) = (0, Vec::new());
    loop {
        let v: Batch = call(admin, Method::POST, &format!("/dead-letters/{action}"), &query).await?;
        done += v.replayed.or(v.purged).unwrap_or(0);
        skipped.extend(v.skipped);
        let Some(next) = v.next_cursor else { break };
        // The pass ends where the first call began, so letters that die again are not chased.
        query.retain(|(k, _)| *k != "cursor" && *k != "upto");
        query.push(("cursor", next));
        query.extend(v.upto.map(|u| ("upto", u)));
    }
    report_batch(admin, verb, done, &skipped, "dead letters");
    Ok(())
}

async fn list_dead_letters(admin: &AdminArgs, args: &DeadLetterArgs) -> anyhow::Result<()> {
    let mut query = args.page.pairs();
    if let Some(t) = &args.target {
        query.push(("target", t.clone()));
    }
    let page: DeadLettersPage = call(admin, Method::GET, "/dead-letters", &query).await?;
    if admin.json {
        print_json(&page);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .dead_letters
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.event_id.clone(),
                d.target.clone(),
                d.attempts.to_string(),
                short_time(&d.died_at),
                d.error.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no dead letters");
    } else {
        print!("{}", table(&["ID", "EVENT", "TARGET", "ATTEMPTS", "DIED", "ERROR"], &rows));
    }
    more(&page.next_cursor, "dead letters");
    Ok(())
}

pub async fn targets(admin: &AdminArgs) -> anyhow::Result<()> {
    let v: Targets = call(admin, Method::GET, "/targets", &[]).await?;
    if admin.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .targets
        .iter()
        .map(|t| {
            let breaker = t.breaker.as_ref().map(|b| b.state).filter(|s| *s != CircuitState::Closed);
            let state = match (t.paused, t.inbox.as_ref().map(|i| i.online), breaker) {
                (true, ..) => "paused".to_owned(),
                (_, Some(true), _) => "listening".to_owned(),
                (_, Some(false), _) => "offline".to_owned(),
                (_, _, Some(breaker)) => format!("breaker {}", breaker.as_str()),
                _ => "running".to_owned(),
            };
            vec![
                t.name.clone(),
                state,
                t.queued.to_string(),
                t.in_flight.to_string(),
                t.dead_letters.to_string(),
                t.oldest_due_age_s.map_or("-".to_owned(), |s| format!("{s}s")),
                short_time_opt(&t.last_success),
                opt(&t.last_error),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["TARGET", "STATE", "QUEUED", "IN FLIGHT", "DEAD", "OLDEST DUE", "LAST SUCCESS", "LAST ERROR"], &rows)
    );
    Ok(())
}

/// Closes a target's circuit breaker by hand.
pub async fn reset_breaker(admin: &AdminArgs, target: &str) -> anyhow::Result<()> {
    let path = format!("/targets/{}/reset", encode_segment(target));
    let v: BreakerReset = call(admin, Method::POST, &path, &[]).await?;
    if admin.json {
        print_json(&v);
    } else if v.was_open {
        println!("{target}: circuit breaker closed; its queue drains again (it opens again if the target still fails)");
    } else {
        println!("{target}: circuit breaker was already closed");
    }
    Ok(())
}

pub async fn pause(admin: &AdminArgs, target: &str, paused: bool) -> anyhow::Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let path = format!("/targets/{}/{verb}", encode_segment(target));
    let v: Paused = call(admin, Method::POST, &path, &[]).await?;
    if admin.json {
        print_json(&v);
    } else if paused {
        println!("{target} paused: it keeps queueing and delivers nothing until `fanout resume {target}`");
    } else {
        println!("{target} resumed");
    }
    Ok(())
}

/// Who owns an object (sticky ownership routing).
pub async fn owner(admin: &AdminArgs, id: &str) -> anyhow::Result<()> {
    let v: OwnerInfo = call(admin, Method::GET, &format!("/owners/{}", encode_segment(id)), &[]).await?;
    print_owner(admin, &v);
    Ok(())
}

pub async fn owners(admin: &AdminArgs, destination: Option<String>, page: PageArgs) -> anyhow::Result<()> {
    let mut query = page.pairs();
    query.extend(destination.map(|d| ("destination", d)));
    let page: OwnersPage = call(admin, Method::GET, "/owners", &query).await?;
    if admin.json {
        print_json(&page);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .owners
        .iter()
        .map(|o| vec![o.id.clone(), o.owner.join(", "), o.via.clone(), opt(&o.event_id), short_time(&o.since)])
        .collect();
    print!("{}", table(&["OBJECT", "OWNER", "VIA", "EVENT", "SINCE"], &rows));
    more(&page.next_cursor, "owners");
    Ok(())
}

/// Sets (or, with no destination, clears) who owns an object.
pub async fn own(admin: &AdminArgs, id: &str, destinations: &[String]) -> anyhow::Result<()> {
    let path = format!("/owners/{}", encode_segment(id));
    if destinations.is_empty() {
        let v: Disowned = call(admin, Method::DELETE, &path, &[]).await?;
        if admin.json {
            print_json(&v);
        } else {
            println!("{id} has no owner now: its unrouted events go to the default");
        }
        return Ok(());
    }
    let body = serde_json::to_vec(&SetOwner { owner: crate::wire::admin::OneOrMany::Many(destinations.to_vec()) })?;
    let v: OwnerInfo = call_with_body(admin, Method::PUT, &path, &[], Bytes::from(body)).await?;
    print_owner(admin, &v);
    Ok(())
}

/// The owners the running proxy knows for these object ids (for `fanout route --live`).
pub async fn live_owners(admin: &AdminArgs, ids: &[String]) -> anyhow::Result<Vec<(String, crate::route::KnownOwner)>> {
    let mut known = Vec::new();
    for id in ids {
        let path = format!("/owners/{}", encode_segment(id));
        if let Some(o) = call_found::<OwnerInfo>(admin, Method::GET, &path, &[]).await? {
            known.push((id.clone(), crate::route::KnownOwner { destinations: o.owner, via: o.via }));
        }
    }
    Ok(known)
}

fn print_owner(admin: &AdminArgs, o: &OwnerInfo) {
    if admin.json {
        print_json(o);
    } else {
        let by = match o.via.as_str() {
            "manual" => "set by hand".to_owned(),
            rule => format!("claimed by rule {rule:?} with event {}", opt(&o.event_id)),
        };
        println!("{} is owned by {} ({by}, since {})", o.id, o.owner.join(", "), o.since);
    }
}
