//! The real `switchyard` binary over loopback: TLS with its self-signed certificate, static
//! endpoints from a file that changes under it, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;

struct Proc {
    child: Child,
    grpc: SocketAddr,
    health: SocketAddr,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
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
        let (mut grpc, mut health) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while grpc.is_none() || health.is_none() {
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
            }
        }
        Proc {
            child,
            grpc: grpc.unwrap(),
            health: health.unwrap(),
            stderr: log,
        }
    }

    fn terminate(mut self) -> (std::process::ExitStatus, String) {
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

async fn pick(addr: SocketAddr) -> String {
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

#[tokio::test]
async fn static_file_reload_switches_endpoints_and_keeps_them_on_bad_files() {
    let dir = std::env::temp_dir().join(format!("switchyard-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.yaml");
    std::fs::write(
        &file,
        "endpoints:\n- {name: a, address: 127.0.0.21, port: 8000}\n",
    )
    .unwrap();
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints-file",
        file.to_str().unwrap(),
        "--static-endpoints-reload-interval",
        "50ms",
    ]);
    assert_eq!(pick(p.grpc).await, "127.0.0.21:8000");

    std::fs::write(
        &file,
        "endpoints:\n- {name: b, address: 127.0.0.22, port: 9000}\n",
    )
    .unwrap();
    let mut switched = false;
    for _ in 0..200 {
        if pick(p.grpc).await == "127.0.0.22:9000" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switched, "reload not applied");

    std::fs::write(&file, "endpoints:\n- {address: nonsense, port: 1}\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pick(p.grpc).await,
        "127.0.0.22:9000",
        "invalid file keeps the endpoints"
    );
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("invalid static endpoints file; keeping the endpoints in force"),
        "{log}"
    );
    assert!(log.contains("invalid static endpoints file (1 error):\n  - endpoints[0].address: must be an IP address, got \"nonsense\""), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Accepts any certificate: the gateway's view of Switchyard's self-signed default.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

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

#[tokio::test]
async fn tls_is_on_by_default_with_a_self_signed_certificate_and_h2() {
    let p = Proc::start(&["--static-endpoints", "127.0.0.31:8000"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(p.grpc).await.unwrap();
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("switchyard-epp").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    let certs = conn.peer_certificates().unwrap();
    assert_eq!(certs.len(), 1, "one self-signed certificate");
    // Health is plaintext on its own port.
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", p.health))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut hc = tonic_health::pb::health_client::HealthClient::new(ch);
    let r = hc
        .check(tonic_health::pb::HealthCheckRequest {
            service: "inference-extension".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status, 1);
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}

/// Serves a fixed vLLM `/metrics` page on `ip:0` (any path answers the page).
async fn metrics_server(ip: &str, page: String) -> SocketAddr {
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

#[tokio::test]
async fn scraped_metrics_steer_the_pick() {
    use switchyard::datalayer::fake::{EngineState, VllmPage};
    let page = |waiting: u64, kv: f64| {
        VllmPage {
            engines: vec![EngineState {
                waiting,
                running: 4,
                kv_usage: kv,
            }],
            ..Default::default()
        }
        .render()
    };
    let busy = metrics_server("127.0.0.41", page(20, 0.9)).await;
    let idle = metrics_server("127.0.0.42", page(0, 0.1)).await;
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        &format!("{busy},{idle}"),
    ]);
    // Before the first scrape every endpoint ties; once scraped, the idle one wins every time.
    let mut streak = 0;
    for _ in 0..400 {
        if pick(p.grpc).await == idle.to_string() {
            streak += 1;
            if streak == 20 {
                break;
            }
        } else {
            streak = 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(streak, 20, "picks did not follow the scraped metrics");
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn flow_control_from_the_config_file_queues_and_answers_503_on_shutdown() {
    use switchyard::datalayer::fake::{EngineState, VllmPage};
    let page = VllmPage {
        engines: vec![EngineState {
            waiting: 20,
            running: 4,
            kv_usage: 0.5,
        }],
        ..Default::default()
    }
    .render();
    let busy = metrics_server("127.0.0.43", page).await;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vtc.yaml");
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        &busy.to_string(),
        "--config-file",
        config,
    ]);
    let mut client = ExternalProcessorClient::connect(format!("http://{}", p.grpc))
        .await
        .unwrap();
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(
        &[
            (":path", "/v1/completions"),
            ("x-gateway-inference-fairness-id", "acme"),
        ],
        false,
    ))
    .await;
    s.send(body_msg(br#"{"model":"m","prompt":"hello"}"#, true))
        .await;
    // The pod's queue of 20 saturates the pool: the request waits in Switchyard.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.recv())
            .await
            .is_err(),
        "the request was not held"
    );
    let pid = p.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), s.recv())
        .await
        .expect("an answer on shutdown")
        .expect("a response");
    assert_eq!(
        immediate(&r),
        (
            503,
            "inference error: ServiceUnavailable - request evicted from the queue: the endpoint picker is shutting down".to_string()
        )
    );
    drop(s);
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}
