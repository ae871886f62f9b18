//! Behaviour tests of the engine model (calibration lives in `tests/engine_calibration.rs`).

use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// A small engine: `blocks` blocks of 16 tokens, a token budget and sequence cap.
fn small(blocks: u32, budget: u32, max_seqs: u32) -> EngineConfig {
    EngineConfig {
        num_gpu_blocks: blocks,
        max_model_len: 100_000,
        max_num_batched_tokens: budget,
        max_num_seqs: max_seqs,
        ..EngineConfig::h100_llama3_8b()
    }
}

/// A request with `tokens` prompt tokens whose full blocks hash as prefix group `group`.
fn req(id: u64, group: u64, tokens: u32, output: u32) -> SeqRequest {
    SeqRequest {
        id,
        prompt_tokens: tokens,
        block_hashes: (0..u64::from(tokens / 16))
            .map(|i| group << 32 | i)
            .collect(),
        max_output_tokens: output,
        lora: None,
    }
}

/// Steps until idle, returning every event with its time.
fn drain(engine: &mut Engine, now: &mut Duration) -> Vec<(Duration, Event)> {
    let mut out = Vec::new();
    let mut guard = 0;
    while engine.has_work() {
        let step = engine.step(*now);
        *now += step.duration;
        out.extend(step.events.into_iter().map(|e| (*now, e)));
        guard += 1;
        assert!(guard < 1_000_000, "engine does not make progress");
    }
    out
}

fn cached_tokens(events: &[(Duration, Event)], id: u64) -> u32 {
    events
        .iter()
        .find_map(|(_, e)| match e.kind {
            EventKind::Scheduled { cached_tokens } if e.id == id => Some(cached_tokens),
            _ => None,
        })
        .expect("scheduled event")
}

#[test]
fn request_lifecycle_events_are_complete() {
    let mut engine = Engine::new(small(64, 8192, 16));
    let mut now = Duration::ZERO;
    assert!(engine.add_request(req(7, 1, 100, 3), now));
    assert!(engine.has_work());
    let events: Vec<EventKind> = drain(&mut engine, &mut now)
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert_eq!(
        events,
        [
            EventKind::Scheduled { cached_tokens: 0 },
            EventKind::FirstToken,
            EventKind::Token,
            EventKind::Token,
            EventKind::Finished {
                reason: FinishReason::Length
            },
        ]
    );
    let s = engine.stats();
    assert_eq!(s.prompt_tokens_total, 100);
    assert_eq!(s.generation_tokens_total, 3);
    assert_eq!(s.request_success(FinishReason::Length), 1);
    assert_eq!(s.num_requests_running + s.num_requests_waiting, 0);
    assert_eq!(s.kv_cache_usage, 0.0);
    assert_eq!(s.num_steps, 3);
    assert_eq!(s.busy_time, now);
}

#[test]
fn finished_blocks_stay_cached_and_are_reused_then_evicted_lru() {
    // 8 blocks; each 64-token prompt with 1 output token holds 4 blocks.
    let mut engine = Engine::new(small(8, 8192, 16));
    let mut now = Duration::ZERO;
    engine.add_request(req(1, 1, 64, 1), now);
    drain(&mut engine, &mut now);
    engine.add_request(req(2, 2, 64, 1), now);
    drain(&mut engine, &mut now);
    // Both prefixes cached, nothing held.
    assert_eq!(engine.stats().kv_cache_usage, 0.0);
    assert_eq!(engine.stats().num_cached_blocks, 8);
    // Group 3 needs 4 fresh blocks: it evicts group 1 (freed longest ago), not group 2.
    engine.add_request(req(3, 3, 64, 1), now);
    let ev = drain(&mut engine, &mut now);
    assert_eq!(cached_tokens(&ev, 3), 0);
    engine.add_request(req(4, 2, 64, 1), now);
    let ev = drain(&mut engine, &mut now);
    assert_eq!(
        cached_tokens(&ev, 4),
        48,
        "group 2 still cached (capped at prompt - 1)"
    );
    engine.add_request(req(5, 1, 64, 1), now);
    let ev = drain(&mut engine, &mut now);
    assert_eq!(cached_tokens(&ev, 5), 0, "group 1 was evicted");
    let s = engine.stats();
    assert_eq!(s.prefix_cache_queries_tokens, 5 * 64);
    assert_eq!(s.prefix_cache_hits_tokens, 48);
}

