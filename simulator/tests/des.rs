//! The discrete-event mode: determinism, scraping (staleness, the extraction path, the shortcut),
//! admission, and request bookkeeping.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use switchyard::scheduling::{SaturationDetector, SchedulerRng};
use switchyard_sim::baselines::Policy;
use switchyard_sim::des::pods::Scraping;
use switchyard_sim::des::router::{Completion, PoolView, RouteError, RouteRequest, Routed, Router};
use switchyard_sim::des::{self, DesOptions, Epp};
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::evaluate::{self, AdmissionChoice, WorkloadSpec, compare_des};
use switchyard_sim::exposition::Personality;
use switchyard_sim::trace::Trace;

fn small_pool(pods: usize) -> DesOptions {
    let mut engine = EngineConfig::h100_llama3_8b();
    engine.num_gpu_blocks = 2000;
    DesOptions {
        pods,
        engine,
        seed: 11,
        ..DesOptions::default()
    }
}

fn synthetic(rate: f64, seconds: f64, seed: u64) -> Trace {
    WorkloadSpec {
        rate,
        duration_s: seconds,
        ..WorkloadSpec::default()
    }
    .trace(seed)
    .unwrap()
}

fn policies(names: &[&str]) -> Vec<Policy> {
    names.iter().map(|n| Policy::parse(n).unwrap()).collect()
}

const ALL: &[&str] = &[
    "gie-default",
    "round-robin",
    "random",
    "least-queue",
    "least-kv",
    "least-requests",
    "sglang-cache-aware",
    "dynamo-cost",
];

#[test]
fn same_seed_same_json_other_seed_other_json() {
    let trace = synthetic(40.0, 4.0, 3);
    let ps = policies(ALL);
    let run = |seed| {
        let opts = DesOptions {
            seed,
            ..small_pool(3)
        };
        compare_des(&trace, &ps, &opts, AdmissionChoice::Auto, |_, _, _| {}).to_json()
    };
    let a = run(5);
    assert_eq!(a, run(5), "same seed, same bytes");
    assert_ne!(
        a,
        run(6),
        "the seed reaches the scheduler's tie-breaks and scrape phases"
    );
    // Every policy served every request.
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    for p in v["policies"].as_array().unwrap() {
        assert_eq!(p["requests"], trace.requests.len(), "{}", p["policy"]);
        assert_eq!(p["errors"], 0, "{}", p["policy"]);
    }
}

#[test]
fn skipping_unchanged_pages_changes_nothing() {
    // Busy and idle spells, so both paths of a scrape are taken.
    let trace = synthetic(8.0, 6.0, 8);
    let ps = policies(&["gie-default", "least-kv", "least-queue"]);
    let run = |scraping| {
        let opts = DesOptions {
            scraping,
            ..small_pool(3)
        };
        let mut pages = Vec::new();
        let json = compare_des(&trace, &ps, &opts, AdmissionChoice::Auto, |_, o, _| {
            assert!(o.counts.pages <= o.counts.scrapes);
            pages.push((o.counts.pages, o.counts.scrapes));
        })
        .to_json();
        (json, pages)
    };
    let (incremental, skipped) = run(Scraping::Incremental);
    let (exact, all) = run(Scraping::Exact);
    assert_eq!(incremental, exact);
    for ((p, s), (pe, se)) in skipped.iter().zip(&all) {
        assert_eq!(s, se);
        assert_eq!(pe, se, "exact renders every page");
        assert!(
            p * 4 < s * 3,
            "the shortcut is taken: {p} pages for {s} scrapes"
        );
    }
}

/// Wraps a router and records what it saw at each decision.
struct Recorder {
    inner: Box<dyn Router>,
    seen: Rc<RefCell<Vec<Seen>>>,
    saturation: std::sync::Arc<dyn SaturationDetector>,
}

#[derive(Debug, Clone)]
struct Seen {
    id: usize,
    now: Duration,
    max_age: Option<Duration>,
    kv: f64,
    num_blocks: u64,
    block_size: u32,
    saturation: f64,
}

impl Router for Recorder {
    fn route(
        &mut self,
        req: &RouteRequest<'_>,
        pool: &PoolView<'_>,
        rng: &mut SchedulerRng,
    ) -> Result<Routed, RouteError> {
        let eps = pool.snapshot.endpoints();
        let ages: Vec<Option<Duration>> = eps.iter().map(|e| e.metrics.age(pool.now)).collect();
        let all: Vec<usize> = (0..eps.len()).collect();
        self.seen.borrow_mut().push(Seen {
            id: req.id,
            now: Duration::from_nanos(pool.now.as_nanos()),
            max_age: ages
                .iter()
                .copied()
                .collect::<Option<Vec<_>>>()
                .map(|a| a.into_iter().max().unwrap_or_default()),
            kv: eps
                .iter()
                .map(|e| e.metrics.kv_cache_usage)
                .fold(0.0, f64::max),
            num_blocks: eps[0].metrics.cache_num_blocks,
            block_size: eps[0].metrics.cache_block_size,
            saturation: self.saturation.saturation(pool.snapshot, &all, pool.now),
        });
        self.inner.route(req, pool, rng)
    }

