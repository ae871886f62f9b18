//! The VTC paper's qualitative result on its real trace, in virtual time: FCFS on one A10G
//! (S-LoRA-like engine) lets backlogged tenants' service drift apart. Our replay of the trace's
//! 1,500 requests lands within a band of the numbers recomputed from the paper's own FCFS run
//! (papers-and-data.md §1: MaxDiff 760.0, AvgDiff 433.5, 777 tok/s), and far from its VTC run
//! (368.4 / 251.7).

use std::path::Path;

use switchyard_sim::baselines::Policy;
use switchyard_sim::des::DesOptions;
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::evaluate::{AdmissionChoice, run_des};
use switchyard_sim::trace::read_vtc_results;

#[test]
fn fcfs_on_the_real_trace_is_within_the_band_of_the_paper() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vtc_FCFS_all_results_real.jsonl");
    let trace = read_vtc_results(&path).unwrap();
    let opts = DesOptions {
        pods: 1,
        engine: EngineConfig::a10g_llama_7b(),
        seed: 1,
        ..DesOptions::default()
    };
    // One pod: the router does not matter; the engine serves first come, first served.
    let policy = Policy::parse("round-robin").unwrap();
    let (result, outcome) = run_des(&trace, &policy, &opts, AdmissionChoice::PassThrough);
    let r = &result.report;
    let f = &r.fairness;
    eprintln!(
        "FCFS replay: MaxDiff {:.1} AvgDiff {:.1} throughput {:.1} tok/s, TTFT p50 {:.1} s, preemptions {}",
        f.max_diff,
        f.avg_diff,
        r.tokens_per_s,
        r.ttft_p50_ms / 1e3,
        outcome.preemptions()
    );
    assert_eq!(r.requests, 1500);
    assert_eq!(f.horizon_s, 600.0);
    let within = |v: f64, target: f64, band: f64| (v - target).abs() <= band * target;
    assert!(within(f.max_diff, 760.0, 0.10), "MaxDiff {}", f.max_diff);
    assert!(within(f.avg_diff, 433.5, 0.10), "AvgDiff {}", f.avg_diff);
    assert!(
        within(r.tokens_per_s, 777.0, 0.08),
        "throughput {}",
        r.tokens_per_s
    );
    // The qualitative result: far above what VTC achieves on the same trace.
    assert!(f.max_diff > 1.5 * 368.4 && f.avg_diff > 1.4 * 251.7);
    assert_eq!(
        outcome.preemptions(),
        0,
        "S-LoRA reserves outputs and never preempts"
    );
}

/// Switchyard's VTC flow control, exactly as shipped in config/vtc.yaml, on the same trace
/// against the engine's own FCFS (no flow control, as the paper's FCFS): the EPP holds requests
/// while the pod's queue is non-empty and releases the least-served tenant first. Issue target:
/// MaxDiff ≤ 0.6 × FCFS's at ≥ 0.97 × its throughput. (MaxDiff is a worst window and moves with
/// scrape timing: 0.46–0.70 × FCFS over seeds 1–8 and 42, median 0.55, 0.57 at the CLI's default
/// seed 42 used here; AvgDiff 0.53–0.61 ×.)
#[test]
fn vtc_flow_control_is_fairer_than_fcfs_on_the_real_trace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let trace = read_vtc_results(&root.join("tests/data/vtc_FCFS_all_results_real.jsonl")).unwrap();
    let opts = DesOptions {
        pods: 1,
        engine: EngineConfig::a10g_llama_7b(),
        seed: 42,
        ..DesOptions::default()
    };
    let vtc = Policy::parse(root.join("../config/vtc.yaml").to_str().unwrap()).unwrap();
    let (v, _) = run_des(&trace, &vtc, &opts, AdmissionChoice::Auto);
    assert_eq!(v.admission, "flow-control");
    let gie = Policy::parse("gie-default").unwrap();
    let (f, _) = run_des(&trace, &gie, &opts, AdmissionChoice::Auto);
    assert_eq!(f.admission, "pass-through");
    let (v, f) = (&v.report, &f.report);
    eprintln!(
        "VTC {:.1} / {:.1} / {:.0} tok/s; FCFS {:.1} / {:.1} / {:.0} tok/s",
        v.fairness.max_diff,
        v.fairness.avg_diff,
        v.tokens_per_s,
        f.fairness.max_diff,
        f.fairness.avg_diff,
        f.tokens_per_s
    );
    assert_eq!(v.errors + f.errors, 0);
    assert!(v.fairness.max_diff <= 0.6 * f.fairness.max_diff);
    assert!(v.fairness.avg_diff <= 0.65 * f.fairness.avg_diff);
    assert!(v.fairness.jain > f.fairness.jain);
    assert!(v.tokens_per_s >= 0.97 * f.tokens_per_s);
    // Light tenants no longer wait behind heavy ones: the median TTFT drops.
    assert!(v.ttft_p50_ms < 0.5 * f.ttft_p50_ms);
}
