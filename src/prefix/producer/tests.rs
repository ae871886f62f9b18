use std::sync::Arc;

use bytes::Bytes;
use rand::SeedableRng;

use super::*;
use crate::config::{default_config, load_str};
use crate::runtime::{BuiltScheduler, build_scheduler};

/// The scheduler a configuration builds, as the server builds it.
fn build(cfg: &crate::config::EndpointPickerConfig) -> BuiltScheduler {
    build_scheduler(cfg, None)
}
use crate::scheduling::{
    Endpoint, EndpointMetrics, EndpointState, ProfileResult, SchedulerRng, ScoredEndpoint,
};

fn pool(n: usize, f: impl Fn(usize) -> EndpointMetrics) -> EndpointSnapshot {
    EndpointSnapshot::new(
        (0..n)
            .map(|i| EndpointState {
                endpoint: Arc::new(Endpoint::new(
                    format!("pod-{i}-rank-0"),
                    format!("10.0.0.{}", i + 1).parse().unwrap(),
                    8000,
                )),
                metrics: Arc::new(f(i)),
            })
            .collect(),
    )
}

fn equal_metrics(_: usize) -> EndpointMetrics {
    EndpointMetrics {
        updated_at: Some(Timestamp::ZERO),
        ..Default::default()
    }
}

fn request(id: &str, prompt: &str) -> Request {
    let mut r = Request::new(id, "meta-llama/Llama-3.1-8B-Instruct");
    r.prompt = Bytes::copy_from_slice(prompt.as_bytes());
    r.body_size = prompt.len() + 60;
    r
}

fn long_prompt(seed: usize) -> String {
    (0..40)
        .map(|i| format!("line {i} of document {seed}: some text to fill the block. "))
        .collect()
}

#[test]
fn same_prompt_goes_back_to_the_same_endpoint() {
    let built = build(&default_config());
    assert_eq!(built.handles.prefix_producers.len(), 1);
    let s = &built.scheduler;
    let snap = pool(8, equal_metrics);
    let mut rng = SchedulerRng::seed_from_u64(7);
    for doc in 0..20 {
        let prompt = long_prompt(doc);
        let first = s
            .decide(&request("a", &prompt), &snap, Timestamp::ZERO, &mut rng)
            .expect("decides");
        let second = s
            .decide(&request("b", &prompt), &snap, Timestamp::ZERO, &mut rng)
            .expect("decides");
        let (e1, e2) = (
            first.result.targets()[0].index,
            second.result.targets()[0].index,
        );
        assert_eq!(e1, e2, "document {doc}");
        let info = second.state.prefix.as_ref().expect("producer ran");
        assert!(info.total_blocks > 0);
        assert_eq!(info.matched_blocks[e2], info.total_blocks);
        // The first request found nothing cached.
        let info1 = first.state.prefix.as_ref().expect("producer ran");
        assert!(info1.matched_blocks.iter().all(|&m| m == 0));
    }
    // 20 documents, each recorded twice on one endpoint: the entries are the distinct blocks.
    let blocks = BlockHasher::new(16, 256).block_count(long_prompt(0).len());
    assert_eq!(built.handles.prefix_producers[0].index().len(), 20 * blocks);
    assert_eq!(
        built.handles.prefix_metrics.size.get(),
        (20 * blocks) as i64
    );
}

#[test]
fn a_shared_prefix_attracts_a_different_suffix() {
    let s = build(&default_config()).scheduler;
    let snap = pool(16, equal_metrics);
    let mut rng = SchedulerRng::seed_from_u64(3);
    let system = long_prompt(99);
    let a = s
        .decide(
            &request("a", &format!("{system} Question: what is up?")),
            &snap,
            Timestamp::ZERO,
            &mut rng,
        )
        .expect("decides");
    let b = s
        .decide(
            &request("b", &format!("{system} Question: something else entirely")),
            &snap,
            Timestamp::ZERO,
            &mut rng,
        )
        .expect("decides");
    assert_eq!(a.result.targets()[0].index, b.result.targets()[0].index);
    let info = b.state.prefix.expect("producer ran");
    let m = info.matched_blocks[b.result.targets()[0].index];
    assert!(
        m > 0 && m < info.total_blocks,
        "{m} of {}",
        info.total_blocks
    );
}

