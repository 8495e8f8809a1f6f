//! Ingest batching: concurrent ingests share one transaction, so one commit (one WAL flush and
//! the transaction's own overhead) serves many acknowledgements, as sled's group commit does.
//! A batch's statements are pipelined on one connection. Every caller hears back only after the
//! commit: an acknowledgement never precedes durability.
//!
//! Batches form by themselves: at most [`LANES`] are in flight, and whatever arrived meanwhile
//! goes into the next. A lone ingest is one statement, committed on its own (no added wait).
//!
//! Two batches can deadlock on the ownership rows they upsert (each statement locks its own
//! objects in order, a batch's statements do not), and one ingest's failure would fail the
//! others'. A batch the database refused is run again one ingest at a time, so each caller hears
//! its own outcome; one that could not reach the database hears that, all at once.

use std::sync::Arc;

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::types::ToSql;

use super::cached::Cached;
use crate::{Result, StoreError};

/// Batches committing at once; more ingests than that wait for the next batch.
const LANES: usize = 4;

/// Most ingests one transaction takes.
const MAX_BATCH: usize = 128;

/// An event, its jobs and its ownership claims in one statement; nothing is written if the
/// event id was seen before (the count is then 0). Claims follow the sled engine's rule: a claim
/// is rewritten unless the object is owned the same way and was claimed within the refresh
/// period (the row is still locked until the commit, so ingests naming one busy object queue).
const INGEST: &str = r#"
    WITH event AS (
        INSERT INTO events (id, received_at_ms, event_type, source, disposition, body)
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING id
    ), queued AS (
        INSERT INTO jobs (id, event_id, target, due_at_ms, job)
        SELECT j.id, $1, j.target, j.due, j.job
        FROM unnest($7::bigint[], $8::text[], $9::bigint[], $10::bytea[]) AS j(id, target, due, job)
        WHERE EXISTS (SELECT 1 FROM event)
    ), claimed AS (
        INSERT INTO owners (object, destinations, via, event_id, at_ms)
        SELECT o, $11::text[], $12, $13, $14 FROM unnest($15::text[]) AS o
        WHERE EXISTS (SELECT 1 FROM event)
        ON CONFLICT (object) DO UPDATE SET destinations = EXCLUDED.destinations, via = EXCLUDED.via,
            event_id = EXCLUDED.event_id, at_ms = EXCLUDED.at_ms
        WHERE NOT (owners.destinations = EXCLUDED.destinations AND owners.via = EXCLUDED.via
                   AND EXCLUDED.at_ms < owners.at_ms + $16)
    )
    SELECT count(*) FROM event"#;

/// One ingest's statement parameters, owned so it can wait in the queue.
pub(super) struct IngestRow {
    pub id: String,
    pub received_at_ms: i64,
    pub event_type: String,
    pub source: String,
    pub disposition: Vec<u8>,
    pub body: Vec<u8>,
    pub job_ids: Vec<i64>,
    pub targets: Vec<String>,
    pub dues: Vec<i64>,
    pub blobs: Vec<Vec<u8>>,
    pub destinations: Vec<String>,
    pub via: String,
    pub claim_event: Option<String>,
    pub claim_at_ms: i64,
    /// Sorted and once each: two ingests naming the same objects lock them in one order.
    pub objects: Vec<String>,
    pub refresh_ms: i64,
}

impl IngestRow {
    fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.id,
            &self.received_at_ms,
            &self.event_type,
            &self.source,
            &self.disposition,
            &self.body,
            &self.job_ids,
            &self.targets,
            &self.dues,
            &self.blobs,
            &self.destinations,
            &self.via,
            &self.claim_event,
            &self.claim_at_ms,
            &self.objects,
            &self.refresh_ms,
        ]
    }
}

/// Whether the event was new (written) or seen before.
type Reply = oneshot::Sender<Result<bool>>;

/// The queue ingests wait in for their batch.
#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<(IngestRow, Reply)>,
}

impl Batcher {
    /// The batcher and its loop, to be spawned for as long as the store is open.
    pub(super) fn start(pool: Pool) -> (Batcher, impl std::future::Future<Output = ()> + Send) {
        let (queue, waiting) = mpsc::unbounded_channel();
        (Batcher { queue }, run(pool, waiting))
    }

    /// Writes `row` in the next batch; true if the event was new. Returns once committed.
    pub(super) async fn ingest(&self, row: IngestRow) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((row, reply)).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: Pool, mut waiting: mpsc::UnboundedReceiver<(IngestRow, Reply)>) {
    let lanes = Arc::new(Semaphore::new(LANES));
    loop {
        let Ok(lane) = lanes.clone().acquire_owned().await else { return };
        let Some(first) = waiting.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            commit(&pool, batch).await;
            drop(lane);
        });
    }
}

/// Commits the batch and answers each of its callers; a batch the database refused (a deadlock,
/// one bad row failing the others) is run again one ingest at a time.
async fn commit(pool: &Pool, batch: Vec<(IngestRow, Reply)>) {
    let outcome = if batch.len() == 1 {
        alone(pool, &batch[0].0).await.map(|new| vec![new])
    } else {
        together(pool, &batch).await
    };
    match outcome {
        Ok(news) => {
            for ((_, reply), new) in batch.into_iter().zip(news) {
                let _ = reply.send(Ok(new));
            }
        }
        Err(e) if batch.len() > 1 && refused_by_the_database(&e) => {
            tracing::debug!(ingests = batch.len(), "an ingest batch was refused; run again one by one: {e}");
            for (row, reply) in batch {
                let _ = reply.send(alone(pool, &row).await);
            }
        }
        Err(e) => {
            let text = e.to_string();
            let mut replies = batch.into_iter().map(|(_, reply)| reply);
            if let Some(first) = replies.next() {
                let _ = first.send(Err(e));
            }
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(text.clone())));
            }
        }
    }
}

async fn alone(pool: &Pool, row: &IngestRow) -> Result<bool> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let written = client.row(INGEST, &row.params()).await?;
    Ok(written.get::<_, i64>(0) > 0)
}

async fn together(pool: &Pool, batch: &[(IngestRow, Reply)]) -> Result<Vec<bool>> {
    let mut client = pool.get().await.map_err(super::pool_error)?;
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(INGEST).await?;
    let params: Vec<_> = batch.iter().map(|(row, _)| row.params()).collect();
    // Sent together: the driver pipelines queries issued at once on one connection.
    let written = futures_util::future::try_join_all(params.iter().map(|p| tx.query_one(&statement, p))).await?;
    tx.commit().await?;
    Ok(written.iter().map(|row| row.get::<_, i64>(0) > 0).collect())
}

/// The database answered with an error of its own (a deadlock, a constraint, a bad value), as
/// opposed to not answering: worth running each ingest alone.
fn refused_by_the_database(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(e) if e.code().is_some())
}
