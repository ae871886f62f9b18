//! The one assembly point: a validated [`EndpointPickerConfig`] and the process flags become a
//! [`Runtime`] — the scheduler and its producers, admission (legacy shedding or flow control),
//! the saturation detector, the ext_proc options and the data layer's collector settings.
//!
//! A runtime is immutable. The request path holds the current one in an `ArcSwap`
//! ([`crate::extproc::Director`]); each stream keeps the `Arc<Runtime>` it was admitted and
//! scheduled with until its response completes, so a reload never strands a request. [`Live`]
//! builds the next runtime when the configuration changes, carries over what must survive
//! (the prefix index, in-flight counts, the flow controller's queues and VTC counters), swaps it
//! in, and keeps the background parts (flow-control dispatcher, scraper) in step.

mod live;
mod scheduler;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use live::{Live, ReloadFailure, ReloadMetrics};
pub use scheduler::{BuiltScheduler, PluginHandles, build_scheduler};

use crate::config::model::BandSpec;
use crate::config::{ConfigError, ConfigErrors, EndpointPickerConfig, PluginSpec};
use crate::datalayer::{CollectorConfig, MetricsSourceParams};
use crate::extproc::ExtProcOptions;
use crate::flowcontrol::{BandConfig, ControllerConfig, Fairness, FlowControl, Ordering};
use crate::scheduling::plugins::UtilizationFilter;
use crate::scheduling::{SaturationDetector, Scheduler};

/// What the runtime takes from the command line.
#[derive(Debug, Clone)]
pub struct Flags {
    /// The `name`/`inference_pool` label of the pool metrics.
    pub pool_name: String,
    /// Reported in the `namespace` label of scheduler metrics.
    pub pool_namespace: String,
    pub max_request_body_bytes: usize,
    pub disable_endpoint_subset_filter: bool,
    pub refresh_metrics_interval: Duration,
    pub refresh_prometheus_metrics_interval: Duration,
    pub metrics_staleness_threshold: Duration,
    /// The deprecated `--model-server-metrics-*` flags, applied where the config leaves the
    /// data source's parameters at their defaults (GIE: parameters > changed flag > default).
    pub model_server_metrics_scheme: Option<String>,
    pub model_server_metrics_path: Option<String>,
    pub model_server_metrics_insecure_skip_verify: Option<bool>,
    /// `--model-server-metrics-port`, when it applies (every endpoint serves on one port).
    pub model_server_metrics_port: Option<u16>,
    /// `--emit-endpoint-scores`: tell the gateway the top endpoints' total scores.
    pub emit_endpoint_scores: bool,
    /// Client-chosen label values (model names, fairness ids) kept per bound.
    pub max_label_values: usize,
    /// A tenant's VTC state is collected after it was idle this long.
    pub fairness_idle_timeout: Duration,
}

impl Default for Flags {
    /// GIE's defaults.
    fn default() -> Self {
        Self {
            pool_name: "switchyard".into(),
            pool_namespace: "default".into(),
            max_request_body_bytes: 64 << 20,
            disable_endpoint_subset_filter: false,
            refresh_metrics_interval: Duration::from_millis(50),
            refresh_prometheus_metrics_interval: Duration::from_secs(5),
            metrics_staleness_threshold: Duration::from_secs(2),
            model_server_metrics_scheme: None,
            model_server_metrics_path: None,
            model_server_metrics_insecure_skip_verify: None,
            model_server_metrics_port: None,
            emit_endpoint_scores: false,
            max_label_values: crate::telemetry::DEFAULT_LABEL_VALUES,
            fairness_idle_timeout: crate::flowcontrol::controller::DEFAULT_TENANT_IDLE_TIMEOUT,
        }
    }
}

