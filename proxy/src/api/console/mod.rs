//! The web console, on the admin listener under `/ui`: where every event went and why, and the
//! operator's buttons (replay, dead letters, ownership, pause), as server-rendered pages over the
//! same typed answers the admin API sends (`wire::admin`). Developers sign in with their inbox
//! token and see, and replay, only what was routed to their inbox.
//!
//! Why server-rendered: no build step and nothing fetched from a CDN (assets are compiled in),
//! escaping by default in one place (maud), and pages that work without script; a few lines of
//! script (`assets/console.js`) only refresh the parts marked live.
//!
//! Invariants:
//! - Every request but the sign-in page and the assets needs a signed session cookie
//!   (`session.rs`); every POST needs the session's CSRF token and an Origin (or Fetch
//!   Metadata) of the console itself.
//! - With no admin token, only a loopback host name is served (a DNS-rebinding page cannot
//!   sign itself in as an operator).
//! - Every answer forbids inline script, framing and other origins (content security policy).
//! - Work runs on the admin runtime, behind acknowledgements, like the admin API's.

mod draw;
mod pages;
pub mod session;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use maud::Markup;

use self::pages::{EventsFilter, GroupRow, TargetRow};
use self::session::{Role, Session};
use super::admin::{Admin, Query};
use crate::clock::unix_now_ms;
use crate::config::Config;
use crate::http::{host, loopback_host, read_body, ApiError, Body};
use crate::route::DestinationKind;
use crate::wire::parse_time;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
/// Largest form a console page posts.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Events on a page.
const PAGE: &str = "50";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

type Answer = Result<Response<Body>, ApiError>;

/// Answers a request under `/ui` (or `/`, which leads there).
pub async fn handle(admin: Arc<Admin>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/ui/assets/console.css") => return asset(CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/ui/assets/console.js") => return asset(JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/" | "/ui") => return see_other("/ui/"),
        _ => {}
    }
    let runner = admin.clone();
    let work = async move {
        let ctx = Ctx::new(admin, req.headers());
        let session = ctx.session.clone();
        let answer = ctx.route(req).await;
        answer.unwrap_or_else(|e| error_page(e, session.as_ref()))
    };
    match runner.background.run(work).await {
        Ok(res) => res,
        Err(e) => error_page(ApiError::internal("a console request failed", &e), None),
    }
}

/// One request's view of the console: the config it is served under, who is signed in.
struct Ctx {
    admin: Arc<Admin>,
    config: Arc<Config>,
    session: Option<Session>,
    key: cookie::Key,
    /// Reached over HTTPS (a TLS-terminating proxy says so): the cookie is marked Secure.
    secure: bool,
    now: u64,
}

impl Ctx {
    fn new(admin: Arc<Admin>, headers: &HeaderMap) -> Ctx {
        let config = admin.live.load_full();
        let key = session::key(config.admin.token.as_ref(), &admin.console_seed);
        let now = unix_now_ms();
        let session = session::read(headers, &key).filter(|s| s.holds(&config, now));
        let secure = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        Ctx { admin, config, session, key, secure, now }
    }

