//! Faults around the proxy: a store it cannot open or that fails while running, and targets that
//! hang, close the connection, fail then recover, answer too slowly, or redirect. Real sockets and
//! a real store throughout; the store's failure is injected (`fault-injection`, tests only).

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use http::Method;
use tokio::io::AsyncReadExt;

const WITHIN: Duration = Duration::from_secs(15);

/// A store that is already in use, or whose directory cannot exist, is a clear start-up error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_opened_is_a_clear_start_up_error() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, data: &std::path::Path| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!(
                    "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\ndata_dir: {}\nsources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\n",
                    data.display()
                ),
            )
            .unwrap();
            path
        };
        let data = dir.path().join("data");
        let first = Binary::spawn(&write("one.yaml", &data), &dir.path().join("one.log"));
        let out = fanout_cli(&["serve", "--config", write("two.yaml", &data).to_str().unwrap()], &[]).await;
        let text = output_text(&out);
        assert!(!out.status.success(), "a second proxy on the same store started: {text}");
        assert!(text.contains("cannot open the store at") && text.contains("could not acquire lock"), "{text}");
        drop(first);

        // A data_dir under a regular file can never be created.
        let file = dir.path().join("a-file");
        std::fs::write(&file, "not a directory").unwrap();
        let out = fanout_cli(&["serve", "--config", write("three.yaml", &file.join("data")).to_str().unwrap()], &[]).await;
        let text = output_text(&out);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("cannot open the store at") && text.contains("Not a directory"), "{text}");

        // A directory it may not write to. Root writes anywhere, so this part needs another user.
        let uid = std::process::Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if uid.as_deref().is_ok_and(|u| u != "0") {
            use std::os::unix::fs::PermissionsExt;
            let locked = dir.path().join("locked");
            std::fs::create_dir(&locked).unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
            let out = fanout_cli(&["serve", "--config", write("four.yaml", &locked.join("data")).to_str().unwrap()], &[]).await;
            let text = output_text(&out);
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
            assert!(!out.status.success() && text.contains("Permission denied"), "{text}");
        } else {
            eprintln!("running as root: the unwritable-directory case cannot be staged here");
        }
    })
    .await;
}

/// While the store fails, ingest answers 503 (Stripe retries) and acknowledges nothing; once it
/// recovers, Stripe's retry of the same event is taken and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_makes_ingest_answer_503_and_acknowledge_nothing() {
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = format!(
            "sources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t}}\ndefault: t\n",
            sink.url()
        );
        let proxy = Proxy::start(&yaml).await;
        let url = proxy.url("/hook");
        assert_eq!(send_signed(&url, &event("evt_before", "invoice.paid", "x")).await.0, 200);

        proxy.sled().fail_writes(true);
        let body = event("evt_during", "invoice.paid", "x");
        let (status, text) = send_signed(&url, &body).await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("could not be stored; retry later"), "{text}");
        let (status, _) = proxy.admin(Method::GET, "/events/evt_during", None).await;
        assert_eq!(status, 404, "nothing of it was acknowledged as stored");
        // The admin API's way in (backfill) says the same, and no store error text reaches a client.
        let json = [("content-type", "application/json".to_owned())];
        let (status, text) = request(Method::POST, &proxy.admin_url("/events"), &json, body.clone()).await;
        assert_eq!(status, 503, "{text}");
        assert!(!text.contains("injected") && !text.contains("no space"), "store error text sent: {text}");

        proxy.sled().fail_writes(false);
        assert_eq!(send_signed(&url, &body).await.0, 200, "Stripe's retry is taken");
        assert!(eventually(WITHIN, || sink.for_event("evt_during").len() == 1).await);
        assert_eq!(sink.for_event("evt_before").len(), 1);

        // The event is written but cannot be flushed: still 503, never a 2xx for it. Stripe's
        // retry finds it written (a duplicate), and is answered 200 only once it is on disk.
        proxy.sled().fail_flushes(true);
        let body = event("evt_unflushed", "invoice.paid", "x");
        let (status, text) = send_signed(&url, &body).await;
        assert_eq!(status, 503, "{text}");
        let (status, text) = send_signed(&url, &body).await;
        assert_eq!(status, 503, "a retry while flushes fail is refused too: {text}");
        proxy.sled().fail_flushes(false);
        let (status, text) = send_signed(&url, &body).await;
        assert_eq!((status, text.contains("\"duplicate\":true")), (200, true), "{text}");
        assert!(eventually(WITHIN, || sink.for_event("evt_unflushed").len() == 1).await);
        proxy.running.stop().await;
    })
    .await;
}

