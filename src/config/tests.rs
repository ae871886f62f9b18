//! Loading, defaults and every error message of `EndpointPickerConfig`.

use std::time::Duration;

use super::*;
use crate::datalayer::MetricsSourceParams;
use crate::prefix::producer::PrefixProducerParams;
use crate::runtime::build_scheduler;
use crate::scheduling::plugins::MaxScorePicker;

const HEADER: &str =
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n";

fn load(body: &str) -> Result<EndpointPickerConfig, ConfigErrors> {
    load_str(&format!("{HEADER}{body}"))
}

fn errors(body: &str) -> Vec<String> {
    load(body)
        .expect_err("config should be rejected")
        .messages()
}

fn names(c: &EndpointPickerConfig) -> Vec<&str> {
    c.plugins.iter().map(|p| p.name.as_str()).collect()
}

fn profile_view(c: &EndpointPickerConfig, i: usize) -> (Vec<&str>, Vec<(&str, f64)>, &str) {
    let p = &c.profiles[i];
    (
        p.filters
            .iter()
            .map(|&f| c.plugins[f].name.as_str())
            .collect(),
        p.scorers
            .iter()
            .map(|&(s, w)| (c.plugins[s].name.as_str(), w))
            .collect(),
        c.plugins[p.picker].name.as_str(),
    )
}

// === defaults ===

