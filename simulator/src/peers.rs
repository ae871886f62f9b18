//! Peer routers run side by side with Switchyard on the same fake pods: the SGLang model gateway
//! (`smg`, PyPI `sglang-router`) and the vLLM router (`vllm-router`, PyPI `vllm-router`). Both
//! are standalone HTTP proxies that route by themselves, so clients talk to them directly.
//!
//! Also here: the CPU time of a process from `/proc/<pid>/stat`, which is how the comparison
//! charges each router for the work it does.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::child::LogTail;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// SGLang model gateway, `smg launch`.
    Sglang,
    /// vLLM router, `vllm-router`.
    Vllm,
}

impl PeerKind {
    pub const ALL: [PeerKind; 2] = [PeerKind::Sglang, PeerKind::Vllm];

    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Sglang => "sglang-router",
            PeerKind::Vllm => "vllm-router",
        }
    }

    /// The executable the PyPI package installs.
    fn executable(self) -> &'static str {
        match self {
            PeerKind::Sglang => "smg",
            PeerKind::Vllm => "vllm-router",
        }
    }

    /// The environment variable that names the executable explicitly.
    pub fn env_var(self) -> &'static str {
        match self {
            PeerKind::Sglang => "SGLANG_ROUTER_BIN",
            PeerKind::Vllm => "VLLM_ROUTER_BIN",
        }
    }

    /// The pip requirement the comparison was measured with.
    pub fn requirement(self) -> &'static str {
        match self {
            PeerKind::Sglang => "sglang-router==0.3.2",
            PeerKind::Vllm => "vllm-router==0.1.17",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited during startup ({status}); its log:\n{log}")]
    Exited {
        name: &'static str,
        status: String,
        log: String,
    },
    #[error("{name} was not ready with {workers} workers within {limit:?}; its log:\n{log}")]
    NotReady {
        name: &'static str,
        workers: usize,
        limit: Duration,
        log: String,
    },
}

/// Finds a peer: `$SGLANG_ROUTER_BIN` / `$VLLM_ROUTER_BIN`, then `<venv>/bin/<exe>` for each
/// given virtualenv, then `PATH`.
pub fn find_peer(kind: PeerKind, venvs: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(kind.env_var()).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = venvs.iter().map(|v| v.join("bin")).collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(kind.executable()))
        .find(|p| p.is_file())
}

/// A port that was free a moment ago (the peers cannot be told to use port 0 and report it).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running peer router; killed when dropped.
pub struct PeerRouter {
    pub kind: PeerKind,
    child: Child,
    pub addr: SocketAddr,
    log: LogTail,
}

impl PeerRouter {
    /// Starts `bin` with `policy` over `workers` on loopback, logging warnings only (per-request
    /// logging would be charged to its CPU), and waits until it routes to every worker.
    pub async fn start(
        kind: PeerKind,
        bin: &Path,
        policy: &str,
        workers: &[SocketAddr],
    ) -> Result<PeerRouter, PeerError> {
        let io = |what: String| move |source| PeerError::Io { what, source };
        let port = free_port().map_err(io("picking a port".into()))?;
        let prom = free_port().map_err(io("picking a port".into()))?;
        let urls: Vec<String> = workers.iter().map(|w| format!("http://{w}")).collect();
        let mut cmd = Command::new(bin);
        if kind == PeerKind::Sglang {
            cmd.arg("launch");
        }
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--worker-urls")
            .args(&urls)
            .args(["--policy", policy])
            .args(["--prometheus-host", "127.0.0.1"])
            .args(["--prometheus-port", &prom.to_string()])
            .args([
                "--log-level",
                match kind {
                    PeerKind::Sglang => "warn",
                    PeerKind::Vllm => "warning",
                },
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        let log = LogTail::default();
        if let Some(out) = child.stdout.take() {
            log.drain(out);
        }
        if let Some(err) = child.stderr.take() {
            log.drain(err);
        }
        let mut peer = PeerRouter {
            kind,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        let limit = Duration::from_secs(60);
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = peer.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(PeerError::Exited {
                    name: kind.name(),
                    status: status.to_string(),
                    log: peer.log(),
                });
            }
            if peer.ready(&http, workers.len()).await {
                return Ok(peer);
            }
            if Instant::now() > deadline {
                return Err(PeerError::NotReady {
                    name: kind.name(),
                    workers: workers.len(),
                    limit,
                    log: peer.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// vllm-router starts serving only once its workers are healthy; smg serves at once and
    /// registers workers in the background, so its `/workers` list is checked too.
    async fn ready(&self, http: &reqwest::Client, workers: usize) -> bool {
        let get = |path: &str| http.get(format!("http://{}{path}", self.addr)).send();
        let Ok(r) = get("/health").await else {
            return false;
        };
        if !r.status().is_success() {
            return false;
        }
        if self.kind == PeerKind::Vllm {
            return true;
        }
        let Ok(r) = get("/workers").await else {
            return false;
        };
        let Ok(v) = r.json::<serde_json::Value>().await else {
            return false;
        };
        v["workers"].as_array().is_some_and(|ws| {
            ws.len() == workers && ws.iter().all(|w| w["is_healthy"].as_bool() == Some(true))
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.text()
    }

    pub async fn stop(mut self) {
        crate::child::terminate(&mut self.child).await;
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of a process (all its threads) from `/proc/<pid>/stat` fields 14
/// and 15; `None` where there is no `/proc` or the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks())
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_14_and_15_even_with_odd_names() {
        let line = "4242 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn our_own_cpu_time_is_readable() {
        let me = std::process::id();
        let t = cpu_seconds(me).expect("/proc/self/stat");
        assert!(t >= 0.0);
    }
}
