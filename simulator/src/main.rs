//! `switchyard-sim`: fake model-server pods, load generation and the local demo.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use switchyard_sim::baselines::{self, Policy, PolicyKind};
use switchyard_sim::demo::{self, DemoOptions};
use switchyard_sim::des::{DesOptions, UsageReports};
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::envoy::{self, EnvoyError};
use switchyard_sim::evaluate::{self, AdmissionChoice, Evaluation, WorkloadSpec};
use switchyard_sim::exposition::Personality;
use switchyard_sim::live::{self, LiveOptions};
use switchyard_sim::live_compare::{self, Contender};
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

fn duration(s: &str) -> Result<Duration, String> {
    switchyard::decode::parse_go_duration(s)
}

/// The simulated pool.
#[derive(Debug, Args)]
struct PoolArgs {
    #[arg(long, default_value_t = 4)]
    pods: usize,
    /// Engine profile: h100-llama3-8b or a10g-llama-7b.
    #[arg(long, default_value = "h100-llama3-8b")]
    profile: String,
    /// KV cache size per pod in blocks of 16 tokens (default: the profile's).
    #[arg(long)]
    kv_blocks: Option<u32>,
    /// Metrics personality: vllm, sglang, trtllm-serve, triton-tensorrt-llm.
    #[arg(long, default_value = "vllm")]
    engine: String,
    /// How often the EPP scrapes each pod (--refresh-metrics-interval).
    #[arg(long, default_value = "50ms", value_parser = duration)]
    scrape_interval: Duration,
    /// When responses report usage to the EPP: per-token (vLLM's continuous_usage_stats) or
    /// final (include_usage alone). Flow control's VTC charges output tokens from it.
    #[arg(long, default_value = "per-token")]
    usage_reports: String,
}

/// The workload.
#[derive(Debug, Args)]
struct WorkloadArgs {
    /// synthetic | vtc:<suite> | mooncake:<path> | azure:<path> | vtc-results:<path>
    #[arg(long, default_value = "synthetic")]
    workload: String,
    /// synthetic: Poisson arrivals per second.
    #[arg(long, default_value_t = 22.0)]
    rate: f64,
    /// synthetic: seconds of arrivals.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// synthetic: prompt groups sharing a system prompt.
    #[arg(long, default_value_t = 32)]
    groups: usize,
    /// synthetic: distinct prompts per group.
    #[arg(long, default_value_t = 20)]
    prompts_per_group: usize,
    /// synthetic: system prompt tokens.
    #[arg(long, default_value_t = 2000)]
    system_tokens: usize,
    /// synthetic: question tokens.
    #[arg(long, default_value_t = 150)]
    question_tokens: usize,
    /// synthetic: output tokens.
    #[arg(long, default_value_t = 64)]
    output_tokens: u32,
    /// Assign this many tenants (traces without tenants; overrides the synthetic ones).
    #[arg(long)]
    tenants: Option<u32>,
    /// How tenants are assigned: round-robin, hash-block[:INDEX].
    #[arg(long, default_value = "round-robin")]
    tenant_rule: String,
    /// Keep only the first N requests.
    #[arg(long)]
    max_requests: Option<usize>,
    /// Keep only requests arriving in the first S seconds.
    #[arg(long)]
    horizon: Option<f64>,
    /// Replay arrivals this many times faster.
    #[arg(long, default_value_t = 1.0)]
    speed_up: f64,
}

