//! The pure scheduling core: no I/O, no async, no clock or RNG read inside. Callers pass `now` and
//! a seeded RNG, which is what lets the simulator replay hours of traffic in virtual time and lets
//! tests pin every decision.
//!
//! A cycle: candidates (the subset hint) → data producers → the profile handler's profiles (each:
//! filters → weighted scorers → picker) → pre-request hooks.

pub mod endpoint;
pub mod error;
pub mod plugin;
pub mod plugins;
pub mod profile;
pub mod request;
pub mod scheduler;
pub mod time;
pub mod trace;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use endpoint::{Endpoint, EndpointMetrics, EndpointSnapshot, EndpointState};
pub use error::SchedulingError;
pub use plugin::{
    DataProducer, Filter, FilterCheck, Picker, PreRequest, ProfileHandler, ProfileOutcomes,
    ProfileResult, ResponseComplete, SaturationDetector, SchedulerRng, SchedulingContext,
    SchedulingResult, ScoredEndpoint, Scorer, ScorerCategory, Usage,
};
pub use profile::{NamedFilter, SchedulerProfile, WeightedScorer};
pub use request::{CycleState, DEFAULT_FAIRNESS_ID, EndpointLoad, PrefixMatchInfo, Request};
pub use scheduler::{Decision, DecisionError, Scheduler};
pub use time::Timestamp;
pub use trace::{NoTrace, ProfileObserver, Trace};
