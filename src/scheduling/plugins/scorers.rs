//! The built-in scorers, with GIE's formulas (gie-epp.md §2.4). Each writes one score per
//! candidate into `out`; the profile clamps and weighs them.

use serde_json::{Value, json};

use crate::decode::{Diagnostics, Obj, Params};
use crate::prefix::producer::{PREFIX_PRODUCER_KEYS, PrefixProducerParams};
use crate::scheduling::plugin::{SchedulingContext, Scorer, ScorerCategory};

/// Min-max scaling where lower is better: `(max − v) / (max − min)`, and 1.0 for everyone when all
/// values are equal (including a single candidate).
fn min_max_lower_is_better(values: impl Iterator<Item = u64> + Clone, out: &mut [f64]) {
    let (mut min, mut max) = (u64::MAX, 0u64);
    for v in values.clone() {
        min = min.min(v);
        max = max.max(v);
    }
    if max <= min {
        out.fill(1.0);
        return;
    }
    let range = (max - min) as f64;
    for (o, v) in out.iter_mut().zip(values) {
        *o = (max - v) as f64 / range;
    }
}

// === impl QueueScorer ===

/// Prefers endpoints with fewer waiting requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueScorer;

impl Params for QueueScorer {}

impl Scorer for QueueScorer {
    fn type_name(&self) -> &'static str {
        "queue-scorer"
    }
    fn category(&self) -> ScorerCategory {
        ScorerCategory::Distribution
    }
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        let snap = ctx.snapshot;
        let q = candidates
            .iter()
            .map(|&i| snap.get(i).metrics.waiting_queue_size);
        min_max_lower_is_better(q, out);
    }
}

// === impl RunningRequestsSizeScorer ===

/// Prefers endpoints with fewer requests in the running batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunningRequestsSizeScorer;

impl Params for RunningRequestsSizeScorer {}

impl Scorer for RunningRequestsSizeScorer {
    fn type_name(&self) -> &'static str {
        "running-requests-size-scorer"
    }
    fn category(&self) -> ScorerCategory {
        ScorerCategory::Distribution
    }
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        let snap = ctx.snapshot;
        let r = candidates
            .iter()
            .map(|&i| snap.get(i).metrics.running_requests_size);
        min_max_lower_is_better(r, out);
    }
}

// === impl KvCacheUtilizationScorer ===

/// Prefers endpoints with free KV cache: `1 − usage`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvCacheUtilizationScorer;

impl Params for KvCacheUtilizationScorer {}

impl Scorer for KvCacheUtilizationScorer {
    fn type_name(&self) -> &'static str {
        "kv-cache-utilization-scorer"
    }
    fn category(&self) -> ScorerCategory {
        ScorerCategory::Distribution
    }
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        for (o, &i) in out.iter_mut().zip(candidates) {
            *o = 1.0 - ctx.snapshot.get(i).metrics.kv_cache_usage;
        }
    }
}

// === impl LoraAffinityScorer ===

/// Prefers endpoints that already run the request's LoRA adapter, then those with a free adapter
/// slot, then those where the adapter is queued to load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraAffinityScorer;

impl Params for LoraAffinityScorer {}

impl Scorer for LoraAffinityScorer {
    fn type_name(&self) -> &'static str {
        "lora-affinity-scorer"
    }
    fn category(&self) -> ScorerCategory {
        ScorerCategory::Affinity
    }
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        let model = ctx.request.target_model.as_str();
        for (o, &i) in out.iter_mut().zip(candidates) {
            let m = &ctx.snapshot.get(i).metrics;
            *o = if m.active_models.contains(model) {
                1.0
            } else if m.active_models.len() + m.waiting_models.len() < m.max_active_models {
                0.8
            } else if m.waiting_models.contains(model) {
                0.6
            } else {
                0.0
            };
        }
    }
}

// === impl PrefixCacheScorer ===

/// Prefers endpoints that already cache more of the request's prefix: `matched / total` blocks,
/// from the prefix producer's per-request state; 0 when there is none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixCacheScorer {
    /// Producer parameters given on the scorer, as GIE releases before the producer existed
    /// took them; the config layer applies them to the producer it creates for this scorer.
    pub legacy_producer_params: Option<PrefixProducerParams>,
}