/// What a run writes.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Write report.json, ttft.svg and service-<policy>.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON report instead of the tables.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// `compare --live` only.
#[derive(Debug, Args)]
struct LiveCompareArgs {
    /// --live: closed loop with N clients instead of Poisson arrivals (finds the pods' capacity).
    #[arg(long)]
    concurrency: Option<usize>,
    /// --live: the switchyard binary.
    #[arg(long = "switchyard-bin")]
    live_switchyard_bin: Option<PathBuf>,
    /// --live: the gateway in front of Switchyard.
    #[arg(long, value_enum, default_value_t = GatewayChoice::Auto)]
    gateway: GatewayChoice,
    /// --live: a virtualenv holding the peer routers (`smg`, `vllm-router`); repeatable. They
    /// are also found through SGLANG_ROUTER_BIN, VLLM_ROUTER_BIN and PATH.
    #[arg(long)]
    peers_venv: Vec<PathBuf>,
    /// --live: Switchyard's configuration for the VTC row (default: the built-in config/vtc.yaml).
    #[arg(long)]
    vtc_config: Option<PathBuf>,
    /// --live: a variant of manifests/envoy/envoy.yaml to run in front of Switchyard (it must keep
    /// the manifest's three socket_address lines and `failure_mode_allow: false`).
    #[arg(long)]
    envoy_config: Option<PathBuf>,
    /// --live: only these rows (comma list of switchyard, vtc, sglang, vllm, round-robin).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one policy on a workload: discrete-event (virtual time) or live (fake pods, real
    /// Switchyard).
    Run {
        /// des or live.
        #[arg(long, default_value = "des")]
        mode: String,
        /// A baseline name or an EndpointPickerConfig file (see `switchyard-sim baselines`).
        #[arg(long, default_value = "gie-default")]
        policy: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// EPP admission: auto (FCFS flow control when the config enables flowControl),
        /// pass-through, fcfs.
        #[arg(long, default_value = "auto")]
        admission: String,
        /// live: the switchyard binary.
        #[arg(long)]
        switchyard_bin: Option<PathBuf>,
        #[command(flatten)]
        pool: PoolArgs,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run several policies on one workload side by side: in virtual time, or with --live through
    /// real processes (Envoy + Switchyard, peer routers, round-robin) on fresh fake pods.
    Compare {
        /// Baseline names or EndpointPickerConfig files. With --live: the Switchyard
        /// configurations to measure (default gie-default), each a row.
        #[arg(required_unless_present = "live")]
        policies: Vec<String>,
        /// Live: real processes on loopback, next to sglang-router, vllm-router and round-robin.
        #[arg(long)]
        live: bool,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// EPP admission: auto, pass-through, fcfs.
        #[arg(long, default_value = "auto")]
        admission: String,
        #[command(flatten)]
        pool: PoolArgs,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        live_args: LiveCompareArgs,
    },
    /// List the baseline policies.
    Baselines,
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
    /// Benchmarks. `bench extproc`: Switchyard's request path against the null ext_proc server.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// The null ext_proc server (the floor `bench extproc` measures against): reads each body,
    /// answers one fixed endpoint, echoes the chunks.
    NullExtproc {
        /// The `ip:port` every request goes to.
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value = "127.0.0.1:9002")]
        bind: std::net::SocketAddr,
        /// TLS (self-signed) and grpc.health.v1 on the same port, as behind real Envoy.
        #[arg(long)]
        secure: bool,
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
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// The null ext_proc server and Switchyard side by side, interleaved, on cheap endpoints.
    Extproc(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Request body sizes in bytes (k = 1,000).
    #[arg(long, value_delimiter = ',', default_value = "1k,10k,220k,400k", value_parser = size)]
    sizes: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "8")]
    endpoints: Vec<usize>,
    /// Response events per request: 1 is one JSON body, more an SSE stream.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    chunks: Vec<u32>,
    /// Measured seconds per server per round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The whole matrix of issue 19: 1k,10k,220k,400k × concurrency 1,16,64,256 × 8 and 100
    /// endpoints × 1, 100 and 1,000 response chunks (hours; the flags above narrow it).
    #[arg(long)]
    full: bool,
    #[arg(long)]
    switchyard_bin: Option<PathBuf>,
    /// Another Switchyard build measured in the same interleaving: LABEL=PATH (repeatable).
    #[arg(long)]
    also: Vec<String>,
    /// Another null server command in the same interleaving: LABEL=PATH (repeatable), e.g. a
    /// wrapper that runs `switchyard-sim` under another allocator.
    #[arg(long)]
    also_null: Vec<String>,
    /// Extra flags for Switchyard (repeatable), e.g. --switchyard-arg=--config-file=x.yaml.
    #[arg(long, allow_hyphen_values = true)]
    switchyard_arg: Vec<String>,
    /// Also through real Envoy: auto (when one is found), envoy (required) or builtin (never).
    #[arg(long, value_enum, default_value_t = GatewayChoice::Auto)]
    gateway: GatewayChoice,
    /// Pin the servers to the last CPU and the load generator to the others.
    #[arg(long)]
    pin: bool,
    /// Also write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn size(s: &str) -> Result<usize, String> {
    let (num, mul) = match s.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1000),
        None => (s, 1),
    };
    num.trim()
        .parse::<usize>()
        .map(|n| n * mul)
        .map_err(|e| format!("{s:?}: {e}"))
}

/// `LABEL=PATH` values of `flag`.
fn labelled_paths(flag: &str, values: &[String]) -> Result<Vec<(String, PathBuf)>> {
    values
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(l, p)| (l.to_string(), PathBuf::from(p)))
                .with_context(|| format!("{flag} {s:?}: expected LABEL=PATH"))
        })
        .collect()
}