    fn first_token(&mut self, id: usize) {
        self.inner.first_token(id);
    }

    fn complete(&mut self, done: &Completion<'_>) {
        self.inner.complete(done);
    }
}

fn recorded_run(
    trace: &Trace,
    policy: &str,
    opts: &DesOptions,
    admission: AdmissionChoice,
) -> (Vec<Seen>, des::DesOutcome) {
    let policy = Policy::parse(policy).unwrap();
    let parts = policy.epp();
    let saturation = parts.saturation.clone();
    let engines = parts.engines;
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut router = Recorder {
        inner: parts.router,
        seen: seen.clone(),
        saturation: saturation.clone(),
    };
    let mut adm = admission.make(parts.flow_control, saturation.visible_when_picked());
    let outcome = des::simulate(
        trace,
        Epp {
            router: &mut router,
            admission: &mut adm,
            saturation: saturation.as_ref(),
            engines: engines.as_ref(),
        },
        opts,
    );
    let seen = seen.borrow().clone();
    (seen, outcome)
}

#[test]
fn the_router_sees_scraped_metrics_no_older_than_the_interval() {
    let trace = synthetic(50.0, 3.0, 1);
    for interval_ms in [50u64, 700] {
        let opts = DesOptions {
            scrape_interval: Duration::from_millis(interval_ms),
            ..small_pool(2)
        };
        let (seen, _) = recorded_run(&trace, "gie-default", &opts, AdmissionChoice::PassThrough);
        let interval = Duration::from_millis(interval_ms);
        let late: Vec<&Seen> = seen.iter().filter(|s| s.now > interval).collect();
        assert!(!late.is_empty());
        let oldest = late.iter().filter_map(|s| s.max_age).max().unwrap();
        assert!(
            late.iter().all(|s| s.max_age.is_some()),
            "every pod scraped"
        );
        assert!(oldest <= interval, "{interval_ms} ms: oldest {oldest:?}");
        assert!(
            oldest > interval / 2,
            "{interval_ms} ms: metrics age between scrapes ({oldest:?})"
        );
        // The values come from the page: the KV cache and its geometry.
        assert!(late.iter().any(|s| s.kv > 0.0));
        assert!(
            late.iter()
                .all(|s| s.num_blocks == 2000 && s.block_size == 16)
        );
    }
}

#[test]
fn every_personality_is_read_through_its_mapping() {
    let trace = synthetic(30.0, 2.0, 2);
    for p in ["sglang", "trtllm-serve", "triton-tensorrt-llm"] {
        let opts = DesOptions {
            personality: Personality::by_name(p).unwrap(),
            ..small_pool(2)
        };
        let (seen, outcome) =
            recorded_run(&trace, "gie-default", &opts, AdmissionChoice::PassThrough);
        assert!(outcome.records.iter().all(|r| r.status == 200), "{p}");
        let late: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.now > Duration::from_millis(100))
            .collect();
        assert!(late.iter().all(|s| s.max_age.is_some()), "{p}: scraped");
        assert!(late.iter().any(|s| s.kv > 0.0), "{p}: KV usage read");
    }
}

#[test]
fn fcfs_admission_holds_requests_while_saturated_and_keeps_their_order() {
    // One A10G pod and twice the load it can serve.
    let mut trace = WorkloadSpec {
        workload: "vtc:overload".into(),
        ..WorkloadSpec::default()
    }
    .trace(1)
    .unwrap();
    trace.truncate(150);
    let opts = DesOptions {
        pods: 1,
        engine: EngineConfig::a10g_llama_7b(),
        ..DesOptions::default()
    };
    let (seen, outcome) = recorded_run(&trace, "gie-default", &opts, AdmissionChoice::Fcfs);
    assert!(outcome.counts.max_queued > 10, "{:?}", outcome.counts);
    let ids: Vec<usize> = seen.iter().map(|s| s.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "dispatched in arrival order");
    assert_eq!(ids.len(), trace.requests.len());
    assert!(
        seen.iter().all(|s| s.saturation < 1.0),
        "nothing dispatched into a saturated pool"
    );
    assert!(outcome.records.iter().all(|r| r.status == 200));

    let (seen, outcome) = recorded_run(&trace, "gie-default", &opts, AdmissionChoice::PassThrough);
    assert!(outcome.counts.max_queued <= 1);
    assert!(
        seen.iter().any(|s| s.saturation >= 1.0),
        "without flow control requests go into a saturated pool"
    );
}

