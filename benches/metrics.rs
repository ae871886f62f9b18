//! Benchmarks of the metrics parser and extraction (`cargo bench --bench metrics`).
//!
//! Groups:
//! - `parse_all`: the tolerant text parser handing **every** sample to a collecting visitor, over a
//!   realistic vLLM V1 page (all latency histograms; 1 and 4 data-parallel engines) and the real
//!   SGLang docs dump. Throughput in bytes: the parser's raw speed when nothing is skipped.
//! - `extract`: what a scrape really costs once the page is in memory: the built-in `vllm` /
//!   `sglang` mapping parses the page, skips the families it does not read, aggregates the DP
//!   ranks and builds the new `EndpointMetrics`. Target: ≥ 300 MB/s on one core.
//!
//! The CPU cost of scraping 100 endpoints every 50 ms over loopback HTTP is measured by
//! `cargo run --release --example scrape_cpu` (a criterion loop cannot measure a steady state
//! of timers and sockets).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard::datalayer::EngineMapping;
use switchyard::datalayer::fake::{EngineState, VllmPage};
use switchyard::datalayer::parse::parse_all;
use switchyard::scheduling::{EndpointMetrics, Timestamp};

const SGLANG: &str = include_str!("../src/datalayer/testdata/sglang-docs-example.txt");

fn vllm_page(engines: usize) -> String {
    VllmPage {
        engines: (0..engines)
            .map(|i| EngineState {
                waiting: i as u64,
                running: 2 * i as u64,
                kv_usage: 0.1 * i as f64,
            })
            .collect(),
        ..Default::default()
    }
    .render()
}

fn pages() -> Vec<(String, &'static str, String)> {
    vec![
        ("vllm_1_engine".into(), "vllm", vllm_page(1)),
        ("vllm_4_engines".into(), "vllm", vllm_page(4)),
        ("sglang_docs".into(), "sglang", SGLANG.to_string()),
    ]
}

fn bench_parse_all(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_all");
    for (name, _, page) in pages() {
        g.throughput(Throughput::Bytes(page.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(&name), &page, |b, page| {
            b.iter(|| {
                let (c, stats) = parse_all(black_box(page.as_bytes()));
                black_box((c.samples.len(), stats))
            })
        });
    }
    g.finish();
}

fn bench_extract(c: &mut Criterion) {
    let mut g = c.benchmark_group("extract");
    let prev = EndpointMetrics::default();
    for (name, engine, page) in pages() {
        let mapping = EngineMapping::builtin(engine).unwrap();
        g.throughput(Throughput::Bytes(page.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(&name), &page, |b, page| {
            b.iter(|| {
                let x =
                    mapping.extract(black_box(page.as_bytes()), &prev, Timestamp::from_millis(1));
                black_box(x.succeeded)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_parse_all, bench_extract);
criterion_main!(benches);
