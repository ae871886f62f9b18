//! The binary's `/metrics` against the list of GIE's metric names, types and label names
//! (gie-epp.md §6.1), in both exposition formats chosen by `Accept`, with the `process_*`
//! family and per-plugin durations.

mod common;

use common::process::*;

/// GIE v1.5's metrics the request path, scheduler, pool and prefix index export without a
/// latency predictor, that have series once one request was routed: (sample name, type, label
/// names). The families of responses, errors and flow control have series only once those happen;
/// their names are checked where they are recorded (tests/extproc.rs, tests/flowcontrol.rs).
const GIE: &[(&str, &str, &[&str])] = &[
    (
        "inference_objective_request_total",
        "counter",
        &["model_name", "target_model_name", "priority"],
    ),
    (
        "inference_objective_request_sizes",
        "histogram",
        &["model_name", "target_model_name"],
    ),
    (
        "inference_objective_running_requests",
        "gauge",
        &["model_name"],
    ),
    (
        "inference_pool_average_kv_cache_utilization",
        "gauge",
        &["name"],
    ),
    ("inference_pool_average_queue_size", "gauge", &["name"]),
    (
        "inference_pool_average_running_requests",
        "gauge",
        &["name"],
    ),
    ("inference_pool_ready_pods", "gauge", &["name"]),
    (
        "inference_extension_info",
        "gauge",
        &["commit", "build_ref"],
    ),
    (
        "inference_extension_scheduler_e2e_duration_seconds",
        "histogram",
        &[],
    ),
    (
        "inference_extension_scheduler_attempts_total",
        "counter",
        &[
            "status",
            "target_model_name",
            "pod_name",
            "namespace",
            "port",
        ],
    ),
    (
        "inference_extension_plugin_duration_seconds",
        "histogram",
        &["extension_point", "plugin_type", "plugin_name"],
    ),
    ("inference_extension_prefix_indexer_size", "gauge", &[]),
    (
        "inference_extension_prefix_indexer_hit_ratio",
        "histogram",
        &[],
    ),
    (
        "inference_extension_prefix_indexer_hit_bytes",
        "histogram",
        &[],
    ),
];

/// The `process_*` family a Go or Python client exports.
const PROCESS: &[(&str, &str)] = &[
    ("process_cpu_seconds", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
];

async fn scrape(p: &Proc, accept: Option<&str>) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(p.metrics).await.unwrap();
    let accept = accept
        .map(|a| format!("accept: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET /metrics HTTP/1.1\r\nhost: x\r\n{accept}connection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap();
    (ct, body.to_string())
}

#[tokio::test]
async fn names_types_and_labels_match_gie_in_both_formats() {
    let pod = metrics_server("127.0.0.1", vllm_page(1, 0.2)).await;
    let sy = Proc::start(&[
        "--secure-serving=false",
        "--static-endpoints",
        &pod.to_string(),
    ]);
    // One request, so the per-request families have series with their labels.
    let picked = pick(sy.grpc).await;
    assert_eq!(picked, pod.to_string());

    let (ct, om) = scrape(
        &sy,
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    )
    .await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"));
    let (ct, text) = scrape(&sy, Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")).await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"));
    // No Accept header: the Prometheus text format, as the Go client answers.
    assert_eq!(scrape(&sy, None).await.0, ct);

    let mut missing = Vec::new();
    for (name, kind, labels) in GIE {
        // OpenMetrics names a counter family without its samples' `_total`; text 0.0.4 with it.
        let family = match *kind {
            "counter" => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        if !om.contains(&format!("# TYPE {family} {kind}\n")) {
            missing.push(format!("OpenMetrics: # TYPE {family} {kind}"));
        }
        let text_name = match *kind {
            "counter" => format!("{family}_total"),
            _ => name.to_string(),
        };
        if !text.contains(&format!("# TYPE {text_name} {kind}\n")) {
            missing.push(format!("text 0.0.4: # TYPE {text_name} {kind}"));
        }
        // Where a series exists, its label names are GIE's.
        let sample = om
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', '_', ' ']));
        if let Some(line) = sample.filter(|_| !labels.is_empty())
            && let Some(set) = line
                .split_once('{')
                .map(|(_, r)| r.split('}').next().unwrap())
        {
            let got: Vec<&str> = set
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .filter(|k| *k != "le")
                .collect();
            for l in *labels {
                if !got.contains(l) {
                    missing.push(format!("{name}: label {l} (got {got:?})"));
                }
            }
        }
    }
    for (name, kind) in PROCESS {
        if !om.contains(&format!("# TYPE {name} {kind}\n")) {
            missing.push(format!("# TYPE {name} {kind}"));
        }
    }
    assert!(
        missing.is_empty(),
        "missing:\n{}\n\n{om}",
        missing.join("\n")
    );

    // Each plugin of the default profile is timed at its extension point (the profile picker
    // runs twice per request: its second call ends the cycle, as in GIE).
    for (point, ty) in [
        ("Scorer", "queue-scorer"),
        ("Scorer", "kv-cache-utilization-scorer"),
        ("Scorer", "prefix-cache-scorer"),
        ("Picker", "max-score-picker"),
        ("ProfilePicker", "single-profile-handler"),
        ("ProcessProfilesResults", "single-profile-handler"),
        ("PreRequest", "approx-prefix-cache-producer"),
    ] {
        let series = format!(
            "inference_extension_plugin_duration_seconds_count{{extension_point=\"{point}\",plugin_type=\"{ty}\",plugin_name=\"{ty}\"}} "
        );
        assert!(om.contains(&series), "{series}\n{om}");
    }
    assert!(
        om.contains("inference_extension_scheduler_attempts_total{status=\"success\""),
        "{om}"
    );
}
