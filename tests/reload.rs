//! Configuration and certificate reloads of the real binary: a ConfigMap-style `..data` symlink
//! swap changes the weights in force without a restart, an invalid version keeps the old one,
//! requests in flight and in the queue survive a reload, and a rotated certificate reaches new
//! connections.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::*;
use common::*;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;

const HEADER: &str =
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n";

/// A directory laid out as Kubernetes mounts a ConfigMap: `config.yaml -> ..data/config.yaml`,
/// `..data -> ..<version>`; a new version is swapped in with one atomic rename.
struct ConfigMapDir {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapDir {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Self { dir, version: 0 };
        d.publish(text);
        std::os::unix::fs::symlink("..data/config.yaml", d.dir.join("config.yaml")).unwrap();
        d
    }

    fn path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    fn publish(&mut self, text: &str) {
        self.version += 1;
        let v = format!("..v{}", self.version);
        std::fs::create_dir_all(self.dir.join(&v)).unwrap();
        std::fs::write(self.dir.join(&v).join("config.yaml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&v, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

impl Drop for ConfigMapDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `cond` holds, polling; panics with `what` after 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every pick in a row of ten goes to `want` (a single pick can land there by a
/// tie before the pods are scraped).
async fn picks_settle_on(what: &str, grpc: std::net::SocketAddr, want: String) {
    eventually(what, || {
        let want = want.clone();
        async move {
            for _ in 0..10 {
                if pick(grpc).await != want {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

fn one_scorer(scorer: &str) -> String {
    format!(
        "{HEADER}plugins:\n- type: {scorer}\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: {scorer}\n"
    )
}

#[tokio::test]
async fn a_configmap_swap_changes_the_picks_and_an_invalid_version_keeps_them() {
    // One pod with a long queue but an empty KV cache, one idle but nearly full.
    let queued = metrics_server("127.0.0.51", vllm_page(10, 0.1)).await;
    let full = metrics_server("127.0.0.52", vllm_page(0, 0.9)).await;
    let mut cm = ConfigMapDir::new("reload-weights", &one_scorer("queue-scorer"));
    let path = cm.path();
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        &format!("{queued},{full}"),
        "--config-file",
        path.to_str().unwrap(),
        "--config-reload-interval",
        "100ms",
    ]);
    let grpc = p.grpc;
    picks_settle_on(
        "the queue scorer to prefer the idle pod",
        grpc,
        full.to_string(),
    )
    .await;

    cm.publish(&one_scorer("kv-cache-utilization-scorer"));
    let queued_s = queued.to_string();
    picks_settle_on(
        "the reloaded KV scorer to prefer the empty cache",
        grpc,
        queued_s.clone(),
    )
    .await;
    let m = p.metrics_text().await;
    assert!(
        m.contains(r#"switchyard_config_reloads_total{result="success"} 1"#),
        "{m}"
    );

    cm.publish(&format!(
        "{HEADER}plugins:\n- type: kv-cache-utilization-scorer\n  parameters: {{weight: 3}}\n"
    ));
    let pp = &p;
    eventually("the failed reload to be counted", || async move {
        pp.metrics_text()
            .await
            .contains(r#"switchyard_config_reloads_total{result="failure"} 1"#)
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            pick(grpc).await,
            queued_s,
            "the old configuration stays in force"
        );
    }
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("plugins[0].parameters.weight: unknown field"),
        "the error names its field: {log}"
    );
    assert!(log.contains("configuration reloaded"), "{log}");
}

/// Opens a stream and routes a completion; the stream stays open (the response is pending).
async fn route(addr: std::net::SocketAddr, tenant: &str) -> (Stream, String) {
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(
        &[
            (":path", "/v1/completions"),
            ("x-gateway-inference-fairness-id", tenant),
        ],
        false,
    ))
    .await;
    s.send(body_msg(
        br#"{"model":"m","prompt":"a prompt long enough to count some tokens in flight"}"#,
        true,
    ))
    .await;
    let r = s.recv().await.expect("routed");
    let dest = header(&set_headers(&r), "x-gateway-destination-endpoint")
        .unwrap_or_else(|| panic!("no pick: {r:?}"))
        .to_string();
    // The body the gateway forwards comes next.
    let _ = s.recv().await;
    (s, dest)
}

/// The response of a routed request, start to end.
async fn finish(mut s: Stream) {
    s.send(response_headers_msg(&[(":status", "200")], false))
        .await;
    let _ = s.recv().await;
    s.send(response_body_msg(
        br#"{"usage":{"prompt_tokens":10,"completion_tokens":2}}"#,
        true,
    ))
    .await;
    let _ = s.recv().await;
    s.close();
}

fn token_load(weight: u32) -> String {
    format!(
        "{HEADER}plugins:\n- type: token-load-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - {{pluginRef: token-load-scorer, weight: {weight}}}\ndataLayer: {{sources: []}}\n"
    )
}

#[tokio::test]
async fn a_request_in_flight_across_a_reload_keeps_and_then_releases_its_count() {
    let mut cm = ConfigMapDir::new("reload-inflight", &token_load(1));
    let path = cm.path();
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        "127.0.0.53:8000,127.0.0.54:8000",
        "--config-file",
        path.to_str().unwrap(),
        "--config-reload-interval",
        "100ms",
    ]);
    let (first, a) = route(p.grpc, "t").await;
    cm.publish(&token_load(2));
    let pp = &p;
    eventually("the reload", || async move {
        pp.metrics_text()
            .await
            .contains(r#"switchyard_config_reloads_total{result="success"} 1"#)
    })
    .await;
    // The first request still counts on its pod under the new configuration.
    let (second, b) = route(p.grpc, "t").await;
    assert_ne!(a, b, "the in-flight count survived the reload");
    // It completes on the runtime it started with and releases its count there, which the new
    // runtime shares: its pod is now the lighter one.
    finish(first).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (third, c) = route(p.grpc, "t").await;
    assert_eq!(c, a, "the count was released");
    finish(second).await;
    finish(third).await;
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}

fn one_at_a_time(weight: u32) -> String {
    format!(
        "{HEADER}featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: concurrency-detector
  parameters: {{maxConcurrency: 1}}
schedulingProfiles:
- name: default
  plugins:
  - {{pluginRef: queue-scorer, weight: {weight}}}
saturationDetector: {{pluginRef: concurrency-detector}}
dataLayer: {{sources: []}}
"
    )
}

#[tokio::test]
async fn a_queued_request_survives_a_reload_and_is_dispatched_under_the_new_config() {
    let mut cm = ConfigMapDir::new("reload-queue", &one_at_a_time(1));
    let path = cm.path();
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        "127.0.0.55:8000",
        "--config-file",
        path.to_str().unwrap(),
        "--config-reload-interval",
        "100ms",
    ]);
    let (first, _) = route(p.grpc, "t").await;
    // The pool takes one request at a time: the second waits in Switchyard.
    let mut client = ExternalProcessorClient::connect(format!("http://{}", p.grpc))
        .await
        .unwrap();
    let mut waiting = Stream::open(&mut client).await;
    waiting
        .send(headers_msg(&[(":path", "/v1/completions")], false))
        .await;
    waiting
        .send(body_msg(br#"{"model":"m","prompt":"second"}"#, true))
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.recv())
            .await
            .is_err(),
        "the second request waits"
    );
    cm.publish(&one_at_a_time(2));
    let pp = &p;
    eventually("the reload", || async move {
        pp.metrics_text()
            .await
            .contains(r#"switchyard_config_reloads_total{result="success"} 1"#)
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.recv())
            .await
            .is_err(),
        "still waiting after the reload"
    );
    finish(first).await;
    let r = tokio::time::timeout(Duration::from_secs(5), waiting.recv())
        .await
        .expect("dispatched when the first completed")
        .expect("a response");
    assert_eq!(
        header(&set_headers(&r), "x-gateway-destination-endpoint"),
        Some("127.0.0.55:8000")
    );
    drop(waiting);
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}

fn write_pair(dir: &Path, pair: &switchyard::server::tls::CertPair) {
    // Written aside and renamed, as a Secret volume update is atomic.
    for (name, text) in [("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// The leaf certificate a new TLS connection to `addr` is served.
async fn served_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("switchyard-epp").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections() {
    let dir = std::env::temp_dir().join(format!("switchyard-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = switchyard::server::tls::self_signed().unwrap();
    write_pair(&dir, &first);
    let p = Proc::start(&[
        "--static-endpoints",
        "127.0.0.56:8000",
        "--cert-path",
        dir.to_str().unwrap(),
        "--enable-cert-reload",
        "--cert-reload-interval",
        "100ms",
    ]);
    assert_eq!(served_certificate(p.grpc).await, der(&first.cert_pem));
    let second = switchyard::server::tls::self_signed().unwrap();
    write_pair(&dir, &second);
    let grpc = p.grpc;
    let want = der(&second.cert_pem);
    eventually("the rotated certificate", || {
        let want = want.clone();
        async move { served_certificate(grpc).await == want }
    })
    .await;
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("certificate reloaded"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sighup_re_reads_the_config_file_at_once() {
    let queued = metrics_server("127.0.0.57", vllm_page(10, 0.1)).await;
    let full = metrics_server("127.0.0.58", vllm_page(0, 0.9)).await;
    let mut cm = ConfigMapDir::new("reload-hup", &one_scorer("queue-scorer"));
    let path = cm.path();
    let p = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        &format!("{queued},{full}"),
        "--config-file",
        path.to_str().unwrap(),
        "--config-reload-interval",
        "1h",
    ]);
    let grpc = p.grpc;
    picks_settle_on(
        "the queue scorer to prefer the idle pod",
        grpc,
        full.to_string(),
    )
    .await;
    cm.publish(&one_scorer("kv-cache-utilization-scorer"));
    p.signal("-HUP");
    picks_settle_on("SIGHUP to load the new version", grpc, queued.to_string()).await;
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("SIGHUP: re-reading"), "{log}");
}
