//! The `switchyard` binary: flags and wiring only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{ArgAction, CommandFactory, Parser};
use prometheus_client::registry::Registry;
use switchyard::clock::Clock;
use switchyard::config::{self, EndpointPickerConfig, PluginSpec};
use switchyard::datalayer::collector::{Collector, CollectorConfig};
use switchyard::datalayer::metrics::DataLayerMetrics;
use switchyard::discovery;
use switchyard::extproc::{Director, ExtProcOptions};
use switchyard::flowcontrol::{self, FlowControl, FlowControlMetrics};
use switchyard::scheduling::plugins::UtilizationFilter;
use switchyard::server::{self, Listeners, ServeOptions, health::Readiness};
use switchyard::telemetry::RequestMetrics;

fn duration(s: &str) -> Result<Duration, String> {
    config::value::parse_go_duration(s)
}

fn byte_size(s: &str) -> Result<usize, String> {
    config::value::parse_quantity(s).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

/// Switchyard: an LLM-aware inference endpoint picker for Envoy ext_proc gateways, a drop-in
/// replacement for the Gateway API Inference Extension EPP.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    // === Serving ===
    /// Port of the ext_proc gRPC server.
    #[arg(long, default_value_t = 9002)]
    grpc_port: u16,
    /// Port of the gRPC health server.
    #[arg(long, default_value_t = 9003)]
    grpc_health_port: u16,
    /// Port of the Prometheus /metrics server.
    #[arg(long, default_value_t = 9090)]
    metrics_port: u16,
    /// Address every listener binds to.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Serve ext_proc over TLS (a self-signed certificate unless --cert-path is given).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    secure_serving: bool,
    /// Directory holding tls.crt and tls.key.
    #[arg(long)]
    cert_path: Option<PathBuf>,
    /// Also serve grpc.health.v1 on the ext_proc port.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    health_checking: bool,
    /// Largest request body accepted (bytes, or a quantity such as 64Mi); larger gets 413.
    #[arg(long, default_value = "64Mi", value_parser = byte_size)]
    max_request_body_bytes: usize,
    /// How long open streams may finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = duration)]
    shutdown_grace_period: Duration,

    // === Configuration ===
    /// EndpointPickerConfig YAML file (default: queue ×2, KV ×2, prefix ×3).
    #[arg(long, value_name = "FILE", conflicts_with = "config_text")]
    config_file: Option<PathBuf>,
    /// EndpointPickerConfig YAML given inline.
    #[arg(long, value_name = "YAML")]
    config_text: Option<String>,
    /// Print the effective configuration, every default spelled out, and exit.
    #[arg(long)]
    print_config: bool,

    // === Endpoints ===
    /// Static endpoints, comma-separated ip:port.
    #[arg(long, value_name = "LIST")]
    static_endpoints: Option<String>,
    /// Static endpoints file (endpoints, objectives, modelRewrites), re-read when it changes.
    #[arg(long, value_name = "FILE", conflicts_with = "static_endpoints")]
    static_endpoints_file: Option<PathBuf>,
    /// How often the static endpoints file is checked for changes.
    #[arg(long, default_value = "1s", value_parser = duration)]
    static_endpoints_reload_interval: Duration,
    /// Ignore the gateway's subset hint.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    disable_endpoint_subset_filter: bool,
    /// InferencePool name (Kubernetes discovery).
    #[arg(long, default_value = "")]
    pool_name: String,
    /// InferencePool namespace (default: $NAMESPACE, then "default").
    #[arg(long, default_value = "")]
    pool_namespace: String,
    /// InferencePool API group.
    #[arg(long, default_value = "inference.networking.k8s.io")]
    pool_group: String,
    /// Pod label selector for standalone Kubernetes discovery.
    #[arg(long, default_value = "")]
    endpoint_selector: String,
    /// Target ports for standalone Kubernetes discovery.
    #[arg(long, value_delimiter = ',')]
    endpoint_target_ports: Vec<u16>,
    /// Leader election for active-passive replicas (Kubernetes).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    ha_enable_leader_election: bool,

    // === Metrics collection ===
    /// How often each endpoint's metrics are scraped.
    #[arg(long, default_value = "50ms", value_parser = duration)]
    refresh_metrics_interval: Duration,
    /// How often the pool gauges are refreshed.
    #[arg(long, default_value = "5s", value_parser = duration)]
    refresh_prometheus_metrics_interval: Duration,
    /// Endpoints with older metrics do not count in the pool gauges.
    #[arg(long, default_value = "2s", value_parser = duration)]
    metrics_staleness_threshold: Duration,
    /// Deprecated: metrics-data-source parameter `scheme`.
    #[arg(long)]
    model_server_metrics_scheme: Option<String>,
    /// Deprecated: metrics-data-source parameter `path`.
    #[arg(long)]
    model_server_metrics_path: Option<String>,
    /// Deprecated: metrics port when the pool has one target port.
    #[arg(long)]
    model_server_metrics_port: Option<u16>,
    /// Deprecated: metrics-data-source parameter `insecureSkipVerify`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    model_server_metrics_https_insecure_skip_verify: Option<bool>,
    /// Deprecated and ignored: configure core-metrics-extractor engineConfigs.
    #[arg(long, hide = true)]
    total_queued_requests_metric: Option<String>,
    #[arg(long, hide = true)]
    total_running_requests_metric: Option<String>,
    #[arg(long, hide = true)]
    kv_cache_usage_percentage_metric: Option<String>,
    #[arg(long, hide = true)]
    lora_info_metric: Option<String>,
    #[arg(long, hide = true)]
    cache_info_metric: Option<String>,

    // === Accepted for GIE compatibility ===
    /// OpenTelemetry tracing (accepted; traces are not exported).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    tracing: bool,
    /// Go pprof endpoints (accepted; not applicable).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    enable_pprof: bool,
    /// Reload --cert-path files when they change.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_cert_reload: bool,
    /// Bearer-token auth on /metrics (needs Kubernetes TokenReview; not enforced).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    metrics_endpoint_auth: bool,

    // === Logging ===
    /// Log verbosity: 1 warnings, 2 info (default), 3–4 debug, 5 trace. RUST_LOG overrides.
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    verbosity: u8,
    /// Log encoding: console or json.
    #[arg(long, default_value = "console")]
    zap_encoder: String,
    #[arg(long, hide = true)]
    zap_log_level: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    zap_devel: Option<String>,
    #[arg(long, hide = true)]
    zap_stacktrace_level: Option<String>,
    #[arg(long, hide = true)]
    zap_time_encoding: Option<String>,
}

