//! Micro-benchmarks of the per-event hot path (criterion):
//!
//!     cargo bench -p fanout --bench micro
//!
//! signature verification of a 3 KB event, routing against a 50-rule routing.yaml, and one
//! durable enqueue into a real sled store on disk (alone, and 64 at once sharing a group commit).

#[path = "loadgen/mod.rs"]
#[allow(unused_imports)]
mod loadgen;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fanout::clock::{unix_now_ms, unix_now_secs};
use fanout::config::Config;
use fanout::plan::plan;
use fanout_store::{EventRecord, Store};
use http::HeaderMap;

fn signed_event(seq: u64) -> (Bytes, HeaderMap) {
    let body = loadgen::event_body("micro", seq, 3000);
    let mut headers = HeaderMap::new();
    let signature = loadgen::stripe_signature(loadgen::SOURCE_SECRET, unix_now_secs(), body.as_bytes());
    headers.insert("stripe-signature", signature.parse().unwrap());
    (Bytes::from(body), headers)
}

/// 50 rules of every kind; the bench event matches only the last, so every rule is evaluated.
fn fifty_rule_config() -> Config {
    let mut yaml = String::from(
        "sources:\n  - name: s\n    path: /stripe/webhook\n    secrets: [whsec_bench_source]\n\
         targets:\n  - {name: staging, url: http://127.0.0.1:9/, secret: whsec_t}\n  - {name: alice, url: http://127.0.0.1:9/, secret: whsec_a}\n\
         routes:\n",
    );
    for i in 0..49 {
        let when = match i % 5 {
            0 => format!("type: [\"radar.{i}.*\", \"reporting.report_run.{i}\"]"),
            1 => format!("account: acct_{i:016}"),
            2 => format!("fields: [{{path: [data.object.metadata.env, data.object.subscription_details.metadata.env], equals: dev{i}}}]"),
            3 => format!("fields: [{{path: data.object.customer, any_of: [cus_a{i}, cus_b{i}, cus_c{i}]}}]"),
            _ => format!("fields: [{{path: data.object.id, prefix: ch_{i}}}]"),
        };
        yaml.push_str(&format!("  - name: rule{i}\n    when: {{{when}}}\n    to: alice\n"));
    }
    yaml.push_str("  - name: last\n    when: {type: \"invoice.*\", fields: [{path: data.object.metadata.env, equals: staging}]}\n    to: staging\n");
    Config::parse("bench.yaml", &yaml, |_| None).expect("the 50-rule bench config parses")
}

fn verify(c: &mut Criterion) {
    let config = fifty_rule_config();
    let source = &config.sources[0];
    let (body, headers) = signed_event(1);
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("signature_3kb", |b| {
        let header = headers["stripe-signature"].to_str().unwrap();
        b.iter(|| {
            fanout::signature::verify(
                black_box(header),
                black_box(&body),
                &[b"whsec_bench_source"],
                300,
                unix_now_secs(),
            )
            .unwrap()
        })
    });
    group.bench_function("signature_and_json_3kb", |b| {
        b.iter(|| fanout::verify::verify(source, black_box(&headers), body.clone(), unix_now_secs()).unwrap())
    });
    group.finish();
}

fn route(c: &mut Criterion) {
    let config = fifty_rule_config();
    let (body, _) = signed_event(1);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(config.router.rules.len(), 50);
    c.bench_function("route/50_rules_last_matches", |b| {
        b.iter(|| {
            let decision = config.router.route(black_box(&json));
            black_box(plan(&config, &decision))
        })
    });
}

fn enqueue(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let config = fifty_rule_config();
    let (body, _) = signed_event(1);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (jobs, disposition) = plan(&config, &config.router.route(&json));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let seq = Arc::new(AtomicU64::new(0));
    let record = move |seq: &AtomicU64| EventRecord {
        id: format!("evt_micro_{}", seq.fetch_add(1, Ordering::Relaxed)),
        event_type: "invoice.paid".into(),
        source: "s".into(),
        received_at_ms: unix_now_ms(),
        disposition: disposition.clone(),
        body: body.to_vec(),
    };

    let mut group = c.benchmark_group("store");
    group.bench_function("ingest_not_flushed", |b| {
        b.iter_batched(|| record(&seq), |r| store.ingest(&r, &jobs).unwrap(), BatchSize::SmallInput)
    });
    group.bench_function("durable_enqueue_one", |b| {
        b.iter_batched(
            || record(&seq),
            |r| {
                store.ingest(&r, &jobs).unwrap();
                rt.block_on(store.durable()).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("durable_enqueue_64_concurrent", |b| {
        b.iter_batched(
            || (0..64).map(|_| record(&seq)).collect::<Vec<_>>(),
            |records| {
                rt.block_on(async {
                    let tasks: Vec<_> = records
                        .into_iter()
                        .map(|r| {
                            let (store, jobs) = (store.clone(), jobs.clone());
                            tokio::spawn(async move {
                                store.ingest(&r, &jobs).unwrap();
                                store.durable().await.unwrap()
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, verify, route, enqueue);
criterion_main!(benches);
