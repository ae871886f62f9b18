//! Replays a synthetic shared-prefix workload through N engines in virtual time and prints how
//! long the simulation took: a quick check that the engine model is fast enough for the
//! discrete-event mode (12k requests on 8 pods within 60 s on one core).
//!
//! `cargo run --release -p switchyard-sim --example engine_replay -- [requests] [pods] [rate]`

use std::time::{Duration, Instant};

use switchyard_sim::engine::{Engine, EngineConfig, EventKind, SeqRequest};

fn main() {
    let mut args = std::env::args().skip(1);
    let requests: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(12_000);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(40.0);

    let cfg = EngineConfig::h100_llama3_8b();
    let mut engines: Vec<Engine> = (0..pods).map(|_| Engine::new(cfg.clone())).collect();
    let mut clocks = vec![Duration::ZERO; pods];
    // Deterministic LCG for lengths and groups.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    let started = Instant::now();
    let (mut steps, mut tokens, mut finished) = (0u64, 0u64, 0u64);
    let mut events = Vec::new();
    for id in 0..requests {
        let arrival = Duration::from_secs_f64(id as f64 / rate);
        let group = rnd() % 64;
        let system = 2048 / 16;
        let question = 64 + rnd() % 512;
        let prompt = (system * 16 + question) as u32;
        let mut hashes: Vec<u64> = (0..system).map(|i| group << 32 | i).collect();
        hashes.extend((system..u64::from(prompt) / 16).map(|i| (id + 1) << 40 | i));
        let pod = (group as usize) % pods;
        // Advance every engine to the arrival.
        for (engine, clock) in engines.iter_mut().zip(clocks.iter_mut()) {
            while engine.has_work() && *clock < arrival {
                let d = engine.step_into(*clock, &mut events);
                steps += 1;
                *clock += d;
                for e in &events {
                    match e.kind {
                        EventKind::FirstToken | EventKind::Token => tokens += 1,
                        EventKind::Finished { .. } => finished += 1,
                        _ => {}
                    }
                }
            }
            if *clock < arrival {
                *clock = arrival;
            }
        }
        let req = SeqRequest {
            id,
            prompt_tokens: prompt,
            block_hashes: hashes,
            max_output_tokens: 50 + (rnd() % 300) as u32,
            lora: None,
        };
        assert!(engines[pod].add_request(req, clocks[pod]));
    }
    for (engine, clock) in engines.iter_mut().zip(clocks.iter_mut()) {
        while engine.has_work() {
            *clock += engine.step_into(*clock, &mut events);
            steps += 1;
            for e in &events {
                match e.kind {
                    EventKind::FirstToken | EventKind::Token => tokens += 1,
                    EventKind::Finished { .. } => finished += 1,
                    _ => {}
                }
            }
        }
    }
    let wall = started.elapsed();
    let end = clocks.iter().max().copied().unwrap_or_default();
    let hits: u64 = engines
        .iter()
        .map(|e| e.stats().prefix_cache_hits_tokens)
        .sum();
    let queries: u64 = engines
        .iter()
        .map(|e| e.stats().prefix_cache_queries_tokens)
        .sum();
    let preemptions: u64 = engines.iter().map(|e| e.stats().num_preemptions).sum();
    println!(
        "{requests} requests on {pods} pods: {finished} finished, {tokens} tokens, {steps} steps, \
         virtual {:.1} s, wall {:.3} s, hit rate {:.2}, preemptions {preemptions}",
        end.as_secs_f64(),
        wall.as_secs_f64(),
        hits as f64 / queries.max(1) as f64,
    );
}
