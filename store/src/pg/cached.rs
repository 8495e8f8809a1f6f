//! Statements prepared once per connection and reused: tokio-postgres prepares a `&str` query on
//! every call (a round trip and a parse and plan on the server) before running it, which was
//! most of the database's CPU per event. Same names as the driver's verbs, so a call site reads
//! the same.

use std::future::Future;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::Result;

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) trait Cached {
    fn exec<'a>(&'a self, sql: &'a str, params: Params<'a>) -> impl Future<Output = Result<u64>> + Send + 'a;
    fn rows<'a>(&'a self, sql: &'a str, params: Params<'a>) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a;
    fn row<'a>(&'a self, sql: &'a str, params: Params<'a>) -> impl Future<Output = Result<Row>> + Send + 'a;
    fn maybe_row<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Option<Row>>> + Send + 'a;
}

impl<C: GenericClient> Cached for C {
    async fn exec<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<u64> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.execute(&statement, params).await?)
    }

    async fn rows<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Vec<Row>> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query(&statement, params).await?)
    }

    async fn row<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Row> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query_one(&statement, params).await?)
    }

    async fn maybe_row<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Option<Row>> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query_opt(&statement, params).await?)
    }
}
