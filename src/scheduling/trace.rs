//! Watching a scheduling cycle from the inside, for the admin API's `Explain`: what each filter
//! kept and why, and what each scorer gave every candidate. The request path runs the same
//! profile code with [`NoTrace`], whose empty hooks compile away, so tracing costs it nothing.

use super::error::SchedulingError;
use super::plugin::{FilterCheck, ProfileResult, SchedulingContext};
use super::profile::{NamedFilter, SchedulerProfile, WeightedScorer};

/// Hooks a profile run calls as it goes. Every method has an empty default.
pub trait ProfileObserver {
    /// Profile `index` of the scheduler is about to run on `candidates`.
    fn profile_started(
        &mut self,
        _index: usize,
        _profile: &SchedulerProfile,
        _candidates: &[usize],
    ) {
    }
    /// The profile finished with `outcome`.
    fn profile_done(&mut self, _outcome: &Result<ProfileResult, SchedulingError>) {}
    /// A filter is about to narrow `candidates`.
    fn filter_started(&mut self, _filter: &NamedFilter, _candidates: &[usize]) {}
    /// The filter left `kept`.
    fn filter_done(
        &mut self,
        _ctx: &SchedulingContext<'_>,
        _filter: &NamedFilter,
        _kept: &[usize],
    ) {
    }
    /// A scorer gave `raw[i]` to `candidates[i]` (before clamping and weighting).
    fn scored(&mut self, _scorer: &WeightedScorer, _candidates: &[usize], _raw: &[f64]) {}
}

/// The request path's observer: sees nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTrace;

impl ProfileObserver for NoTrace {}

/// One filter's step: the candidates before it, what it kept, and its check of each candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterStep {
    pub name: String,
    pub type_name: &'static str,
    /// Candidates (snapshot indices) the filter was given, each with the filter's check.
    pub checked: Vec<(usize, FilterCheck)>,
    pub kept: Vec<usize>,
}

impl FilterStep {
    /// Whether the filter kept the endpoint at `index` (it must have been given it).
    pub fn keeps(&self, index: usize) -> bool {
        self.kept.contains(&index)
    }

    /// Whether any candidate passed the filter's test; when none did, a fail-open filter keeps
    /// them all.
    pub fn any_passed(&self) -> bool {
        self.checked.iter().any(|(_, c)| c.passes)
    }
}

/// One scorer's step: its weight and the raw score of each candidate it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreStep {
    pub name: String,
    pub type_name: &'static str,
    pub weight: f64,
    /// (snapshot index, raw score).
    pub raw: Vec<(usize, f64)>,
}

impl ScoreStep {
    /// The weighted contribution to the total, exactly as the profile adds it.
    pub fn contribution(&self, raw: f64) -> f64 {
        WeightedScorer::contribution_of(self.weight, raw)
    }
}

/// What one profile did.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileTrace {
    /// The profile's position in the scheduler.
    pub index: usize,
    pub name: String,
    /// What the profile was given.
    pub candidates: Vec<usize>,
    pub filters: Vec<FilterStep>,
    pub scorers: Vec<ScoreStep>,
    /// Its result (targets and every total) or why it failed.
    pub outcome: Option<Result<ProfileResult, SchedulingError>>,
}

/// A recording observer: every profile that ran, in the order it ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub profiles: Vec<ProfileTrace>,
    pending: Vec<usize>,
}

impl Trace {
    pub fn new() -> Self {
        Self::default()
    }

    /// The trace of the profile at `index` in the scheduler, when it ran.
    pub fn profile(&self, index: usize) -> Option<&ProfileTrace> {
        self.profiles.iter().find(|p| p.index == index)
    }

    fn current(&mut self) -> &mut ProfileTrace {
        self.profiles
            .last_mut()
            .expect("profile_started runs before any step")
    }
}

impl ProfileObserver for Trace {
    fn profile_started(&mut self, index: usize, profile: &SchedulerProfile, candidates: &[usize]) {
        self.profiles.push(ProfileTrace {
            index,
            name: profile.name.clone(),
            candidates: candidates.to_vec(),
            filters: Vec::new(),
            scorers: Vec::new(),
            outcome: None,
        });
    }

    fn profile_done(&mut self, outcome: &Result<ProfileResult, SchedulingError>) {
        self.current().outcome = Some(outcome.clone());
    }

    fn filter_started(&mut self, _: &NamedFilter, candidates: &[usize]) {
        self.pending.clear();
        self.pending.extend_from_slice(candidates);
    }

    fn filter_done(&mut self, ctx: &SchedulingContext<'_>, filter: &NamedFilter, kept: &[usize]) {
        let checked = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|i| (i, filter.filter.check(ctx, i)))
            .collect();
        self.current().filters.push(FilterStep {
            name: filter.name.clone(),
            type_name: filter.filter.type_name(),
            checked,
            kept: kept.to_vec(),
        });
    }

    fn scored(&mut self, scorer: &WeightedScorer, candidates: &[usize], raw: &[f64]) {
        self.current().scorers.push(ScoreStep {
            name: scorer.name.clone(),
            type_name: scorer.scorer.type_name(),
            weight: scorer.weight,
            raw: candidates
                .iter()
                .copied()
                .zip(raw.iter().copied())
                .collect(),
        });
    }
}
