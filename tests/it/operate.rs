//! Running fanout for real: hot reload, graceful shutdown, TLS in and out, backfill from Stripe's
//! Events API. The real binary where signals and files matter; real sockets on 127.0.0.1 always.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const TOKEN: &str = "test-admin-token-0123456789";
const WITHIN: Duration = Duration::from_secs(15);

fn write_config(path: &Path, data: &Path, rest: &str) {
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0, token: {TOKEN}}}\ndata_dir: {}\nshutdown_grace: 1s\nsources:\n  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 50ms, max_delay: 100ms}}\n{rest}",
        data.display()
    );
    // Written whole and renamed in, as an editor or a ConfigMap update would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn admin(bin: &Binary, method: Method, path: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{}{path}", bin.admin);
    let (status, text) = request(method, &url, &[("authorization", format!("Bearer {TOKEN}"))], "").await;
    (status, serde_json::from_str(&text).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_valid_file_refuses_an_invalid_one_and_dead_letters_removed_targets() {
    bounded(async {
        let (a, b) = (Sink::ok().await, Sink::ok().await);
        let dir = tempfile::tempdir().unwrap();
        let (config, data) = (dir.path().join("routing.yaml"), dir.path().join("data"));
        let targets = |names: &[(&str, &Sink)]| -> String {
            names.iter().map(|(n, s)| format!("  - {{name: {n}, url: \"{}\", secret: whsec_{n}}}\n", s.url())).collect()
        };
        write_config(&config, &data, &format!("targets:\n{}default: a\n", targets(&[("a", &a), ("b", &b)])));
        let bin = Binary::spawn(&config, &dir.path().join("log"));

        // a is paused with one event queued when the file drops it.
        assert_eq!(admin(&bin, Method::POST, "/targets/a/pause").await.0, 200);
        assert_eq!(send_signed(&bin.url("/hook"), &event("evt_1", "invoice.paid", "x")).await.0, 200);
        write_config(&config, &data, &format!("targets:\n{}default: b\n", targets(&[("b", &b)])));
        let mut n = 0;
        let reloaded = eventually_async(
            WITHIN,
            || {
                n += 1;
                let id = format!("evt_probe_{n}");
                let url = bin.url("/hook");
                async move { send_signed(&url, &event(&id, "invoice.paid", "x")).await.0 == 200 }
            },
            || b.count() > 0,
        )
        .await;
        assert!(reloaded, "the file change was not applied; log:\n{}", bin.log_text());
        assert!(bin.log_text().contains("config reloaded"), "{}", bin.log_text());
        assert_eq!(a.count(), 0, "a was paused, then removed");
        let probes = n;
        // Every probe went to b or, sent before the reload took, was dead-lettered with a's queue.
        assert!(eventually(WITHIN, || b.count() + bin_dead_letters(&bin) == probes + 1).await, "{}", bin.log_text());
        let (_, dead) = admin(&bin, Method::GET, "/dead-letters").await;
        let letters = dead["dead_letters"].as_array().cloned().unwrap_or_default();
        // evt_1, and the probes sent to `a` before the reload took: none silently dropped.
        assert!(letters.iter().any(|l| l["event_id"] == "evt_1"), "{dead}");
        for l in &letters {
            assert_eq!(l["target"], "a");
            assert!(l["error"].as_str().unwrap().contains("\"a\" was removed (from routing.yaml"), "{dead}");
        }

        // An invalid file (with SIGHUP): refused, reason logged, the old config keeps serving.
        let before = b.count();
        write_config(&config, &data, &format!("targets:\n{}default: b\nbogus_key: 1\n", targets(&[("b", &b)])));
        bin.signal("HUP");
        assert!(
            eventually(WITHIN, || bin.log_text().contains("config refused")).await,
            "no refusal logged:\n{}",
            bin.log_text()
        );
        assert!(bin.log_text().contains("bogus_key"), "the reason names the key:\n{}", bin.log_text());
        assert_eq!(send_signed(&bin.url("/hook"), &event("evt_after_bad", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || b.count() == before + 1).await);

        // SIGHUP with a valid file: applied at once.
        write_config(
            &config,
            &data,
            &format!(
                "targets:\n{}routes:\n  - {{name: quiet, when: {{type: \"invoice.*\"}}, drop: true}}\ndefault: b\n",
                targets(&[("b", &b)])
            ),
        );
        bin.signal("HUP");
        assert!(eventually(WITHIN, || bin.log_text().matches("config reloaded").count() >= 2).await);
        assert_eq!(send_signed(&bin.url("/hook"), &event("evt_dropped", "invoice.paid", "x")).await.0, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(b.for_event("evt_dropped").is_empty(), "the new rule drops it");
        let metrics = request(
            Method::GET,
            &format!("http://{}/metrics", bin.admin),
            &[("authorization", format!("Bearer {TOKEN}"))],
            "",
        )
        .await
        .1;
        assert!(metrics.contains(r#"fanout_config_reloads_total{reason="refused"} 1"#), "{metrics}");
        bin.signal("TERM");
        let (status, log) = bin.wait_exit(WITHIN).await;
        assert!(status.is_some_and(|s| s.success()), "{log}");
    })
    .await
}

/// Dead letters the binary holds, read from its metrics (a sync check for `eventually`).
fn bin_dead_letters(bin: &Binary) -> usize {
    let addr = bin.admin;
    let text = std::thread::spawn(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(conn, "GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        text
    })
    .join()
    .unwrap();
    text.lines()
        .filter(|l| l.starts_with("fanout_dead_letters{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Calls `act` every 200 ms until `done` holds or `within` passes.
async fn eventually_async<F, Fut>(within: Duration, mut act: F, mut done: impl FnMut() -> bool) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        act().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done()
}

/// A target that accepts connections and never answers; counts requests that arrived.
async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let count = arrived.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            held.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 65536];
                if stream.read(&mut buf).await.unwrap_or(0) > 0 {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_secs(120)).await;
                drop(stream);
            }));
        }
    });
    (addr, arrived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_what_it_received_cuts_off_deliveries_and_loses_nothing() {
    bounded(async {
        let (hole, arrived) = black_hole().await;
        let dir = tempfile::tempdir().unwrap();
        let (config, data) = (dir.path().join("routing.yaml"), dir.path().join("data"));
        let target = |url: &str| format!("targets:\n  - {{name: t, url: \"{url}\", secret: whsec_t, timeout: 60s}}\ndefault: t\n");
        write_config(&config, &data, &target(&format!("http://{hole}/hook")));
        let bin = Binary::spawn(&config, &dir.path().join("log"));

        // One delivery in flight (the target never answers) ...
        assert_eq!(send_signed(&bin.url("/hook"), &event("evt_inflight", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || arrived.load(Ordering::SeqCst) == 1).await);
        // ... and one webhook half received when SIGTERM comes.
        let body = event("evt_halfway", "invoice.paid", "x");
        let signature = stripe_signature(SOURCE_SECRET, now(), body.as_bytes());
        let mut conn = std::net::TcpStream::connect(bin.addr).unwrap();
        let head = format!(
            "POST /hook HTTP/1.1\r\nhost: x\r\nstripe-signature: {signature}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&body.as_bytes()[..10]).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        bin.signal("TERM");
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.write_all(&body.as_bytes()[10..]).unwrap();
        let mut answer = String::new();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = conn.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "the request in progress is acknowledged: {answer:?}");
        // The target's 60 s timeout would outlast WITHIN: exiting at all shows the grace cut it off.
        let (status, log) = bin.wait_exit(WITHIN).await;
        assert!(status.is_some_and(|s| s.success()), "exit 0 expected, got {status:?}; log:\n{log}");
        assert!(log.contains("cut off and re-queued"), "{log}");

        // Restarted against a target that answers: both events arrive, once each.
        let sink = Sink::ok().await;
        write_config(&config, &data, &target(&sink.url()));
        let bin = Binary::spawn(&config, &dir.path().join("log2"));
        assert!(eventually(WITHIN, || sink.count() >= 2).await, "log:\n{}", bin.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.for_event("evt_inflight").len(), 1);
        assert_eq!(sink.for_event("evt_halfway").len(), 1);
        bin.signal("TERM");
        assert!(bin.wait_exit(WITHIN).await.0.is_some_and(|s| s.success()));
    })
    .await
}

/// A CA, and a certificate it signed for 127.0.0.1 / localhost, as PEM files in `dir`.
pub(crate) struct Pki {
    pub(crate) ca: std::path::PathBuf,
    pub(crate) cert: std::path::PathBuf,
    pub(crate) key: std::path::PathBuf,
    pub(crate) ca_der: Vec<u8>,
}

pub(crate) fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let p =
        Pki { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca_der: ca.der().to_vec() };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    std::fs::write(&p.cert, leaf.pem()).unwrap();
    std::fs::write(&p.key, leaf_key.serialize_pem()).unwrap();
    p
}

fn client_trusting(
    ca_der: &[u8],
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only().enable_all_versions().build();
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https)
}

