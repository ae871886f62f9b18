//! Kubernetes discovery end to end: the real `switchyard` binary reads a kubeconfig pointing at a
//! stateful fake API server (tests/fakekube) and is asked for picks over ext_proc, while the test
//! changes pods, pools, objectives and rewrites, drops watches, compacts history and uninstalls
//! CRDs. Every wait is on an observable condition with a deadline.

mod common;
mod fakekube;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use fakekube::{FakeApi, OBJECTIVES, PODS, POOLS, PodSpec, REWRITES};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(15);
const VLLM: &[(&str, &str)] = &[("app", "vllm")];

struct Epp {
    child: Child,
    grpc: SocketAddr,
    health: SocketAddr,
    metrics: SocketAddr,
    log: Arc<parking_lot::Mutex<String>>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-k8s-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

impl Epp {
    /// Starts the binary against `api` with `args` (plus loopback ports and plaintext ext_proc)
    /// and `env`, through a kubeconfig in `KUBECONFIG`.
    async fn start(api: &FakeApi, args: &[&str], env: &[(&str, &str)]) -> Epp {
        let dir = temp_dir("kubeconfig");
        let kubeconfig = api.write_kubeconfig(&dir.0);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args([
            "--bind-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--grpc-health-port",
            "0",
            "--metrics-port",
            "0",
            "--secure-serving=false",
            "--shutdown-grace-period",
            "1s",
        ])
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,switchyard::datalayer=error,kube=warn")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("NAMESPACE")
        .env_remove("POD_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn switchyard");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(parking_lot::Mutex::new(String::new()));
        let (mut grpc, mut health, mut metrics) = (None, None, None);
        let addrs = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().push_str(&line);
                log.lock().push('\n');
                let addr = |a: &str| a.parse::<SocketAddr>().ok();
                if let Some(a) = line.strip_prefix("switchyard: ext_proc listening on ") {
                    grpc = addr(a);
                } else if let Some(a) = line.strip_prefix("switchyard: health listening on ") {
                    health = addr(a);
                } else if let Some(a) = line.strip_prefix("switchyard: metrics listening on ") {
                    metrics = addr(a);
                }
                if let (Some(g), Some(h), Some(m)) = (grpc, health, metrics) {
                    return Some((g, h, m));
                }
            }
            None
        })
        .await;
        let Ok(Some((grpc, health, metrics))) = addrs else {
            panic!("switchyard did not start:\n{}", log.lock());
        };
        let log2 = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = log2.lock();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Epp {
            child,
            grpc,
            health,
            metrics,
            log,
            _dir: dir,
        }
    }

    async fn pool(api: &FakeApi, pool: &str) -> Epp {
        Epp::start(api, &["--pool-name", pool, "--pool-namespace", "ns"], &[]).await
    }

    fn log(&self) -> String {
        self.log.lock().clone()
    }

    /// The health status of `service` (1 SERVING, 2 NOT_SERVING).
    async fn health(&self, service: &str) -> i32 {
        let ch = tonic::transport::Channel::from_shared(format!("http://{}", self.health))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut hc = tonic_health::pb::health_client::HealthClient::new(ch);
        hc.check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
    }

    async fn serving(&self) -> bool {
        self.health("inference-extension").await == 1
    }

    /// Sends one completion for `model` with `headers`; returns the first response.
    async fn request(
        &self,
        headers: &[(&str, &str)],
        model: &str,
    ) -> envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse {
        let mut client = ExternalProcessorClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap();
        let mut s = Stream::open(&mut client).await;
        let mut h = vec![(":path", "/v1/completions")];
        h.extend_from_slice(headers);
        s.send(headers_msg(&h, false)).await;
        let body = format!(r#"{{"model":"{model}","prompt":"hello"}}"#);
        s.send(body_msg(body.as_bytes(), true)).await;
        s.recv().await.expect("a response")
    }

    /// The endpoint picked for a plain request, or `Err((status, body))`.
    async fn pick(&self) -> Result<String, (i32, String)> {
        self.pick_with(&[]).await
    }

    async fn pick_with(&self, headers: &[(&str, &str)]) -> Result<String, (i32, String)> {
        let r = self.request(headers, "m").await;
        match header(&set_headers_or_empty(&r), "x-gateway-destination-endpoint") {
            Some(e) => Ok(e.to_string()),
            None => Err(immediate(&r)),
        }
    }

    /// Every endpoint picks reach within `n` tries (the picker spreads ties at random).
    async fn endpoints(&self, n: usize) -> Result<Vec<String>, (i32, String)> {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..n {
            seen.insert(self.pick().await?);
        }
        Ok(seen.into_iter().collect())
    }

    /// A header-only (GET) request's answer.
    async fn header_only(&self) -> Result<String, (i32, String)> {
        let mut client = ExternalProcessorClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap();
        let mut s = Stream::open(&mut client).await;
        s.send(headers_msg(&[(":path", "/v1/models"), (":method", "GET")], true))
            .await;
        let r = s.recv().await.expect("a response");
        match header(&set_headers_or_empty(&r), "x-gateway-destination-endpoint") {
            Some(e) => Ok(e.to_string()),
            None => Err(immediate(&r)),
        }
    }

    async fn metrics_text(&self) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let st = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("stops on SIGTERM")
            .unwrap();
        let log = self.log();
        assert!(st.success(), "exit {st:?}\n{log}");
        log
    }
}