/// A server that reads the request and resets the connection (a TCP RST) without answering.
async fn resetting_sink() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                // A zero linger makes the close a RST (and does not block, which is why tokio
                // deprecates linger in general).
                #[allow(deprecated)]
                let _ = conn.set_linger(Some(Duration::ZERO));
                drop(conn);
            });
        }
    });
    format!("http://{addr}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_resetting_failing_slow_and_redirecting_targets_each_fail_their_way_and_block_nobody() {
    bounded(async {
        let healthy = Sink::ok().await;
        let hangs = Sink::with(|_| (200, Duration::from_secs(3600))).await;
        let resets = resetting_sink().await;
        let recovers = Sink::with(|n| (if n < 2 { 500 } else { 200 }, Duration::ZERO)).await;
        let slow = Sink::with(|_| (200, Duration::from_millis(1500))).await;
        let redirects = Sink::with(|_| (302, Duration::ZERO)).await;
        let target = |name: &str, url: &str, extra: &str| {
            format!("  - {{name: {name}, url: \"{url}\", secret: whsec_{name}, timeout: 500ms, retry: {{max_attempts: 2}}{extra}}}\n")
        };
        let yaml = format!(
            "shutdown_grace: 1s\nsources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 50ms, max_delay: 100ms}}\ntargets:\n{}{}{}{}{}{}default: [healthy, hangs, resets, recovers, slow, redirects]\n",
            target("healthy", &healthy.url(), ""),
            target("hangs", &hangs.url(), ""),
            target("resets", &resets, ""),
            // Recovers on its third answer: given room for it.
            target("recovers", &recovers.url(), ", concurrency: 1").replace("max_attempts: 2", "max_attempts: 5"),
            target("slow", &slow.url(), ""),
            target("redirects", &redirects.url(), ""),
        );
        let proxy = Proxy::start(&yaml).await;
        let url = proxy.url("/hook");
        let ids: Vec<String> = (0..10).map(|i| format!("evt_f{i}")).collect();
        for id in &ids {
            assert_eq!(send_signed(&url, &event(id, "invoice.paid", "x")).await.0, 200);
        }
        // The healthy target is not held up by the five others.
        assert!(eventually(Duration::from_secs(3), || healthy.count() == 10).await, "healthy got {}", healthy.count());
        assert!(eventually(WITHIN, || recovers.received().iter().map(|r| r.header("fanout-event-id").to_owned()).collect::<HashSet<_>>().len() == 10).await);

        // Every other target gives up after two attempts, each with its own reason.
        // A reset shows as ECONNRESET, or (if it lands while the request is still being written)
        // as a broken pipe or a connection closed early: all three are the reset.
        let expect: [(&str, &[&str]); 4] = [
            ("hangs", &["timed out after 500ms"]),
            ("resets", &["onnection reset", "roken pipe", "closed before message completed"]),
            ("slow", &["timed out after 500ms"]),
            ("redirects", &["redirects are not followed"]),
        ];
        let dead = || async {
            let (_, v) = proxy.admin(Method::GET, "/dead-letters?limit=100", None).await;
            v["dead_letters"].as_array().cloned().unwrap_or_default()
        };
        let mut letters = Vec::new();
        for _ in 0..150 {
            letters = dead().await;
            if letters.len() >= 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(letters.len(), 40, "10 events x 4 failing targets: {letters:?}");
        for (target, reason) in expect {
            let mine: Vec<_> = letters.iter().filter(|l| l["target"] == target).collect();
            assert_eq!(mine.len(), 10, "{target}");
            for l in mine {
                let error = l["error"].as_str().unwrap_or("");
                assert!(error.contains("after 2 attempts") && reason.iter().any(|r| error.contains(r)), "{target}: {error}");
            }
        }
        // The recovering target took every event, after its two failures.
        let (_, e) = proxy.admin(Method::GET, "/events/evt_f0", None).await;
        let states: Vec<(String, String)> = e["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["name"].as_str().unwrap().to_owned(), d["state"].as_str().unwrap().to_owned()))
            .collect();
        assert!(states.contains(&("healthy".to_owned(), "delivered".to_owned())), "{states:?}");
        assert!(states.contains(&("redirects".to_owned(), "dead".to_owned())), "{states:?}");
        proxy.running.stop().await;
    })
    .await;
}

/// Many idle connections and slow clients: each is closed after the header timeout (or at once,
/// beyond `max_connections`), and the proxy goes on serving real requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_clients_do_not_exhaust_the_proxy() {
    use tokio::io::AsyncWriteExt;
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = format!(
            "header_read_timeout: 500ms\nmax_connections: 64\nsources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t}}\ndefault: t\n",
            sink.url()
        );
        let proxy = Proxy::start(&yaml).await;
        let addr = proxy.running.addr;
        // How long until the server closes `conn`, at most 5 s.
        let closed_after = |mut conn: tokio::net::TcpStream| async move {
            let started = std::time::Instant::now();
            let mut buf = [0u8; 512];
            loop {
                match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => continue,
                    Err(_) => return None,
                }
            }
        };

        // Within the limit: 20 clients that trickle a header a byte at a time, one stuck inside
        // the HTTP/2 preface, one idle after a request on a kept-alive connection.
        let trickle: Vec<_> = (0..20)
            .map(|_| {
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
                    for b in b"POST /hook HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
                        if conn.write_all(&[*b]).await.is_err() || started.elapsed() > Duration::from_secs(10) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    started.elapsed()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut preface = tokio::net::TcpStream::connect(addr).await.unwrap();
        preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let preface = tokio::spawn(closed_after(preface));
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let kept = tokio::spawn(closed_after(kept));
        // Then 150 that never say a word: those beyond the limit are closed at once.
        let mut idle = Vec::new();
        for _ in 0..150 {
            let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            idle.push(tokio::spawn(closed_after(conn)));
        }

        for (i, t) in trickle.into_iter().enumerate() {
            let lasted = t.await.unwrap();
            assert!(lasted >= Duration::from_millis(400) && lasted < Duration::from_secs(3), "slow client {i} lasted {lasted:?}");
        }
        let preface = preface.await.unwrap().expect("a client stuck in the HTTP/2 preface was never closed");
        assert!(preface < Duration::from_secs(2), "{preface:?}");
        let kept = kept.await.unwrap().expect("an idle kept-alive connection was never closed");
        assert!(kept < Duration::from_secs(2), "{kept:?}");
        let mut times = Vec::new();
        for w in idle {
            times.push(w.await.unwrap().expect("an idle connection was still open after 5 s"));
        }
        assert!(times.iter().all(|t| *t < Duration::from_secs(2)), "{times:?}");
        assert!(times.iter().filter(|t| **t < Duration::from_millis(200)).count() >= 80, "beyond the limit, closed at once: {times:?}");
        // Still serving.
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_after", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || sink.count() == 1).await);
        proxy.running.stop().await;
    })
    .await;
}

