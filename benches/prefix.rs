//! Prefix-cache affinity on the request path.
//!
//! - `prefix/hash/<chars>`: GIE-compatible block hashing alone (64-byte blocks, no block cap so
//!   every byte is hashed), reported as bytes/s. `prefix/xxh64-oneshot/<chars>` hashes the same
//!   bytes as one xxh64 call: the ceiling the chained, per-block hash is measured against.
//!   Target: ≥ 2 GB/s.
//! - `prefix/hash+match+record/<chars>/<endpoints>`: one request through the producer exactly as
//!   the scheduler runs it — hash the prompt (default 256-block cap), match it against the index
//!   (the `DataProducer` step), then record all its blocks on the picked endpoint (the
//!   `PreRequest` step). The index is warm: 64 prompt variants sharing their first half, each
//!   recorded on rotating endpoints, so matches walk shared blocks and records both touch and
//!   insert. Target: ≤ 20 µs median for 10k characters at 64 endpoints.
//!
//! Memory per indexed entry (100 endpoints × 31,250 blocks) is measured by
//! `cargo run --release --example prefix_memory` with a counting allocator, not here.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard::prefix::producer::{ApproxPrefixCacheProducer, PrefixProducerParams};
use switchyard::prefix::{BlockHasher, PrefixMetrics, chain_seed};
use switchyard::scheduling::{
    CycleState, DataProducer, Endpoint, EndpointMetrics, EndpointSnapshot, EndpointState,
    PreRequest, ProfileResult, Request, SchedulingContext, SchedulingResult, ScoredEndpoint,
    Timestamp,
};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// Deterministic text of `len` bytes; `variant` changes only the second half.
fn prompt(len: usize, variant: usize) -> Vec<u8> {
    let words = [
        "the ",
        "cache ",
        "prefix ",
        "router ",
        "token ",
        "block ",
        "model ",
        "endpoint ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0usize;
    while out.len() < len {
        let salt = if out.len() >= len / 2 { variant } else { 0 };
        let w = words[(i.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) % words.len()];
        out.extend_from_slice(w.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn pool(n: usize) -> EndpointSnapshot {
    EndpointSnapshot::new(
        (0..n)
            .map(|i| EndpointState {
                endpoint: Arc::new(Endpoint::new(
                    format!("vllm-{i}-rank-0"),
                    std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1).into(),
                    8000,
                )),
                metrics: Arc::new(EndpointMetrics {
                    updated_at: Some(Timestamp::ZERO),
                    ..Default::default()
                }),
            })
            .collect(),
    )
}

fn bench_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefix");
    let hasher = BlockHasher::new(16, u32::MAX);
    let seed = chain_seed(MODEL, None);
    for chars in [1_000usize, 10_000, 200_000] {
        let p = prompt(chars, 0);
        let mut out = Vec::with_capacity(hasher.block_count(chars));
        group.throughput(Throughput::Bytes(chars as u64));
        group.bench_with_input(BenchmarkId::new("hash", chars), &p, |b, p| {
            b.iter(|| {
                hasher.hash_into(black_box(p), seed, &mut out);
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("xxh64-oneshot", chars), &p, |b, p| {
            b.iter(|| xxhash_rust::xxh64::xxh64(black_box(p), 0))
        });
    }
    group.finish();
}

fn bench_request_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefix/hash+match+record");
    for chars in [1_000usize, 10_000, 200_000] {
        let variants: Vec<Request> = (0..64)
            .map(|v| {
                let mut r = Request::new(format!("req-{v}"), MODEL);
                r.prompt = Bytes::from(prompt(chars, v + 1));
                r.body_size = chars + 64;
                r
            })
            .collect();
        for n in [8usize, 64, 512] {
            let snap = pool(n);
            let candidates: Vec<usize> = (0..n).collect();
            let producer = ApproxPrefixCacheProducer::new(
                PrefixProducerParams::default(),
                PrefixMetrics::new(),
            );
            let result_for = |i: usize| SchedulingResult {
                profile_results: vec![(
                    "default".into(),
                    ProfileResult {
                        targets: vec![ScoredEndpoint {
                            index: i,
                            score: 1.0,
                        }],
                        scores: Vec::new(),
                    },
                )],
                primary: 0,
            };
            let results: Vec<SchedulingResult> = (0..n).map(result_for).collect();
            let run = |k: usize| {
                let req = &variants[k % variants.len()];
                let mut state = CycleState::default();
                producer.produce(req, &snap, &candidates, Timestamp::ZERO, &mut state);
                let ctx = SchedulingContext {
                    request: req,
                    snapshot: &snap,
                    state: &state,
                    now: Timestamp::ZERO,
                };
                producer.pre_request(&ctx, &results[(k * 7) % n]);
                state.prefix.map_or(0, |p| p.total_blocks)
            };
            // Warm the index: every variant recorded on a few endpoints.
            for k in 0..(4 * variants.len()) {
                run(k);
            }
            let mut k = 0usize;
            group.bench_function(BenchmarkId::new(chars.to_string(), n), |b| {
                b.iter(|| {
                    k = k.wrapping_add(1);
                    black_box(run(k))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_hash, bench_request_path);
criterion_main!(benches);
