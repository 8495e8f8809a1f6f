//! Hostile input, table-driven: malformed and forged requests against the real proxy over real
//! sockets (raw TCP where an HTTP client would refuse to send them). Each gets its own status and
//! reason, nothing is stored and nothing is delivered; then the same endpoint still accepts a
//! correct event, so the refusals were for the reasons given.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

/// What one case sends: headers and body through an HTTP client, or raw bytes on a socket.
enum Send {
    Http { method: &'static str, path: String, headers: Vec<(&'static str, String)>, body: Vec<u8> },
    Raw(Vec<u8>),
}

struct Case {
    name: &'static str,
    send: Send,
    status: u16,
    /// Text the answer must contain (empty: the status says it all, e.g. hyper's 431).
    reason: &'static str,
}

const LIMIT: usize = 8192;

fn signed(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![("stripe-signature", stripe_signature(SOURCE_SECRET, now(), body))]
}

fn post(headers: Vec<(&'static str, String)>, body: impl Into<Vec<u8>>) -> Send {
    Send::Http { method: "POST", path: "/stripe/webhook".into(), headers, body: body.into() }
}

fn to_path(method: &'static str, path: &str, body: &[u8]) -> Send {
    Send::Http { method, path: path.into(), headers: signed(body), body: body.to_vec() }
}

/// A request written by hand: `head` is everything before the blank line.
fn raw(head: &str, body: &[u8]) -> Send {
    let mut bytes = format!("{head}\r\n\r\n").into_bytes();
    bytes.extend_from_slice(body);
    Send::Raw(bytes)
}

/// Writes `bytes`, then reads until the server answers or closes (or `within` passes).
fn exchange_raw(addr: SocketAddr, bytes: &[u8], within: Duration) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(within)).unwrap();
    // The server may answer (and close) before it has read everything: a failed write is fine.
    let _ = conn.write_all(bytes);
    let mut answer = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                // A whole response: head, and a body as long as it says (ours are short).
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    if length.is_none_or(|n| body.len() >= n) {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_odd_malformed_or_forged_requests_each_refused_for_its_reason_and_nothing_stored() {
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = format!(
            "max_body_bytes: {LIMIT}\nbody_read_timeout: 1s\nheader_read_timeout: 1s\nsources:\n  - {{name: s, path: /stripe/webhook, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: all, url: \"{}\", secret: whsec_all}}\ndefault: all\n",
            sink.url()
        );
        let proxy = Proxy::start(&yaml).await;
        let addr = proxy.running.addr;
        let host = format!("Host: {addr}");
        let body = event("evt_hostile", "customer.created", "x");
        let b = body.as_bytes();
        let t = now();
        let sig = |secret: &str, t: i64, body: &[u8]| stripe_signature(secret, t, body);
        let v1_only = sig(SOURCE_SECRET, t, b).split_once(',').unwrap().1.to_owned();
        let mut nested = "[".repeat(3000);
        nested.push_str(&"]".repeat(3000));
        let deep = format!(r#"{{"id":"evt_deep","type":"x","livemode":false,"d":{nested}}}"#);
        let big = format!(r#"{{"id":"evt_big","type":"x","livemode":false,"pad":"{}"}}"#, "a".repeat(LIMIT));
        let mut invalid_utf8 = br#"{"id":"evt_u","type":"x","livemode":false,"n":""#.to_vec();
        invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0x80]);
        invalid_utf8.extend_from_slice(br#""}"#);
        let json = |s: &str| s.as_bytes().to_vec();
        let with_sig = |s: &str| (signed(s.as_bytes()), json(s));
        let many_v1 = format!("t={t},{}", (0..500).map(|i| format!("v1={i:064x}")).collect::<Vec<_>>().join(","));

        let mut cases = vec![
            Case { name: "no Stripe-Signature", send: post(vec![], b), status: 400, reason: "missing Stripe-Signature" },
            Case {
                name: "two Stripe-Signature headers",
                send: post([signed(b), signed(b)].concat(), b),
                status: 400,
                reason: "more than one Stripe-Signature",
            },
            Case { name: "no timestamp", send: post(vec![("stripe-signature", v1_only)], b), status: 400, reason: "no timestamp" },
            Case {
                name: "no v1",
                send: post(vec![("stripe-signature", format!("t={t},v0=abcd"))], b),
                status: 400,
                reason: "no v1",
            },
            Case { name: "garbled", send: post(vec![("stripe-signature", "nonsense".into())], b), status: 400, reason: "malformed" },
            Case {
                name: "v1 not hex",
                send: post(vec![("stripe-signature", format!("t={t},v1=zz"))], b),
                status: 400,
                reason: "malformed",
            },
            Case {
                name: "timestamp not a number",
                send: post(vec![("stripe-signature", format!("t=soon,v1={}", "a".repeat(64)))], b),
                status: 400,
                reason: "malformed",
            },
            Case {
                name: "timestamp overflows",
                send: post(vec![("stripe-signature", format!("t=99999999999999999999999,v1={}", "a".repeat(64)))], b),
                status: 400,
                reason: "malformed",
            },
            Case {
                name: "v1 of the wrong length",
                send: post(vec![("stripe-signature", format!("t={t},v1=abcd"))], b),
                status: 400,
                reason: "v1 is not 64 hex digits",
            },
            Case {
                name: "five hundred v1 values, none right",
                send: post(vec![("stripe-signature", many_v1)], b),
                status: 400,
                reason: "no signature matches",
            },
            Case {
                name: "signed with another secret",
                send: post(vec![("stripe-signature", sig("whsec_forged", t, b))], b),
                status: 400,
                reason: "no signature matches",
            },
            Case {
                name: "signature over a different body",
                send: post(vec![("stripe-signature", sig(SOURCE_SECRET, t, b"{}"))], b),
                status: 400,
                reason: "no signature matches",
            },
            Case {
                name: "body changed after signing",
                send: post(vec![("stripe-signature", sig(SOURCE_SECRET, t, b))], body.replace("customer", "kustomer")),
                status: 400,
                reason: "no signature matches",
            },
            Case {
                name: "replayed capture (old timestamp)",
                send: post(vec![("stripe-signature", sig(SOURCE_SECRET, t - 600, b))], b),
                status: 400,
                reason: "outside the tolerance",
            },
            Case {
                name: "timestamp from the future",
                send: post(vec![("stripe-signature", sig(SOURCE_SECRET, t + 600, b))], b),
                status: 400,
                reason: "outside the tolerance",
            },
            {
                let (h, body) = with_sig("hello");
                Case { name: "not JSON", send: post(h, body), status: 400, reason: "body is not JSON" }
            },
            {
                let (h, body) = with_sig("");
                Case { name: "empty body", send: post(h, body), status: 400, reason: "body is not JSON" }
            },
            Case {
                name: "invalid UTF-8",
                send: post(signed(&invalid_utf8), invalid_utf8.clone()),
                status: 400,
                reason: "body is not JSON",
            },
            {
                let (h, body) = with_sig(r#"[{"id":"evt_1","type":"x"}]"#);
                Case { name: "JSON array, not an event", send: post(h, body), status: 400, reason: "no string \\\"id\\\"" }
            },
            {
                let (h, body) = with_sig(r#"{"type":"customer.created","livemode":false}"#);
                Case { name: "no id", send: post(h, body), status: 400, reason: "no string \\\"id\\\"" }
            },
            {
                let (h, body) = with_sig(r#"{"id":42,"type":"customer.created","livemode":false}"#);
                Case { name: "id not a string", send: post(h, body), status: 400, reason: "no string \\\"id\\\"" }
            },
            {
                let (h, body) = with_sig(r#"{"id":"evt_t","livemode":false}"#);
                Case { name: "no type", send: post(h, body), status: 400, reason: "no string \\\"type\\\"" }
            },
            Case {
                name: "deeply nested JSON",
                send: post(signed(deep.as_bytes()), json(&deep)),
                status: 400,
                reason: "body is not JSON",
            },
            {
                let live = body.replace("\"livemode\":false", "\"livemode\":true");
                let (h, live) = with_sig(&live);
                Case { name: "livemode event on a test source", send: post(h, live), status: 400, reason: "livemode event refused" }
            },
            Case {
                name: "body over the limit (Content-Length)",
                send: post(signed(big.as_bytes()), json(&big)),
                status: 413,
                reason: "8192-byte limit",
            },
            Case {
                name: "body over the limit (chunked, no length)",
                send: raw(
                    &format!("POST /stripe/webhook HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\nStripe-Signature: {}", sig(SOURCE_SECRET, t, big.as_bytes())),
                    format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes(),
                ),
                status: 413,
                reason: "8192-byte limit",
            },
            Case {
                name: "chunked body that never ends",
                send: raw(
                    &format!("POST /stripe/webhook HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\nStripe-Signature: {}", sig(SOURCE_SECRET, t, b)),
                    b"10\r\n{\"id\":\"evt_slow\"\r\n",
                ),
                status: 408,
                reason: "did not arrive in time",
            },
            Case {
                name: "Content-Length longer than the body",
                send: raw(
                    &format!("POST /stripe/webhook HTTP/1.1\r\n{host}\r\nContent-Length: 500\r\nStripe-Signature: {}", sig(SOURCE_SECRET, t, b)),
                    &b[..20],
                ),
                status: 408,
                reason: "did not arrive in time",
            },
            Case {
                // Transfer-Encoding wins (RFC 9112), the body is read whole, and the connection
                // is closed after the answer, so nothing can be smuggled behind it.
                name: "both Content-Length and Transfer-Encoding (request smuggling)",
                send: raw(
                    &format!("POST /stripe/webhook HTTP/1.1\r\n{host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nStripe-Signature: {}", sig("whsec_forged", t, b)),
                    format!("{:x}\r\n{body}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n{host}\r\n\r\n", body.len()).as_bytes(),
                ),
                status: 400,
                reason: "connection: close",
            },
            Case {
                name: "a 100 KB header",
                send: raw(&format!("POST /stripe/webhook HTTP/1.1\r\n{host}\r\nX-Junk: {}", "j".repeat(100_000)), b""),
                status: 431,
                reason: "",
            },
            Case {
                name: "Stripe-Signature that is not UTF-8",
                send: Send::Raw(
                    [
                        format!("POST /stripe/webhook HTTP/1.1\r\n{host}\r\nContent-Length: {}\r\nStripe-Signature: t=1,v1=", b.len())
                            .as_bytes(),
                        &[0xff, 0xfe],
                        b"\r\n\r\n",
                        b,
                    ]
                    .concat(),
                ),
                status: 400,
                reason: "not visible ASCII",
            },
            Case { name: "GET", send: to_path("GET", "/stripe/webhook", b""), status: 405, reason: "POST only" },
            Case { name: "PUT", send: to_path("PUT", "/stripe/webhook", b), status: 405, reason: "POST only" },
            Case { name: "DELETE", send: to_path("DELETE", "/stripe/webhook", b""), status: 405, reason: "POST only" },
            Case { name: "unknown path", send: to_path("POST", "/stripe/other", b), status: 404, reason: "no webhook source" },
            Case { name: "dot-dot path", send: to_path("POST", "/stripe/webhook/../webhook", b), status: 404, reason: "no webhook source" },
            Case { name: "percent-encoded path", send: to_path("POST", "/stripe/%77ebhook", b), status: 404, reason: "no webhook source" },
            Case { name: "trailing slash", send: to_path("POST", "/stripe/webhook/", b), status: 404, reason: "no webhook source" },
            Case { name: "case-changed path", send: to_path("POST", "/Stripe/Webhook", b), status: 404, reason: "no webhook source" },
            Case {
                name: "an inbox path without a token",
                send: to_path("GET", "/fanout/inbox/events", b""),
                status: 401,
                reason: "Bearer <inbox token>",
            },
        ];
        assert!(cases.len() >= 30, "{} cases", cases.len());

        for case in cases.drain(..) {
            let (status, text) = match case.send {
                Send::Http { method, path, headers, body } => {
                    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
                    request(method, &proxy.url(&path), &headers, body).await
                }
                Send::Raw(bytes) => {
                    tokio::task::spawn_blocking(move || exchange_raw(addr, &bytes, Duration::from_secs(5))).await.unwrap()
                }
            };
            assert_eq!(status, case.status, "{}: {text}", case.name);
            assert!(text.contains(case.reason), "{}: expected {:?} in {text}", case.name, case.reason);
            assert!(!text.contains(SOURCE_SECRET) && !text.contains("whsec_all"), "{}: a secret leaked", case.name);
        }

        tokio::time::sleep(Duration::from_millis(200)).await;
        let store = proxy.sled();
        assert_eq!(store.event_count(), 0, "no event stored");
        let counts = store.counts();
        assert!(counts.queued.values().chain(counts.dead.values()).all(|n| *n == 0), "no job queued: {counts:?}");
        assert_eq!((store.in_flight(), store.dead_letter_count()), (0, 0), "no job in flight or dead");
        assert_eq!(store.events_newest_first(None, 0).count(), 0, "no record, not even an orphan");
        assert_eq!(sink.count(), 0, "nothing delivered");
        // The same endpoint, a correct event: accepted and delivered.
        assert_eq!(send_signed(&proxy.url("/stripe/webhook"), &body).await.0, 200);
        assert!(eventually(Duration::from_secs(10), || sink.count() == 1).await);
        proxy.running.stop().await;
    })
    .await;
}
