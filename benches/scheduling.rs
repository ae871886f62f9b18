//! One full scheduling decision (candidates, producers, profile run, pick) with the default
//! profile — queue ×2, KV ×2, prefix ×3, max-score-picker — over pools of 8 to 1,000 endpoints
//! with varied queue depths and KV usage. The default config's prefix producer runs, but the
//! request has no prompt, so nothing is hashed or indexed: prefix costs, which the core's targets
//! exclude (≤ 10 µs at 64 endpoints, ≤ 100 µs at 1,000), are measured in `benches/prefix.rs`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use switchyard::config::default_config;
use switchyard::scheduling::{
    Endpoint, EndpointMetrics, EndpointSnapshot, EndpointState, Request, SchedulerRng, Timestamp,
};

fn pool(n: usize) -> EndpointSnapshot {
    EndpointSnapshot::new(
        (0..n)
            .map(|i| EndpointState {
                endpoint: Arc::new(Endpoint::new(
                    format!("pod-{i}-rank-0"),
                    std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1).into(),
                    8000,
                )),
                metrics: Arc::new(EndpointMetrics {
                    waiting_queue_size: (i * 7 % 13) as u64,
                    running_requests_size: (i * 5 % 32) as u64,
                    kv_cache_usage: (i * 37 % 100) as f64 / 100.0,
                    updated_at: Some(Timestamp::ZERO),
                    ..Default::default()
                }),
            })
            .collect(),
    )
}

fn bench_decide(c: &mut Criterion) {
    let scheduler = switchyard::runtime::build_scheduler(&default_config(), None).scheduler;
    let request = Request::new("bench", "meta-llama/Llama-3.1-8B-Instruct");
    let mut group = c.benchmark_group("decide/default-profile");
    for n in [8usize, 64, 512, 1000] {
        let snap = pool(n);
        let mut rng = SchedulerRng::seed_from_u64(1);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| {
                let d = scheduler
                    .decide(black_box(&request), snap, Timestamp::ZERO, &mut rng)
                    .expect("a pick");
                black_box(d.result.targets()[0].index)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