#[test]
fn concurrent_requests_share_prefix_blocks() {
    let mut engine = Engine::new(small(64, 8192, 16));
    let now = Duration::ZERO;
    engine.add_request(req(1, 1, 160, 50), now);
    engine.step(now);
    // Request 1 is decoding and holds 10 full prompt blocks (+1 for its next token).
    engine.add_request(req(2, 1, 160, 50), now);
    let step = engine.step(now);
    assert!(step.events.contains(&Event {
        id: 2,
        kind: EventKind::Scheduled { cached_tokens: 144 },
    }));
    // 11 blocks for request 1 (10 prompt + its decode), 9 of them shared, 1 new for request 2.
    assert_eq!(engine.block_pool().num_used(), 11 + 1);
}

#[test]
fn prefix_hit_is_capped_to_leave_one_token() {
    let mut engine = Engine::new(small(64, 8192, 16));
    let mut now = Duration::ZERO;
    engine.add_request(req(1, 1, 70, 1), now);
    drain(&mut engine, &mut now);
    // Same 4 full blocks plus a partial one: all 4 hit.
    engine.add_request(req(2, 1, 70, 1), now);
    let ev = drain(&mut engine, &mut now);
    assert_eq!(cached_tokens(&ev, 2), 64);
    // Exactly 4 full blocks: the last one must be recomputed.
    engine.add_request(req(3, 1, 64, 1), now);
    let ev = drain(&mut engine, &mut now);
    assert_eq!(cached_tokens(&ev, 3), 48);
    // A prompt shorter than one block never hits.
    engine.add_request(req(4, 1, 16, 1), now);
    let ev = drain(&mut engine, &mut now);
    assert_eq!(cached_tokens(&ev, 4), 0);
}

#[test]
fn chunked_prefill_respects_the_token_budget_decodes_first() {
    let mut engine = Engine::new(small(1024, 512, 16));
    let mut now = Duration::ZERO;
    engine.add_request(req(1, 1, 100, 100), now);
    let step = engine.step(now);
    now += step.duration;
    assert!(step.events.iter().any(|e| e.kind == EventKind::FirstToken));
    // A 2000-token prompt joins: each step decodes request 1, then 511 prefill tokens.
    engine.add_request(req(2, 2, 2000, 1), now);
    let mut steps = 0;
    loop {
        let step = engine.step(now);
        now += step.duration;
        steps += 1;
        assert!(step.events.contains(&Event {
            id: 1,
            kind: EventKind::Token
        }));
        if step
            .events
            .iter()
            .any(|e| e.id == 2 && e.kind == EventKind::FirstToken)
        {
            break;
        }
        // 1 decode + 511 prefill tokens: T0 + 511·a + ctx·b + pairs·c.
        assert!(step.duration > Duration::from_millis(18));
    }
    assert_eq!(steps, 2000_u32.div_ceil(511));
}

#[test]
fn max_num_seqs_caps_the_batch() {
    let mut engine = Engine::new(small(1024, 8192, 2));
    let now = Duration::ZERO;
    for id in 0..3 {
        engine.add_request(req(id, id, 32, 10), now);
    }
    engine.step(now);
    let s = engine.stats();
    assert_eq!((s.num_requests_running, s.num_requests_waiting), (2, 1));
}

#[test]
fn preemption_when_blocks_run_out_then_everything_completes() {
    // 12 blocks; three requests of 64 prompt + 60 output tokens need 8 blocks each at the end.
    let mut engine = Engine::new(small(12, 8192, 16));
    let mut now = Duration::ZERO;
    for id in 0..3 {
        engine.add_request(req(id, id, 64, 60), now);
    }
    let events = drain(&mut engine, &mut now);
    let s = engine.stats();
    assert!(s.num_preemptions > 0);
    assert_eq!(s.request_success(FinishReason::Length), 3);
    assert_eq!(s.generation_tokens_total, 180);
    assert_eq!(s.prompt_tokens_total, 192);
    assert_eq!(s.kv_cache_usage, 0.0);
    let mut per_id: HashMap<u64, Vec<EventKind>> = HashMap::new();
    for (_, e) in &events {
        per_id.entry(e.id).or_default().push(e.kind);
    }
    // The newest request is the one preempted.
    assert!(
        per_id[&2].contains(&EventKind::Preempted),
        "{:?}",
        per_id[&2]
    );
    assert!(!per_id[&0].contains(&EventKind::Preempted));
    for kinds in per_id.values() {
        let tokens = kinds
            .iter()
            .filter(|k| matches!(k, EventKind::FirstToken | EventKind::Token))
            .count();
        assert_eq!(tokens, 60);
        assert_eq!(kinds[0], EventKind::Scheduled { cached_tokens: 0 });
        assert_eq!(kinds[1], EventKind::FirstToken);
        assert_eq!(
            kinds
                .iter()
                .filter(|k| matches!(k, EventKind::Scheduled { .. }))
                .count(),
            1
        );
        assert_eq!(
            *kinds.last().unwrap(),
            EventKind::Finished {
                reason: FinishReason::Length
            }
        );
    }
}

