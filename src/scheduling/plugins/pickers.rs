//! The built-in pickers. Randomness comes from the RNG handed in, so a seeded run is repeatable.

use rand::RngExt;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use crate::decode::{Diagnostics, Obj, Params};
use crate::scheduling::plugin::{Picker, SchedulerRng, ScoredEndpoint};

/// Normalises `maxNumOfEndpoints` as GIE does: values ≤ 0 mean 1.
pub fn effective_max_endpoints(requested: i64) -> usize {
    if requested <= 0 {
        1
    } else {
        usize::try_from(requested).unwrap_or(usize::MAX)
    }
}

/// Every picker takes one parameter, `maxNumOfEndpoints` (default 1).
macro_rules! picker_params {
    ($($picker:ident),*) => {$(
        impl Default for $picker {
            fn default() -> Self {
                Self { max_endpoints: 1 }
            }
        }

        impl Params for $picker {
            fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
                let n = o.i64("maxNumOfEndpoints", d).unwrap_or(1);
                Self { max_endpoints: effective_max_endpoints(n) }
            }

            fn render(&self) -> Option<Value> {
                Some(json!({ "maxNumOfEndpoints": self.max_endpoints }))
            }
        }
    )*};
}

picker_params!(MaxScorePicker, RandomPicker, WeightedRandomPicker);

// === impl MaxScorePicker ===

/// The highest scores win; ties are broken uniformly at random.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxScorePicker {
    pub max_endpoints: usize,
}

impl Picker for MaxScorePicker {
    fn type_name(&self) -> &'static str {
        "max-score-picker"
    }

    fn pick(&self, scored: &[ScoredEndpoint], rng: &mut SchedulerRng) -> Vec<ScoredEndpoint> {
        if scored.is_empty() {
            return Vec::new();
        }
        if self.max_endpoints == 1 {
            // One pass with reservoir sampling over the ties: the same distribution as GIE's
            // shuffle-then-stable-sort, without sorting the whole list.
            let mut best = scored[0];
            let mut ties = 1u32;
            for &s in &scored[1..] {
                if s.score > best.score {
                    best = s;
                    ties = 1;
                } else if s.score == best.score {
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = s;
                    }
                }
            }
            return vec![best];
        }
        let mut all = scored.to_vec();
        all.shuffle(rng);
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        all.truncate(self.max_endpoints);
        all
    }
}

// === impl RandomPicker ===

/// Uniformly random endpoints, ignoring scores.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomPicker {
    pub max_endpoints: usize,
}

impl Picker for RandomPicker {
    fn type_name(&self) -> &'static str {
        "random-picker"
    }

    fn pick(&self, scored: &[ScoredEndpoint], rng: &mut SchedulerRng) -> Vec<ScoredEndpoint> {
        if scored.is_empty() {
            return Vec::new();
        }
        if self.max_endpoints == 1 {
            return vec![scored[rng.random_range(0..scored.len())]];
        }
        let mut all = scored.to_vec();
        all.shuffle(rng);
        all.truncate(self.max_endpoints);
        all
    }
}

// === impl WeightedRandomPicker ===

/// Random endpoints with probability proportional to score, by A-Res weighted reservoir sampling
/// (key `U^(1/score)`, top keys win). Falls back to uniform choice when no score is positive.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedRandomPicker {
    pub max_endpoints: usize,
}