/// An https sink with the given certificate; records the HTTP version of each request.
async fn tls_sink(pki: &Pki) -> (SocketAddr, Arc<std::sync::Mutex<Vec<(http::Version, String)>>>) {
    let files = fanout::config::TlsFiles { cert: pki.cert.clone(), key: pki.key.clone() };
    let acceptor = tokio_rustls::TlsAcceptor::from(fanout::http::tls::server_config(&files).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let version = req.version();
                        let sig = req
                            .headers()
                            .get("stripe-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let _ = req.into_body().collect().await;
                        log.lock().unwrap().push((version, sig));
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_in_with_a_generated_cert_and_out_to_a_private_ca_over_http2() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let (private, seen) = tls_sink(&pki).await;
        let plain = Sink::ok().await;
        let yaml = format!(
            r#"
tls: {{cert: "{}", key: "{}"}}
header_read_timeout: 500ms
sources:
  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}
retry: {{initial_delay: 50ms, max_delay: 100ms, max_attempts: 1}}
targets:
  - {{name: internal, url: "https://127.0.0.1:{}/hook", secret: whsec_internal, ca: "{}"}}
  - {{name: untrusting, url: "https://127.0.0.1:{}/hook", secret: whsec_u}}
  - {{name: plain, url: "{}", secret: whsec_plain}}
default: [internal, untrusting, plain]
"#,
            pki.cert.display(),
            pki.key.display(),
            private.port(),
            pki.ca.display(),
            private.port(),
            plain.url()
        );
        let proxy = Proxy::start(&yaml).await;
        let body = event("evt_tls", "invoice.paid", "x");
        let signature = stripe_signature(SOURCE_SECRET, now(), body.as_bytes());
        let req = http::Request::post(format!("https://127.0.0.1:{}/hook", proxy.running.addr.port()))
            .header("stripe-signature", signature)
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let res = client_trusting(&pki.ca_der).request(req).await.expect("https to the proxy");
        assert_eq!(res.status(), 200);
        // Plain HTTP on the TLS port gets nowhere.
        assert!(try_send_signed(&proxy.url("/hook"), &event("evt_plain", "invoice.paid", "x")).await.is_err());

        assert!(eventually(WITHIN, || !seen.lock().unwrap().is_empty() && plain.count() == 1).await);
        let (version, sig) = seen.lock().unwrap()[0].clone();
        assert_eq!(version, http::Version::HTTP_2, "h2 by ALPN toward a target that speaks it");
        assert!(stripe_sdk_accepts(&sig, body.as_bytes(), "whsec_internal"));
        // Without the private CA, the same server is not trusted.
        assert!(eventually(WITHIN, || proxy.sled().dead_letter_count() == 1).await);
        let dead = proxy.sled().dead_letters(10).unwrap();
        assert_eq!(dead[0].job.target, "untrusting");
        assert!(dead[0].error.to_lowercase().contains("certificate"), "{}", dead[0].error);
        assert_eq!(seen.lock().unwrap().len(), 1);

        // A client that completes the TLS handshake and then says nothing is closed after the
        // header timeout instead of holding a connection slot.
        use tokio::io::AsyncReadExt;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(pki.ca_der.clone())).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(proxy.running.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut silent =
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("handshake");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a silent TLS client was not closed: {closed:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
        proxy.running.stop().await;
    })
    .await
}

