//! A built scheduler: the profiles, the profile handler and the request-control hooks, run as
//! one synchronous cycle.

use std::sync::Arc;

use super::endpoint::EndpointSnapshot;
use super::error::SchedulingError;
use super::plugin::{
    DataProducer, PreRequest, ProfileHandler, ProfileOutcomes, ResponseComplete, SchedulerRng,
    SchedulingContext, SchedulingResult, Usage,
};
use super::profile::SchedulerProfile;
use super::request::{CycleState, Request};
use super::time::Timestamp;
use super::trace::{NoTrace, ProfileObserver};

/// Why a full decision failed; the request path maps each to a status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    /// No endpoint is in the pool, or none matches the subset hint (GIE answers 503).
    #[error("failed to find endpoint candidates for serving the request")]
    NoCandidates,
    /// The scheduler found no target (GIE answers 429).
    #[error("failed to find target endpoint: {0}")]
    Scheduling(#[from] SchedulingError),
}

/// A successful decision and the per-request state later hooks need.
#[derive(Debug, Clone)]
pub struct Decision {
    pub result: SchedulingResult,
    pub state: CycleState,
}

pub struct Scheduler {
    profiles: Vec<SchedulerProfile>,
    profile_names: Vec<String>,
    handler: Arc<dyn ProfileHandler>,
    producers: Vec<Arc<dyn DataProducer>>,
    pre_request: Vec<Arc<dyn PreRequest>>,
    response_complete: Vec<Arc<dyn ResponseComplete>>,
}

impl Scheduler {
    pub fn new(profiles: Vec<SchedulerProfile>, handler: Arc<dyn ProfileHandler>) -> Self {
        let profile_names = profiles.iter().map(|p| p.name.clone()).collect();
        Self {
            profiles,
            profile_names,
            handler,
            producers: Vec::new(),
            pre_request: Vec::new(),
            response_complete: Vec::new(),
        }
    }

    /// Producers run in the order given; the config layer orders them so that each runs after
    /// the producers it reads from.
    pub fn with_producers(mut self, producers: Vec<Arc<dyn DataProducer>>) -> Self {
        self.producers = producers;
        self
    }

    pub fn with_pre_request(mut self, hooks: Vec<Arc<dyn PreRequest>>) -> Self {
        self.pre_request = hooks;
        self
    }

    pub fn with_response_complete(mut self, hooks: Vec<Arc<dyn ResponseComplete>>) -> Self {
        self.response_complete = hooks;
        self
    }

    pub fn profiles(&self) -> &[SchedulerProfile] {
        &self.profiles
    }

    pub fn handler(&self) -> &dyn ProfileHandler {
        self.handler.as_ref()
    }

    /// Runs the data producers and returns the per-request state they filled.
    pub fn prepare(
        &self,
        request: &Request,
        snapshot: &EndpointSnapshot,
        candidates: &[usize],
        now: Timestamp,
    ) -> CycleState {
        let mut state = CycleState::default();
        for p in &self.producers {
            p.produce(request, snapshot, candidates, now, &mut state);
        }
        state
    }

    /// Runs the profiles chosen by the profile handler on `candidates` and returns its result.
    pub fn schedule(
        &self,
        request: &Request,
        snapshot: &EndpointSnapshot,
        candidates: &[usize],
        state: &CycleState,
        now: Timestamp,
        rng: &mut SchedulerRng,
    ) -> Result<SchedulingResult, SchedulingError> {
        self.schedule_observed(request, snapshot, candidates, state, now, rng, &mut NoTrace)
    }

    /// [`Self::schedule`], telling `obs` what every profile that runs does. Nothing else
    /// differs: the same RNG draws, the same result.
    #[allow(clippy::too_many_arguments)]
    pub fn schedule_observed(
        &self,
        request: &Request,
        snapshot: &EndpointSnapshot,
        candidates: &[usize],
        state: &CycleState,
        now: Timestamp,
        rng: &mut SchedulerRng,
        obs: &mut impl ProfileObserver,
    ) -> Result<SchedulingResult, SchedulingError> {
        let ctx = SchedulingContext {
            request,
            snapshot,
            state,
            now,
        };
        let mut outcomes: ProfileOutcomes = vec![None; self.profiles.len()];
        loop {
            let picked = self.handler.pick_profiles(&ctx, &outcomes);
            let mut ran_any = false;
            for i in picked {
                if i >= self.profiles.len() || outcomes[i].is_some() {
                    continue;
                }
                obs.profile_started(i, &self.profiles[i], candidates);
                let outcome = self.profiles[i].run_observed(&ctx, candidates, rng, obs);
                obs.profile_done(&outcome);
                outcomes[i] = Some(outcome);
                ran_any = true;
            }
            // A handler that names no new profile ends the cycle; this also guards against one
            // that keeps naming profiles that already ran.
            if !ran_any {
                break;
            }
        }
        self.handler.process_results(&self.profile_names, outcomes)
    }

    /// Runs the pre-request hooks after a successful pick.
    pub fn pre_request(
        &self,
        request: &Request,
        snapshot: &EndpointSnapshot,
        state: &CycleState,
        result: &SchedulingResult,
        now: Timestamp,
    ) {
        let ctx = SchedulingContext {
            request,
            snapshot,
            state,
            now,
        };
        for h in &self.pre_request {
            h.pre_request(&ctx, result);
        }
    }

    /// Releases whatever the hooks hold for a request that finished or whose stream ended.
    pub fn response_complete(&self, request: &Request, endpoint_name: &str, usage: Option<Usage>) {
        for h in &self.response_complete {
            h.response_complete(request, endpoint_name, usage);
        }
    }

    /// The whole decision for one request: candidates from the subset hint, producers, profiles,
    /// then the pre-request hooks.
    pub fn decide(
        &self,
        request: &Request,
        snapshot: &EndpointSnapshot,
        now: Timestamp,
        rng: &mut SchedulerRng,
    ) -> Result<Decision, DecisionError> {
        let candidates = snapshot.candidates(request.subset.as_deref());
        if candidates.is_empty() {
            return Err(DecisionError::NoCandidates);
        }
        let state = self.prepare(request, snapshot, &candidates, now);
        let result = self.schedule(request, snapshot, &candidates, &state, now, rng)?;
        self.pre_request(request, snapshot, &state, &result, now);
        Ok(Decision { result, state })
    }
}
