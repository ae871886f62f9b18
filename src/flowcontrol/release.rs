//! What happens around a release, shared by the server's dispatcher and the simulator's
//! discrete-event admission so that both judge saturation and charge tenants the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::controller::{ItemId, Released};
use crate::scheduling::{EndpointSnapshot, SaturationDetector, Timestamp, Usage};

/// Released requests the saturation detector cannot see yet. Each counts as the detector's
/// pending weight until every pod's metrics were refreshed after its release, or (for detectors
/// that count this EPP's own in-flight requests) until it is scheduled, or until its pod sends
/// the first token — so one metrics snapshot cannot release an unbounded burst.
#[derive(Debug, Clone, Default)]
pub struct Transit {
    released_at: BTreeMap<ItemId, Timestamp>,
}

impl Transit {
    pub fn record(&mut self, id: ItemId, now: Timestamp) {
        self.released_at.insert(id, now);
    }

    /// The request became visible (scheduled, answering, or finished); true if it was pending.
    pub fn remove(&mut self, id: ItemId) -> bool {
        self.released_at.remove(&id).is_some()
    }

    pub fn len(&self) -> usize {
        self.released_at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.released_at.is_empty()
    }

    /// The saturation to release against, whole pool (GIE ignores subsets here), and what each
    /// further release adds. Forgets requests every pod has been scraped since.
    pub fn saturation(
        &mut self,
        detector: &dyn SaturationDetector,
        snapshot: &EndpointSnapshot,
        now: Timestamp,
    ) -> (f64, f64) {
        if !detector.visible_when_picked() && !self.released_at.is_empty() {
            let seen = snapshot
                .endpoints()
                .iter()
                .map(|e| e.metrics.updated_at.unwrap_or(Timestamp::ZERO))
                .min()
                .unwrap_or(Timestamp::ZERO);
            self.released_at.retain(|_, at| *at >= seen);
        }
        let all: Vec<usize> = (0..snapshot.len()).collect();
        let per_pending = detector.pending_weight(snapshot, &all);
        let base = detector.saturation(snapshot, &all, now);
        (
            base + self.released_at.len() as f64 * per_pending,
            per_pending,
        )
    }
}

/// What one released request has been charged to its tenant so far. Input is charged at
/// release from an estimate; these corrections bring it to what the engine reported (only the
/// uncached part, when the band says so) and add output tokens as they are reported.
#[derive(Debug, Clone)]
pub struct Charge {
    pub priority: i32,
    pub tenant: Arc<str>,
    uncached_only: bool,
    input: f64,
    output: u64,
    /// Share of the prompt the picked endpoint had cached, per the prefix index.
    prefix_hit: Option<f64>,
}

impl Charge {
    pub fn new(r: &Released, uncached_only: bool) -> Self {
        Self {
            priority: r.priority,
            tenant: r.fairness_id.clone(),
            uncached_only,
            input: r.charged_input_tokens as f64,
            output: 0,
            prefix_hit: None,
        }
    }

    fn correct_input(&mut self, target: f64) -> f64 {
        let delta = target - self.input;
        self.input = target;
        delta
    }

    /// The request was scheduled; returns the input correction to charge.
    pub fn picked(&mut self, prefix_hit: Option<f64>) -> f64 {
        self.prefix_hit = prefix_hit;
        match prefix_hit {
            Some(hit) if self.uncached_only => {
                let target = self.input * (1.0 - hit.clamp(0.0, 1.0));
                self.correct_input(target)
            }
            _ => 0.0,
        }
    }

    /// Usage as the response reports it (cumulative, possibly partial while streaming); returns
    /// the input correction and the output tokens not charged yet.
    pub fn usage(&mut self, u: Usage) -> (f64, u64) {
        let mut input_delta = 0.0;
        if u.prompt_tokens > 0 {
            let target = if !self.uncached_only {
                u.prompt_tokens as f64
            } else if u.cached_tokens > 0 {
                u.prompt_tokens.saturating_sub(u.cached_tokens) as f64
            } else {
                u.prompt_tokens as f64 * (1.0 - self.prefix_hit.unwrap_or(0.0).clamp(0.0, 1.0))
            };
            input_delta = self.correct_input(target);
        }
        let new_output = u.completion_tokens.saturating_sub(self.output);
        self.output = self.output.max(u.completion_tokens);
        (input_delta, new_output)
    }
}
