//! The scheduler a configuration describes: each plugin instance created once and shared by
//! every profile that references it, the data producers with their pre-request and
//! response-complete hooks, and the saturation detector (the concurrency detector counts this
//! scheduler's in-flight requests).

use std::sync::Arc;

use crate::config::{EndpointPickerConfig, PluginSpec};
use crate::prefix::PrefixMetrics;
use crate::prefix::producer::ApproxPrefixCacheProducer;
use crate::scheduling::plugins::InflightLoadProducer;
use crate::scheduling::{
    DataProducer, Filter, NamedFilter, Picker, PreRequest, ProfileHandler, ResponseComplete,
    SaturationDetector, Scheduler, SchedulerProfile, Scorer, WeightedScorer,
};
use crate::telemetry::plugins::PluginDurations;

/// The stateful plugins of a scheduler, which outlive a configuration reload when the new one
/// keeps them (the prefix index when its hashing is unchanged, the in-flight counts always) and
/// forget endpoints that leave the pool.
#[derive(Clone, Default)]
pub struct PluginHandles {
    pub prefix_producers: Vec<Arc<ApproxPrefixCacheProducer>>,
    pub inflight_producers: Vec<Arc<InflightLoadProducer>>,
    /// Shared by every prefix producer, across reloads: registered once.
    pub prefix_metrics: PrefixMetrics,
    /// `inference_extension_plugin_duration_seconds`, shared across reloads: registered once.
    pub plugin_durations: PluginDurations,
}

impl PluginHandles {
    /// For each prefix producer, whether it uses `other`'s index (a reload or an alternative
    /// configuration that kept the hashing), rather than a new, empty one.
    pub fn prefix_index_shared_with(&self, other: &PluginHandles) -> Vec<bool> {
        self.prefix_producers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                other
                    .prefix_producers
                    .get(i)
                    .is_some_and(|o| Arc::ptr_eq(o.index(), p.index()))
            })
            .collect()
    }

    /// Forgets every endpoint for which `keep` is false.
    pub fn retain_endpoints(&self, keep: impl Fn(&str) -> bool) {
        for p in &self.prefix_producers {
            p.retain_endpoints(&keep);
        }
        for p in &self.inflight_producers {
            p.retain_endpoints(&keep);
        }
    }
}

/// A built scheduler with its plugin handles and saturation detector.
pub struct BuiltScheduler {
    pub scheduler: Scheduler,
    pub handles: PluginHandles,
    /// The configured saturation detector, when it can judge the pool.
    pub saturation: Option<Arc<dyn SaturationDetector>>,
}

/// Builds the scheduler `cfg` describes. Stateful plugins are taken over from `previous` where
/// the new configuration keeps them (see [`PluginHandles`]).
pub fn build_scheduler(
    cfg: &EndpointPickerConfig,
    previous: Option<&PluginHandles>,
) -> BuiltScheduler {
    let timing = previous.map_or_else(PluginDurations::default, |p| p.plugin_durations.clone());
    let n = cfg.plugins.len();
    let mut filters: Vec<Option<Arc<dyn Filter>>> = vec![None; n];
    let mut scorers: Vec<Option<Arc<dyn Scorer>>> = vec![None; n];
    let mut pickers: Vec<Option<Arc<dyn Picker>>> = vec![None; n];
    for (i, p) in cfg.plugins.iter().enumerate() {
        filters[i] = p.spec.as_filter().map(|f| timing.filter(&p.name, f));
        scorers[i] = p.spec.as_scorer().map(|s| timing.scorer(&p.name, s));
        pickers[i] = p.spec.as_picker().map(|k| timing.picker(&p.name, k));
    }
    let profiles = cfg
        .profiles
        .iter()
        .map(|p| SchedulerProfile {
            name: p.name.clone(),
            filters: p
                .filters
                .iter()
                .map(|&f| NamedFilter {
                    name: cfg.plugins[f].name.clone(),
                    filter: filters[f].clone().expect("validated as a filter"),
                })
                .collect(),
            scorers: p
                .scorers
                .iter()
                .map(|&(s, weight)| WeightedScorer {
                    name: cfg.plugins[s].name.clone(),
                    scorer: scorers[s].clone().expect("validated as a scorer"),
                    weight,
                })
                .collect(),
            picker_name: cfg.plugins[p.picker].name.clone(),
            picker: pickers[p.picker].clone().expect("validated as a picker"),
        })
        .collect();
    let handler: Arc<dyn ProfileHandler> = match &cfg.plugin(cfg.profile_handler).spec {
        PluginSpec::SingleProfileHandler(h) => Arc::new(h.clone()),
        other => unreachable!("validated as a profile handler: {}", other.type_name()),
    };
    let handler = timing.profile_handler(&cfg.plugin(cfg.profile_handler).name, handler);

    let prefix_metrics = previous.map_or_else(PrefixMetrics::new, |p| p.prefix_metrics.clone());
    let mut handles = PluginHandles {
        prefix_metrics: prefix_metrics.clone(),
        plugin_durations: timing.clone(),
        ..PluginHandles::default()
    };
    let mut producers: Vec<Arc<dyn DataProducer>> = Vec::new();
    let mut pre_request: Vec<Arc<dyn PreRequest>> = Vec::new();
    let mut response_complete: Vec<Arc<dyn ResponseComplete>> = Vec::new();
    for p in &cfg.plugins {
        match &p.spec {
            PluginSpec::ApproxPrefixCacheProducer(params) => {
                let i = handles.prefix_producers.len();
                // A changed hashing starts a new index; the reload logs it (see
                // `PluginHandles::prefix_index_shared_with`).
                let prod = match previous.and_then(|h| h.prefix_producers.get(i)) {
                    Some(old) if old.settings().same_hashing(params) => Arc::new(
                        ApproxPrefixCacheProducer::sharing(*params, old, prefix_metrics.clone()),
                    ),
                    _ => Arc::new(ApproxPrefixCacheProducer::new(
                        *params,
                        prefix_metrics.clone(),
                    )),
                };
                producers.push(prod.clone());
                pre_request.push(timing.pre_request(&p.name, prod.clone()));
                handles.prefix_producers.push(prod);
            }
            PluginSpec::InflightLoadProducer(_) => {
                let i = handles.inflight_producers.len();
                let prod = previous
                    .and_then(|h| h.inflight_producers.get(i).cloned())
                    .unwrap_or_else(|| Arc::new(InflightLoadProducer::new()));
                producers.push(prod.clone());
                pre_request.push(timing.pre_request(&p.name, prod.clone()));
                response_complete.push(timing.response_complete(&p.name, prod.clone()));
                handles.inflight_producers.push(prod);
            }
            _ => {}
        }
    }
    let scheduler = Scheduler::new(profiles, handler)
        .with_producers(producers)
        .with_pre_request(pre_request)
        .with_response_complete(response_complete);
    let saturation: Option<Arc<dyn SaturationDetector>> =
        match &cfg.plugin(cfg.saturation_detector).spec {
            PluginSpec::UtilizationDetector(u) => Some(Arc::new(u.clone())),
            PluginSpec::ConcurrencyDetector(c) => handles
                .inflight_producers
                .first()
                .map(|inflight| Arc::new(c.detector(inflight.clone())) as _),
            _ => None,
        };
    BuiltScheduler {
        scheduler,
        handles,
        saturation,
    }
}
