//! What an operator changes by hand: pausing targets, replaying events, and reviving or purging
//! dead letters. Each is a new job or a removal, written like any other, so the delivery workers
//! need not know an operator was involved (beyond the `replay` flag they pass on).

use crate::record::{DeadLetter, Delivery, Job, JobId, NewJob, Outcome, Sweep};
use crate::{decode, Result, Settled, Store};

/// Where a [`Store::sweep_queue`] pass stopped: sled's queue key, or (for Postgres) the due time
/// and id of the last job looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueCursor(Vec<u8>);

impl QueueCursor {
    /// Just past the job due at `due_ms` with id `id` (the Postgres engine's form).
    pub(crate) fn at(due_ms: u64, id: crate::JobId) -> QueueCursor {
        QueueCursor([due_ms.to_be_bytes(), id.to_be_bytes()].concat())
    }

    /// The (due, id) of a cursor made by [`QueueCursor::at`].
    pub(crate) fn position(&self) -> Option<(i64, i64)> {
        let bytes: [u8; 16] = self.0.as_slice().try_into().ok()?;
        Some((crate::id_from(&bytes[..8]) as i64, crate::id_from(&bytes[8..]) as i64))
    }
}

impl Store {
    /// Pauses or resumes a target. A paused target keeps queueing; its worker delivers nothing.
    pub fn set_paused(&self, target: &str, paused: bool) -> Result<()> {
        if paused {
            self.paused.insert(target.as_bytes(), &[])?;
        } else {
            self.paused.remove(target.as_bytes())?;
        }
        Ok(())
    }

    pub fn is_paused(&self, target: &str) -> Result<bool> {
        Ok(self.paused.contains_key(target.as_bytes())?)
    }

    /// Queues the committed event `event_id` again for `jobs`, as new jobs due at `now_ms` and
    /// marked as replays. `None` if the event is unknown (never received, or past retention).
    pub fn replay(&self, event_id: &str, jobs: &[NewJob], now_ms: u64) -> Result<Option<Vec<Job>>> {
        let Some((received, ingest)) = self.committed(event_id)? else {
            return Ok(None);
        };
        let jobs = self.new_jobs(event_id, jobs, now_ms, received, ingest, true)?;
        self.enqueue(&jobs)?;
        for job in &jobs {
            self.append(job, Outcome::Replayed, now_ms)?;
        }
        Ok(Some(jobs))
    }

    pub fn find_dead_letter(&self, id: JobId) -> Result<Option<DeadLetter>> {
        self.dead.get(id.to_be_bytes())?.map(|v| decode(&v, "dead letter")).transpose()
    }

    /// Dead letters in job order (oldest first) after `after` and before `upto`, for `target` if
    /// given: up to `limit` of them, looking at no more than `scan` entries. Returns the page and
    /// where the next one starts (`None` when the end was reached).
    pub fn dead_letters_page(
        &self,
        target: Option<&str>,
        after: Option<JobId>,
        upto: Option<JobId>,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<DeadLetter>, Option<JobId>)> {
        let start = after.map_or(0, |id| id.saturating_add(1));
        let end = upto.unwrap_or(JobId::MAX);
        let mut page = Vec::new();
        let mut last = None;
        for (looked, entry) in self.dead.range(start.to_be_bytes()..end.to_be_bytes()).enumerate() {
            if page.len() >= limit || looked >= scan {
                return Ok((page, last));
            }
            let (key, value) = entry?;
            let Some(letter) = self.decoded::<DeadLetter>(&self.dead, &key, &value, "dead letter")? else {
                continue;
            };
            last = Some(letter.job.id);
            if target.is_none_or(|t| t == letter.job.target) {
                page.push(letter);
            }
        }
        Ok((page, None))
    }

