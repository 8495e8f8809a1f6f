//! Test support for the engines: a real, throwaway Postgres. Compiled only for tests (feature
//! `testing`, which the proxy's tests turn on too); the binary never has it.

mod postgres;

pub use postgres::{plain_tls, TestPostgres};
