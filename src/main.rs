//! The `switchyard` binary: flags and wiring only.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{ArgAction, CommandFactory, Parser};
use prometheus_client::registry::Registry;
use switchyard::clock::Clock;
use switchyard::config::{self, EndpointPickerConfig};
use switchyard::discovery::{self, Sink};
use switchyard::runtime::{ConfigOrigin, ConfigSource, Flags, Live};
use switchyard::server::{self, Listeners, ServeOptions, health::Readiness};
use tokio::sync::watch;

fn duration(s: &str) -> Result<Duration, String> {
    switchyard::decode::parse_go_duration(s)
}

/// `--admin-port`: a port, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AdminPort(Option<u16>);

fn admin_port(s: &str) -> Result<AdminPort, String> {
    if s == "off" {
        return Ok(AdminPort(None));
    }
    s.parse::<u16>()
        .map(|p| AdminPort(Some(p)))
        .map_err(|_| format!("expected a port number or \"off\", got {s:?}"))
}

fn byte_size(s: &str) -> Result<usize, String> {
    switchyard::decode::parse_quantity(s)
        .and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
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
    /// PEM file of CA certificates: only clients (gateways) presenting a certificate issued by
    /// one of them may connect to the ext_proc port (mutual TLS).
    #[arg(long, value_name = "FILE")]
    client_ca_file: Option<PathBuf>,
    /// Also serve grpc.health.v1 on the ext_proc port.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    health_checking: bool,
    /// Client-chosen label values (model names, fairness ids) kept per metric label; others
    /// are counted under "other".
    #[arg(long, default_value_t = switchyard::telemetry::DEFAULT_LABEL_VALUES)]
    max_label_values: usize,
    /// Flow control forgets a tenant's VTC state after it was idle this long (nothing queued or
    /// streaming); when it returns it starts level with the backlogged tenants.
    #[arg(long, default_value = "10m", value_parser = duration)]
    fairness_idle_timeout: Duration,
    /// Largest request body accepted (bytes, or a quantity such as 64Mi); larger gets 413.
    #[arg(long, default_value = "64Mi", value_parser = byte_size)]
    max_request_body_bytes: usize,
    /// Port of the admin API (Explain, GetState, WatchState: `switchyard explain`, `switchyard
    /// state`), or "off".
    #[arg(long, default_value = "9004", value_parser = admin_port)]
    admin_port: AdminPort,
    /// Address the admin API binds to. It has no authentication: loopback unless you say so.
    #[arg(long, default_value = "127.0.0.1")]
    admin_bind_address: IpAddr,
    /// After SIGTERM, how long new streams are still served (readiness already NOT_SERVING)
    /// while the gateway notices; a second SIGTERM or SIGINT exits at once.
    #[arg(long, default_value = "5s", value_parser = duration)]
    drain_timeout: Duration,
    /// Then, how long open streams may finish once the listeners close.
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
    /// How often --config-file is re-read; a changed, valid version replaces the running
    /// configuration (SIGHUP re-reads it at once).
    #[arg(long, default_value = "1s", value_parser = duration)]
    config_reload_interval: Duration,

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
    /// Send the top endpoints' total scores with each pick (header and envoy.lb metadata
    /// x-gateway-destination-endpoint-scores).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    emit_endpoint_scores: bool,
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
    /// Reload --cert-path files when they change (new connections get the new certificate).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_cert_reload: bool,
    /// How often --cert-path is re-read with --enable-cert-reload.
    #[arg(long, default_value = "5s", value_parser = duration)]
    cert_reload_interval: Duration,
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not end the process: tracing would otherwise report the failed
        // write with eprintln!, which panics.
        .log_internal_errors(false);
    if cli.zap_encoder == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The configuration the flags name, where it came from, and its text.
fn load_config(cli: &Cli) -> Result<(EndpointPickerConfig, ConfigSource, Vec<u8>)> {
    let (text, origin) = match (&cli.config_file, &cli.config_text) {
        (Some(path), _) => (
            std::fs::read(path)
                .with_context(|| format!("reading --config-file {}", path.display()))?,
            ConfigOrigin::File(path.clone()),
        ),
        (None, Some(text)) => (text.clone().into_bytes(), ConfigOrigin::Text),
        (None, None) => (
            config::DEFAULT_CONFIG_YAML.as_bytes().to_vec(),
            ConfigOrigin::BuiltIn,
        ),
    };
    let what = match &origin {
        ConfigOrigin::File(p) => p.display().to_string(),
        ConfigOrigin::Text => "--config-text".into(),
        ConfigOrigin::BuiltIn => "the built-in configuration".into(),
    };
    let cfg = config::load_str(&String::from_utf8_lossy(&text))
        .with_context(|| format!("loading {what}"))?;
    Ok((cfg, ConfigSource::new(origin, &text), text))
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
    if cli.tracing {
        tracing::debug!("--tracing: OpenTelemetry export is not built in; spans are not exported");
    }
    if cli.metrics_endpoint_auth {
        tracing::debug!(
            "--metrics-endpoint-auth needs Kubernetes TokenReview; /metrics is served without auth"
        );
    }
    if cli.ha_enable_leader_election {
        tracing::warn!("--ha-enable-leader-election needs Kubernetes; this replica always serves");
    }
}

/// The endpoint source the flags name: exactly one of them.
async fn endpoint_source(cli: &Cli) -> Result<discovery::Source> {
    use switchyard::discovery::kubernetes::{KubernetesOptions, KubernetesSource};
    let static_source = cli.static_endpoints.is_some() || cli.static_endpoints_file.is_some();
    let (pool, selector) = (!cli.pool_name.is_empty(), !cli.endpoint_selector.is_empty());
    if [pool, selector, static_source]
        .iter()
        .filter(|s| **s)
        .count()
        > 1
    {
        bail!("give exactly one of --pool-name, --endpoint-selector, --static-endpoints(-file)");
    }
    if let Some(list) = &cli.static_endpoints {
        return Ok(discovery::Source::List(
            discovery::parse_endpoint_list(list).map_err(anyhow::Error::msg)?,
        ));
    }
    if let Some(path) = &cli.static_endpoints_file {
        return Ok(discovery::Source::File {
            path: path.clone(),
            interval: cli.static_endpoints_reload_interval,
        });
    }
    let ns = &cli.pool_namespace;
    let opts = match (pool, selector) {
        (true, _) => KubernetesOptions::pool(&cli.pool_name, ns, &cli.pool_group)?,
        (_, true) => {
            let ports = &cli.endpoint_target_ports;
            KubernetesOptions::standalone(&cli.endpoint_selector, ports, ns)?
        }
        _ => bail!(
            "no endpoints: give --pool-name (Kubernetes), --endpoint-selector (Kubernetes, \
             standalone), --static-endpoints ip:port,... or --static-endpoints-file FILE"
        ),
    };
    Ok(discovery::Source::Kubernetes(Box::new(
        KubernetesSource::connect(opts).await?,
    )))
}

/// What the runtime takes from the flags. `--model-server-metrics-port` applies only when every
/// endpoint serves on one port, as GIE requires one target port.
fn runtime_flags(
    cli: &Cli,
    snapshot: &switchyard::scheduling::EndpointSnapshot,
    pool_name: Option<&str>,
) -> Flags {
    let mut ports = snapshot.endpoints().iter().map(|e| e.endpoint.port);
    let one_port = ports.next().filter(|p| ports.all(|q| q == *p)).is_some();
    let metrics_port = cli.model_server_metrics_port.filter(|p| *p > 0);
    if metrics_port.is_some() && !one_port {
        tracing::warn!("--model-server-metrics-port is ignored: endpoints serve on several ports");
    }
    Flags {
        pool_name: pool_name.unwrap_or("switchyard").into(),
        pool_namespace: if cli.pool_namespace.is_empty() {
            std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into())
        } else {
            cli.pool_namespace.clone()
        },
        max_request_body_bytes: cli.max_request_body_bytes,
        disable_endpoint_subset_filter: cli.disable_endpoint_subset_filter,
        refresh_metrics_interval: cli.refresh_metrics_interval,
        refresh_prometheus_metrics_interval: cli.refresh_prometheus_metrics_interval,
        metrics_staleness_threshold: cli.metrics_staleness_threshold,
        model_server_metrics_scheme: cli.model_server_metrics_scheme.clone(),
        model_server_metrics_path: cli.model_server_metrics_path.clone(),
        model_server_metrics_insecure_skip_verify: cli
            .model_server_metrics_https_insecure_skip_verify,
        model_server_metrics_port: metrics_port.filter(|_| one_port),
        emit_endpoint_scores: cli.emit_endpoint_scores,
        max_label_values: cli.max_label_values,
        fairness_idle_timeout: cli.fairness_idle_timeout,
    }
}

