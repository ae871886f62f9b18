//! The extension points of a scheduling cycle. All synchronous and free of I/O: time and
//! randomness arrive as arguments, so the same plugins run in the server and in virtual time.

use std::fmt;

use rand_pcg::Pcg64Mcg;

use super::endpoint::EndpointSnapshot;
use super::error::SchedulingError;
use super::request::{CycleState, Request};
use super::time::Timestamp;

/// The RNG every randomised decision draws from. A concrete, seedable generator: the server seeds
/// it from entropy once, tests and the simulator from a fixed seed.
pub type SchedulerRng = Pcg64Mcg;

/// Everything a plugin may read during one scheduling cycle.
#[derive(Clone, Copy)]
pub struct SchedulingContext<'a> {
    pub request: &'a Request,
    pub snapshot: &'a EndpointSnapshot,
    pub state: &'a CycleState,
    pub now: Timestamp,
}

/// An endpoint (by its index in the snapshot) with its total weighted score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredEndpoint {
    pub index: usize,
    pub score: f64,
}

/// How GIE classifies scorers; reported in logs and used by profile handlers that weigh them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScorerCategory {
    Affinity,
    Distribution,
    Balance,
}

impl fmt::Display for ScorerCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Affinity => "Affinity",
            Self::Distribution => "Distribution",
            Self::Balance => "Balance",
        })
    }
}

/// Narrows the candidate list. Returning with `candidates` empty fails the profile.
pub trait Filter: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn filter(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &mut Vec<usize>,
        rng: &mut SchedulerRng,
    );
    /// The filter's test applied to the endpoint at `index` alone, with the values it was judged
    /// on, for explaining a decision. A filter that fails open (keeps everyone when nobody
    /// passes) or explores (sometimes keeps everyone) may keep an endpoint that fails its test.
    fn check(&self, ctx: &SchedulingContext<'_>, index: usize) -> FilterCheck;
}

/// One endpoint against one filter's test.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCheck {
    pub passes: bool,
    /// What was compared, e.g. `queue 7 ≥ limit 5`.
    pub detail: String,
}

impl FilterCheck {
    pub fn new(passes: bool, detail: impl Into<String>) -> Self {
        Self {
            passes,
            detail: detail.into(),
        }
    }
}

/// Scores candidates; `out[i]` is the score of `candidates[i]`. Scores are clamped to `0..=1` by
/// the profile; a non-finite score fails the cycle.
pub trait Scorer: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn category(&self) -> ScorerCategory;
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]);
}

/// Chooses the targets, best first, from the scored candidates (never empty).
pub trait Picker: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn pick(&self, scored: &[ScoredEndpoint], rng: &mut SchedulerRng) -> Vec<ScoredEndpoint>;
}

/// How saturated the pool is: 0 idle, ≥ 1.0 saturated. Drives admission of sheddable requests
/// and, with flow control, when queued requests are dispatched.
pub trait SaturationDetector: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn saturation(&self, snapshot: &EndpointSnapshot, candidates: &[usize], now: Timestamp) -> f64;

    /// Saturation one dispatched request adds while the detector cannot see it yet. Flow
    /// control counts requests it released since the detector's inputs last changed, so one
    /// dispatch cycle cannot release a burst the pool's next metrics would have refused.
    fn pending_weight(&self, _snapshot: &EndpointSnapshot, _candidates: &[usize]) -> f64 {
        0.0
    }

    /// Whether a dispatched request becomes visible to the detector once it is scheduled (it
    /// counts this EPP's own in-flight requests) rather than at the next metrics refresh.
    fn visible_when_picked(&self) -> bool {
        false
    }
}

/// What one profile produced: its targets in order and the score of every candidate it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    pub targets: Vec<ScoredEndpoint>,
    pub scores: Vec<ScoredEndpoint>,
}

/// The outcome of each profile run so far, by profile index.
pub type ProfileOutcomes = Vec<Option<Result<ProfileResult, SchedulingError>>>;

/// Decides which profiles run, in rounds, and which result is primary.
pub trait ProfileHandler: Send + Sync {
    fn type_name(&self) -> &'static str;
    /// Profiles (by index) to run next; empty ends the cycle.
    fn pick_profiles(&self, ctx: &SchedulingContext<'_>, outcomes: &ProfileOutcomes) -> Vec<usize>;
    /// Turns the outcomes into the final result, naming the primary profile.
    fn process_results(
        &self,
        profile_names: &[String],
        outcomes: ProfileOutcomes,
    ) -> Result<SchedulingResult, SchedulingError>;
}

/// Fills per-request state before scoring (GIE's PrepareData), e.g. prefix matches.
pub trait DataProducer: Send + Sync {
    fn type_name(&self) -> &'static str;
    /// Writes into `state`, which already holds what earlier producers wrote.
    fn produce(
        &self,
        request: &Request,
        snapshot: &EndpointSnapshot,
        candidates: &[usize],
        now: Timestamp,
        state: &mut CycleState,
    );
}

/// Runs after the pick, before the request is forwarded (GIE's PreRequest), e.g. to record the
/// request's prefix on the chosen endpoint.
pub trait PreRequest: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn pre_request(&self, ctx: &SchedulingContext<'_>, result: &SchedulingResult);
}

/// Token usage reported by the model server for a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

/// Runs when the response is complete or the stream ends for any other reason, so state tied to
/// an in-flight request is always released.
pub trait ResponseComplete: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn response_complete(&self, request: &Request, endpoint_name: &str, usage: Option<Usage>);
}

/// The decision of a scheduling cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulingResult {
    /// Results by profile name, in the order the profiles are configured.
    pub profile_results: Vec<(String, ProfileResult)>,
    /// Index into `profile_results` of the primary profile.
    pub primary: usize,
}

impl SchedulingResult {
    pub fn primary_name(&self) -> &str {
        &self.profile_results[self.primary].0
    }

    pub fn primary_result(&self) -> &ProfileResult {
        &self.profile_results[self.primary].1
    }

    /// The endpoints the request goes to, best first.
    pub fn targets(&self) -> &[ScoredEndpoint] {
        &self.primary_result().targets
    }

    pub fn profile(&self, name: &str) -> Option<&ProfileResult> {
        self.profile_results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
    }
}
