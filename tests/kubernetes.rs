//! Kubernetes discovery end to end: the real `switchyard` binary reads a kubeconfig pointing at a
//! stateful fake API server (tests/fakekube) and is asked for picks over ext_proc, while the test
//! changes pods, pools, objectives and rewrites, drops watches, compacts history and uninstalls
//! CRDs. Every wait is on an observable condition with a deadline.

mod common;
mod fakekube;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::{Proc, metrics_server, vllm_page};
use common::*;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use fakekube::{FakeApi, OBJECTIVES, PODS, POOLS, PodSpec, REWRITES};

const DEADLINE: Duration = Duration::from_secs(15);
const VLLM: &[(&str, &str)] = &[("app", "vllm")];

struct Epp {
    proc: Proc,
    grpc: SocketAddr,
    health: SocketAddr,
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
    /// Starts the binary against `api` with `args` (plus plaintext ext_proc) and `env`, through a
    /// kubeconfig in `KUBECONFIG` (and no in-cluster configuration).
    async fn start(api: &FakeApi, args: &[&str], env: &[(&str, &str)]) -> Epp {
        let dir = temp_dir("kubeconfig");
        let kubeconfig = api.write_kubeconfig(&dir.0);
        let kubeconfig = kubeconfig.to_str().unwrap();
        let mut all_args = vec!["--secure-serving=false"];
        all_args.extend_from_slice(args);
        let mut set = vec![
            ("KUBECONFIG", kubeconfig),
            ("RUST_LOG", "info,switchyard::datalayer=error,kube=warn"),
        ];
        set.extend_from_slice(env);
        let remove = [
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "NAMESPACE",
            "POD_NAME",
        ];
        // Blocks this worker while the other serves the fake API server.
        let proc = tokio::task::block_in_place(|| Proc::start_with_env(&all_args, &set, &remove));
        Epp {
            grpc: proc.grpc,
            health: proc.health,
            proc,
            _dir: dir,
        }
    }

    async fn pool(api: &FakeApi, pool: &str) -> Epp {
        Epp::start(api, &["--pool-name", pool, "--pool-namespace", "ns"], &[]).await
    }

    fn log(&self) -> String {
        self.proc.log()
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
        s.send(headers_msg(
            &[(":path", "/v1/models"), (":method", "GET")],
            true,
        ))
        .await;
        let r = s.recv().await.expect("a response");
        match header(&set_headers_or_empty(&r), "x-gateway-destination-endpoint") {
            Some(e) => Ok(e.to_string()),
            None => Err(immediate(&r)),
        }
    }

    async fn metrics_text(&self) -> String {
        self.proc.metrics_text().await
    }