impl Picker for WeightedRandomPicker {
    fn type_name(&self) -> &'static str {
        "weighted-random-picker"
    }

    fn pick(&self, scored: &[ScoredEndpoint], rng: &mut SchedulerRng) -> Vec<ScoredEndpoint> {
        if !scored.iter().any(|s| s.score > 0.0) {
            return RandomPicker {
                max_endpoints: self.max_endpoints,
            }
            .pick(scored, rng);
        }
        let mut keyed: Vec<(f64, ScoredEndpoint)> = scored
            .iter()
            .map(|&s| {
                let key = if s.score <= 0.0 {
                    0.0
                } else {
                    let u: f64 = rng.random();
                    let u = if u == 0.0 { 1e-10 } else { u };
                    u.powf(1.0 / s.score)
                };
                (key, s)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        keyed
            .into_iter()
            .take(self.max_endpoints)
            .map(|(_, s)| s)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn se(index: usize, score: f64) -> ScoredEndpoint {
        ScoredEndpoint { index, score }
    }

    fn rng(seed: u64) -> SchedulerRng {
        SchedulerRng::seed_from_u64(seed)
    }

    #[test]
    fn max_endpoints_normalisation() {
        assert_eq!(effective_max_endpoints(0), 1);
        assert_eq!(effective_max_endpoints(-3), 1);
        assert_eq!(effective_max_endpoints(4), 4);
    }

    #[test]
    fn max_score_picks_the_best() {
        let p = MaxScorePicker { max_endpoints: 1 };
        let scored = [se(0, 1.5), se(1, 4.0), se(2, 3.9)];
        for seed in 0..20 {
            assert_eq!(p.pick(&scored, &mut rng(seed)), vec![se(1, 4.0)]);
        }
    }

    #[test]
    fn max_score_breaks_ties_uniformly_and_deterministically() {
        let p = MaxScorePicker { max_endpoints: 1 };
        let scored = [se(0, 2.0), se(1, 5.0), se(2, 5.0), se(3, 5.0)];
        let mut counts = [0u32; 4];
        let mut r = rng(42);
        for _ in 0..3_000 {
            counts[p.pick(&scored, &mut r)[0].index] += 1;
        }
        assert_eq!(counts[0], 0);
        for &c in &counts[1..] {
            assert!(
                (850..1150).contains(&c),
                "tie-break not uniform: {counts:?}"
            );
        }
        // Same seed, same choices.
        let a: Vec<_> = (0..10)
            .map(|s| p.pick(&scored, &mut rng(s))[0].index)
            .collect();
        let b: Vec<_> = (0..10)
            .map(|s| p.pick(&scored, &mut rng(s))[0].index)
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn max_score_top_k_sorted_descending() {
        let p = MaxScorePicker { max_endpoints: 2 };
        let scored = [se(0, 0.1), se(1, 0.9), se(2, 0.5), se(3, 0.7)];
        assert_eq!(p.pick(&scored, &mut rng(1)), vec![se(1, 0.9), se(3, 0.7)]);
        let p = MaxScorePicker { max_endpoints: 10 };
        let got = p.pick(&scored, &mut rng(1));
        assert_eq!(got.len(), 4);
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn random_picker_covers_all_and_returns_k_distinct() {
        let p = RandomPicker { max_endpoints: 1 };
        let scored = [se(0, 9.0), se(1, 0.0), se(2, 0.0)];
        let mut seen = [false; 3];
        let mut r = rng(7);
        for _ in 0..200 {
            seen[p.pick(&scored, &mut r)[0].index] = true;
        }
        assert_eq!(seen, [true; 3]);
        let p = RandomPicker { max_endpoints: 2 };
        let got = p.pick(&scored, &mut rng(3));
        assert_eq!(got.len(), 2);
        assert_ne!(got[0].index, got[1].index);
        assert!(
            RandomPicker { max_endpoints: 1 }
                .pick(&[], &mut rng(0))
                .is_empty()
        );
    }

    #[test]
    fn weighted_random_follows_scores() {
        let p = WeightedRandomPicker { max_endpoints: 1 };
        let scored = [se(0, 3.0), se(1, 1.0), se(2, 0.0)];
        let mut counts = [0u32; 3];
        let mut r = rng(99);
        for _ in 0..4_000 {
            counts[p.pick(&scored, &mut r)[0].index] += 1;
        }
        assert_eq!(
            counts[2], 0,
            "score 0 must never win while another is positive"
        );
        let share = f64::from(counts[0]) / 4_000.0;
        assert!((0.72..0.78).contains(&share), "expected ~75%, got {share}");
    }

    #[test]
    fn weighted_random_all_zero_falls_back_to_uniform() {
        let p = WeightedRandomPicker { max_endpoints: 2 };
        let scored = [se(0, 0.0), se(1, 0.0), se(2, -1.0)];
        let got = p.pick(&scored, &mut rng(5));
        assert_eq!(got.len(), 2);
        assert_ne!(got[0].index, got[1].index);
    }
}
