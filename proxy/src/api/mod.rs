//! The APIs, one module per surface: `webhook.rs` (Stripe posts here), `listen.rs` (the listen
//! protocol of developers' inboxes, on the same listener) and `admin/` (the operator API on its
//! own listener). Each turns requests into calls on the stages below and their results into
//! typed answers (`wire/`); errors become answers through `http::ApiError`.

pub mod admin;
pub mod listen;
pub mod webhook;
