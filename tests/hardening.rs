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