    /// The first `limit` dead letters.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self.dead_letters_page(None, None, None, limit, usize::MAX)?.0)
    }

    /// One past the newest dead letter's id: a bulk operation that stops here does not chase
    /// letters that die again while it runs.
    pub fn dead_letters_end(&self) -> Result<JobId> {
        Ok(self.dead.last()?.map_or(0, |(key, _)| crate::id_from(&key).saturating_add(1)))
    }

    pub fn dead_letter_count(&self) -> usize {
        self.counts.get().dead.values().sum::<i64>().max(0) as usize
    }

    /// Takes a dead letter out and queues its job again as a new job (attempts from zero, due at
    /// `now_ms`, a failover group from its first member). An `any` member stays in its original
    /// round, so it is not delivered again if another member has delivered since. `None` if
    /// there is no such letter.
    pub fn revive_dead_letter(&self, id: JobId, now_ms: u64) -> Result<Option<Job>> {
        let Some(letter) = self.find_dead_letter(id)? else {
            return Ok(None);
        };
        let revived = crate::record::revived(&letter.job, self.db.generate_id()?, now_ms);
        let died_at_target = letter.job.target;
        // Queued before the letter is removed: a crash between leaves both, never neither.
        self.enqueue(std::slice::from_ref(&revived))?;
        if self.dead.remove(id.to_be_bytes())?.is_some() {
            self.counts.dead(&died_at_target, -1);
        }
        self.append(&revived, Outcome::Replayed, now_ms)?;
        Ok(Some(revived))
    }

    /// Deletes a dead letter for good; false if there was none.
    pub fn purge_dead_letter(&self, id: JobId, now_ms: u64) -> Result<bool> {
        let Some(value) = self.dead.remove(id.to_be_bytes())? else {
            return Ok(false);
        };
        let letter: DeadLetter = decode(&value, "dead letter")?;
        self.counts.dead(&letter.job.target, -1);
        self.append(&letter.job, Outcome::Purged, now_ms)?;
        Ok(true)
    }

    /// Moves every job queued for `target` to the dead letters with `reason` (the target was
    /// removed from the config), looking at `batch` per call; returns how many moved, and whether
    /// more may be left (the batch was full).
    pub fn dead_letter_queue(&self, target: &str, reason: &str, now_ms: u64, batch: usize) -> Result<(usize, bool)> {
        let (moved, next) = self.sweep_queue(target, None, batch, now_ms, |_| Sweep::DeadLetter(reason.to_owned()))?;
        Ok((moved, next.is_some()))
    }

    /// Looks at up to `batch` jobs queued for `target` (in due order, after `from`) and takes out
    /// those `decide` does not keep: re-queued as it rewrote them (another target, another due
    /// time), or dead-lettered. Returns how many were taken out, and where the next pass goes on
    /// (none: the end was reached). For work on a queue that is not an attempt: an inbox's jobs
    /// moving to their offline fallback, or expiring unread.
    pub fn sweep_queue(
        &self,
        target: &str,
        from: Option<&QueueCursor>,
        batch: usize,
        now_ms: u64,
        mut decide: impl FnMut(&Job) -> Sweep,
    ) -> Result<(usize, Option<QueueCursor>)> {
        let prefix = crate::queue_prefix(target);
        let start = match from {
            // Just after the last key looked at.
            Some(QueueCursor(key)) if key.starts_with(&prefix) => [key.as_slice(), &[0]].concat(),
            _ => prefix.clone(),
        };
        let mut end = prefix.clone();
        end.pop();
        end.push(1);
        let (mut moved, mut seen, mut last) = (0, 0, None);
        for entry in self.queue.range(start..end).take(batch) {
            let (key, value) = entry?;
            seen += 1;
            last = Some(QueueCursor(key.to_vec()));
            let Some(job) = self.decoded::<Job>(&self.queue, &key, &value, "job")? else {
                continue;
            };
            // Ok: re-queue as rewritten; Err: dead-letter with the reason.
            let take = match decide(&job) {
                Sweep::Keep => continue,
                Sweep::Reroute(rewritten, reason) => Ok((*rewritten, reason)),
                Sweep::DeadLetter(reason) => Err(reason),
            };
            // Through a lease, so `retry` and `dead_letter`'s usual paths (and their group
            // checks) apply. Settled right here; if that fails, the lease is made reclaimable at
            // once, so the next reclaim hands the job back rather than strand it.
            if !self.take_queued(target, &key, &value)? {
                continue;
            }
            let mut job = job;
            job.lease = self.deadlines.hold(job.id, u64::MAX);
            if matches!(job.delivery, Delivery::AnyOf { .. }) {
                self.requeued.remove(job.id.to_be_bytes())?;
            }
            let settled = match take {
                Ok((rewritten, reason)) => {
                    let to = rewritten.target.clone();
                    self.retry(&Job { lease: job.lease, ..rewritten }, now_ms).and_then(|settled| {
                        if settled == Settled::Done {
                            self.append(&job, Outcome::Rerouted { to, reason }, now_ms)?;
                        }
                        Ok(settled)
                    })
                }
                Err(reason) => self.dead_letter(&job, &reason, now_ms),
            };
            let settled = settled.inspect_err(|_| self.deadlines.expire_now(job.id, job.lease))?;
            if settled == Settled::NotLeased {
                continue;
            }
            moved += 1;
        }
        Ok((moved, if seen == batch { last } else { None }))
    }
}
