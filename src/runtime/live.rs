//! The running system around the current [`Runtime`]: it installs the first one, swaps in the
//! next when `--config-file` changes (or SIGHUP asks), and keeps the long-lived background parts
//! in step — one flow controller for the life of the process (reconfigured, never replaced, so
//! queued requests and VTC counters survive), the metrics collector (restarted only when its
//! settings change), and the prefix index and in-flight counts (carried over by
//! [`Runtime::rebuild`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::{ConfigOrigin, ConfigSource, Flags, Runtime};
use crate::clock::Clock;
use crate::config::{self, ConfigErrors};
use crate::datalayer::{Collector, CollectorError, DataLayerMetrics, ScrapeHealth};
use crate::discovery::Sink;
use crate::extproc::Director;
use crate::flowcontrol::{FlowControl, FlowControlMetrics};
use crate::pool::EndpointPool;
use crate::telemetry::RequestMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// `switchyard_config_reloads_total{result}` and the time of the last good load.
#[derive(Clone, Default)]
pub struct ReloadMetrics {
    reloads: Family<ResultLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
}

impl ReloadMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "switchyard_config_reloads",
            "Configuration reloads by result (success or failure)",
            self.reloads.clone(),
        );
        r.register(
            "switchyard_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded (Unix seconds)",
            self.last_success.clone(),
        );
    }

    fn count(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Reloads so far that succeeded and that failed.
    pub fn counts(&self) -> (u64, u64) {
        let get = |result: &str| {
            self.reloads
                .get(&ResultLabels {
                    result: result.into(),
                })
                .map_or(0, |c| c.get())
        };
        (get("success"), get("failure"))
    }

    fn loaded(&self, at: SystemTime) {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(secs);
    }
}

/// The most recent reload that failed: when, and every error with its field path.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub errors: Vec<String>,
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration was validated when loaded: what fails here are the flags.
    #[error("{}", .0.render("flags"))]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Collector(#[from] CollectorError),
}

/// The process's one flow controller, created when a configuration first enables flow control
/// and reconfigured by every later one.
struct FlowControlSlot {
    current: Mutex<Option<Arc<FlowControl>>>,
    pool: Arc<EndpointPool>,
    clock: Clock,
    metrics: FlowControlMetrics,
    pool_name: String,
    stop: watch::Receiver<bool>,
}

impl FlowControlSlot {
    /// Reconfigures (or starts) the flow controller for `rt` and attaches it when `rt` queues.
    fn attach(&self, rt: &mut Runtime) {
        let detector = rt.flow_control_detector.clone();
        let mut slot = self.current.lock();
        match (&*slot, rt.flow_control_config.clone()) {
            (Some(fc), cfg) => fc.reconfigure(cfg, detector.clone()),
            (None, Some(cfg)) => {
                let fc = FlowControl::new(
                    Some(cfg),
                    self.pool.clone(),
                    detector.clone(),
                    self.clock,
                    self.metrics.clone(),
                    &self.pool_name,
                );
                crate::tasks::spawn_critical(
                    "flow-control dispatcher",
                    fc.clone().run(self.stop.clone()),
                );
                *slot = Some(fc);
            }
            (None, None) => {}
        }
        if rt.flow_control_config.is_some() {
            rt.flow_control = slot.clone();
            tracing::info!(
                detector = detector.type_name(),
                "flow control is on: requests queue while the pool is saturated"
            );
        } else if rt.saturation.is_none() {
            tracing::warn!(
                "the configured saturation detector cannot judge the pool; sheddable requests are admitted"
            );
        }
    }
}

/// The running system (see the module docs).
pub struct Live {
    director: Arc<Director>,
    flags: Flags,
    clock: Clock,
    flow_control: FlowControlSlot,
    collector: tokio::sync::Mutex<Option<Collector>>,
    dl_metrics: DataLayerMetrics,
    reload_metrics: ReloadMetrics,
    request_metrics: Arc<RequestMetrics>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
    /// Kept after a later success: the admin API shows it next to the load time.
    last_reload_failure: Mutex<Option<ReloadFailure>>,
    /// Bumped after every reload attempt, good or bad.
    reload_signal: watch::Sender<u64>,
    stop: watch::Receiver<bool>,
}

