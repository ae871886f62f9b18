//! The scrape loop: one task per endpoint fetches `<scheme>://<ip:port><path>` every
//! `--refresh-metrics-interval`, extracts the endpoint's engine metrics and publishes them through
//! [`EndpointPool::update_metrics`]; a supervisor starts and stops those tasks as endpoints join and
//! leave; a refresher keeps the pool gauges up to date.
//!
//! A failed scrape keeps the endpoint's last metrics and their timestamp (they age; saturation
//! logic decides what stale means). Failures are logged once per transition (ok → failing, a new
//! reason, failing → ok), never per poll, and counted by reason.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::engine::{EngineMapping, Engines, SpecError};
use super::metrics::{DataLayerMetrics, ScrapeErrorReason};
use serde_json::{Value, json};

use super::extractor::ExtractorParams;
use crate::decode::{Diagnostics, Obj, Params};
use crate::pool::EndpointPool;
use crate::scheduling::{Endpoint, EndpointMetrics, Timestamp};

/// Reads the current time for the data layer. The server passes [`monotonic_clock`]; tests and
/// the simulator pass their own.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// A clock whose origin is the moment it was made (the server makes it at process start).
pub fn monotonic_clock() -> Clock {
    let origin = Instant::now();
    Arc::new(move || {
        Timestamp::from_nanos(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    })
}

/// Installs rustls' `ring` provider as the process default unless one is installed already. Safe
/// to call any number of times, from any thread.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A larger page than this is refused (a real vLLM page is 40–100 KB).
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// `metrics-data-source`'s parameters: where each endpoint's metrics page is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSourceParams {
    pub scheme: String,
    pub path: String,
    pub insecure_skip_verify: bool,
}

impl Default for MetricsSourceParams {
    fn default() -> Self {
        Self {
            scheme: "http".into(),
            path: "/metrics".into(),
            insecure_skip_verify: true,
        }
    }
}

impl Params for MetricsSourceParams {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(s) = o.string("scheme", d) {
            if s == "http" || s == "https" {
                p.scheme = s;
            } else {
                d.error(
                    o.at("scheme"),
                    format!("must be \"http\" or \"https\", got {s:?}"),
                );
            }
        }
        if let Some(s) = o.string("path", d) {
            if s.starts_with('/') {
                p.path = s;
            } else {
                d.error(o.at("path"), format!("must start with '/', got {s:?}"));
            }
        }
        if let Some(b) = o.bool("insecureSkipVerify", d) {
            p.insecure_skip_verify = b;
        }
        p
    }

    fn render(&self) -> Option<Value> {
        Some(json!({
            "scheme": self.scheme,
            "path": self.path,
            "insecureSkipVerify": self.insecure_skip_verify,
        }))
    }
}

/// How to collect. Built from the `dataLayer` section and the CLI flags.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorConfig {
    /// The `name` label of the pool metrics.
    pub pool_name: String,
    pub source: MetricsSourceParams,
    pub extractor: ExtractorParams,
    /// `--model-server-metrics-port`. GIE uses it only when it is set and the pool has exactly one
    /// target port; the caller applies that rule and passes `None` otherwise, so each endpoint's
    /// own port is scraped.
    pub metrics_port: Option<u16>,
    /// `--refresh-metrics-interval` (50 ms).
    pub refresh_interval: Duration,
    /// Deadline of one scrape, connect to last byte (GIE: 1 s).
    pub scrape_timeout: Duration,
    /// `--metrics-staleness-threshold` (2 s): the pool gauges count only fresher endpoints.
    pub staleness_threshold: Duration,
    /// `--refresh-prometheus-metrics-interval` (5 s).
    pub prometheus_refresh_interval: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            pool_name: String::new(),
            source: MetricsSourceParams::default(),
            extractor: ExtractorParams::default(),
            metrics_port: None,
            refresh_interval: Duration::from_millis(50),
            scrape_timeout: Duration::from_secs(1),
            staleness_threshold: Duration::from_secs(2),
            prometheus_refresh_interval: Duration::from_secs(5),
        }
    }
}