impl Params for PrefixCacheScorer {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        if !PREFIX_PRODUCER_KEYS.iter().any(|k| o.has(k)) {
            return Self::default();
        }
        d.warn(format!(
            "{}: prefix-cache-scorer takes no parameters any more; they belong to \
             approx-prefix-cache-producer and are applied to the producer created for this scorer",
            o.path
        ));
        Self {
            legacy_producer_params: Some(PrefixProducerParams::decode(o, d)),
        }
    }
}

impl Scorer for PrefixCacheScorer {
    fn type_name(&self) -> &'static str {
        "prefix-cache-scorer"
    }
    fn category(&self) -> ScorerCategory {
        ScorerCategory::Affinity
    }
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        for (o, &i) in out.iter_mut().zip(candidates) {
            *o = match ctx.state.prefix_match(i) {
                Some((matched, total)) if total > 0 => f64::from(matched) / f64::from(total),
                _ => 0.0,
            };
        }
    }
}

// === impl TokenLoadScorer ===

/// Prefers endpoints with fewer estimated tokens in flight: `1 − min(tokens, T) / T`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLoadScorer {
    pub queue_threshold_tokens: u64,
}

impl TokenLoadScorer {
    /// GIE's default threshold: 128 requests × 32K tokens.
    pub const DEFAULT_THRESHOLD: u64 = 4_194_304;
}

impl Default for TokenLoadScorer {
    fn default() -> Self {
        Self {
            queue_threshold_tokens: Self::DEFAULT_THRESHOLD,
        }
    }
}

impl Params for TokenLoadScorer {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(t) = o.positive_u64("queueThresholdTokens", d) {
            p.queue_threshold_tokens = t;
        }
        p
    }

    fn render(&self) -> Option<Value> {
        Some(json!({ "queueThresholdTokens": self.queue_threshold_tokens }))
    }
}

