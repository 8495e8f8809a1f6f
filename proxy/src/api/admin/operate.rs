//! What operators steer besides events: dead letters (list, replay, purge), targets (state,
//! pause), and sticky ownership (look up, list, clear).

use fanout_store::{DeadLetter, Job, JobId};
use http::StatusCode;

use super::{job_id, owner_info, Admin, Query, MAX_BATCH, MAX_SCAN};
use crate::api::presence;
use crate::clock::unix_now_ms;
use crate::config::Config;
use crate::deliver::BreakerState;
use crate::http::ApiError;
use crate::wire::admin::DeadLetter as DeadLetterOut;
use crate::wire::admin::{
    Batch, BreakerInfo, BreakerReset, CircuitState, DeadLetterDone, DeadLettersPage, Disowned, OwnerInfo, OwnersPage,
    Paused, Skipped, TargetInfo, Targets,
};
use crate::wire::time;

impl Admin {
    pub(crate) async fn dead_letters(&self, query: &Query) -> Result<DeadLettersPage, ApiError> {
        let limit = query.limit()?;
        let after = query.get("cursor").map(job_id).transpose()?;
        let (page, next) = self.store.dead_letters_page(query.get("target"), after, None, limit, MAX_SCAN).await?;
        let dead_letters = page.iter().map(dead_letter_out).collect();
        Ok(DeadLettersPage { dead_letters, next_cursor: next.map(|n| n.to_string()) })
    }

    /// Replays (or purges) the dead letters of one target, or all, at most [`MAX_BATCH`] per call;
    /// `next_cursor` and `upto` say where the next call goes on and where the pass ends (the
    /// letters that existed when it began: a replayed job that dies again is not chased).
    pub(crate) async fn dead_letters_batch(
        &self,
        config: &Config,
        query: &Query,
        replay: bool,
    ) -> Result<Batch, ApiError> {
        let target = query.get("target");
        if query.get("all").is_none() && target.is_none() {
            return Err(ApiError::bad_request("say which dead letters: target=<name>, or all=true"));
        }
        let after = query.get("cursor").map(job_id).transpose()?;
        let upto = match query.get("upto") {
            Some(u) => job_id(u)?,
            None => self.store.dead_letters_end().await?,
        };
        let (page, next) = self.store.dead_letters_page(target, after, Some(upto), MAX_BATCH, MAX_SCAN).await?;
        let (mut done, mut skipped) = (0, Vec::new());
        for letter in &page {
            let result = if replay {
                self.revive(config, letter.job.id).await.map(|_| ())
            } else {
                self.store.purge_dead_letter(letter.job.id, unix_now_ms()).await.map(|_| ()).map_err(ApiError::from)
            };
            match result {
                Ok(()) => done += 1,
                Err(e) => skipped.push(Skipped { id: letter.job.id.to_string(), why: e.message().to_owned() }),
            }
        }
        let mut batch = Batch {
            skipped,
            next_cursor: next.map(|n| n.to_string()),
            upto: Some(upto.to_string()),
            ..Batch::default()
        };
        *(if replay { &mut batch.replayed } else { &mut batch.purged }) = Some(done);
        Ok(batch)
    }

    pub(crate) async fn replay_dead_letter(&self, config: &Config, id: JobId) -> Result<DeadLetterDone, ApiError> {
        let job = self.revive(config, id).await?;
        Ok(DeadLetterDone {
            replayed: Some(1),
            job: Some(job.id.to_string()),
            target: Some(job.target),
            ..DeadLetterDone::default()
        })
    }

