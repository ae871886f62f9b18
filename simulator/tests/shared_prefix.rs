//! On the shared-prefix workload at about 80 % load, Switchyard's default configuration (GIE's:
//! queue ×2, KV ×2, prefix ×3) beats round-robin and least-queue on mean TTFT and on the prefix
//! cache hit rate, in virtual time.
//!
//! Load: 4 H100 pods with 4,000 KV blocks each (the demo's pool) saturate at about 121 requests/s
//! under round-robin (measured with `switchyard-sim compare round-robin --rate 200`); 97 req/s
//! is 80 % of that. The run is 15 s of arrivals (about 1,400 requests) to keep the test short.

use switchyard_sim::baselines::Policy;
use switchyard_sim::des::DesOptions;
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::evaluate::{AdmissionChoice, WorkloadSpec, compare_des};

#[test]
fn default_config_beats_round_robin_and_least_queue() {
    let trace = WorkloadSpec {
        rate: 97.0,
        duration_s: 15.0,
        ..WorkloadSpec::default()
    }
    .trace(42)
    .unwrap();
    let mut engine = EngineConfig::h100_llama3_8b();
    engine.num_gpu_blocks = 4000;
    let opts = DesOptions {
        pods: 4,
        engine,
        seed: 42,
        ..DesOptions::default()
    };
    let policies: Vec<Policy> = ["gie-default", "round-robin", "least-queue"]
        .iter()
        .map(|p| Policy::parse(p).unwrap())
        .collect();
    let eval = compare_des(
        &trace,
        &policies,
        &opts,
        AdmissionChoice::Auto,
        |_, _, _| {},
    );
    let reports = eval.reports();
    eprintln!("{}", switchyard_sim::report::table(&reports));
    let (sy, rr, lq) = (&reports[0], &reports[1], &reports[2]);
    for r in &reports {
        assert_eq!(r.errors, 0, "{}", r.policy);
        assert_eq!(r.requests, trace.requests.len());
    }
    for other in [rr, lq] {
        assert!(
            sy.ttft_mean_ms < 0.7 * other.ttft_mean_ms,
            "mean TTFT: default {:.1} ms vs {} {:.1} ms",
            sy.ttft_mean_ms,
            other.policy,
            other.ttft_mean_ms
        );
        assert!(
            sy.prefix_hit_rate > other.prefix_hit_rate + 0.1,
            "prefix hit rate: default {:.3} vs {} {:.3}",
            sy.prefix_hit_rate,
            other.policy,
            other.prefix_hit_rate
        );
    }
    // Prefix affinity gets close to what one infinite cache would.
    assert!(sy.prefix_hit_rate > sy.ideal_prefix_hit_rate.unwrap() - 0.05);
}
