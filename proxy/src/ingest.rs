//! Taking an authenticated event in: route it (asking the store who owns the objects it references
//! when no rule matched), plan its jobs, persist event, jobs and ownership claims, wait until they
//! are durable, then wake the delivery workers. The webhook handler and the admin API's backfill
//! both come in here, so a backfilled event is routed and deduplicated exactly like Stripe's own.
//!
//! Invariant: `accept` returns Ok only once the event's writes are durable; every error is a
//! store error, and the caller answers it with a retry-later.

use std::sync::Arc;

use fanout_store::engine::Engine;
use fanout_store::{Disposition, EventRecord, Ingested, Job, StoreError};

use crate::clock::unix_now_ms;
use crate::config::Config;
use crate::deliver::Deliveries;
use crate::metrics::{Metrics, SourceLabel};
use crate::plan::{claims, plan};
use crate::recent::Edge;
use crate::route::{Decision, KnownOwner, DEFAULT_RULE};
use crate::verify::VerifiedEvent;

pub struct Intake {
    pub store: Engine,
    pub deliveries: Deliveries,
    pub metrics: Arc<Metrics>,
}

/// What became of an authenticated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New,
    Duplicate,
}

impl Intake {
    /// Routes, persists, waits for durability, wakes the delivery workers.
    pub async fn accept(&self, config: &Config, source: &str, event: VerifiedEvent) -> Result<Accepted, StoreError> {
        let failed = |e: StoreError| {
            tracing::error!(event_id = %event.id, "store failed; answering 503 so Stripe retries: {e}");
            e
        };
        let decision = self.route(config, &event).await.map_err(failed)?;
        let (mut jobs, disposition) = plan(config, &decision);
        self.deliveries.skip_open_members(&mut jobs);
        let now = unix_now_ms();
        let claims = claims(config, &decision, &event.json, &event.id, now);
        let record = EventRecord {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            source: source.to_owned(),
            received_at_ms: now,
            disposition,
            body: event.body.to_vec(),
        };
        // Durable when it returns (a duplicate too: the first copy may have been on its way).
        match self.store.ingest_claiming(&record, &jobs, claims.as_ref()).await {
            Ok(ingested) => Ok(self.report(source, &record, ingested)),
            Err(e) => {
                // Maybe written but not on disk: Stripe hears 503 and retries, and the retry finds
                // it (a duplicate). Its jobs may be queued all the same: their workers look now
                // rather than at their next idle wake-up (a redelivery is the at-least-once kind).
                for job in &jobs {
                    self.deliveries.wake(&job.target);
                }
                Err(failed(e))
            }
        }
    }

    /// Rules first; the store is asked who owns the objects the event references only when no
    /// rule matched (most events never cost a lookup). A store that cannot say cannot route this
    /// event right: its error (503, so Stripe retries) rather than a 200 for a guess.
    async fn route<'c>(&self, config: &'c Config, event: &VerifiedEvent) -> Result<Decision<'c>, StoreError> {
        let by_rules = config.router.route(&event.json);
        if config.router.affinity.is_none() || !by_default(&by_rules) {
            return Ok(by_rules);
        }
        // One object at a time, in `affinity.fields` order: the first with an owner still
        // configured decides, and no lookup is made past it (the rules are not run again).
        for object in config.router.references(&event.json) {
            let Some(o) = self.store.owner(&object).await? else { continue };
            if let Some(owned) = config.router.owned_by(object, KnownOwner { destinations: o.destinations, via: o.via })
            {
                return Ok(owned);
            }
        }
        Ok(by_rules)
    }

    /// Metrics and the log line of a durable ingest; wakes the workers of a new event's jobs.
    fn report(&self, source: &str, record: &EventRecord, ingested: Ingested) -> Accepted {
        let (id, event_type) = (&record.id, &record.event_type);
        let jobs = match ingested {
            Ingested::Duplicate => {
                tracing::info!(event_id = %id, "duplicate event id: acknowledged, not fanned out again");
                self.metrics.deduplicated.inc();
                return Accepted::Duplicate;
            }
            Ingested::New(jobs) => jobs,
        };
        self.metrics.received.get_or_create(&SourceLabel { source: source.to_owned() }).inc();
        self.metrics.recent.routed(edges(source, &record.disposition), record.received_at_ms);
        match &record.disposition {
            Disposition::Routed { destinations } => {
                let to: Vec<&str> = destinations.iter().map(|d| d.destination.as_str()).collect();
                tracing::info!(event_id = %id, %event_type, to = ?to, "accepted");
            }
            Disposition::Dropped { rule } => {
                self.metrics.dropped.inc();
                tracing::info!(event_id = %id, %event_type, rule = %rule, "accepted and dropped by rule")
            }
            Disposition::Unrouted => {
                self.metrics.unrouted.inc();
                tracing::info!(event_id = %id, %event_type, "accepted; no route matched and there is no default")
            }
        }
        self.wake(&jobs);
        Accepted::New
    }

    fn wake(&self, jobs: &[Job]) {
        for job in jobs {
            self.deliveries.wake(&job.target);
        }
    }
}

/// The console's flow picture: which way this event went.
fn edges(source: &str, disposition: &Disposition) -> Vec<Edge> {
    let edge = |via: &str, destination: Option<&str>| Edge {
        source: source.to_owned(),
        // One key for every owned object, so the picture stays as small as the config.
        via: if via.starts_with("owner:") { "owner" } else { via }.to_owned(),
        destination: destination.map(str::to_owned),
    };
    match disposition {
        Disposition::Routed { destinations } => {
            destinations.iter().map(|d| edge(&d.rule, Some(&d.destination))).collect()
        }
        Disposition::Dropped { rule } => vec![edge(rule, None)],
        Disposition::Unrouted => vec![edge("unrouted", None)],
    }
}

/// Whether no rule decided: the default did, or nothing did.
fn by_default(decision: &Decision<'_>) -> bool {
    match decision {
        Decision::Deliver(chosen) => chosen.iter().all(|(_, rule)| *rule == DEFAULT_RULE),
        Decision::Drop { rule } => *rule == DEFAULT_RULE,
        Decision::Unrouted => true,
        Decision::Owned { .. } => false,
    }
}