#[test]
fn builtin_default_is_gie_default() {
    let c = default_config();
    assert_eq!(c.profiles.len(), 1);
    assert_eq!(c.profiles[0].name, "default");
    assert_eq!(
        profile_view(&c, 0),
        (
            vec![],
            vec![
                ("queue-scorer", 2.0),
                ("kv-cache-utilization-scorer", 2.0),
                ("prefix-cache-scorer", 3.0)
            ],
            "max-score-picker"
        )
    );
    assert_eq!(
        names(&c),
        vec![
            "queue-scorer",
            "kv-cache-utilization-scorer",
            "prefix-cache-scorer",
            "metrics-data-source",
            "core-metrics-extractor",
            "max-score-picker",
            "single-profile-handler",
            "approx-prefix-cache-producer",
            "utilization-detector",
            "openai-parser",
            "fcfs-ordering-policy",
            "global-strict-fairness-policy",
            "static-usage-limit-policy",
        ]
    );
    assert_eq!(
        c.plugin(c.profiles[0].picker).spec,
        PluginSpec::MaxScorePicker(MaxScorePicker { max_endpoints: 1 })
    );
    assert_eq!(
        c.plugin(c.find("approx-prefix-cache-producer").unwrap())
            .spec,
        PluginSpec::ApproxPrefixCacheProducer(PrefixProducerParams::default())
    );
    assert_eq!(c.plugin(c.saturation_detector).name, "utilization-detector");
    assert_eq!(c.plugin(c.parser).name, "openai-parser");
    assert_eq!(c.plugin(c.profile_handler).name, "single-profile-handler");
    let dl = c.data_layer.as_ref().unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(c.plugin(dl[0].source).name, "metrics-data-source");
    assert!(c.flow_control.is_none());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn gie_section_2_2_default_example_loads() {
    // gie-epp.md §2.2, written with bare type names as the reference shows it.
    let c = load(
        "featureGates: []
plugins: [queue-scorer, kv-cache-utilization-scorer, prefix-cache-scorer, metrics-data-source, core-metrics-extractor]
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
dataLayer: {sources: [{pluginRef: metrics-data-source, extractors: [{pluginRef: core-metrics-extractor}]}]}
",
    )
    .unwrap();
    assert_eq!(c, default_config());
}

#[test]
fn gie_section_5_2_flow_control_example_loads() {
    let c = load(
        "featureGates: [flowControl]
plugins:
- type: queue-scorer
flowControl:
  maxBytes: 10Gi            # k8s Quantity or int bytes
  maxRequests: 5000
  defaultRequestTTL: 60s
  defaultPriorityBand: {maxBytes: 10Gi, maxRequests: 5000}
  priorityBands:
  - {priority: 100, maxBytes: 5Gi, maxRequests: 500,
     orderingPolicyRef: fcfs-ordering-policy, fairnessPolicyRef: global-strict-fairness-policy}
  usageLimitPolicyPluginRef: static-usage-limit-policy
",
    )
    .unwrap();
    let fc = c.flow_control.as_ref().unwrap();
    assert_eq!(fc.max_bytes, 10 << 30);
    assert_eq!(fc.max_requests, 5000);
    assert_eq!(fc.default_request_ttl, Some(Duration::from_secs(60)));
    assert_eq!(fc.default_band.max_bytes, 10 << 30);
    assert_eq!(fc.default_band.max_requests, 5000);
    assert_eq!(fc.bands.len(), 1);
    assert_eq!(fc.bands[0].priority, Some(100));
    assert_eq!(fc.bands[0].max_bytes, 5 << 30);
    assert_eq!(
        c.plugin(fc.bands[0].ordering_policy).name,
        "fcfs-ordering-policy"
    );
    assert_eq!(
        c.plugin(fc.usage_limit_policy).name,
        "static-usage-limit-policy"
    );
    assert!(c.feature_gates.flow_control);
}

#[test]
fn llm_d_api_version_is_accepted() {
    let c = load_str("apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins: []\n")
        .unwrap();
    assert_eq!(c.api_version, "llm-d.ai/v1alpha1");
}

#[test]
fn name_defaults_to_type_and_weight_to_one() {
    let c = load(
        "plugins:
- type: queue-scorer
- name: kv
  type: kv-cache-utilization-scorer
schedulingProfiles:
- name: p
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: kv
    weight: 0.5
",
    )
    .unwrap();
    assert_eq!(
        profile_view(&c, 0),
        (
            vec![],
            vec![("queue-scorer", 1.0), ("kv", 0.5)],
            "max-score-picker"
        )
    );
}

#[test]
fn no_profiles_means_one_default_profile_with_every_filter_scorer_and_picker() {
    let c = load(
        "plugins:
- type: header-based-testing-filter
- type: lora-affinity-scorer
- type: random-picker
  parameters: {maxNumOfEndpoints: 2}
- type: metrics-data-source
",
    )
    .unwrap();
    assert_eq!(c.profiles[0].name, "default");
    assert_eq!(
        profile_view(&c, 0),
        (
            vec!["header-based-testing-filter"],
            vec![("lora-affinity-scorer", 1.0)],
            "random-picker"
        )
    );
    assert!(
        c.find("max-score-picker").is_none(),
        "a picker exists, none is added"
    );
}

#[test]
fn profile_without_picker_gets_first_defined_picker() {
    let c = load(
        "plugins:
- type: queue-scorer
- type: weighted-random-picker
schedulingProfiles:
- name: a
  plugins: [{pluginRef: queue-scorer}]
",
    )
    .unwrap();
    assert_eq!(profile_view(&c, 0).2, "weighted-random-picker");
}

#[test]
fn conformance_config_gets_handler_and_picker() {
    // GIE's conformance/resources/base.yaml: one profile with only the test filter.
    let c = load(
        "plugins:
- type: header-based-testing-filter
- type: destination-endpoint-served-verifier
schedulingProfiles:
- name: conformance-profile
  plugins:
  - pluginRef: header-based-testing-filter
",
    )
    .unwrap();
    assert_eq!(
        profile_view(&c, 0),
        (
            vec!["header-based-testing-filter"],
            vec![],
            "max-score-picker"
        )
    );
    assert_eq!(c.plugin(c.profile_handler).name, "single-profile-handler");
}

#[test]
fn producers_are_created_for_consumers() {
    let c = load("plugins: [token-load-scorer, prefix-cache-affinity-filter]\n").unwrap();
    assert!(c.find("inflight-load-producer").is_some());
    assert!(c.find("approx-prefix-cache-producer").is_some());
    // A configured producer is used as is.
    let c = load(
        "plugins:
- type: prefix-cache-scorer
- name: px
  type: approx-prefix-cache-producer
  parameters: {blockSizeTokens: 32, autoTune: false}
",
    )
    .unwrap();
    assert!(c.find("approx-prefix-cache-producer").is_none());
    assert_eq!(
        c.plugin(c.find("px").unwrap()).spec,
        PluginSpec::ApproxPrefixCacheProducer(PrefixProducerParams {
            auto_tune: false,
            block_size_tokens: 32,
            ..Default::default()
        })
    );
}

#[test]
fn legacy_prefix_scorer_parameters_move_to_the_producer() {
    let c = load(
        "plugins:
- type: prefix-cache-scorer
  parameters: {blockSizeTokens: 8, maxPrefixBlocksToMatch: 512, lruCapacityPerServer: 1000}
",
    )
    .unwrap();
    let p = c.plugin(c.find("approx-prefix-cache-producer").unwrap());
    assert_eq!(
        p.spec,
        PluginSpec::ApproxPrefixCacheProducer(PrefixProducerParams {
            block_size_tokens: 8,
            max_prefix_blocks_to_match: 512,
            lru_capacity_per_server: 1000,
            ..Default::default()
        })
    );
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("plugins[0].parameters: prefix-cache-scorer takes no parameters")
    );
}

