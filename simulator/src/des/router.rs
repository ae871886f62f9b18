//! Who picks the pod: Switchyard's own scheduler, built from an `EndpointPickerConfig` exactly as
//! the server builds it, or a baseline router (see [`crate::baselines`]).

use std::sync::Arc;

use switchyard::config::EndpointPickerConfig;
use switchyard::runtime::{PluginHandles, build_scheduler};
use switchyard::scheduling::{
    DecisionError, EndpointSnapshot, Request, SaturationDetector, Scheduler, SchedulerRng,
    Timestamp, Usage,
};

/// One request as a router sees it.
pub struct RouteRequest<'a> {
    /// The request's index in the trace (unique in the run).
    pub id: usize,
    /// What the server would build from the body and headers.
    pub request: &'a Request,
    pub prompt_tokens: u32,
    /// The engine's chained hashes of the prompt's full KV blocks: what KV events name.
    pub block_hashes: &'a [u64],
}

/// Exact knowledge of the engines' prefix caches, as KV events would give it with no delay.
pub trait CacheView {
    /// How many leading blocks of `hashes` pod `pod` holds in its KV cache.
    fn cached_prefix_blocks(&self, pod: usize, hashes: &[u64]) -> u32;
}

/// The pool as a router sees it.
pub struct PoolView<'a> {
    /// The scraped metrics, as stale as the scrape interval makes them.
    pub snapshot: &'a EndpointSnapshot,
    pub cache: &'a dyn CacheView,
    /// Tokens per KV block of the engines.
    pub block_size: u32,
    pub now: Timestamp,
}

/// A finished (or failed after routing) request.
pub struct Completion<'a> {
    pub id: usize,
    pub request: &'a Request,
    pub pod: usize,
    /// The pod's endpoint name.
    pub endpoint: &'a str,
    pub usage: Usage,
}

/// Why a request could not be routed, with the status the server would answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("{0}")]
    Other(String),
}

impl RouteError {
    /// The HTTP status the gateway returns for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Decision(DecisionError::NoCandidates) => 503,
            _ => 429,
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routed {
    pub pod: usize,
    /// Share of the prompt's blocks the pod holds per the router's prefix index, when it keeps
    /// one (flow control uses it to charge only uncached input).
    pub prefix_hit: Option<f64>,
}

impl From<usize> for Routed {
    fn from(pod: usize) -> Self {
        Self {
            pod,
            prefix_hit: None,
        }
    }
}

/// Picks a pod for each request and hears back when requests progress.
pub trait Router {
    fn route(
        &mut self,
        req: &RouteRequest<'_>,
        pool: &PoolView<'_>,
        rng: &mut SchedulerRng,
    ) -> Result<Routed, RouteError>;
    /// The request's first token was produced.
    fn first_token(&mut self, _id: usize) {}
    fn complete(&mut self, done: &Completion<'_>);
}

// === impl SwitchyardRouter ===

/// Switchyard's scheduler: the producers, profiles and hooks the server's runtime builds
/// ([`build_scheduler`]), called as the ext_proc request path calls them.
pub struct SwitchyardRouter {
    scheduler: Scheduler,
    /// Kept so the producers' per-endpoint state lives as long as in the server.
    _handles: PluginHandles,
}

impl SwitchyardRouter {
    /// The router and the configuration's saturation detector, built together as the server
    /// builds them (the concurrency detector counts this scheduler's in-flight requests).
    pub fn new(cfg: &EndpointPickerConfig) -> (Self, Option<Arc<dyn SaturationDetector>>) {
        let built = build_scheduler(cfg, None);
        (
            Self {
                scheduler: built.scheduler,
                _handles: built.handles,
            },
            built.saturation,
        )
    }
}

impl Router for SwitchyardRouter {
    fn route(
        &mut self,
        req: &RouteRequest<'_>,
        pool: &PoolView<'_>,
        rng: &mut SchedulerRng,
    ) -> Result<Routed, RouteError> {
        let d = self
            .scheduler
            .decide(req.request, pool.snapshot, pool.now, rng)?;
        let pod = d.result.targets()[0].index;
        let prefix_hit = d.state.prefix_hit_ratio(pod);
        Ok(Routed { pod, prefix_hit })
    }

    fn complete(&mut self, done: &Completion<'_>) {
        self.scheduler
            .response_complete(done.request, done.endpoint, Some(done.usage));
    }
}