    async fn route(&self, req: Request<Incoming>) -> Answer {
        let method = req.method().clone();
        if self.config.admin.token.is_none() && !loopback_host(req.headers(), req.uri()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this admin listener has no token, so the console answers only to a loopback host name \
                 (127.0.0.1, [::1], localhost); set admin.token to serve it under another name",
            ));
        }
        let path: Vec<String> = req
            .uri()
            .path()
            .trim_start_matches("/ui")
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let query = Query::parse(req.uri().query());
        if method == Method::POST {
            same_origin(req.headers(), req.uri())?;
            let form = self.form(req).await?;
            if path == ["login"] {
                return self.sign_in(&form);
            }
            let session = self.session.as_ref().ok_or_else(signed_out)?;
            if !session.csrf_matches(form.get("csrf")) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this form has no valid CSRF token (it did not come from a console page of this session); \
                     reload the page and try again",
                ));
            }
            if path == ["logout"] {
                return Ok(with_cookie(see_other("/ui/login"), &session::clear_cookie(self.secure)));
            }
            self.allowed(session, &path)?;
            let answer = self.act(session, &path, &form).await?;
            // What the operator changed is on disk before the page says it was done.
            self.admin.store.durable().await?;
            return Ok(answer);
        }
        if method != Method::GET {
            return Err(ApiError::method_not_allowed("GET, POST", "the console takes GET and POST"));
        }
        if path == ["login"] {
            if self.session.is_some() {
                return Ok(see_other("/ui/"));
            }
            return Ok(self.page(StatusCode::OK, "Sign in", "", pages::login(None, self.tokenless())));
        }
        let Some(session) = &self.session else {
            // A live part of a page asks its script to reload (and so to sign in again).
            return if path.first() == Some(&"live") { Err(signed_out()) } else { Ok(see_other("/ui/login")) };
        };
        self.allowed(session, &path)?;
        self.show(session, &path, &query).await
    }

    fn tokenless(&self) -> bool {
        self.config.admin.token.is_none()
    }

    /// Developers reach their events, one event, and its replay; the rest is for operators.
    fn allowed(&self, session: &Session, path: &[&str]) -> Result<(), ApiError> {
        let developer_may = matches!(
            path,
            [] | ["events"] | ["events", _] | ["events", _, "replay"] | ["live", "events"] | ["live", "events", _]
        );
        if session.inbox().is_some() && !developer_may {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "signed in with an inbox token: this page is for operators (sign in with the admin token)",
            ));
        }
        Ok(())
    }

    fn sign_in(&self, form: &Query) -> Answer {
        let token = form.get("token").unwrap_or("");
        let role = match &self.config.admin.token {
            Some(admin) if admin.matches(token) => Some(Role::Operator),
            None if token.is_empty() => Some(Role::Operator),
            _ if token.is_empty() => None,
            _ => self.config.inbox_for_token(token).and_then(|t| match &t.endpoint {
                crate::config::Endpoint::Inbox { token } => {
                    Some(Role::Developer { inbox: t.name.clone(), token: session::fingerprint(token) })
                }
                crate::config::Endpoint::Url(_) => None,
            }),
        };
        let Some(role) = role else {
            tracing::warn!("console sign-in refused: wrong token");
            let body =
                pages::login(Some("Wrong token: it is neither the admin token nor an inbox's."), self.tokenless());
            return Ok(self.page(StatusCode::UNAUTHORIZED, "Sign in", "", body));
        };
        let who = match &role {
            Role::Operator => "an operator".to_owned(),
            Role::Developer { inbox, .. } => format!("inbox {inbox}"),
        };
        let session = Session::new(role, self.now)
            .map_err(|e| ApiError::internal("cannot make a console session (the OS random source failed)", &e))?;
        tracing::info!("console: {who} signed in");
        Ok(with_cookie(see_other("/ui/"), &session::set_cookie(&session, &self.key, self.secure)))
    }

    async fn show(&self, s: &Session, path: &[&str], query: &Query) -> Answer {
        let admin = &self.admin;
        match path {
            [] if s.inbox().is_some() => Ok(see_other("/ui/events")),
            [] => {
                let (rows, groups, flows) = self.overview().await?;
                Ok(self.page(StatusCode::OK, "Overview", "overview", pages::overview(&rows, &groups, &flows)))
            }
            ["live", "overview"] => {
                let (rows, groups, flows) = self.overview().await?;
                Ok(fragment(pages::overview_live(&rows, &groups, &flows)))
            }
            ["events"] => self.events(s, query, false).await,
            ["live", "events"] => self.events(s, query, true).await,
            ["events", id] => {
                let detail = self.event_for(s, id).await?;
                let replay_to = match s.inbox() {
                    Some(inbox) => vec![inbox.to_owned()],
                    None => self.destinations(),
                };
                let replayed = query.get("replayed").and_then(|n| n.parse().ok());
                let view = pages::EventView { detail: &detail, replay_to: &replay_to, csrf: &s.csrf, replayed };
                Ok(self.page(StatusCode::OK, id, "events", pages::event(&view)))
            }
            ["live", "events", id] => Ok(fragment(pages::event_live(&self.event_for(s, id).await?))),
            ["dead-letters"] => {
                let target = query.get("target").unwrap_or("");
                let mut q = vec![("limit", PAGE.to_owned())];
                q.extend(query.get("target").map(|t| ("target", t.to_owned())));
                q.extend(query.get("cursor").map(|c| ("cursor", c.to_owned())));
                let page = admin.dead_letters(&Query::from_pairs(q)).await?;
                let done = done_message(query);
                let view = pages::DeadLettersView {
                    letters: &page.dead_letters,
                    next_cursor: page.next_cursor.as_deref(),
                    target,
                    targets: &self.target_names(),
                    csrf: &s.csrf,
                    done,
                };
                Ok(self.page(StatusCode::OK, "Dead letters", "dead-letters", pages::dead_letters(&view)))
            }
            ["owners"] => {
                let lookup = query.get("id").unwrap_or("").trim();
                let found = if lookup.is_empty() { None } else { Some(admin.owner(lookup).await?) };
                let mut q = vec![("limit", PAGE.to_owned())];
                q.extend(query.get("cursor").map(|c| ("cursor", c.to_owned())));
                let recent = admin.owners(&Query::from_pairs(q)).await?;
                let view = pages::OwnersView {
                    lookup,
                    found: found.as_ref().map(Option::as_ref),
                    recent: &recent.owners,
                    destinations: &self.destinations(),
                    csrf: &s.csrf,
                    done: done_message(query),
                };
                Ok(self.page(StatusCode::OK, "Ownership", "owners", pages::owners(&view)))
            }
            ["targets"] => {
                let (rows, _, _) = self.overview().await?;
                Ok(self.page(StatusCode::OK, "Targets", "targets", pages::targets(&rows, &s.csrf)))
            }
            ["config"] => {
                let table = crate::config::describe(&self.config);
                let last = admin.metrics.recent.last_reload();
                Ok(self.page(StatusCode::OK, "Config", "config", pages::config(&table, last.as_ref())))
            }
            _ => Err(ApiError::not_found("no such console page")),
        }
    }

    /// A state-changing form, CSRF already checked. A destructive one without `confirm=yes`
    /// answers with the question first.
    async fn act(&self, s: &Session, path: &[&str], form: &Query) -> Answer {
        let admin = &self.admin;
        match path {
            ["events", id, "replay"] => {
                // A developer's replay goes to their own inbox, whatever the form says.
                let to = match s.inbox() {
                    Some(inbox) => {
                        self.event_for(s, id).await?;
                        Some(inbox)
                    }
                    None => form.get("to"),
                };
                let replayed = admin.replay_event(&self.config, id, to).await?;
                tracing::info!(event_id = %id, to = ?to, "console: replayed");
                Ok(see_other(&format!("/ui/events/{}?replayed={}", pages::urlenc(id), replayed.jobs.len())))
            }
            ["dead-letters", action @ ("replay" | "purge")] => self.dead_letters_of(s, action, form).await,
            ["dead-letters", id, action @ ("replay" | "purge")] => self.dead_letter(s, id, action, form).await,
            ["owners", "set"] => {
                let id = form.get("id").ok_or_else(|| ApiError::bad_request("name an object"))?;
                let owner = form.get("owner").ok_or_else(|| ApiError::bad_request("choose an owner"))?;
                admin.set_owner_to(&self.config, id, vec![owner.to_owned()]).await?;
                Ok(see_other(&format!("/ui/owners?id={}&set=1", pages::urlenc(id))))
            }
            ["owners", "clear"] => {
                let id = form.get("id").ok_or_else(|| ApiError::bad_request("name an object"))?;
                admin.disown(id).await?;
                tracing::info!(object = %id, "console: ownership cleared");
                Ok(see_other(&format!("/ui/owners?id={}&cleared=1", pages::urlenc(id))))
            }
            ["targets", name, action @ ("pause" | "resume")] => {
                admin.pause(name, *action == "pause").await?;
                tracing::info!(target = %name, "console: {action}d");
                Ok(see_other("/ui/targets"))
            }
            ["targets", name, "reset"] => {
                admin.reset_breaker(name)?;
                tracing::info!(target = %name, "console: breaker closed by hand");
                Ok(see_other("/ui/targets"))
            }
            _ => Err(ApiError::not_found("no such console action")),
        }
    }

    /// Replays or purges a target's dead letters, or all, after the confirmation step.
    async fn dead_letters_of(&self, s: &Session, action: &str, form: &Query) -> Answer {
        let (admin, confirmed) = (&self.admin, form.get("confirm") == Some("yes"));
        let target = form.get("target");
        if target.is_none() && form.get("all").is_none() {
            return Err(ApiError::bad_request("say which dead letters: a target, or all"));
        }
        if !confirmed {
            let counts = admin.store.counts().await?;
            let n: i64 = match target {
                Some(t) => counts.dead.get(t).copied().unwrap_or(0),
                None => counts.dead.values().sum(),
            };
            let whose = target.map_or("every target".to_owned(), |t| format!("target {t}"));
            let fields: Vec<(&str, String)> = match target {
                Some(t) => vec![("target", t.to_owned())],
                None => vec![("all", "true".to_owned())],
            };
            let what = format!("the {n} dead letter(s) of {whose}? At most 1,000 go per press.");
            return Ok(self.confirm_dead_letters(s, action, &what, &format!("/ui/dead-letters/{action}"), &fields));
        }
        let mut q: Vec<(&str, String)> = Vec::new();
        q.extend(target.map(|t| ("target", t.to_owned())));
        q.extend(form.get("all").map(|a| ("all", a.to_owned())));
        let batch = admin.dead_letters_batch(&self.config, &Query::from_pairs(q), action == "replay").await?;
        let n = batch.replayed.or(batch.purged).unwrap_or(0);
        tracing::info!(target = ?target, n, "console: dead letters {action}ed");
        let more = if batch.next_cursor.is_some() { "&more=1" } else { "" };
        let back = target.map(|t| format!("&target={}", pages::urlenc(t))).unwrap_or_default();
        Ok(see_other(&format!("/ui/dead-letters?{action}ed={n}&skipped={}{more}{back}", batch.skipped.len())))
    }

    /// Replays or purges one dead letter, after the confirmation step.
    async fn dead_letter(&self, s: &Session, id: &str, action: &str, form: &Query) -> Answer {
        let (admin, confirmed) = (&self.admin, form.get("confirm") == Some("yes"));
        let job = super::admin::job_id(id)?;
        if !confirmed {
            let letter = admin.store.find_dead_letter(job).await?;
            let letter = letter.ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))?;
            let what = format!(
                "dead letter {id}: event {} to {} (last error: {})?",
                letter.job.event_id, letter.job.target, letter.error
            );
            return Ok(self.confirm_dead_letters(s, action, &what, &format!("/ui/dead-letters/{id}/{action}"), &[]));
        }
        if action == "replay" {
            admin.replay_dead_letter(&self.config, job).await?;
        } else {
            admin.purge_dead_letter(job).await?;
        }
        tracing::info!(dead_letter = %id, "console: dead letter {action}ed");
        Ok(see_other(&format!("/ui/dead-letters?{action}ed=1")))
    }

    /// The confirmation step of a dead-letter replay or purge: the same form again, confirmed.
    fn confirm_dead_letters(
        &self,
        s: &Session,
        action: &str,
        what: &str,
        to: &str,
        fields: &[(&str, String)],
    ) -> Response<Body> {
        let verb = if action == "replay" { "Replay" } else { "Purge (delete for good)" };
        let body = pages::confirm(&format!("{verb} {what}"), to, fields, &s.csrf, "/ui/dead-letters");
        self.page(StatusCode::OK, "Confirm", "dead-letters", body)
    }

    async fn events(&self, s: &Session, query: &Query, rows_only: bool) -> Answer {
        let filter = EventsFilter {
            q: query.get("q").unwrap_or("").trim().to_owned(),
            event_type: query.get("type").unwrap_or("").to_owned(),
            target: query.get("target").unwrap_or("").to_owned(),
            state: query.get("state").unwrap_or("").to_owned(),
            since: query.get("since").unwrap_or("").to_owned(),
        };
        let object = !filter.q.is_empty() && !filter.q.starts_with("evt_");
        if filter.q.starts_with("evt_") {
            // An event id: its page, if this session may see it.
            self.event_for(s, &filter.q).await?;
            return Ok(see_other(&format!("/ui/events/{}", pages::urlenc(&filter.q))));
        }
        let mut q = vec![("limit", PAGE.to_owned())];
        let target = s.inbox().map(str::to_owned).or_else(|| Some(filter.target.clone()).filter(|t| !t.is_empty()));
        q.extend(target.map(|t| ("target", t)));
        for (k, v) in [("type", &filter.event_type), ("state", &filter.state)] {
            if !v.is_empty() {
                q.push((k, v.clone()));
            }
        }
        // A live tail asks only for what arrived since its last look (in whole seconds, with a
        // margin its script deduplicates), so a refresh walks seconds of events, never the log.
        let since = match (&filter.since, rows_only.then(|| query.get("after")).flatten()) {
            (_, Some(after)) => {
                let after: u64 = after.parse().map_err(|_| ApiError::bad_request("after is a time in ms"))?;
                let own = if filter.since.is_empty() {
                    0
                } else {
                    parse_time(&filter.since, self.now).map_err(ApiError::bad_request)?
                };
                Some((after.max(own) / 1000).to_string())
            }
            (since, None) => Some(since.clone()).filter(|s| !s.is_empty()),
        };
        q.extend(since.map(|s| ("since", s)));
        if object {
            q.push(("object", filter.q.clone()));
        }
        let cursor = query.get("cursor");
        q.extend(cursor.map(|c| ("cursor", c.to_owned())));
        let mut page = self.admin.events_page(&Query::from_pairs(q)).await?;
        if let Some(inbox) = s.inbox() {
            for e in &mut page.events {
                only_inbox(e, inbox, |_| false);
            }
        }
        if rows_only {
            let mut res = fragment(pages::event_rows(&page.events, false));
            let next = self.now.saturating_sub(LIVE_MARGIN_MS).to_string();
            if let Ok(v) = HeaderValue::from_str(&next) {
                res.headers_mut().insert("x-fanout-after", v);
            }
            return Ok(res);
        }
        let owner = match (object, s.inbox()) {
            (true, None) => Some(self.admin.owner(&filter.q).await?),
            _ => None,
        };
        let view = pages::EventsView {
            filter: &filter,
            events: &page.events,
            next_cursor: page.next_cursor.as_deref(),
            live: (cursor.is_none() && !object).then(|| self.now.saturating_sub(LIVE_MARGIN_MS)),
            owner: owner.as_ref().map(Option::as_ref),
            targets: &self.destinations(),
            inbox: s.inbox(),
            listening: s.inbox().and_then(|i| self.admin.deliveries.status().get(i)?.inbox.as_ref().map(|p| p.online)),
        };
        Ok(self.page(StatusCode::OK, "Events", "events", pages::events(&view)))
    }

    /// An event as this session may see it: a developer sees only events routed to their inbox,
    /// and of those only their inbox's part (another environment's attempts are not theirs).
    async fn event_for(&self, s: &Session, id: &str) -> Result<crate::wire::admin::EventDetail, ApiError> {
        let mut detail = self.admin.event_detail(id).await?;
        if let Some(inbox) = s.inbox() {
            detail.attempts.retain(|a| a.destination == inbox || a.target == inbox);
            let attempts = &detail.attempts;
            only_inbox(&mut detail.summary, inbox, |d| attempts.iter().any(|a| a.destination == d));
            if detail.summary.destinations.is_empty() {
                // The same answer as an event that does not exist: no probing other inboxes' ids.
                return Err(ApiError::not_found(format!("no event {id}")));
            }
        }
        Ok(detail)
    }

    async fn overview(&self) -> Result<(Vec<TargetRow>, Vec<GroupRow>, Vec<(crate::recent::Edge, u64)>), ApiError> {
        let targets = self.admin.targets(&self.config).await?;
        let recent = &self.admin.metrics.recent;
        let rows = targets
            .targets
            .into_iter()
            .map(|info| TargetRow { hour: recent.target_hour(&info.name, self.now), info })
            .collect();
        let groups = self
            .config
            .router
            .destinations
            .iter()
            .filter_map(|d| match &d.kind {
                DestinationKind::Group { mode, members } => Some(GroupRow {
                    name: d.name.clone(),
                    mode: format!("{mode:?}").to_lowercase(),
                    members: members.iter().map(|&m| self.config.targets[m].name.clone()).collect(),
                }),
                DestinationKind::Target(_) => None,
            })
            .collect();
        Ok((rows, groups, recent.flows(self.now)))
    }

    fn destinations(&self) -> Vec<String> {
        self.config.router.destinations.iter().map(|d| d.name.clone()).collect()
    }

    fn target_names(&self) -> Vec<String> {
        self.config.targets.iter().map(|t| t.name.clone()).collect()
    }

    async fn form(&self, req: Request<Incoming>) -> Result<Query, ApiError> {
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, MAX_FORM_BYTES, self.config.body_read_timeout).await?;
        Ok(Query::from_pairs(form_urlencoded::parse(&body).into_owned().collect::<Vec<_>>()))
    }

    fn page(&self, status: StatusCode, title: &str, active: &str, body: Markup) -> Response<Body> {
        html(status, pages::layout(title, self.session.as_ref(), active, body))
    }
}

