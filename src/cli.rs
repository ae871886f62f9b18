//! The `switchyard` command line: GIE's and llm-d-router's flags with their defaults, the spellings
//! old charts use (`-poolName`, `-pool-name`), and validation that reports every bad value at once.
//!
//! Unknown flags are an error, as in the Go EPP (a typo such as `--grpc-prot` must not start a
//! replica on default ports), with a "did you mean" hint. Flags the Go EPP deprecated or that
//! Switchyard does not act on are accepted with a warning naming them ([`Parsed::warnings`]);
//! [`DEPRECATED_FLAGS`] lists them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

fn duration(s: &str) -> Result<Duration, String> {
    crate::decode::parse_go_duration(s)
}

fn byte_size(s: &str) -> Result<usize, String> {
    crate::decode::parse_quantity(s).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

/// llm-d-router's `--grpc-max-*-msg-size`: a quantity, with an optional trailing `B`
/// (`10MiB`, `25MB`, `4194304`).
fn msg_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let t = match t.strip_suffix(['B', 'b']) {
        Some(rest) if !rest.is_empty() => rest,
        _ => t,
    };
    byte_size(t)
}

/// `--model-server-metrics-scheme`: GIE accepts only these.
fn scheme(s: &str) -> Result<String, String> {
    match s {
        "http" | "https" => Ok(s.to_string()),
        _ => Err(format!(
            "unexpected {s:?} value, it can only be set to 'http' or 'https'"
        )),
    }
}

/// A `--zap-*` value from a fixed set (controller-runtime validates them the same way).
fn one_of(allowed: &'static [&'static str]) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| {
        if allowed.contains(&s) {
            Ok(s.to_string())
        } else {
            Err(format!("must be one of {}, got {s:?}", allowed.join(", ")))
        }
    }
}

