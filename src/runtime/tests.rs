use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::*;
use crate::clock::Clock;
use crate::config::{default_config, load_str};
use crate::datalayer::ExtractorParams;
use crate::discovery::Sink;
use crate::flowcontrol::VtcParams;
use crate::scheduling::Endpoint;

const HEADER: &str =
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n";

fn cfg(body: &str) -> EndpointPickerConfig {
    load_str(&format!("{HEADER}{body}")).expect("valid config")
}

fn source(text: &str) -> ConfigSource {
    ConfigSource::new(ConfigOrigin::Text, text.as_bytes())
}

fn build(c: EndpointPickerConfig) -> Runtime {
    Runtime::build(c, source(""), &Flags::default()).expect("builds")
}

#[test]
fn collector_settings_from_the_data_layer_section_and_flags() {
    let c = collector_config(&default_config(), &Flags::default()).unwrap();
    assert_eq!(c.source, MetricsSourceParams::default());
    assert_eq!(c.extractor, ExtractorParams::default());
    assert_eq!(c.pool_name, "switchyard");
    let with_source = cfg("plugins:
- name: src
  type: metrics-data-source
  parameters: {scheme: https, path: /prometheus/metrics}
- name: ex
  type: core-metrics-extractor
  parameters: {defaultEngine: sglang}
dataLayer:
  sources:
  - pluginRef: src
    extractors: [{pluginRef: ex}]
");
    let flags = Flags {
        model_server_metrics_scheme: Some("http".into()),
        model_server_metrics_path: Some("/other".into()),
        model_server_metrics_port: Some(9400),
        ..Flags::default()
    };
    let c = collector_config(&with_source, &flags).unwrap();
    // The config's parameters win over the deprecated flags; the port flag applies.
    assert_eq!(c.source.scheme, "https");
    assert_eq!(c.source.path, "/prometheus/metrics");
    assert_eq!(c.extractor.default_engine, "sglang");
    assert_eq!(c.metrics_port, Some(9400));
    // With the parameters left at their defaults, the flags apply.
    let c = collector_config(&default_config(), &flags).unwrap();
    assert_eq!(c.source.path, "/other");
    let off = cfg("plugins: [queue-scorer]\ndataLayer: {sources: []}\n");
    assert!(collector_config(&off, &Flags::default()).is_none());
}

#[test]
fn flow_control_config_maps_bands_policies_and_ceiling() {
    let c = flow_control_config(&cfg("featureGates: [flowControl]
plugins:
- {type: vtc-fairness-policy, name: vtc, parameters: {tenantWeights: {gold: 2}}}
- {type: edf-ordering-policy}
- {type: round-robin-fairness-policy}
- {type: static-usage-limit-policy, name: limit, parameters: {threshold: 0.8}}
flowControl:
  maxRequests: 100
  defaultRequestTTL: 30s
  defaultPriorityBand: {fairnessPolicyRef: vtc}
  priorityBands:
  - {priority: 10, maxRequests: 5, orderingPolicyRef: edf-ordering-policy, fairnessPolicyRef: round-robin-fairness-policy}
  usageLimitPolicyPluginRef: limit
"))
    .unwrap();
    assert_eq!(c.max_requests, 100);
    assert_eq!(c.default_ttl, Some(Duration::from_secs(30)));
    assert_eq!(c.ceiling, 0.8);
    let Fairness::Vtc(VtcParams { tenant_weights, .. }) = &c.default_band.fairness else {
        panic!("default band runs VTC: {:?}", c.default_band)
    };
    assert_eq!(tenant_weights.get("gold"), Some(&2.0));
    assert_eq!(c.default_band.ordering, Ordering::Fcfs);
    let b = &c.bands[&10];
    assert_eq!(
        (b.max_requests, b.ordering, &b.fairness),
        (5, Ordering::Edf, &Fairness::RoundRobin)
    );
    assert!(flow_control_config(&cfg("plugins: []\n")).is_none());
}

#[test]
fn bad_flags_are_refused_with_their_names() {
    let flags = Flags {
        refresh_metrics_interval: Duration::ZERO,
        max_request_body_bytes: 0,
        ..Flags::default()
    };
    let e = Runtime::build(default_config(), source(""), &flags).unwrap_err();
    assert_eq!(
        e.messages(),
        vec![
            "--max-request-body-bytes: must be > 0",
            "--refresh-metrics-interval: must be at least 1ms, got 0ns",
        ]
    );
}

#[test]
fn the_runtime_holds_what_the_config_decides() {
    let rt = build(cfg("featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: passthrough-parser
- type: destination-endpoint-served-verifier
parser: {pluginRef: passthrough-parser}
"));
    assert!(rt.extproc.passthrough);
    assert!(rt.extproc.served_verifier);
    assert!(rt.flow_control_config.is_some());
    assert!(
        rt.flow_control.is_none(),
        "the flow controller is attached by Live"
    );
    assert_eq!(rt.flow_control_detector.type_name(), "utilization-detector");
    let plain = build(default_config());
    assert!(!plain.extproc.passthrough && plain.flow_control_config.is_none());
}

#[test]
fn a_rebuild_keeps_the_prefix_index_and_in_flight_counts_it_can() {
    let body = |block: u32, weight: u32| {
        format!(
            "plugins:
- type: approx-prefix-cache-producer
  parameters: {{blockSizeTokens: {block}, lruCapacityPerServer: {}}}
- type: prefix-cache-scorer
- type: token-load-scorer
schedulingProfiles:
- name: default
  plugins:
  - {{pluginRef: prefix-cache-scorer, weight: {weight}}}
  - {{pluginRef: token-load-scorer}}
",
            1000 * weight
        )
    };
    let first = build(cfg(&body(16, 1)));
    let index = first.plugins.prefix_producers[0].index().clone();
    let inflight = first.plugins.inflight_producers[0].clone();
    // New weights and LRU capacity, same hashing: the index and the counts carry over.
    let second = Runtime::rebuild(cfg(&body(16, 5)), source("2"), &Flags::default(), &first)
        .expect("builds");
    assert!(Arc::ptr_eq(
        second.plugins.prefix_producers[0].index(),
        &index
    ));
    assert!(Arc::ptr_eq(
        &second.plugins.inflight_producers[0],
        &inflight
    ));
    assert_eq!(
        second.scheduler.profiles()[0].scorers[0].weight,
        5.0,
        "the new weights are in force"
    );
    // A new block size hashes differently: a fresh index.
    let third = Runtime::rebuild(cfg(&body(32, 5)), source("3"), &Flags::default(), &second)
        .expect("builds");
    assert!(!Arc::ptr_eq(
        third.plugins.prefix_producers[0].index(),
        &index
    ));
    assert!(Arc::ptr_eq(&third.plugins.inflight_producers[0], &inflight));
}

fn start(text: &str) -> (Arc<Live>, Registry, tokio::sync::watch::Sender<bool>) {
    let mut c = load_str(text).expect("valid");
    c.data_layer = None;
    let sink = Sink::new();
    sink.pool
        .set_endpoints(vec![Endpoint::new("a", "127.0.0.1".parse().unwrap(), 9)]);
    let mut registry = Registry::default();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let live = Live::start(
        c,
        source(text),
        Flags::default(),
        &sink,
        Clock::new(),
        &mut registry,
        rx,
    )
    .expect("starts");
    (live, registry, stop)
}

#[tokio::test]
async fn reloads_swap_valid_configs_and_keep_the_old_one_on_errors() {
    let text = format!("{HEADER}plugins: [queue-scorer]\n");
    let (live, registry, stop) = start(&text);
    let first_hash = live.runtime().source.hash.clone();
    let metrics = || crate::telemetry::encode(&registry);
    assert!(
        metrics().contains(&format!("config_hash=\"{first_hash}\"")),
        "{}",
        metrics()
    );

    let next = format!("{HEADER}plugins: [kv-cache-utilization-scorer]\n");
    live.reload(next.as_bytes(), ConfigOrigin::Text)
        .await
        .expect("valid");
    let rt = live.runtime();
    assert_ne!(rt.source.hash, first_hash);
    assert_eq!(
        rt.scheduler.profiles()[0].scorers[0].scorer.type_name(),
        "kv-cache-utilization-scorer"
    );
    let bad = format!("{HEADER}plugins: [{{type: queue-scorer, parameters: {{x: 1}}}}]\n");
    let e = live
        .reload(bad.as_bytes(), ConfigOrigin::Text)
        .await
        .unwrap_err();
    assert_eq!(
        e.messages(),
        vec!["plugins[0].parameters.x: unknown field (known fields: )"]
    );
    assert_eq!(live.runtime().source.hash, rt.source.hash, "kept");
    let m = metrics();
    assert!(
        m.contains(r#"switchyard_config_reloads_total{result="success"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"switchyard_config_reloads_total{result="failure"} 1"#),
        "{m}"
    );
    assert!(m.contains(&format!("config_hash=\"{}\"", rt.source.hash)));
    let _ = stop.send(true);
}

#[tokio::test]
async fn flow_control_survives_reloads_that_keep_it_and_starts_when_turned_on() {
    let plain = format!("{HEADER}plugins: [queue-scorer]\n");
    let (live, _registry, stop) = start(&plain);
    assert!(live.flow_control().is_none());
    let gated = format!("{HEADER}featureGates: [flowControl]\nplugins: [queue-scorer]\n");
    live.reload(gated.as_bytes(), ConfigOrigin::Text)
        .await
        .unwrap();
    let fc = live.flow_control().expect("started");
    assert!(Arc::ptr_eq(
        live.runtime().flow_control.as_ref().unwrap(),
        &fc
    ));
    // Off again: the same controller stays for requests in flight, without a queue.
    live.reload(plain.as_bytes(), ConfigOrigin::Text)
        .await
        .unwrap();
    assert!(live.runtime().flow_control.is_none());
    assert!(!fc.queues());
    live.reload(gated.as_bytes(), ConfigOrigin::Text)
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&live.flow_control().unwrap(), &fc));
    assert!(fc.queues());
    let _ = stop.send(true);
}