#[test]
fn preempted_request_waits_at_the_head() {
    let mut engine = Engine::new(small(9, 8192, 16));
    let mut now = Duration::ZERO;
    engine.add_request(req(1, 1, 64, 40), now);
    engine.add_request(req(2, 2, 64, 40), now);
    // Each holds 4 prompt blocks + 1 after the first decode: the ninth block goes to request 1,
    // then request 1 needs another and request 2 is preempted.
    let mut preempted_at = None;
    for _ in 0..40 {
        let step = engine.step(now);
        now += step.duration;
        if step.events.contains(&Event {
            id: 2,
            kind: EventKind::Preempted,
        }) {
            preempted_at = Some(now);
            break;
        }
    }
    assert!(preempted_at.is_some());
    let s = engine.stats();
    assert_eq!((s.num_requests_running, s.num_requests_waiting), (1, 1));
    assert_eq!(s.num_preemptions, 1);
    // A newcomer queues behind the preempted request.
    engine.add_request(req(3, 3, 16, 1), now);
    let events = drain(&mut engine, &mut now);
    let at = |id, kind| {
        events
            .iter()
            .find(|(_, e)| e.id == id && e.kind == kind)
            .unwrap()
            .0
    };
    // Request 2 resumes (its next token) no later than request 3 is admitted.
    assert!(at(2, EventKind::Token) <= at(3, EventKind::Scheduled { cached_tokens: 0 }));
    assert!(
        at(
            1,
            EventKind::Finished {
                reason: FinishReason::Length
            }
        ) < at(2, EventKind::Token)
    );
}

#[test]
fn abort_frees_blocks_and_emits_nothing_more() {
    let mut engine = Engine::new(small(64, 8192, 16));
    let mut now = Duration::ZERO;
    engine.add_request(req(1, 1, 200, 100), now);
    engine.add_request(req(2, 2, 200, 100), now);
    engine.add_request(req(3, 3, 200, 100), now);
    let step = engine.step(now);
    now += step.duration;
    assert!(engine.stats().kv_cache_usage > 0.0);
    assert!(engine.abort(1));
    assert!(engine.abort(3));
    assert!(!engine.abort(1));
    assert!(!engine.abort(99));
    let events = drain(&mut engine, &mut now);
    assert!(events.iter().all(|(_, e)| e.id == 2));
    let s = engine.stats();
    assert_eq!(s.kv_cache_usage, 0.0);
    assert_eq!(s.request_success(FinishReason::Abort), 2);
    assert_eq!(s.request_success(FinishReason::Length), 1);
    // A waiting request can be aborted too.
    let mut engine = Engine::new(small(64, 8192, 1));
    engine.add_request(req(1, 1, 20, 5), now);
    engine.add_request(req(2, 2, 20, 5), now);
    engine.step(now);
    assert!(engine.abort(2));
    assert_eq!(engine.stats().num_requests_waiting, 0);
}

#[test]
fn lora_slots_limit_distinct_adapters_and_loading_costs_time() {
    let cfg = EngineConfig {
        max_loras: 1,
        lora_load_time: Duration::from_millis(40),
        ..small(256, 8192, 16)
    };
    let mut engine = Engine::new(cfg);
    let mut now = Duration::ZERO;
    let with = |id, name: &str| SeqRequest {
        lora: Some(name.to_owned()),
        ..req(id, id, 64, 5)
    };
    engine.add_request(with(1, "a"), now);
    engine.add_request(with(2, "b"), now);
    engine.add_request(with(3, "a"), now);
    engine.add_request(req(4, 4, 64, 5), now);
    let s = engine.stats();
    assert_eq!(s.waiting_lora_adapters, ["a", "b"]);
    assert_eq!(s.max_loras, 1);
    let step = engine.step(now);
    now += step.duration;
    assert!(step.duration >= Duration::from_millis(40));
    let scheduled: Vec<u64> = step
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Scheduled { .. }))
        .map(|e| e.id)
        .collect();
    // "b" does not fit in the single slot and is skipped, keeping its place; base-model requests pass.
    assert_eq!(scheduled, [1, 3, 4]);
    let s = engine.stats();
    assert_eq!(s.running_lora_adapters, ["a"]);
    assert_eq!(s.waiting_lora_adapters, ["b"]);
    assert_eq!(engine.resident_loras(), ["a"]);
    // The next step does not reload "a".
    let step = engine.step(now);
    now += step.duration;
    assert!(step.duration < Duration::from_millis(40));
    let events = drain(&mut engine, &mut now);
    assert!(
        events.contains(&(
            events
                .iter()
                .find(|(_, e)| e.id == 2 && matches!(e.kind, EventKind::Scheduled { .. }))
                .unwrap()
                .0,
            Event {
                id: 2,
                kind: EventKind::Scheduled { cached_tokens: 0 }
            }
        ))
    );
    assert_eq!(engine.resident_loras(), ["b"]);
    let s = engine.stats();
    assert!(s.running_lora_adapters.is_empty() && s.waiting_lora_adapters.is_empty());
}