/// Go-style flags (`-pool-name`, `-poolName` from old charts) become clap's `--pool-name`; flags
/// this build does not know are dropped with a warning instead of failing a Helm chart's args.
fn normalise_args(raw: Vec<String>) -> (Vec<String>, Vec<String>) {
    let cmd = Cli::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["help".to_string(), "version".to_string()])
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut dropped = Vec::new();
    let mut iter = raw.into_iter();
    if let Some(bin) = iter.next() {
        out.push(bin);
    }
    let mut pending: Vec<String> = iter.collect();
    pending.reverse();
    while let Some(arg) = pending.pop() {
        let Some(body) = arg.strip_prefix('-') else {
            out.push(arg);
            continue;
        };
        if arg == "-" || arg == "--" || (body.len() == 1 && !body.starts_with('-')) {
            out.push(arg);
            continue;
        }
        let body = body.strip_prefix('-').unwrap_or(body);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let kebab = to_kebab(name);
        if known.contains(&kebab) {
            out.push(match value {
                Some(v) => format!("--{kebab}={v}"),
                None => format!("--{kebab}"),
            });
        } else {
            dropped.push(arg.clone());
            // A following bare word is taken as this unknown flag's value.
            if value.is_none() && pending.last().is_some_and(|n| !n.starts_with('-')) {
                pending.pop();
            }
        }
    }
    (out, dropped)
}

fn to_kebab(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            s.push('-');
            s.push(c.to_ascii_lowercase());
        } else if c == '_' {
            s.push('-');
        } else {
            s.push(c);
        }
    }
    s
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match cli.verbosity {
        0 => "error",
        1 => "warn",
        2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.zap_encoder == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(cli: &Cli) -> Result<EndpointPickerConfig> {
    let cfg = match (&cli.config_file, &cli.config_text) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --config-file {}", path.display()))?;
            config::load_str(&text).with_context(|| format!("loading {}", path.display()))?
        }
        (None, Some(text)) => config::load_str(text).context("loading --config-text")?,
        (None, None) => config::default_config(),
    };
    Ok(cfg)
}