#[test]
fn explicit_empty_data_layer_disables_collection() {
    let c = load("plugins: []\ndataLayer: {sources: []}\n").unwrap();
    assert!(c.data_layer.is_none());
    assert_eq!(
        c.warnings,
        vec!["dataLayer.sources is empty: endpoint metrics collection is disabled"]
    );
}

#[test]
fn data_layer_parameters_are_decoded() {
    let c = load(
        "plugins:
- type: metrics-data-source
  parameters: {scheme: https, path: /prometheus/metrics, insecureSkipVerify: false}
- name: ex
  type: core-metrics-extractor
  parameters:
    defaultEngine: mine
    engineConfigs:
    - name: mine
      queuedRequestsSpec: 'nv_trt_llm_request_metrics{request_type=waiting}'
      runningRequestsSpec: running
      kvUsageSpec: ''
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: ex}]
",
    )
    .unwrap();
    let src = c.plugin(c.data_layer.as_ref().unwrap()[0].source);
    assert_eq!(
        src.spec,
        PluginSpec::MetricsDataSource(MetricsSourceParams {
            scheme: "https".into(),
            path: "/prometheus/metrics".into(),
            insecure_skip_verify: false
        })
    );
    let PluginSpec::CoreMetricsExtractor(ex) = &c.plugin(c.find("ex").unwrap()).spec else {
        panic!()
    };
    assert_eq!(ex.default_engine, "mine");
    let e = &ex.engine_configs[0];
    assert_eq!(
        e.queued_requests_spec.as_ref().unwrap().labels[0].1,
        "waiting"
    );
    assert!(
        e.kv_usage_spec.is_none(),
        "the empty string disables a spec"
    );
    assert!(e.lora_spec.is_none());
}

#[test]
fn flow_control_without_gate_is_validated_then_ignored() {
    let c = load("plugins: []\nflowControl: {maxRequests: 10}\n").unwrap();
    assert!(c.flow_control.is_none());
    assert_eq!(
        c.warnings,
        vec![
            "flowControl: its settings (other than saturationDetector) are ignored because the flowControl feature gate is not enabled"
        ]
    );
    let e = errors("plugins: []\nflowControl: {maxRequests: -1}\n");
    assert_eq!(
        e,
        vec![
            "flowControl.maxRequests: must be a non-negative integer or a quantity such as \"10Gi\", got -1"
        ]
    );
}

#[test]
fn flow_control_gate_alone_gives_defaults() {
    let c = load("featureGates: [flowControl]\nplugins: []\n").unwrap();
    let fc = c.flow_control.unwrap();
    assert_eq!(
        (fc.max_bytes, fc.max_requests, fc.default_request_ttl),
        (0, 0, None)
    );
    assert_eq!(fc.default_band.max_bytes, 1_000_000_000);
    assert_eq!(fc.default_band.max_requests, 0);
}