#[test]
fn short_prompts_and_salts_do_not_match() {
    let s = build(&default_config());
    let snap = pool(4, equal_metrics);
    let mut rng = SchedulerRng::seed_from_u64(1);
    let d = s
        .scheduler
        .decide(&request("a", "too short"), &snap, Timestamp::ZERO, &mut rng)
        .expect("decides");
    let info = d.state.prefix.expect("producer ran");
    assert_eq!(info.total_blocks, 0);
    assert!(s.handles.prefix_producers[0].index().is_empty());

    let prompt = long_prompt(1);
    let mut salted = request("b", &prompt);
    salted.cache_salt = Some("tenant-a".into());
    s.scheduler
        .decide(&salted, &snap, Timestamp::ZERO, &mut rng)
        .expect("decides");
    let d = s
        .scheduler
        .decide(&request("c", &prompt), &snap, Timestamp::ZERO, &mut rng)
        .expect("decides");
    let info = d.state.prefix.expect("producer ran");
    assert!(info.matched_blocks.iter().all(|&m| m == 0));
}

#[test]
fn auto_tune_takes_block_size_from_first_candidate_and_capacity_from_metrics() {
    let p = ApproxPrefixCacheProducer::new(PrefixProducerParams::default(), PrefixMetrics::new());
    let snap = pool(3, |i| EndpointMetrics {
        cache_block_size: if i == 1 { 32 } else { 0 },
        cache_num_blocks: if i == 1 { 5 } else { 0 },
        ..Default::default()
    });
    assert_eq!(p.block_size(&snap, &[1, 0]), 32);
    assert_eq!(p.block_size(&snap, &[0, 1]), 16);
    assert_eq!(p.block_size(&snap, &[]), 16);

    let req = request("r", &long_prompt(5));
    let mut state = CycleState::default();
    p.produce(&req, &snap, &[1, 0, 2], Timestamp::ZERO, &mut state);
    let info = state.prefix.clone().expect("filled");
    assert_eq!(info.block_size_tokens, 32);
    assert_eq!(
        info.total_blocks as usize,
        req.prompt.len().div_ceil(128).min(256)
    );

    let result = |i| SchedulingResult {
        profile_results: vec![(
            "default".into(),
            ProfileResult {
                targets: vec![ScoredEndpoint {
                    index: i,
                    score: 1.0,
                }],
                scores: vec![],
            },
        )],
        primary: 0,
    };
    let ctx = SchedulingContext {
        request: &req,
        snapshot: &snap,
        state: &state,
        now: Timestamp::ZERO,
    };
    p.pre_request(&ctx, &result(1));
    p.pre_request(&ctx, &result(2));
    assert_eq!(p.index().capacity_of("pod-1-rank-0"), Some(5));
    assert_eq!(p.index().len_of("pod-1-rank-0"), 5);
    assert_eq!(p.index().capacity_of("pod-2-rank-0"), Some(31_250));

    // Without autoTune the configured values hold.
    let fixed = ApproxPrefixCacheProducer::new(
        PrefixProducerParams {
            auto_tune: false,
            lru_capacity_per_server: 9,
            ..Default::default()
        },
        PrefixMetrics::new(),
    );
    assert_eq!(fixed.block_size(&snap, &[1]), 16);
    fixed.pre_request(&ctx, &result(1));
    assert_eq!(fixed.index().capacity_of("pod-1-rank-0"), Some(9));
}