    async fn stop(self) -> String {
        let (st, log) = tokio::task::block_in_place(|| self.proc.terminate());
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
            panic!(
                "timed out waiting for: {what}\n--- switchyard log ---\n{}",
                epp.log()
            );
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
    eventually(epp, what, || async {
        (epp.serving().await == serving).then_some(())
    })
    .await;
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
    let pool_reqs: Vec<&String> = reqs
        .iter()
        .filter(|r| r.contains("inferencepools"))
        .collect();
    assert!(!pool_reqs.is_empty());
    assert!(
        pool_reqs
            .iter()
            .all(|r| r.contains("/namespaces/ns/")
                && r.contains("fieldSelector=metadata.name%3Dpool")),
        "{pool_reqs:?}"
    );
    let log = epp.stop().await;
    assert!(log.contains("InferencePool not found"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_follow_readiness_labels_deletion_and_never_other_namespaces() {
    let api = FakeApi::start().await;
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[8000]));
    let mut elsewhere = PodSpec::new("vllm-x", "127.0.0.79", VLLM);
    elsewhere.namespace = "other";
    api.apply(&PODS, elsewhere.to_json());
    let epp = Epp::pool(&api, "pool").await;
    // A pool with no ready pod is synced: SERVING, but nothing to route to.
    wait_serving(&epp, true).await;
    no_endpoints(&epp).await;

    let mut a = PodSpec::new("vllm-a", "127.0.0.71", VLLM);
    a.ready = false;
    api.apply(&PODS, a.to_json());
    api.apply(&PODS, pod("vllm-b", "127.0.0.72"));
    routes_to(&epp, &["127.0.0.72:8000"]).await;
    a.ready = true;
    api.apply(&PODS, a.to_json());
    routes_to(&epp, &["127.0.0.71:8000", "127.0.0.72:8000"]).await;
    let mut b = PodSpec::new("vllm-b", "127.0.0.72", VLLM);
    b.ready = false;
    api.apply(&PODS, b.to_json());
    routes_to(&epp, &["127.0.0.71:8000"]).await;
    a.terminating = true;
    api.apply(&PODS, a.to_json());
    no_endpoints(&epp).await;
    api.delete(&PODS, "ns", "vllm-a");
    api.delete(&PODS, "ns", "vllm-b");

    // Relabelled out of the selector and back in.
    api.apply(&PODS, pod("vllm-c", "127.0.0.73"));
    routes_to(&epp, &["127.0.0.73:8000"]).await;
    api.apply(
        &PODS,
        PodSpec::new("vllm-c", "127.0.0.73", &[("app", "other")]).to_json(),
    );
    no_endpoints(&epp).await;
    api.apply(
        &PODS,
        PodSpec::new("vllm-c", "127.0.0.73", &[("app", "vllm"), ("extra", "x")]).to_json(),
    );
    routes_to(&epp, &["127.0.0.73:8000"]).await;
    api.delete(&PODS, "ns", "vllm-c");
    no_endpoints(&epp).await;
    assert_eq!(epp.health("inference-extension").await, 1);

    // Pods were only ever listed and watched in the pool namespace.
    let reqs = api.requests();
    let pod_reqs: Vec<&String> = reqs.iter().filter(|r| r.contains("/pods")).collect();
    assert!(
        pod_reqs
            .iter()
            .all(|r| r.starts_with("GET /api/v1/namespaces/ns/pods")),
        "{pod_reqs:?}"
    );
    assert!(
        pod_reqs
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true"))
    );
    epp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_ports_active_ports_selector_changes_and_invalid_updates() {
    let api = FakeApi::start().await;
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[8000, 8001]));
    api.apply(&PODS, pod("vllm-a", "127.0.0.81"));
    let epp = Epp::pool(&api, "pool").await;
    routes_to(&epp, &["127.0.0.81:8000", "127.0.0.81:8001"]).await;

    let mut a = PodSpec::new("vllm-a", "127.0.0.81", VLLM);
    a.annotations = &[("inference.networking.k8s.io/active-ports", "8001")];
    api.apply(&PODS, a.to_json());
    routes_to(&epp, &["127.0.0.81:8001"]).await;
    a.annotations = &[(
        "inference.networking.k8s.io/active-ports",
        "8000,bogus,9999",
    )];
    api.apply(&PODS, a.to_json());
    routes_to(&epp, &["127.0.0.81:8000"]).await;
    api.apply(&PODS, pod("vllm-a", "127.0.0.81"));
    routes_to(&epp, &["127.0.0.81:8000", "127.0.0.81:8001"]).await;

    // Port change, then selector change.
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[9000]));
    routes_to(&epp, &["127.0.0.81:9000"]).await;
    let sglang: &[(&str, &str)] = &[("app", "sglang")];
    api.apply(
        &PODS,
        PodSpec::new("sglang-a", "127.0.0.82", sglang).to_json(),
    );
    api.apply(&POOLS, fakekube::pool("ns", "pool", sglang, &[9000]));
    routes_to(&epp, &["127.0.0.82:9000"]).await;

    // Invalid updates are rejected and the previous spec stays in force.
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[]));
    api.apply(
        &POOLS,
        fakekube::pool("ns", "pool", VLLM, &[1, 2, 3, 4, 5, 6, 7, 8, 9]),
    );
    eventually(&epp, "the invalid pool logged", || async {
        epp.log().contains("got 9").then_some(())
    })
    .await;
    routes_to(&epp, &["127.0.0.82:9000"]).await;
    assert_eq!(epp.health("inference-extension").await, 1);
    let log = epp.stop().await;
    assert!(
        log.contains("invalid, keeping the previous valid spec: spec.targetPorts: must list 1 to 8 ports, got 0")
            && log.contains("name=pool"),
        "{log}"
    );
    assert!(
        log.contains("ignoring malformed entries [\"bogus\"]"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_and_410_relists_converge() {
    let api = FakeApi::start().await;
    api.set_max_page(Some(1));
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[8000]));
    api.apply(&PODS, pod("vllm-a", "127.0.0.91"));
    api.apply(&PODS, pod("vllm-b", "127.0.0.92"));
    let epp = Epp::pool(&api, "pool").await;
    routes_to(&epp, &["127.0.0.91:8000", "127.0.0.92:8000"]).await;
    let lists = |reqs: &[String]| {
        reqs.iter()
            .filter(|r| r.contains("/pods?") && !r.contains("watch=true"))
            .count()
    };
    assert!(lists(&api.requests()) >= 2, "paginated initial list");

    // Connections reset while changes happen: the watch resumes from its resourceVersion.
    api.drop_watches();
    api.apply(&PODS, pod("vllm-c", "127.0.0.93"));
    api.delete(&PODS, "ns", "vllm-a");
    routes_to(&epp, &["127.0.0.92:8000", "127.0.0.93:8000"]).await;

    // The server goes away, things change, history is compacted: the watch gets 410 Gone and
    // relists; the deletion it never saw is dropped.
    let lists_before = lists(&api.requests());
    api.set_unavailable(true);
    api.apply(&PODS, pod("vllm-d", "127.0.0.94"));
    api.delete(&PODS, "ns", "vllm-b");
    api.compact();
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.set_unavailable(false);
    routes_to(&epp, &["127.0.0.93:8000", "127.0.0.94:8000"]).await;
    assert!(lists(&api.requests()) > lists_before, "relisted");
    let text = epp.metrics_text().await;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    assert!(value("switchyard_kubernetes_relists_total{kind=\"Pod\"}") >= 1.0);
    assert!(value("switchyard_kubernetes_watch_restarts_total{kind=\"Pod\"}") >= 1.0);
    assert_eq!(value("switchyard_kubernetes_objects{kind=\"Pod\"}"), 2.0);
    assert!(value("switchyard_kubernetes_last_sync_timestamp_seconds{kind=\"Pod\"}") > 1.7e9);
    assert_eq!(epp.health("inference-extension").await, 1);
    epp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objectives_shed_negative_priorities_when_saturated_and_ignore_other_pools() {
    let busy = metrics_server("127.0.0.101", vllm_page(50, 0.95)).await;
    let api = FakeApi::start().await;
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[busy.port()]));
    api.apply(&PODS, pod("vllm-a", "127.0.0.101"));
    api.apply(
        &OBJECTIVES,
        fakekube::objective("ns", "sheddable", "pool", Some(-1)),
    );
    api.apply(
        &OBJECTIVES,
        fakekube::objective("ns", "foreign", "other-pool", Some(-1)),
    );
    api.apply(
        &OBJECTIVES,
        fakekube::objective("ns", "critical", "pool", Some(5)),
    );
    let epp = Epp::pool(&api, "pool").await;
    routes_to(&epp, &[&busy.to_string()]).await;
    let objective = |name: &'static str| [("x-gateway-inference-objective", name)];
    let shed = eventually(&epp, "the sheddable objective shed", || async {
        epp.pick_with(&objective("sheddable")).await.err()
    })
    .await;
    assert_eq!(shed.0, 429, "{shed:?}");
    assert!(shed.1.contains("sheddable request dropped"), "{shed:?}");
    // Another pool's objective of the same priority does not apply here: priority 0.
    assert_eq!(
        epp.pick_with(&objective("foreign")).await,
        Ok(busy.to_string())
    );
    assert_eq!(
        epp.pick_with(&objective("critical")).await,
        Ok(busy.to_string())
    );
    assert_eq!(
        epp.pick_with(&objective("unknown")).await,
        Ok(busy.to_string())
    );
    // Deleting the objective makes its requests priority 0.
    api.delete(&OBJECTIVES, "ns", "sheddable");
    eventually(&epp, "the deleted objective no longer sheds", || async {
        epp.pick_with(&objective("sheddable")).await.ok()
    })
    .await;
    // Moved to this pool, the foreign one sheds.
    api.apply(
        &OBJECTIVES,
        fakekube::objective("ns", "foreign", "pool", Some(-3)),
    );
    eventually(&epp, "the objective now naming this pool sheds", || async {
        matches!(epp.pick_with(&objective("foreign")).await, Err((429, _))).then_some(())
    })
    .await;
    epp.stop().await;
}