impl CollectorConfig {
    /// The scrape URL of `endpoint`.
    pub fn url(&self, endpoint: &Endpoint) -> String {
        let port = self.metrics_port.unwrap_or(endpoint.port);
        let host = SocketAddr::new(endpoint.address, port);
        format!("{}://{host}{}", self.source.scheme, self.source.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("building the metrics HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// What the tasks share.
struct Shared {
    pool: Arc<EndpointPool>,
    config: CollectorConfig,
    engines: Engines,
    client: reqwest::Client,
    clock: Clock,
    metrics: DataLayerMetrics,
}

/// A running collector. Dropping it without [`Collector::shutdown`] aborts its tasks.
pub struct Collector {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Starts scraping every endpoint of `pool`, now and as membership changes. Must be called
    /// inside a tokio runtime.
    pub fn spawn(
        pool: Arc<EndpointPool>,
        config: CollectorConfig,
        clock: Clock,
        metrics: DataLayerMetrics,
    ) -> Result<Self, CollectorError> {
        ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(config.source.insecure_skip_verify)
            .pool_max_idle_per_host(2)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(config.scrape_timeout)
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .no_proxy()
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let shared = Arc::new(Shared {
            pool,
            engines: Engines::new(&config.extractor),
            config,
            client,
            clock,
            metrics,
        });
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            crate::tasks::spawn_critical(
                "scrape supervisor",
                supervise(shared.clone(), stop_rx.clone()),
            ),
            crate::tasks::spawn_critical(
                "pool gauges",
                refresh_pool_metrics(shared.clone(), stop_rx),
            ),
        ];
        Ok(Self {
            shared,
            stop,
            tasks,
        })
    }

    /// Stops every task and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// The age of each endpoint's metrics now (`None`: never scraped successfully).
    pub fn metrics_ages(&self) -> Vec<(String, Option<Duration>)> {
        let now = (self.shared.clock)();
        self.shared
            .pool
            .snapshot()
            .endpoints()
            .iter()
            .map(|s| (s.endpoint.name.clone(), s.metrics.age(now)))
            .collect()
    }

    pub fn metrics(&self) -> &DataLayerMetrics {
        &self.shared.metrics
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

// === supervisor ===

/// Keeps exactly one scrape task per endpoint of the pool.
async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut members = shared.pool.watch_membership();
    let mut running: HashMap<String, (Arc<Endpoint>, JoinHandle<()>)> = HashMap::new();
    loop {
        members.borrow_and_update();
        let snap = shared.pool.snapshot();
        running.retain(|name, (ep, task)| {
            let keep = snap
                .find_by_name(name)
                .is_some_and(|i| *snap.get(i).endpoint == **ep);
            if !keep {
                task.abort();
                shared.metrics.health().forget(name);
            }
            keep
        });
        for s in snap.endpoints() {
            if running.contains_key(&s.endpoint.name) {
                continue;
            }
            let task = tokio::spawn(scrape_loop(
                shared.clone(),
                s.endpoint.clone(),
                s.metrics.clone(),
            ));
            running.insert(s.endpoint.name.clone(), (s.endpoint.clone(), task));
        }
        tokio::select! {
            changed = members.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    for (_, (_, task)) in running.drain() {
        task.abort();
        let _ = task.await;
    }
}

/// Recomputes the pool gauges every `prometheus_refresh_interval`.
async fn refresh_pool_metrics(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.config.prometheus_refresh_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let snap = shared.pool.snapshot();
        let departed: Vec<String> = seen
            .iter()
            .filter(|n| snap.find_by_name(n).is_none())
            .cloned()
            .collect();
        shared.metrics.refresh(
            &snap,
            (shared.clock)(),
            shared.config.staleness_threshold,
            &departed,
        );
        seen = snap
            .endpoints()
            .iter()
            .map(|s| s.endpoint.name.clone())
            .collect();
    }
}

// === one endpoint ===

/// How the last scrape went, for transition logging.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Start,
    Ok { spec_errors: Vec<SpecError> },
    Failed { reason: ScrapeErrorReason },
}

#[derive(Debug)]
struct ScrapeError {
    reason: ScrapeErrorReason,
    detail: String,
}

async fn scrape_loop(shared: Arc<Shared>, endpoint: Arc<Endpoint>, mut last: Arc<EndpointMetrics>) {
    let cfg = &shared.config;
    let url_text = cfg.url(&endpoint);
    let url = match reqwest::Url::parse(&url_text) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(endpoint = %endpoint.name, url = %url_text, error = %e, "cannot scrape: bad metrics URL");
            return;
        }
    };
    let mapping = shared.engines.select(&endpoint);
    tracing::debug!(endpoint = %endpoint.name, url = %url, engine = %mapping.name, "scraping");
    let mut buf: Vec<u8> = Vec::new();
    let mut outcome = Outcome::Start;
    let mut warned_kv = false;
    let mut tick = tokio::time::interval(cfg.refresh_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let fetched =
            match tokio::time::timeout(cfg.scrape_timeout, fetch(&shared.client, &url, &mut buf))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ScrapeError {
                    reason: ScrapeErrorReason::Timeout,
                    detail: format!("no complete answer within {:?}", cfg.scrape_timeout),
                }),
            };
        let result = fetched.and_then(|()| {
            let x = mapping.extract(&buf, &last, (shared.clock)());
            if x.succeeded == 0 {
                return Err(ScrapeError {
                    reason: ScrapeErrorReason::NoMetrics,
                    detail: no_metrics_detail(&mapping, &x.errors, x.stats.bad_lines),
                });
            }
            Ok(x)
        });
        shared.metrics.observe_scrape(started.elapsed());
        match result {
            Ok(x) => {
                if let Some(v) = x.kv_above_one
                    && !warned_kv
                {
                    warned_kv = true;
                    tracing::warn!(endpoint = %endpoint.name, value = v, "KV-cache usage above 1: read as a fraction and clamped to 1 (is the server reporting percent?)");
                }
                shared
                    .metrics
                    .health()
                    .succeeded(&endpoint.name, (shared.clock)());
                let next = Outcome::Ok {
                    spec_errors: x.errors,
                };
                log_transition(&endpoint, &url, &outcome, &next, None);
                outcome = next;
                last = Arc::new(x.metrics);
                if !shared.pool.update_metrics(&endpoint.name, last.clone()) {
                    return; // left the pool; the supervisor is about to stop us
                }
            }
            Err(e) => {
                shared.metrics.scrape_error(&endpoint.name, e.reason);
                shared.metrics.health().failed(
                    &endpoint.name,
                    (shared.clock)(),
                    e.reason,
                    &e.detail,
                );
                let next = Outcome::Failed { reason: e.reason };
                log_transition(&endpoint, &url, &outcome, &next, Some(&e.detail));
                outcome = next;
            }
        }
        if buf.capacity() > 4 * MAX_PAGE_BYTES / 16 {
            buf = Vec::new(); // do not keep a huge buffer after one odd page
        }
    }
}

