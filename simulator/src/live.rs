//! `run --mode live`: a trace replayed in real time through the live pieces — fake pods on
//! loopback, the real `switchyard` binary with the policy's configuration, the Envoy-like
//! ext_proc client — reported like a discrete-event run.
//!
//! Policies that are configurations run in Switchyard (its own flow control included, when the
//! configuration turns it on); round-robin runs without an EPP. The other baselines exist only
//! in virtual time here; live peer routers are `compare --live`'s business.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::baselines::{Policy, PolicyKind};
use crate::demo::{Switchyard, find_switchyard, spawn_pods};
use crate::des::IdealCache;
use crate::engine::EngineConfig;
use crate::evaluate::{PolicyResult, RunInfo};
use crate::exposition::Personality;
use crate::gateway::{Gateway, Router};
use crate::load::{self, Arrival, LoadSpec, Target};
use crate::report::{PolicyReport, RunFacts};
use crate::trace::Trace;
use crate::workload::WorkItem;

/// The most prompt text a live run materialises up front.
const MAX_PROMPT_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> LiveError {
    LiveError::Setup(e.to_string())
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub pods: usize,
    pub engine: EngineConfig,
    pub personality: Personality,
    pub scrape_interval: Duration,
    pub switchyard_bin: Option<PathBuf>,
    pub progress: bool,
}

/// The trace's requests as the load generator's work items, at their arrival times.
fn timed_items(trace: &Trace) -> Result<Vec<(Duration, WorkItem)>, LiveError> {
    let bytes: u64 = trace
        .requests
        .iter()
        .map(|r| u64::from(r.prompt_tokens) * 4)
        .sum();
    if bytes > MAX_PROMPT_BYTES {
        return Err(LiveError::Unsupported(format!(
            "the trace's prompts take {} MiB; cut it with --horizon or --max-requests for a live run",
            bytes >> 20
        )));
    }
    Ok(trace
        .requests
        .iter()
        .map(|r| {
            let text = r.prompt_text();
            let item = WorkItem {
                tenant: r.tenant.clone(),
                group: r.group,
                prompt: String::from_utf8_lossy(&text).into_owned(),
                max_tokens: r.output_tokens,
            };
            (r.arrival, item)
        })
        .collect())
}

