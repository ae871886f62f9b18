//! Why a scheduling cycle produced no endpoint.

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq)]
pub enum SchedulingError {
    /// A filter left no endpoint (GIE's text, kept for drop-in log and error compatibility).
    #[error("no endpoints available for the given request")]
    NoEndpointsAvailable,
    #[error("scorer {scorer} returned a non-finite score {value} for endpoint {endpoint}")]
    NonFiniteScore {
        scorer: String,
        endpoint: String,
        value: f64,
    },
    #[error("failed to run scheduler profile '{profile}': {source}")]
    ProfileFailed {
        profile: String,
        #[source]
        source: Box<SchedulingError>,
    },
    #[error("single profile handler requires exactly one profile result, got {0}")]
    ProfileCount(usize),
    #[error("no profile was run")]
    NoProfileRun,
}
