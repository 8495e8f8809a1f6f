//! fanout: one Stripe test-mode webhook endpoint in; verified, durably queued, routed and re-signed
//! out to every environment that owns the event.
//!
//! The pipeline is the architecture, one module per stage, data flowing one way:
//! [`ingress`] → [`verify`] → [`route`] → store (`fanout-store`) → [`deliver`].
//! [`config`] builds everything before start; [`serve`] wires the stages together.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod inbox;
pub mod ingress;
pub mod metrics;
pub mod reload;
pub mod route;
pub mod serve;
pub mod signature;
pub mod tls;
pub mod verify;
