//! `switchyard-sim compare --live`: the same open-loop workload, on fresh fake pods each time,
//! through every router that is installed: real Envoy in front of Switchyard (default config,
//! and VTC when given), the SGLang model gateway and the vLLM router in `cache_aware` mode, and a
//! round-robin baseline (Envoy's own `ROUND_ROBIN`). One table, JSON and a TTFT chart.
//!
//! Each router is charged the CPU time its processes spent while the load ran (from
//! `/proc/<pid>/stat`): Switchyard and Envoy separately, a peer router as one process (it is the
//! proxy and the router at once).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::demo::{Switchyard, hit_rate, spawn_pods, stop_pods};
use crate::engine::EngineConfig;
use crate::envoy::{Envoy, GatewayConfig, render_gateway, render_gateway_from, render_round_robin};
use crate::exposition::Personality;
use crate::gateway::{Gateway, Router};
use crate::load::{self, Arrival, LoadSpec, Target};
use crate::peers::{PeerKind, PeerRouter, cpu_seconds};
use crate::report::{self, PolicyReport};
use crate::workload::SharedPrefix;

/// One router setup to measure.
#[derive(Debug, Clone)]
pub enum Contender {
    /// Switchyard with extra flags (e.g. `--config-text`), behind Envoy when there is one.
    Switchyard { label: String, args: Vec<String> },
    /// A peer router binary with a routing policy.
    Peer {
        kind: PeerKind,
        bin: PathBuf,
        policy: String,
    },
    /// Round-robin over the pods: Envoy's `ROUND_ROBIN` cluster, or the built-in client.
    RoundRobin,
}

impl Contender {
    pub fn label(&self) -> String {
        match self {
            Contender::Switchyard { label, .. } => label.clone(),
            Contender::Peer { kind, policy, .. } => format!("{} {policy}", kind.name()),
            Contender::RoundRobin => "round-robin".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub pods: usize,
    pub duration: Duration,
    pub rate: f64,
    /// Closed loop with this many clients instead of Poisson arrivals at `rate` (to find the
    /// pods' capacity).
    pub concurrency: Option<usize>,
    pub workload: SharedPrefix,
    pub engine: EngineConfig,
    pub switchyard_bin: PathBuf,
    /// Real Envoy; `None` runs Switchyard behind the built-in Envoy-like client.
    pub envoy: Option<PathBuf>,
    /// A variant of `manifests/envoy/envoy.yaml` to run instead of it (same ports and anchors).
    pub envoy_template: Option<String>,
    pub seed: u64,
    pub progress: bool,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct LiveRow {
    #[serde(flatten)]
    pub report: PolicyReport,
    /// What ran, e.g. `switchyard + envoy`.
    pub setup: String,
    /// CPU seconds of the router itself (Switchyard, or the peer) while the load ran.
    pub router_cpu_s: Option<f64>,
    /// CPU seconds of Envoy, when it is a separate proxy process.
    pub proxy_cpu_s: Option<f64>,
    /// Requests each pod received, in pod order (how evenly the router spread the load).
    pub pod_requests: Vec<u64>,
}

impl LiveRow {
    /// The busiest pod's share of all requests, in percent.
    pub fn busiest_pod_pct(&self) -> f64 {
        let total: u64 = self.pod_requests.iter().sum();
        let max = self.pod_requests.iter().copied().max().unwrap_or(0);
        max as f64 * 100.0 / total.max(1) as f64
    }

    pub fn total_cpu_s(&self) -> Option<f64> {
        match (self.router_cpu_s, self.proxy_cpu_s) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        }
    }
}

/// CPU seconds of `pid` between two readings.
struct CpuMeter {
    pid: Option<u32>,
    start: Option<f64>,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            start: pid.and_then(cpu_seconds),
        }
    }

    fn elapsed(&self) -> Option<f64> {
        Some(cpu_seconds(self.pid?)? - self.start?)
    }
}

/// What runs in front of the pods during one measurement; everything stops when dropped.
enum Front {
    Switchyard {
        sy: Box<Switchyard>,
        envoy: Option<Box<Envoy>>,
    },
    Peer(PeerRouter),
    EnvoyRoundRobin(Envoy),
    BuiltInRoundRobin,
}

fn envoy_threads() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
}