/// A stand-in for Stripe's Events API: `n` events, newest first, paged like Stripe's.
async fn fake_stripe(n: usize, key: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let created0 = now() - 600;
    // Oldest first here; listed newest first.
    let events: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|i| {
                serde_json::json!({"id": format!("evt_bf_{i:04}"), "object": "event", "type": "invoice.paid", "livemode": false,
                    "created": created0 + i as i64, "data": {"object": {"id": format!("in_{i}"), "object": "invoice", "metadata": {}}}})
                .to_string()
            })
            .collect(),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (events, counter) = (events.clone(), counter.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (events, counter) = (events.clone(), counter.clone());
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                        if auth != format!("Bearer {key}") || req.uri().path() != "/v1/events" {
                            let mut res = http::Response::new(Full::new(Bytes::from_static(
                                br#"{"error":{"message":"Invalid API Key provided"}}"#,
                            )));
                            *res.status_mut() = http::StatusCode::UNAUTHORIZED;
                            return Ok::<_, std::convert::Infallible>(res);
                        }
                        let q: Vec<(String, String)> =
                            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
                        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                        let limit: usize = get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
                        let newest_first: Vec<&String> = events.iter().rev().collect();
                        let start = match get("starting_after") {
                            Some(after) => newest_first
                                .iter()
                                .position(|e| e.contains(&format!("\"{after}\"")))
                                .map_or(0, |p| p + 1),
                            None => 0,
                        };
                        let page: Vec<&str> = newest_first.iter().skip(start).take(limit).map(|s| s.as_str()).collect();
                        let has_more = start + page.len() < newest_first.len();
                        let body = format!(
                            r#"{{"object":"list","url":"/v1/events","has_more":{has_more},"data":[{}]}}"#,
                            page.join(",")
                        );
                        Ok(http::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_ingests_what_the_proxy_missed_oldest_first_and_skips_what_it_has() {
    bounded(async {
        let (stripe, _calls) = fake_stripe(250, "sk_test_backfill").await;
        let sink = Sink::ok().await;
        let yaml = format!(
            "admin: {{token: {TOKEN}}}\nsources:\n  - {{name: stripe, path: /hook, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t}}\ndefault: t\n",
            sink.url()
        );
        let proxy = Proxy::start(&yaml).await;
        // The proxy saw one of them as a webhook before the outage.
        let seen = r#"{"id":"evt_bf_0100","object":"event","type":"invoice.paid","livemode":false,"data":{"object":{}}}"#;
        assert_eq!(send_signed(&proxy.url("/hook"), seen).await.0, 200);

        let api = format!("http://{stripe}");
        let admin = proxy.admin_url("");
        let env = [("STRIPE_API_KEY", "sk_test_backfill"), ("FANOUT_ADMIN_URL", admin.as_str()), ("FANOUT_ADMIN_TOKEN", TOKEN)];
        let out = fanout_cli(&["backfill", "--since", "1h", "--stripe-api", &api], &env).await;
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("fetched 250 events from Stripe; ingested 249 new, skipped 1 already seen"), "{text}");
        assert_eq!(proxy.sled().event_count(), 250);
        assert!(eventually(WITHIN, || sink.count() == 250).await, "{}", sink.count());
        // Oldest first: the last ingested (newest in the listing) is Stripe's newest.
        let (_, list) = proxy.admin(Method::GET, "/events?limit=1", Some(TOKEN)).await;
        assert_eq!(list["events"][0]["id"], "evt_bf_0249");

        // Again: nothing new.
        let out = fanout_cli(&["backfill", "--since", "1h", "--stripe-api", &api], &env).await;
        assert!(output_text(&out).contains("ingested 0 new, skipped 250 already seen"), "{}", output_text(&out));
        // A wrong key says so.
        let env = [("STRIPE_API_KEY", "sk_test_wrong"), ("FANOUT_ADMIN_URL", admin.as_str()), ("FANOUT_ADMIN_TOKEN", TOKEN)];
        let out = fanout_cli(&["backfill", "--since", "1h", "--stripe-api", &api], &env).await;
        assert!(!out.status.success());
        assert!(output_text(&out).contains("Stripe refused the API key (Invalid API Key provided)"), "{}", output_text(&out));
        proxy.running.stop().await;
    })
    .await
}
