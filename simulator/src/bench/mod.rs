//! `switchyard-sim bench extproc`: the request path against its floor.
//!
//! One run starts the **null ext_proc server** ([`crate::null_extproc`]: reads the body, answers a
//! fixed endpoint, echoes the chunks) and Switchyard (static endpoints, the default
//! configuration), both as child processes on loopback, in front of cheap model servers
//! ([`upstream`]), and drives each in turn with the same Envoy-like client
//! ([`crate::gateway`]) — null, switchyard, null, switchyard, … — so both see the same machine.
//! Per cell (endpoints × body size × response chunks × concurrency) it reports requests/s,
//! latency percentiles (hdrhistogram), **CPU-seconds per 1,000 requests** of the server process
//! (utime + stime from `/proc/<pid>/stat`, net of what it burns idle, i.e. scraping), peak RSS
//! (`VmHWM`), and Switchyard's ratios to the null server. CPU per request is the headline: it is
//! stable on a noisy machine where throughput is not.

pub mod measure;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::child::{LogTail, terminate};
use crate::demo::Switchyard;
use crate::envoy::{Envoy, GatewayConfig, render_gateway};
use crate::gateway::{Gateway, Router};
use crate::peers::cpu_seconds;
use measure::{Requests, RunResult, closed_loop, histogram, peak_rss_bytes};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Request body sizes in bytes.
    pub sizes: Vec<usize>,
    pub concurrency: Vec<usize>,
    pub endpoints: Vec<usize>,
    /// Response events per request (1 = one JSON body, more = an SSE stream).
    pub chunks: Vec<u32>,
    /// Measured seconds per server per round.
    pub seconds: f64,
    pub rounds: usize,
    pub switchyard_bin: PathBuf,
    /// Further Switchyard binaries measured in the same interleaving (e.g. a build from before a
    /// change), with their labels.
    pub also: Vec<(String, PathBuf)>,
    /// Extra Switchyard flags (e.g. `--config-file`).
    pub switchyard_args: Vec<String>,
    /// This executable, which serves the null server (`switchyard-sim null-extproc`).
    pub null_bin: PathBuf,
    /// Further null servers in the same interleaving (e.g. the same binary under another
    /// allocator, through a wrapper script), with their labels.
    pub also_null: Vec<(String, PathBuf)>,
    /// Real Envoy: also measure every cell through it.
    pub envoy: Option<PathBuf>,
    /// Pin the servers to the last CPU and this process to the others.
    pub pin: bool,
}

/// A server under test.
struct Server {
    label: String,
    proc: Proc,
    pid: u32,
    gateway: Gateway,
    /// The address clients send to (Envoy's listener), when behind real Envoy.
    proxy: Option<String>,
    envoy: Option<Envoy>,
    /// CPU seconds per second it burns with no requests (Switchyard: scraping).
    idle_cpu: f64,
}

enum Proc {
    Null(Child),
    Switchyard(Box<Switchyard>),
}

impl Server {
    async fn stop(self) {
        if let Some(e) = self.envoy {
            e.stop().await;
        }
        match self.proc {
            Proc::Null(mut c) => terminate(&mut c).await,
            Proc::Switchyard(s) => s.stop().await,
        }
    }
}

/// Starts `null_bin null-extproc` and reads the address it listens on.
async fn start_null(bin: &Path, endpoint: SocketAddr, secure: bool) -> Result<(Child, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "null-extproc",
        "--endpoint",
        &endpoint.to_string(),
        "--bind",
        "127.0.0.1:0",
    ]);
    if secure {
        cmd.arg("--secure");
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} null-extproc", bin.display()))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let log = LogTail::default();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            log.push(&line);
            if let Some(a) = line.strip_prefix(crate::null_extproc::LISTENING) {
                return Ok::<_, anyhow::Error>(a.trim().parse::<SocketAddr>()?);
            }
        }
        bail!(
            "the null ext_proc server exited before listening: {}",
            log.text()
        )
    })
    .await
    .context("waiting for the null ext_proc server")??;
    log.drain_lines(lines);
    Ok((child, addr))
}

