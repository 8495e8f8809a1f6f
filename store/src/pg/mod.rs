//! The Postgres engine (issue 13, in progress): its schema, created and upgraded by versioned
//! migrations applied at start, and its operations (`engine.rs`), which the store contract
//! (`engine.rs` at the crate root) dispatches to. The proxy does not use it yet. Several replicas may start at once: a transaction-level
//! advisory lock makes one of them migrate while the others wait and then find it done. A
//! database migrated by a newer fanout is refused with the reason rather than misread.

mod engine;
mod schema;

pub use engine::PgStore;
pub use schema::{migrate, SCHEMA_VERSION};

#[cfg(test)]
mod tests;