fn one_target(sink: &Sink, extra: &str) -> String {
    format!(
        "sources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\nretry: {{initial_delay: 100ms, max_delay: 200ms}}\ntargets:\n  - {{name: t, url: \"{}\", secret: whsec_t, timeout: 1s}}\n{extra}default: t\n",
        sink.url()
    )
}

/// The target took the event, but the store could not record it: the lease is not stranded until
/// a restart. It expires (the target's timeout + 5 s), the job is queued again and delivered, and
/// this time its outcome is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_store_could_not_record_comes_back_without_a_restart() {
    bounded(async {
        let sink = Sink::ok().await;
        let proxy = Proxy::start(&one_target(&sink, "")).await;
        let store = proxy.sled().clone();
        store.fail_settles(true);
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_stranded", "invoice.paid", "x")).await.0, 200);
        assert!(eventually(WITHIN, || sink.for_event("evt_stranded").len() == 1).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.in_flight(), 1, "the attempt's outcome was not recorded: its lease is held");
        store.fail_settles(false);
        // Delivered again once the lease expires (at least once), then recorded.
        assert!(eventually(WITHIN, || sink.for_event("evt_stranded").len() == 2).await, "stranded until a restart");
        assert!(eventually(WITHIN, || store.in_flight() == 0).await);
        let (_, v) = proxy.admin(Method::GET, "/events/evt_stranded", None).await;
        assert_eq!(v["state"], "delivered", "{v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.for_event("evt_stranded").len(), 2, "not sent a third time");
        proxy.running.stop().await;
    })
    .await;
}