fn warn_compat_flags(cli: &Cli) {
    let deprecated_metric_flags = [
        (
            "--total-queued-requests-metric",
            &cli.total_queued_requests_metric,
        ),
        (
            "--total-running-requests-metric",
            &cli.total_running_requests_metric,
        ),
        (
            "--kv-cache-usage-percentage-metric",
            &cli.kv_cache_usage_percentage_metric,
        ),
        ("--lora-info-metric", &cli.lora_info_metric),
        ("--cache-info-metric", &cli.cache_info_metric),
    ];
    for (flag, v) in deprecated_metric_flags {
        if v.is_some() {
            tracing::warn!(
                "{flag} is deprecated and ignored; configure core-metrics-extractor engineConfigs"
            );
        }
    }
    if cli.model_server_metrics_scheme.is_some()
        || cli.model_server_metrics_path.is_some()
        || cli
            .model_server_metrics_https_insecure_skip_verify
            .is_some()
    {
        tracing::warn!(
            "--model-server-metrics-* flags are deprecated; set metrics-data-source parameters"
        );
    }
    if cli.enable_cert_reload {
        tracing::warn!("--enable-cert-reload is accepted but certificates are read once at start");
    }
    if cli.tracing {
        tracing::debug!("--tracing: OpenTelemetry export is not built in; spans are not exported");
    }
    if cli.metrics_endpoint_auth {
        tracing::debug!(
            "--metrics-endpoint-auth needs Kubernetes TokenReview; /metrics is served without auth"
        );
    }
}

