//! The sled engine's side of an export and an import: each tree walked in key order (which is
//! the export's order), and records written back where the engine's own verbs would put them.
//! Blocking: the engine runs both on its chore threads.

use std::borrow::Cow;

use tokio::sync::mpsc::Sender;

use super::ExportRecord;
use crate::record::{DeadLetter, Delivery, EventRecord, HistoryEntry, Job, JobId, Owner};
use crate::{encode, group_round_key, id_from, queue_key, record_key, Result, Store, StoreError};

/// sled cannot be told where its id generator stands, so an import draws ids until it is past
/// the newest imported one: a counter, with an fsync per million. Ids beyond this are refused
/// rather than drawn for hours (a sled or Postgres store hands out far fewer).
const MOST_IDS: JobId = 1 << 40;

type Out<'a> = &'a dyn Fn(ExportRecord) -> Result<()>;

impl Store {
    /// Sends every record to `to`, in the export's order; stops with [`StoreError::Hangup`] if
    /// the receiver goes away. Values that do not decode are quarantined on the way, as
    /// everywhere, and logged.
    pub(crate) fn export(&self, to: &Sender<ExportRecord>) -> Result<()> {
        let send = |record| to.blocking_send(record).map_err(|_| StoreError::Hangup);
        for target in self.paused.iter().keys() {
            send(ExportRecord::Paused { target: text(&target?).into_owned() })?;
        }
        for inbox in self.inboxes()? {
            send(ExportRecord::Inbox(inbox))?;
        }
        self.export_events(&send)?;
        self.export_history(&send)?;
        self.export_rounds(&send)?;
        self.export_jobs(&send)?;
        for entry in self.dead.iter() {
            let (key, value) = entry?;
            if let Some(letter) = self.decoded::<DeadLetter>(&self.dead, &key, &value, "dead letter")? {
                send(ExportRecord::dead_letter(letter))?;
            }
        }
        for entry in self.owners.iter() {
            let (key, value) = entry?;
            if let Some(owner) = self.decoded::<Owner>(&self.owners, &key, &value, "owner")? {
                send(ExportRecord::Owner { object: text(&key).into_owned(), owner })?;
            }
        }
        Ok(())
    }

    /// Committed events only: an orphan record (its ingest died before committing) or a losing
    /// copy's was never acknowledged.
    fn export_events(&self, send: Out<'_>) -> Result<()> {
        for entry in self.records.iter() {
            let (key, value) = entry?;
            let Some(event) = self.decoded::<EventRecord>(&self.records, &key, &value, "event")? else { continue };
            if self.committed(&event.id)?.is_some_and(|(received, _)| received == event.received_at_ms) {
                send(ExportRecord::Event(event))?;
            }
        }
        Ok(())
    }

    /// Keys: received ms ++ event id ++ 0 ++ sequence.
    fn export_history(&self, send: Out<'_>) -> Result<()> {
        for entry in self.history.iter() {
            let (key, value) = entry?;
            if key.len() < 17 {
                return Err(corrupt("history key", &key));
            }
            let Some(entry) = self.decoded::<HistoryEntry>(&self.history, &key, &value, "history")? else { continue };
            let event_id = text(&key[8..key.len() - 9]).into_owned();
            send(ExportRecord::History { event_id, received_at_ms: id_from(&key), entry })?;
        }
        Ok(())
    }

    /// Keys: event id ++ 0 ++ group ++ 0 ++ round; the value is the target that delivered it.
    fn export_rounds(&self, send: Out<'_>) -> Result<()> {
        for entry in self.groups.iter() {
            let (key, delivered_by) = entry?;
            let Some(names) = key.len().checked_sub(9).map(|end| &key[..end]) else {
                return Err(corrupt("group key", &key));
            };
            let split = names.iter().position(|b| *b == 0).ok_or_else(|| corrupt("group key", &key))?;
            send(ExportRecord::GroupRound {
                event_id: text(&names[..split]).into_owned(),
                group: text(&names[split + 1..]).into_owned(),
                round: id_from(&key[key.len() - 8..]),
                delivered_by: text(&delivered_by).into_owned(),
            })?;
        }
        Ok(())
    }

