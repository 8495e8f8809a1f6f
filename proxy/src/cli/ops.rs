//! The operator verbs (`events`, `event`, `replay`, `dead-letters`, `targets`, `pause`, `resume`):
//! clients of the admin API that print a table for people, or the API's JSON with `--json`.

use std::fmt::Write;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::tls;

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// The admin API of a running `fanout serve`.
    #[arg(long = "admin", env = "FANOUT_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// The admin token (admin.token in the proxy's config).
    #[arg(long, env = "FANOUT_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
pub(super) async fn call(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<Value> {
    call_with_body(admin, method, path, query, Bytes::new()).await
}

pub(super) async fn call_with_body(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<Value> {
    match exchange(admin, method, path, query, body).await? {
        Ok(value) => Ok(value),
        Err(not_found) => bail!("the admin API answered 404 Not Found: {not_found}"),
    }
}

/// Like [`call_with_body`], but "no such thing" (a 404) is `Ok(None)` rather than an error.
pub(super) async fn call_found(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<Option<Value>> {
    Ok(exchange(admin, method, path, query, body).await?.ok())
}

/// One request: the answer, `Ok(Err(message))` for a 404, or an error that says what to do.
async fn exchange(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<Result<Value, String>> {
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
    let res = tls::client(None)?.request(req).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the admin API at {}: {}. Is `fanout serve` running? Point --admin (or FANOUT_ADMIN_URL) at its admin listener",
            admin.url,
            tls::error_chain(&e)
        )
    })?;
    let status = res.status();
    let bytes = res.into_body().collect().await.context("the admin API's answer was cut off")?.to_bytes();
    let value: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    let message = value.get("error").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
    match status {
        s if s.is_success() => Ok(Ok(value)),
        // An unknown route is a version mismatch, not "no such thing".
        StatusCode::NOT_FOUND if !message.starts_with("no admin route") => Ok(Err(message)),
        StatusCode::UNAUTHORIZED => {
            bail!("the admin API refused the request: {message}. Pass the proxy's admin.token with --token or FANOUT_ADMIN_TOKEN")
        }
        s => bail!("the admin API answered {s}: {message}"),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
fn short_time(v: &Value) -> String {
    let t = s(v);
    t.get(..19).map(|t| t.replace('T', " ")).unwrap_or(t)
}

fn more(next: &Value, what: &str) {
    if let Some(cursor) = next.as_str() {
        println!("(more {what}: add --cursor {cursor})");
    }
}

pub async fn events(admin: &AdminArgs, filter: &EventFilter, page: PageArgs) -> anyhow::Result<()> {
    let mut query = filter.pairs();
    query.extend(page.pairs());
    let v = call(admin, Method::GET, "/events", &query).await?;
    if admin.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let dests: Vec<String> = e["destinations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| format!("{}:{}", s(&d["name"]), s(&d["state"])))
                .collect();
            vec![short_time(&e["received_at"]), s(&e["id"]), s(&e["type"]), s(&e["state"]), dests.join(" ")]
        })
        .collect();
    if rows.is_empty() {
        println!("no events match");
    } else {
        print!("{}", table(&["RECEIVED", "ID", "TYPE", "STATE", "DESTINATIONS"], &rows));
    }
    more(&v["next_cursor"], "events");
    Ok(())
}

pub async fn event(admin: &AdminArgs, id: &str) -> anyhow::Result<()> {
    let path = format!("/events/{}", encode_segment(id));
    let v = call(admin, Method::GET, &path, &[]).await?;
    if admin.json {
        print_json(&v);
        return Ok(());
    }
    println!("{}  {}", s(&v["id"]), s(&v["type"]));
    println!("received {} on source {}", s(&v["received_at"]), s(&v["source"]));
    println!("state    {}", s(&v["state"]));
    for d in v["destinations"].as_array().into_iter().flatten() {
        println!("  -> {} ({}), by rule {}", s(&d["name"]), s(&d["state"]), s(&d["rule"]));
    }
    if let Some(rule) = v["dropped_by"].as_str() {
        println!("  dropped by rule {rule}");
    }
    let rows: Vec<Vec<String>> = v["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let latency = a["latency_ms"].as_u64().map_or("-".to_owned(), |ms| format!("{ms}ms"));
            let mut outcome = s(&a["outcome"]);
            if a["replay"].as_bool() == Some(true) {
                outcome.push_str(" (replay)");
            }
            let mut error = s(&a["error"]);
            if let Some(next) = a["retry_at"].as_str() {
                error = format!("{error}; retry at {}", short_time(&Value::String(next.to_owned())));
            }
            vec![short_time(&a["at"]), s(&a["target"]), s(&a["attempt"]), outcome, s(&a["status"]), latency, error]
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
        let v = call(admin, Method::POST, &path, &to_query).await?;
        if admin.json {
            print_json(&v);
        } else {
            let targets: Vec<String> = v["jobs"].as_array().into_iter().flatten().map(|j| s(&j["target"])).collect();
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
        let v = call(admin, Method::POST, "/replay", &query).await?;
        replayed += v["replayed"].as_u64().unwrap_or(0);
        skipped.extend(v["skipped"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    report_batch(admin, "replayed", replayed, &skipped, "events");
    Ok(())
}

fn report_batch(admin: &AdminArgs, verb: &str, done: u64, skipped: &[Value], what: &str) {
    if admin.json {
        print_json(&serde_json::json!({ verb: done, "skipped": skipped }));
        return;
    }
    println!("{verb} {done} {what}");
    for s in skipped {
        println!("  skipped {}: {}", self::s(&s["id"]), self::s(&s["why"]));
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
    if let Some(id) = &args.id {
        let (method, path) = match action {
            "replay" => (Method::POST, format!("/dead-letters/{}/replay", encode_segment(id))),
            _ => (Method::DELETE, format!("/dead-letters/{}", encode_segment(id))),
        };
        let v = call(admin, method, &path, &[]).await?;
        if admin.json {
            print_json(&v);
        } else {
            println!("{} dead letter {id}", if action == "replay" { "replayed" } else { "purged" });
        }
        return Ok(());
    }
    let mut query: Vec<(&str, String)> = match (&args.target, args.all) {
        (Some(t), false) => vec![("target", t.clone())],
        (None, true) => vec![("all", "true".to_owned())],
        _ => bail!("say which dead letters to {action}: --id N, --target NAME, or --all"),
    };
    let verb = if action == "replay" { "replayed" } else { "purged" };
    let (mut done, mut skipped) = (0, Vec::new());
    loop {
        let v = call(admin, Method::POST, &format!("/dead-letters/{action}"), &query).await?;
        done += v[verb].as_u64().unwrap_or(0);
        skipped.extend(v["skipped"].as_array().cloned().unwrap_or_default());
        let Some(next) = v["next_cursor"].as_str() else { break };
        // The pass ends where the first call began, so letters that die again are not chased.
        query.retain(|(k, _)| *k != "cursor" && *k != "upto");
        query.push(("cursor", next.to_owned()));
        query.push(("upto", s(&v["upto"])));
    }
    report_batch(admin, verb, done, &skipped, "dead letters");
    Ok(())
}

async fn list_dead_letters(admin: &AdminArgs, args: &DeadLetterArgs) -> anyhow::Result<()> {
    let mut query = args.page.pairs();
    if let Some(t) = &args.target {
        query.push(("target", t.clone()));
    }
    let v = call(admin, Method::GET, "/dead-letters", &query).await?;
    if admin.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(&d["id"]),
                s(&d["event_id"]),
                s(&d["target"]),
                s(&d["attempts"]),
                short_time(&d["died_at"]),
                s(&d["error"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no dead letters");
    } else {
        print!("{}", table(&["ID", "EVENT", "TARGET", "ATTEMPTS", "DIED", "ERROR"], &rows));
    }
    more(&v["next_cursor"], "dead letters");
    Ok(())
}

pub async fn targets(admin: &AdminArgs) -> anyhow::Result<()> {
    let v = call(admin, Method::GET, "/targets", &[]).await?;
    if admin.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let state = match (t["paused"].as_bool(), t["inbox"]["online"].as_bool()) {
                (Some(true), _) => "paused",
                (_, Some(true)) => "listening",
                (_, Some(false)) => "offline",
                _ => "running",
            };
            let oldest = t["oldest_due_age_s"].as_u64().map_or("-".to_owned(), |s| format!("{s}s"));
            vec![
                s(&t["name"]),
                state.to_owned(),
                s(&t["queued"]),
                s(&t["in_flight"]),
                s(&t["dead_letters"]),
                oldest,
                short_time(&t["last_success"]),
                s(&t["last_error"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["TARGET", "STATE", "QUEUED", "IN FLIGHT", "DEAD", "OLDEST DUE", "LAST SUCCESS", "LAST ERROR"], &rows)
    );
    Ok(())
}

pub async fn pause(admin: &AdminArgs, target: &str, paused: bool) -> anyhow::Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let v = call(admin, Method::POST, &format!("/targets/{}/{verb}", encode_segment(target)), &[]).await?;
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
    let v = call(admin, Method::GET, &format!("/owners/{}", encode_segment(id)), &[]).await?;
    print_owner(admin, &v);
    Ok(())
}

pub async fn owners(admin: &AdminArgs, destination: Option<String>, page: PageArgs) -> anyhow::Result<()> {
    let mut query = page.pairs();
    query.extend(destination.map(|d| ("destination", d)));
    let v = call(admin, Method::GET, "/owners", &query).await?;
    if admin.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["owners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| vec![s(&o["id"]), owner_names(o), s(&o["via"]), s(&o["event_id"]), short_time(&o["since"])])
        .collect();
    print!("{}", table(&["OBJECT", "OWNER", "VIA", "EVENT", "SINCE"], &rows));
    more(&v["next_cursor"], "owners");
    Ok(())
}

/// Sets (or, with no destination, clears) who owns an object.
pub async fn own(admin: &AdminArgs, id: &str, destinations: &[String]) -> anyhow::Result<()> {
    let path = format!("/owners/{}", encode_segment(id));
    if destinations.is_empty() {
        let v = call(admin, Method::DELETE, &path, &[]).await?;
        if admin.json {
            print_json(&v);
        } else {
            println!("{id} has no owner now: its unrouted events go to the default");
        }
        return Ok(());
    }
    let body = serde_json::json!({ "owner": destinations }).to_string();
    let v = call_with_body(admin, Method::PUT, &path, &[], Bytes::from(body)).await?;
    print_owner(admin, &v);
    Ok(())
}

/// The owners the running proxy knows for these object ids (for `fanout route --live`).
pub async fn live_owners(admin: &AdminArgs, ids: &[String]) -> anyhow::Result<Vec<(String, crate::route::KnownOwner)>> {
    let mut known = Vec::new();
    for id in ids {
        let path = format!("/owners/{}", encode_segment(id));
        if let Some(v) = call_found(admin, Method::GET, &path, &[], Bytes::new()).await? {
            let destinations =
                v["owner"].as_array().into_iter().flatten().filter_map(|d| d.as_str().map(str::to_owned)).collect();
            known.push((id.clone(), crate::route::KnownOwner { destinations, via: s(&v["via"]) }));
        }
    }
    Ok(known)
}

fn owner_names(o: &Value) -> String {
    o["owner"].as_array().into_iter().flatten().map(s).collect::<Vec<_>>().join(", ")
}

fn print_owner(admin: &AdminArgs, v: &Value) {
    if admin.json {
        print_json(v);
    } else {
        let by = match v["via"].as_str() {
            Some("manual") => "set by hand".to_owned(),
            Some(rule) => format!("claimed by rule {rule:?} with event {}", s(&v["event_id"])),
            None => String::new(),
        };
        println!("{} is owned by {} ({by}, since {})", s(&v["id"]), owner_names(v), s(&v["since"]));
    }
}

fn encode_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
