//! The `switchyard` binary: flags and wiring only.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use prometheus_client::registry::Registry;
use switchyard::cli::{Cli, CliError, TlsVersion};
use switchyard::clock::Clock;
use switchyard::config::{self, EndpointPickerConfig};
use switchyard::discovery::{self, Sink};
use switchyard::runtime::{ConfigOrigin, ConfigSource, Flags, Live};
use switchyard::server::{self, Listeners, ServeOptions, health::Readiness};
use tokio::sync::watch;

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match cli.log_verbosity() {
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
    if cli.tls_min_version < Some(TlsVersion::Tls12) && cli.tls_min_version.is_some() {
        tracing::warn!("--tls-min-version: TLS below 1.2 is never served; the minimum is TLS 1.2");
    }
    let policy = server::tls::TlsPolicy {
        tls13_only: cli.tls_min_version == Some(TlsVersion::Tls13),
        tls12_suites: server::tls::cipher_suites(&cli.tls_cipher_suites)
            .map_err(anyhow::Error::msg)
            .context("--tls-cipher-suites")?,
    };
    let store = |pair: &server::tls::CertPair| {
        server::tls::CertStore::build(
            pair,
            client_cas.as_deref(),
            "--client-ca-file",
            policy.clone(),
        )
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

/// TLS on the metrics port (`--metrics-cert-dir`, `--metrics-client-ca-file`): the directory's
/// pair, reloaded with the ext_proc certificate's interval when it changes.
fn metrics_certificate(
    cli: &Cli,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Arc<server::tls::CertStore>>> {
    let Some(dir) = &cli.metrics_cert_dir else {
        return Ok(None);
    };
    let client_cas = match &cli.metrics_client_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --metrics-client-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let pair = server::tls::from_dir(dir)?;
    let store = server::tls::CertStore::build(
        &pair,
        client_cas.as_deref(),
        "--metrics-client-ca-file",
        server::tls::TlsPolicy::default(),
    )
    .with_context(|| format!("loading the metrics certificate in {}", dir.display()))?;
    let watch = store
        .clone()
        .watch_dir(dir.clone(), cli.cert_reload_interval, stop.clone());
    switchyard::tasks::spawn_critical("metrics certificate watcher", watch);
    Ok(Some(store))
}

async fn run(cli: Cli) -> Result<()> {
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
    registry.register_collector(Box::new(switchyard::telemetry::process::ProcessCollector));
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
    let metrics_tls = metrics_certificate(&cli, &stop_rx)?;
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
        metrics_tls,
        max_recv_msg_size: cli.grpc_max_recv_msg_size,
        max_send_msg_size: cli.grpc_max_send_msg_size,
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

/// `switchyard validate [flags]`: loads and checks everything the flags name — the periods,
/// the configuration, the runtime it builds, the endpoint source and the certificates — prints
/// the effective setup, and starts nothing. Exits non-zero on any error, listing them all.
fn validate(cli: &Cli) -> ExitCode {
    let mut out = String::new();
    let mut errors: Vec<String> = Vec::new();
    let mut note = |r: Result<String>| match r {
        Ok(s) => out.push_str(&s),
        Err(e) => errors.push(format!("{e:#}")),
    };
    let periods = cli
        .validate()
        .map_err(|bad| anyhow::anyhow!("invalid flags:\n  - {}", bad.join("\n  - ")));
    let periods_ok = periods.is_ok();
    note(periods.map(|()| String::new()));
    note(validate_setup(cli, periods_ok));
    note(validate_endpoints(cli));
    note(validate_tls(cli));
    let _ = std::io::stdout().write_all(out.as_bytes());
    if errors.is_empty() {
        let _ = writeln!(std::io::stdout(), "valid");
        ExitCode::SUCCESS
    } else {
        for e in &errors {
            let _ = writeln!(std::io::stderr(), "error: {e}");
        }
        ExitCode::FAILURE
    }
}

/// The configuration and (when the periods are valid, else their errors are reported already)
/// the runtime it builds with these flags, described.
fn validate_setup(cli: &Cli, build_runtime: bool) -> Result<String> {
    use std::fmt::Write as _;
    let (cfg, source, _) = load_config(cli)?;
    if !build_runtime {
        return Ok(String::new());
    }
    let flags = runtime_flags(cli, &Default::default(), None);
    let rt = switchyard::runtime::Runtime::build(cfg.clone(), source.clone(), &flags)
        .map_err(|e| anyhow::anyhow!("{}", e.render("flags")))?;
    let mut s = String::new();
    let origin = match &source.origin {
        ConfigOrigin::File(p) => p.display().to_string(),
        ConfigOrigin::Text => "--config-text".into(),
        ConfigOrigin::BuiltIn => "built in".into(),
    };
    let _ = writeln!(s, "config: {origin} (hash {})", source.hash);
    for w in &cfg.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    for p in &cfg.profiles {
        let _ = writeln!(s, "profile {}:", p.name);
        for &f in &p.filters {
            let _ = writeln!(s, "  filter {}", cfg.plugin(f).name);
        }
        for &(sc, w) in &p.scorers {
            let _ = writeln!(s, "  scorer {} weight {w}", cfg.plugin(sc).name);
        }
        let _ = writeln!(s, "  picker {}", cfg.plugin(p.picker).name);
    }
    let _ = writeln!(
        s,
        "saturation detector: {}; flow control: {}",
        cfg.plugin(cfg.saturation_detector).name,
        if rt.flow_control_config.is_some() {
            "on"
        } else {
            "off"
        }
    );
    match &rt.collector {
        Some(c) => {
            let _ = writeln!(
                s,
                "metrics: {}://<endpoint>{} every {:?}",
                c.source.scheme, c.source.path, c.refresh_interval
            );
        }
        None => {
            let _ = writeln!(s, "metrics: collection disabled");
        }
    }
    Ok(s)
}

/// The endpoint source the flags name, read and checked without starting it.
fn validate_endpoints(cli: &Cli) -> Result<String> {
    use std::fmt::Write as _;
    let static_source = cli.static_endpoints.is_some() || cli.static_endpoints_file.is_some();
    let (pool, selector) = (!cli.pool_name.is_empty(), !cli.endpoint_selector.is_empty());
    if [pool, selector, static_source]
        .iter()
        .filter(|s| **s)
        .count()
        != 1
    {
        bail!("give exactly one of --pool-name, --endpoint-selector, --static-endpoints(-file)");
    }
    let mut s = String::new();
    let endpoints = if let Some(list) = &cli.static_endpoints {
        discovery::parse_endpoint_list(list).map_err(anyhow::Error::msg)?
    } else if let Some(path) = &cli.static_endpoints_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --static-endpoints-file {}", path.display()))?;
        let file = discovery::parse_static_file(&text)
            .with_context(|| format!("loading {}", path.display()))?;
        let _ = writeln!(
            s,
            "objectives: {}; model rewrites: {}",
            file.objectives.len(),
            file.rewrites.len()
        );
        file.endpoints
    } else {
        use switchyard::discovery::kubernetes::KubernetesOptions;
        let ns = &cli.pool_namespace;
        let opts = if pool {
            KubernetesOptions::pool(&cli.pool_name, ns, &cli.pool_group)?
        } else {
            KubernetesOptions::standalone(&cli.endpoint_selector, &cli.endpoint_target_ports, ns)?
        };
        let _ = writeln!(
            s,
            "endpoints: from Kubernetes, pool {} (not contacted)",
            opts.pool_name()
        );
        return Ok(s);
    };
    let _ = writeln!(s, "endpoints: {}", endpoints.len());
    for e in &endpoints {
        let _ = writeln!(s, "  {} {}:{}", e.name, e.address, e.port);
    }
    Ok(s)
}

/// The ext_proc certificate and client CAs the flags name.
fn validate_tls(cli: &Cli) -> Result<String> {
    let (tx, rx) = watch::channel(false);
    // Building the store parses and checks every file; nothing is watched (no runtime).
    let store = if cli.enable_cert_reload {
        let cli = Cli {
            enable_cert_reload: false,
            ..cli.clone()
        };
        serving_certificate(&cli, &rx)?
    } else {
        serving_certificate(cli, &rx)?
    };
    drop(tx);
    Ok(match (store, &cli.cert_path) {
        (None, _) => "ext_proc: plaintext\n".into(),
        (Some(_), Some(dir)) => format!("ext_proc: TLS with {}\n", dir.display()),
        (Some(_), None) => "ext_proc: TLS, self-signed\n".into(),
    })
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw
        .get(1)
        .is_some_and(|a| switchyard::admin::cli::SUBCOMMANDS.contains(&a.as_str()))
    {
        return switchyard::admin::cli::main(raw);
    }
    let validate_only = raw.get(1).is_some_and(|a| a == "validate");
    let raw = if validate_only {
        let mut r = raw;
        r.remove(1);
        r
    } else {
        raw
    };
    // `validate` reports bad values with everything else it checks; a run stops at them.
    let parsed = if validate_only {
        switchyard::cli::parse_unvalidated(raw)
    } else {
        switchyard::cli::parse(raw)
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(CliError::Clap(e)) => e.exit(),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            return ExitCode::from(2);
        }
    };
    let cli = parsed.cli;
    if validate_only {
        for w in &parsed.warnings {
            let _ = writeln!(std::io::stderr(), "warning: {w}");
        }
        return validate(&cli);
    }
    init_logging(&cli);
    for w in parsed.warnings {
        tracing::warn!("{w}");
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
