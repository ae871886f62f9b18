//! The data layer's own Prometheus metrics: GIE's pool gauges (gie-epp.md §6.1) and the scrape
//! health metrics users asked GIE for (§8 item 14).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `inference_pool_average_kv_cache_utilization` | gauge | `name` |
//! | `inference_pool_average_queue_size` | gauge | `name` |
//! | `inference_pool_average_running_requests` | gauge | `name` |
//! | `inference_pool_ready_pods` | gauge | `name` |
//! | `inference_pool_per_pod_queue_size` | gauge | `name`, `model_server_pod` |
//! | `inference_extension_model_server_scrape_duration_seconds` | histogram | `name` |
//! | `inference_extension_model_server_scrape_errors_total` | counter | `name`, `endpoint`, `reason` |
//! | `inference_extension_model_server_metrics_age_seconds` | gauge | `name`, `endpoint` |
//!
//! As in GIE the pool gauges count only endpoints whose metrics are fresher than the staleness
//! threshold and are refreshed every `--refresh-prometheus-metrics-interval`; so is the age gauge.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::health::ScrapeHealth;
use crate::scheduling::{EndpointSnapshot, Timestamp};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub name: String,
    pub endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub name: String,
    pub model_server_pod: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub name: String,
    pub endpoint: String,
    pub reason: ScrapeErrorReason,
}

/// Why a scrape failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ScrapeErrorReason {
    /// No connection (refused, unreachable, TLS handshake).
    Connect,
    /// The whole scrape took longer than the per-scrape timeout.
    Timeout,
    /// A non-2xx HTTP status.
    HttpStatus,
    /// The connection broke while reading, or the page was over the size limit.
    Body,
    /// The page was read but no configured metric could be extracted from it.
    NoMetrics,
}

impl ScrapeErrorReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::HttpStatus => "http_status",
            Self::Body => "body",
            Self::NoMetrics => "no_metrics",
        }
    }
}

impl EncodeLabelValue for ScrapeErrorReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// Scrape durations, 1 ms to about 4 s.
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    ])
}

/// The data layer's metrics, and each endpoint's scrape record. Clone-cheap handles (every
/// field is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct DataLayerMetrics {
    pool: PoolLabels,
    health: ScrapeHealth,
    avg_kv: Family<PoolLabels, F64Gauge>,
    avg_queue: Family<PoolLabels, F64Gauge>,
    avg_running: Family<PoolLabels, F64Gauge>,
    ready_pods: Family<PoolLabels, Gauge>,
    per_pod_queue: Family<PodLabels, Gauge>,
    scrape_duration: Family<PoolLabels, Histogram, fn() -> Histogram>,
    scrape_errors: Family<ErrorLabels, Counter>,
    metrics_age: Family<EndpointLabels, F64Gauge>,
}

impl DataLayerMetrics {
    /// Metrics for the pool called `pool_name` (the `name` label).
    pub fn new(pool_name: &str) -> Self {
        Self {
            pool: PoolLabels {
                name: pool_name.to_string(),
            },
            health: ScrapeHealth::default(),
            avg_kv: Family::default(),
            avg_queue: Family::default(),
            avg_running: Family::default(),
            ready_pods: Family::default(),
            per_pod_queue: Family::default(),
            scrape_duration: Family::new_with_constructor(duration_histogram),
            scrape_errors: Family::default(),
            metrics_age: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "inference_pool_average_kv_cache_utilization",
            "The average kv cache utilization for an inference server pool.",
            self.avg_kv.clone(),
        );
        registry.register(
            "inference_pool_average_queue_size",
            "The average number of requests pending in the model server queue.",
            self.avg_queue.clone(),
        );
        registry.register(
            "inference_pool_average_running_requests",
            "The average number of requests currently being processed by model servers in the pool.",
            self.avg_running.clone(),
        );
        registry.register(
            "inference_pool_ready_pods",
            "The number of ready pods in the inference server pool (endpoints with fresh metrics).",
            self.ready_pods.clone(),
        );
        registry.register(
            "inference_pool_per_pod_queue_size",
            "The total number of requests pending in the model server queue for each underlying pod.",
            self.per_pod_queue.clone(),
        );
        registry.register(
            "inference_extension_model_server_scrape_duration_seconds",
            "Time to scrape and parse one model server's metrics page, failures included.",
            self.scrape_duration.clone(),
        );
        registry.register(
            "inference_extension_model_server_scrape_errors",
            "Failed model-server metric scrapes, by endpoint and reason.",
            self.scrape_errors.clone(),
        );
        registry.register(
            "inference_extension_model_server_metrics_age_seconds",
            "Age of each endpoint's last successfully scraped metrics.",
            self.metrics_age.clone(),
        );
    }

    /// Each endpoint's scrape record (last success, failure streak, last error).
    pub fn health(&self) -> &ScrapeHealth {
        &self.health
    }

    pub fn observe_scrape(&self, took: Duration) {
        self.scrape_duration
            .get_or_create(&self.pool)
            .observe(took.as_secs_f64());
    }

    pub fn scrape_error(&self, endpoint: &str, reason: ScrapeErrorReason) {
        self.scrape_errors
            .get_or_create(&ErrorLabels {
                name: self.pool.name.clone(),
                endpoint: endpoint.to_string(),
                reason,
            })
            .inc();
    }

