//! `fanout demo`: the whole idea in under a minute on a fresh machine, no Stripe account. It
//! starts the proxy on an embedded store in a temp dir, three local "environments" (staging,
//! dogfood behind a failover group, alice's laptop through `fanout listen`), sends a realistic
//! sequence of signed test-mode events and narrates where each went and why. Each environment
//! verifies the signature with its own secret, as its Stripe SDK would. It exits non-zero if any
//! event does not end up where it should.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use super::listen::{self, ListenArgs};
use crate::config::Config;
use crate::http::client::{self as outbound, HttpClient};
use crate::wire::admin::EventDetail;
use crate::{clock, serve, signature};

const SOURCE_SECRET: &str = "whsec_demo_stripe";
const ALICE_TOKEN: &str = "demo-alice-inbox-token";

/// A local app standing in for one environment: it verifies each delivery with its own secret
/// and prints what it got. `fail_first` requests answer 503 (an outage that then recovers);
/// `down` answers 503 to everything.
struct App {
    addr: SocketAddr,
}

impl App {
    async fn start(name: &'static str, secret: &'static str, fail_first: usize) -> anyhow::Result<App> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let handle = move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let sig = req
                            .headers()
                            .get("stripe-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let verified = signature::verify(&sig, &body, &[secret], 300, clock::unix_now_secs()).is_ok();
                        let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        let status = if !verified {
                            StatusCode::BAD_REQUEST
                        } else if n < fail_first {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        println!(
                            "      {name:<10} got {} {} (signature {}) -> answers {}{}",
                            event["type"].as_str().unwrap_or("?"),
                            event["id"].as_str().unwrap_or("?"),
                            if verified { "valid for its own secret" } else { "INVALID" },
                            status.as_u16(),
                            if status == StatusCode::SERVICE_UNAVAILABLE { " (simulated outage)" } else { "" },
                        );
                        Ok::<_, std::convert::Infallible>(
                            Response::builder().status(status).body(Full::new(Bytes::new())).unwrap_or_default(),
                        )
                    }
                };
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .await;
                });
            }
        });
        Ok(App { addr })
    }

    fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }
}

/// One step of the story: an event, what it is, where routing must send it, and which target
/// must in the end take it.
struct Step {
    note: &'static str,
    event: Value,
    expect: &'static str,
    delivered_by: &'static str,
}

fn stripe_event(id: &str, ty: &str, object: Value) -> Value {
    json!({"id": id, "object": "event", "type": ty, "livemode": false, "api_version": "2024-06-20",
           "created": clock::unix_now_secs(), "data": {"object": object}})
}

