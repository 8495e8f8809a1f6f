//! The end-to-end suite, one test binary (one link step instead of one per file): the real proxy
//! and binary on loopback, a real sled store in temp dirs, real HTTP sinks. `tests/clock.rs` stays
//! a binary of its own because it steps the process's view of the wall clock.

mod common;
#[path = "../../benches/loadgen/mod.rs"]
mod loadgen;

mod admin;
mod affinity;
mod breaker;
mod cli;
mod console;
mod crash;
mod faults;
mod hostile;
mod inbox;
mod inboxes;
mod layers;
mod loadgen_smoke;
mod msrv;
mod operate;
mod pipeline;
mod postgres;
mod properties;
mod replicas;
mod secrets;
mod store_move;
mod trigger;