impl Live {
    /// Builds the first runtime from `cfg`, registers the metrics, starts the flow-control
    /// dispatcher (when configured) and the metrics collector, and returns the system with its
    /// request path ready ([`Live::director`]).
    pub fn start(
        cfg: config::EndpointPickerConfig,
        source: ConfigSource,
        flags: Flags,
        sink: &Sink,
        clock: Clock,
        registry: &mut Registry,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Live>, StartError> {
        let mut runtime = Runtime::build(cfg, source, &flags)?;
        let request_metrics = Arc::new(RequestMetrics::new(flags.max_label_values));
        request_metrics.register(registry);
        runtime.plugins.prefix_metrics.register(registry);
        runtime.plugins.plugin_durations.register(registry);
        let bounds = &request_metrics.bounds;
        let fc_metrics = FlowControlMetrics::new().with_tenant_bound(Some(bounds.tenants.clone()));
        bounds.pairs.track(fc_metrics.pair_indexes());
        fc_metrics.register(registry);
        let dl_metrics = DataLayerMetrics::new(&flags.pool_name);
        dl_metrics.register(registry);
        let reload_metrics = ReloadMetrics::default();
        reload_metrics.register(registry);
        let flow_control = FlowControlSlot {
            current: Mutex::new(None),
            pool: sink.pool.clone(),
            clock,
            metrics: fc_metrics,
            pool_name: flags.pool_name.clone(),
            stop: stop.clone(),
        };
        flow_control.attach(&mut runtime);
        reload_metrics.loaded(runtime.source.loaded_at);
        request_metrics.set_config_hash(&runtime.source.hash);
        let director = Arc::new(Director::new(
            sink.pool.clone(),
            sink.datastore.clone(),
            Arc::new(runtime),
            request_metrics.clone(),
            clock,
        ));
        let live = Arc::new(Live {
            director,
            flags,
            clock,
            flow_control,
            collector: tokio::sync::Mutex::new(None),
            dl_metrics,
            reload_metrics,
            request_metrics,
            reloading: tokio::sync::Mutex::new(()),
            last_reload_failure: Mutex::new(None),
            reload_signal: watch::channel(0).0,
            stop,
        });
        let collector = live.start_collector(&live.runtime())?;
        *live.collector.try_lock().expect("not shared yet") = collector;
        crate::tasks::spawn_critical(
            "prefix and in-flight sweeper",
            forget_departed(live.clone()),
        );
        Ok(live)
    }

    /// The request path's shared state, holding the current runtime.
    pub fn director(&self) -> &Arc<Director> {
        &self.director
    }

    /// The runtime new requests get.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.director.runtime()
    }

    /// The flow controller, when any configuration so far enabled flow control.
    pub fn flow_control(&self) -> Option<Arc<FlowControl>> {
        self.flow_control.current.lock().clone()
    }

    /// The flags every runtime is built with.
    pub fn flags(&self) -> &Flags {
        &self.flags
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Each endpoint's scrape record.
    pub fn scrape_health(&self) -> &ScrapeHealth {
        self.dl_metrics.health()
    }

    /// Reloads so far: (succeeded, failed).
    pub fn reload_counts(&self) -> (u64, u64) {
        self.reload_metrics.counts()
    }

    /// The most recent failed reload, even if a later one succeeded.
    pub fn last_reload_failure(&self) -> Option<ReloadFailure> {
        self.last_reload_failure.lock().clone()
    }

    /// A receiver that changes after every reload attempt.
    pub fn watch_reloads(&self) -> watch::Receiver<u64> {
        self.reload_signal.subscribe()
    }

    /// A receiver that turns true when the process stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    fn start_collector(&self, rt: &Runtime) -> Result<Option<Collector>, CollectorError> {
        let Some(cc) = rt.collector.clone() else {
            tracing::warn!("metrics collection is disabled: scorers see no queue or KV data");
            return Ok(None);
        };
        Collector::spawn(
            self.director.pool.clone(),
            cc,
            self.clock.as_fn(),
            self.dl_metrics.clone(),
        )
        .map(Some)
    }

    /// Attaches the flow controller `rt` needs, records the load and swaps `rt` in for new
    /// requests.
    fn install(&self, mut rt: Runtime) {
        self.flow_control.attach(&mut rt);
        self.reload_metrics.loaded(rt.source.loaded_at);
        self.request_metrics.set_config_hash(&rt.source.hash);
        self.director.set_runtime(Arc::new(rt));
    }

