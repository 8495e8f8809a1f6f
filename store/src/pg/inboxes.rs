//! Inboxes created at run time, on Postgres: one row each, the record as JSON. Every replica
//! reads the table (see the proxy's `inboxes.rs`), so an inbox created through one is served by
//! all of them.

use super::cached::Cached;
use super::PgStore;
use crate::{InboxRecord, Result, StoreError};

fn to_json(inbox: &InboxRecord) -> Result<String> {
    serde_json::to_string(inbox).map_err(|e| StoreError::Corrupt { what: "to write", detail: e.to_string() })
}

impl PgStore {
    pub async fn inboxes(&self) -> Result<Vec<InboxRecord>> {
        let client = self.client().await?;
        let rows = client.rows("SELECT record::text FROM inboxes ORDER BY name", &[]).await?;
        let mut all = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_str(row.get::<_, &str>(0)) {
                Ok(inbox) => all.push(inbox),
                Err(e) => tracing::error!("an inbox row does not decode, left out: {e}"),
            }
        }
        Ok(all)
    }

    pub async fn create_inbox(&self, inbox: &InboxRecord) -> Result<bool> {
        let client = self.client().await?;
        let sql = "INSERT INTO inboxes (name, record) VALUES ($1, $2::text::jsonb) ON CONFLICT DO NOTHING";
        Ok(client.exec(sql, &[&inbox.name, &to_json(inbox)?]).await? == 1)
    }

    pub async fn replace_inbox(&self, inbox: &InboxRecord) -> Result<bool> {
        let client = self.client().await?;
        let sql = "UPDATE inboxes SET record = $2::text::jsonb WHERE name = $1";
        Ok(client.exec(sql, &[&inbox.name, &to_json(inbox)?]).await? == 1)
    }

    pub async fn delete_inbox(&self, name: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client.exec("DELETE FROM inboxes WHERE name = $1", &[&name]).await? == 1)
    }
}
