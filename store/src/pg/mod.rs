//! The Postgres engine (issue 13, in progress): so far its schema, created and upgraded by
//! versioned migrations applied at start. Several replicas may start at once: a transaction-level
//! advisory lock makes one of them migrate while the others wait and then find it done. A
//! database migrated by a newer fanout is refused with the reason rather than misread.

mod schema;

pub use schema::{migrate, SCHEMA_VERSION};

#[cfg(test)]
mod tests;
