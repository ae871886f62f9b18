//! Flow-control metrics with GIE's names and labels (gie-epp.md §6.1), plus per-tenant VTC
//! counters and service, which GIE does not have because it has no work-based fairness.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::telemetry::SCHEDULER_BUCKETS;

type F64Gauge = Gauge<f64, AtomicU64>;

const QUEUE_DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueDurationLabels {
    pub fairness_id: String,
    pub priority: String,
    pub outcome: String,
    pub inference_pool: String,
    pub model_name: String,
    pub target_model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnqueueLabels {
    pub fairness_id: String,
    pub priority: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub fairness_id: String,
    pub priority: String,
    pub inference_pool: String,
    pub model_name: String,
    pub target_model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub inference_pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub fairness_id: String,
    pub priority: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct FlowControlMetrics {
    pub queue_duration: HistogramFamily<QueueDurationLabels>,
    pub dispatch_cycle_duration: Histogram,
    pub enqueue_duration: HistogramFamily<EnqueueLabels>,
    pub queue_size: Family<QueueLabels, Gauge>,
    pub queue_bytes: Family<QueueLabels, Gauge>,
    pub pool_saturation: Family<PoolLabels, F64Gauge>,
    pub tenant_counter: Family<TenantLabels, F64Gauge>,
    pub tenant_service: Family<TenantLabels, Counter<f64, AtomicU64>>,
}

impl Default for FlowControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowControlMetrics {
    pub fn new() -> Self {
        Self {
            queue_duration: Family::new_with_constructor(|| Histogram::new(QUEUE_DURATION_BUCKETS)),
            dispatch_cycle_duration: Histogram::new(SCHEDULER_BUCKETS),
            enqueue_duration: Family::new_with_constructor(|| Histogram::new(SCHEDULER_BUCKETS)),
            queue_size: Family::default(),
            queue_bytes: Family::default(),
            pool_saturation: Family::default(),
            tenant_counter: Family::default(),
            tenant_service: Family::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "inference_extension_flow_control_request_queue_duration_seconds",
            "Distribution of the total time requests spend in the flow control layer, by outcome.",
            self.queue_duration.clone(),
        );
        r.register(
            "inference_extension_flow_control_dispatch_cycle_duration_seconds",
            "Distribution of the time one dispatch cycle takes.",
            self.dispatch_cycle_duration.clone(),
        );
        r.register(
            "inference_extension_flow_control_request_enqueue_duration_seconds",
            "Distribution of the time an enqueue decision takes, by outcome.",
            self.enqueue_duration.clone(),
        );
        r.register(
            "inference_extension_flow_control_queue_size",
            "Requests currently queued in the flow control layer.",
            self.queue_size.clone(),
        );
        r.register(
            "inference_extension_flow_control_queue_bytes",
            "Bytes of requests currently queued in the flow control layer.",
            self.queue_bytes.clone(),
        );
        r.register(
            "inference_extension_flow_control_pool_saturation",
            "The pool saturation the flow controller last dispatched against.",
            self.pool_saturation.clone(),
        );
        r.register(
            "switchyard_flow_control_tenant_virtual_counter",
            "The tenant's virtual token counter under vtc-fairness-policy (service divided by weight).",
            self.tenant_counter.clone(),
        );
        r.register(
            "switchyard_flow_control_tenant_service_tokens",
            "Service charged to the tenant under vtc-fairness-policy: weighted input plus output tokens.",
            self.tenant_service.clone(),
        );
    }
}
