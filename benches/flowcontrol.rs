//! Flow control's pure controller, the part every queued request passes through.
//!
//! - `flowcontrol/enqueue+dispatch/<policy>/<tenants>`: with `tenants` tenants backlogged (8
//!   requests each), one request is enqueued and one dispatched — the steady state of a saturated
//!   pool, where each release makes room for one arrival.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchyard::flowcontrol::VtcParams;
use switchyard::flowcontrol::{
    BandConfig, ControllerConfig, Fairness, FlowController, NewItem, Ordering,
};
use switchyard::scheduling::Timestamp;

fn item(tenant: &str) -> NewItem {
    NewItem {
        fairness_id: tenant.to_string(),
        priority: 0,
        bytes: 4000,
        input_tokens: 1000,
        ttl: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("flowcontrol/enqueue+dispatch");
    for (name, fairness) in [
        ("global-strict", Fairness::GlobalStrict),
        ("round-robin", Fairness::RoundRobin),
        ("vtc", Fairness::Vtc(VtcParams::default())),
    ] {
        for tenants in [1usize, 100, 1000] {
            let mut ctl = FlowController::new(ControllerConfig {
                default_band: BandConfig {
                    max_bytes: 0,
                    max_requests: 0,
                    ordering: Ordering::Fcfs,
                    fairness: fairness.clone(),
                },
                ..Default::default()
            });
            let names: Vec<String> = (0..tenants).map(|t| format!("tenant-{t}")).collect();
            let mut now = 0u64;
            for _ in 0..8 {
                for n in &names {
                    now += 1;
                    ctl.enqueue(item(n), Timestamp::from_nanos(now)).unwrap();
                }
            }
            let mut i = 0usize;
            g.bench_with_input(BenchmarkId::new(name, tenants), &tenants, |b, _| {
                b.iter(|| {
                    now += 1;
                    i = (i + 1) % names.len();
                    ctl.enqueue(item(&names[i]), Timestamp::from_nanos(now))
                        .unwrap();
                    black_box(ctl.dispatch(0.5).unwrap());
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