async fn start_front(
    opts: &LiveOptions,
    c: &Contender,
    pods: &[SocketAddr],
) -> Result<(Front, Target, String)> {
    let list = pods
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    Ok(match (c, &opts.envoy) {
        (Contender::Switchyard { args, .. }, Some(envoy_bin)) => {
            let mut all: Vec<&str> = vec!["--static-endpoints", &list, "--health-checking"];
            all.extend(args.iter().map(String::as_str));
            let sy = Switchyard::launch(&opts.switchyard_bin, &all).await?;
            let gw = GatewayConfig {
                epp: sy.grpc,
                failure_mode_allow: false,
                filters_before_ext_proc: None,
            };
            let cfg = match &opts.envoy_template {
                Some(t) => render_gateway_from(t, &gw)?,
                None => render_gateway(&gw)?,
            };
            let envoy = Envoy::start(envoy_bin, &cfg, envoy_threads()).await?;
            let target = Target::Proxy {
                gateway: Gateway::new(Router::Proxy),
                addr: envoy.listener.to_string(),
            };
            (
                Front::Switchyard {
                    sy: Box::new(sy),
                    envoy: Some(Box::new(envoy)),
                },
                target,
                "switchyard + envoy".into(),
            )
        }
        (Contender::Switchyard { args, .. }, None) => {
            let extra: Vec<&str> = args.iter().map(String::as_str).collect();
            let sy = Switchyard::start(&opts.switchyard_bin, pods, &extra).await?;
            let gw = Gateway::connect_epp(&sy.grpc.to_string()).await?;
            (
                Front::Switchyard {
                    sy: Box::new(sy),
                    envoy: None,
                },
                Target::Epp(gw),
                "switchyard + built-in client".into(),
            )
        }
        (Contender::Peer { kind, bin, policy }, _) => {
            let peer = PeerRouter::start(*kind, bin, policy, pods)
                .await
                .with_context(|| format!("starting {}", kind.name()))?;
            let target = Target::Proxy {
                gateway: Gateway::new(Router::Proxy),
                addr: peer.addr.to_string(),
            };
            (Front::Peer(peer), target, kind.name().into())
        }
        (Contender::RoundRobin, Some(envoy_bin)) => {
            let envoy = Envoy::start(envoy_bin, &render_round_robin(pods), envoy_threads()).await?;
            let target = Target::Proxy {
                gateway: Gateway::new(Router::Proxy),
                addr: envoy.listener.to_string(),
            };
            (
                Front::EnvoyRoundRobin(envoy),
                target,
                "envoy ROUND_ROBIN".into(),
            )
        }
        (Contender::RoundRobin, None) => (
            Front::BuiltInRoundRobin,
            Target::RoundRobin {
                gateway: Gateway::new(Router::Direct),
                pods: pods.iter().map(ToString::to_string).collect(),
            },
            "built-in client".into(),
        ),
    })
}

impl Front {
    /// (router pid, proxy pid)
    fn pids(&self) -> (Option<u32>, Option<u32>) {
        match self {
            Front::Switchyard { sy, envoy } => (sy.pid(), envoy.as_ref().and_then(|e| e.pid())),
            Front::Peer(p) => (p.pid(), None),
            Front::EnvoyRoundRobin(e) => (None, e.pid()),
            Front::BuiltInRoundRobin => (None, None),
        }
    }

    async fn stop(self) {
        match self {
            Front::Switchyard { sy, envoy } => {
                if let Some(e) = envoy {
                    e.stop().await;
                }
                sy.stop().await;
            }
            Front::Peer(p) => p.stop().await,
            Front::EnvoyRoundRobin(e) => e.stop().await,
            Front::BuiltInRoundRobin => {}
        }
    }
}

/// Measures one contender on fresh pods.
pub async fn run_contender(opts: &LiveOptions, c: &Contender) -> Result<LiveRow> {
    let pods = spawn_pods(opts.pods, &opts.engine, Personality::Vllm).await?;
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    let (front, target, setup) = start_front(opts, c, &addrs).await?;
    // Every router gets the same settling time (Switchyard's first scrapes land in it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let label = c.label();
    if opts.progress {
        let load = match opts.concurrency {
            Some(n) => format!("{n} closed-loop clients"),
            None => format!("{:.1} req/s", opts.rate),
        };
        eprintln!(
            "{label} ({setup}): {} pods, {load} for {}s",
            opts.pods,
            opts.duration.as_secs()
        );
    }
    let (router_pid, proxy_pid) = front.pids();
    let (router_cpu, proxy_cpu) = (CpuMeter::start(router_pid), CpuMeter::start(proxy_pid));
    let spec = LoadSpec {
        arrival: match opts.concurrency {
            Some(concurrency) => Arrival::Closed { concurrency },
            None => Arrival::Poisson {
                rate: opts.rate,
                seed: opts.seed,
            },
        },
        max_duration: opts.duration,
        model: opts.engine.model.clone(),
        stream: true,
        progress: opts.progress,
    };
    let records = load::run(target, opts.workload.items(), spec).await;
    let (router_cpu_s, proxy_cpu_s) = (router_cpu.elapsed(), proxy_cpu.elapsed());
    let hit = hit_rate(&pods);
    let pod_requests = pods.iter().map(|p| p.requests()).collect();
    front.stop().await;
    stop_pods(pods).await;
    Ok(LiveRow {
        report: PolicyReport::from_records(&label, &records, hit),
        setup,
        router_cpu_s,
        proxy_cpu_s,
        pod_requests,
    })
}

