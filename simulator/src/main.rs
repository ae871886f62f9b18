//! `switchyard-sim`: fake model-server pods, load generation and the local demo.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use switchyard_sim::demo::{self, DemoOptions};
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::envoy::{self, EnvoyError};
use switchyard_sim::exposition::Personality;
use switchyard_sim::live_compare::{self, Contender, LiveOptions};
use switchyard_sim::peers::{self, PeerKind};
use switchyard_sim::report;
use switchyard_sim::workload::SharedPrefix;

/// Switchyard's VTC example configuration, used for the comparison's fair-sharing row.
const VTC_CONFIG: &str = include_str!("../../config/vtc.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GatewayChoice {
    /// Real Envoy when one is found, else the built-in client.
    Auto,
    /// Real Envoy; an error when none is found.
    Envoy,
    /// The built-in Envoy-like ext_proc client.
    Builtin,
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Fake vLLM pods, an Envoy-like gateway and load for Switchyard"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run fake model-server pods on 127.0.0.11, .12, … until Ctrl-C.
    Pods {
        #[arg(long, default_value_t = 4)]
        count: usize,
        /// Metrics personality: vllm, sglang, trtllm-serve, triton-tensorrt-llm.
        #[arg(long, default_value = "vllm")]
        engine: String,
        /// Engine profile: h100-llama3-8b or a10g-llama-7b.
        #[arg(long, default_value = "h100-llama3-8b")]
        profile: String,
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Override the KV cache size in blocks of 16 tokens.
        #[arg(long)]
        kv_blocks: Option<u32>,
    },
    /// Fake pods + Switchyard + a shared-prefix multi-tenant load, then a round-robin baseline.
    Demo {
        /// Load duration per policy, in seconds.
        #[arg(long, default_value_t = 50)]
        duration: u64,
        /// Arrival rate, requests per second (Poisson).
        #[arg(long, default_value_t = 22.0)]
        rate: f64,
        #[arg(long, default_value_t = 4)]
        pods: usize,
        #[arg(long, default_value = "h100-llama3-8b")]
        profile: String,
        /// KV cache size per pod in blocks of 16 tokens (the demo uses a small cache so that
        /// where a prefix is cached matters).
        #[arg(long, default_value_t = 4000)]
        kv_blocks: u32,
        #[arg(long)]
        switchyard_bin: Option<PathBuf>,
        /// The gateway in front of Switchyard: real Envoy (ENVOY_BIN, PATH or the `envoy`
        /// Python package) or the built-in Envoy-like client.
        #[arg(long, value_enum, default_value_t = GatewayChoice::Auto)]
        gateway: GatewayChoice,
        /// Where demo.json and ttft.svg are written.
        #[arg(long, default_value = "switchyard-demo")]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
    },
    /// Compare routers side by side on the same workload and fresh pods each time.
    Compare {
        /// Live: real processes on loopback (Envoy + Switchyard, peer routers, round-robin).
        #[arg(long)]
        live: bool,
        /// Load duration per router, in seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Arrival rate, requests per second (Poisson).
        #[arg(long, default_value_t = 22.0)]
        rate: f64,
        /// Closed loop with N clients instead of Poisson arrivals (measures capacity).
        #[arg(long)]
        concurrency: Option<usize>,
        #[arg(long, default_value_t = 4)]
        pods: usize,
        #[arg(long, default_value = "h100-llama3-8b")]
        profile: String,
        /// KV cache size per pod in blocks of 16 tokens.
        #[arg(long, default_value_t = 4000)]
        kv_blocks: u32,
        #[arg(long)]
        switchyard_bin: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = GatewayChoice::Auto)]
        gateway: GatewayChoice,
        /// A virtualenv holding the peer routers (`smg`, `vllm-router`); repeatable. They are
        /// also found through SGLANG_ROUTER_BIN, VLLM_ROUTER_BIN and PATH.
        #[arg(long)]
        peers_venv: Vec<PathBuf>,
        /// Switchyard's configuration for the VTC row (default: the built-in config/vtc.yaml).
        #[arg(long)]
        vtc_config: Option<PathBuf>,
        /// Another Switchyard configuration to measure, as an extra row; repeatable.
        #[arg(long)]
        switchyard_config: Vec<PathBuf>,
        /// A variant of manifests/envoy/envoy.yaml to run in front of Switchyard (it must keep
        /// the manifest's three socket_address lines and `failure_mode_allow: false`).
        #[arg(long)]
        envoy_config: Option<PathBuf>,
        /// Only these rows (comma list of switchyard, vtc, sglang, vllm, round-robin).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Where compare.json and ttft.svg are written.
        #[arg(long, default_value = "switchyard-compare")]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        quiet: bool,
    },
}

