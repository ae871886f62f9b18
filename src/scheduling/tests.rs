//! Tests of the profile run and the whole cycle (weights, clamping, failures, hooks).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;

use super::plugins::*;
use super::testing::{metrics, snapshot};
use super::*;

/// A scorer that returns fixed values by candidate position.
struct Fixed(Vec<f64>);

impl Scorer for Fixed {
    fn type_name(&self) -> &'static str {
        "fixed"
    }
    fn category(&self) -> ScorerCategory {
        ScorerCategory::Balance
    }
    fn score(&self, _: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        for (o, &i) in out.iter_mut().zip(candidates) {
            *o = self.0[i];
        }
    }
}

fn profile(
    scorers: Vec<(Arc<dyn Scorer>, f64)>,
    filters: Vec<Arc<dyn Filter>>,
) -> SchedulerProfile {
    SchedulerProfile {
        name: "default".into(),
        filters: filters
            .into_iter()
            .map(|f| NamedFilter {
                name: f.type_name().into(),
                filter: f,
            })
            .collect(),
        scorers: scorers
            .into_iter()
            .map(|(s, w)| WeightedScorer {
                name: s.type_name().into(),
                scorer: s,
                weight: w,
            })
            .collect(),
        picker_name: "max-score-picker".into(),
        picker: Arc::new(MaxScorePicker { max_endpoints: 1 }),
    }
}

fn single(p: SchedulerProfile) -> Scheduler {
    Scheduler::new(vec![p], Arc::new(SingleProfileHandler))
}

fn rng() -> SchedulerRng {
    SchedulerRng::seed_from_u64(3)
}

#[test]
fn weights_multiply_clamped_scores_without_normalisation() {
    let snap = snapshot(vec![metrics(0, 0.0); 3]);
    let p = profile(
        vec![
            (Arc::new(Fixed(vec![0.5, 2.0, -1.0])), 2.0),
            (Arc::new(Fixed(vec![1.0, 0.25, 0.5])), 3.0),
        ],
        vec![],
    );
    let req = Request::new("r", "m");
    let state = CycleState::default();
    let ctx = SchedulingContext {
        request: &req,
        snapshot: &snap,
        state: &state,
        now: Timestamp::ZERO,
    };
    let res = p.run(&ctx, &[0, 1, 2], &mut rng()).unwrap();
    // 2·0.5 + 3·1.0 = 4.0; 2·clamp(2.0)=2 + 0.75 = 2.75; 2·clamp(-1)=0 + 1.5 = 1.5
    let totals: Vec<f64> = res.scores.iter().map(|s| s.score).collect();
    assert_eq!(totals, vec![4.0, 2.75, 1.5]);
    assert_eq!(
        res.targets,
        vec![ScoredEndpoint {
            index: 0,
            score: 4.0
        }]
    );
}

#[test]
fn non_finite_score_fails_the_cycle() {
    let snap = snapshot(vec![metrics(0, 0.0); 2]);
    let s = single(profile(
        vec![(Arc::new(Fixed(vec![0.5, f64::NAN])), 1.0)],
        vec![],
    ));
    let req = Request::new("r", "m");
    let err = s
        .decide(&req, &snap, Timestamp::ZERO, &mut rng())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to find target endpoint: failed to run scheduler profile 'default': \
         scorer fixed returned a non-finite score NaN for endpoint ep-1"
    );
    let s = single(profile(
        vec![(Arc::new(Fixed(vec![f64::INFINITY, 0.0])), 1.0)],
        vec![],
    ));
    assert!(s.decide(&req, &snap, Timestamp::ZERO, &mut rng()).is_err());
}

#[test]
fn empty_filter_result_fails_with_gie_message() {
    let snap = snapshot(vec![metrics(0, 0.0); 2]);
    let s = single(profile(vec![], vec![Arc::new(HeaderBasedTestingFilter)]));
    let req = Request::new("r", "m");
    let err = s
        .decide(&req, &snap, Timestamp::ZERO, &mut rng())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to find target endpoint: failed to run scheduler profile 'default': \
         no endpoints available for the given request"
    );
}

#[test]
fn no_candidates_is_its_own_error() {
    let s = single(profile(vec![], vec![]));
    let req = Request::new("r", "m");
    let empty = EndpointSnapshot::default();
    assert_eq!(
        s.decide(&req, &empty, Timestamp::ZERO, &mut rng())
            .unwrap_err(),
        DecisionError::NoCandidates
    );
    let snap = snapshot(vec![metrics(0, 0.0); 2]);
    let mut req = Request::new("r", "m");
    req.subset = Some(vec!["10.0.0.99".parse().unwrap()]);
    assert_eq!(
        s.decide(&req, &snap, Timestamp::ZERO, &mut rng())
            .unwrap_err()
            .to_string(),
        "failed to find endpoint candidates for serving the request"
    );
}

