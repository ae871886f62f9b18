//! `switchyard-sim`: fake model-server pods, load generation and the local demo.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use switchyard_sim::demo::{self, DemoOptions};
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::exposition::Personality;
use switchyard_sim::report;
use switchyard_sim::workload::SharedPrefix;

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
            out,
            seed,
            quiet,
        } => {
            if pods == 0 || pods > 200 {
                bail!("--pods must be in 1..=200");
            }
            let opts = DemoOptions {
                pods,
                duration: Duration::from_secs(duration.max(1)),
                rate,
                workload: SharedPrefix::default(),
                engine: engine(&profile, Some(kv_blocks))?,
                switchyard_bin,
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
