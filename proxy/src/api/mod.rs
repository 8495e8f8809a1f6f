//! The APIs, one module per surface: `webhook.rs` (Stripe posts here), `listen.rs` (the listen
//! protocol of developers' inboxes, on the same listener) and `admin/` (the operator API on its
//! own listener), and `console/` (web pages on the admin listener). Each turns requests into calls on the stages below and their results into
//! typed answers (`wire/`); errors become answers through `http::ApiError`.

pub mod admin;
pub mod console;
pub mod listen;
pub mod webhook;

use crate::deliver::Presence;
use crate::wire;

/// An inbox's presence as both APIs show it.
pub fn presence(p: Presence) -> wire::listen::Presence {
    wire::listen::Presence {
        online: p.online,
        listeners: p.listeners,
        last_seen_ms: p.last_seen_ms,
        offered: p.offered,
    }
}