#[test]
fn default_weights_pick_lower_queue_and_kv() {
    // GIE's hermetic case "select lower queue and kv cache".
    let snap = snapshot(vec![metrics(3, 0.2), metrics(0, 0.1), metrics(10, 0.2)]);
    let s = single(profile(
        vec![
            (Arc::new(QueueScorer), 2.0),
            (Arc::new(KvCacheUtilizationScorer), 2.0),
            (Arc::new(PrefixCacheScorer::default()), 3.0),
        ],
        vec![],
    ));
    let req = Request::new("r", "m");
    for seed in 0..10 {
        let d = s
            .decide(
                &req,
                &snap,
                Timestamp::ZERO,
                &mut SchedulerRng::seed_from_u64(seed),
            )
            .unwrap();
        assert_eq!(d.result.primary_name(), "default");
        assert_eq!(d.result.targets()[0].index, 1);
    }
}

#[test]
fn subset_hint_restricts_candidates() {
    let snap = snapshot(vec![metrics(3, 0.2), metrics(0, 0.1), metrics(10, 0.2)]);
    let s = single(profile(vec![(Arc::new(QueueScorer), 1.0)], vec![]));
    let mut req = Request::new("r", "m");
    req.subset = Some(vec!["10.0.0.3".parse().unwrap()]);
    let d = s.decide(&req, &snap, Timestamp::ZERO, &mut rng()).unwrap();
    assert_eq!(d.result.targets()[0].index, 2);
}

struct CountingProducer(AtomicUsize);

impl DataProducer for CountingProducer {
    fn type_name(&self) -> &'static str {
        "counting"
    }
    fn produce(
        &self,
        _: &Request,
        snapshot: &EndpointSnapshot,
        candidates: &[usize],
        _: Timestamp,
        state: &mut CycleState,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
        let mut matched = vec![0; snapshot.len()];
        matched[*candidates.last().unwrap()] = 4;
        state.prefix = Some(PrefixMatchInfo {
            matched_blocks: matched,
            total_blocks: 4,
            block_size_tokens: 16,
            hashes: Vec::new(),
        });
    }
}

#[derive(Default)]
struct RecordingHook(std::sync::Mutex<Vec<String>>);

impl PreRequest for RecordingHook {
    fn type_name(&self) -> &'static str {
        "recording"
    }
    fn pre_request(&self, ctx: &SchedulingContext<'_>, result: &SchedulingResult) {
        let name = ctx
            .snapshot
            .get(result.targets()[0].index)
            .endpoint
            .name
            .clone();
        self.0.lock().unwrap().push(name);
    }
}

impl ResponseComplete for RecordingHook {
    fn type_name(&self) -> &'static str {
        "recording"
    }
    fn response_complete(&self, request: &Request, endpoint_name: &str, usage: Option<Usage>) {
        self.0.lock().unwrap().push(format!(
            "{}@{endpoint_name}:{}",
            request.request_id,
            usage.map_or(0, |u| u.completion_tokens)
        ));
    }
}

#[test]
fn producers_feed_scorers_and_hooks_see_the_pick() {
    let snap = snapshot(vec![metrics(0, 0.0); 3]);
    let producer = Arc::new(CountingProducer(AtomicUsize::new(0)));
    let hook = Arc::new(RecordingHook(Default::default()));
    let s = single(profile(
        vec![(Arc::new(PrefixCacheScorer::default()), 3.0)],
        vec![],
    ))
    .with_producers(vec![producer.clone()])
    .with_pre_request(vec![hook.clone()])
    .with_response_complete(vec![hook.clone()]);
    let req = Request::new("req-1", "m");
    let d = s.decide(&req, &snap, Timestamp::ZERO, &mut rng()).unwrap();
    assert_eq!(producer.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        d.result.targets()[0],
        ScoredEndpoint {
            index: 2,
            score: 3.0
        }
    );
    assert!(d.state.prefix.is_some());
    s.response_complete(
        &req,
        "ep-2",
        Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 7,
            cached_tokens: 0,
        }),
    );
    assert_eq!(
        *hook.0.lock().unwrap(),
        vec!["ep-2".to_string(), "req-1@ep-2:7".into()]
    );
}