pub async fn run(keep_running: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("fanout-demo-{}", std::process::id()));
    let result = run_in(&dir, keep_running).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!(
        "\nDone in {:.1}s. Every event ended up with the environment that owns it.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run_in(dir: &std::path::Path, keep_running: bool) -> anyhow::Result<()> {
    println!("fanout demo: one Stripe test-mode stream, three environments.\n");
    let staging = App::start("staging", "whsec_demo_staging", 2).await?;
    let dogfood_1 = App::start("dogfood-1", "whsec_demo_dogfood", usize::MAX).await?;
    let dogfood_2 = App::start("dogfood-2", "whsec_demo_dogfood", 0).await?;
    let alice_app = App::start("alice-app", "whsec_demo_alice", 0).await?;
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
data_dir: {data}
admin: {{listen: 127.0.0.1:0}}
sources:
  - {{name: account, path: /stripe/webhook, secrets: [{SOURCE_SECRET}]}}
retry: {{initial_delay: 300ms, max_delay: 1s}}
targets:
  - {{name: staging, url: "{staging}", secret: whsec_demo_staging, timeout: 2s}}
  - {{name: dogfood-1, url: "{d1}", secret: whsec_demo_dogfood, timeout: 2s}}
  - {{name: dogfood-2, url: "{d2}", secret: whsec_demo_dogfood, timeout: 2s}}
  - {{name: alice, kind: inbox, token: {ALICE_TOKEN}, secret: whsec_demo_alice, timeout: 2s}}
groups:
  - {{name: dogfood, mode: failover, members: [dogfood-1, dogfood-2]}}
routes:
  - name: alice-dev
    when: {{fields: [{{path: data.object.metadata.env, equals: alice}}]}}
    to: [alice]
    offline: {{after: 1s, fallback: staging}}
  - {{name: dogfood-env, when: {{fields: [{{path: data.object.metadata.env, equals: dogfood}}]}}, to: [dogfood]}}
default: staging
"#,
        data = dir.join("data").display(),
        staging = staging.url(),
        d1 = dogfood_1.url(),
        d2 = dogfood_2.url(),
    );
    let config = Config::parse("demo routing.yaml", &yaml, |_| None)?;
    let running = serve::start(config).await?;
    let proxy = format!("http://{}", running.addr);
    let admin = format!("http://{}", running.admin_addr);
    println!("proxy on {proxy} (store in {}), admin API on {admin}", dir.display());
    println!("console: {admin}/ui/ (no admin token here: sign in with an empty token; as alice: {ALICE_TOKEN})");
    println!("environments: staging (fails twice, then recovers), dogfood = failover[dogfood-1 (down), dogfood-2],");
    println!("              alice's laptop: an inbox, fetched by `fanout listen` and forwarded to her local app\n");

    let listen_args = ListenArgs {
        proxy: proxy.clone(),
        token: Some(ALICE_TOKEN.to_owned()),
        name: None,
        forward_to: Some(alice_app.url().parse()?),
        print_secret: false,
        ca: None,
        batch: 10,
        events: Default::default(),
    };
    let laptop = tokio::spawn(listen::run(listen_args));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let told = tell_the_story(&proxy, &admin, &laptop).await;
    laptop.abort();
    if keep_running && told.is_ok() {
        println!("\nStill running: open {admin}/ui/ and find alice's events (Events, or search cus_alice1).");
        println!("Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    running.stop().await;
    told
}

async fn tell_the_story(
    proxy: &str,
    admin: &str,
    laptop: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let steps = [
        Step {
            note: "alice's local app creates a customer tagged metadata.env=alice",
            event: stripe_event(
                "evt_demo_1",
                "customer.created",
                json!({"id": "cus_alice1", "object": "customer", "metadata": {"env": "alice"}}),
            ),
            expect: "alice",
            delivered_by: "alice",
        },
        Step {
            note: "a subscription for that customer, no metadata of its own",
            event: stripe_event(
                "evt_demo_2",
                "customer.subscription.created",
                json!({"id": "sub_alice1", "object": "subscription", "customer": "cus_alice1", "metadata": {}}),
            ),
            expect: "alice",
            delivered_by: "alice",
        },
        Step {
            note: "an hour later the renewal fails: the invoice names only customer and subscription",
            event: stripe_event(
                "evt_demo_3",
                "invoice.payment_failed",
                json!({"id": "in_alice1", "object": "invoice", "customer": "cus_alice1", "subscription": "sub_alice1", "metadata": {}}),
            ),
            expect: "alice",
            delivered_by: "alice",
        },
        Step {
            note: "staging creates a customer (no env tag: the default), while staging is having an outage",
            event: stripe_event(
                "evt_demo_4",
                "customer.created",
                json!({"id": "cus_staging1", "object": "customer", "metadata": {}}),
            ),
            expect: "staging",
            delivered_by: "staging",
        },
        Step {
            note: "dogfood creates a customer; dogfood-1 is down, so the failover group tries dogfood-2",
            event: stripe_event(
                "evt_demo_5",
                "customer.created",
                json!({"id": "cus_dog1", "object": "customer", "metadata": {"env": "dogfood"}}),
            ),
            expect: "dogfood",
            delivered_by: "dogfood-2",
        },
        Step {
            note: "that dogfood customer pays an invoice (no metadata): it follows its customer",
            event: stripe_event(
                "evt_demo_6",
                "invoice.paid",
                json!({"id": "in_dog1", "object": "invoice", "customer": "cus_dog1", "metadata": {}}),
            ),
            expect: "dogfood",
            delivered_by: "dogfood-2",
        },
    ];
    let client = outbound::client(None)?;
    for (i, step) in steps.iter().enumerate() {
        send_and_explain(&client, proxy, admin, i + 1, step).await?;
    }

    println!("\nalice closes her laptop (`fanout listen` stops). Her route says: offline for 1s -> staging.");
    laptop.abort();
    let step = Step {
        note: "alice's customer is updated while nobody listens on her inbox",
        event: stripe_event(
            "evt_demo_7",
            "customer.updated",
            json!({"id": "cus_alice1", "object": "customer", "metadata": {"env": "alice"}}),
        ),
        expect: "alice",
        delivered_by: "staging",
    };
    send_and_explain(&client, proxy, admin, 7, &step).await
}

/// Sends one event signed as Stripe would, prints the routing decision, and waits until it was
/// delivered (printing the attempts on the way).
async fn send_and_explain(client: &HttpClient, proxy: &str, admin: &str, n: usize, step: &Step) -> anyhow::Result<()> {
    let id = step.event["id"].as_str().unwrap_or_default().to_owned();
    let ty = step.event["type"].as_str().unwrap_or_default().to_owned();
    println!("\n[{n}] {}\n    Stripe -> fanout: {ty} {id}", step.note);
    let body = step.event.to_string();
    let sig = signature::sign(SOURCE_SECRET.as_bytes(), clock::unix_now_secs(), body.as_bytes());
    let req = Request::post(format!("{proxy}/stripe/webhook"))
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(Full::new(Bytes::from(body)))?;
    let res = client.request(req).await.context("cannot reach the demo proxy")?;
    if !res.status().is_success() {
        bail!("the proxy refused {id}: {}", res.status());
    }
    println!("    fanout -> Stripe: 200 (stored durably; Stripe stops retrying)");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut explained = false;
    loop {
        let detail = get(client, &format!("{admin}/events/{id}")).await?;
        let destinations = &detail.summary.destinations;
        if !explained {
            for d in destinations {
                let why = match d.rule.strip_prefix("owner:") {
                    Some(object) => format!("no rule matched; it references {object}, which {} owns", d.name),
                    None if d.rule == "default" => {
                        "no rule matched and nothing it references has an owner: the default".to_owned()
                    }
                    None => format!("rule {:?} matched", d.rule),
                };
                println!("    routed to {}: {why}", d.name);
            }
            explained = true;
        }
        if detail.summary.state == "delivered" {
            for a in detail.attempts.iter().filter(|a| a.outcome == "rerouted") {
                println!("    moved to {}: {}", a.to.as_deref().unwrap_or("?"), a.error.as_deref().unwrap_or(""));
            }
            let last = detail.attempts.iter().rev().find(|a| a.outcome == "delivered");
            let target = last.map_or("?", |a| a.target.as_str());
            let tries = detail.attempts.iter().filter(|a| a.attempt > 0).count();
            println!("    delivered to {target} ({} attempt{})", tries, if tries == 1 { "" } else { "s" });
            let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
            if !names.contains(&step.expect) || target != step.delivered_by {
                bail!(
                    "{id} was routed to {names:?} and delivered by {target}; expected {} and {}",
                    step.expect,
                    step.delivered_by
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{id} was not delivered within 20s: it is {}", detail.summary.state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(client: &HttpClient, url: &str) -> anyhow::Result<EventDetail> {
    let req = Request::get(url).body(Full::new(Bytes::new()))?;
    let res = client.request(req).await.with_context(|| format!("cannot reach {url}"))?;
    let bytes = res.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&bytes).with_context(|| format!("{url} answered {}", String::from_utf8_lossy(&bytes)))
}