/// A listener's answer that the store could not record is not reported as settled: the listener
/// hears 503, and the event is offered again once its lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_answer_the_store_could_not_record_is_not_reported_settled() {
    bounded(async {
        let sink = Sink::ok().await;
        let token = "alice-inbox-token-0123456789";
        let extra = format!(
            "  - {{name: alice, kind: inbox, token: {token}, secret: whsec_alice, timeout: 2s}}\nroutes:\n  - {{name: a, when: {{fields: [{{path: data.object.metadata.env, equals: alice}}]}}, to: [alice]}}\n"
        );
        let proxy = Proxy::start(&one_target(&sink, &extra)).await;
        let store = proxy.sled().clone();
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_answer", "invoice.paid", "alice")).await.0, 200);
        let auth = [("authorization", format!("Bearer {token}"))];
        let (poll_url, answer_url) = (proxy.url("/fanout/inbox/events?wait=15&max=1"), proxy.url("/fanout/inbox/answer"));
        // Polls until an event is offered (each poll waits up to 15 s), for at most 30 s.
        let poll = || async {
            for _ in 0..2 {
                let (status, text) = request(Method::GET, &poll_url, &auth, "").await;
                assert_eq!(status, 200, "{text}");
                let polled: serde_json::Value = serde_json::from_str(&text).unwrap();
                if let Some(id) = polled["deliveries"][0]["id"].as_str() {
                    return Some(id.to_owned());
                }
            }
            None
        };
        let answer = |id: String| {
            let body = serde_json::json!({ "id": id, "status": 200, "latency_ms": 3, "error": null }).to_string();
            request(Method::POST, &answer_url, &auth, body)
        };
        let first = poll().await.expect("offered");
        let first_id = first.clone();
        store.fail_settles(true);
        let (status, text) = answer(first).await;
        assert_eq!(status, 503, "a failed settle was reported settled: {text}");
        assert!(!text.contains("injected fault"), "store error text reaches the client: {text}");
        store.fail_settles(false);
        // The same job, under a new lease (an answer for the first offer cannot settle this one).
        let again = poll().await.expect("offered again once the lease expired");
        let job = |id: &str| id.split_once('.').map(|(job, _)| job.to_owned());
        assert_eq!(job(&again), job(&first_id), "the same job");
        assert_ne!(again, first_id, "a new offer id");
        let (status, text) = answer(again).await;
        assert_eq!(status, 200, "{text}");
        let (_, v) = proxy.admin(Method::GET, "/events/evt_answer", None).await;
        assert_eq!(v["state"], "delivered", "{v}");
        proxy.running.stop().await;
    })
    .await;
}

/// A store that keeps failing to lease while due work is visible: the worker backs off instead
/// of asking again in a loop at full CPU, and delivers once the store recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_backs_off_from_a_store_that_keeps_failing() {
    bounded(async {
        let sink = Sink::ok().await;
        let proxy = Proxy::start(&one_target(&sink, "")).await;
        let store = proxy.sled().clone();
        store.fail_leases(true);
        assert_eq!(send_signed(&proxy.url("/hook"), &event("evt_spin", "invoice.paid", "x")).await.0, 200);
        let before = store.faults_hit();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tries = store.faults_hit() - before;
        assert!(tries <= 20, "the worker asked a failing store {tries} times in 2 s");
        assert!(tries >= 2, "the worker stopped asking ({tries})");
        store.fail_leases(false);
        assert!(eventually(WITHIN, || sink.for_event("evt_spin").len() == 1).await);
        proxy.running.stop().await;
    })
    .await;
}

/// A reload that removes a target with a backlog moves it to the dead letters in the background;
/// a stop waits for that work, so nothing holds (or writes to) the store once `stop` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_the_sweep_of_a_removed_target_s_queue() {
    bounded(async {
        let sink = Sink::ok().await;
        let yaml = one_target(&sink, "  - {name: gone, url: \"http://127.0.0.1:9/\", secret: whsec_g}\n");
        let proxy = Proxy::start(&yaml).await;
        let store = proxy.sled().clone();
        assert_eq!(proxy.admin(Method::POST, "/targets/gone/pause", None).await.0, 200);
        let jobs: Vec<fanout_store::NewJob> = (0..20)
            .map(|_| fanout_store::NewJob {
                target: "gone".into(),
                delivery: fanout_store::Delivery::Target,
                rule: "r".into(),
            })
            .collect();
        for i in 0..1_000 {
            let record = fanout_store::EventRecord {
                id: format!("evt_backlog_{i}"),
                event_type: "invoice.paid".into(),
                source: "s".into(),
                received_at_ms: fanout::clock::unix_now_ms(),
                disposition: fanout_store::Disposition::Unrouted,
                body: b"{}".to_vec(),
            };
            store.ingest(&record, &jobs).unwrap();
        }
        assert_eq!(store.queued("gone"), 20_000);
        let mut config = proxy.running.config().as_ref().clone();
        config.targets.retain(|t| t.name != "gone");
        config.router = fanout::config::Config::parse("r.yaml", &one_target(&sink, ""), |_| None).unwrap().router;
        proxy.running.reload(config).unwrap();
        drop(store);
        let Proxy { running, dir } = proxy;
        running.stop().await;
        let reopened = fanout_store::Store::open(dir.path().join("data"));
        assert!(reopened.is_ok(), "the store is still held after stop: {:?}", reopened.err());
    })
    .await;
}