async fn bind(addr: IpAddr, port: u16, what: &str) -> Result<tokio::net::TcpListener> {
    let sa = SocketAddr::new(addr, port);
    let l = tokio::net::TcpListener::bind(sa)
        .await
        .with_context(|| format!("binding the {what} port {sa}"))?;
    let local = l.local_addr()?;
    tracing::info!(%local, "{what} listening");
    // A machine-readable line for tests and scripts that start Switchyard on port 0 (a closed
    // stderr is no reason to fail).
    let _ = writeln!(std::io::stderr(), "switchyard: {what} listening on {local}");
    Ok(l)
}

/// Installs the signal handlers: SIGTERM and SIGINT count into `stops` (the first starts the
/// drain, a second exits at once), SIGHUP bumps `hup` (re-read the config and endpoints files).
fn watch_signals(stops: watch::Sender<u32>, hup: watch::Sender<u64>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: re-reading the configuration and endpoints files");
                    hup.send_modify(|n| *n += 1);
                    continue;
                }
            };
            stops.send_modify(|n| *n += 1);
            tracing::info!(
                signal = name,
                count = *stops.borrow(),
                "stop signal received"
            );
        }
    });
    Ok(())
}

/// The ext_proc certificate: none with `--secure-serving=false`, `--cert-path`'s pair (watched
/// with `--enable-cert-reload`), or a fresh self-signed one.
fn serving_certificate(
    cli: &Cli,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Arc<server::tls::CertStore>>> {
    if !cli.secure_serving {
        if cli.client_ca_file.is_some() {
            bail!("--client-ca-file needs TLS: it cannot be used with --secure-serving=false");
        }
        return Ok(None);
    }
    let client_cas = match &cli.client_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --client-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let store = |pair: &server::tls::CertPair| match &client_cas {
        Some(ca) => server::tls::CertStore::with_client_cas(pair, ca),
        None => server::tls::CertStore::new(pair),
    };
    let Some(dir) = &cli.cert_path else {
        if cli.enable_cert_reload {
            tracing::warn!(
                "--enable-cert-reload needs --cert-path; the self-signed certificate is fixed"
            );
        }
        return Ok(Some(store(&server::tls::self_signed()?)?));
    };
    let store = store(&server::tls::from_dir(dir)?)
        .with_context(|| format!("loading the certificate in {}", dir.display()))?;
    if cli.enable_cert_reload {
        let watch = store
            .clone()
            .watch_dir(dir.clone(), cli.cert_reload_interval, stop.clone());
        switchyard::tasks::spawn_critical("certificate watcher", watch);
    }
    Ok(Some(store))
}

/// Periods that drive timers must be at least 1 ms (a zero period would stop the timer, a
/// nanosecond one spin); every bad one is reported at once.
fn check_periods(cli: &Cli) -> Result<()> {
    let bad: Vec<String> = [
        ("--refresh-metrics-interval", cli.refresh_metrics_interval),
        (
            "--refresh-prometheus-metrics-interval",
            cli.refresh_prometheus_metrics_interval,
        ),
        (
            "--metrics-staleness-threshold",
            cli.metrics_staleness_threshold,
        ),
        (
            "--static-endpoints-reload-interval",
            cli.static_endpoints_reload_interval,
        ),
        ("--config-reload-interval", cli.config_reload_interval),
        ("--cert-reload-interval", cli.cert_reload_interval),
        ("--fairness-idle-timeout", cli.fairness_idle_timeout),
    ]
    .into_iter()
    .filter(|(_, d)| *d < Duration::from_millis(1))
    .map(|(flag, d)| format!("{flag}: must be at least 1ms, got {d:?}"))
    .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        bail!("invalid flags:\n  - {}", bad.join("\n  - "))
    }
}

