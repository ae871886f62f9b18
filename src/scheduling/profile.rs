//! One scheduling profile: filters in order, weighted scorers summed, then the picker.

use std::sync::Arc;

use super::error::SchedulingError;
use super::plugin::{
    Filter, Picker, ProfileResult, SchedulerRng, SchedulingContext, ScoredEndpoint, Scorer,
};
use super::trace::{NoTrace, ProfileObserver};

/// A scorer with its weight in one profile. The same scorer instance may sit in several profiles
/// with different weights.
#[derive(Clone)]
pub struct WeightedScorer {
    pub name: String,
    pub scorer: Arc<dyn Scorer>,
    pub weight: f64,
}

impl WeightedScorer {
    /// What a raw score adds to the total: `weight × clamp(score, 0, 1)`.
    #[inline]
    pub fn contribution_of(weight: f64, raw: f64) -> f64 {
        weight * raw.clamp(0.0, 1.0)
    }
}

#[derive(Clone)]
pub struct NamedFilter {
    pub name: String,
    pub filter: Arc<dyn Filter>,
}

#[derive(Clone)]
pub struct SchedulerProfile {
    pub name: String,
    pub filters: Vec<NamedFilter>,
    pub scorers: Vec<WeightedScorer>,
    pub picker_name: String,
    pub picker: Arc<dyn Picker>,
}

impl SchedulerProfile {
    /// Runs the profile on `candidates` (indices into the snapshot).
    ///
    /// Total score is `Σ weight × clamp(score, 0, 1)` with no normalisation by the weights, exactly
    /// as GIE, so weights tuned for the Go EPP mean the same here.
    pub fn run(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &[usize],
        rng: &mut SchedulerRng,
    ) -> Result<ProfileResult, SchedulingError> {
        self.run_observed(ctx, candidates, rng, &mut NoTrace)
    }

    /// [`Self::run`], telling `obs` what each filter kept and each scorer gave. The observer
    /// draws nothing from `rng`, so an observed run picks what an unobserved one would.
    pub fn run_observed(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &[usize],
        rng: &mut SchedulerRng,
        obs: &mut impl ProfileObserver,
    ) -> Result<ProfileResult, SchedulingError> {
        let mut kept = candidates.to_vec();
        for f in &self.filters {
            obs.filter_started(f, &kept);
            f.filter.filter(ctx, &mut kept, rng);
            obs.filter_done(ctx, f, &kept);
            if kept.is_empty() {
                return Err(SchedulingError::NoEndpointsAvailable);
            }
        }
        if kept.is_empty() {
            return Err(SchedulingError::NoEndpointsAvailable);
        }

        let mut totals = vec![0.0f64; kept.len()];
        let mut raw = vec![0.0f64; kept.len()];
        for ws in &self.scorers {
            raw.fill(0.0);
            ws.scorer.score(ctx, &kept, &mut raw);
            obs.scored(ws, &kept, &raw);
            for (i, (&s, total)) in raw.iter().zip(totals.iter_mut()).enumerate() {
                if !s.is_finite() {
                    return Err(SchedulingError::NonFiniteScore {
                        scorer: ws.name.clone(),
                        endpoint: ctx.snapshot.get(kept[i]).endpoint.name.clone(),
                        value: s,
                    });
                }
                *total += WeightedScorer::contribution_of(ws.weight, s);
            }
        }

        let scores: Vec<ScoredEndpoint> = kept
            .iter()
            .zip(&totals)
            .map(|(&index, &score)| ScoredEndpoint { index, score })
            .collect();
        let targets = self.picker.pick(&scores, rng);
        Ok(ProfileResult { targets, scores })
    }
}
