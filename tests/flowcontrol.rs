//! Flow control on the request path over loopback: requests wait while the pool is saturated,
//! leave by priority, time out (503), overflow (429), leave the queue when the client goes away,
//! and VTC charges tenants from the response's usage.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const GATED: &str = "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: vtc-fairness-policy
  name: vtc
flowControl:
  maxRequests: 2
  defaultRequestTTL: 400ms
  defaultPriorityBand: {fairnessPolicyRef: vtc}
";

fn completion(prompt: &str) -> Vec<u8> {
    format!(r#"{{"model":"m","prompt":"{prompt}","max_tokens":5}}"#).into_bytes()
}

fn headers(tenant: &str, objective: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![
        (":path".to_string(), "/v1/completions".to_string()),
        (":method".to_string(), "POST".to_string()),
        (
            "x-gateway-inference-fairness-id".to_string(),
            tenant.to_string(),
        ),
    ];
    if let Some(o) = objective {
        h.push(("x-gateway-inference-objective".to_string(), o.to_string()));
    }
    h
}

async fn start(config: &str) -> Harness {
    let h = Harness::start(Setup {
        config: Some(config.to_string()),
        ..Default::default()
    })
    .await;
    h.datastore.set_objectives(HashMap::from([
        ("high".to_string(), Some(10)),
        ("low".to_string(), Some(-1)),
    ]));
    h
}

/// Opens a stream and sends one request; the stream is returned to read the outcome.
async fn send(h: &Harness, headers: &[(String, String)], body: &[u8]) -> Stream {
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&refs(headers), false)).await;
    s.send(body_msg(body, true)).await;
    s
}

