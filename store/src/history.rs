//! What happened to each event, for operators: the history log (every attempt and what became of
//! each job) and the newest-first walk over received events that listings page through.

use crate::faults::Fault;
use crate::record::{EventHead, HistoryEntry, Job, Outcome};
use crate::{encode, record_key, Result, Store, StoreError};

fn history_prefix(received_at_ms: u64, event_id: &str) -> Vec<u8> {
    let mut key = record_key(received_at_ms, event_id);
    key.push(0);
    key
}

/// Where a newest-first listing stopped: the next page starts just before this event. Written
/// as `<received ms>-<event id>` so a client can pass it back as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCursor {
    pub received_at_ms: u64,
    pub event_id: String,
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.received_at_ms, self.event_id)
    }
}

impl std::str::FromStr for EventCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ms, id) = s.split_once('-').ok_or_else(|| format!("cursor {s:?} is not <ms>-<event id>"))?;
        let received_at_ms = ms.parse().map_err(|_| format!("cursor {s:?} does not start with a time in ms"))?;
        Ok(EventCursor { received_at_ms, event_id: id.to_owned() })
    }
}

impl Store {
    /// Appends to the job's event history (a worker noting an attempt).
    pub fn log(&self, job: &Job, outcome: Outcome, at_ms: u64) -> Result<()> {
        self.injected_fault(Fault::Settles)?;
        self.append(job, outcome, at_ms)
    }

    /// [`Store::log`] for the store's own notes (a cancel, a replay), which an injected settle
    /// fault does not stop.
    pub(crate) fn append(&self, job: &Job, outcome: Outcome, at_ms: u64) -> Result<()> {
        self.append_entry(job.received_at_ms, &job.event_id, &history_entry(job, outcome, at_ms))
    }

    /// Appends `entry` to the history of the event `event_id` received at `received_at_ms`.
    pub(crate) fn append_entry(&self, received_at_ms: u64, event_id: &str, entry: &HistoryEntry) -> Result<()> {
        let mut key = history_prefix(received_at_ms, event_id);
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.history.insert(key, encode(entry)?)?;
        Ok(())
    }

    /// The newest `limit` entries of the history of the event `event_id` that arrived at
    /// `received_at_ms`, oldest first.
    pub fn history(&self, received_at_ms: u64, event_id: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
        let mut newest = Vec::new();
        for entry in self.history.scan_prefix(history_prefix(received_at_ms, event_id)).rev().take(limit) {
            let (key, value) = entry?;
            // An entry that does not decode is quarantined; the rest of the story still shows.
            newest.extend(self.decoded::<HistoryEntry>(&self.history, &key, &value, "history")?);
        }
        newest.reverse();
        Ok(newest)
    }

    /// Received events, newest first, starting just before `before` (or at the newest) and
    /// stopping at `since_ms`. Each item is read without its body; the caller takes what it needs,
    /// so a page never holds more than it shows.
    pub fn events_newest_first(
        &self,
        before: Option<&EventCursor>,
        since_ms: u64,
    ) -> impl Iterator<Item = Result<EventHead>> + '_ {
        self.records_newest_first(before, since_ms).filter_map(|r| match r {
            Ok((head, _, true)) => Some(Ok(head)),
            Ok((_, _, false)) => None,
            Err(e) => Some(Err(e)),
        })
    }

    /// Received events whose body holds `needle` (an object id, quoted by the caller), newest
    /// first from just before `before`, down to `since_ms`: at most `limit` of them, looking at no
    /// more than `scan` records. The cursor says where the next look goes on (none: the end).
    /// There is no index of objects to events; a bounded scan of the newest is what an operator
    /// asking "what happened to cus_…" needs, and it never walks the whole log.
    pub fn events_mentioning(
        &self,
        needle: &[u8],
        before: Option<&EventCursor>,
        since_ms: u64,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<EventHead>, Option<EventCursor>)> {
        let finder = memchr::memmem::Finder::new(needle);
        let mut found = Vec::new();
        for (looked, record) in self.records_newest_first(before, since_ms).enumerate() {
            let (head, value, committed) = record?;
            let cursor = EventCursor { received_at_ms: head.received_at_ms, event_id: head.id.clone() };
            if committed && finder.find(&value).is_some() {
                found.push(head);
            }
            if found.len() >= limit || looked + 1 >= scan {
                return Ok((found, Some(cursor)));
            }
        }
        Ok((found, None))
    }

    /// Every record newest first, with its whole stored value and whether it is an event the
    /// proxy acknowledged (an orphan record, whose ingest died before committing, or a losing
    /// racing copy, is not). A record that does not decode is quarantined and passed over.
    fn records_newest_first(
        &self,
        before: Option<&EventCursor>,
        since_ms: u64,
    ) -> impl Iterator<Item = Result<(EventHead, sled::IVec, bool)>> + '_ {
        let end = match before {
            Some(c) => record_key(c.received_at_ms, &c.event_id),
            None => vec![0xff; 9],
        };
        self.records.range(since_ms.to_be_bytes().to_vec()..end).rev().filter_map(move |entry| {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e.into())),
            };
            match postcard::take_from_bytes::<EventHead>(&value) {
                Ok((head, _)) => Some(
                    self.committed(&head.id)
                        .map(|c| c.is_some_and(|(received, _)| received == head.received_at_ms))
                        .map(|committed| (head, value, committed)),
                ),
                Err(e) => {
                    let error = StoreError::Corrupt { what: "event", detail: e.to_string() };
                    self.quarantine(&self.records, &key, &value, &error).err().map(Err)
                }
            }
        })
    }
}

/// The history entry of `outcome` for `job` (attempt numbers only on attempts).
pub(crate) fn history_entry(job: &Job, outcome: Outcome, at_ms: u64) -> HistoryEntry {
    HistoryEntry {
        at_ms,
        job: job.id,
        target: job.target.clone(),
        destination: job.destination().to_owned(),
        attempt: if matches!(outcome, Outcome::Delivered { .. } | Outcome::Failed { .. }) { job.attempt } else { 0 },
        replay: job.replay,
        outcome,
    }
}