fn set_headers_or_empty(
    r: &envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse,
) -> Vec<(String, String)> {
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as R;
    match &r.response {
        Some(R::RequestHeaders(_)) | Some(R::ResponseHeaders(_)) => set_headers(r),
        _ => Vec::new(),
    }
}

/// Polls `check` until it returns `Some`, or panics after the deadline with `what` and the log.
async fn eventually<T, F, Fut>(epp: &Epp, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for: {what}\n--- switchyard log ---\n{}", epp.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the set of endpoints picks reach is exactly `want` (ip:port strings).
async fn routes_to(epp: &Epp, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let tries = 8 * want.len().max(1);
    let last = parking_lot::Mutex::new(None);
    let what = format!("routing to {want:?}");
    eventually(epp, &what, || async {
        let got = epp.endpoints(tries).await;
        let ok = match &got {
            Ok(eps) => *eps == want,
            Err(_) => want.is_empty(),
        };
        *last.lock() = Some(got);
        ok.then_some(())
    })
    .await;
}

async fn no_endpoints(epp: &Epp) {
    eventually(epp, "no endpoints (503)", || async {
        matches!(epp.pick().await, Err((503, _))).then_some(())
    })
    .await;
}

fn pod(name: &str, ip: &str) -> serde_json::Value {
    PodSpec::new(name, ip, VLLM).to_json()
}

async fn wait_serving(epp: &Epp, serving: bool) {
    let what = if serving { "SERVING" } else { "NOT_SERVING" };
    eventually(epp, what, || async { (epp.serving().await == serving).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_missing_then_created_deleted_then_recreated() {
    let api = FakeApi::start().await;
    api.apply(&PODS, pod("vllm-0", "127.0.0.61"));
    let epp = Epp::pool(&api, "pool").await;
    // Ports are open without a pool; health says NOT_SERVING for any name.
    assert_eq!(epp.health("inference-extension").await, 2);
    assert_eq!(epp.health("").await, 2);
    assert_eq!(
        epp.header_only().await,
        Err((
            500,
            "inference error: Internal - no pods available in datastore".into()
        ))
    );

    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[8000]));
    wait_serving(&epp, true).await;
    for name in ["inference-extension", "", "liveness", "anything-at-all"] {
        assert_eq!(epp.health(name).await, 1, "{name}");
    }
    routes_to(&epp, &["127.0.0.61:8000"]).await;
    assert_eq!(epp.header_only().await, Ok("127.0.0.61:8000".into()));

    api.delete(&POOLS, "ns", "pool");
    wait_serving(&epp, false).await;
    eventually(&epp, "500 without a pool", || async {
        epp.header_only().await.is_err().then_some(())
    })
    .await;

    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[9000]));
    wait_serving(&epp, true).await;
    routes_to(&epp, &["127.0.0.61:9000"]).await;

    // The pool list was narrowed by a field selector on its name, in its namespace only.
    let reqs = api.requests();
    let pool_reqs: Vec<&String> = reqs.iter().filter(|r| r.contains("inferencepools")).collect();
    assert!(!pool_reqs.is_empty());
    assert!(
        pool_reqs.iter().all(|r| r.contains("/namespaces/ns/")
            && r.contains("fieldSelector=metadata.name%3Dpool")),
        "{pool_reqs:?}"
    );
    let log = epp.stop().await;
    assert!(log.contains("InferencePool not found"), "{log}");
}