async fn bench_extproc(a: BenchArgs) -> Result<()> {
    let mut opts = switchyard_sim::bench::BenchOptions {
        sizes: a.sizes,
        concurrency: a.concurrency,
        endpoints: a.endpoints,
        chunks: a.chunks,
        seconds: a.seconds.max(0.1),
        rounds: a.rounds.max(1),
        switchyard_bin: demo::find_switchyard(a.switchyard_bin.as_deref())?,
        also: labelled_paths("--also", &a.also)?,
        also_null: labelled_paths("--also-null", &a.also_null)?,
        switchyard_args: a.switchyard_arg,
        null_bin: std::env::current_exe().context("this executable")?,
        envoy: if a.gateway == GatewayChoice::Builtin {
            None
        } else {
            choose_gateway(a.gateway)?
        },
        pin: a.pin,
    };
    if a.full {
        opts.sizes = vec![1000, 10_000, 220_000, 400_000];
        opts.concurrency = vec![1, 16, 64, 256];
        opts.endpoints = vec![8, 100];
        opts.chunks = vec![1, 100, 1000];
    }
    let rows = switchyard_sim::bench::run(&opts).await?;
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
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

fn des_options(pool: &PoolArgs, seed: u64) -> Result<DesOptions> {
    if pool.pods == 0 || pool.pods > 10_000 {
        bail!("--pods must be in 1..=10000");
    }
    let personality = Personality::by_name(&pool.engine).with_context(|| {
        format!(
            "unknown engine {:?} (one of {})",
            pool.engine,
            Personality::NAMES.join(", ")
        )
    })?;
    let usage = match pool.usage_reports.as_str() {
        "per-token" => UsageReports::PerToken,
        "final" => UsageReports::Final,
        other => bail!("unknown --usage-reports {other:?} (per-token, final)"),
    };
    Ok(DesOptions {
        pods: pool.pods,
        engine: engine(&pool.profile, pool.kv_blocks)?,
        personality,
        scrape_interval: pool.scrape_interval,
        seed,
        usage,
        ..DesOptions::default()
    })
}

fn workload_spec(w: &WorkloadArgs) -> WorkloadSpec {
    WorkloadSpec {
        workload: w.workload.clone(),
        rate: w.rate,
        duration_s: w.duration,
        shared_prefix: SharedPrefix {
            groups: w.groups.max(1),
            prompts_per_group: w.prompts_per_group.max(1),
            system_prompt_tokens: w.system_tokens,
            question_tokens: w.question_tokens,
            output_tokens: w.output_tokens.max(1),
            ..SharedPrefix::default()
        },
        tenants: w.tenants,
        tenant_rule: w.tenant_rule.clone(),
        max_requests: w.max_requests,
        horizon_s: w.horizon,
        speed_up: w.speed_up,
    }
}

fn admission(s: &str) -> Result<AdmissionChoice> {
    AdmissionChoice::parse(s)
        .with_context(|| format!("unknown admission {s:?} (auto, pass-through, fcfs)"))
}

fn report_out(eval: &Evaluation, output: &OutputArgs) -> Result<()> {
    if output.json {
        println!("{}", eval.to_json());
    } else {
        let r = &eval.run;
        println!(
            "{} on {} {} pods ({} KV blocks each), {} requests from {} tenants, seed {}\n",
            r.workload, r.pods, r.profile, r.kv_blocks, r.requests, r.tenants, r.seed
        );
        println!("{}", report::table(&eval.reports()));
    }
    if let Some(dir) = &output.out {
        let files = evaluate::write_outputs(dir, eval)?;
        if !output.quiet {
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
    }
    Ok(())
}

fn compare(
    specs: &[String],
    seed: u64,
    admission_choice: &str,
    pool: &PoolArgs,
    workload: &WorkloadArgs,
    output: &OutputArgs,
) -> Result<()> {
    let mut policies = specs
        .iter()
        .map(|s| Policy::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    evaluate::unique_labels(&mut policies);
    let opts = des_options(pool, seed)?;
    let started = std::time::Instant::now();
    let trace = workload_spec(workload).trace(seed)?;
    if !output.quiet {
        eprintln!(
            "{}: {} requests loaded in {:.2}s",
            trace.name,
            trace.requests.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let quiet = output.quiet;
    let eval = evaluate::compare_des(
        &trace,
        &policies,
        &opts,
        admission(admission_choice)?,
        |r, o, wall| {
            if !quiet {
                eprintln!(
                    "{}: {} requests, {:.0} s virtual, {:.2} s wall ({} steps, {} scrapes, {} pages parsed, {} events, at most {} held in the EPP)",
                    r.report.policy,
                    o.records.len(),
                    o.end.as_secs_f64(),
                    wall.as_secs_f64(),
                    o.counts.steps,
                    o.counts.scrapes,
                    o.counts.pages,
                    o.counts.events,
                    o.counts.max_queued
                );
            }
        },
    );
    report_out(&eval, output)
}

/// `compare --live`: the synthetic shared-prefix workload through each router on fresh pods.
async fn compare_live(
    specs: &[String],
    seed: u64,
    pool: &PoolArgs,
    workload: &WorkloadArgs,
    output: &OutputArgs,
    la: &LiveCompareArgs,
) -> Result<()> {
    if workload.workload != "synthetic" {
        bail!("--live runs the synthetic shared-prefix workload only");
    }
    if pool.engine != "vllm" {
        bail!("--live runs vllm pods (the peer routers speak to vLLM's API)");
    }
    if pool.pods == 0 || pool.pods > 200 {
        bail!("--pods must be in 1..=200");
    }
    const ROWS: [&str; 5] = ["switchyard", "vtc", "sglang", "vllm", "round-robin"];
    if let Some(bad) = la.only.iter().find(|o| !ROWS.contains(&o.as_str())) {
        bail!("--only {bad:?}: expected some of {}", ROWS.join(", "));
    }
    let wanted = |row: &str| la.only.is_empty() || la.only.iter().any(|o| o == row);
    let scrape = format!("{}ms", pool.scrape_interval.as_millis().max(1));
    let switchyard_row = |label: String, config: Option<String>| {
        let mut args = vec!["--refresh-metrics-interval".to_string(), scrape.clone()];
        if let Some(text) = config {
            args.extend(["--config-text".to_string(), text]);
        }
        Contender::Switchyard { label, args }
    };

    let mut contenders = Vec::new();
    let mut configs = Vec::new();
    for spec in specs {
        let p = Policy::parse(spec)?;
        match p.kind {
            PolicyKind::Config { config, .. } => configs.push((p.label, config.to_yaml())),
            // These rows are measured anyway (as the real peer and Envoy's round-robin).
            PolicyKind::RoundRobin | PolicyKind::SglangCacheAware => {}
            _ => bail!(
                "{spec:?} is a discrete-event baseline; --live measures Switchyard configurations"
            ),
        }
    }
    if wanted("switchyard") {
        if configs.is_empty() {
            contenders.push(switchyard_row("switchyard (default)".into(), None));
        }
        for (label, yaml) in configs {
            let label = match label.as_str() {
                "gie-default" | "switchyard" | "default" => "switchyard (default)".to_string(),
                other => format!("switchyard ({other})"),
            };
            contenders.push(switchyard_row(label, Some(yaml)));
        }
    }
    if wanted("vtc") {
        let text = match &la.vtc_config {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            }
            None => VTC_CONFIG.to_string(),
        };
        contenders.push(switchyard_row("switchyard (vtc)".into(), Some(text)));
    }
    for kind in PeerKind::ALL {
        let row = match kind {
            PeerKind::Sglang => "sglang",
            PeerKind::Vllm => "vllm",
        };
        if !wanted(row) {
            continue;
        }
        match peers::find_peer(kind, &la.peers_venv) {
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

    let envoy = choose_gateway(la.gateway)?;
    let mut shared_prefix = workload_spec(workload).shared_prefix;
    if let Some(n) = workload.tenants {
        shared_prefix.tenants = (0..n.max(1)).map(|i| format!("tenant-{i}")).collect();
    }
    let opts = live_compare::LiveOptions {
        pods: pool.pods,
        duration: Duration::from_secs_f64(workload.duration.max(1.0)),
        rate: workload.rate,
        concurrency: la.concurrency.filter(|n| *n > 0),
        workload: shared_prefix,
        engine: engine(&pool.profile, pool.kv_blocks)?,
        switchyard_bin: demo::find_switchyard(la.live_switchyard_bin.as_deref())?,
        envoy,
        envoy_template: la
            .envoy_config
            .as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .transpose()?,
        seed,
        progress: !output.quiet,
    };
    let w = &opts.workload;
    println!(
        "{} fake vLLM pods ({}, {} KV blocks each), {} tenants, {} prompt groups sharing {}-token \
         system prompts, {}-token questions, {} output tokens,\n\
         Poisson {} req/s for {}s per router, fresh pods for each.\n",
        pool.pods,
        pool.profile,
        opts.engine.num_gpu_blocks,
        w.tenants.len(),
        w.groups,
        w.system_prompt_tokens,
        w.question_tokens,
        w.output_tokens,
        opts.rate,
        opts.duration.as_secs()
    );
    let out = output
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("switchyard-compare"));
    let rows = live_compare::run(&opts, &contenders, &out).await?;
    if output.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{}", live_compare::table(&rows));
    }
    println!(
        "results: {} and {}",
        out.join("compare.json").display(),
        out.join("ttft.svg").display()
    );
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Baselines => {
            for (name, what) in baselines::BASELINES {
                println!("{name:<20} {what}");
            }
            println!("{:<20} any EndpointPickerConfig YAML file", "<path>");
            Ok(())
        }
        Cmd::Compare {
            policies,
            live: true,
            seed,
            pool,
            workload,
            output,
            live_args,
            ..
        } => compare_live(&policies, seed, &pool, &workload, &output, &live_args).await,
        Cmd::Compare {
            policies,
            seed,
            admission,
            pool,
            workload,
            output,
            ..
        } => compare(&policies, seed, &admission, &pool, &workload, &output),
        Cmd::Run {
            mode,
            policy,
            seed,
            admission,
            switchyard_bin,
            pool,
            workload,
            output,
        } => match mode.as_str() {
            "des" => compare(&[policy], seed, &admission, &pool, &workload, &output),
            "live" => {
                if admission != "auto" {
                    bail!(
                        "--admission applies to --mode des; live, the policy's flowControl section decides"
                    );
                }
                let policy = Policy::parse(&policy)?;
                let des = des_options(&pool, seed)?;
                let opts = LiveOptions {
                    pods: des.pods,
                    engine: des.engine,
                    personality: des.personality,
                    scrape_interval: des.scrape_interval,
                    switchyard_bin,
                    progress: !output.quiet,
                };
                if opts.pods > 200 {
                    bail!("--pods must be in 1..=200 in live mode");
                }
                let trace = workload_spec(&workload).trace(seed)?;
                let result = live::run_live(&trace, &policy, &opts).await?;
                let eval = Evaluation {
                    run: live::run_info(&trace, &opts, seed),
                    policies: vec![result],
                };
                report_out(&eval, &output)
            }
            other => bail!("unknown --mode {other:?} (des, live)"),
        },
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
            // vLLM is Switchyard's default engine; others need the engine (and path) named.
            let config = match p {
                Personality::Vllm => String::new(),
                _ => format!(
                    " --config-text '{}'",
                    engine_config_text(p.name(), p.metrics_path())
                ),
            };
            println!(
                "  switchyard --static-endpoints {} --secure-serving=false{config}",
                list.join(",")
            );
            tokio::signal::ctrl_c().await?;
            for p in pods {
                p.stop().await;
            }
            Ok(())
        }
        Cmd::Bench(BenchCmd::Extproc(a)) => bench_extproc(a).await,
        Cmd::NullExtproc {
            endpoint,
            bind,
            secure,
        } => Ok(
            switchyard_sim::null_extproc::serve(switchyard_sim::null_extproc::NullOptions {
                bind,
                endpoint,
                secure,
            })
            .await?,
        ),
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

/// GIE's default profile with the data layer set to scrape `engine` pods at `path`.
fn engine_config_text(engine: &str, path: &str) -> String {
    format!(
        "apiVersion: inference.networking.x-k8s.io/v1alpha1\n\
         kind: EndpointPickerConfig\n\
         plugins:\n\
         - {{type: queue-scorer}}\n\
         - {{type: kv-cache-utilization-scorer}}\n\
         - {{type: prefix-cache-scorer}}\n\
         - {{type: metrics-data-source, parameters: {{path: {path}}}}}\n\
         - {{type: core-metrics-extractor, parameters: {{defaultEngine: {engine}}}}}\n\
         schedulingProfiles:\n\
         - name: default\n  \
           plugins: [{{pluginRef: queue-scorer, weight: 2}}, {{pluginRef: kv-cache-utilization-scorer, weight: 2}}, {{pluginRef: prefix-cache-scorer, weight: 3}}]\n\
         dataLayer:\n  \
           sources: [{{pluginRef: metrics-data-source, extractors: [{{pluginRef: core-metrics-extractor}}]}}]\n"
    )
}