/// GETs `url` into `buf` (cleared first).
async fn fetch(
    client: &reqwest::Client,
    url: &reqwest::Url,
    buf: &mut Vec<u8>,
) -> Result<(), ScrapeError> {
    buf.clear();
    let classify = |e: reqwest::Error| ScrapeError {
        reason: if e.is_timeout() {
            ScrapeErrorReason::Timeout
        } else if e.is_connect() || e.is_request() {
            ScrapeErrorReason::Connect
        } else {
            ScrapeErrorReason::Body
        },
        detail: error_chain(&e),
    };
    let mut resp = client.get(url.clone()).send().await.map_err(classify)?;
    if !resp.status().is_success() {
        return Err(ScrapeError {
            reason: ScrapeErrorReason::HttpStatus,
            detail: format!("HTTP {}", resp.status()),
        });
    }
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if buf.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(ScrapeError {
                reason: ScrapeErrorReason::Body,
                detail: format!("metrics page larger than {MAX_PAGE_BYTES} bytes"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn no_metrics_detail(mapping: &EngineMapping, errors: &[SpecError], bad_lines: usize) -> String {
    let errs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(
        "no {} metric could be read ({}; {bad_lines} unparsable lines)",
        mapping.name,
        errs.join(", ")
    )
}

fn log_transition(
    endpoint: &Endpoint,
    url: &reqwest::Url,
    before: &Outcome,
    after: &Outcome,
    detail: Option<&str>,
) {
    if before == after {
        return;
    }
    let name = &endpoint.name;
    match (before, after) {
        (_, Outcome::Failed { reason }) => {
            tracing::warn!(endpoint = %name, %url, reason = reason.as_str(), error = detail.unwrap_or(""), "metrics scrape failing");
        }
        (Outcome::Failed { .. }, Outcome::Ok { spec_errors }) => {
            tracing::info!(endpoint = %name, %url, incomplete = ?spec_errors.iter().map(ToString::to_string).collect::<Vec<_>>(), "metrics scrape recovered");
        }
        (_, Outcome::Ok { spec_errors }) if spec_errors.is_empty() => {
            tracing::debug!(endpoint = %name, %url, "metrics complete");
        }
        (_, Outcome::Ok { spec_errors }) => {
            tracing::info!(endpoint = %name, %url, errors = ?spec_errors.iter().map(ToString::to_string).collect::<Vec<_>>(), "some metrics could not be read; their last values are kept");
        }
        (_, Outcome::Start) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_gie_rules() {
        let mut c = CollectorConfig::default();
        let ep = Endpoint::new("a", "10.0.0.1".parse().unwrap(), 8000);
        assert_eq!(c.url(&ep), "http://10.0.0.1:8000/metrics");
        c.metrics_port = Some(9400);
        c.source.scheme = "https".into();
        c.source.path = "/prometheus/metrics".into();
        assert_eq!(c.url(&ep), "https://10.0.0.1:9400/prometheus/metrics");
        let v6 = Endpoint::new("b", "fd00::1".parse().unwrap(), 8000);
        assert_eq!(c.url(&v6), "https://[fd00::1]:9400/prometheus/metrics");
    }

    #[test]
    fn crypto_provider_install_is_idempotent() {
        ensure_crypto_provider();
        ensure_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
