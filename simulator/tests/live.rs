//! `run --mode live`, short: a trace replayed in real time on fake pods, through the real
//! `switchyard` binary (built by `cargo test --workspace`) and without an EPP.

use std::time::Duration;

use switchyard_sim::baselines::Policy;
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::evaluate::WorkloadSpec;
use switchyard_sim::exposition::Personality;
use switchyard_sim::live::{LiveOptions, run_live};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_replays_in_real_time_through_switchyard_and_round_robin() {
    let mut spec = WorkloadSpec {
        rate: 15.0,
        duration_s: 1.5,
        ..WorkloadSpec::default()
    };
    spec.shared_prefix.groups = 3;
    let trace = spec.trace(3).unwrap();
    let mut engine = EngineConfig::h100_llama3_8b();
    engine.num_gpu_blocks = 2000;
    let opts = LiveOptions {
        pods: 2,
        engine,
        personality: Personality::Vllm,
        scrape_interval: Duration::from_millis(50),
        switchyard_bin: None,
        progress: false,
    };
    for policy in ["round-robin", "gie-default"] {
        let p = Policy::parse(policy).unwrap();
        let r = run_live(&trace, &p, &opts).await.expect("live run");
        let rep = &r.report;
        assert_eq!(rep.requests, trace.requests.len(), "{policy}");
        assert_eq!(rep.errors, 0, "{policy}");
        assert!(
            rep.prefix_hit_rate > 0.0 && rep.ttft_p50_ms > 0.0,
            "{policy}"
        );
        assert_eq!(rep.ideal_prefix_hit_rate.map(|h| h > 0.5), Some(true));
        assert_eq!(
            rep.tenants.values().map(|t| t.requests).sum::<usize>(),
            rep.requests
        );
    }
}
