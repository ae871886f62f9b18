//! Builds the runtime [`Scheduler`] from the effective configuration. Each plugin instance is
//! created once and shared by every profile that references it.

use std::sync::Arc;

use super::model::EndpointPickerConfig;
use super::registry::PluginSpec;
use crate::scheduling::plugins::*;
use crate::scheduling::{
    Filter, NamedFilter, Picker, ProfileHandler, Scheduler, SchedulerProfile, Scorer,
    WeightedScorer,
};

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
    /// The saturation detector that admission consults, when it can judge on its own. The
    /// concurrency detector needs in-flight tracking from the request path, so it is not
    /// available here.
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

    /// The scheduler this configuration describes. Data producers (prefix index, in-flight load)
    /// attach here as they are built; until one runs, its consumers see no data (prefix score 0,
    /// no load), exactly as GIE scores without a producer.
    pub fn build_scheduler(&self) -> Scheduler {
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
        Scheduler::new(profiles, handler)
    }
}
