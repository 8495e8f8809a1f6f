//! The Postgres engine's side of an export and an import. An export reads one snapshot
//! (`REPEATABLE READ`, read only), so replicas may keep running meanwhile, and pages through each
//! table on a portal, ordered as sled's keys are (`COLLATE "C"`, bytewise). An import writes
//! each batch in one transaction, through the same inserts as the engine's verbs.

use deadpool_postgres::{GenericClient, Transaction};
use tokio::sync::mpsc::Sender;
use tokio_postgres::{IsolationLevel, Row};

use super::cached::Cached;
use super::engine::{
    big, event_of, insert_dead_letter, insert_event, insert_history, insert_job, insert_round, owner_of, EVENT_COLUMNS,
};
use super::PgStore;
use crate::export::ExportRecord;
use crate::{decode, Result, StoreError};

/// Rows fetched from a portal at a time.
const PAGE: i32 = 500;

/// Every table an import would write to (and `quarantine`: a store that has one was used).
const TABLES: [&str; 9] =
    ["events", "jobs", "dead_letters", "history", "owners", "group_rounds", "paused", "inboxes", "quarantine"];

impl PgStore {
    /// Sends every record to `to`, in the export's order; stops with [`StoreError::Hangup`] if
    /// the receiver goes away. A job leased by a replica is exported as queued.
    pub async fn export(&self, to: &Sender<ExportRecord>) -> Result<()> {
        let mut client = self.client().await?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let paused = "SELECT target FROM paused ORDER BY target COLLATE \"C\"";
        stream(&tx, to, paused, |r| Ok(ExportRecord::Paused { target: r.get(0) })).await?;
        let inboxes = "SELECT record::text FROM inboxes ORDER BY name COLLATE \"C\"";
        stream(&tx, to, inboxes, |r| {
            serde_json::from_str(r.get::<_, &str>(0))
                .map(ExportRecord::Inbox)
                .map_err(|e| crate::StoreError::Corrupt { what: "inbox", detail: e.to_string() })
        })
        .await?;
        let events = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY received_at_ms, id");
        stream(&tx, to, &events, |r| Ok(ExportRecord::Event(event_of(r)?))).await?;
        let history = "SELECT event_id, received_at_ms, entry FROM history
                       ORDER BY received_at_ms, event_id COLLATE \"C\", seq";
        stream(&tx, to, history, |r| {
            let (event_id, received_at_ms) = (r.get(0), r.get::<_, i64>(1) as u64);
            Ok(ExportRecord::History { event_id, received_at_ms, entry: decode(r.get::<_, &[u8]>(2), "history")? })
        })
        .await?;
        let rounds = "SELECT event_id, grp, round, delivered_by FROM group_rounds
                      ORDER BY event_id COLLATE \"C\", grp COLLATE \"C\", round";
        stream(&tx, to, rounds, |r| {
            let (event_id, group, round, delivered_by) = (r.get(0), r.get(1), r.get::<_, i64>(2) as u64, r.get(3));
            Ok(ExportRecord::GroupRound { event_id, group, round, delivered_by })
        })
        .await?;
        let jobs = "SELECT job FROM jobs ORDER BY target, due_at_ms, id";
        stream(&tx, to, jobs, |r| Ok(ExportRecord::job(decode(r.get::<_, &[u8]>(0), "job")?))).await?;
        let dead = "SELECT letter FROM dead_letters ORDER BY id";
        stream(&tx, to, dead, |r| Ok(ExportRecord::dead_letter(decode(r.get::<_, &[u8]>(0), "dead letter")?))).await?;
        let owners = "SELECT object, destinations, via, event_id, at_ms FROM owners ORDER BY object";
        stream(&tx, to, owners, |r| Ok(ExportRecord::Owner { object: r.get(0), owner: owner_of(r, 1) })).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes `batch` in one transaction, and moves the job id sequence past every id in it, so a
    /// job made after the import never takes an imported job's id. (No lease is imported, so
    /// lease ids need not move.)
    pub async fn import(&self, batch: Vec<ExportRecord>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for record in &batch {
            import_one(&tx, record).await?;
        }
        let newest = batch.iter().map(ExportRecord::newest_job_id).max().unwrap_or(0);
        if newest > 0 {
            tx.exec("SELECT setval('job_ids', greatest($1, (SELECT last_value FROM job_ids)))", &[&big(newest)])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether nothing was ever kept here: an import goes only into an empty store.
    pub async fn is_empty(&self) -> Result<bool> {
        let client = self.client().await?;
        let none: Vec<String> = TABLES.iter().map(|t| format!("NOT EXISTS (SELECT 1 FROM {t})")).collect();
        Ok(client.row(&format!("SELECT {}", none.join(" AND ")), &[]).await?.get(0))
    }
}

/// Runs `sql` and sends each row as `record` makes it, a page at a time.
async fn stream(
    tx: &Transaction<'_>,
    to: &Sender<ExportRecord>,
    sql: &str,
    record: impl Fn(&Row) -> Result<ExportRecord>,
) -> Result<()> {
    let portal = tx.bind(sql, &[]).await?;
    loop {
        let rows = tx.query_portal(&portal, PAGE).await?;
        for row in &rows {
            to.send(record(row)?).await.map_err(|_| StoreError::Hangup)?;
        }
        if rows.len() < PAGE as usize {
            return Ok(());
        }
    }
}

async fn import_one(client: &impl GenericClient, record: &ExportRecord) -> Result<()> {
    match record {
        ExportRecord::Paused { target } => {
            client.exec("INSERT INTO paused (target) VALUES ($1) ON CONFLICT DO NOTHING", &[target]).await?;
        }
        ExportRecord::Inbox(inbox) => {
            let json = serde_json::to_string(inbox)
                .map_err(|e| crate::StoreError::Corrupt { what: "to write", detail: e.to_string() })?;
            let sql = "INSERT INTO inboxes (name, record) VALUES ($1, $2::text::jsonb) ON CONFLICT DO NOTHING";
            client.exec(sql, &[&inbox.name, &json]).await?;
        }
        ExportRecord::Event(event) => {
            insert_event(client, event).await?;
        }
        ExportRecord::History { event_id, received_at_ms, entry } => {
            insert_history(client, event_id, *received_at_ms, entry).await?
        }
        ExportRecord::GroupRound { event_id, group, round, delivered_by } => {
            insert_round(client, event_id, group, *round, delivered_by).await?
        }
        ExportRecord::Job(job) => insert_job(client, job).await?,
        ExportRecord::DeadLetter(letter) => insert_dead_letter(client, letter).await?,
        ExportRecord::Owner { object, owner } => {
            client
                .exec(
                    "INSERT INTO owners (object, destinations, via, event_id, at_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[object, &owner.destinations, &owner.via, &owner.event_id, &big(owner.at_ms)],
                )
                .await?;
        }
    }
    Ok(())
}
