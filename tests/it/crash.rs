//! `kill -9` of the real `fanout` binary under signed load, twenty times over: every event the
//! sender saw acknowledged must still reach every destination it was routed to, and none other.
//! The counts (sent, acknowledged, delivered, duplicates) are printed for RELIABILITY.md.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::common::*;

/// Starts `fanout serve` and returns it with the address it printed.
fn spawn_fanout(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fanout");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, format!("http://{addr}/stripe/webhook"))
}

/// Kills the process when dropped, so a failing assertion leaves no `fanout serve` behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event() {
    // Bounded: twenty restarts and a drain take ~10 s here; a hang fails instead of stalling CI.
    let rounds = kill_9_rounds(20, String::new(), "sled");
    tokio::time::timeout(Duration::from_secs(180), rounds).await.expect("the kill -9 test took over 180 s");
}

/// The same on the Postgres engine: an acknowledgement follows a commit, and leases held by the
/// killed process expire and come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_on_postgres_loses_no_acknowledged_event() {
    let Some(pg) = fanout_store::testing::TestPostgres::start() else { return };
    let store = format!("store: {{engine: postgres, url: \"{}\", pool: 8}}\n", pg.url());
    let rounds = kill_9_rounds(10, store, "postgres");
    tokio::time::timeout(Duration::from_secs(180), rounds).await.expect("the kill -9 test took over 180 s");
}

/// `kills` kill -9s under load, then a last run that must deliver every acknowledged event;
/// `store` is a `store:` section (empty: sled in the temp dir).
async fn kill_9_rounds(kills: usize, store: String, engine: &str) {
    let (a, b) = (Sink::ok().await, Sink::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routing.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0}}
data_dir: {data}
{store}
sources:
  - name: stripe
    path: /stripe/webhook
    secrets: ["{SOURCE_SECRET}"]
retry: {{initial_delay: 20ms, max_delay: 200ms}}
targets:
  - {{name: a, url: "{a}", secret: whsec_a, timeout: 2s}}
  - {{name: b, url: "{b}", secret: whsec_b, timeout: 2s}}
routes:
  - name: to-a
    when: {{fields: [{{path: data.object.metadata.env, equals: a}}]}}
    to: [a]
  - name: to-both
    when: {{fields: [{{path: data.object.metadata.env, equals: both}}]}}
    to: [a, b]
default: b
"#,
            data = dir.path().join("data").display(),
            a = a.url(),
            b = b.url()
        ),
    )
    .unwrap();

    let url = Arc::new(RwLock::new(String::new()));
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut senders: Vec<_> = (0..8)
        .map(|s| {
            let (url, acked, stop, sent) = (url.clone(), acked.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 5_000 {
                    let env = ["a", "b", "both"][i % 3];
                    let id = format!("evt_{s}_{i}_{env}");
                    i += 1;
                    let target = url.read().unwrap().clone();
                    if target.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    let body = event(&id, "invoice.paid", env);
                    let attempt = try_send_signed(&target, &body);
                    if let Ok(Ok((200, _))) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                        acked.lock().unwrap().insert(id);
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();

    // Kills at moments spread over 150-550 ms of load each (a fixed pseudo-random sequence, so
    // a failure can be rerun as it happened).
    for round in 0..=kills {
        let (child, address) = spawn_fanout(&config);
        let mut child = KillOnDrop(child);
        *url.write().unwrap() = address;
        if round == kills {
            // The last one runs until everything is delivered.
            stop.store(true, Ordering::SeqCst);
            for s in std::mem::take(&mut senders) {
                s.await.unwrap();
            }
            let acked = acked.lock().unwrap().clone();
            let delivered = |sink: &Sink| {
                sink.received().iter().map(|r| r.header("fanout-event-id").to_owned()).collect::<HashSet<_>>()
            };
            let all_there = eventually(Duration::from_secs(30), || {
                let (da, db) = (delivered(&a), delivered(&b));
                acked.iter().all(|id| {
                    (!id.ends_with("_a") || da.contains(id))
                        && (!id.ends_with("_b") || db.contains(id))
                        && (!id.ends_with("_both") || (da.contains(id) && db.contains(id)))
                })
            })
            .await;
            let (da, db) = (delivered(&a), delivered(&b));
            let total = a.count() + b.count();
            let unique = da.len() + db.len();
            eprintln!(
                "kill -9 x{kills} ({engine}): sent {}, acknowledged {}, delivered {unique} (to a {}, to b {}), duplicates {}",
                sent.load(Ordering::SeqCst),
                acked.len(),
                da.len(),
                db.len(),
                total - unique
            );
            drop(child);
            assert!(acked.len() > 50, "the load must have been acknowledged in bulk, got {}", acked.len());
            let missing: Vec<_> = acked
                .iter()
                .filter(|id| {
                    (id.ends_with("_a") && !da.contains(*id))
                        || (id.ends_with("_b") && !db.contains(*id))
                        || (id.ends_with("_both") && !(da.contains(*id) && db.contains(*id)))
                })
                .take(5)
                .collect();
            assert!(all_there, "acknowledged but never delivered (first 5): {missing:?}");
            assert!(da.iter().all(|id| !id.ends_with("_b")), "an env=b event reached a");
            assert!(db.iter().all(|id| !id.ends_with("_a")), "an env=a event reached b");
        } else {
            let moment = 150 + (round as u64 * 7919 % 5) * 100;
            tokio::time::sleep(Duration::from_millis(moment)).await;
            child.0.kill().unwrap(); // SIGKILL
            child.0.wait().unwrap();
        }
    }
}

/// A reader that stops reading at once (`fanout serve | head -1`, a supervisor that closes the
/// pipe) must not take the server down: the address lines go to a closed stdout and it serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_does_not_stop_the_server() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("routing.yaml");
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:0}}\ndata_dir: {}\nsources:\n  - {{name: s, path: /hook, secrets: [{SOURCE_SECRET}]}}\ntargets:\n  - {{name: t, url: \"http://127.0.0.1:9/\", secret: whsec_t}}\ndefault: t\n",
            dir.path().join("data").display()
        );
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fanout");
        drop(child.stdout.take());
        let mut child = KillOnDrop(child);
        let url = format!("http://127.0.0.1:{port}/hook");
        let mut answered = None;
        for _ in 0..200 {
            if let Ok((status, _)) = try_send_signed(&url, &event("evt_pipe", "invoice.paid", "x")).await {
                answered = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(answered, Some(200), "the server answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(child.0.try_wait().unwrap().is_none(), "still running");
    })
    .await;
}