/// Switchyard binaries to run: the main one first, then `also`.
fn switchyards(opts: &BenchOptions) -> Vec<(String, PathBuf)> {
    let mut v = vec![("switchyard".to_string(), opts.switchyard_bin.clone())];
    v.extend(opts.also.iter().cloned());
    v
}

async fn start_servers(
    opts: &BenchOptions,
    endpoints: &[SocketAddr],
    via_envoy: bool,
) -> Result<Vec<Server>> {
    let mut servers = Vec::new();
    let list = endpoints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let envoy_front = |epp: SocketAddr| async move {
        let bin = opts.envoy.as_ref().expect("envoy");
        let cfg = render_gateway(&GatewayConfig {
            epp,
            failure_mode_allow: false,
            filters_before_ext_proc: None,
        })?;
        // One worker: Envoy's CPU is not what is measured, and it shares the machine.
        let envoy = Envoy::start(bin, &cfg, 1).await?;
        Ok::<_, anyhow::Error>(envoy)
    };
    let mut nulls = vec![("null".to_string(), opts.null_bin.clone())];
    nulls.extend(opts.also_null.iter().cloned());
    for (label, bin) in nulls {
        let (child, addr) = start_null(&bin, endpoints[0], via_envoy).await?;
        let pid = child.id().context("null server pid")?;
        let mut null = Server {
            label,
            proc: Proc::Null(child),
            pid,
            gateway: Gateway::new(Router::Proxy),
            proxy: None,
            envoy: None,
            idle_cpu: 0.0,
        };
        if via_envoy {
            let e = envoy_front(addr).await?;
            null.proxy = Some(e.listener.to_string());
            null.envoy = Some(e);
        } else {
            null.gateway = Gateway::connect_epp(&addr.to_string()).await?;
        }
        servers.push(null);
    }
    for (label, bin) in switchyards(opts) {
        let mut args: Vec<&str> = vec!["--static-endpoints", &list];
        if via_envoy {
            args.push("--health-checking");
        } else {
            args.push("--secure-serving=false");
        }
        args.extend(opts.switchyard_args.iter().map(String::as_str));
        let sy = Switchyard::launch(&bin, &args)
            .await
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = sy.pid().context("switchyard pid")?;
        let grpc = sy.grpc;
        let mut s = Server {
            label,
            proc: Proc::Switchyard(Box::new(sy)),
            pid,
            gateway: Gateway::new(Router::Proxy),
            proxy: None,
            envoy: None,
            idle_cpu: 0.0,
        };
        if via_envoy {
            let e = envoy_front(grpc).await?;
            s.proxy = Some(e.listener.to_string());
            s.envoy = Some(e);
        } else {
            s.gateway = Gateway::connect_epp(&grpc.to_string()).await?;
        }
        servers.push(s);
    }
    if opts.pin {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            bail!("--pin needs at least 2 CPUs");
        }
        let last = (cpus - 1).to_string();
        let rest = if cpus == 2 {
            "0".to_string()
        } else {
            format!("0-{}", cpus - 2)
        };
        for s in &servers {
            measure::pin(s.pid, &last).map_err(anyhow::Error::msg)?;
        }
        measure::pin(std::process::id(), &rest).map_err(anyhow::Error::msg)?;
    }
    // Let Switchyard scrape once, then measure what each server burns with no requests.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window = Duration::from_secs(2);
    let before: Vec<Option<f64>> = servers.iter().map(|s| cpu_seconds(s.pid)).collect();
    tokio::time::sleep(window).await;
    for (s, b) in servers.iter_mut().zip(before) {
        if let (Some(b), Some(a)) = (b, cpu_seconds(s.pid)) {
            s.idle_cpu = (a - b).max(0.0) / window.as_secs_f64();
        }
    }
    Ok(servers)
}