/// A live tail looks back this far past its last look: an event received just before a look but
/// committed just after it is still found (the script skips rows it has).
const LIVE_MARGIN_MS: u64 = 5_000;

/// An event as a developer may see it: only their inbox's destinations (and any `also` keeps,
/// such as a group their inbox was tried in), and a state told from those alone, so another
/// environment's names and health stay out of their view.
fn only_inbox(e: &mut crate::wire::admin::EventSummary, inbox: &str, also: impl Fn(&str) -> bool) {
    e.destinations.retain(|d| d.name == inbox || also(&d.name));
    e.dropped_by = None;
    let states: Vec<&str> = e.destinations.iter().map(|d| d.state.as_str()).collect();
    e.state = if states.contains(&"dead") {
        "dead"
    } else if !states.is_empty() && states.iter().all(|s| *s == "delivered") {
        "delivered"
    } else {
        "pending"
    }
    .to_owned();
}

fn signed_out() -> ApiError {
    ApiError::unauthorized("not signed in (or the session ended): sign in again")
}

/// What a redirect after an action says happened (from its own query, shown escaped).
fn done_message(query: &Query) -> Option<String> {
    let n = |k: &str| query.get(k).and_then(|v| v.parse::<u64>().ok());
    let mut parts = Vec::new();
    if let Some(n) = n("replayed") {
        parts.push(format!("{n} dead letter(s) queued for delivery again"));
    }
    if let Some(n) = n("purged") {
        parts.push(format!("{n} dead letter(s) purged"));
    }
    if let Some(n) = n("skipped").filter(|n| *n > 0) {
        parts.push(format!("{n} skipped (their target or event is gone)"));
    }
    if query.get("more").is_some() {
        parts.push("more remain: press again".to_owned());
    }
    if query.get("set").is_some() {
        parts.push("owner set".to_owned());
    }
    if query.get("cleared").is_some() {
        parts.push("owner cleared".to_owned());
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A POST from a browser says where it came from: the console's own origin, or nothing a
/// browser would send cross-site. Tools that send neither header still need the CSRF token.
fn same_origin(headers: &HeaderMap, uri: &http::Uri) -> Result<(), ApiError> {
    // Behind a reverse proxy that rewrites Host, the name the browser used is X-Forwarded-Host.
    let forwarded = headers.get("x-forwarded-host").and_then(|h| h.to_str().ok()).map(str::to_owned);
    let hosts: Vec<String> = host(headers, uri).into_iter().chain(forwarded).collect();
    let refused = |what: &str| {
        tracing::warn!("console: refused a cross-origin POST ({what})");
        Err(ApiError::new(StatusCode::FORBIDDEN, format!("cross-origin request refused ({what})")))
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if own.is_none_or(|o| !hosts.iter().any(|h| o.eq_ignore_ascii_case(h))) {
            return refused(&format!("Origin {origin}"));
        }
    } else if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return refused(&format!("Sec-Fetch-Site {}", site.to_str().unwrap_or("?")));
        }
    }
    Ok(())
}