#[test]
fn invalid_requests_are_refused() {
    let mut engine = Engine::new(small(4, 8192, 16));
    let now = Duration::ZERO;
    assert_eq!(
        engine.validate(&req(1, 1, 60, 10)),
        Err(RejectReason::TooLong {
            requested: 70,
            max_model_len: 64
        })
    );
    assert!(!engine.add_request(req(1, 1, 60, 10), now));
    assert_eq!(
        engine.validate(&req(1, 1, 0, 10)),
        Err(RejectReason::EmptyPrompt)
    );
    assert!(engine.add_request(req(1, 1, 10, 10), now));
    assert_eq!(
        engine.validate(&req(1, 1, 10, 10)),
        Err(RejectReason::DuplicateId(1))
    );
    let cfg = EngineConfig {
        max_loras: 0,
        ..small(4, 8192, 16)
    };
    let lora = SeqRequest {
        lora: Some("x".into()),
        ..req(2, 2, 10, 1)
    };
    assert_eq!(
        Engine::new(cfg).validate(&lora),
        Err(RejectReason::LoraDisabled)
    );
    assert!(!engine.has_work() || engine.stats().num_requests_waiting == 1);
}

#[test]
fn same_inputs_give_the_same_events() {
    let run = || {
        let mut engine = Engine::new(small(40, 256, 8));
        let mut now = Duration::ZERO;
        let mut log = Vec::new();
        for id in 0..30u64 {
            engine.add_request(
                req(id, id % 3, 40 + (id as u32 * 37) % 200, 5 + id as u32 % 20),
                now,
            );
            let step = engine.step(now);
            now += step.duration + Duration::from_micros(id * 500);
            log.push((now, step.events));
        }
        while engine.has_work() {
            let step = engine.step(now);
            now += step.duration;
            log.push((now, step.events));
        }
        (log, engine.stats())
    };
    let (a, sa) = run();
    let (b, sb) = run();
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    assert!(
        sa.num_preemptions > 0,
        "the workload should exercise preemption"
    );
    assert!(sa.prefix_cache_hits_tokens > 0, "and prefix hits");
}

#[test]
fn step_into_reuses_the_buffer() {
    let mut engine = Engine::new(small(64, 8192, 16));
    let mut events = vec![Event {
        id: 99,
        kind: EventKind::Token,
    }];
    engine.add_request(req(1, 1, 20, 2), Duration::ZERO);
    let d = engine.step_into(Duration::ZERO, &mut events);
    assert!(d > Duration::ZERO);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.id == 1));
    assert_eq!(engine.step(Duration::ZERO).events.len(), 2);
    assert_eq!(engine.step(Duration::ZERO), Step::default());
}

#[test]
fn kv_events_carry_the_request_block_hashes() {
    let mut engine = Engine::new(small(64, 8192, 16));
    engine.record_kv_events(true);
    let mut now = Duration::ZERO;
    engine.add_request(req(1, 1, 40, 1), now);
    drain(&mut engine, &mut now);
    let mut out = Vec::new();
    engine.drain_kv_events(&mut out);
    assert_eq!(
        out,
        [
            KvEvent::Stored { hash: 1 << 32 },
            KvEvent::Stored { hash: 1 << 32 | 1 }
        ]
    );
}

#[test]
fn reserving_output_admits_only_what_can_finish_and_never_preempts() {
    // 10 blocks = 160 tokens; each request peaks at 32 + 64 tokens.
    let run = |reserve: bool| {
        let cfg = EngineConfig {
            reserve_output: reserve,
            ..small(10, 8192, 16)
        };
        let mut engine = Engine::new(cfg);
        let mut now = Duration::ZERO;
        assert!(engine.add_request(req(1, 1, 32, 64), now));
        assert!(engine.add_request(req(2, 2, 32, 64), now));
        engine.step(now);
        let running_at_start = engine.stats().num_requests_running;
        let events = drain(&mut engine, &mut now);
        let finished = events
            .iter()
            .filter(|(_, e)| matches!(e.kind, EventKind::Finished { .. }))
            .count();
        assert_eq!(finished, 2);
        (running_at_start, engine.stats().num_preemptions)
    };
    assert_eq!(run(true), (1, 0), "the second waits for the first");
    let (running, preemptions) = run(false);
    assert_eq!(running, 2);
    assert!(
        preemptions > 0,
        "without the reservation both start and one is preempted"
    );
}
