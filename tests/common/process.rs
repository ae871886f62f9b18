//! The real `switchyard` binary as a child process, and the small servers and clients the
//! binary-level tests drive it with.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;

use super::*;

pub struct Proc {
    pub child: Child,
    pub grpc: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
    /// The admin API (`--admin-port 0` unless the test passes `--admin-port`).
    pub admin: Option<SocketAddr>,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_with_env(args, &[], &[])
    }

    /// Like [`Proc::start`], with `set` added to the environment and `remove` taken out of it.
    pub fn start_with_env(args: &[&str], set: &[(&str, &str)], remove: &[&str]) -> Proc {
        let admin_given = args.iter().any(|a| a.starts_with("--admin-port"));
        let admin_off = args.windows(2).any(|w| w == ["--admin-port", "off"])
            || args.contains(&"--admin-port=off");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        for k in remove {
            cmd.env_remove(k);
        }
        cmd.envs(set.iter().copied());
        let mut child = cmd
            .args([
                "--bind-address",
                "127.0.0.1",
                "--grpc-port",
                "0",
                "--grpc-health-port",
                "0",
                "--metrics-port",
                "0",
                "--shutdown-grace-period",
                "2s",
            ])
            .args(if admin_given {
                &[][..]
            } else {
                &["--admin-port", "0"][..]
            })
            // Tests stop at once unless they test the drain window.
            .args(
                (!args.iter().any(|a| a.starts_with("--drain-timeout")))
                    .then_some(["--drain-timeout", "0s"])
                    .into_iter()
                    .flatten(),
            )
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("switchyard: ") {
                    let _ = tx.send(rest.to_string());
                }
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
            }
        });
        let (mut grpc, mut health, mut metrics, mut admin) = (None, None, None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while grpc.is_none()
            || health.is_none()
            || metrics.is_none()
            || (admin.is_none() && !admin_off)
        {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("switchyard did not start: {}", log.lock().unwrap()));
            let addr = || {
                line.rsplit(' ')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            };
            if line.starts_with("ext_proc listening on") {
                grpc = Some(addr());
            } else if line.starts_with("health listening on") {
                health = Some(addr());
            } else if line.starts_with("metrics listening on") {
                metrics = Some(addr());
            } else if line.starts_with("admin listening on") {
                admin = Some(addr());
            }
        }
        Proc {
            child,
            grpc: grpc.unwrap(),
            health: health.unwrap(),
            metrics: metrics.unwrap(),
            admin,
            stderr: log,
        }
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The body of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        sock.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).await.unwrap();
        out
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill").args([sig, &pid]).status().unwrap();
    }

    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (st, self.stderr.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Routes one small completion and returns the endpoint picked.
pub async fn pick(addr: SocketAddr) -> String {
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&[(":path", "/v1/completions")], false))
        .await;
    s.send(body_msg(br#"{"model":"m","prompt":"hello"}"#, true))
        .await;
    let r = s.recv().await.unwrap();
    header(&set_headers(&r), "x-gateway-destination-endpoint")
        .unwrap_or_else(|| panic!("no pick: {r:?}"))
        .to_string()
}

/// Accepts any certificate: the gateway's view of Switchyard's self-signed default.
#[derive(Debug)]
pub struct AcceptAny(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Serves a fixed vLLM `/metrics` page on `ip:0` (any path answers the page).
pub async fn metrics_server(ip: &str, page: String) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let mut req = Vec::new();
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{page}",
                        page.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A vLLM `/metrics` page with one engine: `waiting` queued, KV cache `kv` used.
pub fn vllm_page(waiting: u64, kv: f64) -> String {
    use switchyard::datalayer::fake::{EngineState, VllmPage};
    VllmPage {
        engines: vec![EngineState {
            waiting,
            running: 4,
            kv_usage: kv,
        }],
        ..Default::default()
    }
    .render()
}