async fn bind(addr: IpAddr, port: u16, what: &str) -> Result<tokio::net::TcpListener> {
    let sa = SocketAddr::new(addr, port);
    let l = tokio::net::TcpListener::bind(sa)
        .await
        .with_context(|| format!("binding the {what} port {sa}"))?;
    let local = l.local_addr()?;
    tracing::info!(%local, "{what} listening");
    // A machine-readable line for tests and scripts that start Switchyard on port 0.
    eprintln!("switchyard: {what} listening on {local}");
    Ok(l)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stop signal received");
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = load_config(&cli)?;
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    if cli.print_config {
        print!("{}", cfg.to_yaml());
        return Ok(());
    }
    warn_compat_flags(&cli);
    if cfg.flow_control.is_some() {
        tracing::warn!(
            "flowControl is configured, but flow control is not part of this build yet: requests are not queued"
        );
    }

    // Endpoints: exactly one source.
    let sources = [
        !cli.pool_name.is_empty(),
        !cli.endpoint_selector.is_empty(),
        cli.static_endpoints.is_some() || cli.static_endpoints_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        bail!("give exactly one of --pool-name, --endpoint-selector, --static-endpoints(-file)");
    }
    let sink = discovery::Sink::new();
    let (pool, datastore) = (sink.pool.clone(), sink.datastore.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut kube = None;
    if let Some(list) = &cli.static_endpoints {
        pool.set_endpoints(discovery::parse_endpoint_list(list).map_err(anyhow::Error::msg)?);
    } else if let Some(path) = &cli.static_endpoints_file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading --static-endpoints-file {}", path.display()))?;
        let file = discovery::parse_static_file(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("loading {}", path.display()))?;
        discovery::apply(file, &pool, &datastore);
        tokio::spawn(discovery::watch_file(
            path.clone(),
            cli.static_endpoints_reload_interval,
            pool.clone(),
            datastore.clone(),
            bytes,
            stop_rx.clone(),
        ));
    } else if sources[0] || sources[1] {
        use switchyard::discovery::kubernetes::{KubernetesOptions, KubernetesSource};
        let opts = if sources[0] {
            KubernetesOptions::pool(&cli.pool_name, &cli.pool_namespace, &cli.pool_group)?
        } else {
            let ports = &cli.endpoint_target_ports;
            KubernetesOptions::standalone(&cli.endpoint_selector, ports, &cli.pool_namespace)?
        };
        kube = Some(KubernetesSource::connect(opts).await?);
    } else {
        bail!(
            "no endpoints: give --pool-name (Kubernetes), --endpoint-selector (Kubernetes, \
             standalone), --static-endpoints ip:port,... or --static-endpoints-file FILE"
        );
    }
    tracing::info!(endpoints = pool.snapshot().len(), "endpoints loaded");

    // Request path and metrics collection, on one clock.
    let clock = Clock::new();
    let metrics = Arc::new(RequestMetrics::new());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let pool_name = kube
        .as_ref()
        .map_or("switchyard", |k| k.options().pool_name())
        .to_string();
    let collector = match CollectorConfig::from_config(&cfg, &pool_name) {
        Some(mut cc) => {
            cc.refresh_interval = cli.refresh_metrics_interval;
            cc.staleness_threshold = cli.metrics_staleness_threshold;
            cc.prometheus_refresh_interval = cli.refresh_prometheus_metrics_interval;
            apply_deprecated_metrics_flags(&cli, &mut cc, &pool.snapshot());
            let dm = DataLayerMetrics::new(&pool_name);
            dm.register(&mut registry);
            Some(Collector::spawn(pool.clone(), cc, clock.as_fn(), dm)?)
        }
        None => {
            tracing::warn!("metrics collection is disabled: scorers see no queue or KV data");
            None
        }
    };
    let pool_namespace = if cli.pool_namespace.is_empty() {
        std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into())
    } else {
        cli.pool_namespace.clone()
    };
    let opts = ExtProcOptions {
        max_request_body_bytes: cli.max_request_body_bytes,
        disable_subset_filter: cli.disable_endpoint_subset_filter,
        passthrough: matches!(cfg.plugin(cfg.parser).spec, PluginSpec::PassthroughParser),
        served_verifier: cfg
            .of_type("destination-endpoint-served-verifier")
            .next()
            .is_some(),
        pool_namespace,
    };
    let built = cfg.build();
    built.register_metrics(&mut registry);
    let saturation = built.saturation.clone();
    let (scheduler, producers) = built.into_parts();
    // Endpoints that leave the pool are forgotten by the prefix index and in-flight counters.
    {
        let pool = pool.clone();
        let mut membership = pool.watch_membership();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = membership.changed() => if changed.is_err() { return },
                    _ = stop.changed() => return,
                }
                let snap = pool.snapshot();
                let names: std::collections::HashSet<&str> = snap
                    .endpoints()
                    .iter()
                    .map(|e| e.endpoint.name.as_str())
                    .collect();
                producers.retain_endpoints(|n| names.contains(n));
            }
        });
    }
    let fc_metrics = FlowControlMetrics::new();
    fc_metrics.register(&mut registry);
    let flow_control = flowcontrol::controller_config(&cfg).map(|fc_cfg| {
        let detector = saturation.clone().unwrap_or_else(|| {
            Arc::new(UtilizationFilter {
                queue_depth_threshold: 5,
                kv_cache_util_threshold: 0.8,
                metrics_staleness_threshold: Duration::from_millis(200),
                headroom: 0.0,
            })
        });
        tracing::info!(
            detector = detector.type_name(),
            "flow control is on: requests queue while the pool is saturated"
        );
        let fc = FlowControl::new(
            fc_cfg,
            pool.clone(),
            detector,
            clock,
            fc_metrics,
            &pool_name,
        );
        tokio::spawn(fc.clone().run(stop_rx.clone()));
        fc
    });
    if saturation.is_none() {
        tracing::warn!(
            "the configured saturation detector cannot judge the pool; sheddable requests are admitted"
        );
    }
    let mut director = Director::new(
        pool.clone(),
        datastore,
        scheduler,
        saturation,
        metrics,
        opts,
        clock,
    );
    if let Some(fc) = flow_control {
        director = director.with_flow_control(fc);
    }
    let director = Arc::new(director);

    let tls = if cli.secure_serving {
        Some(match &cli.cert_path {
            Some(dir) => server::tls::from_dir(dir)?,
            None => server::tls::self_signed()?,
        })
    } else {
        None
    };
    let listeners = Listeners {
        grpc: bind(cli.bind_address, cli.grpc_port, "ext_proc").await?,
        health: bind(cli.bind_address, cli.grpc_health_port, "health").await?,
        metrics: bind(cli.bind_address, cli.metrics_port, "metrics").await?,
    };
    let readiness = Readiness::default();
    // Kubernetes: ready (every health service SERVING) iff synced; static sources: at once.
    readiness.set(kube.is_none());
    if let Some(k) = kube {
        k.metrics().register(&mut registry);
        k.spawn(sink.clone(), stop_rx.clone());
        let (mut synced, ready) = (sink.synced.subscribe(), readiness.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            while !*stop.borrow() {
                ready.set(*synced.borrow_and_update());
                tokio::select! { r = synced.changed() => if r.is_err() { return }, _ = stop.changed() => {} }
            }
        });
    }
    let stop = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    server::serve(
        listeners,
        director,
        Arc::new(registry),
        readiness,
        ServeOptions {
            tls,
            health_on_grpc_port: cli.health_checking,
            grace: cli.shutdown_grace_period,
        },
        stop,
    )
    .await?;
    if let Some(c) = collector {
        c.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The deprecated `--model-server-metrics-*` flags still set the data source when its parameters
/// were left at their defaults (GIE: parameters > changed flag > default). The metrics port
/// applies only when every endpoint serves on one port, as GIE requires one target port.
fn apply_deprecated_metrics_flags(
    cli: &Cli,
    cc: &mut CollectorConfig,
    snapshot: &switchyard::scheduling::EndpointSnapshot,
) {
    let defaults = config::params::MetricsSourceParams::default();
    if let Some(s) = &cli.model_server_metrics_scheme
        && cc.source.scheme == defaults.scheme
    {
        cc.source.scheme = s.clone();
    }
    if let Some(p) = &cli.model_server_metrics_path
        && cc.source.path == defaults.path
    {
        cc.source.path = p.clone();
    }
    if let Some(v) = cli.model_server_metrics_https_insecure_skip_verify
        && cc.source.insecure_skip_verify == defaults.insecure_skip_verify
    {
        cc.source.insecure_skip_verify = v;
    }
    if let Some(port) = cli.model_server_metrics_port.filter(|p| *p > 0) {
        let mut ports = snapshot.endpoints().iter().map(|e| e.endpoint.port);
        let first = ports.next();
        if first.is_some() && ports.all(|p| Some(p) == first) {
            cc.metrics_port = Some(port);
        } else {
            tracing::warn!(
                "--model-server-metrics-port is ignored: endpoints serve on several ports"
            );
        }
    }
}

fn main() -> ExitCode {
    let (args, dropped) = normalise_args(std::env::args().collect());
    let cli = Cli::parse_from(args);
    init_logging(&cli);
    for d in dropped {
        tracing::warn!("ignoring unknown flag {d}");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> (Vec<String>, Vec<String>) {
        normalise_args(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn go_style_flags_are_normalised() {
        let (out, dropped) = norm(&[
            "switchyard",
            "-poolName",
            "p",
            "--pool-namespace=ns",
            "-v",
            "4",
            "--zap-encoder",
            "json",
            "--unknown-flag",
            "x",
            "--secure-serving=false",
            "--other=1",
        ]);
        assert_eq!(
            out,
            vec![
                "switchyard",
                "--pool-name",
                "p",
                "--pool-namespace=ns",
                "-v",
                "4",
                "--zap-encoder",
                "json",
                "--secure-serving=false"
            ]
        );
        assert_eq!(dropped, vec!["--unknown-flag", "--other=1"]);
        let cli = Cli::parse_from(out);
        assert_eq!(cli.pool_name, "p");
        assert_eq!(cli.verbosity, 4);
        assert!(!cli.secure_serving);
    }

    #[test]
    fn defaults_match_gie() {
        let cli = Cli::parse_from(["switchyard"]);
        assert_eq!(
            (cli.grpc_port, cli.grpc_health_port, cli.metrics_port),
            (9002, 9003, 9090)
        );
        assert!(cli.secure_serving);
        assert_eq!(cli.refresh_metrics_interval, Duration::from_millis(50));
        assert_eq!(
            cli.refresh_prometheus_metrics_interval,
            Duration::from_secs(5)
        );
        assert_eq!(cli.metrics_staleness_threshold, Duration::from_secs(2));
        assert_eq!(cli.max_request_body_bytes, 64 << 20);
        assert_eq!(cli.pool_group, "inference.networking.k8s.io");
        assert_eq!(cli.verbosity, 2);
    }
}
