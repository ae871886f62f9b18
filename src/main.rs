//! The `switchyard` binary: flags and wiring only.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use switchyard::config::{self, EndpointPickerConfig};

/// Switchyard: an LLM-aware inference endpoint picker for Envoy ext_proc gateways.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// EndpointPickerConfig YAML file. Without it (and without --config-text) the built-in default
    /// is used: queue-scorer ×2, kv-cache-utilization-scorer ×2, prefix-cache-scorer ×3.
    #[arg(long, value_name = "FILE", conflicts_with = "config_text")]
    config_file: Option<std::path::PathBuf>,

    /// EndpointPickerConfig YAML given inline.
    #[arg(long, value_name = "YAML")]
    config_text: Option<String>,

    /// Print the effective configuration, every default spelled out, and exit.
    #[arg(long)]
    print_config: bool,
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

fn run(cli: Cli) -> Result<()> {
    let cfg = load_config(&cli)?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    if cli.print_config {
        print!("{}", cfg.to_yaml());
        return Ok(());
    }
    let _scheduler = cfg.build_scheduler();
    bail!(
        "configuration is valid; the ext_proc server is not part of this build yet \
         (use --print-config to inspect the effective configuration)"
    )
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