#[test]
fn an_observed_run_picks_what_a_plain_one_does_and_records_each_step() {
    // A random picker and an exploring filter: every RNG draw must line up.
    let mut ms = vec![
        metrics(1, 0.2),
        metrics(9, 0.1),
        metrics(2, 0.9),
        metrics(0, 0.3),
    ];
    for m in &mut ms {
        m.updated_at = Some(Timestamp::from_millis(990));
    }
    let snap = snapshot(ms);
    let mut p = profile(
        vec![
            (Arc::new(QueueScorer), 2.0),
            (Arc::new(Fixed(vec![1.5, 0.5, 0.25, -1.0])), 3.0),
        ],
        vec![Arc::new(UtilizationFilter::default())],
    );
    p.picker = Arc::new(WeightedRandomPicker { max_endpoints: 2 });
    let s = single(p);
    let req = Request::new("r", "m");
    let now = Timestamp::from_millis(1_000);
    let all = [0, 1, 2, 3];
    let state = CycleState::default();
    for seed in 0..20 {
        let plain = s
            .schedule(
                &req,
                &snap,
                &all,
                &state,
                now,
                &mut SchedulerRng::seed_from_u64(seed),
            )
            .unwrap();
        let mut trace = Trace::new();
        let observed = s
            .schedule_observed(
                &req,
                &snap,
                &all,
                &state,
                now,
                &mut SchedulerRng::seed_from_u64(seed),
                &mut trace,
            )
            .unwrap();
        assert_eq!(plain, observed, "seed {seed}");
        let t = trace.profile(0).expect("the profile ran");
        assert_eq!(t.name, "default");
        assert_eq!(t.candidates, all);
        assert_eq!(
            t.outcome.as_ref(),
            Some(&Ok(observed.primary_result().clone()))
        );
        // The utilization filter drops ep-1 (queue 9 ≥ 5) and ep-2 (KV 0.9 ≥ 0.8).
        let f = &t.filters[0];
        assert_eq!(f.kept, vec![0, 3]);
        assert!(f.any_passed());
        let (_, c1) = &f.checked[1];
        assert!(!c1.passes);
        assert_eq!(
            c1.detail,
            "queue 9 ≥ 5, KV 0.10 < 0.80, metrics 10ms old ≤ 200ms"
        );
        let (_, c3) = &f.checked[3];
        assert!(c3.passes, "{}", c3.detail);
        // Raw scores as given, contributions clamped and weighted, summing to the totals.
        assert_eq!(t.scorers.len(), 2);
        assert_eq!(t.scorers[1].raw, vec![(0, 1.5), (3, -1.0)]);
        for sc in &observed.primary_result().scores {
            let sum: f64 = t
                .scorers
                .iter()
                .map(|st| {
                    let raw = st.raw.iter().find(|(i, _)| *i == sc.index).unwrap().1;
                    st.contribution(raw)
                })
                .sum();
            assert_eq!(sum, sc.score);
        }
    }
}

#[test]
fn filter_checks_name_the_values_they_judge() {
    let snap = snapshot(vec![metrics(0, 0.0); 3]);
    let mut req = Request::new("r", "m");
    let state = CycleState {
        prefix: Some(PrefixMatchInfo {
            matched_blocks: vec![9, 2, 0],
            total_blocks: 10,
            block_size_tokens: 16,
            hashes: Vec::new(),
        }),
        inflight: Some(vec![
            EndpointLoad {
                requests: 3,
                tokens: 10,
            };
            3
        ]),
    };
    let checks = |req: &Request| {
        let ctx = crate::scheduling::testing::ctx_for(req, &snap, &state);
        let over = ConcurrencyFilter {
            max_concurrency: 2,
            ..Default::default()
        };
        (
            PrefixCacheAffinityFilter::default().check(&ctx, 0),
            PrefixCacheAffinityFilter::default().check(&ctx, 1),
            HeaderBasedTestingFilter.check(&ctx, 1),
            over.check(&ctx, 0),
        )
    };
    let (sticky, not_sticky, no_header, over) = checks(&req);
    assert_eq!(
        sticky,
        FilterCheck::new(true, "prefix match 9/10 = 0.90 ≥ affinityThreshold 0.8")
    );
    assert!(!not_sticky.passes);
    assert_eq!(
        no_header,
        FilterCheck::new(false, "no test-epp-endpoint-selection header")
    );
    assert_eq!(over, FilterCheck::new(false, "3 requests in flight > 2"));
    req.headers
        .push(("test-epp-endpoint-selection".into(), "10.0.0.2".into()));
    let (_, _, listed, _) = checks(&req);
    assert!(listed.passes);
}
