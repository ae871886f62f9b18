//! The request path's own work, without the network: what `bench extproc` measures end to end,
//! taken apart.
//!
//! - `parse/<api>/<size>`: `openai::parse` of a `/v1/completions` body (a string prompt with
//!   JSON escapes and non-ASCII text, as the load generator sends) and of a
//!   `/v1/chat/completions` body (the same text in two messages) of about 10 KB and 220 KB,
//!   reported in bytes/s.
//! - `schedule/default/<size>`: the whole decision for that completions body with the default
//!   configuration (queue, KV and prefix scorers, max-score picker) over 8 endpoints: parse,
//!   the request built as the ext_proc stream builds it, prefix hashing and matching, scoring,
//!   the pick, and recording the prompt's blocks on the picked endpoint. The prefix index is
//!   warm: 32 prompts in 8 groups sharing their first half, sent round-robin.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use switchyard::config::default_config;
use switchyard::extproc::openai;
use switchyard::scheduling::{
    Endpoint, EndpointMetrics, EndpointSnapshot, EndpointState, Request, SchedulerRng, Timestamp,
};
use switchyard_sim::bench::prompt_text;
use switchyard_sim::load::completion_body;

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const SIZES: [(usize, &str); 2] = [(10_000, "10k"), (220_000, "220k")];

/// The text as a system and a user message.
fn chat_body(text: &str) -> Bytes {
    let (a, b) = text.split_at(floor_boundary(text, text.len() / 2));
    let v = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": a}, {"role": "user", "content": b}],
        "max_tokens": 16,
    });
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}

/// The char boundary at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (size, label) in SIZES {
        let text = prompt_text(size, 1, 1);
        let completions = completion_body(MODEL, &text, 16, false);
        let chat = chat_body(&text);
        for (api, path, body) in [
            ("completions", "/v1/completions", &completions),
            ("chat", "/v1/chat/completions", &chat),
        ] {
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::new(api, label), body, |b, body| {
                b.iter(|| {
                    let p = openai::parse(black_box(body), path).expect("parses");
                    black_box(p.prompt.len())
                })
            });
        }
    }
    group.finish();
}

fn pool(n: usize) -> EndpointSnapshot {
    EndpointSnapshot::new(
        (0..n)
            .map(|i| EndpointState {
                endpoint: Arc::new(Endpoint::new(
                    format!("vllm-{i}-rank-0"),
                    std::net::Ipv4Addr::from(0x7f00_0000u32 + i as u32 + 1).into(),
                    8000,
                )),
                metrics: Arc::new(EndpointMetrics {
                    waiting_queue_size: (i % 3) as u64,
                    kv_cache_usage: (i * 13 % 100) as f64 / 100.0,
                    cache_block_size: 16,
                    updated_at: Some(Timestamp::ZERO),
                    ..Default::default()
                }),
            })
            .collect(),
    )
}

fn bench_schedule(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule/default");
    let snap = pool(8);
    for (size, label) in SIZES {
        let scheduler = switchyard::runtime::build_scheduler(&default_config(), None).scheduler;
        let bodies: Vec<Bytes> = (0..32)
            .map(|i| completion_body(MODEL, &prompt_text(size, i / 4, i % 4), 16, false))
            .collect();
        let mut rng = SchedulerRng::seed_from_u64(7);
        let mut k = 0usize;
        let decide = |k: usize, rng: &mut SchedulerRng| {
            let body = &bodies[k % bodies.len()];
            let p = openai::parse(body, "/v1/completions").expect("parses");
            let mut r = Request::new(format!("req-{k}"), p.model);
            r.prompt = p.prompt;
            r.body_size = body.len();
            let d = scheduler
                .decide(&r, &snap, Timestamp::ZERO, rng)
                .expect("a pick");
            d.result.targets()[0].index
        };
        for i in 0..(4 * bodies.len()) {
            decide(i, &mut rng);
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function(label, |b| {
            b.iter(|| {
                k = k.wrapping_add(1);
                black_box(decide(k, &mut rng))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse, bench_schedule);
criterion_main!(benches);