    /// The queue in key order (target, due, id), with the jobs in flight (few: a worker's
    /// concurrency) merged in where they go back to.
    fn export_jobs(&self, send: Out<'_>) -> Result<()> {
        let mut leased = Vec::new();
        for entry in self.leases.iter() {
            let (key, value) = entry?;
            // Dead-lettered already, its lease not yet removed (see `unlease`).
            if self.dead.contains_key(&key)? {
                continue;
            }
            if let Some(job) = self.decoded::<Job>(&self.leases, &key, &value, "job")? {
                leased.push((queue_key(&job.target, job.due_at_ms, job.id), job));
            }
        }
        leased.sort_by(|a, b| a.0.cmp(&b.0));
        let mut leased = leased.into_iter().peekable();
        for entry in self.queue.iter() {
            let (key, value) = entry?;
            while let Some((_, job)) = leased.next_if(|(at, _)| at.as_slice() < &key[..]) {
                self.export_job(job, send)?;
            }
            if let Some(job) = self.decoded::<Job>(&self.queue, &key, &value, "job")? {
                self.export_job(job, send)?;
            }
        }
        leased.try_for_each(|(_, job)| self.export_job(job, send))
    }

    /// A job of a copy that lost the race to commit is never delivered, so it does not move.
    /// One whose event is not committed at all does (its ingest may still be written, or its
    /// event was removed by retention): the destination's workers judge it as these would.
    fn export_job(&self, job: Job, send: Out<'_>) -> Result<()> {
        if self.committed(&job.event_id)?.is_some_and(|(_, ingest)| ingest != job.ingest) {
            return Ok(());
        }
        send(ExportRecord::job(job))
    }

    /// Writes `batch` where the engine's own verbs would have. Imported events and their jobs
    /// share ingest 0 (jobs are only checked against their event's). Not durable until
    /// [`Store::durable`].
    pub(crate) fn import(&self, batch: Vec<ExportRecord>) -> Result<()> {
        let newest = batch.iter().map(ExportRecord::newest_job_id).max().unwrap_or(0);
        if newest >= MOST_IDS {
            return Err(StoreError::Import(format!("job id {newest} is beyond what this store hands out")));
        }
        for record in batch {
            match record {
                ExportRecord::Paused { target } => self.set_paused(&target, true)?,
                ExportRecord::Inbox(inbox) => {
                    if !self.create_inbox(&inbox)? {
                        return Err(StoreError::Import(format!("inbox {:?} twice in the export", inbox.name)));
                    }
                }
                ExportRecord::Event(event) => {
                    let received = event.received_at_ms;
                    self.records.insert(record_key(received, &event.id), encode(&event)?)?;
                    self.events.insert(event.id.as_bytes(), [received.to_be_bytes(), [0; 8]].concat())?;
                }
                ExportRecord::History { event_id, received_at_ms, entry } => {
                    self.append_entry(received_at_ms, &event_id, &entry)?
                }
                ExportRecord::GroupRound { event_id, group, round, delivered_by } => {
                    self.groups.insert(group_round_key(&event_id, &group, round), delivered_by.as_bytes())?;
                }
                ExportRecord::Job(job) => self.import_job(Job { ingest: 0, lease: 0, ..job })?,
                ExportRecord::DeadLetter(letter) => {
                    let letter = DeadLetter { job: Job { ingest: 0, lease: 0, ..letter.job }, ..letter };
                    if self.dead.insert(letter.job.id.to_be_bytes(), encode(&letter)?)?.is_none() {
                        self.counts.dead(&letter.job.target, 1);
                    }
                }
                ExportRecord::Owner { object, owner } => self.claim(&[object], &owner)?,
            }
        }
        while self.db.generate_id()? <= newest {}
        Ok(())
    }

    /// Queued at its due time; an `any` member noted where it waits, as a retry notes it, so a
    /// sibling's success finds it.
    fn import_job(&self, job: Job) -> Result<()> {
        if matches!(job.delivery, Delivery::AnyOf { .. }) {
            self.requeued.insert(job.id.to_be_bytes(), queue_key(&job.target, job.due_at_ms, job.id))?;
        }
        self.enqueue(std::slice::from_ref(&job))
    }

    /// Whether nothing was ever kept here: an import goes only into an empty store.
    pub(crate) fn is_empty(&self) -> bool {
        let trees = [&self.events, &self.records, &self.queue, &self.leases, &self.requeued, &self.groups];
        let more = [&self.dead, &self.history, &self.paused, &self.owners, &self.inboxes, &self.quarantine];
        trees.iter().chain(more.iter()).all(|tree| tree.is_empty())
    }
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn corrupt(what: &'static str, key: &[u8]) -> StoreError {
    StoreError::Corrupt { what, detail: format!("{} is too short", key.escape_ascii()) }
}