    /// Loads `text` as the new configuration: decoded, validated and built, then swapped in for
    /// new requests. An invalid one keeps the runtime in force; every error is logged with its
    /// field path and counted.
    pub async fn reload(&self, text: &[u8], origin: ConfigOrigin) -> Result<(), ConfigErrors> {
        let _serial = self.reloading.lock().await;
        let result = self.try_reload(text, origin).await;
        self.reload_metrics.count(result.is_ok());
        if let Err(e) = &result {
            for err in &e.0 {
                tracing::error!(error = %err, "configuration reload failed; keeping the configuration in force");
            }
            *self.last_reload_failure.lock() = Some(ReloadFailure {
                at: SystemTime::now(),
                errors: e.0.iter().map(ToString::to_string).collect(),
            });
        }
        self.reload_signal.send_modify(|n| *n += 1);
        result
    }

    async fn try_reload(&self, text: &[u8], origin: ConfigOrigin) -> Result<(), ConfigErrors> {
        let cfg = config::load_str(&String::from_utf8_lossy(text))?;
        for w in &cfg.warnings {
            tracing::warn!("config: {w}");
        }
        let old = self.runtime();
        let source = ConfigSource::new(origin, text);
        let rt = Runtime::rebuild(cfg, source, &self.flags, &old)?;
        let shared = rt.plugins.prefix_index_shared_with(&old.plugins);
        for (i, shared) in shared.into_iter().enumerate() {
            if !shared && i < old.plugins.prefix_producers.len() {
                tracing::info!(
                    producer = i,
                    "prefix block size or match length changed: starting a new prefix index"
                );
            }
        }
        if rt.collector != old.collector {
            let mut slot = self.collector.lock().await;
            if let Some(c) = slot.take() {
                c.shutdown().await;
            }
            *slot = self.start_collector(&rt).map_err(|e| {
                ConfigErrors(vec![config::ConfigError {
                    path: "dataLayer".into(),
                    message: e.to_string(),
                }])
            })?;
        }
        tracing::info!(
            hash = %rt.source.hash,
            flow_control = rt.flow_control_config.is_some(),
            "configuration reloaded"
        );
        self.install(rt);
        Ok(())
    }

    /// Re-reads `path` every `interval` (and when `hup` changes: SIGHUP) and reloads it when its
    /// content changed. Content is compared, not modification times: Kubernetes updates a
    /// mounted ConfigMap by swapping a `..data` symlink, and editors rename files.
    pub async fn watch_config_file(
        self: Arc<Self>,
        path: PathBuf,
        interval: Duration,
        mut last: Vec<u8>,
        mut hup: watch::Receiver<u64>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut stop = self.stop.clone();
        let mut unreadable = false;
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                r = hup.changed() => r.is_ok(),
                _ = stop.wait_for(|s| *s) => return,
            };
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => b,
                Err(e) => {
                    if !unreadable || forced {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read the config file; keeping the configuration in force");
                    }
                    unreadable = true;
                    continue;
                }
            };
            unreadable = false;
            if bytes == last {
                if forced {
                    tracing::info!(path = %path.display(), "config file re-read: unchanged");
                }
                continue;
            }
            let _ = self.reload(&bytes, ConfigOrigin::File(path.clone())).await;
            // A failed version is not retried until the file changes again.
            last = bytes;
        }
    }

    /// Stops the collector (the dispatcher and watchers stop with the stop signal).
    pub async fn shutdown(&self) {
        if let Some(c) = self.collector.lock().await.take() {
            c.shutdown().await;
        }
    }
}

/// Endpoints that leave the pool are forgotten by the prefix index and the in-flight counters
/// (of the runtime in force, which shares them with its predecessors).
async fn forget_departed(live: Arc<Live>) {
    let pool = live.director.pool.clone();
    let mut membership = pool.watch_membership();
    let mut stop = live.stop.clone();
    loop {
        tokio::select! {
            changed = membership.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let snap = pool.snapshot();
        let names: std::collections::HashSet<&str> = snap
            .endpoints()
            .iter()
            .map(|e| e.endpoint.name.as_str())
            .collect();
        live.runtime()
            .plugins
            .retain_endpoints(|n| names.contains(n));
    }
}