    async fn revive(&self, config: &Config, id: JobId) -> Result<Job, ApiError> {
        let letter = self
            .store
            .find_dead_letter(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))?;
        let target = letter.job.target.as_str();
        if self.store.event(&letter.job.event_id).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::GONE,
                format!(
                    "event {} is past retention; its body is gone, so it cannot be sent again",
                    letter.job.event_id
                ),
            ));
        }
        if config.target(target).is_none() {
            return Err(ApiError::conflict(format!(
                "target {target:?} is no longer configured; replay the event to another target instead"
            )));
        }
        let job = self.store.revive_dead_letter(id, unix_now_ms()).await?.ok_or_else(|| ApiError::not_found("gone"))?;
        self.deliveries.wake(&job.target);
        Ok(job)
    }

    pub(crate) async fn purge_dead_letter(&self, id: JobId) -> Result<DeadLetterDone, ApiError> {
        if !self.store.purge_dead_letter(id, unix_now_ms()).await? {
            return Err(ApiError::not_found(format!("no dead letter {id}")));
        }
        Ok(DeadLetterDone { purged: Some(1), ..DeadLetterDone::default() })
    }

    pub(crate) async fn targets(&self, config: &Config) -> Result<Targets, ApiError> {
        let counts = self.store.counts().await?;
        let status = self.deliveries.status();
        let now = unix_now_ms();
        let mut targets = Vec::new();
        for t in &config.targets {
            let s = status.get(&t.name).cloned().unwrap_or_default();
            let due = self.store.next_due_ms(&t.name).await.ok().flatten();
            targets.push(TargetInfo {
                name: t.name.clone(),
                url: t.endpoint.to_string(),
                inbox: s.inbox.map(presence),
                paused: s.paused,
                queued: counts.queued.get(&t.name).copied().unwrap_or(0),
                in_flight: s.in_flight,
                dead_letters: counts.dead.get(&t.name).copied().unwrap_or(0),
                oldest_due_age_s: due.map(|d| now.saturating_sub(d) / 1000),
                concurrency: t.concurrency,
                last_success: s.last_success_ms.map(time),
                last_failure: s.last_failure_ms.map(time),
                last_error: s.last_error,
                breaker: (!t.is_inbox()).then(|| BreakerInfo {
                    state: match s.breaker.state {
                        BreakerState::Closed => CircuitState::Closed,
                        BreakerState::Open => CircuitState::Open,
                        BreakerState::Probing => CircuitState::Probing,
                    },
                    failures: s.breaker.failures,
                    open_since: s.breaker.open_since_ms.map(time),
                    next_probe: s.breaker.next_probe_ms.map(time),
                }),
            });
        }
        Ok(Targets { targets })
    }

    pub(crate) async fn pause(&self, name: &str, paused: bool) -> Result<Paused, ApiError> {
        if !self.deliveries.set_paused(name, paused).await? {
            return Err(ApiError::not_found(format!("no target named {name:?}")));
        }
        Ok(Paused { target: name.to_owned(), paused })
    }

    pub(crate) fn reset_breaker(&self, name: &str) -> Result<BreakerReset, ApiError> {
        let was_open = self
            .deliveries
            .reset_breaker(name)
            .ok_or_else(|| ApiError::not_found(format!("no target named {name:?}")))?;
        Ok(BreakerReset { target: name.to_owned(), was_open })
    }

    pub(crate) async fn owners(&self, query: &Query) -> Result<OwnersPage, ApiError> {
        let (page, next_cursor) =
            self.store.owners_page(query.get("cursor"), query.get("destination"), query.limit()?, MAX_SCAN).await?;
        let owners = page.iter().map(|(id, o)| owner_info(id, o)).collect();
        Ok(OwnersPage { owners, next_cursor })
    }

    /// Who owns `id`, if anyone.
    pub(crate) async fn owner(&self, id: &str) -> Result<Option<OwnerInfo>, ApiError> {
        Ok(self.store.owner(id).await?.map(|owner| owner_info(id, &owner)))
    }

    pub(crate) async fn disown(&self, id: &str) -> Result<Disowned, ApiError> {
        if self.store.disown(id).await? {
            Ok(Disowned { id: id.to_owned(), disowned: true })
        } else {
            Err(ApiError::not_found(format!("no environment owns {id:?}")))
        }
    }
}

fn dead_letter_out(d: &DeadLetter) -> DeadLetterOut {
    DeadLetterOut {
        id: d.job.id.to_string(),
        event_id: d.job.event_id.clone(),
        target: d.job.target.clone(),
        destination: d.job.destination().to_owned(),
        attempts: d.job.attempt,
        error: d.error.clone(),
        created_at: time(d.job.created_at_ms),
        died_at: time(d.died_at_ms),
    }
}
