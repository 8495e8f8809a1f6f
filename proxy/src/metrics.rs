//! Prometheus metrics: counters and histograms moved by the stages as events pass, gauges read
//! from the store and the delivery workers when scraped. Formatting is prometheus-client's.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub target: String,
    /// delivered, failed, dead_lettered
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub target: String,
    /// open, closed
    pub to: &'static str,
}

/// A histogram family needs a constructor it can call per label set.
fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub received: Family<SourceLabel, Counter>,
    pub rejected: Family<ReasonLabel, Counter>,
    pub deduplicated: Counter,
    pub dropped: Counter,
    pub unrouted: Counter,
    pub ack_latency: Histogram,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub delivery_latency: Family<TargetLabel, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<TargetLabel, Gauge>,
    pub oldest_due_age: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    pub dead_letters: Family<TargetLabel, Gauge>,
    pub in_flight: Family<TargetLabel, Gauge>,
    pub paused: Family<TargetLabel, Gauge>,
    pub breaker_state: Family<TargetLabel, Gauge>,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    pub config_reloads: Family<ReasonLabel, Counter>,
    pub quarantined: Gauge,
    /// The last hour per minute, for the console (not exported to Prometheus).
    pub recent: crate::recent::Recent,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("fanout");
        let m = Metrics {
            received: Family::default(),
            rejected: Family::default(),
            deduplicated: Counter::default(),
            dropped: Counter::default(),
            unrouted: Counter::default(),
            ack_latency: latency_histogram(),
            deliveries: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            queue_depth: Family::default(),
            oldest_due_age: Family::default(),
            dead_letters: Family::default(),
            in_flight: Family::default(),
            paused: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            config_reloads: Family::default(),
            quarantined: Gauge::default(),
            recent: Default::default(),
            registry: Registry::default(),
        };
        r.register("events_received", "Events verified and accepted, by source", m.received.clone());
        r.register("events_rejected", "Requests refused, by reason", m.rejected.clone());
        r.register(
            "events_deduplicated",
            "Events whose id was already known (acknowledged, not re-sent)",
            m.deduplicated.clone(),
        );
        r.register("events_dropped", "Events a rule dropped (acknowledged, delivered nowhere)", m.dropped.clone());
        r.register("events_unrouted", "Events no rule matched, with no default", m.unrouted.clone());
        r.register_with_unit(
            "ack_latency",
            "Time from request to 2xx, including the flush to disk",
            Unit::Seconds,
            m.ack_latency.clone(),
        );
        r.register("deliveries", "Delivery attempts by target and outcome", m.deliveries.clone());
        r.register_with_unit(
            "delivery_latency",
            "Time from sending an attempt to the target's answer",
            Unit::Seconds,
            m.delivery_latency.clone(),
        );
        r.register("queue_depth", "Jobs waiting in each target's queue (not in flight)", m.queue_depth.clone());
        r.register_with_unit(
            "queue_oldest_due_age",
            "How long the earliest due job of each target has been due (0 if none is due)",
            Unit::Seconds,
            m.oldest_due_age.clone(),
        );
        r.register("dead_letters", "Dead letters per target", m.dead_letters.clone());
        r.register("in_flight", "Delivery attempts in flight per target", m.in_flight.clone());
        r.register("target_paused", "1 if an operator paused the target", m.paused.clone());
        r.register(
            "target_breaker_state",
            "The target's circuit breaker: 0 closed, 1 probing, 2 open (its queue held)",
            m.breaker_state.clone(),
        );
        r.register(
            "target_breaker_transitions",
            "Circuit breaker state changes by target and new state (open, closed)",
            m.breaker_transitions.clone(),
        );
        r.register("config_reloads", "Config reloads by result (applied, refused)", m.config_reloads.clone());
        r.register(
            "store_quarantined",
            "Store entries that could not be read, moved aside (logged with their key) so the rest goes on",
            m.quarantined.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    pub fn reject(&self, reason: &str) {
        self.rejected.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    pub fn delivery(&self, target: &str, outcome: &'static str) {
        self.deliveries.get_or_create(&OutcomeLabels { target: target.to_owned(), outcome }).inc();
    }

    pub fn breaker_transition(&self, target: &str, to: &'static str) {
        self.breaker_transitions.get_or_create(&TransitionLabels { target: target.to_owned(), to }).inc();
    }

    /// The text exposition format. Gauges must have been set by the caller just before.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