/// Runs every contender in turn; writes `compare.json` and `ttft.svg` into `out_dir`.
pub async fn run(
    opts: &LiveOptions,
    contenders: &[Contender],
    out_dir: &Path,
) -> Result<Vec<LiveRow>> {
    let mut rows = Vec::new();
    for c in contenders {
        rows.push(run_contender(opts, c).await.with_context(|| c.label())?);
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    std::fs::write(
        out_dir.join("compare.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    let reports: Vec<PolicyReport> = rows.iter().map(|r| r.report.clone()).collect();
    std::fs::write(out_dir.join("ttft.svg"), report::ttft_cdf_svg(&reports))?;
    Ok(rows)
}

fn cpu(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |s| format!("{s:.2}"))
}

/// The side-by-side table: throughput, latency, the pods' prefix-cache hit rate, each tenant's
/// share of the requests served, and CPU seconds.
pub fn table(rows: &[LiveRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:>5} {:>4} {:>6} {:>9} {:>9} {:>8} {:>7} {:>15} {:>7} {:>8} {:>8} {:>8}",
        "router",
        "reqs",
        "errs",
        "req/s",
        "TTFT p50",
        "TTFT p99",
        "e2e p99",
        "prefix",
        "tenant share %",
        "top pod",
        "rtr CPU",
        "envoy",
        "CPU s"
    );
    for row in rows {
        let r = &row.report;
        let served: usize = r.per_tenant.values().sum();
        let shares = r
            .per_tenant
            .values()
            .map(|n| format!("{:.0}", *n as f64 * 100.0 / served.max(1) as f64))
            .collect::<Vec<_>>()
            .join("/");
        let _ = writeln!(
            s,
            "{:<28} {:>5} {:>4} {:>6.2} {:>7.1}ms {:>7.1}ms {:>6.0}ms {:>6.1}% {:>15} {:>6.1}% {:>8} {:>8} {:>8}",
            r.policy,
            r.requests,
            r.errors,
            r.requests_per_s,
            r.ttft_p50_ms,
            r.ttft_p99_ms,
            r.e2e_p99_ms,
            r.prefix_hit_rate * 100.0,
            shares,
            row.busiest_pod_pct(),
            cpu(row.router_cpu_s),
            cpu(row.proxy_cpu_s),
            cpu(row.total_cpu_s()),
        );
    }
    let _ = writeln!(
        s,
        "\nrtr CPU: the router process (Switchyard, or the peer, which is also the proxy); \
         envoy: Envoy in front of Switchyard, or alone for round-robin; CPU s: both.\n\
         prefix: the pods' own prefix-cache token hit rate; top pod: the busiest pod's share of requests."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Record;

    fn rec(tenant: &str) -> Record {
        Record {
            tenant: tenant.into(),
            group: 0,
            sent_at_ms: 0.0,
            status: 200,
            ttft_ms: Some(10.0),
            e2e_ms: 100.0,
            prompt_tokens: 10,
            output_tokens: 5,
            cached_tokens: 0,
            endpoint: None,
            error: None,
        }
    }

    #[test]
    fn table_shows_shares_and_cpu() {
        let recs = vec![rec("a"), rec("a"), rec("a"), rec("b")];
        let row = LiveRow {
            report: PolicyReport::from_records("switchyard (default)", &recs, 0.5),
            setup: "switchyard + envoy".into(),
            router_cpu_s: Some(1.25),
            proxy_cpu_s: Some(2.0),
            pod_requests: vec![3, 1],
        };
        let peer = LiveRow {
            router_cpu_s: Some(0.5),
            proxy_cpu_s: None,
            ..row.clone()
        };
        assert_eq!(row.total_cpu_s(), Some(3.25));
        assert_eq!(row.busiest_pod_pct(), 75.0);
        let t = table(&[row, peer]);
        assert!(t.contains("75/25"), "{t}");
        assert!(
            t.contains("1.25") && t.contains("3.25") && t.contains("–"),
            "{t}"
        );
        let json = serde_json::to_value(table_rows_for_json()).unwrap();
        assert_eq!(json[0]["policy"], "p");
        assert_eq!(json[0]["router_cpu_s"], serde_json::Value::Null);
    }

    fn table_rows_for_json() -> Vec<LiveRow> {
        vec![LiveRow {
            report: PolicyReport::from_records("p", &[rec("a")], 0.0),
            setup: "s".into(),
            router_cpu_s: None,
            proxy_cpu_s: None,
            pod_requests: Vec::new(),
        }]
    }
}