/// `--zap-log-level`: `debug`, `info`, `error`, `panic` or a verbosity > 0.
fn zap_level(s: &str) -> Result<ZapLevel, String> {
    match s.to_ascii_lowercase().as_str() {
        "debug" => Ok(ZapLevel::Verbosity(4)),
        "info" => Ok(ZapLevel::Verbosity(2)),
        "error" | "panic" => Ok(ZapLevel::Verbosity(0)),
        other => match other.parse::<u8>() {
            Ok(n) if n > 0 => Ok(ZapLevel::Verbosity(n)),
            _ => Err(format!(
                "invalid log level {s:?}: use debug, info, error, panic or an integer > 0"
            )),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZapLevel {
    /// The `-v` verbosity the level means (0 errors only, 2 info, 4 debug).
    Verbosity(u8),
}

/// `--admin-port`: a port, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdminPort(pub Option<u16>);

fn admin_port(s: &str) -> Result<AdminPort, String> {
    if s == "off" {
        return Ok(AdminPort(None));
    }
    s.parse::<u16>()
        .map(|p| AdminPort(Some(p)))
        .map_err(|_| format!("expected a port number or \"off\", got {s:?}"))
}

/// `--tls-min-version`, with Go's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

fn tls_version(s: &str) -> Result<TlsVersion, String> {
    Ok(match s {
        "VersionTLS10" => TlsVersion::Tls10,
        "VersionTLS11" => TlsVersion::Tls11,
        "VersionTLS12" => TlsVersion::Tls12,
        "VersionTLS13" => TlsVersion::Tls13,
        _ => {
            return Err(format!(
                "unknown TLS version {s:?}; supported values: VersionTLS10, VersionTLS11, \
                 VersionTLS12, VersionTLS13"
            ));
        }
    })
}

/// Switchyard: an LLM-aware inference endpoint picker for Envoy ext_proc gateways, a drop-in
/// replacement for the Gateway API Inference Extension EPP.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
pub struct Cli {
    // === Serving ===
    /// Port of the ext_proc gRPC server.
    #[arg(long, default_value_t = 9002)]
    pub grpc_port: u16,
    /// Port of the gRPC health server.
    #[arg(long, default_value_t = 9003)]
    pub grpc_health_port: u16,
    /// Port of the Prometheus /metrics server.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address every listener binds to.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Serve ext_proc over TLS (a self-signed certificate unless --cert-path is given).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub secure_serving: bool,
    /// Directory holding tls.crt and tls.key.
    #[arg(long)]
    pub cert_path: Option<PathBuf>,
    /// PEM file of CA certificates: only clients (gateways) presenting a certificate issued by
    /// one of them may connect to the ext_proc port (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Lowest TLS version the ext_proc port accepts: VersionTLS12 or VersionTLS13 (VersionTLS10
    /// and VersionTLS11 are accepted and mean VersionTLS12: TLS below 1.2 is never served).
    #[arg(long, value_parser = tls_version, value_name = "VERSION")]
    pub tls_min_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites the ext_proc port offers, comma-separated Go names (e.g.
    /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256). TLS 1.3 suites are not configurable.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub tls_cipher_suites: Vec<String>,
    /// Largest gRPC message received on the ext_proc port (e.g. 10MiB; default 16MiB).
    #[arg(long, value_parser = msg_size, value_name = "SIZE")]
    pub grpc_max_recv_msg_size: Option<usize>,
    /// Largest gRPC message sent on the ext_proc port (e.g. 10MiB; default 16MiB).
    #[arg(long, value_parser = msg_size, value_name = "SIZE")]
    pub grpc_max_send_msg_size: Option<usize>,
    /// Also serve grpc.health.v1 on the ext_proc port.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub health_checking: bool,
    /// Client-chosen label values (model names, fairness ids) kept per metric label; others
    /// are counted under "other".
    #[arg(long, default_value_t = crate::telemetry::DEFAULT_LABEL_VALUES)]
    pub max_label_values: usize,
    /// Flow control forgets a tenant's VTC state after it was idle this long (nothing queued or
    /// streaming); when it returns it starts level with the backlogged tenants.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub fairness_idle_timeout: Duration,
    /// Largest request body accepted (bytes, or a quantity such as 64Mi); larger gets 413.
    #[arg(long, default_value = "64Mi", value_parser = byte_size)]
    pub max_request_body_bytes: usize,
    /// Port of the admin API (Explain, GetState, WatchState: `switchyard explain`, `switchyard
    /// state`), or "off".
    #[arg(long, default_value = "9004", value_parser = admin_port)]
    pub admin_port: AdminPort,
    /// Address the admin API binds to. It has no authentication: loopback unless you say so.
    #[arg(long, default_value = "127.0.0.1")]
    pub admin_bind_address: IpAddr,
    /// After SIGTERM, how long new streams are still served (readiness already NOT_SERVING)
    /// while the gateway notices; a second SIGTERM or SIGINT exits at once.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Then, how long open streams may finish once the listeners close.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub shutdown_grace_period: Duration,

    // === Configuration ===
    /// EndpointPickerConfig YAML file (default: queue ×2, KV ×2, prefix ×3).
    #[arg(long, value_name = "FILE", conflicts_with = "config_text")]
    pub config_file: Option<PathBuf>,
    /// EndpointPickerConfig YAML given inline.
    #[arg(long, value_name = "YAML")]
    pub config_text: Option<String>,
    /// Print the effective configuration, every default spelled out, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// How often --config-file is re-read; a changed, valid version replaces the running
    /// configuration (SIGHUP re-reads it at once).
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub config_reload_interval: Duration,
    /// llm-d-router's switch for its experimental (Alpha) plugins. Switchyard implements none of
    /// them, so it changes nothing; accepted so llm-d-router command lines start.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub allow_experimental_plugins: bool,

    // === Endpoints ===
    /// Static endpoints, comma-separated ip:port.
    #[arg(long, value_name = "LIST")]
    pub static_endpoints: Option<String>,
    /// Static endpoints file (endpoints, objectives, modelRewrites), re-read when it changes.
    #[arg(long, value_name = "FILE", conflicts_with = "static_endpoints")]
    pub static_endpoints_file: Option<PathBuf>,
    /// How often the static endpoints file is checked for changes.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub static_endpoints_reload_interval: Duration,
    /// Ignore the gateway's subset hint.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub disable_endpoint_subset_filter: bool,
    /// Send the top endpoints' total scores with each pick (header and envoy.lb metadata
    /// x-gateway-destination-endpoint-scores).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub emit_endpoint_scores: bool,
    /// InferencePool name (Kubernetes discovery).
    #[arg(long, default_value = "")]
    pub pool_name: String,
    /// InferencePool namespace (default: $NAMESPACE, then "default").
    #[arg(long, default_value = "")]
    pub pool_namespace: String,
    /// InferencePool API group.
    #[arg(long, default_value = "inference.networking.k8s.io")]
    pub pool_group: String,
    /// Pod label selector for standalone Kubernetes discovery.
    #[arg(long, default_value = "")]
    pub endpoint_selector: String,
    /// Target ports for standalone Kubernetes discovery.
    #[arg(long, value_delimiter = ',')]
    pub endpoint_target_ports: Vec<u16>,
    /// Leader election for active-passive replicas (Kubernetes).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub ha_enable_leader_election: bool,

    // === Metrics collection ===
    /// How often each endpoint's metrics are scraped.
    #[arg(long, default_value = "50ms", value_parser = duration)]
    pub refresh_metrics_interval: Duration,
    /// How often the pool gauges are refreshed.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub refresh_prometheus_metrics_interval: Duration,
    /// Endpoints with older metrics do not count in the pool gauges.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub metrics_staleness_threshold: Duration,
    /// Deprecated: metrics-data-source parameter `scheme` (http or https).
    #[arg(long, value_parser = scheme)]
    pub model_server_metrics_scheme: Option<String>,
    /// Deprecated: metrics-data-source parameter `path`.
    #[arg(long)]
    pub model_server_metrics_path: Option<String>,
    /// Deprecated: metrics port when the pool has one target port.
    #[arg(long)]
    pub model_server_metrics_port: Option<u16>,
    /// Deprecated: metrics-data-source parameter `insecureSkipVerify`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub model_server_metrics_https_insecure_skip_verify: Option<bool>,
    /// Deprecated and ignored (with a warning): configure core-metrics-extractor engineConfigs.
    #[arg(long, hide = true)]
    pub total_queued_requests_metric: Option<String>,
    #[arg(long, hide = true)]
    pub total_running_requests_metric: Option<String>,
    #[arg(long, hide = true)]
    pub kv_cache_usage_percentage_metric: Option<String>,
    #[arg(long, hide = true)]
    pub lora_info_metric: Option<String>,
    #[arg(long, hide = true)]
    pub cache_info_metric: Option<String>,

    // === Observability ===
    /// OpenTelemetry tracing (accepted; traces are not exported).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub tracing: bool,
    /// Go pprof endpoints (accepted and ignored: the Go runtime's profiles do not exist here).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub enable_pprof: bool,
    /// Reload --cert-path files when they change (new connections get the new certificate).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_cert_reload: bool,
    /// How often --cert-path is re-read with --enable-cert-reload.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub cert_reload_interval: Duration,
    /// Bearer-token auth on /metrics (needs Kubernetes TokenReview; not enforced).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub metrics_endpoint_auth: bool,
    /// Directory holding tls.crt and tls.key for the metrics port: /metrics is served over TLS.
    #[arg(long, value_name = "DIR")]
    pub metrics_cert_dir: Option<PathBuf>,
    /// PEM CA bundle: scrapers of the metrics port must present a certificate it issued (needs
    /// --metrics-cert-dir).
    #[arg(long, value_name = "FILE")]
    pub metrics_client_ca_file: Option<PathBuf>,
    /// llm-d-router's ext_proc stream metrics (accepted with a warning; not implemented).
    #[arg(long, hide = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_grpc_stream_metrics: Option<bool>,
    /// llm-d-router's gRPC compression (accepted with a warning; not implemented).
    #[arg(long, hide = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub grpc_enable_compression: Option<bool>,

    // === Logging ===
    /// Log verbosity: 1 warnings, 2 info (default), 3–4 debug, 5 trace. RUST_LOG overrides.
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,
    /// Log encoding: console or json.
    #[arg(long, default_value = "console", value_parser = one_of(&["console", "json"]))]
    pub zap_encoder: String,
    /// Log level (debug, info, error, panic or a verbosity > 0); overrides -v.
    #[arg(long, value_parser = zap_level)]
    pub zap_log_level: Option<ZapLevel>,
    #[arg(long, hide = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub zap_devel: Option<bool>,
    #[arg(long, hide = true, value_parser = one_of(&["info", "error", "panic"]))]
    pub zap_stacktrace_level: Option<String>,
    #[arg(long, hide = true, value_parser = one_of(&["epoch", "millis", "nano", "iso8601", "rfc3339", "rfc3339nano"]))]
    pub zap_time_encoding: Option<String>,
}

/// Flags accepted for compatibility with a warning: the Go EPP's deprecated flags, and flags of
/// the Go EPP's logging or llm-d-router that Switchyard does not act on. Each warning names the
/// flag and says what happens instead.
pub const DEPRECATED_FLAGS: &[(&str, &str)] = &[
    (
        "total-queued-requests-metric",
        "deprecated and ignored; configure core-metrics-extractor engineConfigs",
    ),
    (
        "total-running-requests-metric",
        "deprecated and ignored; configure core-metrics-extractor engineConfigs",
    ),
    (
        "kv-cache-usage-percentage-metric",
        "deprecated and ignored; configure core-metrics-extractor engineConfigs",
    ),
    (
        "lora-info-metric",
        "deprecated and ignored; configure core-metrics-extractor engineConfigs",
    ),
    (
        "cache-info-metric",
        "deprecated and ignored; configure core-metrics-extractor engineConfigs",
    ),
    (
        "model-server-metrics-scheme",
        "deprecated; set the metrics-data-source parameter scheme",
    ),
    (
        "model-server-metrics-path",
        "deprecated; set the metrics-data-source parameter path",
    ),
    (
        "model-server-metrics-port",
        "deprecated; used only when every endpoint serves on one port",
    ),
    (
        "model-server-metrics-https-insecure-skip-verify",
        "deprecated; set the metrics-data-source parameter insecureSkipVerify",
    ),
    (
        "zap-devel",
        "ignored: Switchyard's log format is chosen by --zap-encoder",
    ),
    (
        "zap-stacktrace-level",
        "ignored: Switchyard logs no stack traces",
    ),
    (
        "zap-time-encoding",
        "ignored: Switchyard logs RFC 3339 times",
    ),
    (
        "enable-grpc-stream-metrics",
        "not implemented in Switchyard; ignored",
    ),
    (
        "grpc-enable-compression",
        "not implemented in Switchyard; ext_proc messages are sent uncompressed",
    ),
];

/// The command line parsed and validated.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    /// One line per deprecated or ignored flag given (see [`DEPRECATED_FLAGS`]).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad syntax, an unknown value, `--help` or `--version` (clap prints and exits).
    #[error("{0}")]
    Clap(#[from] clap::Error),
    /// Flags clap cannot see: unknown names. Each line names one.
    #[error("{}", .0.join("\n"))]
    Unknown(Vec<String>),
    /// Values that are well-formed but unusable, or that contradict each other; all of them.
    #[error("invalid flags:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl CliError {
    /// Process exit code: 2 for usage errors (like clap), 0 for `--help`/`--version`.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Clap(e) => e.exit_code(),
            CliError::Unknown(_) | CliError::Invalid(_) => 2,
        }
    }
}

/// Parses `args` (the program name first) and validates the values. Never panics, whatever
/// the input.
pub fn parse<I, S>(args: I) -> Result<Parsed, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let parsed = parse_unvalidated(args)?;
    parsed.cli.validate().map_err(CliError::Invalid)?;
    Ok(parsed)
}