/// Resolves the gateway choice to an Envoy binary (or none) and says which is used.
fn choose_gateway(choice: GatewayChoice) -> Result<Option<PathBuf>> {
    match choice {
        GatewayChoice::Builtin => {
            println!("Gateway: the built-in Envoy-like ext_proc client (--gateway builtin).");
            Ok(None)
        }
        GatewayChoice::Auto | GatewayChoice::Envoy => match envoy::find_envoy() {
            Ok(b) => {
                println!(
                    "Gateway: real Envoy {} ({}, found via {}) with manifests/envoy/envoy.yaml.",
                    b.version,
                    b.path.display(),
                    b.found_via
                );
                Ok(Some(b.path))
            }
            Err(EnvoyError::NotFound) if choice == GatewayChoice::Auto => {
                println!(
                    "Gateway: the built-in Envoy-like ext_proc client: no Envoy found.\n  \
                     For the real gateway: {}",
                    envoy::INSTALL_HINT
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
    }
}

fn engine(profile: &str, kv_blocks: Option<u32>) -> Result<EngineConfig> {
    let mut e = EngineConfig::by_name(profile)
        .with_context(|| format!("unknown profile {profile:?} (h100-llama3-8b, a10g-llama-7b)"))?;
    if let Some(b) = kv_blocks {
        if b == 0 {
            bail!("--kv-blocks must be > 0");
        }
        e.num_gpu_blocks = b;
    }
    Ok(e)
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Pods {
            count,
            engine: personality,
            profile,
            port,
            kv_blocks,
        } => {
            let p = Personality::by_name(&personality).with_context(|| {
                format!(
                    "unknown engine {personality:?} (one of {})",
                    Personality::NAMES.join(", ")
                )
            })?;
            let e = engine(&profile, kv_blocks)?;
            let mut pods = Vec::new();
            for i in 0..count {
                let ip = format!("127.0.0.{}", 11 + i).parse()?;
                pods.push(
                    switchyard_sim::pod::Pod::spawn(switchyard_sim::pod::PodSpec {
                        ip,
                        port,
                        personality: p,
                        engine: e.clone(),
                    })
                    .await
                    .with_context(|| format!("starting pod on {ip}:{port}"))?,
                );
            }
            let list: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
            println!(
                "{count} {} pods ({profile}) serving model {:?}",
                p.name(),
                e.model
            );
            println!("  endpoints: {}", list.join(","));
            println!("  metrics:   http://<endpoint>{}", p.metrics_path());
            println!(
                "  switchyard --static-endpoints {} --secure-serving=false",
                list.join(",")
            );
            tokio::signal::ctrl_c().await?;
            for p in pods {
                p.stop().await;
            }
            Ok(())
        }
        Cmd::Demo {
            duration,
            rate,
            pods,
            profile,
            kv_blocks,
            switchyard_bin,
            gateway,
            out,
            seed,
            quiet,
        } => {
            if pods == 0 || pods > 200 {
                bail!("--pods must be in 1..=200");
            }
            let envoy = choose_gateway(gateway)?;
            let opts = DemoOptions {
                pods,
                duration: Duration::from_secs(duration.max(1)),
                rate,
                workload: SharedPrefix::default(),
                engine: engine(&profile, Some(kv_blocks))?,
                switchyard_bin,
                envoy,
                out_dir: out.clone(),
                seed,
                progress: !quiet,
            };
            let w = &opts.workload;
            println!(
                "Switchyard demo: {pods} fake vLLM pods ({profile}, {kv_blocks} KV blocks each), {} tenants,\n\
                 {} prompt groups sharing {}-token system prompts, {}-token questions, {} output tokens,\n\
                 Poisson {rate} req/s for {duration}s per policy.\n",
                w.tenants.len(),
                w.groups,
                w.system_prompt_tokens,
                w.question_tokens,
                w.output_tokens
            );
            let reports = demo::run(opts).await?;
            println!("{}", report::table(&reports));
            println!(
                "results: {} and {}",
                out.join("demo.json").display(),
                out.join("ttft.svg").display()
            );
            Ok(())
        }
        Cmd::Compare {
            live,
            duration,
            rate,
            concurrency,
            pods,
            profile,
            kv_blocks,
            switchyard_bin,
            gateway,
            peers_venv,
            vtc_config,
            switchyard_config,
            envoy_config,
            only,
            out,
            seed,
            quiet,
        } => {
            if !live {
                bail!("the discrete-event comparison is not in this build; use --live");
            }
            if pods == 0 || pods > 200 {
                bail!("--pods must be in 1..=200");
            }
            const ROWS: [&str; 5] = ["switchyard", "vtc", "sglang", "vllm", "round-robin"];
            if let Some(bad) = only.iter().find(|o| !ROWS.contains(&o.as_str())) {
                bail!("--only {bad:?}: expected some of {}", ROWS.join(", "));
            }
            let wanted = |row: &str| only.is_empty() || only.iter().any(|o| o == row);
            let envoy = choose_gateway(gateway)?;
            let mut contenders = Vec::new();
            if wanted("switchyard") {
                contenders.push(Contender::Switchyard {
                    label: "switchyard (default)".into(),
                    args: Vec::new(),
                });
            }
            for path in &switchyard_config {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let name = path.file_stem().map_or_else(
                    || path.display().to_string(),
                    |s| s.to_string_lossy().into_owned(),
                );
                contenders.push(Contender::Switchyard {
                    label: format!("switchyard ({name})"),
                    args: vec!["--config-text".into(), text],
                });
            }
            if wanted("vtc") {
                let text = match &vtc_config {
                    Some(p) => std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                    None => VTC_CONFIG.to_string(),
                };
                contenders.push(Contender::Switchyard {
                    label: "switchyard (vtc)".into(),
                    args: vec!["--config-text".into(), text],
                });
            }
            for kind in PeerKind::ALL {
                let row = match kind {
                    PeerKind::Sglang => "sglang",
                    PeerKind::Vllm => "vllm",
                };
                if !wanted(row) {
                    continue;
                }
                match peers::find_peer(kind, &peers_venv) {
                    Some(bin) => contenders.push(Contender::Peer {
                        kind,
                        bin,
                        policy: "cache_aware".into(),
                    }),
                    None => println!(
                        "{}: not installed, left out (pip install {}; or {} / --peers-venv)",
                        kind.name(),
                        kind.requirement(),
                        kind.env_var()
                    ),
                }
            }
            if wanted("round-robin") {
                contenders.push(Contender::RoundRobin);
            }
            let opts = LiveOptions {
                pods,
                duration: Duration::from_secs(duration.max(1)),
                rate,
                concurrency: concurrency.filter(|n| *n > 0),
                workload: SharedPrefix::default(),
                engine: engine(&profile, Some(kv_blocks))?,
                switchyard_bin: demo::find_switchyard(switchyard_bin.as_deref())?,
                envoy,
                envoy_template: envoy_config
                    .as_ref()
                    .map(|p| {
                        std::fs::read_to_string(p)
                            .with_context(|| format!("reading {}", p.display()))
                    })
                    .transpose()?,
                seed,
                progress: !quiet,
            };
            let w = &opts.workload;
            println!(
                "{pods} fake vLLM pods ({profile}, {kv_blocks} KV blocks each), {} tenants, {} prompt \
                 groups sharing {}-token system prompts, {}-token questions, {} output tokens,\n\
                 Poisson {rate} req/s for {duration}s per router, fresh pods for each.\n",
                w.tenants.len(),
                w.groups,
                w.system_prompt_tokens,
                w.question_tokens,
                w.output_tokens
            );
            let rows = live_compare::run(&opts, &contenders, &out).await?;
            println!("{}", live_compare::table(&rows));
            println!(
                "results: {} and {}",
                out.join("compare.json").display(),
                out.join("ttft.svg").display()
            );
            Ok(())
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
