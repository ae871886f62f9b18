//! The `switchyard` binary's configuration handling, run as a user would.

use std::process::Command;

fn switchyard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn print_config_shows_the_default_with_defaults_filled_in() {
    let (code, out, err) = switchyard(&["--print-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kind: EndpointPickerConfig"));
    assert!(
        out.contains("pluginRef: prefix-cache-scorer\n    weight: 3.0"),
        "{out}"
    );
    assert!(out.contains("type: max-score-picker"));
    assert!(out.contains("maxNumOfEndpoints: 1"));
    assert!(out.contains("type: approx-prefix-cache-producer"));
}

#[test]
fn config_file_errors_are_all_reported_and_exit_non_zero() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: approx-prefix-cache-producer
  parameters: {blockSizeTokens: 0}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: nope}]
",
    )
    .unwrap();
    let (code, _, err) = switchyard(&["--config-file", path.to_str().unwrap(), "--print-config"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid EndpointPickerConfig (2 errors):\n  - plugins[0].parameters.blockSizeTokens: must be > 0, got 0\n  - schedulingProfiles[0].plugins[0].pluginRef: no plugin named \"nope\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn no_endpoint_source_is_a_clear_error() {
    let (code, _, err) = switchyard(&["--secure-serving=false"]);
    assert_eq!(code, 1);
    assert!(
        err.ends_with("error: no endpoints: give --pool-name (Kubernetes), --endpoint-selector (Kubernetes, standalone), --static-endpoints ip:port,... or --static-endpoints-file FILE\n"),
        "{err}"
    );
    let (code, _, err) = switchyard(&["--static-endpoints", "localhost:80"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--static-endpoints: \"localhost:80\" is not an ip:port address"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let (code, _, err) = switchyard(&["--config-file", "/nonexistent/epp.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: reading --config-file /nonexistent/epp.yaml: "),
        "{err}"
    );
}

#[test]
fn config_file_and_text_are_mutually_exclusive() {
    let (code, _, err) = switchyard(&["--config-file", "a.yaml", "--config-text", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn warnings_go_to_stderr() {
    let (code, _, err) = switchyard(&[
        "--config-text",
        "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins: []\ndataLayer: {sources: []}\n",
        "--print-config",
    ]);
    assert_eq!(code, 0);
    assert!(
        err.contains("WARN switchyard: config: dataLayer.sources is empty: endpoint metrics collection is disabled"),
        "{err}"
    );
}

#[test]
fn zero_and_tiny_periods_are_refused_at_startup() {
    for (flag, value) in [
        ("--refresh-metrics-interval", "0s"),
        ("--refresh-prometheus-metrics-interval", "0s"),
        ("--static-endpoints-reload-interval", "0s"),
        ("--config-reload-interval", "1ns"),
        ("--metrics-staleness-threshold", "500us"),
        ("--cert-reload-interval", "0s"),
        ("--fairness-idle-timeout", "0s"),
    ] {
        let (code, _, err) = switchyard(&["--static-endpoints", "127.0.0.1:8000", flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("{flag}: must be at least 1ms")),
            "{flag} {value}: {err}"
        );
    }
    let (code, _, err) = switchyard(&[
        "--static-endpoints",
        "127.0.0.1:8000",
        "--refresh-metrics-interval",
        "0s",
        "--config-reload-interval",
        "0s",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid flags:\n  - --refresh-metrics-interval: must be at least 1ms, got 0ns\n  - --config-reload-interval: must be at least 1ms, got 0ns"),
        "every bad flag at once: {err}"
    );
}

#[test]
fn print_config_survives_a_closed_stdout() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--print-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "no panic on a closed pipe");
}

#[test]
fn unknown_flags_stop_the_process_with_a_hint() {
    let (code, out, err) = switchyard(&[
        "--static-endpoints",
        "127.0.0.1:8000",
        "--grpc-prot",
        "9100",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: unknown flag: --grpc-prot (did you mean --grpc-port?)\n"
    );
}

#[test]
fn deprecated_chart_flags_start_with_warnings() {
    // The GIE v1.5 chart passes these for sglang pools.
    let (code, out, err) = switchyard(&[
        "--total-queued-requests-metric",
        "sglang:num_queue_reqs",
        "-kvCacheUsagePercentageMetric=sglang:token_usage",
        "--zap-time-encoding=iso8601",
        "--print-config",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kind: EndpointPickerConfig"));
    for flag in [
        "--total-queued-requests-metric is deprecated and ignored",
        "--kv-cache-usage-percentage-metric is deprecated and ignored",
        "--zap-time-encoding is ignored",
    ] {
        assert!(
            err.contains(&format!("WARN switchyard: {flag}")),
            "{flag}: {err}"
        );
    }
}

#[test]
fn values_gie_refuses_are_refused() {
    let (code, _, err) = switchyard(&["--model-server-metrics-scheme", "ftp", "--print-config"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unexpected \"ftp\" value, it can only be set to 'http' or 'https'"),
        "{err}"
    );
}

#[test]
fn validate_checks_a_whole_setup_without_starting_it() {
    let dir = std::env::temp_dir().join(format!("switchyard-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("endpoints.yaml");
    std::fs::write(
        &good,
        "endpoints:\n- {name: a, address: 127.0.0.1, port: 8000}\nobjectives:\n- {name: batch, priority: -1}\n",
    )
    .unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vtc.yaml");
    let (code, out, err) = switchyard(&[
        "validate",
        "--static-endpoints-file",
        good.to_str().unwrap(),
        "--config-file",
        config,
        "--secure-serving=false",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("scorer prefix-cache-scorer weight 3"), "{out}");
    assert!(out.contains("flow control: on"), "{out}");
    assert!(out.contains("endpoints: 1\n  a 127.0.0.1:8000"), "{out}");
    assert!(out.contains("objectives: 1"), "{out}");
    assert!(out.ends_with("valid\n"), "{out}");

    // Every problem at once, and a non-zero status: nothing starts either way.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "endpoints:\n- {address: nope, port: 1}\n").unwrap();
    let (code, _, err) = switchyard(&[
        "validate",
        "--static-endpoints-file",
        bad.to_str().unwrap(),
        "--config-text",
        "apiVersion: x\nkind: EndpointPickerConfig\nplugins: []\n",
        "--config-reload-interval",
        "0s",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--config-reload-interval: must be at least 1ms"),
        "{err}"
    );
    assert!(err.contains("apiVersion: must be one of"), "{err}");
    assert!(
        err.contains("endpoints[0].address: must be an IP address"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
