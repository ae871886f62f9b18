//! The EPP's own Prometheus metrics, with GIE's names, labels and buckets (gie-epp.md §6.1), so
//! existing dashboards and alerts work unchanged; client-chosen label values (model names,
//! fairness ids) are bounded by [`bounded`].

pub mod bounded;
pub mod exposition;
pub mod plugins;
pub mod process;

use std::sync::Arc;

use bounded::{LabelBound, SeriesIndex, TrackedFamily, always_idle, gauge_idle, index_key};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const LATENCY_BUCKETS: [f64; 35] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0, 600.0, 900.0,
    1200.0, 1800.0, 2700.0, 3600.0,
];
const REQUEST_SIZE_BUCKETS: [f64; 25] = [
    64.0,
    128.0,
    256.0,
    512.0,
    1024.0,
    2048.0,
    4096.0,
    8192.0,
    16384.0,
    32768.0,
    65536.0,
    131072.0,
    262144.0,
    524288.0,
    1048576.0,
    2097152.0,
    4194304.0,
    8388608.0,
    16777216.0,
    33554432.0,
    67108864.0,
    134217728.0,
    268435456.0,
    536870912.0,
    1073741824.0,
];
// GIE's buckets, including its 32778 (sic).
const RESPONSE_SIZE_BUCKETS: [f64; 15] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
    32778.0, 65536.0,
];
const INPUT_TOKEN_BUCKETS: [f64; 19] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
    32778.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0,
];
const OUTPUT_TOKEN_BUCKETS: [f64; 12] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];
const NTPOT_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Scheduler and plugin latency buckets.
pub const SCHEDULER_BUCKETS: [f64; 10] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model_name: String,
    pub target_model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model_name: String,
    pub target_model_name: String,
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub model_name: String,
    pub target_model_name: String,
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunningLabels {
    pub model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub status: String,
    pub target_model_name: String,
    pub pod_name: String,
    pub namespace: String,
    pub port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RewriteLabels {
    pub model_rewrite_name: String,
    pub model_name: String,
    pub target_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub commit: String,
    pub build_ref: String,
    /// Hash of the configuration in force (changes on reload).
    pub config_hash: String,
}

type Tracked<L, M> = Arc<TrackedFamily<L, M>>;

/// The bound on model names used alone (`model_name` of running requests, the target of
/// scheduling attempts).
pub const MODEL: &str = "model_name";
/// The bound on (model, target model) pairs: most families carry both, and a client chooses
/// both (the rewrite header), so they are bounded together.
pub const MODEL_PAIR: &str = "model_name,target_model_name";
/// The bound on fairness ids (flow-control metrics).
pub const FAIRNESS_ID: &str = "fairness_id";

/// The value of the (model, target) pair bound.
pub fn pair_value(model: &str, target: &str) -> String {
    format!("{model}\u{1f}{target}")
}

fn pair_key(model: &str, target: &str) -> Vec<Arc<str>> {
    vec![index_key(MODEL_PAIR, &pair_value(model, target))]
}

fn model_key(model: &str) -> Vec<Arc<str>> {
    vec![index_key(MODEL, model)]
}

fn histograms<L>(ctor: fn() -> Histogram, keys: fn(&L) -> Vec<Arc<str>>) -> Tracked<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq + Send + Sync,
{
    Arc::new(TrackedFamily::new(
        Family::new_with_constructor(ctor),
        keys,
        always_idle,
    ))
}

fn counters<L>(keys: fn(&L) -> Vec<Arc<str>>) -> Tracked<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + Send + Sync,
{
    Arc::new(TrackedFamily::new(Family::default(), keys, always_idle))
}

/// The label bounds of one process (see [`bounded`]).
#[derive(Clone)]
pub struct Bounds {
    pub models: Arc<LabelBound>,
    pub pairs: Arc<LabelBound>,
    pub tenants: Arc<LabelBound>,
    pub metrics: bounded::BoundMetrics,
}

impl Bounds {
    /// Each bound keeps `capacity` values besides the ones the configuration names.
    pub fn new(capacity: usize) -> Self {
        let metrics = bounded::BoundMetrics::default();
        Self {
            models: LabelBound::new(MODEL, capacity, &metrics),
            pairs: LabelBound::new(MODEL_PAIR, capacity, &metrics),
            tenants: LabelBound::new(FAIRNESS_ID, capacity, &metrics),
            metrics,
        }
    }

    /// The labels of a request for `model` rewritten to `target`: both as given when the
    /// configuration names them (`known`), else as given while the pair fits the bound, else
    /// `other`.
    pub fn model_labels(
        &self,
        model: &str,
        target: &str,
        known: impl Fn(&str) -> bool,
    ) -> ModelLabels {
        let pass = (known(model) && known(target))
            || &*self.pairs.resolve(&pair_value(model, target)) != bounded::OTHER;
        if pass {
            ModelLabels {
                model_name: model.to_string(),
                target_model_name: target.to_string(),
            }
        } else {
            ModelLabels {
                model_name: bounded::OTHER.into(),
                target_model_name: bounded::OTHER.into(),
            }
        }
    }

    /// A model name alone, bounded the same way.
    pub fn model(&self, model: &str, known: impl Fn(&str) -> bool) -> String {
        if known(model) {
            model.to_string()
        } else {
            self.models.resolve(model).to_string()
        }
    }
}

/// Label values kept per bound by default, besides those the configuration names.
pub const DEFAULT_LABEL_VALUES: usize = 200;

/// Request-path metrics.
pub struct RequestMetrics {
    /// Bounds on the client-chosen label values of these and the flow-control metrics.
    pub bounds: Bounds,
    pub request_total: Tracked<RequestLabels, Counter>,
    pub request_error_total: Tracked<ErrorLabels, Counter>,
    pub request_duration_seconds: Tracked<ModelLabels, Histogram>,
    pub request_sizes: Tracked<ModelLabels, Histogram>,
    pub response_sizes: Tracked<ModelLabels, Histogram>,
    pub input_tokens: Tracked<ModelLabels, Histogram>,
    pub output_tokens: Tracked<ModelLabels, Histogram>,
    pub prompt_cached_tokens: Tracked<ModelLabels, Histogram>,
    pub normalized_time_per_output_token_seconds: Tracked<ModelLabels, Histogram>,
    pub running_requests: Tracked<RunningLabels, Gauge>,
    pub scheduler_e2e_duration_seconds: Histogram,
    pub scheduler_attempts_total: Tracked<AttemptLabels, Counter>,
    pub model_rewrite_decisions_total: Tracked<RewriteLabels, Counter>,
    pub info: Family<InfoLabels, Gauge>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new(DEFAULT_LABEL_VALUES)
    }
}