/// [`parse`] without [`Cli::validate`] (`switchyard validate` reports those errors with the
/// others it finds).
pub fn parse_unvalidated<I, S>(args: I) -> Result<Parsed, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let raw: Vec<String> = args.into_iter().map(Into::into).collect();
    let (normalised, unknown) = normalise_args(raw);
    if !unknown.is_empty() {
        return Err(CliError::Unknown(unknown));
    }
    let matches = Cli::command().try_get_matches_from(normalised)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine)
        )
    };
    let warnings = DEPRECATED_FLAGS
        .iter()
        .filter(|(flag, _)| given(&flag.replace('-', "_")))
        .map(|(flag, why)| format!("--{flag} is {why}"))
        .collect();
    Ok(Parsed { cli, warnings })
}

impl Cli {
    /// The effective log verbosity: `--zap-log-level` when given, else `-v`.
    pub fn log_verbosity(&self) -> u8 {
        match self.zap_log_level {
            Some(ZapLevel::Verbosity(v)) => v,
            None => self.verbosity,
        }
    }

    /// Every value the process cannot run with, each naming its flag.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut bad: Vec<String> = [
            ("--refresh-metrics-interval", self.refresh_metrics_interval),
            (
                "--refresh-prometheus-metrics-interval",
                self.refresh_prometheus_metrics_interval,
            ),
            (
                "--metrics-staleness-threshold",
                self.metrics_staleness_threshold,
            ),
            (
                "--static-endpoints-reload-interval",
                self.static_endpoints_reload_interval,
            ),
            ("--config-reload-interval", self.config_reload_interval),
            ("--cert-reload-interval", self.cert_reload_interval),
            ("--fairness-idle-timeout", self.fairness_idle_timeout),
        ]
        .into_iter()
        .filter(|(_, d)| *d < Duration::from_millis(1))
        .map(|(flag, d)| format!("{flag}: must be at least 1ms, got {d:?}"))
        .collect();
        if let Err(e) = crate::server::tls::cipher_suites(&self.tls_cipher_suites) {
            bad.push(format!("--tls-cipher-suites: {e}"));
        }
        if self.metrics_client_ca_file.is_some() && self.metrics_cert_dir.is_none() {
            bad.push("--metrics-client-ca-file requires --metrics-cert-dir".into());
        }
        if self.metrics_cert_dir.is_some()
            && self.metrics_client_ca_file.is_none()
            && !self.metrics_endpoint_auth
        {
            bad.push(
                "--metrics-cert-dir enables metrics TLS without authentication; set \
                 --metrics-client-ca-file or --metrics-endpoint-auth"
                    .into(),
            );
        }
        if let Some(dir) = &self.metrics_cert_dir {
            for name in ["tls.crt", "tls.key"] {
                let p = dir.join(name);
                if let Err(e) = std::fs::metadata(&p) {
                    bad.push(format!("--metrics-cert-dir: {}: {e}", p.display()));
                }
            }
        }
        if let Some(p) = &self.metrics_client_ca_file
            && let Err(e) = std::fs::metadata(p)
        {
            bad.push(format!("--metrics-client-ca-file: {}: {e}", p.display()));
        }
        if !self.secure_serving
            && (self.tls_min_version.is_some() || !self.tls_cipher_suites.is_empty())
        {
            bad.push(
                "--tls-min-version and --tls-cipher-suites need TLS: they cannot be used with \
                 --secure-serving=false"
                    .into(),
            );
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }
}

