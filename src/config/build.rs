//! Builds the runtime [`Scheduler`] from the effective configuration. Each plugin instance is
//! created once and shared by every profile that references it.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use super::model::EndpointPickerConfig;
use super::params::PrefixProducerParams;
use super::registry::PluginSpec;
use crate::prefix::PrefixMetrics;
use crate::prefix::producer::{ApproxPrefixCacheProducer, PrefixSettings};
use crate::scheduling::plugins::*;
use crate::scheduling::{
    DataProducer, Filter, NamedFilter, Picker, PreRequest, ProfileHandler, ResponseComplete,
    Scheduler, SchedulerProfile, Scorer, WeightedScorer,
};

/// A built scheduler plus handles on its stateful plugins, which the server needs besides
/// decisions: metrics to register and endpoints to forget when they leave the pool.
pub struct BuiltScheduler {
    pub scheduler: Scheduler,
    pub prefix_producers: Vec<Arc<ApproxPrefixCacheProducer>>,
    pub inflight_producers: Vec<Arc<InflightLoadProducer>>,
    /// Shared by every prefix producer; registered once.
    pub prefix_metrics: PrefixMetrics,
    /// The configured saturation detector; the concurrency detector reads the in-flight
    /// counts of this scheduler's in-flight producer.
    pub saturation: Option<Arc<dyn crate::scheduling::SaturationDetector>>,
}

impl BuiltScheduler {
    /// Registers the prefix indexer metrics (GIE registers them whether or not a producer runs).
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.prefix_metrics.register(registry);
    }

    /// Forgets every endpoint for which `keep` is false in the prefix indexes and the in-flight
    /// counters; call it when endpoints leave the pool.
    pub fn retain_endpoints(&self, keep: impl Fn(&str) -> bool) {
        for p in &self.prefix_producers {
            p.retain_endpoints(&keep);
        }
        for p in &self.inflight_producers {
            p.retain_endpoints(&keep);
        }
    }
}

/// The producers' per-endpoint state, kept after the scheduler moves into the request path so
/// that departed endpoints can be forgotten.
#[derive(Clone, Default)]
pub struct ProducerHandles {
    pub prefix_producers: Vec<Arc<ApproxPrefixCacheProducer>>,
    pub inflight_producers: Vec<Arc<InflightLoadProducer>>,
}

impl ProducerHandles {
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

impl BuiltScheduler {
    /// The scheduler and the handles that outlive it.
    pub fn into_parts(self) -> (Scheduler, ProducerHandles) {
        (
            self.scheduler,
            ProducerHandles {
                prefix_producers: self.prefix_producers,
                inflight_producers: self.inflight_producers,
            },
        )
    }
}

impl From<&PrefixProducerParams> for PrefixSettings {
    fn from(p: &PrefixProducerParams) -> Self {
        Self {
            auto_tune: p.auto_tune,
            block_size_tokens: p.block_size_tokens,
            max_blocks: p.max_blocks(),
            lru_capacity_per_server: p.lru_capacity_per_server,
        }
    }
}

fn filter_of(spec: &PluginSpec) -> Option<Arc<dyn Filter>> {
    Some(match spec {
        PluginSpec::HeaderBasedTestingFilter => Arc::new(HeaderBasedTestingFilter),
        PluginSpec::PrefixCacheAffinityFilter(p) => Arc::new(PrefixCacheAffinityFilter {
            affinity_threshold: p.affinity_threshold,
            exploration_probability: p.exploration_probability,
        }),
        PluginSpec::UtilizationDetector(p) => Arc::new(UtilizationFilter {
            queue_depth_threshold: p.queue_depth_threshold,
            kv_cache_util_threshold: p.kv_cache_util_threshold,
            metrics_staleness_threshold: p.metrics_staleness_threshold,
            headroom: p.headroom,
        }),
        PluginSpec::ConcurrencyDetector(p) => Arc::new(ConcurrencyFilter {
            mode: p.mode,
            max_concurrency: p.max_concurrency,
            max_token_concurrency: p.max_token_concurrency,
            headroom: p.headroom,
        }),
        _ => return None,
    })
}

fn scorer_of(spec: &PluginSpec) -> Option<Arc<dyn Scorer>> {
    Some(match spec {
        PluginSpec::QueueScorer => Arc::new(QueueScorer),
        PluginSpec::KvCacheUtilizationScorer => Arc::new(KvCacheUtilizationScorer),
        PluginSpec::RunningRequestsSizeScorer => Arc::new(RunningRequestsSizeScorer),
        PluginSpec::LoraAffinityScorer => Arc::new(LoraAffinityScorer),
        PluginSpec::PrefixCacheScorer { .. } => Arc::new(PrefixCacheScorer),
        PluginSpec::TokenLoadScorer(p) => Arc::new(TokenLoadScorer {
            queue_threshold_tokens: p.queue_threshold_tokens,
        }),
        _ => return None,
    })
}

fn picker_of(spec: &PluginSpec) -> Option<Arc<dyn Picker>> {
    Some(match spec {
        PluginSpec::MaxScorePicker(p) => Arc::new(MaxScorePicker {
            max_endpoints: p.max_num_of_endpoints,
        }),
        PluginSpec::RandomPicker(p) => Arc::new(RandomPicker {
            max_endpoints: p.max_num_of_endpoints,
        }),
        PluginSpec::WeightedRandomPicker(p) => Arc::new(WeightedRandomPicker {
            max_endpoints: p.max_num_of_endpoints,
        }),
        _ => return None,
    })
}

fn handler_of(spec: &PluginSpec) -> Option<Arc<dyn ProfileHandler>> {
    match spec {
        PluginSpec::SingleProfileHandler => Some(Arc::new(SingleProfileHandler)),
        _ => None,
    }
}

impl EndpointPickerConfig {
    /// The saturation detector that admission consults, when it can judge from scraped metrics
    /// alone. The concurrency detector needs the in-flight counts of a built scheduler: see
    /// [`BuiltScheduler::saturation`].
    pub fn build_saturation_detector(
        &self,
    ) -> Option<Arc<dyn crate::scheduling::SaturationDetector>> {
        match &self.plugin(self.saturation_detector).spec {
            PluginSpec::UtilizationDetector(p) => Some(Arc::new(UtilizationFilter {
                queue_depth_threshold: p.queue_depth_threshold,
                kv_cache_util_threshold: p.kv_cache_util_threshold,
                metrics_staleness_threshold: p.metrics_staleness_threshold,
                headroom: p.headroom,
            })),
            _ => None,
        }
    }