impl RequestMetrics {
    /// Metrics whose client-chosen label values are bounded to `label_values` per bound.
    pub fn new(label_values: usize) -> Self {
        let by_pair = |l: &ModelLabels| pair_key(&l.model_name, &l.target_model_name);
        let metrics = Self {
            request_total: counters(|l: &RequestLabels| {
                pair_key(&l.model_name, &l.target_model_name)
            }),
            request_error_total: counters(|l: &ErrorLabels| {
                pair_key(&l.model_name, &l.target_model_name)
            }),
            request_duration_seconds: histograms(|| Histogram::new(LATENCY_BUCKETS), by_pair),
            request_sizes: histograms(|| Histogram::new(REQUEST_SIZE_BUCKETS), by_pair),
            response_sizes: histograms(|| Histogram::new(RESPONSE_SIZE_BUCKETS), by_pair),
            input_tokens: histograms(|| Histogram::new(INPUT_TOKEN_BUCKETS), by_pair),
            output_tokens: histograms(|| Histogram::new(OUTPUT_TOKEN_BUCKETS), by_pair),
            prompt_cached_tokens: histograms(|| Histogram::new(INPUT_TOKEN_BUCKETS), by_pair),
            normalized_time_per_output_token_seconds: histograms(
                || Histogram::new(NTPOT_BUCKETS),
                by_pair,
            ),
            running_requests: Arc::new(TrackedFamily::new(
                Family::default(),
                |l: &RunningLabels| model_key(&l.model_name),
                gauge_idle,
            )),
            scheduler_e2e_duration_seconds: Histogram::new(SCHEDULER_BUCKETS),
            scheduler_attempts_total: counters(|l: &AttemptLabels| model_key(&l.target_model_name)),
            model_rewrite_decisions_total: counters(|l: &RewriteLabels| {
                pair_key(&l.model_name, &l.target_model)
            }),
            info: Family::default(),
            bounds: Bounds::new(label_values),
        };
        metrics.bounds.models.track(metrics.model_indexes());
        metrics.bounds.pairs.track(metrics.pair_indexes());
        metrics.set_config_hash("");
        metrics
    }

    /// The families indexed by model name alone.
    pub fn model_indexes(&self) -> Vec<Arc<dyn SeriesIndex>> {
        vec![
            self.running_requests.clone(),
            self.scheduler_attempts_total.clone(),
        ]
    }