/// Deterministic prose of about `len` bytes with what JSON must escape (newlines, quotes, tabs,
/// backslashes) and some non-ASCII text; the first half depends only on `group`, so prompts of
/// a group share a prefix as system prompts do.
pub fn prompt_text(len: usize, group: usize, variant: usize) -> String {
    const WORDS: [&str; 24] = [
        "the",
        "cache",
        "prefix",
        "router",
        "token",
        "block",
        "model",
        "endpoint",
        "request",
        "latency",
        "\"quoted\"",
        "queue",
        "tenant",
        "fair",
        "scheduler",
        "prompt",
        "système",
        "naïve",
        "—",
        "日本語",
        "C:\\path",
        "kv",
        "engine",
        "gateway",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ (group as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut switched = false;
    let mut n = 0usize;
    while out.len() < len {
        if !switched && out.len() >= len / 2 {
            state ^= (variant as u64 + 1).wrapping_mul(0x94D0_49BB_1331_11EB);
            switched = true;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        n += 1;
        out.push(match n % 13 {
            0 => '\n',
            7 if state.is_multiple_of(5) => '\t',
            _ => ' ',
        });
    }
    out
}

/// `/v1/completions` bodies of about `size` bytes: 8 groups × 4 variants.
fn bodies(size: usize, stream: bool) -> Vec<Bytes> {
    // JSON escapes make the body longer than the text: size the text from a sample.
    let fixed = crate::load::completion_body(MODEL, "", 16, stream).len();
    let sample_len = size.saturating_sub(fixed).max(64);
    let sample = crate::load::completion_body(MODEL, &prompt_text(sample_len, 0, 0), 16, stream);
    let growth = (sample.len() - fixed) as f64 / sample_len as f64;
    let text_len = ((size.saturating_sub(fixed)) as f64 / growth) as usize;
    let text_len = text_len.max(16);
    let mut out = Vec::new();
    for group in 0..8 {
        for variant in 0..4 {
            let text = prompt_text(text_len, group, variant);
            out.push(crate::load::completion_body(MODEL, &text, 16, stream));
        }
    }
    out
}

/// One server's totals in one cell.
struct Totals {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    wall: f64,
    cpu: f64,
    e2e: Histogram<u64>,
    pick: Histogram<u64>,
    response_messages: u64,
}

impl Totals {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            wall: 0.0,
            cpu: 0.0,
            e2e: histogram(),
            pick: histogram(),
            response_messages: 0,
        }
    }

    fn add(&mut self, r: RunResult, cpu: f64) {
        self.ok += r.ok;
        self.errors += r.errors;
        self.first_error = self.first_error.take().or(r.first_error);
        self.wall += r.wall.as_secs_f64();
        self.cpu += cpu;
        self.e2e.add(&r.e2e).expect("same bounds");
        self.pick.add(&r.pick).expect("same bounds");
        self.response_messages += r.response_messages;
    }
}

/// One row of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub gateway: &'static str,
    pub endpoints: usize,
    pub body_bytes: usize,
    pub chunks: u32,
    pub concurrency: usize,
    pub server: String,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    /// Latency percentiles in ms: the pick (built-in gateway) or end to end (Envoy).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// CPU-seconds per 1,000 requests, net of idle, and as measured.
    pub cpu_s_per_1k: f64,
    pub cpu_s_per_1k_raw: f64,
    pub peak_rss_mb: f64,
    /// Against the null server in the same cell.
    pub cpu_ratio: f64,
    pub rps_ratio: f64,
    pub response_messages_per_request: f64,
}

