//! What every stream shares, and the options a configuration sets for the request path.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::discovery::Datastore;
use crate::pool::EndpointPool;
use crate::runtime::Runtime;
use crate::telemetry::RequestMetrics;

#[derive(Debug, Clone)]
pub struct ExtProcOptions {
    /// Larger request bodies are refused with 413.
    pub max_request_body_bytes: usize,
    /// Ignore the gateway's subset hint (`--disable-endpoint-subset-filter`).
    pub disable_subset_filter: bool,
    /// `passthrough-parser`: bodies are not parsed; no model, no usage.
    pub passthrough: bool,
    /// `destination-endpoint-served-verifier` is configured (GIE conformance).
    pub served_verifier: bool,
    /// Reported in the `namespace` label of scheduler metrics.
    pub pool_namespace: String,
    /// `--emit-endpoint-scores`: send the top endpoints' totals with the pick.
    pub emit_endpoint_scores: bool,
}

impl Default for ExtProcOptions {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 64 << 20,
            disable_subset_filter: false,
            passthrough: false,
            served_verifier: false,
            pool_namespace: String::new(),
            emit_endpoint_scores: false,
        }
    }
}

/// What every stream shares: the pool, the datastore, request metrics, the clock, and the
/// runtime in force (swapped by [`crate::runtime::Live`] on a configuration reload).
pub struct Director {
    pub pool: Arc<EndpointPool>,
    pub datastore: Arc<Datastore>,
    runtime: ArcSwap<Runtime>,
    pub metrics: Arc<RequestMetrics>,
    pub clock: Clock,
}

impl Director {
    pub fn new(
        pool: Arc<EndpointPool>,
        datastore: Arc<Datastore>,
        runtime: Arc<Runtime>,
        metrics: Arc<RequestMetrics>,
        clock: Clock,
    ) -> Self {
        Self {
            pool,
            datastore,
            runtime: ArcSwap::new(runtime),
            metrics,
            clock,
        }
    }

    /// The runtime new requests are admitted and scheduled with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Installs the runtime for requests that start from now on; streams already routed finish
    /// on the one they started with.
    pub fn set_runtime(&self, runtime: Arc<Runtime>) {
        self.runtime.store(runtime);
    }
}