    /// The families indexed by (model, target) pair.
    pub fn pair_indexes(&self) -> Vec<Arc<dyn SeriesIndex>> {
        vec![
            self.request_total.clone(),
            self.request_error_total.clone(),
            self.request_duration_seconds.clone(),
            self.request_sizes.clone(),
            self.response_sizes.clone(),
            self.input_tokens.clone(),
            self.output_tokens.clone(),
            self.prompt_cached_tokens.clone(),
            self.normalized_time_per_output_token_seconds.clone(),
            self.model_rewrite_decisions_total.clone(),
        ]
    }

    /// Publishes `inference_extension_info` for the configuration with this hash.
    pub fn set_config_hash(&self, hash: &str) {
        self.info.clear();
        self.info
            .get_or_create(&InfoLabels {
                commit: option_env!("SWITCHYARD_COMMIT")
                    .unwrap_or("unknown")
                    .to_string(),
                build_ref: env!("CARGO_PKG_VERSION").to_string(),
                config_hash: hash.to_string(),
            })
            .set(1);
    }

    pub fn register(&self, r: &mut Registry) {
        self.bounds.metrics.register(r);
        // prometheus-client appends `_total` to counters.
        r.register(
            "inference_objective_request",
            "Counter of inference objective requests broken out for each model and target model.",
            self.request_total.family().clone(),
        );
        r.register(
            "inference_objective_request_error",
            "Counter of inference objective requests errors broken out for each model and target model.",
            self.request_error_total.family().clone(),
        );
        r.register(
            "inference_objective_request_duration_seconds",
            "Inference objective response latency distribution in seconds for each model and target model.",
            self.request_duration_seconds.family().clone(),
        );
        r.register(
            "inference_objective_request_sizes",
            "Inference objective requests size distribution in bytes for each model and target model.",
            self.request_sizes.family().clone(),
        );
        r.register(
            "inference_objective_response_sizes",
            "Inference objective responses size distribution in bytes for each model and target model.",
            self.response_sizes.family().clone(),
        );
        r.register(
            "inference_objective_input_tokens",
            "Inference objective input token count distribution for requests in each model.",
            self.input_tokens.family().clone(),
        );
        r.register(
            "inference_objective_output_tokens",
            "Inference objective output token count distribution for requests in each model.",
            self.output_tokens.family().clone(),
        );
        r.register(
            "inference_objective_prompt_cached_tokens",
            "Inference objective prompt cached token count distribution for requests in each model.",
            self.prompt_cached_tokens.family().clone(),
        );
        r.register(
            "inference_objective_normalized_time_per_output_token_seconds",
            "Inference objective latency divided by number of output tokens in seconds for each model and target model.",
            self.normalized_time_per_output_token_seconds.family().clone(),
        );
        r.register(
            "inference_objective_running_requests",
            "Inference objective number of running requests in each model.",
            self.running_requests.family().clone(),
        );
        r.register(
            "inference_extension_scheduler_e2e_duration_seconds",
            "End-to-end scheduling latency distribution in seconds.",
            self.scheduler_e2e_duration_seconds.clone(),
        );
        r.register(
            "inference_extension_scheduler_attempts",
            "Number of scheduling attempts by status and chosen endpoint.",
            self.scheduler_attempts_total.family().clone(),
        );
        r.register(
            "inference_extension_model_rewrite_decisions",
            "Number of model rewrite decisions by rewrite, incoming model and target model.",
            self.model_rewrite_decisions_total.family().clone(),
        );
        r.register(
            "inference_extension_info",
            "General information of the current build of Inference Extension.",
            self.info.clone(),
        );
    }
}

/// Renders a registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_match_gie() {
        let m = RequestMetrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.request_total
            .get_or_create(&RequestLabels {
                model_name: "m".into(),
                target_model_name: "t".into(),
                priority: "2".into(),
            })
            .inc();
        m.response_sizes
            .get_or_create(&ModelLabels {
                model_name: "m".into(),
                target_model_name: "t".into(),
            })
            .observe(100.0);
        let text = encode(&r);
        assert!(text.contains(
            "inference_objective_request_total{model_name=\"m\",target_model_name=\"t\",priority=\"2\"} 1"
        ), "{text}");
        assert!(text.contains("inference_objective_response_sizes_bucket{le=\"32778.0\",model_name=\"m\",target_model_name=\"t\"} 1"), "{text}");
        assert!(
            text.contains("# TYPE inference_extension_scheduler_e2e_duration_seconds histogram")
        );
        assert!(text.contains("inference_extension_info{commit="));
    }
}