fn with_headers(mut res: Response<Body>, content_type: &'static str) -> Response<Body> {
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn html(status: StatusCode, markup: Markup) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(markup.into_string())));
    *res.status_mut() = status;
    with_headers(res, "text/html; charset=utf-8")
}

/// A live part of a page, without the frame.
fn fragment(markup: Markup) -> Response<Body> {
    html(StatusCode::OK, markup)
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut res = with_headers(Response::new(Full::new(Bytes::from_static(body.as_bytes()))), content_type);
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    res
}

fn see_other(location: &str) -> Response<Body> {
    let mut res = with_headers(Response::new(Full::new(Bytes::new())), "text/html; charset=utf-8");
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

fn with_cookie(mut res: Response<Body>, cookie: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The console's face of the one HTTP edge: the error's status and message, as a page.
fn error_page(e: ApiError, who: Option<&Session>) -> Response<Body> {
    e.into_answer(|status, message| {
        let title = status.canonical_reason().unwrap_or("Error");
        html(status, pages::layout(title, who, "", pages::message(title, message)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_consoles_own_origin_may_post() {
        let uri: http::Uri = "/ui/logout".parse().unwrap();
        let own = headers(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090")]);
        assert!(same_origin(&own, &uri).is_ok());
        let other_port = headers(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:8080")]);
        assert_eq!(same_origin(&other_port, &uri).unwrap_err().status(), StatusCode::FORBIDDEN);
        let null = headers(&[("host", "127.0.0.1:9090"), ("origin", "null")]);
        assert!(same_origin(&null, &uri).is_err());
        let cross = headers(&[("host", "a:1"), ("sec-fetch-site", "cross-site")]);
        assert!(same_origin(&cross, &uri).is_err());
        assert!(same_origin(&headers(&[("host", "a:1"), ("sec-fetch-site", "same-origin")]), &uri).is_ok());
        assert!(same_origin(&headers(&[("host", "a:1")]), &uri).is_ok(), "a tool; its CSRF token decides");
        let proxied = headers(&[
            ("host", "127.0.0.1:8081"),
            ("x-forwarded-host", "fanout.internal"),
            ("origin", "https://fanout.internal"),
        ]);
        assert!(same_origin(&proxied, &uri).is_ok(), "behind a reverse proxy");
    }
}