async fn measure_cell(
    servers: &[Server],
    requests: &Requests,
    concurrency: usize,
    opts: &BenchOptions,
) -> Vec<Totals> {
    let run = Duration::from_secs_f64(opts.seconds);
    // Warm every server (connections, caches, the prefix index) first.
    for s in servers {
        let _ = closed_loop(&s.gateway, s.proxy.clone(), requests, concurrency, run / 4).await;
    }
    let mut totals: Vec<Totals> = servers.iter().map(|_| Totals::new()).collect();
    for _ in 0..opts.rounds.max(1) {
        for (s, t) in servers.iter().zip(totals.iter_mut()) {
            let before = cpu_seconds(s.pid).unwrap_or(0.0);
            let r = closed_loop(&s.gateway, s.proxy.clone(), requests, concurrency, run).await;
            let cpu = cpu_seconds(s.pid).unwrap_or(0.0) - before;
            t.add(r, cpu);
        }
    }
    totals
}

fn rows_of(
    gateway: &'static str,
    cell: (usize, usize, u32, usize),
    servers: &[Server],
    totals: &[Totals],
) -> Vec<Row> {
    let (endpoints, body_bytes, chunks, concurrency) = cell;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per_1k = |t: &Totals, cpu: f64| {
        if t.ok == 0 {
            f64::NAN
        } else {
            cpu / t.ok as f64 * 1000.0
        }
    };
    let mut rows: Vec<Row> = servers
        .iter()
        .zip(totals)
        .map(|(s, t)| {
            let hist = if t.pick.is_empty() { &t.e2e } else { &t.pick };
            let net = (t.cpu - s.idle_cpu * t.wall).max(0.0);
            Row {
                gateway,
                endpoints,
                body_bytes,
                chunks,
                concurrency,
                server: s.label.clone(),
                requests: t.ok,
                errors: t.errors,
                rps: t.ok as f64 / t.wall.max(1e-9),
                p50_ms: ms(hist, 0.5),
                p99_ms: ms(hist, 0.99),
                p999_ms: ms(hist, 0.999),
                cpu_s_per_1k: per_1k(t, net),
                cpu_s_per_1k_raw: per_1k(t, t.cpu),
                peak_rss_mb: peak_rss_bytes(s.pid).unwrap_or(0) as f64 / (1 << 20) as f64,
                cpu_ratio: f64::NAN,
                rps_ratio: f64::NAN,
                response_messages_per_request: t.response_messages as f64 / t.ok.max(1) as f64,
            }
        })
        .collect();
    let (null_cpu, null_rps) = (rows[0].cpu_s_per_1k, rows[0].rps);
    for (i, r) in rows.iter_mut().enumerate() {
        // The first null server is the reference, 1 by definition.
        (r.cpu_ratio, r.rps_ratio) = if i == 0 {
            (1.0, 1.0)
        } else {
            (r.cpu_s_per_1k / null_cpu, r.rps / null_rps)
        };
    }
    rows
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1000 {
        format!("{}k", (bytes as f64 / 1000.0).round())
    } else {
        bytes.to_string()
    }
}

/// The header of the Markdown table [`table_row`] fills.
pub const TABLE_HEADER: &str = "| gateway | endpoints | body | chunks | conc | server | req/s | p50 ms | p99 ms | p99.9 ms | CPU-s/1k req | ×null CPU | ×null req/s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

pub fn table_row(r: &Row) -> String {
    let ratio = |x: f64| {
        if r.server == "null" {
            "1".to_string()
        } else {
            format!("{x:.2}")
        }
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.0} |",
        r.gateway,
        r.endpoints,
        size_label(r.body_bytes),
        r.chunks,
        r.concurrency,
        r.server,
        r.rps,
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.cpu_s_per_1k,
        ratio(r.cpu_ratio),
        ratio(r.rps_ratio),
        r.peak_rss_mb,
    )
}