#[test]
fn records_on_the_prefill_profile_too_and_observes_metrics() {
    let metrics = PrefixMetrics::new();
    let p = ApproxPrefixCacheProducer::new(PrefixProducerParams::default(), metrics.clone());
    let snap = pool(4, equal_metrics);
    let req = request("r", &long_prompt(8));
    let mut state = CycleState::default();
    p.produce(&req, &snap, &[0, 1, 2, 3], Timestamp::ZERO, &mut state);
    let pr = |i| ProfileResult {
        targets: vec![ScoredEndpoint {
            index: i,
            score: 1.0,
        }],
        scores: vec![],
    };
    let result = SchedulingResult {
        profile_results: vec![("prefill".into(), pr(2)), ("decode".into(), pr(3))],
        primary: 1,
    };
    let ctx = SchedulingContext {
        request: &req,
        snapshot: &snap,
        state: &state,
        now: Timestamp::ZERO,
    };
    p.pre_request(&ctx, &result);
    let total = state.prefix.as_ref().expect("filled").total_blocks as usize;
    assert_eq!(p.index().len_of("pod-2-rank-0"), total);
    assert_eq!(p.index().len_of("pod-3-rank-0"), total);
    assert_eq!(p.index().len_of("pod-0-rank-0"), 0);
    assert_eq!(metrics.size.get(), 2 * total as i64);

    // Endpoints leaving the pool are forgotten and the gauge follows.
    assert_eq!(p.retain_endpoints(|n| n != "pod-2-rank-0"), 1);
    assert_eq!(metrics.size.get(), total as i64);
}

#[test]
fn token_load_steers_away_and_release_restores() {
    let cfg = load_str(
        "apiVersion: inference.networking.x-k8s.io/v1alpha1\n\
         kind: EndpointPickerConfig\n\
         plugins:\n\
         - type: token-load-scorer\n\
         schedulingProfiles:\n\
         - name: default\n\
         \x20 plugins:\n\
         \x20 - pluginRef: token-load-scorer\n",
    )
    .expect("valid");
    let built = build(&cfg);
    assert_eq!(built.handles.inflight_producers.len(), 1);
    let s = &built.scheduler;
    let snap = pool(2, equal_metrics);
    let mut rng = SchedulerRng::seed_from_u64(11);
    let r1 = request("r1", &long_prompt(1));
    let d1 = s.decide(&r1, &snap, Timestamp::ZERO, &mut rng).expect("ok");
    let e1 = d1.result.targets()[0].index;
    let r2 = request("r2", &long_prompt(2));
    let d2 = s.decide(&r2, &snap, Timestamp::ZERO, &mut rng).expect("ok");
    assert_ne!(
        d2.result.targets()[0].index,
        e1,
        "the loaded endpoint is avoided"
    );
    assert!(d2.state.inflight_load(e1).tokens > 0);
    let name1 = snap.get(e1).endpoint.name.clone();
    // Completion and stream end both report; one release.
    s.response_complete(&r1, &name1, None);
    s.response_complete(&r1, &name1, None);
    assert_eq!(
        built.handles.inflight_producers[0].load_of(&name1).requests,
        0
    );
    assert_eq!(built.handles.inflight_producers[0].in_flight(), 1);
}

#[test]
fn absurd_block_size_metrics_do_not_panic() {
    let p = ApproxPrefixCacheProducer::new(PrefixProducerParams::default(), PrefixMetrics::new());
    let snap = pool(2, |_| EndpointMetrics {
        cache_block_size: u32::MAX,
        cache_num_blocks: u64::MAX,
        ..Default::default()
    });
    let req = request("r", &long_prompt(3));
    let mut state = CycleState::default();
    p.produce(&req, &snap, &[0, 1], Timestamp::ZERO, &mut state);
    let info = state.prefix.clone().expect("filled");
    assert_eq!(
        info.total_blocks, 0,
        "a prompt shorter than one (huge) block"
    );
    let result = SchedulingResult {
        profile_results: vec![(
            "default".into(),
            ProfileResult {
                targets: vec![ScoredEndpoint {
                    index: 0,
                    score: 1.0,
                }],
                scores: vec![],
            },
        )],
        primary: 0,
    };
    let ctx = SchedulingContext {
        request: &req,
        snapshot: &snap,
        state: &state,
        now: Timestamp::ZERO,
    };
    p.pre_request(&ctx, &result);
}
