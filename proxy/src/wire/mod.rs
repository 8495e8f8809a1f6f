//! Wire formats: the JSON the proxy's APIs speak, as typed structs that the server writes and the
//! CLI reads. Neither side owns them, so both import them from here, at the bottom of the crate.
//!
//! Invariant: plain serde data, no behaviour and no imports from the rest of the crate; the
//! proxy's internal state types are never serialized as they are.

pub mod admin;
pub mod listen;

use serde::{Deserialize, Serialize};

/// Every refusal, on every listener: `{"error": "what happened and what to do"}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