#[test]
fn explicit_detector_and_parser_refs() {
    let c = load(
        "plugins:
- name: cd
  type: concurrency-detector
  parameters: {concurrencyMode: tokens, maxTokenConcurrency: 5000}
- type: passthrough-parser
schedulingProfiles:
- name: p
  plugins: []
saturationDetector: {pluginRef: cd}
parser: {pluginRef: passthrough-parser}
",
    )
    .unwrap();
    assert_eq!(c.plugin(c.saturation_detector).name, "cd");
    assert_eq!(c.plugin(c.parser).name, "passthrough-parser");
    assert!(c.find("utilization-detector").is_none());
    assert!(c.find("openai-parser").is_none());
}

#[test]
fn effective_yaml_round_trips() {
    for text in [
        DEFAULT_CONFIG_YAML.to_string(),
        format!(
            "{HEADER}featureGates: [flowControl]
plugins:
- {{type: utilization-detector, parameters: {{queueDepthThreshold: 7, metricsStalenessThreshold: 1m30s}}}}
- {{type: vtc-fairness-policy, parameters: {{tenantWeights: {{a: 2}}}}}}
- {{type: lora-affinity-scorer}}
flowControl:
  defaultRequestTTL: 30s
  priorityBands: [{{priority: -1, fairnessPolicyRef: vtc-fairness-policy}}]
"
        ),
    ] {
        let c = load_str(&text).unwrap();
        let again = load_str(&c.to_yaml()).unwrap_or_else(|e| panic!("{e}\n{}", c.to_yaml()));
        assert_eq!(names(&again), names(&c));
        assert_eq!(again.profiles, c.profiles);
        assert_eq!(again.flow_control, c.flow_control);
        let specs: Vec<_> = c.plugins.iter().map(|p| &p.spec).collect();
        let specs2: Vec<_> = again.plugins.iter().map(|p| &p.spec).collect();
        assert_eq!(specs, specs2);
    }
}

#[test]
fn shipped_example_configs_load_and_build() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.contains("kind: EndpointPickerConfig") {
                continue;
            }
            let c = load_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let _ = build_scheduler(&c, None);
            count += 1;
        }
    }
    assert!(count >= 4, "expected the shipped examples, found {count}");
}

// === errors ===

