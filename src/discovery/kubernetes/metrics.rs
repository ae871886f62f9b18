//! What the Kubernetes source exports: objects in each watch cache, invalid objects skipped,
//! watch restarts and relists, and when each watch last completed a full list.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Kind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `InferencePool`, `Pod`, `InferenceObjective` or `InferenceModelRewrite`.
    pub kind: &'static str,
}

impl KindLabels {
    fn of(kind: Kind) -> Self {
        Self {
            kind: kind.as_str(),
        }
    }
}

/// The source's metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct KubeMetrics {
    objects: Family<KindLabels, Gauge>,
    invalid: Family<KindLabels, Gauge>,
    restarts: Family<KindLabels, Counter>,
    relists: Family<KindLabels, Counter>,
    last_sync: Family<KindLabels, Gauge<f64, AtomicU64>>,
}

impl KubeMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("switchyard_kubernetes");
        r.register(
            "objects",
            "Objects in the watch cache, by kind",
            self.objects.clone(),
        );
        r.register(
            "invalid_objects",
            "Objects in the watch cache that were skipped as invalid (see the log), by kind",
            self.invalid.clone(),
        );
        r.register(
            "watch_restarts",
            "Watch or list failures after which the watcher restarted (with backoff), by kind",
            self.restarts.clone(),
        );
        r.register(
            "relists",
            "Full lists after the first (410 Gone, or a watch that could not resume), by kind",
            self.relists.clone(),
        );
        r.register(
            "last_sync_timestamp_seconds",
            "When the watch last completed a full list (Unix time), by kind",
            self.last_sync.clone(),
        );
    }

    pub(super) fn set_objects(&self, kind: Kind, n: usize, invalid: usize) {
        self.objects
            .get_or_create(&KindLabels::of(kind))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        self.invalid
            .get_or_create(&KindLabels::of(kind))
            .set(i64::try_from(invalid).unwrap_or(i64::MAX));
    }

    pub(super) fn restarted(&self, kind: Kind) {
        self.restarts.get_or_create(&KindLabels::of(kind)).inc();
    }

    pub(super) fn relisted(&self, kind: Kind) {
        self.relists.get_or_create(&KindLabels::of(kind)).inc();
    }

    pub(super) fn synced_now(&self, kind: Kind) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_sync.get_or_create(&KindLabels::of(kind)).set(now);
    }

    /// Relists so far for `kind` (for tests).
    pub fn relists(&self, kind: Kind) -> u64 {
        self.relists.get_or_create(&KindLabels::of(kind)).get()
    }

    /// Watch restarts so far for `kind` (for tests).
    pub fn restarts(&self, kind: Kind) -> u64 {
        self.restarts.get_or_create(&KindLabels::of(kind)).get()
    }
}
