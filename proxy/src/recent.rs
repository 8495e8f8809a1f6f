//! The last hour, minute by minute, as the console draws it: each target's deliveries, failures
//! and latencies, and the flow of events from sources through rules to destinations; and the
//! last config reload's result. Prometheus counters answer "how many since start" for a scraper;
//! a person at the console asks "what happened lately", which needs time buckets.
//!
//! Kept in memory, per process: it starts empty after a restart, and on Postgres each replica
//! shows what it did. Bounded: sixty one-minute slots per key; keys come from the config (an
//! object's owner is one key, `owner`, not one per object), and a key quiet for an hour (a
//! removed target, a deleted inbox, a renamed rule) is dropped when the console next looks.

use std::collections::HashMap;
use std::sync::Mutex;

const MINUTES: usize = 60;
const MINUTE_MS: u64 = 60_000;
/// Latency buckets: upper bounds from 1 ms, each √2 times the last, up to ~46 s; one more for
/// anything slower.
const BUCKETS: usize = 32;

fn bucket_bound_ms(i: usize) -> f64 {
    2f64.powf(i as f64 / 2.0)
}

fn bucket_of(latency_ms: u64) -> usize {
    (0..BUCKETS).find(|&i| latency_ms as f64 <= bucket_bound_ms(i)).unwrap_or(BUCKETS)
}

/// Sixty one-minute slots, each knowing which minute it holds: a slot from an older hour reads
/// as empty and is reset when written.
#[derive(Clone)]
struct Ring<T> {
    slots: Vec<(u64, T)>,
}

impl<T: Default + Clone> Ring<T> {
    fn new() -> Ring<T> {
        Ring { slots: vec![(u64::MAX, T::default()); MINUTES] }
    }

    /// The slot of `now_ms`'s minute, emptied if it held an older one; None if it holds a newer
    /// one (the wall clock stepped back: what happened then is not written over).
    fn at(&mut self, now_ms: u64) -> Option<&mut T> {
        let minute = now_ms / MINUTE_MS;
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        if slot.0 != u64::MAX && slot.0 > minute {
            return None;
        }
        if slot.0 != minute {
            *slot = (minute, T::default());
        }
        Some(&mut slot.1)
    }

    /// Whether any slot holds a minute of the last hour.
    fn active(&self, now_ms: u64) -> bool {
        let now = now_ms / MINUTE_MS;
        self.slots.iter().any(|(m, _)| *m != u64::MAX && *m + MINUTES as u64 > now)
    }

    /// The last hour, oldest minute first (empty minutes as defaults).
    fn last_hour(&self, now_ms: u64) -> Vec<T> {
        let now = now_ms / MINUTE_MS;
        (0..MINUTES as u64)
            .rev()
            .map(|ago| {
                let minute = now.saturating_sub(ago);
                let slot = &self.slots[(minute % MINUTES as u64) as usize];
                if slot.0 == minute && minute + ago == now {
                    slot.1.clone()
                } else {
                    T::default()
                }
            })
            .collect()
    }
}

#[derive(Clone, Default)]
struct TargetMinute {
    delivered: u64,
    failed: u64,
    latency: Vec<u32>,
}

/// A target's last hour.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetHour {
    /// Per minute, oldest first: (delivered, failed).
    pub per_minute: Vec<(u64, u64)>,
    pub delivered: u64,
    pub failed: u64,
    /// Latency percentiles of every attempt in the hour, as the upper bound of their bucket (ms).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One path events took in the last hour: from a source, through what routed them (a rule's
/// name, `owner`, `default`; `drop` and `unrouted` lead nowhere), to a destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    pub source: String,
    pub via: String,
    /// None: dropped or unrouted.
    pub destination: Option<String>,
}

/// The last config reload (or the load at start).
#[derive(Clone, Debug)]
pub struct ReloadNote {
    pub at_ms: u64,
    pub applied: bool,
    /// Why it was refused, or what an applied one kept from before.
    pub message: String,
}

#[derive(Default)]
struct Inner {
    targets: HashMap<String, Ring<TargetMinute>>,
    flows: HashMap<Edge, Ring<u64>>,
    last_reload: Option<ReloadNote>,
}