#[test]
fn header_errors() {
    assert_eq!(
        load_str("kind: EndpointPickerConfig\nplugins: []\n")
            .unwrap_err()
            .messages(),
        vec![
            "apiVersion: required (one of: inference.networking.x-k8s.io/v1alpha1, llm-d.ai/v1alpha1)"
        ]
    );
    assert_eq!(
        load_str("apiVersion: v1\nkind: ConfigMap\nplugins: []\n")
            .unwrap_err()
            .messages(),
        vec![
            "apiVersion: must be one of inference.networking.x-k8s.io/v1alpha1, llm-d.ai/v1alpha1, got \"v1\"",
            "kind: must be \"EndpointPickerConfig\", got \"ConfigMap\"",
        ]
    );
    assert_eq!(
        load_str("").unwrap_err().messages(),
        vec!["the document is empty"]
    );
    let e = load_str("plugins: [").unwrap_err().messages();
    assert!(e[0].starts_with("not a valid YAML document: "), "{e:?}");
    assert_eq!(
        load_str("- a\n- b\n").unwrap_err().messages(),
        vec!["must be a mapping, got a list"]
    );
    // No plugins and no profiles: GIE fills in the defaults.
    let c = load("").unwrap();
    assert_eq!(c.profiles[0].scorers.len(), 3);
    assert_eq!(
        errors("schedulingProfiles: []\n"),
        vec!["plugins: required (a list of {name?, type, parameters?})"]
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let e = errors(
        "featureGates: [flowControl, fastPath]
unknownTop: 1
plugins:
- type: queue-scorer
- type: queue-scorer
- name: px
  type: approx-prefix-cache-producer
  parameters: {blockSizeTokens: 0, lruCapacityPerServer: -5, bogus: true}
- type: not-a-plugin
- name: missing-type
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: heavy
  - pluginRef: nope
  - pluginRef: px
",
    );
    assert_eq!(
        e,
        vec![
            "featureGates[1]: unknown feature gate \"fastPath\" (known: dataLayer, enableLegacyMetrics, flowControl, haPopulateNonLeaderDatastore)",
            "plugins[1].name: duplicate plugin name \"queue-scorer\" (first defined at plugins[0])",
            "plugins[2].parameters.blockSizeTokens: must be > 0, got 0",
            "plugins[2].parameters.lruCapacityPerServer: must be > 0, got -5",
            "plugins[2].parameters.bogus: unknown field (known fields: autoTune, blockSize, blockSizeTokens, lruCapacityPerServer, maxPrefixBlocksToMatch, maxPrefixTokensToMatch)",
            "plugins[3].type: unknown plugin type \"not-a-plugin\" (known types: queue-scorer, kv-cache-utilization-scorer, running-requests-size-scorer, lora-affinity-scorer, prefix-cache-scorer, token-load-scorer, max-score-picker, random-picker, weighted-random-picker, header-based-testing-filter, decode-filter, prefix-cache-affinity-filter, utilization-detector, concurrency-detector, single-profile-handler, approx-prefix-cache-producer, inflight-load-producer, metrics-data-source, core-metrics-extractor, global-strict-fairness-policy, round-robin-fairness-policy, vtc-fairness-policy, fcfs-ordering-policy, edf-ordering-policy, static-usage-limit-policy, openai-parser, passthrough-parser, destination-endpoint-served-verifier)",
            "plugins[4].type: required",
            "schedulingProfiles[0].plugins[0].weight: must be a finite number, got \"heavy\"",
            "unknownTop: unknown field (known fields: apiVersion, dataLayer, featureGates, flowControl, kind, parser, plugins, requestHandler, saturationDetector, schedulingProfiles)",
            "schedulingProfiles[0].plugins[1].pluginRef: no plugin named \"nope\" (defined: px, queue-scorer)",
        ]
    );
}

#[test]
fn profile_errors() {
    assert_eq!(
        errors(
            "plugins: [max-score-picker, random-picker]
schedulingProfiles:
- name: a
  plugins: [{pluginRef: max-score-picker}, {pluginRef: random-picker}, {pluginRef: max-score-picker}]
- name: a
  plugins: []
- plugins: []
- name: b
"
        ),
        vec![
            "schedulingProfiles[1].name: duplicate profile name \"a\" (first defined at schedulingProfiles[0])",
            "schedulingProfiles[2].name: required",
            "schedulingProfiles[3].plugins: required (a list of {pluginRef, weight?})",
            "schedulingProfiles[0].plugins[1].pluginRef: profile \"a\" may have only one picker, but has \"max-score-picker\" and \"random-picker\"",
            "schedulingProfiles[0].plugins[2].pluginRef: plugin \"max-score-picker\" is referenced twice in profile \"a\"",
            "schedulingProfiles: 2 profiles need a profile handler plugin, and single-profile-handler supports exactly one profile",
        ]
    );
}

#[test]
fn profile_handler_errors() {
    assert_eq!(
        errors(
            "plugins: [single-profile-handler]
schedulingProfiles:
- {name: a, plugins: []}
- {name: b, plugins: []}
"
        ),
        vec!["schedulingProfiles: single-profile-handler supports exactly one profile, got 2"]
    );
    assert_eq!(
        errors("plugins: [single-profile-handler, {name: h2, type: single-profile-handler}]\n"),
        vec![
            "plugins[1].type: at most one profile handler may be defined, got \"single-profile-handler\" and \"h2\""
        ]
    );
}

#[test]
fn reference_role_errors() {
    assert_eq!(
        errors(
            "plugins: [queue-scorer, metrics-data-source]
saturationDetector: {pluginRef: queue-scorer}
parser: {pluginRef: ghost}
dataLayer:
  sources:
  - pluginRef: queue-scorer
    extractors: [{pluginRef: metrics-data-source}]
"
        ),
        vec![
            "saturationDetector.pluginRef: plugin \"queue-scorer\" (type queue-scorer) is not a saturation detector",
            "parser.pluginRef: no plugin named \"ghost\" (defined: max-score-picker, metrics-data-source, queue-scorer, single-profile-handler)",
            "dataLayer.sources[0].pluginRef: plugin \"queue-scorer\" (type queue-scorer) is not a data source",
            "dataLayer.sources[0].extractors[0].pluginRef: plugin \"metrics-data-source\" (type metrics-data-source) is not a metrics extractor",
        ]
    );
    assert_eq!(
        errors("plugins: []\nsaturationDetector: {}\n"),
        vec!["saturationDetector.pluginRef: required"]
    );
}

#[test]
fn reference_to_broken_plugin_is_not_reported_twice() {
    assert_eq!(
        errors(
            "plugins:
- {name: q, type: queue-scorerr}
schedulingProfiles:
- {name: p, plugins: [{pluginRef: q}]}
"
        )
        .len(),
        1
    );
}

#[test]
fn parameter_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "{type: max-score-picker, parameters: {maxNumOfEndpoints: two}}",
            "plugins[0].parameters.maxNumOfEndpoints: must be an integer, got \"two\"",
        ),
        (
            "{type: token-load-scorer, parameters: {queueThresholdTokens: 0}}",
            "plugins[0].parameters.queueThresholdTokens: must be > 0, got 0",
        ),
        (
            "{type: prefix-cache-affinity-filter, parameters: {affinityThreshold: 1.5}}",
            "plugins[0].parameters.affinityThreshold: must be in [0, 1], got 1.5",
        ),
        (
            "{type: approx-prefix-cache-producer, parameters: {blockSize: 64}}",
            "plugins[0].parameters.blockSize: deprecated (a size in characters) and not accepted alone, got 64; set blockSizeTokens (tokens per block) instead",
        ),
        (
            "{type: utilization-detector, parameters: {kvCacheUtilThreshold: 0}}",
            "plugins[0].parameters.kvCacheUtilThreshold: must be in (0, 1], got 0",
        ),
        (
            "{type: utilization-detector, parameters: {metricsStalenessThreshold: 200}}",
            "plugins[0].parameters.metricsStalenessThreshold: must be a duration string such as \"200ms\" or \"60s\", got 200",
        ),
        (
            "{type: utilization-detector, parameters: {queueDepthThreshold: 0}}",
            "plugins[0].parameters.queueDepthThreshold: must be > 0, got 0",
        ),
        (
            "{type: concurrency-detector, parameters: {concurrencyMode: bytes}}",
            "plugins[0].parameters.concurrencyMode: must be \"requests\" or \"tokens\", got \"bytes\"",
        ),
        (
            "{type: concurrency-detector, parameters: {headroom: -0.5}}",
            "plugins[0].parameters.headroom: must be >= 0, got -0.5",
        ),
        (
            "{type: metrics-data-source, parameters: {scheme: ftp}}",
            "plugins[0].parameters.scheme: must be \"http\" or \"https\", got \"ftp\"",
        ),
        (
            "{type: metrics-data-source, parameters: {path: metrics}}",
            "plugins[0].parameters.path: must start with '/', got \"metrics\"",
        ),
        (
            "{type: core-metrics-extractor, parameters: {defaultEngine: tgi}}",
            "plugins[0].parameters.defaultEngine: unknown engine \"tgi\" (built in: vllm, sglang, trtllm-serve, triton-tensorrt-llm, triton; or define it in engineConfigs)",
        ),
        (
            "{type: core-metrics-extractor, parameters: {engineConfigs: [{name: default}]}}",
            "plugins[0].parameters.engineConfigs[0].name: \"default\" is reserved; set defaultEngine instead",
        ),
        (
            "{type: core-metrics-extractor, parameters: {engineConfigs: [{name: x, kvUsageSpec: 'a{b'}]}}",
            "plugins[0].parameters.engineConfigs[0].kvUsageSpec: unbalanced braces in \"a{b\"",
        ),
        (
            "{type: vtc-fairness-policy, parameters: {tenantWeights: {a: 0}}}",
            "plugins[0].parameters.tenantWeights.a: must be a number > 0, got 0",
        ),
        (
            "{type: static-usage-limit-policy, parameters: {threshold: 0}}",
            "plugins[0].parameters.threshold: must be > 0, got 0",
        ),
        (
            "{type: queue-scorer, parameters: {foo: 1}}",
            "plugins[0].parameters.foo: unknown field (known fields: )",
        ),
        (
            "{type: queue-scorer, parameters: [1]}",
            "plugins[0].parameters: must be a mapping, got a list",
        ),
    ];
    for (plugin, want) in cases {
        let got = errors(&format!("plugins:\n- {plugin}\n"));
        assert_eq!(got, vec![want.to_string()], "for {plugin}");
    }
}