async fn nothing_within(s: &mut Stream, d: Duration) {
    if let Ok(r) = tokio::time::timeout(d, s.recv()).await {
        panic!("expected no response yet, got {r:?}");
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 2.5 s");
}

#[tokio::test]
async fn a_queued_request_is_routed_when_the_pool_unsaturates() {
    let h = start(GATED).await;
    h.set_pods(&[(10, 0.1), (10, 0.1)]);
    let mut s = send(&h, &headers("acme", None), &completion("hello")).await;
    nothing_within(&mut s, Duration::from_millis(100)).await;
    assert_eq!(h.flow_control.as_ref().unwrap().queued(), 1);
    h.set_pods(&[(0, 0.1), (3, 0.1)]);
    let r = tokio::time::timeout(TIMEOUT, s.recv())
        .await
        .unwrap()
        .unwrap();
    let set = set_headers(&r);
    assert_eq!(
        header(&set, "x-gateway-destination-endpoint"),
        Some(pod(0).as_str())
    );
    let m = h.metrics_text();
    assert!(
        m.contains(r#"inference_extension_flow_control_queue_size{fairness_id="acme",priority="0",inference_pool="pool",model_name="m",target_model_name="m"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"inference_extension_flow_control_request_queue_duration_seconds_count{fairness_id="acme",priority="0",outcome="Dispatched",inference_pool="pool",model_name="m",target_model_name="m"} 1"#),
        "{m}"
    );
    drop(s);
    h.stop().await;
}

#[tokio::test]
async fn an_unsaturated_pool_routes_without_waiting() {
    let h = start(GATED).await;
    h.set_pods(&[(0, 0.1)]);
    let mut s = send(&h, &headers("acme", None), &completion("hi")).await;
    let r = tokio::time::timeout(Duration::from_secs(1), s.recv())
        .await
        .expect("routed at once")
        .unwrap();
    assert_eq!(
        header(&set_headers(&r), "x-gateway-destination-endpoint"),
        Some(pod(0).as_str())
    );
    drop(s);
    h.stop().await;
}

#[tokio::test]
async fn waiting_past_the_ttl_is_503() {
    let h = start(GATED).await;
    h.set_pods(&[(10, 0.1)]);
    let started = std::time::Instant::now();
    let mut s = send(&h, &headers("acme", None), &completion("hello")).await;
    let r = tokio::time::timeout(TIMEOUT, s.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let (status, body) = immediate(&r);
    assert_eq!(status, 503);
    assert!(
        body.starts_with(
            "inference error: ServiceUnavailable - request timed out in queue: waited "
        ) && body.ends_with(" ms, past its time to live"),
        "{body}"
    );
    let m = h.metrics_text();
    assert!(m.contains(r#"inference_objective_request_error_total{model_name="m",target_model_name="m",error_code="ServiceUnavailable"} 1"#), "{m}");
    assert!(m.contains(r#"outcome="EvictedTTL""#), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_429() {
    let h = start(GATED).await;
    h.set_pods(&[(10, 0.1)]);
    let mut a = send(&h, &headers("acme", None), &completion("a")).await;
    let mut b = send(&h, &headers("acme", None), &completion("b")).await;
    let fc = h.flow_control.clone().unwrap();
    wait_until(|| fc.queued() == 2).await;
    let mut c = send(&h, &headers("acme", None), &completion("c")).await;
    let r = tokio::time::timeout(TIMEOUT, c.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        immediate(&r),
        (
            429,
            "inference error: ResourceExhausted - request rejected by flow control: queue at capacity (maxRequests 2 reached)".to_string()
        )
    );
    nothing_within(&mut a, Duration::from_millis(20)).await;
    nothing_within(&mut b, Duration::from_millis(1)).await;
    drop((a, b, c));
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_the_queue() {
    let h = start(GATED).await;
    h.set_pods(&[(10, 0.1)]);
    let fc = h.flow_control.clone().unwrap();
    let s = send(&h, &headers("acme", None), &completion("bye")).await;
    wait_until(|| fc.queued() == 1).await;
    drop(s);
    wait_until(|| fc.queued() == 0).await;
    wait_until(|| {
        h.metrics_text()
            .contains(r#"outcome="EvictedContextCancelled""#)
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn the_higher_priority_band_leaves_first() {
    let h = start(GATED).await;
    h.set_pods(&[(10, 0.1)]);
    let fc = h.flow_control.clone().unwrap();
    let mut low = send(&h, &headers("acme", Some("low")), &completion("low")).await;
    wait_until(|| fc.queued() == 1).await;
    let mut high = send(&h, &headers("acme", Some("high")), &completion("high")).await;
    wait_until(|| fc.queued() == 2).await;
    // Saturation 0.9 (KV 0.72 of 0.8): room for exactly one release before the next scrape.
    h.set_pods(&[(0, 0.72)]);
    let r = tokio::time::timeout(TIMEOUT, high.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(header(&set_headers(&r), "x-gateway-destination-endpoint").is_some());
    nothing_within(&mut low, Duration::from_millis(50)).await;
    assert_eq!(fc.queued(), 1);
    drop((low, high));
    h.stop().await;
}

#[tokio::test]
async fn vtc_charges_the_tenant_from_the_reported_usage() {
    let h = start(GATED).await;
    h.set_pods(&[(0, 0.1)]);
    let mut s = send(&h, &headers("acme", None), &completion("0123456789abcdef")).await;
    let _ = s.recv_n(2).await; // headers and body
    s.send(response_headers_msg(
        &[(":status", "200"), ("content-type", "application/json")],
        false,
    ))
    .await;
    s.send(response_body_msg(
        br#"{"choices":[{"text":"ok"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
        true,
    ))
    .await;
    let _ = s.recv_n(2).await;
    // 10 input tokens + 2 × 5 output tokens.
    wait_until(|| {
        h.metrics_text().contains(
            r#"switchyard_flow_control_tenant_virtual_counter{fairness_id="acme",priority="0"} 20.0"#,
        )
    })
    .await;
    let m = h.metrics_text();
    assert!(
        m.contains(r#"switchyard_flow_control_tenant_service_tokens_total{fairness_id="acme",priority="0"} 20.0"#),
        "{m}"
    );
    drop(s);
    h.stop().await;
}

#[tokio::test]
async fn shutdown_answers_queued_requests_with_503() {
    let h = start(GATED).await;
    h.set_pods(&[(10, 0.1)]);
    let fc = h.flow_control.clone().unwrap();
    let mut s = send(&h, &headers("acme", None), &completion("wait")).await;
    wait_until(|| fc.queued() == 1).await;
    let _ = h.fc_stop.send(true);
    let r = tokio::time::timeout(TIMEOUT, s.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        immediate(&r),
        (
            503,
            "inference error: ServiceUnavailable - request evicted from the queue: the endpoint picker is shutting down".to_string()
        )
    );
    h.stop().await;
}

#[tokio::test]
async fn the_concurrency_detector_sheds_by_requests_in_flight() {
    let h = start(
        "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: concurrency-detector
  parameters: {maxConcurrency: 1}
saturationDetector: {pluginRef: concurrency-detector}
",
    )
    .await;
    h.set_pods(&[(0, 0.1)]);
    // One request in flight fills the pod's capacity of 1.
    let mut first = send(&h, &headers("acme", None), &completion("one")).await;
    let _ = first.recv_n(2).await;
    let mut shed = send(&h, &headers("acme", Some("low")), &completion("two")).await;
    let r = tokio::time::timeout(TIMEOUT, shed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        immediate(&r),
        (
            429,
            "inference error: ResourceExhausted - system saturated, sheddable request dropped"
                .to_string()
        )
    );
    // Priority ≥ 0 is never shed.
    let mut kept = send(&h, &headers("acme", None), &completion("three")).await;
    let r = tokio::time::timeout(TIMEOUT, kept.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(header(&set_headers(&r), "x-gateway-destination-endpoint").is_some());
    let _ = kept.recv().await;
    // Both finish: capacity is free again and the sheddable request passes.
    for s in [&mut first, &mut kept] {
        s.send(response_headers_msg(&[(":status", "200")], false))
            .await;
        s.send(response_body_msg(
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            true,
        ))
        .await;
        let _ = s.recv_n(2).await;
    }
    let mut again = send(&h, &headers("acme", Some("low")), &completion("four")).await;
    let r = tokio::time::timeout(TIMEOUT, again.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        header(&set_headers(&r), "x-gateway-destination-endpoint").is_some(),
        "{r:?}"
    );
    drop((first, shed, kept, again));
    h.stop().await;
}

#[tokio::test]
async fn priority_bands_and_the_usage_limit_from_the_config() {
    let h = start(
        "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: round-robin-fairness-policy
- type: static-usage-limit-policy
  name: half
  parameters: {threshold: 0.5}
flowControl:
  priorityBands:
  - {priority: 10, maxRequests: 1, fairnessPolicyRef: round-robin-fairness-policy}
  usageLimitPolicyPluginRef: half
",
    )
    .await;
    // Queue 2 of 5: saturation 0.4, under the 0.5 ceiling.
    h.set_pods(&[(2, 0.1)]);
    let mut s = send(&h, &headers("acme", Some("high")), &completion("a")).await;
    let r = tokio::time::timeout(TIMEOUT, s.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(header(&set_headers(&r), "x-gateway-destination-endpoint").is_some());
    // Queue 3 of 5: 0.6, over the ceiling although under 1.0: requests wait.
    h.set_pods(&[(3, 0.1)]);
    let fc = h.flow_control.clone().unwrap();
    let mut held = send(&h, &headers("acme", Some("high")), &completion("b")).await;
    wait_until(|| fc.queued() == 1).await;
    // The band holds one request at most.
    let mut over = send(&h, &headers("other", Some("high")), &completion("c")).await;
    let r = tokio::time::timeout(TIMEOUT, over.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        immediate(&r),
        (
            429,
            "inference error: ResourceExhausted - request rejected by flow control: queue at capacity (priority band 10 maxRequests 1 reached)".to_string()
        )
    );
    // Another priority gets a band of its own from the default template.
    let _other = send(&h, &headers("acme", None), &completion("d")).await;
    wait_until(|| fc.queued() == 2).await;
    h.set_pods(&[(0, 0.1)]);
    let r = tokio::time::timeout(TIMEOUT, held.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(header(&set_headers(&r), "x-gateway-destination-endpoint").is_some());
    drop((s, held, over, _other));
    h.stop().await;
}

#[tokio::test]
async fn vtc_charges_streamed_usage_as_it_arrives_and_only_uncached_input() {
    let h = start(
        "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: vtc-fairness-policy
  name: vtc
  parameters: {chargeUncachedInputOnly: true}
flowControl:
  defaultPriorityBand: {fairnessPolicyRef: vtc}
",
    )
    .await;
    h.set_pods(&[(0, 0.1)]);
    let counter = |h: &Harness| {
        let m = h.metrics_text();
        m.lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"switchyard_flow_control_tenant_virtual_counter{fairness_id="acme",priority="0"} "#,
                )
                .map(|v| v.parse::<f64>().unwrap())
            })
            .unwrap_or(f64::NAN)
    };
    let mut s = send(&h, &headers("acme", None), &completion("0123456789abcdef")).await;
    let _ = s.recv_n(2).await;
    s.send(response_headers_msg(
        &[(":status", "200"), ("content-type", "text/event-stream")],
        false,
    ))
    .await;
    // Continuous usage: 100 prompt tokens of which 80 cached, 1 token so far.
    s.send(response_body_msg(
        b"data: {\"choices\":[{\"text\":\"a\"}],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":80}}}\n\n",
        false,
    ))
    .await;
    let _ = s.recv().await;
    wait_until(|| counter(&h) == 20.0 + 2.0).await;
    s.send(response_body_msg(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":80}}}\n\ndata: [DONE]\n\n",
        true,
    ))
    .await;
    let _ = s.recv().await;
    wait_until(|| counter(&h) == 20.0 + 10.0).await;
    drop(s);
    h.stop().await;
}
