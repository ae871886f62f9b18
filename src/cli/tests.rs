use super::*;
use proptest::prelude::*;

fn ok(args: &[&str]) -> Parsed {
    let mut v = vec!["switchyard"];
    v.extend_from_slice(args);
    parse(v).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn err(args: &[&str]) -> String {
    let mut v = vec!["switchyard"];
    v.extend_from_slice(args);
    match parse(v) {
        Ok(p) => panic!("{args:?} parsed: {:?}", p.cli),
        Err(e) => e.to_string(),
    }
}

#[test]
fn go_style_spellings_are_normalised() {
    let p = ok(&[
        "-poolName",
        "p",
        "--pool-namespace=ns",
        "-v",
        "4",
        "-grpc-port=9100",
        "--zap-encoder",
        "json",
        "--secure-serving=false",
        "--refresh_metrics_interval",
        "100ms",
    ]);
    let cli = p.cli;
    assert_eq!(cli.pool_name, "p");
    assert_eq!(cli.pool_namespace, "ns");
    assert_eq!(cli.verbosity, 4);
    assert_eq!(cli.grpc_port, 9100);
    assert_eq!(cli.zap_encoder, "json");
    assert!(!cli.secure_serving);
    assert_eq!(cli.refresh_metrics_interval, Duration::from_millis(100));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(ok(&["--v=3"]).cli.verbosity, 3);
}

#[test]
fn defaults_match_gie() {
    let cli = ok(&[]).cli;
    assert_eq!(
        (cli.grpc_port, cli.grpc_health_port, cli.metrics_port),
        (9002, 9003, 9090)
    );
    assert!(cli.secure_serving);
    assert!(cli.tracing);
    assert!(cli.enable_pprof);
    assert!(cli.metrics_endpoint_auth);
    assert!(!cli.allow_experimental_plugins);
    assert_eq!(cli.refresh_metrics_interval, Duration::from_millis(50));
    assert_eq!(
        cli.refresh_prometheus_metrics_interval,
        Duration::from_secs(5)
    );
    assert_eq!(cli.metrics_staleness_threshold, Duration::from_secs(2));
    assert_eq!(cli.max_request_body_bytes, 64 << 20);
    assert_eq!(cli.pool_group, "inference.networking.k8s.io");
    assert_eq!(cli.verbosity, 2);
    assert_eq!(cli.log_verbosity(), 2);
    assert_eq!(cli.grpc_max_recv_msg_size, None);
    assert_eq!(cli.admin_port, AdminPort(Some(9004)));
    assert!(cli.admin_bind_address.is_loopback());
    assert!(!cli.emit_endpoint_scores);
    assert_eq!(ok(&["--admin-port", "off"]).cli.admin_port, AdminPort(None));
    let e = err(&["--admin-port", "no"]);
    assert!(e.contains("expected a port number or \"off\""), "{e}");
}

#[test]
fn typos_are_errors_with_a_hint() {
    assert_eq!(
        err(&["--grpc-prot", "9002"]),
        "error: unknown flag: --grpc-prot (did you mean --grpc-port?)"
    );
    assert_eq!(
        err(&["-poolNme=x"]),
        "error: unknown flag: -poolNme=x (did you mean --pool-name?)"
    );
    // Every unknown flag is reported, not only the first.
    assert_eq!(
        err(&["--nonsense-flag", "--secure-servin"]),
        "error: unknown flag: --nonsense-flag\n\
         error: unknown flag: --secure-servin (did you mean --secure-serving?)"
    );
    let e = parse(["switchyard", "--grpc-prot"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn stray_values_are_errors() {
    // A bare word clap cannot attach to a flag.
    let e = err(&["--print-config", "yes"]);
    assert!(e.contains("unexpected argument 'yes'"), "{e}");
}

#[test]
fn deprecated_flags_are_accepted_with_a_warning_naming_them() {
    let p = ok(&[
        "--total-queued-requests-metric",
        "sglang:num_queue_reqs",
        "--kv-cache-usage-percentage-metric=sglang:token_usage",
        "--lora-info-metric",
        "",
        "--model-server-metrics-scheme",
        "https",
        "--model-server-metrics-https-insecure-skip-verify",
        "--zap-devel=true",
        "--zap-time-encoding",
        "iso8601",
        "--enable-grpc-stream-metrics",
    ]);
    assert_eq!(
        p.warnings,
        vec![
            "--total-queued-requests-metric is deprecated and ignored; configure core-metrics-extractor engineConfigs",
            "--kv-cache-usage-percentage-metric is deprecated and ignored; configure core-metrics-extractor engineConfigs",
            "--lora-info-metric is deprecated and ignored; configure core-metrics-extractor engineConfigs",
            "--model-server-metrics-scheme is deprecated; set the metrics-data-source parameter scheme",
            "--model-server-metrics-https-insecure-skip-verify is deprecated; set the metrics-data-source parameter insecureSkipVerify",
            "--zap-devel is ignored: Switchyard's log format is chosen by --zap-encoder",
            "--zap-time-encoding is ignored: Switchyard logs RFC 3339 times",
            "--enable-grpc-stream-metrics is not implemented in Switchyard; ignored",
        ]
    );
    assert_eq!(p.cli.model_server_metrics_scheme.as_deref(), Some("https"));
    assert_eq!(
        p.cli.model_server_metrics_https_insecure_skip_verify,
        Some(true)
    );
    // Every entry of the list is a real flag.
    let cmd = Cli::command();
    for (flag, _) in DEPRECATED_FLAGS {
        assert!(
            cmd.get_arguments().any(|a| a.get_long() == Some(flag)),
            "{flag}"
        );
    }
}

#[test]
fn values_gie_validates_are_validated() {
    let e = err(&["--model-server-metrics-scheme", "ftp"]);
    assert!(
        e.contains("unexpected \"ftp\" value, it can only be set to 'http' or 'https'"),
        "{e}"
    );
    let e = err(&["--zap-encoder", "xml"]);
    assert!(
        e.contains("must be one of console, json, got \"xml\""),
        "{e}"
    );
    let e = err(&["--zap-log-level", "loud"]);
    assert!(e.contains("invalid log level \"loud\""), "{e}");
    let e = err(&["--zap-stacktrace-level", "warn"]);
    assert!(e.contains("must be one of info, error, panic"), "{e}");
    let e = err(&["--tls-min-version", "TLS1.2"]);
    assert!(e.contains("unknown TLS version \"TLS1.2\""), "{e}");
    let e = err(&["--grpc-max-recv-msg-size", "ten"]);
    assert!(e.contains("--grpc-max-recv-msg-size"), "{e}");
    let e = err(&["--grpc-port", "70000"]);
    assert!(e.contains("70000"), "{e}");
    let e = err(&["--secure-serving", "maybe"]);
    assert!(e.contains("maybe"), "{e}");
}

#[test]
fn zap_log_level_overrides_v() {
    assert_eq!(ok(&["--zap-log-level", "debug"]).cli.log_verbosity(), 4);
    assert_eq!(
        ok(&["--zap-log-level=error", "-v", "5"])
            .cli
            .log_verbosity(),
        0
    );
    assert_eq!(ok(&["--zap-log-level", "3"]).cli.log_verbosity(), 3);
}

#[test]
fn message_sizes_take_quantities_with_an_optional_b() {
    let cli = ok(&[
        "--grpc-max-recv-msg-size",
        "10MiB",
        "--grpc-max-send-msg-size=25MB",
    ])
    .cli;
    assert_eq!(cli.grpc_max_recv_msg_size, Some(10 << 20));
    assert_eq!(cli.grpc_max_send_msg_size, Some(25_000_000));
    assert_eq!(
        ok(&["--grpc-max-recv-msg-size", "4194304"])
            .cli
            .grpc_max_recv_msg_size,
        Some(4 << 20)
    );
}

#[test]
fn tls_flags_are_checked() {
    let cli = ok(&[
        "--tls-min-version",
        "VersionTLS13",
        "--tls-cipher-suites",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    ])
    .cli;
    assert_eq!(cli.tls_min_version, Some(TlsVersion::Tls13));
    assert_eq!(cli.tls_cipher_suites.len(), 2);
    let e = err(&["--tls-cipher-suites", "TLS_RSA_WITH_RC4_128_SHA,TLS_NOPE"]);
    assert!(
        e.contains(
            "--tls-cipher-suites: \"TLS_RSA_WITH_RC4_128_SHA\", \"TLS_NOPE\" are not supported"
        ),
        "{e}"
    );
    let e = err(&["--secure-serving=false", "--tls-min-version=VersionTLS12"]);
    assert!(
        e.contains("cannot be used with --secure-serving=false"),
        "{e}"
    );
}

#[test]
fn metrics_tls_flags_are_checked_together() {
    let e = err(&["--metrics-client-ca-file", "/nonexistent/ca.pem"]);
    assert!(
        e.contains("--metrics-client-ca-file requires --metrics-cert-dir"),
        "{e}"
    );
    assert!(
        e.contains("--metrics-client-ca-file: /nonexistent/ca.pem: "),
        "{e}"
    );
    let e = err(&[
        "--metrics-cert-dir",
        "/nonexistent",
        "--metrics-endpoint-auth=false",
    ]);
    assert!(
        e.contains("--metrics-cert-dir enables metrics TLS without authentication"),
        "{e}"
    );
    assert!(e.contains("/nonexistent/tls.crt"), "{e}");
}

#[test]
fn bad_values_are_all_reported_at_once() {
    let e = err(&[
        "--refresh-metrics-interval",
        "0s",
        "--config-reload-interval=1ns",
    ]);
    assert_eq!(
        e,
        "invalid flags:\n  - --refresh-metrics-interval: must be at least 1ms, got 0ns\n  - \
         --config-reload-interval: must be at least 1ms, got 1ns"
    );
}

#[test]
fn help_and_version_are_not_failures() {
    let e = parse(["switchyard", "--help"]).unwrap_err();
    assert_eq!(e.exit_code(), 0);
    assert!(e.to_string().contains("--allow-experimental-plugins"));
    // Hidden deprecated flags stay out of the help.
    assert!(!e.to_string().contains("--lora-info-metric"));
    assert_eq!(
        parse(["switchyard", "--version"]).unwrap_err().exit_code(),
        0
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any argument list gets an answer, never a panic.
    #[test]
    fn parsing_never_panics(args in proptest::collection::vec(
        prop_oneof![
            "[-a-zA-Z_=0-9.,:/]{0,24}",
            Just("--grpc-port".to_string()),
            Just("-poolName".to_string()),
            Just("--".to_string()),
            Just("-".to_string()),
            Just("--tls-cipher-suites".to_string()),
            Just("--zap-log-level".to_string()),
            Just("--secure-serving".to_string()),
            "\\PC{0,12}",
        ],
        0..8,
    )) {
        let mut v = vec!["switchyard".to_string()];
        v.extend(args);
        let _ = parse(v);
    }
}
