//! The local demo: fake vLLM pods, the real Switchyard binary in front of them (behind real Envoy
//! when there is one, else behind the built-in Envoy-like client), a shared-prefix multi-tenant
//! workload, and the same workload on fresh pods with a round-robin baseline; one result table,
//! JSON and an SVG chart of the TTFT distributions.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::child::LogTail;
use crate::engine::EngineConfig;
use crate::exposition::Personality;
use crate::live_compare::{self, Contender, LiveOptions};
use crate::pod::{Pod, PodSpec};
use crate::report::{self, PolicyReport};
use crate::workload::SharedPrefix;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub pods: usize,
    pub duration: Duration,
    pub rate: f64,
    pub workload: SharedPrefix,
    pub engine: EngineConfig,
    pub switchyard_bin: Option<PathBuf>,
    /// Real Envoy in front of Switchyard (and as the round-robin baseline); `None` uses the
    /// built-in Envoy-like client.
    pub envoy: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub seed: u64,
    pub progress: bool,
}

/// Finds the `switchyard` binary: the explicit path, `$SWITCHYARD_BIN`, next to this executable
/// (or one directory up), or on `PATH`.
pub fn find_switchyard(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Ok(p) = std::env::var("SWITCHYARD_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        // Test binaries live one level down, in `target/<profile>/deps/`.
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join("switchyard");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("switchyard");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "cannot find the switchyard binary: build it with `cargo build --release --workspace`, \
         or give --switchyard-bin PATH or SWITCHYARD_BIN"
    )
}

/// Fresh pods on `127.0.0.11`, `.12`, … (free ports).
pub async fn spawn_pods(
    n: usize,
    engine: &EngineConfig,
    personality: Personality,
) -> Result<Vec<Pod>> {
    let mut pods = Vec::with_capacity(n);
    for i in 0..n {
        let ip: IpAddr = format!("127.0.0.{}", 11 + i).parse()?;
        pods.push(
            Pod::spawn(PodSpec {
                ip,
                port: 0,
                personality,
                engine: engine.clone(),
            })
            .await
            .with_context(|| format!("starting pod on {ip}"))?,
        );
    }
    Ok(pods)
}

/// A running Switchyard child process; killed when dropped.
pub struct Switchyard {
    child: Child,
    pub grpc: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
    log: LogTail,
}

impl Switchyard {
    /// Plaintext ext_proc over `endpoints`, as the built-in Envoy-like client speaks it.
    pub async fn start(bin: &Path, endpoints: &[SocketAddr], extra: &[&str]) -> Result<Switchyard> {
        let list = endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec!["--static-endpoints", &list, "--secure-serving=false"];
        args.extend_from_slice(extra);
        Self::launch(bin, &args).await
    }

    /// Switchyard with `args` (endpoints, TLS, config...) on loopback, with every port chosen by
    /// the kernel unless `args` gives `--grpc-port` (e.g. to restart on the port a gateway knows).
    pub async fn launch(bin: &Path, args: &[&str]) -> Result<Switchyard> {
        let mut fixed = vec!["--bind-address", "127.0.0.1"];
        if !args.iter().any(|a| a.starts_with("--grpc-port")) {
            fixed.extend(["--grpc-port", "0"]);
        }
        if !args.iter().any(|a| a.starts_with("--admin-port")) {
            fixed.extend(["--admin-port", "0"]);
        }
        // No gateway has to notice a stop here: no drain window.
        if !args.iter().any(|a| a.starts_with("--drain-timeout")) {
            fixed.extend(["--drain-timeout", "0s"]);
        }
        fixed.extend([
            "--grpc-health-port",
            "0",
            "--metrics-port",
            "0",
            "--shutdown-grace-period",
            "2s",
            "-v",
            "1",
        ]);
        let mut child = Command::new(bin)
            .args(&fixed)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let log = LogTail::default();
        let addrs = tokio::time::timeout(Duration::from_secs(20), async {
            let (mut grpc, mut health, mut metrics) = (None, None, None);
            while let Some(line) = lines.next_line().await? {
                log.push(&line);
                let addr = |rest: &str| rest.parse::<SocketAddr>();
                if let Some(a) = line.strip_prefix("switchyard: ext_proc listening on ") {
                    grpc = Some(addr(a)?);
                } else if let Some(a) = line.strip_prefix("switchyard: health listening on ") {
                    health = Some(addr(a)?);
                } else if let Some(a) = line.strip_prefix("switchyard: metrics listening on ") {
                    metrics = Some(addr(a)?);
                }
                if let (Some(g), Some(h), Some(m)) = (grpc, health, metrics) {
                    return Ok::<_, anyhow::Error>((g, h, m));
                }
                if line.starts_with("error:") {
                    bail!("switchyard failed to start: {line}");
                }
            }
            bail!("switchyard exited before listening")
        })
        .await
        .context("waiting for switchyard to listen")??;
        // Keep draining its log so it never blocks on a full pipe.
        log.drain_lines(lines);
        Ok(Switchyard {
            child,
            grpc: addrs.0,
            health: addrs.1,
            metrics: addrs.2,
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// The Prometheus page of its metrics port.
    pub async fn metrics_text(&self) -> Result<String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("http://{}/metrics", self.metrics);
        Ok(reqwest::get(&url).await?.error_for_status()?.text().await?)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub async fn stop(mut self) {
        crate::child::terminate(&mut self.child).await;
    }
}

/// The pods' prefix-cache token hit rate (hits ÷ queries, from their own counters).
pub fn hit_rate(pods: &[Pod]) -> f64 {
    let (mut hits, mut queries) = (0u64, 0u64);
    for p in pods {
        let s = p.stats();
        hits += s.prefix_cache_hits_tokens;
        queries += s.prefix_cache_queries_tokens;
    }
    if queries == 0 {
        0.0
    } else {
        hits as f64 / queries as f64
    }
}

pub async fn stop_pods(pods: Vec<Pod>) {
    for p in pods {
        p.stop().await;
    }
}

/// The whole demo. Returns the reports (Switchyard first).
pub async fn run(opts: DemoOptions) -> Result<Vec<PolicyReport>> {
    let live = LiveOptions {
        pods: opts.pods,
        duration: opts.duration,
        rate: opts.rate,
        concurrency: None,
        workload: opts.workload.clone(),
        engine: opts.engine.clone(),
        switchyard_bin: find_switchyard(opts.switchyard_bin.as_deref())?,
        envoy: opts.envoy.clone(),
        envoy_template: None,
        seed: opts.seed,
        progress: opts.progress,
    };
    let mut reports = Vec::new();
    for c in [
        Contender::Switchyard {
            label: "switchyard (default)".into(),
            args: Vec::new(),
        },
        Contender::RoundRobin,
    ] {
        reports.push(live_compare::run_contender(&live, &c).await?.report);
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let json = serde_json::to_string_pretty(&reports)?;
    std::fs::write(opts.out_dir.join("demo.json"), json)?;
    std::fs::write(
        opts.out_dir.join("ttft.svg"),
        report::ttft_cdf_svg(&reports),
    )?;
    Ok(reports)
}
