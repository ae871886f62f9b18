//! What every stream shares: the pool, the datastore, the scheduler, metrics and options.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::discovery::Datastore;
use crate::flowcontrol::FlowControl;
use crate::pool::EndpointPool;
use crate::scheduling::{SaturationDetector, Scheduler};
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
}

impl Default for ExtProcOptions {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 64 << 20,
            disable_subset_filter: false,
            passthrough: false,
            served_verifier: false,
            pool_namespace: String::new(),
        }
    }
}

pub struct Director {
    pub pool: Arc<EndpointPool>,
    pub datastore: Arc<Datastore>,
    scheduler: ArcSwap<Scheduler>,
    pub saturation: Option<Arc<dyn SaturationDetector>>,
    /// With the `flowControl` gate: requests queue here while the pool is saturated.
    pub flow_control: Option<Arc<FlowControl>>,
    pub metrics: Arc<RequestMetrics>,
    pub opts: ExtProcOptions,
    pub clock: Clock,
}

impl Director {
    pub fn new(
        pool: Arc<EndpointPool>,
        datastore: Arc<Datastore>,
        scheduler: Scheduler,
        saturation: Option<Arc<dyn SaturationDetector>>,
        metrics: Arc<RequestMetrics>,
        opts: ExtProcOptions,
        clock: Clock,
    ) -> Self {
        Self {
            pool,
            datastore,
            scheduler: ArcSwap::from_pointee(scheduler),
            saturation,
            flow_control: None,
            metrics,
            opts,
            clock,
        }
    }

    /// Queues requests in `fc` instead of GIE's legacy shedding.
    pub fn with_flow_control(mut self, fc: Arc<FlowControl>) -> Self {
        self.flow_control = Some(fc);
        self
    }

    pub fn scheduler(&self) -> Arc<Scheduler> {
        self.scheduler.load_full()
    }

    pub fn set_scheduler(&self, scheduler: Scheduler) {
        self.scheduler.store(Arc::new(scheduler));
    }
}