    /// The scheduler this configuration describes, without the plugin handles.
    pub fn build_scheduler(&self) -> Scheduler {
        self.build().scheduler
    }

    /// The scheduler with its data producers (prefix index, in-flight load) and their
    /// pre-request and response-complete hooks. Producers consume no other producer's data, so
    /// any order satisfies their dependencies; they run in definition order.
    pub fn build(&self) -> BuiltScheduler {
        let n = self.plugins.len();
        let mut filters: Vec<Option<Arc<dyn Filter>>> = vec![None; n];
        let mut scorers: Vec<Option<Arc<dyn Scorer>>> = vec![None; n];
        let mut pickers: Vec<Option<Arc<dyn Picker>>> = vec![None; n];
        for (i, p) in self.plugins.iter().enumerate() {
            filters[i] = filter_of(&p.spec);
            scorers[i] = scorer_of(&p.spec);
            pickers[i] = picker_of(&p.spec);
        }
        let profiles = self
            .profiles
            .iter()
            .map(|p| SchedulerProfile {
                name: p.name.clone(),
                filters: p
                    .filters
                    .iter()
                    .map(|&f| NamedFilter {
                        name: self.plugins[f].name.clone(),
                        filter: filters[f].clone().expect("validated as a filter"),
                    })
                    .collect(),
                scorers: p
                    .scorers
                    .iter()
                    .map(|&(s, weight)| WeightedScorer {
                        name: self.plugins[s].name.clone(),
                        scorer: scorers[s].clone().expect("validated as a scorer"),
                        weight,
                    })
                    .collect(),
                picker_name: self.plugins[p.picker].name.clone(),
                picker: pickers[p.picker].clone().expect("validated as a picker"),
            })
            .collect();
        let handler = handler_of(&self.plugin(self.profile_handler).spec)
            .expect("validated as a profile handler");

        let prefix_metrics = PrefixMetrics::new();
        let mut prefix_producers = Vec::new();
        let mut inflight_producers = Vec::new();
        let mut producers: Vec<Arc<dyn DataProducer>> = Vec::new();
        let mut pre_request: Vec<Arc<dyn PreRequest>> = Vec::new();
        let mut response_complete: Vec<Arc<dyn ResponseComplete>> = Vec::new();
        for p in &self.plugins {
            match &p.spec {
                PluginSpec::ApproxPrefixCacheProducer(params) => {
                    let prod = Arc::new(ApproxPrefixCacheProducer::new(
                        params.into(),
                        prefix_metrics.clone(),
                    ));
                    producers.push(prod.clone());
                    pre_request.push(prod.clone());
                    prefix_producers.push(prod);
                }
                PluginSpec::InflightLoadProducer => {
                    let prod = Arc::new(InflightLoadProducer::new());
                    producers.push(prod.clone());
                    pre_request.push(prod.clone());
                    response_complete.push(prod.clone());
                    inflight_producers.push(prod);
                }
                _ => {}
            }
        }
        let scheduler = Scheduler::new(profiles, handler)
            .with_producers(producers)
            .with_pre_request(pre_request)
            .with_response_complete(response_complete);
        let saturation = match &self.plugin(self.saturation_detector).spec {
            PluginSpec::ConcurrencyDetector(p) => inflight_producers.first().map(|inflight| {
                Arc::new(ConcurrencyDetector {
                    mode: p.mode,
                    max_concurrency: p.max_concurrency,
                    max_token_concurrency: p.max_token_concurrency,
                    inflight: inflight.clone(),
                }) as Arc<dyn crate::scheduling::SaturationDetector>
            }),
            _ => self.build_saturation_detector(),
        };
        BuiltScheduler {
            scheduler,
            prefix_producers,
            inflight_producers,
            prefix_metrics,
            saturation,
        }
    }
}
