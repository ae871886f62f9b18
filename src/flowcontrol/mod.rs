//! Flow control: with the `flowControl` feature gate, requests wait in the EPP while the pool is
//! saturated and leave in an order set by priority bands, a fairness policy per band (GIE's
//! global-strict and round-robin, and VTC) and an ordering policy per flow (FCFS, EDF). Without
//! it, GIE's legacy admission sheds sheddable requests when the pool is saturated.
//!
//! - [`admission`]: the one admission state machine ([`Gate`]) — arrive, poll, pick, first
//!   token, usage, completion, reconfiguration — that the server and the simulator both drive.
//! - [`controller`]: the pure queue state under it (bands, flows, policies).
//! - [`release`]: the books kept around a release (requests in transit, tenant charges).
//! - [`vtc`]: virtual token counters and their parameters.
//! - [`service`]: the server's async shell (lock, waiters, wake-ups, metrics).

pub mod admission;
pub mod controller;
pub mod metrics;
pub mod release;
pub mod service;
pub mod vtc;

pub use admission::{Arrival, Charged, Gate, PoolSignal, Preview, Refusal, Step, legacy_admit};
pub use controller::{
    BandConfig, ControllerConfig, Fairness, FlowController, ItemId, NewItem, Ordering, Rejected,
    Released, UsageLimitParams,
};
pub use metrics::FlowControlMetrics;
pub use release::{Charge, Transit};
pub use service::{Admission, FlowControl, Outcome, Ticket};
pub use vtc::VtcParams;