#[test]
fn flow_control_errors() {
    assert_eq!(
        errors(
            "featureGates: [flowControl]
plugins: [queue-scorer]
flowControl:
  maxBytes: lots
  defaultRequestTTL: 1 minute
  priorityBands:
  - {priority: 1, fairnessPolicyRef: queue-scorer}
  - {priority: 1}
  - {maxRequests: 3}
  usageLimitPolicyPluginRef: fcfs-ordering-policy
"
        ),
        vec![
            "flowControl.maxBytes: must be a non-negative integer or a quantity such as \"10Gi\", got \"lots\"",
            "flowControl.defaultRequestTTL: unknown unit \" minute\" in duration (use ns, us, ms, s, m or h), got \"1 minute\"",
            "flowControl.priorityBands[1].priority: duplicate priority 1 (also flowControl.priorityBands[0])",
            "flowControl.priorityBands[2].priority: required",
            "flowControl.priorityBands[0].fairnessPolicyRef: plugin \"queue-scorer\" (type queue-scorer) is not a fairness policy",
            "flowControl.usageLimitPolicyPluginRef: plugin \"fcfs-ordering-policy\" (type fcfs-ordering-policy) is not a usage limit policy",
        ]
    );
}

#[test]
fn error_display_lists_all() {
    let e = load_str("apiVersion: x\nkind: Foo\nplugins: []\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid EndpointPickerConfig (2 errors):\n  - apiVersion: must be one of inference.networking.x-k8s.io/v1alpha1, llm-d.ai/v1alpha1, got \"x\"\n  - kind: must be \"EndpointPickerConfig\", got \"Foo\""
    );
}

