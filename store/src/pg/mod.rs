//! The Postgres engine: its schema, created and upgraded by versioned migrations applied at
//! start, its operations (`engine.rs`), which the store contract (`engine.rs` at the crate root)
//! dispatches to, and the wake-ups replicas send each other (`wake.rs`). Several replicas may
//! start at once: a transaction-level advisory lock makes one of them migrate while the others
//! wait and then find it done. A database migrated by a newer fanout is refused with the reason
//! rather than misread.

mod batch;
mod cached;
mod engine;
mod export;
mod inboxes;
mod schema;
mod wake;

pub use engine::PgStore;
pub use schema::{migrate, SCHEMA_VERSION};
pub use wake::Wake;

#[cfg(test)]
mod tests;

/// The whole chain: tokio-postgres keeps the cause (a TLS certificate refused, a password
/// wrong) in `source`, which a bare `to_string` drops.
pub(crate) fn pool_error(e: impl std::error::Error) -> crate::StoreError {
    crate::StoreError::Pool(crate::error_chain(&e))
}
