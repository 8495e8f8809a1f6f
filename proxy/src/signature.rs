//! Stripe's webhook signature scheme, both ways: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`,
//! where each `v1` is HMAC-SHA256 over `<t>.<raw body>` keyed with the endpoint secret's bytes
//! (`whsec_...` as written). Ingress checks it; delivery writes it afresh for each attempt so a
//! target's stock Stripe SDK accepts it with the target's own secret.
//!
//! Invariant: pure functions, no I/O, no clock (callers pass `now`); secrets never appear in errors.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a `Stripe-Signature` header was refused. The text is what Stripe (or whoever sent it) sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Stripe-Signature header has no timestamp (t=...)")]
    NoTimestamp,
    #[error("Stripe-Signature header has no v1 signature")]
    NoV1,
    #[error("Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no signature matches the body for any configured secret")]
    NoMatch,
    #[error("timestamp is outside the tolerance of {tolerance_secs}s (it is {skew_secs}s from now): a replay, or a clock that is off")]
    OutsideTolerance { tolerance_secs: u64, skew_secs: i64 },
}

/// The parts of a `Stripe-Signature` header that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub timestamp: i64,
    pub v1: Vec<[u8; 32]>,
}

/// Parses the header strictly: one `t`, at least one well-formed `v1`. Other schemes (`v0`, and any
/// Stripe adds later) are ignored, as Stripe's own libraries do.
pub fn parse(header: &str) -> Result<ParsedHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (key, value) = item.trim().split_once('=').ok_or(SignatureError::Malformed("an item is not key=value"))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one t="));
                }
                let t = value.parse::<i64>().map_err(|_| SignatureError::Malformed("t is not a unix timestamp"))?;
                timestamp = Some(t);
            }
            "v1" => {
                let mut sig = [0u8; 32];
                hex::decode_to_slice(value, &mut sig)
                    .map_err(|_| SignatureError::Malformed("v1 is not 64 hex digits"))?;
                v1.push(sig);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1);
    }
    Ok(ParsedHeader { timestamp, v1 })
}

/// Accepts when any `v1` matches any of `secrets` (several during a rotation) and `t` is within
/// `tolerance_secs` of `now` either way. The signature is checked first, as Stripe does, so a
/// forgery is reported as a forgery whatever its timestamp.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[impl AsRef<[u8]>],
    tolerance_secs: u64,
    now: i64,
) -> Result<(), SignatureError> {
    let parsed = parse(header)?;
    let matches = secrets.iter().any(|secret| {
        let mac = signed_payload_mac(secret.as_ref(), parsed.timestamp, body);
        // verify_slice compares in constant time.
        parsed.v1.iter().any(|sig| mac.clone().verify_slice(sig).is_ok())
    });
    if !matches {
        return Err(SignatureError::NoMatch);
    }
    let skew = now.saturating_sub(parsed.timestamp);
    if skew.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance { tolerance_secs, skew_secs: skew });
    }
    Ok(())
}

/// A complete `Stripe-Signature` header value for `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mac = signed_payload_mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(mac))
}

fn signed_payload_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"customer.created"}"#;

    #[test]
    fn known_answer_vector() {
        // Computed independently: printf '%s' '1700000000.{"id":"evt_1","type":"customer.created"}'
        //   | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, BODY),
            "t=1700000000,v1=727c09138c261236068b520ff908aecb224c08d253eb2d0fcc71eda5643fc665"
        );
    }

    #[test]
    fn accepts_any_matching_signature_for_any_secret() {
        let old = sign(b"whsec_old", 100, BODY);
        let new = sign(b"whsec_new", 100, BODY);
        let both = format!("{},v1={},v0=ignored", new, &old[old.find("v1=").unwrap() + 3..]);
        assert_eq!(verify(&both, BODY, &["whsec_old"], 300, 100), Ok(()));
        assert_eq!(verify(&both, BODY, &["whsec_other", "whsec_new"], 300, 100), Ok(()));
        assert_eq!(verify(&both, BODY, &["whsec_other"], 300, 100), Err(SignatureError::NoMatch));
    }

    #[test]
    fn refuses_other_body_and_stale_or_future_timestamps() {
        let header = sign(b"whsec_a", 1000, BODY);
        assert_eq!(verify(&header, b"{}", &["whsec_a"], 300, 1000), Err(SignatureError::NoMatch));
        assert_eq!(
            verify(&header, BODY, &["whsec_a"], 300, 1301),
            Err(SignatureError::OutsideTolerance { tolerance_secs: 300, skew_secs: 301 })
        );
        assert!(verify(&header, BODY, &["whsec_a"], 300, 699).is_err());
        assert_eq!(verify(&header, BODY, &["whsec_a"], 300, 1300), Ok(()));
    }

    #[test]
    fn malformed_headers_are_named() {
        let v1 = format!("v1={}", "ab".repeat(32));
        assert_eq!(parse(&v1), Err(SignatureError::NoTimestamp));
        assert_eq!(parse("t=1,v0=abc"), Err(SignatureError::NoV1));
        assert_eq!(parse(&format!("t=1,t=2,{v1}")), Err(SignatureError::Malformed("more than one t=")));
        assert_eq!(parse(&format!("t=soon,{v1}")), Err(SignatureError::Malformed("t is not a unix timestamp")));
        assert_eq!(parse("t=1,v1=zz"), Err(SignatureError::Malformed("v1 is not 64 hex digits")));
        assert_eq!(parse("garbage"), Err(SignatureError::Malformed("an item is not key=value")));
        assert_eq!(parse(""), Err(SignatureError::Malformed("an item is not key=value")));
    }
}
