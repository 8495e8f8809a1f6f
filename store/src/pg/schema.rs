//! Versioned migrations. Each is applied once, in order, in the same transaction that records the
//! new version, so a crash mid-migration leaves the previous version whole.

use tokio_postgres::Client;

use crate::{Result, StoreError};

/// The newest schema this binary knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Held while migrating; any constant works as long as it is fanout's alone.
const MIGRATION_LOCK: i64 = 0x66616e6f75745f31; // "fanout_1"

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`. Append only: a released migration is never
/// edited, a change is a new one. Jobs, dead letters and history entries are postcard blobs of
/// the store's record types: a change to those types is a schema change too (a migration that
/// rewrites the blobs), never silent. Text keys sort bytewise (`COLLATE "C"`), as sled's do,
/// whatever the database's locale.
const MIGRATIONS: &[&str] = &[
    // 1: events with their dedup key, per-target queues with expiring leases, dead letters,
    // history, ownership, `any`-group state, paused targets.
    r#"
    CREATE TABLE events (
        id text COLLATE "C" PRIMARY KEY,
        received_at_ms bigint NOT NULL,
        event_type text NOT NULL,
        source text NOT NULL,
        disposition bytea NOT NULL,
        body bytea NOT NULL
    );
    CREATE INDEX events_by_arrival ON events (received_at_ms DESC, id DESC);
    CREATE SEQUENCE job_ids;
    CREATE SEQUENCE lease_ids;
    CREATE TABLE jobs (
        id bigint PRIMARY KEY,
        event_id text COLLATE "C" NOT NULL,
        target text COLLATE "C" NOT NULL,
        due_at_ms bigint NOT NULL,
        job bytea NOT NULL,
        lease bigint,
        lease_until_ms bigint,
        leased_by text
    );
    CREATE INDEX jobs_due ON jobs (target, due_at_ms, id) WHERE lease IS NULL;
    CREATE INDEX jobs_leased ON jobs (lease_until_ms) WHERE lease IS NOT NULL;
    CREATE TABLE dead_letters (
        id bigint PRIMARY KEY,
        event_id text NOT NULL,
        target text NOT NULL,
        died_at_ms bigint NOT NULL,
        letter bytea NOT NULL
    );
    CREATE INDEX dead_letters_by_target ON dead_letters (target, id);
    CREATE TABLE history (
        event_id text NOT NULL,
        seq bigint GENERATED ALWAYS AS IDENTITY,
        received_at_ms bigint NOT NULL,
        entry bytea NOT NULL,
        PRIMARY KEY (event_id, seq)
    );
    CREATE INDEX history_by_arrival ON history (received_at_ms);
    CREATE TABLE owners (
        object text COLLATE "C" PRIMARY KEY,
        destinations text[] NOT NULL,
        via text NOT NULL,
        event_id text,
        at_ms bigint NOT NULL
    );
    CREATE INDEX owners_by_age ON owners (at_ms);
    CREATE TABLE group_rounds (
        event_id text NOT NULL,
        grp text NOT NULL,
        round bigint NOT NULL,
        delivered_by text NOT NULL,
        PRIMARY KEY (event_id, grp, round)
    );
    CREATE TABLE paused (target text PRIMARY KEY);
    CREATE TABLE quarantine (
        source text NOT NULL,
        key text NOT NULL,
        value bytea NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    );
    "#,
    // 2: who listens to each inbox, per replica, so every replica can tell whether an inbox is
    // online wherever its listener polls.
    r#"
    CREATE TABLE presence (
        inbox text COLLATE "C" NOT NULL,
        replica text NOT NULL,
        seen_at_ms bigint NOT NULL,
        listeners integer NOT NULL,
        offered integer NOT NULL,
        PRIMARY KEY (inbox, replica)
    );
    "#,
    // 3: event bodies (Stripe's are 2-10 KB) stay in the row, uncompressed, up to a page:
    // otherwise every body past 2 KB is compressed at ingest and decompressed at each delivery.
    r#"
    ALTER TABLE events SET (toast_tuple_target = 8160);
    "#,
    // 4: inboxes created at run time (`fanout inbox create`), as JSON: fields may be added
    // without a migration.
    r#"
    CREATE TABLE inboxes (
        name text COLLATE "C" PRIMARY KEY,
        record jsonb NOT NULL
    );
    "#,
];

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it found. Refuses a database
/// at a newer version.
pub async fn migrate(client: &mut Client) -> Result<i32> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS fanout_schema (version integer NOT NULL)").await?;
    let found: i32 = match tx.query_opt("SELECT version FROM fanout_schema", &[]).await? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO fanout_schema (version) VALUES (0)", &[]).await?;
            0
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema { found, known: SCHEMA_VERSION });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    tx.execute("UPDATE fanout_schema SET version = $1", &[&SCHEMA_VERSION]).await?;
    tx.commit().await?;
    Ok(found)
}