    /// Failed scrapes of `endpoint` for `reason` so far.
    pub fn scrape_errors(&self, endpoint: &str, reason: ScrapeErrorReason) -> u64 {
        self.scrape_errors
            .get(&ErrorLabels {
                name: self.pool.name.clone(),
                endpoint: endpoint.to_string(),
                reason,
            })
            .map_or(0, |c| c.get())
    }

    /// Recomputes the pool gauges and ages from `snap` at `now`; series of endpoints in `departed`
    /// are removed.
    pub fn refresh(
        &self,
        snap: &EndpointSnapshot,
        now: Timestamp,
        staleness: Duration,
        departed: &[String],
    ) {
        let (mut n, mut kv, mut queue, mut running) = (0u32, 0.0, 0.0, 0.0);
        for s in snap.endpoints() {
            let m = &s.metrics;
            if let Some(age) = m.age(now) {
                self.metrics_age
                    .get_or_create(&self.endpoint_labels(&s.endpoint.name))
                    .set(age.as_secs_f64());
                self.per_pod_queue
                    .get_or_create(&self.pod_labels(&s.endpoint.name))
                    .set(i64::try_from(m.waiting_queue_size).unwrap_or(i64::MAX));
            }
            if m.is_stale(now, staleness) {
                continue;
            }
            n += 1;
            kv += m.kv_cache_usage;
            queue += m.waiting_queue_size as f64;
            running += m.running_requests_size as f64;
        }
        let avg = |x: f64| if n == 0 { 0.0 } else { x / f64::from(n) };
        self.avg_kv.get_or_create(&self.pool).set(avg(kv));
        self.avg_queue.get_or_create(&self.pool).set(avg(queue));
        self.avg_running.get_or_create(&self.pool).set(avg(running));
        self.ready_pods.get_or_create(&self.pool).set(i64::from(n));
        for name in departed {
            self.metrics_age.remove(&self.endpoint_labels(name));
            self.per_pod_queue.remove(&self.pod_labels(name));
            for reason in [
                ScrapeErrorReason::Connect,
                ScrapeErrorReason::Timeout,
                ScrapeErrorReason::HttpStatus,
                ScrapeErrorReason::Body,
                ScrapeErrorReason::NoMetrics,
            ] {
                self.scrape_errors.remove(&ErrorLabels {
                    name: self.pool.name.clone(),
                    endpoint: name.clone(),
                    reason,
                });
            }
        }
    }

    fn pod_labels(&self, endpoint: &str) -> PodLabels {
        PodLabels {
            name: self.pool.name.clone(),
            model_server_pod: endpoint.to_string(),
        }
    }

    fn endpoint_labels(&self, endpoint: &str) -> EndpointLabels {
        EndpointLabels {
            name: self.pool.name.clone(),
            endpoint: endpoint.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduling::{Endpoint, EndpointMetrics, EndpointState};

    fn state(name: &str, q: u64, kv: f64, at: Option<u64>) -> EndpointState {
        EndpointState {
            endpoint: Arc::new(Endpoint::new(name, "127.0.0.1".parse().unwrap(), 8000)),
            metrics: Arc::new(EndpointMetrics {
                waiting_queue_size: q,
                running_requests_size: q * 2,
                kv_cache_usage: kv,
                updated_at: at.map(Timestamp::from_millis),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pool_gauges_count_only_fresh_endpoints() {
        let m = DataLayerMetrics::new("pool-a");
        let mut reg = Registry::default();
        m.register(&mut reg);
        let snap = EndpointSnapshot::new(vec![
            state("a", 2, 0.2, Some(9_000)),
            state("b", 4, 0.6, Some(9_500)),
            state("stale", 100, 1.0, Some(1_000)),
            state("never", 100, 1.0, None),
        ]);
        m.scrape_error("stale", ScrapeErrorReason::Timeout);
        m.observe_scrape(Duration::from_millis(3));
        m.refresh(
            &snap,
            Timestamp::from_millis(10_000),
            Duration::from_secs(2),
            &[],
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for want in [
            "inference_pool_average_kv_cache_utilization{name=\"pool-a\"} 0.4",
            "inference_pool_average_queue_size{name=\"pool-a\"} 3.0",
            "inference_pool_average_running_requests{name=\"pool-a\"} 6.0",
            "inference_pool_ready_pods{name=\"pool-a\"} 2",
            "inference_extension_model_server_scrape_errors_total{name=\"pool-a\",endpoint=\"stale\",reason=\"timeout\"} 1",
            "inference_extension_model_server_metrics_age_seconds{name=\"pool-a\",endpoint=\"stale\"} 9.0",
            "inference_extension_model_server_metrics_age_seconds{name=\"pool-a\",endpoint=\"a\"} 1.0",
            "inference_extension_model_server_scrape_duration_seconds_count{name=\"pool-a\"} 1",
            "inference_pool_per_pod_queue_size{name=\"pool-a\",model_server_pod=\"b\"} 4",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("endpoint=\"never\""));
        assert_eq!(m.scrape_errors("stale", ScrapeErrorReason::Timeout), 1);

        let empty = EndpointSnapshot::new(vec![]);
        m.refresh(
            &empty,
            Timestamp::from_millis(10_000),
            Duration::from_secs(2),
            &["stale".into(), "a".into()],
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("inference_pool_ready_pods{name=\"pool-a\"} 0"));
        assert!(text.contains("inference_pool_average_queue_size{name=\"pool-a\"} 0.0"));
        assert!(!text.contains("endpoint=\"stale\""), "{text}");
        assert!(!text.contains("endpoint=\"a\""));
        assert!(!text.contains("model_server_pod=\"a\""));
    }
}