/// Runs every cell, printing each row as it is measured; returns all rows.
pub async fn run(opts: &BenchOptions) -> Result<Vec<Row>> {
    if opts.sizes.is_empty()
        || opts.concurrency.is_empty()
        || opts.endpoints.is_empty()
        || opts.chunks.is_empty()
    {
        bail!("every sweep needs at least one value");
    }
    if let Some(c) = opts
        .chunks
        .iter()
        .find(|c| **c == 0 || **c > upstream::MAX_CHUNKS)
    {
        bail!("--chunks {c}: must be in 1..={}", upstream::MAX_CHUNKS);
    }
    if let Some(e) = opts.endpoints.iter().find(|e| **e == 0 || **e > 1000) {
        bail!("--endpoints {e}: must be in 1..=1000");
    }
    println!(
        "{} CPUs, load average {:.2} at start; {} s per server per round, {} rounds, interleaved{}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        measure::load_average().unwrap_or(f64::NAN),
        opts.seconds,
        opts.rounds,
        if opts.pin {
            ", servers pinned to the last CPU"
        } else {
            ""
        },
    );
    println!("{TABLE_HEADER}");
    let mut gateways: Vec<(&'static str, bool)> = vec![("builtin", false)];
    if opts.envoy.is_some() {
        gateways.push(("envoy", true));
    }
    let mut rows = Vec::new();
    for &(gw, via_envoy) in &gateways {
        for &n in &opts.endpoints {
            let ups = upstream::Upstreams::start(n, MODEL).await?;
            let servers = start_servers(opts, &ups.addrs, via_envoy).await?;
            for s in &servers {
                if s.idle_cpu > 0.005 {
                    eprintln!(
                        "{} ({} endpoints) idles at {:.1} CPU-ms/s",
                        s.label,
                        n,
                        s.idle_cpu * 1000.0
                    );
                }
            }
            for &size in &opts.sizes {
                for &chunks in &opts.chunks {
                    let requests = Requests {
                        path: "/v1/completions".into(),
                        headers: vec![
                            ("content-type".into(), "application/json".into()),
                            ("x-gateway-inference-fairness-id".into(), "bench".into()),
                            (upstream::CHUNKS_HEADER.into(), chunks.to_string()),
                        ],
                        bodies: Arc::new(bodies(size, chunks > 1)),
                    };
                    let body_bytes = requests.bodies.iter().map(|b| b.len()).sum::<usize>()
                        / requests.bodies.len();
                    for &c in &opts.concurrency {
                        let totals = measure_cell(&servers, &requests, c, opts).await;
                        for r in rows_of(gw, (n, body_bytes, chunks, c), &servers, &totals) {
                            println!("{}", table_row(&r));
                            rows.push(r);
                        }
                        for (s, t) in servers.iter().zip(&totals) {
                            if let Some(e) = &t.first_error {
                                eprintln!("{}: {} errors, the first: {e}", s.label, t.errors);
                            }
                        }
                    }
                }
            }
            for s in servers {
                s.stop().await;
            }
            drop(ups);
        }
    }
    println!(
        "load average {:.2} at the end",
        measure::load_average().unwrap_or(f64::NAN)
    );
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_share_their_first_half_within_a_group() {
        let a = prompt_text(2000, 3, 0);
        let b = prompt_text(2000, 3, 1);
        let c = prompt_text(2000, 4, 0);
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        assert!((900..1500).contains(&common), "{common}");
        assert_ne!(a[..100], c[..100]);
        assert!(a.len() >= 2000 && a.len() < 2040);
        // Text that JSON must escape.
        let body = crate::load::completion_body(MODEL, &a, 16, false);
        let raw = String::from_utf8(body.to_vec()).unwrap();
        assert!(raw.contains("\\n") && raw.contains("\\\"") && raw.contains("\\\\"));
    }

    #[test]
    fn bodies_are_near_the_asked_size() {
        for size in [1000, 10_000] {
            let b = bodies(size, false);
            assert_eq!(b.len(), 32);
            for x in &b {
                assert!(
                    x.len() > size * 9 / 10 && x.len() < size * 11 / 10,
                    "{}",
                    x.len()
                );
            }
        }
    }
}
