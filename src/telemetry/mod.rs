//! The EPP's own Prometheus metrics, with GIE's names, labels and buckets (gie-epp.md §6.1), so
//! existing dashboards and alerts work unchanged; and logging setup.

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

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn family<L: Clone + std::hash::Hash + Eq>(ctor: fn() -> Histogram) -> HistogramFamily<L> {
    Family::new_with_constructor(ctor)
}

/// Request-path metrics.
pub struct RequestMetrics {
    pub request_total: Family<RequestLabels, Counter>,
    pub request_error_total: Family<ErrorLabels, Counter>,
    pub request_duration_seconds: HistogramFamily<ModelLabels>,
    pub request_sizes: HistogramFamily<ModelLabels>,
    pub response_sizes: HistogramFamily<ModelLabels>,
    pub input_tokens: HistogramFamily<ModelLabels>,
    pub output_tokens: HistogramFamily<ModelLabels>,
    pub prompt_cached_tokens: HistogramFamily<ModelLabels>,
    pub normalized_time_per_output_token_seconds: HistogramFamily<ModelLabels>,
    pub running_requests: Family<RunningLabels, Gauge>,
    pub scheduler_e2e_duration_seconds: Histogram,
    pub scheduler_attempts_total: Family<AttemptLabels, Counter>,
    pub model_rewrite_decisions_total: Family<RewriteLabels, Counter>,
    pub info: Family<InfoLabels, Gauge>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestMetrics {
    pub fn new() -> Self {
        let metrics = Self {
            request_total: Family::default(),
            request_error_total: Family::default(),
            request_duration_seconds: family(|| Histogram::new(LATENCY_BUCKETS)),
            request_sizes: family(|| Histogram::new(REQUEST_SIZE_BUCKETS)),
            response_sizes: family(|| Histogram::new(RESPONSE_SIZE_BUCKETS)),
            input_tokens: family(|| Histogram::new(INPUT_TOKEN_BUCKETS)),
            output_tokens: family(|| Histogram::new(OUTPUT_TOKEN_BUCKETS)),
            prompt_cached_tokens: family(|| Histogram::new(INPUT_TOKEN_BUCKETS)),
            normalized_time_per_output_token_seconds: family(|| Histogram::new(NTPOT_BUCKETS)),
            running_requests: Family::default(),
            scheduler_e2e_duration_seconds: Histogram::new(SCHEDULER_BUCKETS),
            scheduler_attempts_total: Family::default(),
            model_rewrite_decisions_total: Family::default(),
            info: Family::default(),
        };
        metrics.set_config_hash("");
        metrics
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
        // prometheus-client appends `_total` to counters.
        r.register(
            "inference_objective_request",
            "Counter of inference objective requests broken out for each model and target model.",
            self.request_total.clone(),
        );
        r.register(
            "inference_objective_request_error",
            "Counter of inference objective requests errors broken out for each model and target model.",
            self.request_error_total.clone(),
        );
        r.register(
            "inference_objective_request_duration_seconds",
            "Inference objective response latency distribution in seconds for each model and target model.",
            self.request_duration_seconds.clone(),
        );
        r.register(
            "inference_objective_request_sizes",
            "Inference objective requests size distribution in bytes for each model and target model.",
            self.request_sizes.clone(),
        );
        r.register(
            "inference_objective_response_sizes",
            "Inference objective responses size distribution in bytes for each model and target model.",
            self.response_sizes.clone(),
        );
        r.register(
            "inference_objective_input_tokens",
            "Inference objective input token count distribution for requests in each model.",
            self.input_tokens.clone(),
        );
        r.register(
            "inference_objective_output_tokens",
            "Inference objective output token count distribution for requests in each model.",
            self.output_tokens.clone(),
        );
        r.register(
            "inference_objective_prompt_cached_tokens",
            "Inference objective prompt cached token count distribution for requests in each model.",
            self.prompt_cached_tokens.clone(),
        );
        r.register(
            "inference_objective_normalized_time_per_output_token_seconds",
            "Inference objective latency divided by number of output tokens in seconds for each model and target model.",
            self.normalized_time_per_output_token_seconds.clone(),
        );
        r.register(
            "inference_objective_running_requests",
            "Inference objective number of running requests in each model.",
            self.running_requests.clone(),
        );
        r.register(
            "inference_extension_scheduler_e2e_duration_seconds",
            "End-to-end scheduling latency distribution in seconds.",
            self.scheduler_e2e_duration_seconds.clone(),
        );
        r.register(
            "inference_extension_scheduler_attempts",
            "Number of scheduling attempts by status and chosen endpoint.",
            self.scheduler_attempts_total.clone(),
        );
        r.register(
            "inference_extension_model_rewrite_decisions",
            "Number of model rewrite decisions by rewrite, incoming model and target model.",
            self.model_rewrite_decisions_total.clone(),
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
        let m = RequestMetrics::new();
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
