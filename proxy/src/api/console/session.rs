//! Who is signed in to the console: a signed cookie, so any replica that shares the admin token
//! accepts it and a restart signs nobody out (with no admin token the key is per process, and a
//! restart does). Nothing is kept on the server, so signing out clears the browser's cookie; a
//! copy of it taken before stays good until it expires (12 h) or the token changes.
//!
//! The cookie's key is derived from the admin token (or, with none, from a per-process seed), so
//! changing the token signs every operator out. A developer's session also carries a fingerprint
//! of their inbox token, checked on every request: rotating the token, or deleting the inbox,
//! ends it. The CSRF token is a random nonce inside the signed, HttpOnly cookie, which a form
//! echoes (the signed double-submit pattern): a page on another origin can neither read it nor
//! forge a cookie that carries one.

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use crate::config::{token_digest, Config, Endpoint, InboxToken, Secret};

pub const COOKIE: &str = "fanout_console";
/// How long a sign-in lasts.
pub const LIFETIME_MS: u64 = 12 * 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Operator,
    /// Sees and replays only what was routed to this inbox.
    Developer {
        inbox: String,
        /// The first 16 hex digits of the SHA-256 of the SHA-256 of their token.
        token: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub role: Role,
    pub expires_ms: u64,
    pub csrf: String,
}

impl Session {
    /// Err only if the OS random source failed: nobody is signed in with a guessable nonce.
    pub fn new(role: Role, now_ms: u64) -> Result<Session, getrandom::Error> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce)?;
        Ok(Session { role, expires_ms: now_ms + LIFETIME_MS, csrf: hex::encode(nonce) })
    }

    pub fn inbox(&self) -> Option<&str> {
        match &self.role {
            Role::Operator => None,
            Role::Developer { inbox, .. } => Some(inbox),
        }
    }

    fn encode(&self) -> String {
        match &self.role {
            Role::Operator => format!("op|{}|{}", self.expires_ms, self.csrf),
            Role::Developer { inbox, token } => format!("dev|{}|{}|{token}|{inbox}", self.expires_ms, self.csrf),
        }
    }

    fn decode(value: &str) -> Option<Session> {
        let mut parts = value.splitn(5, '|');
        let (kind, expires, csrf) = (parts.next()?, parts.next()?, parts.next()?);
        let role = match kind {
            "op" => Role::Operator,
            "dev" => Role::Developer { token: parts.next()?.to_owned(), inbox: parts.next()?.to_owned() },
            _ => return None,
        };
        Some(Session { role, expires_ms: expires.parse().ok()?, csrf: csrf.to_owned() })
    }

    /// Whether this session still holds under `config`: not expired, and a developer's inbox
    /// still there with the token they signed in with.
    pub fn holds(&self, config: &Config, now_ms: u64) -> bool {
        if now_ms >= self.expires_ms {
            return false;
        }
        match &self.role {
            Role::Operator => true,
            Role::Developer { inbox, token } => config
                .target(inbox)
                .and_then(|t| match &t.endpoint {
                    Endpoint::Inbox { token: own } => Some(fingerprint(own)),
                    Endpoint::Url(_) => None,
                })
                .is_some_and(|own| own == *token),
        }
    }

    /// Whether a form's `csrf` field is this session's, compared in constant time.
    pub fn csrf_matches(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| Secret::new(self.csrf.clone()).matches(g))
    }
}

/// Short, and one-way twice over: a cookie shows nothing that opens the inbox.
pub fn fingerprint(token: &InboxToken) -> String {
    let digest = match token {
        InboxToken::Plain(secret) => token_digest(secret.expose()),
        InboxToken::Digest(hex) => hex.clone(),
    };
    hex::encode(Sha256::digest(digest.as_bytes()))[..16].to_owned()
}

/// The signing key: from the admin token when there is one (every replica agrees; changing the
/// token signs everyone out), else from this process's random seed.
pub fn key(admin_token: Option<&Secret>, seed: &[u8; 32]) -> Key {
    let mut h = Sha256::new();
    h.update(b"fanout console session v1\0");
    match admin_token {
        Some(token) => {
            h.update(b"admin token\0");
            h.update(token.expose().as_bytes());
        }
        None => {
            h.update(b"process seed\0");
            h.update(seed);
        }
    }
    Key::derive_from(&h.finalize())
}

/// The session a request's cookie carries, if its signature holds.
pub fn read(headers: &HeaderMap, key: &Key) -> Option<Session> {
    let mut jar = CookieJar::new();
    for value in headers.get_all(header::COOKIE) {
        for cookie in Cookie::split_parse(value.to_str().ok()?.to_owned()).flatten() {
            if cookie.name() == COOKIE {
                jar.add_original(cookie);
            }
        }
    }
    Session::decode(jar.signed(key).get(COOKIE)?.value())
}

/// The `Set-Cookie` that signs `session` in. `secure`: the console was reached over HTTPS.
pub fn set_cookie(session: &Session, key: &Key, secure: bool) -> String {
    let mut jar = CookieJar::new();
    jar.signed_mut(key).add(
        Cookie::build((COOKIE, session.encode()))
            .path("/ui")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(secure)
            .max_age(cookie::time::Duration::milliseconds(LIFETIME_MS as i64)),
    );
    jar.get(COOKIE).map(|c| c.to_string()).unwrap_or_default()
}

/// The `Set-Cookie` that signs out.
pub fn clear_cookie(secure: bool) -> String {
    Cookie::build((COOKIE, ""))
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {pair}")).unwrap());
        h
    }

    #[test]
    fn a_signed_session_reads_back_and_a_tampered_one_does_not() {
        let key = key(Some(&Secret::new("admin")), &[0; 32]);
        let role = Role::Developer { inbox: "alice.b-c".into(), token: "0123456789abcdef".into() };
        let dev = Session::new(role, 5).unwrap();
        let set = set_cookie(&dev, &key, false);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui"), "{set}");
        assert!(!set.contains("Secure"), "{set}");
        assert!(set_cookie(&dev, &key, true).contains("Secure"));
        assert_eq!(read(&headers(&set), &key), Some(dev.clone()));
        // Another admin token, or an edited value, is not signed in.
        assert_eq!(read(&headers(&set), &super::key(Some(&Secret::new("other")), &[0; 32])), None);
        let forged = set.replacen("dev|", "op|", 1);
        assert_eq!(read(&headers(&forged), &key), None);
        assert_eq!(read(&HeaderMap::new(), &key), None);
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn csrf_is_the_sessions_own() {
        let s = Session::new(Role::Operator, 0).unwrap();
        assert_eq!(s.csrf.len(), 32);
        assert!(s.csrf_matches(Some(&s.csrf.clone())));
        assert!(!s.csrf_matches(Some("nope")) && !s.csrf_matches(None));
        assert_ne!(Session::new(Role::Operator, 0).unwrap().csrf, s.csrf, "a fresh nonce per sign-in");
    }

    #[test]
    fn fingerprints_agree_for_a_token_written_and_one_kept_as_a_digest() {
        let plain = InboxToken::Plain(Secret::new("t0ken"));
        let digest = InboxToken::Digest(token_digest("t0ken"));
        assert_eq!(fingerprint(&plain), fingerprint(&digest));
        assert_ne!(fingerprint(&plain), fingerprint(&InboxToken::Plain(Secret::new("other"))));
        assert!(!fingerprint(&plain).contains(&token_digest("t0ken")[..16]), "not the stored digest");
    }
}