impl Scorer for TokenLoadScorer {
    fn type_name(&self) -> &'static str {
        "token-load-scorer"
    }
    fn category(&self) -> ScorerCategory {
        ScorerCategory::Distribution
    }
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        let t = self.queue_threshold_tokens.max(1);
        for (o, &i) in out.iter_mut().zip(candidates) {
            let tokens = ctx.state.inflight_load(i).tokens;
            *o = 1.0 - tokens.min(t) as f64 / t as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::testing::{ctx_for, metrics, snapshot};
    use crate::scheduling::{CycleState, EndpointLoad, PrefixMatchInfo, Request};

    fn run(
        scorer: &dyn Scorer,
        req: &Request,
        state: &CycleState,
        ms: Vec<crate::scheduling::EndpointMetrics>,
    ) -> Vec<f64> {
        let snap = snapshot(ms);
        let cands: Vec<usize> = (0..snap.len()).collect();
        let mut out = vec![f64::NAN; cands.len()];
        scorer.score(&ctx_for(req, &snap, state), &cands, &mut out);
        out
    }

    #[test]
    fn queue_min_max() {
        let r = Request::new("r", "m");
        let out = run(
            &QueueScorer,
            &r,
            &CycleState::default(),
            vec![metrics(3, 0.2), metrics(0, 0.1), metrics(10, 0.2)],
        );
        assert_eq!(out, vec![0.7, 1.0, 0.0]);
    }

    #[test]
    fn queue_all_equal_scores_one() {
        let r = Request::new("r", "m");
        let out = run(
            &QueueScorer,
            &r,
            &CycleState::default(),
            vec![metrics(4, 0.0), metrics(4, 0.9)],
        );
        assert_eq!(out, vec![1.0, 1.0]);
        let single = run(
            &QueueScorer,
            &r,
            &CycleState::default(),
            vec![metrics(7, 0.0)],
        );
        assert_eq!(single, vec![1.0]);
    }

    #[test]
    fn running_min_max_and_ties() {
        let r = Request::new("r", "m");
        let mut ms = vec![metrics(0, 0.0), metrics(0, 0.0), metrics(0, 0.0)];
        ms[0].running_requests_size = 8;
        ms[1].running_requests_size = 4;
        ms[2].running_requests_size = 4;
        let out = run(&RunningRequestsSizeScorer, &r, &CycleState::default(), ms);
        assert_eq!(out, vec![0.0, 1.0, 1.0]);
    }

    #[test]
    fn kv_is_one_minus_usage() {
        let r = Request::new("r", "m");
        let out = run(
            &KvCacheUtilizationScorer,
            &r,
            &CycleState::default(),
            vec![metrics(0, 0.25), metrics(0, 0.0), metrics(0, 1.0)],
        );
        assert_eq!(out, vec![0.75, 1.0, 0.0]);
    }

    #[test]
    fn lora_rules_in_order() {
        let r = Request::new("r", "sql-lora");
        let mut active = metrics(0, 0.0);
        active.active_models.insert("sql-lora".into());
        active.max_active_models = 1; // full, but the adapter is active: still 1.0
        let mut free_slot = metrics(0, 0.0);
        free_slot.active_models.insert("other".into());
        free_slot.max_active_models = 2;
        let mut waiting = metrics(0, 0.0);
        waiting.active_models.insert("other".into());
        waiting.waiting_models.insert("sql-lora".into());
        waiting.max_active_models = 2;
        let mut full = metrics(0, 0.0);
        full.active_models.insert("a".into());
        full.active_models.insert("b".into());
        full.max_active_models = 2;
        let unknown_max = metrics(0, 0.0); // max 0: no free slot
        let out = run(
            &LoraAffinityScorer,
            &r,
            &CycleState::default(),
            vec![active, free_slot, waiting, full, unknown_max],
        );
        assert_eq!(out, vec![1.0, 0.8, 0.6, 0.0, 0.0]);
    }

    #[test]
    fn prefix_reads_match_info_and_defaults_to_zero() {
        let r = Request::new("r", "m");
        let ms = vec![metrics(0, 0.0), metrics(0, 0.0), metrics(0, 0.0)];
        assert_eq!(
            run(
                &PrefixCacheScorer::default(),
                &r,
                &CycleState::default(),
                ms.clone()
            ),
            vec![0.0; 3]
        );
        let state = CycleState {
            prefix: Some(PrefixMatchInfo {
                matched_blocks: vec![4, 1, 0],
                total_blocks: 4,
                block_size_tokens: 16,
                hashes: Vec::new(),
            }),
            inflight: None,
        };
        assert_eq!(
            run(&PrefixCacheScorer::default(), &r, &state, ms.clone()),
            vec![1.0, 0.25, 0.0]
        );
        let zero_total = CycleState {
            prefix: Some(PrefixMatchInfo {
                matched_blocks: vec![0, 0, 0],
                total_blocks: 0,
                block_size_tokens: 16,
                hashes: Vec::new(),
            }),
            inflight: None,
        };
        assert_eq!(
            run(&PrefixCacheScorer::default(), &r, &zero_total, ms),
            vec![0.0; 3]
        );
    }

    #[test]
    fn token_load_formula() {
        let r = Request::new("r", "m");
        let state = CycleState {
            prefix: None,
            inflight: Some(vec![
                EndpointLoad {
                    requests: 0,
                    tokens: 0,
                },
                EndpointLoad {
                    requests: 1,
                    tokens: 250,
                },
                EndpointLoad {
                    requests: 9,
                    tokens: 5_000,
                },
            ]),
        };
        let s = TokenLoadScorer {
            queue_threshold_tokens: 1_000,
        };
        let out = run(
            &s,
            &r,
            &state,
            vec![metrics(0, 0.0), metrics(0, 0.0), metrics(0, 0.0)],
        );
        assert_eq!(out, vec![1.0, 0.75, 0.0]);
        // No producer ran: no load, every endpoint scores 1.
        let out = run(
            &TokenLoadScorer::default(),
            &r,
            &CycleState::default(),
            vec![metrics(0, 0.0)],
        );
        assert_eq!(out, vec![1.0]);
    }
}