impl Flags {
    /// Every flag value the runtime cannot run with, named by its flag.
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut check = |flag: &str, ok: bool, reason: &str| {
            if !ok {
                errors.push(ConfigError {
                    path: flag.to_string(),
                    message: reason.to_string(),
                });
            }
        };
        check(
            "--max-request-body-bytes",
            self.max_request_body_bytes > 0,
            "must be > 0",
        );
        check(
            "--max-label-values",
            self.max_label_values > 0,
            "must be > 0",
        );
        for (flag, d) in [
            ("--refresh-metrics-interval", self.refresh_metrics_interval),
            (
                "--refresh-prometheus-metrics-interval",
                self.refresh_prometheus_metrics_interval,
            ),
            (
                "--metrics-staleness-threshold",
                self.metrics_staleness_threshold,
            ),
            ("--fairness-idle-timeout", self.fairness_idle_timeout),
        ] {
            check(
                flag,
                d >= Duration::from_millis(1),
                &format!("must be at least 1ms, got {d:?}"),
            );
        }
        errors
    }
}

/// Where the configuration in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// No `--config-file` or `--config-text`.
    BuiltIn,
    /// `--config-text`.
    Text,
    /// `--config-file`, watched for changes.
    File(PathBuf),
}

/// The configuration in force: where it came from, a hash of its text, when it was loaded.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub origin: ConfigOrigin,
    /// Hex xxh64 of the document's bytes.
    pub hash: String,
    pub loaded_at: SystemTime,
}

impl ConfigSource {
    pub fn new(origin: ConfigOrigin, text: &[u8]) -> Self {
        Self {
            origin,
            hash: format!("{:016x}", xxhash_rust::xxh64::xxh64(text, 0)),
            loaded_at: SystemTime::now(),
        }
    }
}

/// Everything one configuration decides, ready for the request path.
pub struct Runtime {
    pub config: Arc<EndpointPickerConfig>,
    pub source: ConfigSource,
    pub scheduler: Scheduler,
    pub plugins: PluginHandles,
    /// The configured saturation detector, when it can judge the pool (legacy shedding needs it).
    pub saturation: Option<Arc<dyn SaturationDetector>>,
    /// The flow controller's configuration when the `flowControl` gate is on.
    pub flow_control_config: Option<ControllerConfig>,
    /// What flow control judges saturation with: the configured detector, else GIE's
    /// utilization detector with its defaults.
    pub flow_control_detector: Arc<dyn SaturationDetector>,
    /// The process's flow controller, attached by [`Live`] when this configuration queues.
    pub flow_control: Option<Arc<FlowControl>>,
    pub extproc: ExtProcOptions,
    /// `None` when metrics collection is disabled (`dataLayer: {sources: []}`).
    pub collector: Option<CollectorConfig>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("source", &self.source)
            .field("flow_control", &self.flow_control_config.is_some())
            .field("extproc", &self.extproc)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the runtime for `cfg` from scratch.
    pub fn build(
        cfg: EndpointPickerConfig,
        source: ConfigSource,
        flags: &Flags,
    ) -> Result<Runtime, ConfigErrors> {
        Self::assemble(cfg, source, flags, None)
    }

    /// Builds the runtime for `cfg` taking over `previous`'s stateful plugins where `cfg` keeps
    /// them (a configuration reload).
    pub fn rebuild(
        cfg: EndpointPickerConfig,
        source: ConfigSource,
        flags: &Flags,
        previous: &Runtime,
    ) -> Result<Runtime, ConfigErrors> {
        Self::assemble(cfg, source, flags, Some(&previous.plugins))
    }

    fn assemble(
        cfg: EndpointPickerConfig,
        source: ConfigSource,
        flags: &Flags,
        previous: Option<&PluginHandles>,
    ) -> Result<Runtime, ConfigErrors> {
        let errors = flags.validate();
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let built = build_scheduler(&cfg, previous);
        let flow_control_detector = built
            .saturation
            .clone()
            .unwrap_or_else(|| Arc::new(UtilizationFilter::default()));
        let extproc = ExtProcOptions {
            max_request_body_bytes: flags.max_request_body_bytes,
            disable_subset_filter: flags.disable_endpoint_subset_filter,
            passthrough: matches!(
                cfg.plugin(cfg.parser).spec,
                PluginSpec::PassthroughParser(_)
            ),
            served_verifier: cfg
                .plugins
                .iter()
                .any(|p| matches!(p.spec, PluginSpec::DestinationEndpointServedVerifier(_))),
            pool_namespace: flags.pool_namespace.clone(),
            emit_endpoint_scores: flags.emit_endpoint_scores,
        };
        let flow_control_config = flow_control_config(&cfg).map(|c| ControllerConfig {
            tenant_idle_timeout: flags.fairness_idle_timeout,
            ..c
        });
        Ok(Runtime {
            flow_control_config,
            collector: collector_config(&cfg, flags),
            config: Arc::new(cfg),
            source,
            scheduler: built.scheduler,
            plugins: built.handles,
            saturation: built.saturation,
            flow_control_detector,
            flow_control: None,
            extproc,
        })
    }
}