#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One attempt of `target` finished: delivered (2xx) or not, after `latency_ms`.
    pub fn attempt(&self, target: &str, delivered: bool, latency_ms: u64, now_ms: u64) {
        let mut inner = self.lock();
        let ring = match inner.targets.get_mut(target) {
            Some(ring) => ring,
            None => inner.targets.entry(target.to_owned()).or_insert_with(Ring::new),
        };
        let Some(minute) = ring.at(now_ms) else { return };
        if delivered {
            minute.delivered += 1;
        } else {
            minute.failed += 1;
        }
        if minute.latency.is_empty() {
            minute.latency = vec![0; BUCKETS + 1];
        }
        minute.latency[bucket_of(latency_ms)] += 1;
    }

    /// An event was routed along these edges.
    pub fn routed(&self, edges: impl IntoIterator<Item = Edge>, now_ms: u64) {
        let mut inner = self.lock();
        for edge in edges {
            let ring = match inner.flows.get_mut(&edge) {
                Some(ring) => ring,
                None => inner.flows.entry(edge).or_insert_with(Ring::new),
            };
            if let Some(n) = ring.at(now_ms) {
                *n += 1;
            }
        }
    }

    pub fn reloaded(&self, note: ReloadNote) {
        self.lock().last_reload = Some(note);
    }

    pub fn last_reload(&self) -> Option<ReloadNote> {
        self.lock().last_reload.clone()
    }

    /// `target`'s last hour (all zero if it did nothing).
    pub fn target_hour(&self, target: &str, now_ms: u64) -> TargetHour {
        let inner = self.lock();
        let Some(ring) = inner.targets.get(target) else {
            return TargetHour { per_minute: vec![(0, 0); MINUTES], ..TargetHour::default() };
        };
        let minutes = ring.last_hour(now_ms);
        let mut latency = vec![0u64; BUCKETS + 1];
        for m in &minutes {
            for (total, n) in latency.iter_mut().zip(&m.latency) {
                *total += u64::from(*n);
            }
        }
        let per_minute: Vec<(u64, u64)> = minutes.iter().map(|m| (m.delivered, m.failed)).collect();
        TargetHour {
            delivered: per_minute.iter().map(|m| m.0).sum(),
            failed: per_minute.iter().map(|m| m.1).sum(),
            per_minute,
            p50_ms: percentile(&latency, 0.50),
            p99_ms: percentile(&latency, 0.99),
        }
    }

    /// Every edge with events in the last hour, and how many. Drops what was quiet for an hour.
    pub fn flows(&self, now_ms: u64) -> Vec<(Edge, u64)> {
        let mut inner = self.lock();
        inner.flows.retain(|_, ring| ring.active(now_ms));
        inner.targets.retain(|_, ring| ring.active(now_ms));
        let mut edges: Vec<(Edge, u64)> = inner
            .flows
            .iter()
            .map(|(edge, ring)| (edge.clone(), ring.last_hour(now_ms).iter().sum()))
            .filter(|(_, n)| *n > 0)
            .collect();
        edges.sort();
        edges
    }
}

/// The upper bound of the bucket holding the `q` quantile; None with no samples; infinite for
/// the last bucket, slower than every bound (shown as "> 46 s").
fn percentile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(if i < BUCKETS { bucket_bound_ms(i) } else { f64::INFINITY });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn an_hour_of_minutes_counts_and_forgets() {
        let r = Recent::default();
        r.attempt("a", true, 3, T0);
        r.attempt("a", false, 200, T0 + 1_000);
        r.attempt("a", true, 3, T0 + 30 * MINUTE_MS);
        let hour = r.target_hour("a", T0 + 30 * MINUTE_MS);
        assert_eq!((hour.delivered, hour.failed, hour.per_minute.len()), (2, 1, 60));
        assert_eq!(hour.per_minute[59], (1, 0), "the newest minute last");
        assert_eq!(hour.per_minute[29], (1, 1), "thirty minutes earlier");
        // 3 ms falls in the (2.83, 4] bucket; one in three is slow.
        assert_eq!(hour.p50_ms, Some(4.0));
        assert!(hour.p99_ms.unwrap() >= 200.0, "{:?}", hour.p99_ms);
        // An hour later the first minute is gone, and a slot reused holds only its new minute.
        let later = T0 + 61 * MINUTE_MS;
        r.attempt("a", true, 1, later);
        let hour = r.target_hour("a", later);
        assert_eq!((hour.delivered, hour.failed), (2, 0), "{:?}", hour.per_minute);
        assert_eq!(r.target_hour("nobody", later).per_minute, vec![(0, 0); 60]);
        // A clock stepped back does not write over a newer minute.
        r.attempt("a", false, 1, T0);
        assert_eq!(r.target_hour("a", later).failed, 0);
        // Quiet for an hour: dropped when the console looks.
        r.flows(later + 61 * MINUTE_MS);
        assert!(r.lock().targets.is_empty());
    }

    #[test]
    fn flows_sum_the_hour_per_edge() {
        let r = Recent::default();
        let edge = |via: &str, to: Option<&str>| Edge {
            source: "stripe".into(),
            via: via.into(),
            destination: to.map(str::to_owned),
        };
        r.routed([edge("by-type", Some("staging")), edge("by-type", Some("alice"))], T0);
        r.routed([edge("by-type", Some("staging"))], T0 + MINUTE_MS);
        r.routed([edge("drop", None)], T0 - 2 * 60 * MINUTE_MS);
        let flows = r.flows(T0 + MINUTE_MS);
        assert_eq!(flows, vec![(edge("by-type", Some("alice")), 1), (edge("by-type", Some("staging")), 2)]);
    }

    #[test]
    fn percentiles_come_from_buckets() {
        assert_eq!(percentile(&[0, 0], 0.5), None);
        let mut b = vec![0; BUCKETS + 1];
        b[0] = 99;
        b[BUCKETS] = 1;
        assert_eq!(percentile(&b, 0.5), Some(1.0));
        assert_eq!(percentile(&b, 0.99), Some(1.0));
        assert_eq!(percentile(&b, 1.0), Some(f64::INFINITY));
    }
}
