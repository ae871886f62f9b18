//! The built-in scheduling plugins, one file per family.

pub mod filters;
pub mod inflight;
pub mod pickers;
pub mod profile_handler;
pub mod scorers;

pub use filters::{
    ConcurrencyDetector, ConcurrencyFilter, ConcurrencyMode, DecodeFilter,
    HeaderBasedTestingFilter, PrefixCacheAffinityFilter, UtilizationFilter,
};
pub use inflight::{InflightLoadProducer, estimate_tokens};
pub use pickers::{MaxScorePicker, RandomPicker, WeightedRandomPicker, effective_max_endpoints};
pub use profile_handler::SingleProfileHandler;
pub use scorers::{
    KvCacheUtilizationScorer, LoraAffinityScorer, PrefixCacheScorer, QueueScorer,
    RunningRequestsSizeScorer, TokenLoadScorer,
};