async fn run(cli: Cli) -> Result<()> {
    check_periods(&cli)?;
    let (cfg, source, text) = load_config(&cli)?;
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    if cli.print_config {
        let _ = std::io::stdout().write_all(cfg.to_yaml().as_bytes());
        return Ok(());
    }
    warn_compat_flags(&cli);
    let (stops_tx, stops) = watch::channel(0u32);
    let (hup_tx, hup_rx) = watch::channel(0u64);
    watch_signals(stops_tx, hup_tx)?;
    // Set when the listeners close: background tasks stop, queued requests are answered.
    let (closing, stop_rx) = watch::channel(false);
    let sink = Sink::new();
    let endpoints = endpoint_source(&cli).await?;
    let pool_name = endpoints.pool_name().map(str::to_string);
    let mut registry = Registry::default();
    if let discovery::Source::Kubernetes(k) = &endpoints {
        k.metrics().register(&mut registry);
    }
    endpoints
        .start(&sink, hup_rx.clone(), stop_rx.clone())
        .await?;
    tracing::info!(endpoints = sink.pool.snapshot().len(), "endpoints loaded");
    let flags = runtime_flags(&cli, &sink.pool.snapshot(), pool_name.as_deref());
    let origin = source.origin.clone();
    let live = Live::start(
        cfg,
        source,
        flags,
        &sink,
        Clock::new(),
        &mut registry,
        stop_rx.clone(),
    )?;
    if let ConfigOrigin::File(path) = origin {
        let interval = cli.config_reload_interval;
        let watch = live.clone().watch_config_file(path, interval, text, hup_rx);
        switchyard::tasks::spawn_critical("config watcher", watch);
    }
    let tls = serving_certificate(&cli, &stop_rx)?;
    let listeners = Listeners {
        grpc: bind(cli.bind_address, cli.grpc_port, "ext_proc").await?,
        health: bind(cli.bind_address, cli.grpc_health_port, "health").await?,
        metrics: bind(cli.bind_address, cli.metrics_port, "metrics").await?,
    };
    let admin = match cli.admin_port.0 {
        None => None,
        Some(port) => {
            if !cli.admin_bind_address.is_loopback() {
                tracing::warn!(
                    address = %cli.admin_bind_address,
                    "the admin API has no authentication and is reachable beyond this host"
                );
            }
            let l = bind(cli.admin_bind_address, port, "admin")
                .await
                .context("set --admin-port to a free port, or to off")?;
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            Some(tokio::spawn(server::admin::serve(l, live.clone(), stopped)))
        }
    };
    let readiness = Readiness::following(sink.synced.subscribe());
    let options = ServeOptions {
        tls,
        health_on_grpc_port: cli.health_checking,
        drain: cli.drain_timeout,
        grace: cli.shutdown_grace_period,
    };
    let director = live.director().clone();
    let registry = Arc::new(registry);
    server::serve(
        listeners, director, registry, readiness, options, stops, closing,
    )
    .await?;
    if let Some(task) = admin
        && let Ok(Err(e)) = task.await
    {
        tracing::warn!(error = %e, "the admin API stopped with an error");
    }
    live.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw
        .get(1)
        .is_some_and(|a| switchyard::admin::cli::SUBCOMMANDS.contains(&a.as_str()))
    {
        return switchyard::admin::cli::main(raw);
    }
    let (args, dropped) = normalise_args(raw);
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
            let _ = writeln!(std::io::stderr(), "error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
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
        assert_eq!(cli.admin_port, AdminPort(Some(9004)));
        assert!(cli.admin_bind_address.is_loopback());
        let cli = Cli::parse_from(["switchyard", "--admin-port", "off"]);
        assert_eq!(cli.admin_port, AdminPort(None));
        assert!(Cli::try_parse_from(["switchyard", "--admin-port", "no"]).is_err());
        assert_eq!(cli.verbosity, 2);
    }
}