/// The controller configuration the `flowControl` section describes; `None` when the feature
/// gate is off (then admission is GIE's legacy one: sheddable requests shed when saturated).
pub fn flow_control_config(cfg: &EndpointPickerConfig) -> Option<ControllerConfig> {
    let fc = cfg.flow_control.as_ref()?;
    let band = |b: &BandSpec| BandConfig {
        max_bytes: b.max_bytes,
        max_requests: b.max_requests,
        ordering: match &cfg.plugin(b.ordering_policy).spec {
            PluginSpec::EdfOrderingPolicy(_) => Ordering::Edf,
            _ => Ordering::Fcfs,
        },
        fairness: match &cfg.plugin(b.fairness_policy).spec {
            PluginSpec::RoundRobinFairnessPolicy(_) => Fairness::RoundRobin,
            PluginSpec::VtcFairnessPolicy(p) => Fairness::Vtc(p.clone()),
            _ => Fairness::GlobalStrict,
        },
    };
    let ceiling = match &cfg.plugin(fc.usage_limit_policy).spec {
        PluginSpec::StaticUsageLimitPolicy(p) => p.threshold,
        _ => 1.0,
    };
    Some(ControllerConfig {
        max_bytes: fc.max_bytes,
        max_requests: fc.max_requests,
        default_ttl: fc.default_request_ttl,
        default_band: band(&fc.default_band),
        default_negative_band: fc.default_negative_band.as_ref().map(band),
        bands: fc
            .bands
            .iter()
            .filter_map(|b| Some((b.priority?, band(b))))
            .collect(),
        ceiling,
        ..ControllerConfig::default()
    })
}

/// The data-layer settings of `cfg` and the flags, or `None` when collection is disabled. The
/// first `metrics-data-source` and its first `core-metrics-extractor` are used.
pub fn collector_config(cfg: &EndpointPickerConfig, flags: &Flags) -> Option<CollectorConfig> {
    let sources = cfg.data_layer.as_ref()?;
    let (source, extractor) = sources.iter().find_map(|s| {
        let PluginSpec::MetricsDataSource(p) = &cfg.plugin(s.source).spec else {
            return None;
        };
        let x = s
            .extractors
            .iter()
            .find_map(|&i| match &cfg.plugin(i).spec {
                PluginSpec::CoreMetricsExtractor(x) => Some(x.clone()),
                _ => None,
            });
        Some((p.clone(), x.unwrap_or_default()))
    })?;
    let mut c = CollectorConfig {
        pool_name: flags.pool_name.clone(),
        source,
        extractor,
        metrics_port: flags.model_server_metrics_port,
        refresh_interval: flags.refresh_metrics_interval,
        staleness_threshold: flags.metrics_staleness_threshold,
        prometheus_refresh_interval: flags.refresh_prometheus_metrics_interval,
        ..CollectorConfig::default()
    };
    let defaults = MetricsSourceParams::default();
    if let Some(s) = &flags.model_server_metrics_scheme
        && c.source.scheme == defaults.scheme
    {
        c.source.scheme = s.clone();
    }
    if let Some(p) = &flags.model_server_metrics_path
        && c.source.path == defaults.path
    {
        c.source.path = p.clone();
    }
    if let Some(v) = flags.model_server_metrics_insecure_skip_verify
        && c.source.insecure_skip_verify == defaults.insecure_skip_verify
    {
        c.source.insecure_skip_verify = v;
    }
    Some(c)
}
