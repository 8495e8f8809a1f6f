//! Wire formats: the JSON the proxy's APIs speak, as typed structs that the server writes and the
//! CLI reads. Neither side owns them, so both import them from here, at the bottom of the crate.
//!
//! Invariant: plain serde data and the time format they share, no I/O and no imports from the
//! rest of the crate; the proxy's internal state types are never serialized as they are.

pub mod admin;
pub mod listen;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Every refusal, on every listener: `{"error": "what happened and what to do"}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// RFC 3339 in UTC, to the millisecond (clamped to year 9999, which RFC 3339 cannot go past).
pub fn time(ms: u64) -> String {
    const END_OF_9999_MS: u64 = 253_402_300_799_999;
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(END_OF_9999_MS))).to_string()
}

/// A point in time as an operator writes it: RFC 3339 (`2026-11-24T10:00:00Z`), unix seconds, or
/// a duration meaning that long ago (`2h`).
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(|| format!("{s} is too far in the future"));
    }
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(now_ms.saturating_sub(ago.as_millis() as u64));
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
        .map_err(|_| format!("{s:?} is not a time: write 2026-11-24T10:00:00Z, unix seconds, or 2h (ago)"))
}
