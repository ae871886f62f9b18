//! Calibration of the engine model against papers-and-data.md ("What the fake vLLM pod must
//! model"), in virtual time: every target must hold within ±25 %.

use std::time::Duration;

use switchyard_sim::engine::{Engine, EngineConfig, EventKind, SeqRequest, prompt_blocks};

const TOLERANCE: f64 = 0.25;

fn assert_within(name: &str, measured: f64, lo: f64, hi: f64) {
    let (min, max) = (lo * (1.0 - TOLERANCE), hi * (1.0 + TOLERANCE));
    eprintln!("{name}: measured {measured:.3}, target {lo}–{hi}, accepted {min:.3}–{max:.3}");
    assert!(
        (min..=max).contains(&measured),
        "{name}: measured {measured:.3} outside {min:.3}–{max:.3} (target {lo}–{hi} ±25 %)"
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A request whose prompt is `tokens` tokens, sharing its prefix only with requests of `seed`.
fn request(id: u64, seed: u8, tokens: u32, output: u32, cfg: &EngineConfig) -> SeqRequest {
    // Distinct seeds give distinct hash chains through the model-name seed.
    let text = vec![b'x'; tokens as usize * 4];
    let (prompt_tokens, block_hashes) =
        prompt_blocks(&text, &format!("{}-{seed}", cfg.model), cfg.block_size);
    assert_eq!(prompt_tokens, tokens);
    SeqRequest {
        id,
        prompt_tokens,
        block_hashes,
        max_output_tokens: output,
        lora: None,
    }
}

/// Runs steps from `now` until `id` gets `kind`; returns the instant it happened.
fn run_until(
    engine: &mut Engine,
    now: &mut Duration,
    id: u64,
    want: fn(&EventKind) -> bool,
) -> Duration {
    while engine.has_work() {
        let step = engine.step(*now);
        *now += step.duration;
        if step.events.iter().any(|e| e.id == id && want(&e.kind)) {
            return *now;
        }
    }
    panic!("request {id} never reached the awaited event");
}

#[test]
fn idle_ttft_of_a_2k_prompt() {
    let cfg = EngineConfig::h100_llama3_8b();
    let mut engine = Engine::new(cfg.clone());
    let mut now = Duration::ZERO;
    assert!(engine.add_request(request(1, 1, 2048, 4, &cfg), now));
    let ttft = run_until(&mut engine, &mut now, 1, |k| *k == EventKind::FirstToken);
    assert_within("idle TTFT 2k prompt (ms)", ms(ttft), 60.0, 60.0);
}

#[test]
fn decode_step_at_batch_1() {
    let cfg = EngineConfig::h100_llama3_8b();
    let mut engine = Engine::new(cfg.clone());
    let mut now = Duration::ZERO;
    assert!(engine.add_request(request(1, 1, 2048, 8, &cfg), now));
    let first = run_until(&mut engine, &mut now, 1, |k| *k == EventKind::FirstToken);
    let second = run_until(&mut engine, &mut now, 1, |k| *k == EventKind::Token);
    assert_within(
        "decode ITL batch 1, 2k ctx (ms)",
        ms(second - first),
        6.6,
        6.6,
    );
}

#[test]
fn decode_step_at_batch_64() {
    let cfg = EngineConfig::h100_llama3_8b();
    let mut engine = Engine::new(cfg.clone());
    let mut now = Duration::ZERO;
    for id in 0..64 {
        assert!(engine.add_request(request(id, id as u8, 2048, 64, &cfg), now));
    }
    // Until all 64 have their first token, then one pure decode step.
    let mut started = 0;
    while started < 64 {
        let step = engine.step(now);
        now += step.duration;
        started += step
            .events
            .iter()
            .filter(|e| e.kind == EventKind::FirstToken)
            .count();
    }
    let step = engine.step(now);
    assert_eq!(
        step.events
            .iter()
            .filter(|e| e.kind == EventKind::Token)
            .count(),
        64
    );
    assert_within(
        "decode ITL batch 64, 2k ctx (ms)",
        ms(step.duration),
        13.0,
        15.0,
    );
}

#[test]
fn full_prefix_hit_ttft() {
    let cfg = EngineConfig::h100_llama3_8b();
    let mut engine = Engine::new(cfg.clone());
    let mut now = Duration::ZERO;
    assert!(engine.add_request(request(1, 1, 2048, 2, &cfg), now));
    run_until(&mut engine, &mut now, 1, |k| {
        matches!(k, EventKind::Finished { .. })
    });
    let start = now;
    assert!(engine.add_request(request(2, 1, 2048, 2, &cfg), now));
    let step = engine.step(now);
    assert!(step.events.contains(&switchyard_sim::engine::Event {
        id: 2,
        kind: EventKind::Scheduled {
            cached_tokens: 2032
        },
    }));
    now += step.duration;
    assert!(
        step.events
            .iter()
            .any(|e| e.id == 2 && e.kind == EventKind::FirstToken)
    );
    assert_within("full prefix hit TTFT (ms)", ms(now - start), 7.0, 10.0);
}

/// The VTC artifact's `overload` suite: 2 clients at 1.5 and 3 req/s, uniform arrivals,
/// 256 input / 256 output tokens, on the A10G profile; throughput = input + output tokens of the
/// requests finished in the measured window ÷ window.
#[test]
fn a10g_saturated_throughput() {
    let cfg = EngineConfig::a10g_llama_7b();
    let mut engine = Engine::new(cfg.clone());
    let duration = Duration::from_secs(360);
    let warmup = Duration::from_secs(30);
    let mut arrivals: Vec<(Duration, u64)> = Vec::new();
    let mut id = 0u64;
    for rate in [1.5f64, 3.0] {
        let gap = 1.0 / rate;
        let mut t = 0.0;
        while t < duration.as_secs_f64() {
            arrivals.push((Duration::from_secs_f64(t), id));
            id += 1;
            t += gap;
        }
    }
    arrivals.sort();
    let mut next = 0;
    let mut now = Duration::ZERO;
    let mut tokens = 0u64;
    while now < duration {
        while next < arrivals.len() && arrivals[next].0 <= now {
            let (_, rid) = arrivals[next];
            assert!(engine.add_request(request(rid, (rid % 251) as u8, 256, 256, &cfg), now));
            next += 1;
        }
        let step = engine.step(now);
        now += if step.duration.is_zero() {
            arrivals.get(next).map_or(duration, |a| a.0) - now
        } else {
            step.duration
        };
        if now > warmup {
            tokens += 512
                * step
                    .events
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::Finished { .. }))
                    .count() as u64;
        }
    }
    let stats = engine.stats();
    eprintln!(
        "a10g: running {} waiting {} preemptions {} kv {:.2}",
        stats.num_requests_running,
        stats.num_requests_waiting,
        stats.num_preemptions,
        stats.kv_cache_usage
    );
    let tput = tokens as f64 / (duration - warmup).as_secs_f64();
    assert_within("A10G saturated throughput (tok/s)", tput, 780.0, 890.0);
}
