//! What each baseline router does, in virtual time on small pools.

use std::collections::BTreeMap;

use switchyard_sim::baselines::Policy;
use switchyard_sim::des::DesOptions;
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::evaluate::{AdmissionChoice, WorkloadSpec, run_des};
use switchyard_sim::load::Record;
use switchyard_sim::trace::Trace;

fn pool() -> DesOptions {
    let mut engine = EngineConfig::h100_llama3_8b();
    engine.num_gpu_blocks = 3000;
    DesOptions {
        pods: 4,
        engine,
        seed: 9,
        ..DesOptions::default()
    }
}

fn trace(rate: f64, seconds: f64) -> Trace {
    WorkloadSpec {
        rate,
        duration_s: seconds,
        ..WorkloadSpec::default()
    }
    .trace(5)
    .unwrap()
}

fn run(policy: &str, trace: &Trace) -> (Vec<Record>, f64) {
    let p = Policy::parse(policy).unwrap();
    let (r, o) = run_des(trace, &p, &pool(), AdmissionChoice::Auto);
    assert_eq!(r.report.errors, 0, "{policy}");
    (o.records, r.report.prefix_hit_rate)
}

fn per_pod(records: &[Record]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.endpoint.clone().unwrap()).or_insert(0) += 1;
    }
    m
}

#[test]
fn round_robin_takes_turns() {
    let t = trace(30.0, 4.0);
    let (records, _) = run("round-robin", &t);
    let counts = per_pod(&records);
    assert_eq!(counts.len(), 4);
    let (min, max) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert!(max - min <= 1, "{counts:?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.endpoint, records[i % 4].endpoint);
    }
}

#[test]
fn cache_aware_baselines_keep_groups_together() {
    // Low load: affinity is never overruled by balance, so every cache-aware policy sends each
    // prompt group to few pods, and hits the cache far more often than round-robin.
    let t = trace(10.0, 8.0);
    let (_, rr) = run("round-robin", &t);
    for policy in ["gie-default", "sglang-cache-aware", "dynamo-cost"] {
        let (records, hit) = run(policy, &t);
        assert!(
            hit > rr + 0.1,
            "{policy}: hit {hit:.3} vs round-robin {rr:.3}"
        );
        let mut pods_per_group: BTreeMap<usize, std::collections::BTreeSet<String>> =
            BTreeMap::new();
        for r in &records {
            pods_per_group
                .entry(r.group)
                .or_default()
                .insert(r.endpoint.clone().unwrap());
        }
        let mean = pods_per_group.values().map(|s| s.len()).sum::<usize>() as f64
            / pods_per_group.len() as f64;
        assert!(mean < 2.0, "{policy}: a group spreads over {mean:.2} pods");
    }
}

#[test]
fn load_balancers_spread_the_load() {
    let t = trace(60.0, 4.0);
    for policy in ["least-requests", "least-kv", "random"] {
        let (records, _) = run(policy, &t);
        let counts = per_pod(&records);
        let n = records.len() as f64;
        for (pod, c) in &counts {
            let share = *c as f64 / n;
            assert!(
                (0.15..0.35).contains(&share),
                "{policy}: {pod} got {share:.2}"
            );
        }
    }
}
