//! `inference_extension_plugin_duration_seconds`: every plugin call timed as GIE times it, with
//! its extension point, type and name. The runtime wraps each plugin of a built scheduler in a
//! `Timed` shell, so the scheduling core itself never reads a clock. The label set of each
//! wrapper is resolved once when the scheduler is built: a call costs two clock reads and one
//! histogram observation.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::scheduling::plugin::{
    Filter, FilterCheck, Picker, PreRequest, ProfileHandler, ProfileOutcomes, ResponseComplete,
    SchedulerRng, SchedulingContext, SchedulingResult, ScoredEndpoint, Scorer, ScorerCategory,
    Usage,
};
use crate::scheduling::{Request, SchedulingError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub extension_point: &'static str,
    pub plugin_type: &'static str,
    pub plugin_name: String,
}

fn histogram() -> Histogram {
    Histogram::new(super::SCHEDULER_BUCKETS)
}

/// The metric family, shared by every scheduler built (across configuration reloads).
#[derive(Clone)]
pub struct PluginDurations {
    family: Family<PluginLabels, Histogram, fn() -> Histogram>,
}

impl Default for PluginDurations {
    fn default() -> Self {
        Self {
            family: Family::new_with_constructor(histogram),
        }
    }
}

impl std::fmt::Debug for PluginDurations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginDurations")
    }
}

impl PluginDurations {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "inference_extension_plugin_duration_seconds",
            "Plugin processing latency distribution in seconds for each extension point, plugin type and plugin name.",
            self.family.clone(),
        );
    }

    fn series(&self, point: &'static str, plugin_type: &'static str, name: &str) -> Histogram {
        self.family
            .get_or_create(&PluginLabels {
                extension_point: point,
                plugin_type,
                plugin_name: name.to_string(),
            })
            .clone()
    }

    pub fn filter(&self, name: &str, inner: Arc<dyn Filter>) -> Arc<dyn Filter> {
        Arc::new(Timed {
            h: self.series("Filter", inner.type_name(), name),
            inner,
        })
    }

    pub fn scorer(&self, name: &str, inner: Arc<dyn Scorer>) -> Arc<dyn Scorer> {
        Arc::new(Timed {
            h: self.series("Scorer", inner.type_name(), name),
            inner,
        })
    }

    pub fn picker(&self, name: &str, inner: Arc<dyn Picker>) -> Arc<dyn Picker> {
        Arc::new(Timed {
            h: self.series("Picker", inner.type_name(), name),
            inner,
        })
    }

    pub fn profile_handler(
        &self,
        name: &str,
        inner: Arc<dyn ProfileHandler>,
    ) -> Arc<dyn ProfileHandler> {
        Arc::new(TimedHandler {
            pick: self.series("ProfilePicker", inner.type_name(), name),
            process: self.series("ProcessProfilesResults", inner.type_name(), name),
            inner,
        })
    }

    pub fn pre_request(&self, name: &str, inner: Arc<dyn PreRequest>) -> Arc<dyn PreRequest> {
        Arc::new(Timed {
            h: self.series("PreRequest", inner.type_name(), name),
            inner,
        })
    }

    pub fn response_complete(
        &self,
        name: &str,
        inner: Arc<dyn ResponseComplete>,
    ) -> Arc<dyn ResponseComplete> {
        Arc::new(Timed {
            h: self.series("ResponseComplete", inner.type_name(), name),
            inner,
        })
    }
}

struct Timed<T: ?Sized> {
    h: Histogram,
    inner: Arc<T>,
}

impl<T: ?Sized> Timed<T> {
    #[inline]
    fn time<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let start = Instant::now();
        let r = f(&self.inner);
        self.h.observe(start.elapsed().as_secs_f64());
        r
    }
}

impl Filter for Timed<dyn Filter> {
    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }
    fn filter(&self, ctx: &SchedulingContext<'_>, c: &mut Vec<usize>, rng: &mut SchedulerRng) {
        self.time(|f| f.filter(ctx, c, rng));
    }
    /// Explaining is not a plugin call of the request path: not timed.
    fn check(&self, ctx: &SchedulingContext<'_>, index: usize) -> FilterCheck {
        self.inner.check(ctx, index)
    }
}

impl Scorer for Timed<dyn Scorer> {
    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }
    fn category(&self) -> ScorerCategory {
        self.inner.category()
    }
    fn score(&self, ctx: &SchedulingContext<'_>, candidates: &[usize], out: &mut [f64]) {
        self.time(|s| s.score(ctx, candidates, out));
    }
}

impl Picker for Timed<dyn Picker> {
    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }
    fn pick(&self, scored: &[ScoredEndpoint], rng: &mut SchedulerRng) -> Vec<ScoredEndpoint> {
        self.time(|p| p.pick(scored, rng))
    }
}

impl PreRequest for Timed<dyn PreRequest> {
    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }
    fn pre_request(&self, ctx: &SchedulingContext<'_>, result: &SchedulingResult) {
        self.time(|p| p.pre_request(ctx, result));
    }
}

impl ResponseComplete for Timed<dyn ResponseComplete> {
    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }
    fn response_complete(&self, request: &Request, endpoint: &str, usage: Option<Usage>) {
        self.time(|p| p.response_complete(request, endpoint, usage));
    }
}

struct TimedHandler {
    pick: Histogram,
    process: Histogram,
    inner: Arc<dyn ProfileHandler>,
}

impl ProfileHandler for TimedHandler {
    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }
    fn pick_profiles(&self, ctx: &SchedulingContext<'_>, outcomes: &ProfileOutcomes) -> Vec<usize> {
        let start = Instant::now();
        let r = self.inner.pick_profiles(ctx, outcomes);
        self.pick.observe(start.elapsed().as_secs_f64());
        r
    }
    fn process_results(
        &self,
        profile_names: &[String],
        outcomes: ProfileOutcomes,
    ) -> Result<SchedulingResult, SchedulingError> {
        let start = Instant::now();
        let r = self.inner.process_results(profile_names, outcomes);
        self.process.observe(start.elapsed().as_secs_f64());
        r
    }
}
