//! The real `switchyard` binary over loopback: TLS with its self-signed certificate, static
//! endpoints from a file that changes under it, and a clean stop on SIGTERM.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::process::*;
use common::*;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;

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
