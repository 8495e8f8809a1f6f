//! `fanout backfill`: after an outage, fetch what Stripe sent (its Events API, `GET /v1/events`)
//! and hand every event to the running proxy's admin API, which routes it and drops the ones it
//! already has (the same dedup as webhooks).
//!
//! Stripe lists events newest first. Events are ingested oldest first (a later event's routing
//! may depend on an earlier one's), without holding the whole window in memory: a first walk
//! keeps only each page's cursor, a second fetches the pages again from the oldest.

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ops::{self, AdminArgs};
use crate::clock::unix_now_ms;
use crate::http::client::{self as outbound, HttpClient};
use crate::wire::admin::Ingested;
use crate::wire::parse_time;

/// Stripe's largest page.
const PAGE: usize = 100;

#[derive(Deserialize)]
struct Page {
    data: Vec<Box<RawValue>>,
    has_more: bool,
}

/// Stripe's error answer: `{"error": {"message": ...}}`.
#[derive(Deserialize)]
struct StripeError {
    error: StripeErrorDetail,
}

#[derive(Deserialize)]
struct StripeErrorDetail {
    message: String,
}

#[derive(Deserialize)]
struct EventId {
    id: String,
}

struct Stripe {
    client: HttpClient,
    base: String,
    key: String,
    created_gte: u64,
    types: Vec<String>,
}

impl Stripe {
    async fn page(&self, starting_after: Option<&str>) -> anyhow::Result<Page> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", &PAGE.to_string());
        q.append_pair("created[gte]", &self.created_gte.to_string());
        for t in &self.types {
            q.append_pair("types[]", t);
        }
        if let Some(after) = starting_after {
            q.append_pair("starting_after", after);
        }
        let url = format!("{}/v1/events?{}", self.base.trim_end_matches('/'), q.finish());
        let req = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.key))
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("{} is not a valid Stripe API base URL", self.base))?;
        let res =
            self.client.request(req).await.with_context(|| format!("cannot reach Stripe's API at {}", self.base))?;
        let status = res.status();
        let body = res.into_body().collect().await.context("Stripe's answer was cut off")?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<StripeError>(&body)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
            if status == http::StatusCode::UNAUTHORIZED {
                bail!("Stripe refused the API key ({message}); set STRIPE_API_KEY to a test-mode secret key");
            }
            bail!("Stripe's Events API answered {status}: {message}");
        }
        serde_json::from_slice(&body).context("Stripe's Events API answered something that is not a list of events")
    }
}

pub async fn run(
    admin: &AdminArgs,
    since: &str,
    types: &[String],
    base: &str,
    key: &str,
    source: Option<&str>,
) -> anyhow::Result<()> {
    let since_ms = parse_time(since, unix_now_ms()).map_err(anyhow::Error::msg)?;
    let stripe = Stripe {
        client: outbound::client(None)?,
        base: base.to_owned(),
        key: key.to_owned(),
        created_gte: since_ms / 1000,
        types: types.to_vec(),
    };
    // Walk 1, newest to oldest: each page's cursor (the last id of the page before it). The
    // newest page is kept as fetched, since events arriving meanwhile would shift it.
    let newest = stripe.page(None).await?;
    let mut cursors: Vec<String> = Vec::new();
    let mut more = newest.has_more;
    let mut last = last_id(&newest)?;
    while more {
        let Some(after) = last else { break };
        let page = stripe.page(Some(&after)).await?;
        cursors.push(after);
        more = page.has_more;
        last = last_id(&page)?;
    }
    // Walk 2, oldest to newest.
    let mut query = Vec::new();
    if let Some(s) = source {
        query.push(("source", s.to_owned()));
    }
    let (mut fetched, mut new, mut seen) = (0u64, 0u64, 0u64);
    let ingest = |page: Page| {
        let query = query.clone();
        async move {
            let mut counts = (0u64, 0u64, 0u64);
            for raw in page.data.iter().rev() {
                let body = Bytes::copy_from_slice(raw.get().as_bytes());
                let v: Ingested = ops::call_with_body(admin, Method::POST, "/events", &query, body).await?;
                counts.0 += 1;
                if v.duplicate {
                    counts.2 += 1;
                } else {
                    counts.1 += 1;
                }
            }
            anyhow::Ok(counts)
        }
    };
    for after in cursors.iter().rev() {
        let (f, n, s) = ingest(stripe.page(Some(after)).await?).await?;
        (fetched, new, seen) = (fetched + f, new + n, seen + s);
    }
    let (f, n, s) = ingest(newest).await?;
    (fetched, new, seen) = (fetched + f, new + n, seen + s);
    if admin.json {
        println!("{}", serde_json::json!({ "fetched": fetched, "ingested": new, "already_seen": seen }));
    } else {
        println!("fetched {fetched} events from Stripe; ingested {new} new, skipped {seen} already seen");
    }
    Ok(())
}

fn last_id(page: &Page) -> anyhow::Result<Option<String>> {
    match page.data.last() {
        Some(raw) => {
            Ok(Some(serde_json::from_str::<EventId>(raw.get()).context("an event in Stripe's list has no id")?.id))
        }
        None => Ok(None),
    }
}
