//! Flow-control metrics with GIE's names and labels (gie-epp.md §6.1), plus per-tenant VTC
//! counters and service, which GIE does not have because it has no work-based fairness.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use crate::telemetry::bounded::{
    LabelBound, SeriesIndex, TrackedFamily, always_idle, gauge_idle, index_key,
};
use crate::telemetry::{FAIRNESS_ID, MODEL_PAIR, SCHEDULER_BUCKETS, pair_value};

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

type Tracked<L, M, C = fn() -> M> = Arc<TrackedFamily<L, M, C>>;

fn tenant_key(t: &str) -> Arc<str> {
    index_key(FAIRNESS_ID, t)
}

fn queue_keys(l: &QueueLabels) -> Vec<Arc<str>> {
    vec![
        tenant_key(&l.fairness_id),
        index_key(MODEL_PAIR, &pair_value(&l.model_name, &l.target_model_name)),
    ]
}

/// Flow-control metrics; the families labelled with a fairness id (and a model) are tracked so
/// the label bounds can forget a value's series.
#[derive(Clone)]
pub struct FlowControlMetrics {
    pub queue_duration: Tracked<QueueDurationLabels, Histogram>,
    pub dispatch_cycle_duration: Histogram,
    pub enqueue_duration: Tracked<EnqueueLabels, Histogram>,
    pub queue_size: Tracked<QueueLabels, Gauge>,
    pub queue_bytes: Tracked<QueueLabels, Gauge>,
    pub pool_saturation: Family<PoolLabels, F64Gauge>,
    pub tenant_counter: Tracked<TenantLabels, F64Gauge>,
    pub tenant_service: Tracked<TenantLabels, Counter<f64, AtomicU64>>,
    /// Bounds the fairness ids these families are labelled with.
    pub tenants: Arc<LabelBound>,
    /// Tenants whose idle VTC state was collected.
    pub tenants_collected: Counter,
}

impl Default for FlowControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowControlMetrics {
    pub fn new() -> Self {
        let tenant = |l: &TenantLabels| vec![tenant_key(&l.fairness_id)];
        Self {
            queue_duration: Arc::new(TrackedFamily::new(
                Family::new_with_constructor(|| Histogram::new(QUEUE_DURATION_BUCKETS)),
                |l: &QueueDurationLabels| {
                    vec![
                        tenant_key(&l.fairness_id),
                        index_key(MODEL_PAIR, &pair_value(&l.model_name, &l.target_model_name)),
                    ]
                },
                always_idle,
            )),
            dispatch_cycle_duration: Histogram::new(SCHEDULER_BUCKETS),
            enqueue_duration: Arc::new(TrackedFamily::new(
                Family::new_with_constructor(|| Histogram::new(SCHEDULER_BUCKETS)),
                |l: &EnqueueLabels| vec![tenant_key(&l.fairness_id)],
                always_idle,
            )),
            queue_size: Arc::new(TrackedFamily::new(
                Family::default(),
                queue_keys,
                gauge_idle,
            )),
            queue_bytes: Arc::new(TrackedFamily::new(
                Family::default(),
                queue_keys,
                gauge_idle,
            )),
            pool_saturation: Family::default(),
            // A tenant's virtual counter is state, not a running total: it is dropped with the
            // tenant's series (the controller keeps the real counter).
            tenant_counter: Arc::new(TrackedFamily::new(Family::default(), tenant, always_idle)),
            tenant_service: Arc::new(TrackedFamily::new(Family::default(), tenant, always_idle)),
            tenants_collected: Counter::default(),
            tenants: LabelBound::new(
                FAIRNESS_ID,
                crate::telemetry::DEFAULT_LABEL_VALUES,
                &Default::default(),
            ),
        }
        .with_tenant_bound(None)
    }

    /// Bounds fairness ids with `tenants` (shared with the process's other bounds), or with its
    /// own bound when `None`.
    pub fn with_tenant_bound(mut self, tenants: Option<Arc<LabelBound>>) -> Self {
        if let Some(t) = tenants {
            self.tenants = t;
        }
        self.tenants.track(self.tenant_indexes());
        self
    }

    /// The families labelled with a fairness id.
    pub fn tenant_indexes(&self) -> Vec<Arc<dyn SeriesIndex>> {
        vec![
            self.queue_duration.clone(),
            self.enqueue_duration.clone(),
            self.queue_size.clone(),
            self.queue_bytes.clone(),
            self.tenant_counter.clone(),
            self.tenant_service.clone(),
        ]
    }

    /// The families labelled with a (model, target) pair.
    pub fn pair_indexes(&self) -> Vec<Arc<dyn SeriesIndex>> {
        vec![
            self.queue_duration.clone(),
            self.queue_size.clone(),
            self.queue_bytes.clone(),
        ]
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "inference_extension_flow_control_request_queue_duration_seconds",
            "Distribution of the total time requests spend in the flow control layer, by outcome.",
            self.queue_duration.family().clone(),
        );
        r.register(
            "inference_extension_flow_control_dispatch_cycle_duration_seconds",
            "Distribution of the time one dispatch cycle takes.",
            self.dispatch_cycle_duration.clone(),
        );
        r.register(
            "inference_extension_flow_control_request_enqueue_duration_seconds",
            "Distribution of the time an enqueue decision takes, by outcome.",
            self.enqueue_duration.family().clone(),
        );
        r.register(
            "inference_extension_flow_control_queue_size",
            "Requests currently queued in the flow control layer.",
            self.queue_size.family().clone(),
        );
        r.register(
            "inference_extension_flow_control_queue_bytes",
            "Bytes of requests currently queued in the flow control layer.",
            self.queue_bytes.family().clone(),
        );
        r.register(
            "inference_extension_flow_control_pool_saturation",
            "The pool saturation the flow controller last dispatched against.",
            self.pool_saturation.clone(),
        );
        r.register(
            "switchyard_flow_control_tenant_virtual_counter",
            "The tenant's virtual token counter under vtc-fairness-policy (service divided by weight).",
            self.tenant_counter.family().clone(),
        );
        r.register(
            "switchyard_flow_control_tenants_collected",
            "Tenants whose VTC state was forgotten after --fairness-idle-timeout without requests",
            self.tenants_collected.clone(),
        );
        r.register(
            "switchyard_flow_control_tenant_service_tokens",
            "Service charged to the tenant under vtc-fairness-policy: weighted input plus output tokens.",
            self.tenant_service.family().clone(),
        );
    }
}
