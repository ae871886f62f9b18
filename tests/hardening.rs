//! Hostile input against the real binary: client-chosen label values cannot grow `/metrics` or
//! memory.

mod common;

use std::net::SocketAddr;

use common::process::*;
use common::*;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Routes `n` requests, each with its own model and tenant, over `streams` concurrent streams.
async fn flood(addr: SocketAddr, from: usize, n: usize, streams: usize) {
    let client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..streams {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (from + w..from + n).step_by(streams) {
                let mut s = Stream::open(&mut client).await;
                let tenant = format!("tenant-{i}");
                s.send(headers_msg(
                    &[
                        (":path", "/v1/completions"),
                        ("x-gateway-inference-fairness-id", &tenant),
                    ],
                    false,
                ))
                .await;
                let body = format!(r#"{{"model":"model-{i}","prompt":"hi"}}"#);
                s.send(body_msg(body.as_bytes(), true)).await;
                let r = s.recv().await.expect("a response");
                assert!(
                    header(&set_headers(&r), "x-gateway-destination-endpoint").is_some(),
                    "{r:?}"
                );
                s.send(response_headers_msg(&[(":status", "200")], false))
                    .await;
                s.send(response_body_msg(
                    br#"{"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
                    true,
                ))
                .await;
                s.close();
                while s.recv().await.is_some() {}
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_models_and_tenants_keep_metrics_and_memory_bounded() {
    let pod = metrics_server("127.0.0.61", vllm_page(0, 0.1)).await;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vtc.yaml");
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        &pod.to_string(),
        "--config-file",
        config,
        "--max-label-values",
        "100",
        "--fairness-idle-timeout",
        "1s",
    ]);
    let pid = p.child.id();
    // Warm up past the bounds, then measure, flood with ten times as many values, and measure
    // again. (The release binary was measured with 100,000: see the README.)
    let n: usize = std::env::var("SWITCHYARD_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000);
    flood(p.grpc, 0, 1_200, 8).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (text_before, rss_before) = (p.metrics_text().await.len(), rss_kib(pid));
    flood(p.grpc, 1_200, n, 8).await;
    let text = p.metrics_text().await;
    let rss_after = rss_kib(pid);
    eprintln!(
        "metrics text {text_before} -> {} bytes, RSS {rss_before} -> {rss_after} KiB",
        text.len()
    );
    assert!(
        text.len() < text_before + text_before / 10,
        "/metrics grew from {text_before} to {} bytes",
        text.len()
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(
        text.contains("switchyard_flow_control_tenants_collected_total "),
        "{text}"
    );
    let collected: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_flow_control_tenants_collected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(collected > 0.0, "idle tenants' VTC state is collected");
    assert!(
        text.contains(
            r#"switchyard_label_values_forgotten_total{label="model_name,target_model_name"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"switchyard_label_values_forgotten_total{label="fairness_id"}"#));
    let models = text.matches("model_name=\"model-").count();
    let series_per_pair = 400;
    assert!(
        models <= 100 * series_per_pair,
        "{models} series carry a client's model name"
    );
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}

/// The health server's answer for the empty service name.
async fn serving(addr: SocketAddr) -> Option<i32> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .ok()?;
    let mut hc = tonic_health::pb::health_client::HealthClient::new(ch);
    let r = hc
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

#[tokio::test]
async fn sigterm_drains_serving_new_streams_then_closes_and_a_second_exits_at_once() {
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        "127.0.0.62:8000",
        "--drain-timeout",
        "1500ms",
    ]);
    assert_eq!(serving(p.health).await, Some(1));
    p.signal("-TERM");
    let started = std::time::Instant::now();
    // Readiness drops at once, and new streams are still served during the window.
    let mut saw_not_serving = false;
    for _ in 0..20 {
        if serving(p.health).await == Some(2) {
            saw_not_serving = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(saw_not_serving, "readiness did not drop");
    assert_eq!(pick(p.grpc).await, "127.0.0.62:8000");
    assert!(started.elapsed() < std::time::Duration::from_millis(1500));
    // After the window the listener is closed.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    assert!(
        ExternalProcessorClient::connect(format!("http://{}", p.grpc))
            .await
            .is_err(),
        "the listener is closed after the drain window"
    );
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("new streams are still served"), "{log}");
    assert!(log.contains("listeners closed"), "{log}");

    // A second stop signal during a long drain ends the process at once.
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        "127.0.0.62:8000",
        "--drain-timeout",
        "60s",
    ]);
    p.signal("-TERM");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = std::time::Instant::now();
    let (status, log) = p.terminate();
    assert!(
        before.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        before.elapsed()
    );
    assert!(status.success(), "{log}");
    assert!(log.contains("second stop signal: exiting now"), "{log}");
}

#[tokio::test]
async fn nan_and_negative_load_metrics_do_not_attract_traffic() {
    let healthy = metrics_server("127.0.0.63", vllm_page(3, 0.4)).await;
    let nan = metrics_server(
        "127.0.0.64",
        "vllm:num_requests_waiting NaN\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc -1\n"
            .to_string(),
    )
    .await;
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        &format!("{healthy},{nan}"),
    ]);
    // Wait for both scrapes, then every pick avoids the pod whose numbers are unusable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut streak = 0;
    while streak < 30 {
        assert!(std::time::Instant::now() < deadline, "picks never settled");
        if pick(p.grpc).await == healthy.to_string() {
            streak += 1;
        } else {
            streak = 0;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn an_emptied_endpoints_file_keeps_routing() {
    let dir = std::env::temp_dir().join(format!("switchyard-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.yaml");
    std::fs::write(&file, "endpoints:\n- {address: 127.0.0.65, port: 8000}\n").unwrap();
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints-file",
        file.to_str().unwrap(),
        "--static-endpoints-reload-interval",
        "50ms",
    ]);
    assert_eq!(pick(p.grpc).await, "127.0.0.65:8000");
    std::fs::write(&file, "").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        pick(p.grpc).await,
        "127.0.0.65:8000",
        "the previous set stays"
    );
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("the file is empty"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_closed_stderr_does_not_stop_the_process() {
    use std::process::{Command, Stdio};
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
            "--static-endpoints",
            "127.0.0.66:8000",
            "-v",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    // It keeps logging into the closed pipe (debug logs on every scrape) and must live on.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(child.try_wait().unwrap().is_none(), "the process died");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A CA and a client certificate it issued (PEM), made with rcgen.
fn ca_and_client() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["gateway".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    (ca_cert.pem(), client.pem(), client_key.serialize_pem())
}

/// A health check over the ext_proc port with TLS (trusting `server_cert`) and, optionally, a
/// client certificate; whether it was answered.
async fn mtls_check(addr: SocketAddr, server_cert: &str, client: Option<(&str, &str)>) -> bool {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server_cert))
        .domain_name("switchyard-epp");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let Ok(endpoint) = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
    else {
        return false;
    };
    let Ok(ch) = endpoint.connect().await else {
        return false;
    };
    let mut hc = tonic_health::pb::health_client::HealthClient::new(ch);
    let check = hc.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), check)
        .await
        .is_ok_and(|r| r.is_ok())
}

#[tokio::test]
async fn client_ca_file_admits_only_gateways_with_its_certificates() {
    let dir = std::env::temp_dir().join(format!("switchyard-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = ca_and_client();
    let (_, other_cert, other_key) = ca_and_client();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let server = switchyard::server::tls::self_signed().unwrap();
    std::fs::write(dir.join("tls.crt"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &server.key_pem).unwrap();
    let p = Proc::start(&[
        "--static-endpoints",
        "127.0.0.67:8000",
        "--health-checking",
        "--cert-path",
        dir.to_str().unwrap(),
        "--client-ca-file",
        ca_file.to_str().unwrap(),
    ]);
    let sc = &server.cert_pem;
    assert!(
        mtls_check(p.grpc, sc, Some((&cert, &key))).await,
        "the CA's client is served"
    );
    assert!(
        !mtls_check(p.grpc, sc, None).await,
        "no client certificate: refused"
    );
    assert!(
        !mtls_check(p.grpc, sc, Some((&other_cert, &other_key))).await,
        "another CA's client: refused"
    );
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