impl Epp {
    /// The model the pod would receive for a request naming `model`.
    async fn routed_model(&self, model: &str) -> String {
        let mut client = ExternalProcessorClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap();
        let mut s = Stream::open(&mut client).await;
        s.send(headers_msg(&[(":path", "/v1/completions")], false))
            .await;
        let body = format!(r#"{{"model":"{model}","prompt":"hello"}}"#);
        s.send(body_msg(body.as_bytes(), true)).await;
        let rs = s.recv_n(2).await;
        let (bytes, _) = body_chunk(&rs[1]);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["model"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_follow_precedence_and_deletion_and_crd_uninstall() {
    let api = FakeApi::start().await;
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[8000]));
    api.apply(&PODS, pod("vllm-a", "127.0.0.111"));
    let rw = fakekube::rewrite;
    api.apply(
        &REWRITES,
        rw(
            "ns",
            "b-old-exact",
            "pool",
            "2026-01-01T00:00:00Z",
            &["m"],
            &[("from-old", 1)],
        ),
    );
    api.apply(
        &REWRITES,
        rw(
            "ns",
            "a-new-exact",
            "pool",
            "2026-03-01T00:00:00Z",
            &["m"],
            &[("from-new", 1)],
        ),
    );
    api.apply(
        &REWRITES,
        rw(
            "ns",
            "oldest-generic",
            "pool",
            "2025-01-01T00:00:00Z",
            &[],
            &[("catch-all", 1)],
        ),
    );
    api.apply(
        &REWRITES,
        rw(
            "ns",
            "other-pool",
            "elsewhere",
            "2024-01-01T00:00:00Z",
            &[],
            &[("never", 1)],
        ),
    );
    let epp = Epp::pool(&api, "pool").await;
    routes_to(&epp, &["127.0.0.111:8000"]).await;
    eventually(&epp, "the oldest exact rewrite", || async {
        (epp.routed_model("m").await == "from-old").then_some(())
    })
    .await;
    assert_eq!(
        epp.routed_model("x").await,
        "catch-all",
        "generic when no exact match"
    );
    api.delete(&REWRITES, "ns", "b-old-exact");
    eventually(&epp, "the next oldest exact rewrite", || async {
        (epp.routed_model("m").await == "from-new").then_some(())
    })
    .await;
    api.delete(&REWRITES, "ns", "oldest-generic");
    eventually(&epp, "no generic rewrite", || async {
        (epp.routed_model("x").await == "x").then_some(())
    })
    .await;
    // Uninstalling the CRD deletes its objects: no rewrites, routing goes on.
    api.uninstall(&REWRITES);
    eventually(&epp, "no rewrites after the CRD is gone", || async {
        (epp.routed_model("m").await == "m").then_some(())
    })
    .await;
    routes_to(&epp, &["127.0.0.111:8000"]).await;
    assert_eq!(epp.health("inference-extension").await, 1);
    epp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_objective_and_rewrite_crds_routing_works() {
    let api = FakeApi::start().await;
    api.uninstall(&OBJECTIVES);
    api.uninstall(&REWRITES);
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[8000]));
    api.apply(&PODS, pod("vllm-a", "127.0.0.121"));
    let epp = Epp::pool(&api, "pool").await;
    wait_serving(&epp, true).await;
    routes_to(&epp, &["127.0.0.121:8000"]).await;
    assert_eq!(epp.routed_model("m").await, "m");
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .any(|r| r == "GET /apis/inference.networking.x-k8s.io/v1alpha2"),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.contains("inferenceobjectives") || r.contains("inferencemodelrewrites")),
        "no watch on absent CRDs: {reqs:?}"
    );
    let log = epp.stop().await;
    assert_eq!(
        log.matches("the InferenceObjective CRD is not installed")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("the InferenceModelRewrite CRD is not installed")
            .count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_selector_without_any_crd() {
    let api = FakeApi::start().await;
    api.uninstall(&POOLS);
    api.uninstall(&OBJECTIVES);
    api.uninstall(&REWRITES);
    let gpu: &[(&str, &str)] = &[("app", "vllm"), ("tier", "gpu")];
    api.apply(&PODS, PodSpec::new("vllm-a", "127.0.0.131", gpu).to_json());
    api.apply(&PODS, pod("vllm-b", "127.0.0.132"));
    let epp = Epp::start(
        &api,
        &[
            "--endpoint-selector",
            "app=vllm,tier=gpu",
            "--endpoint-target-ports",
            "8000,8001",
            "--refresh-prometheus-metrics-interval",
            "100ms",
        ],
        &[("NAMESPACE", "ns"), ("POD_NAME", "epp-5d8f9c7b6-x2x9z")],
    )
    .await;
    wait_serving(&epp, true).await;
    routes_to(&epp, &["127.0.0.131:8000", "127.0.0.131:8001"]).await;
    api.apply(&PODS, PodSpec::new("vllm-b", "127.0.0.132", gpu).to_json());
    routes_to(
        &epp,
        &[
            "127.0.0.131:8000",
            "127.0.0.131:8001",
            "127.0.0.132:8000",
            "127.0.0.132:8001",
        ],
    )
    .await;
    // Objectives do not exist in standalone mode: every priority is 0, nothing is shed.
    assert!(
        epp.pick_with(&[("x-gateway-inference-objective", "x")])
            .await
            .is_ok()
    );
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .filter(|r| r.contains("/pods"))
            .all(|r| r.starts_with("GET /api/v1/namespaces/ns/pods")
                && r.contains("labelSelector=app%3Dvllm%2Ctier%3Dgpu")),
        "{reqs:?}"
    );
    assert!(!reqs.iter().any(|r| r.contains("inference")), "{reqs:?}");
    eventually(&epp, "the pool named after the Deployment", || async {
        epp.metrics_text()
            .await
            .contains("inference_pool_ready_pods{name=\"epp\"}")
            .then_some(())
    })
    .await;
    epp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_objects_are_logged_by_name_and_skipped() {
    use serde_json::json;
    let api = FakeApi::start().await;
    api.apply(
        &POOLS,
        json!({"metadata": {"name": "pool", "namespace": "ns"}, "spec": {"selector": "all of them", "targetPorts": "many"}}),
    );
    let mut huge = PodSpec::new("vllm-a", "127.0.0.141", VLLM);
    let big = "x".repeat(1 << 20);
    let annotations = [(
        "kubectl.kubernetes.io/last-applied-configuration",
        big.as_str(),
    )];
    huge.annotations = &annotations;
    api.apply(&PODS, huge.to_json());
    api.apply(
        &OBJECTIVES,
        json!({"metadata": {"name": "no-spec", "namespace": "ns"}}),
    );
    api.apply(
        &OBJECTIVES,
        json!({"metadata": {"name": "absurd", "namespace": "ns"}, "spec": {"poolRef": {"name": "pool"}, "priority": 1e300, "unknown": [1, 2]}}),
    );
    api.apply(
        &OBJECTIVES,
        fakekube::objective("ns", "sheddable", "pool", Some(-1)),
    );
    api.apply(
        &REWRITES,
        json!({"metadata": {"name": "no-rules", "namespace": "ns"}, "spec": {"poolRef": {"name": "pool"}}}),
    );
    api.apply(
        &REWRITES,
        json!({"metadata": {"name": "no-targets", "namespace": "ns"}, "spec": {"poolRef": {"name": "pool"}, "rules": [{"matches": []}]}}),
    );
    api.apply(
        &REWRITES,
        fakekube::rewrite(
            "ns",
            "good",
            "pool",
            "2026-01-01T00:00:00Z",
            &["m"],
            &[("m2", 1)],
        ),
    );
    let epp = Epp::pool(&api, "pool").await;
    // An invalid pool with nothing valid before it: NOT_SERVING, and said why.
    eventually(&epp, "the invalid pool logged", || async {
        epp.log()
            .contains("invalid, no endpoints until it is fixed")
            .then_some(())
    })
    .await;
    assert_eq!(epp.health("inference-extension").await, 2);
    api.apply(&POOLS, fakekube::pool("ns", "pool", VLLM, &[8000]));
    wait_serving(&epp, true).await;
    routes_to(&epp, &["127.0.0.141:8000"]).await;
    eventually(&epp, "the good rewrite applied", || async {
        (epp.routed_model("m").await == "m2").then_some(())
    })
    .await;
    // The valid objective applies next to garbage ones.
    let r = epp
        .pick_with(&[("x-gateway-inference-objective", "sheddable")])
        .await;
    assert!(
        matches!(r, Err((429, _))),
        "unscraped pods count as saturated: {r:?}"
    );
    let log = epp.stop().await;
    for want in [
        "name=pool",
        "spec.selector: must be a map of strings, got a string",
        "name=no-spec",
        "invalid, skipped: spec: missing",
        "name=absurd",
        "spec.priority: must be a 32-bit integer",
        "name=no-rules",
        "spec.rules: must have at least one rule",
        "name=no-targets",
        "spec.rules[0].targets: must name at least one target",
    ] {
        assert!(log.contains(want), "{want:?} not in\n{log}");
    }
    assert_eq!(log.matches("name=absurd").count(), 1, "logged once:\n{log}");
}

#[test]
fn endpoint_sources_are_exclusive_and_kubernetes_needs_a_configuration() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args([
            "--grpc-port",
            "0",
            "--grpc-health-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBECONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(
        &["--pool-name", "p", "--static-endpoints", "127.0.0.1:8000"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "give exactly one of --pool-name, --endpoint-selector, --static-endpoints(-file)"
        ),
        "{err}"
    );
    let (code, err) = run(&["--pool-name", "p", "--endpoint-selector", "app=x"], &[]);
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = run(&["--endpoint-selector", "app=vllm"], &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--endpoint-target-ports: give 1 to 8 ports with --endpoint-selector, got 0"),
        "{err}"
    );
    let (code, err) = run(
        &[
            "--endpoint-selector",
            "app vllm",
            "--endpoint-target-ports",
            "8000",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("--endpoint-selector \"app vllm\""), "{err}");
    let (code, err) = run(&["--pool-name", "Not_A_Name"], &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--pool-name \"Not_A_Name\" is not a valid object name"),
        "{err}"
    );
    let home = temp_dir("home");
    let (code, err) = run(&["--pool-name", "p"], &[("HOME", home.0.to_str().unwrap())]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "error: Kubernetes configuration (in-cluster, or KUBECONFIG / ~/.kube/config)"
        ),
        "{err}"
    );
}
