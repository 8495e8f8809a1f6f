//! fanout: one Stripe test-mode webhook endpoint in; verified, durably queued, routed and re-signed
//! out to every environment that owns the event.
//!
//! The pipeline is the architecture: [`api::webhook`] → [`verify`] → [`route`] → [`plan`] →
//! [`ingest`] (the store, `fanout-store`) → [`deliver`]. Imports point one way, down this list:
//!
//! - pure core, no I/O: [`wire`] (the APIs' JSON), [`signature`], [`route`], [`config`] (the
//!   resolved types, and loading them), [`verify`], [`plan`], `deliver::policy`,
//!   `deliver::breaker`, [`fixtures`] (what `fanout trigger` sends);
//! - [`clock`], [`background`], [`metrics`], [`http`] (the HTTP edge: errors as answers, bodies, servers, the
//!   client);
//! - [`deliver`] (the workers), [`ingest`] (taking an event in), [`retention`], [`inboxes`] (those
//!   created at run time);
//! - [`api`] (webhook, listen protocol, admin), [`serve`] (wiring), [`reload`], [`cli`].

pub mod api;
pub mod background;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod fixtures;
pub mod http;
pub mod inboxes;
pub mod ingest;
pub mod metrics;
pub mod plan;
pub mod recent;
pub mod reload;
pub mod retention;
pub mod route;
pub mod serve;
pub mod signature;
pub mod verify;
pub mod wire;