// === building ===

#[test]
fn built_scheduler_matches_the_config() {
    let s = build_scheduler(&default_config(), None).scheduler;
    let p = &s.profiles()[0];
    let scorers: Vec<(&str, f64)> = p
        .scorers
        .iter()
        .map(|w| (w.name.as_str(), w.weight))
        .collect();
    assert_eq!(
        scorers,
        vec![
            ("queue-scorer", 2.0),
            ("kv-cache-utilization-scorer", 2.0),
            ("prefix-cache-scorer", 3.0)
        ]
    );
    assert_eq!(p.picker.type_name(), "max-score-picker");
    assert_eq!(s.handler().type_name(), "single-profile-handler");
}

#[test]
fn a_plugin_in_two_slots_is_one_instance() {
    let c = load(
        "plugins: [utilization-detector, queue-scorer]
schedulingProfiles:
- name: p
  plugins: [{pluginRef: utilization-detector}, {pluginRef: queue-scorer, weight: 2}]
saturationDetector: {pluginRef: utilization-detector}
",
    )
    .unwrap();
    assert_eq!(c.profiles[0].filters, vec![c.saturation_detector]);
    let s = build_scheduler(&c, None).scheduler;
    assert_eq!(
        s.profiles()[0].filters[0].filter.type_name(),
        "utilization-detector"
    );
}