/// Go-style flags (`-pool-name`, `-poolName` from old charts, `--pool_name`) become clap's
/// `--pool-name`. Returns the arguments for clap and the unknown flags, each with a hint.
fn normalise_args(raw: Vec<String>) -> (Vec<String>, Vec<String>) {
    let cmd = Cli::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["help".to_string(), "version".to_string()])
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut unknown = Vec::new();
    let mut iter = raw.into_iter();
    if let Some(bin) = iter.next() {
        out.push(bin);
    }
    let mut rest = iter.peekable();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            // Everything after `--` is positional; clap refuses positionals for us.
            out.push(arg);
            out.extend(rest.by_ref());
            break;
        }
        let Some(body) = arg.strip_prefix('-') else {
            out.push(arg);
            continue;
        };
        if arg == "-" || (body.len() == 1 && !body.starts_with('-')) || body.is_empty() {
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
            let hint = closest(&kebab, &known)
                .map(|k| format!(" (did you mean --{k}?)"))
                .unwrap_or_default();
            unknown.push(format!("error: unknown flag: {arg}{hint}"));
        }
    }
    (out, unknown)
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

/// The known flag nearest to `name` when it is a plausible typo (edit distance ≤ 2, or ≤ 3
/// for long names).
fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    if name.len() > 100 {
        return None;
    }
    let limit = if name.len() > 12 { 3 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