/// Replays `trace` with `policy` on fresh pods.
pub async fn run_live(
    trace: &Trace,
    policy: &Policy,
    opts: &LiveOptions,
) -> Result<PolicyResult, LiveError> {
    let args: Option<Vec<String>> = match &policy.kind {
        PolicyKind::Config { config, file } => {
            let mut a = match file {
                Some(f) => vec!["--config-file".into(), f.display().to_string()],
                None => vec!["--config-text".into(), config.to_yaml()],
            };
            a.push("--refresh-metrics-interval".into());
            a.push(format!("{}ms", opts.scrape_interval.as_millis().max(1)));
            Some(a)
        }
        PolicyKind::RoundRobin => None,
        _ => {
            return Err(LiveError::Unsupported(format!(
                "{} runs only in virtual time here (--mode des); live peer routers are \
                 `compare --live`'s",
                policy.label
            )));
        }
    };
    let bin = match &args {
        Some(_) => Some(find_switchyard(opts.switchyard_bin.as_deref()).map_err(setup)?),
        None => None,
    };
    let items = timed_items(trace)?;
    let pods = spawn_pods(opts.pods, &opts.engine, opts.personality)
        .await
        .map_err(setup)?;
    let addrs: Vec<std::net::SocketAddr> = pods.iter().map(|p| p.addr).collect();
    let mut epp = None;
    let target = match (&bin, &args) {
        (Some(bin), Some(args)) => {
            let extra: Vec<&str> = args.iter().map(String::as_str).collect();
            let sy = Switchyard::start(bin, &addrs, &extra)
                .await
                .map_err(setup)?;
            let gw = Gateway::connect_epp(&sy.grpc.to_string())
                .await
                .map_err(setup)?;
            // Let the first scrapes land so the first picks see real metrics.
            tokio::time::sleep(Duration::from_millis(300)).await;
            epp = Some(sy);
            Target::Epp(gw)
        }
        _ => Target::RoundRobin {
            gateway: Gateway::new(Router::Direct),
            pods: addrs.iter().map(ToString::to_string).collect(),
        },
    };
    let last = trace.requests.last().map_or(Duration::ZERO, |r| r.arrival);
    if opts.progress {
        eprintln!(
            "{}: {} requests over {:.0} s in real time on {} pods",
            policy.label,
            items.len(),
            last.as_secs_f64(),
            opts.pods
        );
    }
    let spec = LoadSpec {
        // Unused by `run_at`: the trace gives the arrivals.
        arrival: Arrival::Closed { concurrency: 0 },
        max_duration: last,
        model: opts.engine.model.clone(),
        stream: true,
        progress: false,
    };
    let started = Instant::now();
    let records = load::run_at(target, items, spec).await;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let stats: Vec<_> = pods.iter().map(|p| p.stats()).collect();
    if let Some(sy) = epp {
        sy.stop().await;
    }
    for p in pods {
        p.stop().await;
    }
    let (hits, queries) = stats.iter().fold((0, 0), |(h, q), s| {
        (
            h + s.prefix_cache_hits_tokens,
            q + s.prefix_cache_queries_tokens,
        )
    });
    let busy: f64 = stats.iter().map(|s| s.busy_time.as_secs_f64()).sum();
    let report = PolicyReport::build(
        &policy.label,
        &records,
        RunFacts {
            prefix_hit_rate: if queries == 0 {
                0.0
            } else {
                hits as f64 / queries as f64
            },
            ideal_prefix_hit_rate: Some(IdealCache::of_trace(
                trace,
                &opts.engine.model,
                opts.engine.block_size,
            )),
            preemptions: Some(stats.iter().map(|s| s.num_preemptions).sum()),
            engine_busy: Some(busy / (elapsed * stats.len().max(1) as f64)),
            horizon_s: trace.duration.map(|d| d.as_secs_f64()),
        },
    );
    let admission = match policy.config().and_then(|c| c.flow_control.as_ref()) {
        Some(_) => "flow-control (in switchyard)",
        None => "pass-through",
    };
    Ok(PolicyResult {
        admission: admission.into(),
        report,
    })
}

/// The run description of a live run.
pub fn run_info(trace: &Trace, opts: &LiveOptions, seed: u64) -> RunInfo {
    RunInfo {
        mode: "live".into(),
        workload: trace.name.clone(),
        requests: trace.requests.len(),
        tenants: trace.tenants().len(),
        duration_s: trace.duration.map(|d| d.as_secs_f64()),
        pods: opts.pods,
        profile: opts.engine.profile.clone(),
        kv_blocks: opts.engine.num_gpu_blocks,
        seed,
        scrape_interval_ms: opts.scrape_interval.as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baselines::BASELINES;

    #[test]
    fn built_in_configs_survive_the_round_trip_to_the_binary() {
        for (name, _) in BASELINES {
            if let Some(cfg) = Policy::parse(name).unwrap().config() {
                let again = switchyard::config::load_str(&cfg.to_yaml())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(again.to_yaml(), cfg.to_yaml(), "{name}");
            }
        }
    }

    #[tokio::test]
    async fn des_only_baselines_are_refused_before_anything_starts() {
        let opts = LiveOptions {
            pods: 1,
            engine: EngineConfig::default(),
            personality: Personality::Vllm,
            scrape_interval: Duration::from_millis(50),
            switchyard_bin: None,
            progress: false,
        };
        let t = Trace {
            name: "t".into(),
            requests: Vec::new(),
            duration: None,
        };
        let e = run_live(&t, &Policy::parse("dynamo-cost").unwrap(), &opts)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--mode des"), "{e}");
    }
}