#[test]
fn records_are_consistent_with_the_engines() {
    let trace = synthetic(40.0, 3.0, 4);
    let opts = small_pool(3);
    let policy = Policy::parse("gie-default").unwrap();
    let (result, outcome) = evaluate::run_des(&trace, &policy, &opts, AdmissionChoice::Auto);
    assert_eq!(outcome.records.len(), trace.requests.len());
    let mut cached = 0;
    for (r, t) in outcome.records.iter().zip(&trace.requests) {
        assert_eq!(r.status, 200);
        assert_eq!(r.tenant, t.tenant);
        assert_eq!(r.prompt_tokens, u64::from(t.prompt_tokens));
        assert_eq!(r.output_tokens, u64::from(t.output_tokens));
        let ttft = r.ttft_ms.unwrap();
        // At least the API server's overhead, and no later than the end.
        assert!(ttft >= 3.0 && ttft <= r.e2e_ms, "{r:?}");
        cached += r.cached_tokens;
    }
    let hits: u64 = outcome
        .engine_stats
        .iter()
        .map(|s| s.prefix_cache_hits_tokens)
        .sum();
    assert_eq!(cached, hits, "usage reports what the engines counted");
    let done: u64 = outcome
        .engine_stats
        .iter()
        .map(|s| s.request_success.iter().sum::<u64>())
        .sum();
    assert_eq!(done as usize, trace.requests.len());
    let r = &result.report;
    assert!(r.prefix_hit_rate <= r.ideal_prefix_hit_rate.unwrap() + 1e-9);
    assert_eq!(r.tenants.len(), 4);
}

#[test]
fn requests_the_engine_cannot_hold_fail_with_400() {
    let trace = Trace {
        name: "t".into(),
        requests: vec![switchyard_sim::trace::TraceRequest {
            arrival: Duration::from_millis(1),
            tenant: "a".into(),
            group: 0,
            prompt_tokens: 20_000,
            output_tokens: 10,
            prompt: switchyard_sim::trace::PromptSource::Unique { seed: 1 },
        }],
        duration: None,
    };
    let opts = DesOptions {
        pods: 1,
        engine: EngineConfig::a10g_llama_7b(),
        ..DesOptions::default()
    };
    let policy = Policy::parse("round-robin").unwrap();
    let (_, outcome) = evaluate::run_des(&trace, &policy, &opts, AdmissionChoice::Auto);
    let r = &outcome.records[0];
    assert_eq!(r.status, 400);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("maximum context length")
    );
}

#[test]
fn flow_control_ttl_evicts_with_503_and_every_request_ends() {
    let dir = std::env::temp_dir().join(format!("sy-des-ttl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("ttl.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
flowControl:
  defaultRequestTTL: 2s
  maxRequests: 40
",
    )
    .unwrap();
    let policy = Policy::parse(cfg.to_str().unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut trace = WorkloadSpec {
        workload: "vtc:overload".into(),
        ..WorkloadSpec::default()
    }
    .trace(2)
    .unwrap();
    trace.truncate(200);
    let opts = DesOptions {
        pods: 1,
        engine: EngineConfig::a10g_llama_7b(),
        ..DesOptions::default()
    };
    let (r, outcome) = evaluate::run_des(&trace, &policy, &opts, AdmissionChoice::Auto);
    assert_eq!(r.admission, "flow-control");
    let count = |status: u16| {
        outcome
            .records
            .iter()
            .filter(|r| r.status == status)
            .count()
    };
    assert!(count(503) > 0, "some waited longer than the TTL");
    assert!(count(200) > 0);
    assert_eq!(count(200) + count(503) + count(429), trace.requests.len());
    for rec in outcome.records.iter().filter(|r| r.status == 503) {
        assert!(rec.error.as_deref().unwrap().contains("timed out in queue"));
        assert!(
            (2000.0..2100.0).contains(&rec.e2e_ms),
            "evicted at the TTL: {rec:?}"
        );
    }
    assert!(outcome.counts.max_queued <= 40);
}

#[test]
fn vtc_charges_output_when_usage_is_reported() {
    let mut trace = WorkloadSpec {
        workload: "vtc:overload".into(),
        ..WorkloadSpec::default()
    }
    .trace(3)
    .unwrap();
    trace.cut_at(Duration::from_secs(120));
    let policy = Policy::parse("gie-default").unwrap();
    let run = |usage| {
        let opts = DesOptions {
            pods: 1,
            engine: EngineConfig::a10g_llama_7b(),
            usage,
            ..DesOptions::default()
        };
        let (r, _) = evaluate::run_des(&trace, &policy, &opts, AdmissionChoice::Vtc);
        assert_eq!(r.report.errors, 0);
        r.report
    };
    let per_token = run(des::UsageReports::PerToken);
    let fin = run(des::UsageReports::Final);
    // Charged as tokens stream, the heavier client's counter grows while its requests run, so
    // VTC evens service out sooner than when output is charged only at the end.
    assert_ne!(per_token.fairness, fin.fairness);
    assert!(per_token.fairness.avg_diff <= fin.fairness.avg_diff * 1.05);
}
