//! Typed parameters of the built-in plugins, with GIE's defaults next to each, and their
//! decoding from the config tree with range checks that name the field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::error::Diagnostics;
use super::metric_spec::MetricSpec;
use super::value::{Obj, show};

// === Pickers ===

#[derive(Debug, Clone, PartialEq)]
pub struct PickerParams {
    /// Endpoints returned per pick; GIE treats values ≤ 0 as 1.
    pub max_num_of_endpoints: usize,
}

impl Default for PickerParams {
    fn default() -> Self {
        Self {
            max_num_of_endpoints: 1,
        }
    }
}

impl PickerParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let n = o.i64("maxNumOfEndpoints", d).unwrap_or(1);
        Self {
            max_num_of_endpoints: crate::scheduling::plugins::effective_max_endpoints(n),
        }
    }

    pub fn render(&self) -> Value {
        json!({ "maxNumOfEndpoints": self.max_num_of_endpoints })
    }
}

// === token-load-scorer ===

#[derive(Debug, Clone, PartialEq)]
pub struct TokenLoadParams {
    pub queue_threshold_tokens: u64,
}

impl Default for TokenLoadParams {
    fn default() -> Self {
        Self {
            queue_threshold_tokens: crate::scheduling::plugins::TokenLoadScorer::DEFAULT_THRESHOLD,
        }
    }
}

impl TokenLoadParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(t) = o.i64("queueThresholdTokens", d) {
            if t <= 0 {
                d.error(
                    o.at("queueThresholdTokens"),
                    format!("must be > 0, got {t}"),
                );
            } else {
                p.queue_threshold_tokens = t as u64;
            }
        }
        p
    }

    pub fn render(&self) -> Value {
        json!({ "queueThresholdTokens": self.queue_threshold_tokens })
    }
}

// === prefix-cache-affinity-filter ===

#[derive(Debug, Clone, PartialEq)]
pub struct AffinityFilterParams {
    pub affinity_threshold: f64,
    pub exploration_probability: f64,
    /// Accepted for compatibility; only acts with a latency predictor, which Switchyard lacks.
    pub max_ttft_penalty_ms: f64,
}

impl Default for AffinityFilterParams {
    fn default() -> Self {
        Self {
            affinity_threshold: 0.8,
            exploration_probability: 0.01,
            max_ttft_penalty_ms: 5000.0,
        }
    }
}

impl AffinityFilterParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(x) = unit_interval(o, "affinityThreshold", d) {
            p.affinity_threshold = x;
        }
        if let Some(x) = unit_interval(o, "explorationProbability", d) {
            p.exploration_probability = x;
        }
        if let Some(x) = non_negative(o, "maxTTFTPenaltyMs", d) {
            p.max_ttft_penalty_ms = x;
        }
        p
    }

    pub fn render(&self) -> Value {
        json!({
            "affinityThreshold": self.affinity_threshold,
            "explorationProbability": self.exploration_probability,
            "maxTTFTPenaltyMs": self.max_ttft_penalty_ms,
        })
    }
}

// === approx-prefix-cache-producer ===

#[derive(Debug, Clone, PartialEq)]
pub struct PrefixProducerParams {
    /// Take the block size and LRU capacity from each endpoint's cache metrics when known.
    pub auto_tune: bool,
    pub block_size_tokens: u32,
    pub max_prefix_blocks_to_match: u32,
    /// When > 0, overrides `max_prefix_blocks_to_match` as `tokens / block_size_tokens`.
    pub max_prefix_tokens_to_match: u64,
    pub lru_capacity_per_server: u64,
}

impl Default for PrefixProducerParams {
    fn default() -> Self {
        Self {
            auto_tune: true,
            block_size_tokens: 16,
            max_prefix_blocks_to_match: 256,
            max_prefix_tokens_to_match: 0,
            // A 64 GB KV budget ÷ 128 KB per token ÷ 16 tokens per block.
            lru_capacity_per_server: 31_250,
        }
    }
}

/// The producer's parameter names, also accepted on `prefix-cache-scorer` where older GIE
/// releases took them.
pub const PREFIX_PRODUCER_KEYS: &[&str] = &[
    "autoTune",
    "blockSizeTokens",
    "blockSize",
    "maxPrefixBlocksToMatch",
    "maxPrefixTokensToMatch",
    "lruCapacityPerServer",
];

impl PrefixProducerParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(b) = o.bool("autoTune", d) {
            p.auto_tune = b;
        }
        let tokens_set = o.has("blockSizeTokens");
        if let Some(v) = positive_u32(o, "blockSizeTokens", d) {
            p.block_size_tokens = v;
        }
        if let Some(v) = o.get("blockSize") {
            if tokens_set {
                d.warn(format!(
                    "{}: deprecated and ignored because blockSizeTokens is set",
                    o.at("blockSize")
                ));
            } else {
                d.error(
                    o.at("blockSize"),
                    format!(
                        "deprecated (a size in characters) and not accepted alone, got {}; \
                         set blockSizeTokens (tokens per block) instead",
                        show(v)
                    ),
                );
            }
        }
        if let Some(v) = positive_u32(o, "maxPrefixBlocksToMatch", d) {
            p.max_prefix_blocks_to_match = v;
        }
        if let Some(v) = o.u64("maxPrefixTokensToMatch", d) {
            p.max_prefix_tokens_to_match = v;
        }
        if let Some(v) = o.i64("lruCapacityPerServer", d) {
            if v <= 0 {
                d.error(
                    o.at("lruCapacityPerServer"),
                    format!("must be > 0, got {v}"),
                );
            } else {
                p.lru_capacity_per_server = v as u64;
            }
        }
        p
    }

    /// Blocks matched at most, after `maxPrefixTokensToMatch`.
    pub fn max_blocks(&self) -> u32 {
        if self.max_prefix_tokens_to_match > 0 {
            let b = self.max_prefix_tokens_to_match / u64::from(self.block_size_tokens.max(1));
            u32::try_from(b).unwrap_or(u32::MAX).max(1)
        } else {
            self.max_prefix_blocks_to_match
        }
    }

    pub fn render(&self) -> Value {
        json!({
            "autoTune": self.auto_tune,
            "blockSizeTokens": self.block_size_tokens,
            "maxPrefixBlocksToMatch": self.max_prefix_blocks_to_match,
            "maxPrefixTokensToMatch": self.max_prefix_tokens_to_match,
            "lruCapacityPerServer": self.lru_capacity_per_server,
        })
    }
}

// === utilization-detector ===

#[derive(Debug, Clone, PartialEq)]
pub struct UtilizationParams {
    pub queue_depth_threshold: u64,
    pub kv_cache_util_threshold: f64,
    pub metrics_staleness_threshold: Duration,
    pub headroom: f64,
}

impl Default for UtilizationParams {
    fn default() -> Self {
        Self {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            metrics_staleness_threshold: Duration::from_millis(200),
            headroom: 0.0,
        }
    }
}

impl UtilizationParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(v) = o.i64("queueDepthThreshold", d) {
            if v <= 0 {
                d.error(o.at("queueDepthThreshold"), format!("must be > 0, got {v}"));
            } else {
                p.queue_depth_threshold = v as u64;
            }
        }
        if let Some(v) = o.f64("kvCacheUtilThreshold", d) {
            if v <= 0.0 || v > 1.0 {
                d.error(
                    o.at("kvCacheUtilThreshold"),
                    format!("must be in (0, 1], got {v}"),
                );
            } else {
                p.kv_cache_util_threshold = v;
            }
        }
        if let Some(v) = o.duration("metricsStalenessThreshold", d) {
            if v.is_zero() {
                d.error(o.at("metricsStalenessThreshold"), "must be > 0, got \"0\"");
            } else {
                p.metrics_staleness_threshold = v;
            }
        }
        if let Some(v) = non_negative(o, "headroom", d) {
            p.headroom = v;
        }
        p
    }

    pub fn render(&self) -> Value {
        json!({
            "queueDepthThreshold": self.queue_depth_threshold,
            "kvCacheUtilThreshold": self.kv_cache_util_threshold,
            "metricsStalenessThreshold": format_duration(self.metrics_staleness_threshold),
            "headroom": self.headroom,
        })
    }
}

// === concurrency-detector ===

#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyParams {
    pub mode: crate::scheduling::plugins::ConcurrencyMode,
    pub max_concurrency: u64,
    pub max_token_concurrency: u64,
    pub headroom: f64,
}

impl Default for ConcurrencyParams {
    fn default() -> Self {
        Self {
            mode: crate::scheduling::plugins::ConcurrencyMode::Requests,
            max_concurrency: 100,
            max_token_concurrency: 1_000_000,
            headroom: 0.0,
        }
    }
}

impl ConcurrencyParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        use crate::scheduling::plugins::ConcurrencyMode;
        let mut p = Self::default();
        if let Some(m) = o.string("concurrencyMode", d) {
            match m.as_str() {
                "requests" => p.mode = ConcurrencyMode::Requests,
                "tokens" => p.mode = ConcurrencyMode::Tokens,
                other => d.error(
                    o.at("concurrencyMode"),
                    format!("must be \"requests\" or \"tokens\", got {other:?}"),
                ),
            }
        }
        for (key, slot) in [
            ("maxConcurrency", &mut p.max_concurrency),
            ("maxTokenConcurrency", &mut p.max_token_concurrency),
        ] {
            if let Some(v) = o.i64(key, d) {
                if v <= 0 {
                    d.error(o.at(key), format!("must be > 0, got {v}"));
                } else {
                    *slot = v as u64;
                }
            }
        }
        if let Some(v) = non_negative(o, "headroom", d) {
            p.headroom = v;
        }
        p
    }

    pub fn render(&self) -> Value {
        use crate::scheduling::plugins::ConcurrencyMode;
        json!({
            "concurrencyMode": match self.mode { ConcurrencyMode::Requests => "requests", ConcurrencyMode::Tokens => "tokens" },
            "maxConcurrency": self.max_concurrency,
            "maxTokenConcurrency": self.max_token_concurrency,
            "headroom": self.headroom,
        })
    }
}

// === metrics-data-source ===

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSourceParams {
    pub scheme: String,
    pub path: String,
    pub insecure_skip_verify: bool,
}

impl Default for MetricsSourceParams {
    fn default() -> Self {
        Self {
            scheme: "http".into(),
            path: "/metrics".into(),
            insecure_skip_verify: true,
        }
    }
}

impl MetricsSourceParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(s) = o.string("scheme", d) {
            if s == "http" || s == "https" {
                p.scheme = s;
            } else {
                d.error(
                    o.at("scheme"),
                    format!("must be \"http\" or \"https\", got {s:?}"),
                );
            }
        }
        if let Some(s) = o.string("path", d) {
            if s.starts_with('/') {
                p.path = s;
            } else {
                d.error(o.at("path"), format!("must start with '/', got {s:?}"));
            }
        }
        if let Some(b) = o.bool("insecureSkipVerify", d) {
            p.insecure_skip_verify = b;
        }
        p
    }

    pub fn render(&self) -> Value {
        json!({ "scheme": self.scheme, "path": self.path, "insecureSkipVerify": self.insecure_skip_verify })
    }
}

// === core-metrics-extractor ===

/// How to read one engine's metrics. `None` disables a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub name: String,
    pub queued_requests_spec: Option<MetricSpec>,
    pub running_requests_spec: Option<MetricSpec>,
    pub kv_usage_spec: Option<MetricSpec>,
    pub lora_spec: Option<MetricSpec>,
    pub cache_info_spec: Option<MetricSpec>,
    pub cache_block_size_label_name: Option<String>,
    pub cache_num_blocks_label_name: Option<String>,
    pub cache_block_size_spec: Option<MetricSpec>,
    pub cache_num_blocks_spec: Option<MetricSpec>,
}

/// The engines GIE knows by name (gie-epp.md §3.1).
pub const BUILTIN_ENGINES: &[&str] = &["vllm", "sglang", "trtllm-serve", "triton-tensorrt-llm"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractorParams {
    pub engine_label_key: String,
    pub default_engine: String,
    /// User entries; one with a built-in name replaces that built-in entirely.
    pub engine_configs: Vec<EngineConfig>,
}

impl Default for ExtractorParams {
    fn default() -> Self {
        Self {
            engine_label_key: "inference.networking.k8s.io/engine-type".into(),
            default_engine: "vllm".into(),
            engine_configs: Vec::new(),
        }
    }
}

impl ExtractorParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(s) = o.string("engineLabelKey", d) {
            if s.is_empty() {
                d.error(o.at("engineLabelKey"), "must not be empty");
            } else {
                p.engine_label_key = s;
            }
        }
        let default_engine = o.string("defaultEngine", d);
        if let Some(items) = o.list("engineConfigs", d) {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{}[{i}]", o.at("engineConfigs"));
                if let Some(ec) = decode_engine_config(&path, item, d) {
                    if let Some(first) = p.engine_configs.iter().position(|e| e.name == ec.name) {
                        d.error(
                            format!("{path}.name"),
                            format!(
                                "duplicate engine name {:?} (first defined at {}[{first}])",
                                ec.name,
                                o.at("engineConfigs")
                            ),
                        );
                    } else {
                        p.engine_configs.push(ec);
                    }
                }
            }
        }
        if let Some(e) = default_engine {
            let known = BUILTIN_ENGINES.contains(&e.as_str())
                || p.engine_configs.iter().any(|c| c.name == e);
            if known {
                p.default_engine = e;
            } else {
                d.error(
                    o.at("defaultEngine"),
                    format!(
                        "unknown engine {e:?} (built in: {}; or define it in engineConfigs)",
                        BUILTIN_ENGINES.join(", ")
                    ),
                );
            }
        }
        p
    }

    pub fn render(&self) -> Value {
        let mut v = json!({
            "engineLabelKey": self.engine_label_key,
            "defaultEngine": self.default_engine,
        });
        if !self.engine_configs.is_empty() {
            let list: Vec<Value> = self
                .engine_configs
                .iter()
                .map(render_engine_config)
                .collect();
            v["engineConfigs"] = Value::Array(list);
        }
        v
    }
}

fn decode_engine_config(path: &str, v: &Value, d: &mut Diagnostics) -> Option<EngineConfig> {
    let mut o = Obj::new(path, Some(v), d);
    let name = o.string("name", d);
    let spec = |o: &mut Obj<'_>, key: &'static str, d: &mut Diagnostics| {
        let s = o.string(key, d)?;
        match MetricSpec::parse(&s) {
            Ok(spec) => spec,
            Err(reason) => {
                d.error(o.at(key), reason);
                None
            }
        }
    };
    let ec = EngineConfig {
        name: String::new(),
        queued_requests_spec: spec(&mut o, "queuedRequestsSpec", d),
        running_requests_spec: spec(&mut o, "runningRequestsSpec", d),
        kv_usage_spec: spec(&mut o, "kvUsageSpec", d),
        lora_spec: spec(&mut o, "loraSpec", d),
        cache_info_spec: spec(&mut o, "cacheInfoSpec", d),
        cache_block_size_label_name: o.string("cacheBlockSizeLabelName", d),
        cache_num_blocks_label_name: o.string("cacheNumBlocksLabelName", d),
        cache_block_size_spec: spec(&mut o, "cacheBlockSizeSpec", d),
        cache_num_blocks_spec: spec(&mut o, "cacheNumBlocksSpec", d),
    };
    let name_path = o.at("name");
    o.finish(d);
    match name.as_deref() {
        None => {
            d.error(name_path, "required");
            None
        }
        Some("") => {
            d.error(name_path, "must not be empty");
            None
        }
        Some("default") => {
            d.error(
                name_path,
                "\"default\" is reserved; set defaultEngine instead",
            );
            None
        }
        Some(n) => Some(EngineConfig {
            name: n.to_string(),
            ..ec
        }),
    }
}

fn render_engine_config(e: &EngineConfig) -> Value {
    let s = |x: &Option<MetricSpec>| x.as_ref().map_or(String::new(), ToString::to_string);
    let mut v = json!({
        "name": e.name,
        "queuedRequestsSpec": s(&e.queued_requests_spec),
        "runningRequestsSpec": s(&e.running_requests_spec),
        "kvUsageSpec": s(&e.kv_usage_spec),
        "loraSpec": s(&e.lora_spec),
        "cacheInfoSpec": s(&e.cache_info_spec),
    });
    if let Some(l) = &e.cache_block_size_label_name {
        v["cacheBlockSizeLabelName"] = json!(l);
    }
    if let Some(l) = &e.cache_num_blocks_label_name {
        v["cacheNumBlocksLabelName"] = json!(l);
    }
    if e.cache_block_size_spec.is_some() {
        v["cacheBlockSizeSpec"] = json!(s(&e.cache_block_size_spec));
    }
    if e.cache_num_blocks_spec.is_some() {
        v["cacheNumBlocksSpec"] = json!(s(&e.cache_num_blocks_spec));
    }
    v
}

// === vtc-fairness-policy ===

#[derive(Debug, Clone, PartialEq)]
pub struct VtcParams {
    pub input_token_weight: f64,
    pub output_token_weight: f64,
    /// Per-tenant weights (fairness id → weight > 0); a tenant of weight 2 gets twice the service.
    pub tenant_weights: BTreeMap<String, f64>,
    /// Charge only input tokens the engine did not find in its prefix cache.
    pub charge_uncached_input_only: bool,
}

impl Default for VtcParams {
    fn default() -> Self {
        Self {
            input_token_weight: 1.0,
            output_token_weight: 2.0,
            tenant_weights: BTreeMap::new(),
            charge_uncached_input_only: false,
        }
    }
}

impl VtcParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(v) = non_negative(o, "inputTokenWeight", d) {
            p.input_token_weight = v;
        }
        if let Some(v) = non_negative(o, "outputTokenWeight", d) {
            p.output_token_weight = v;
        }
        if p.input_token_weight == 0.0 && p.output_token_weight == 0.0 {
            d.error(
                o.path.clone(),
                "inputTokenWeight and outputTokenWeight must not both be 0",
            );
        }
        let path = o.at("tenantWeights");
        if let Some(v) = o.get("tenantWeights") {
            match v {
                Value::Object(m) => {
                    for (tenant, w) in m {
                        match w.as_f64() {
                            Some(x) if x.is_finite() && x > 0.0 => {
                                p.tenant_weights.insert(tenant.clone(), x);
                            }
                            _ => d.error(
                                format!("{path}.{tenant}"),
                                format!("must be a number > 0, got {}", show(w)),
                            ),
                        }
                    }
                }
                other => d.error(
                    path,
                    format!("must be a mapping of tenant to weight, got {}", show(other)),
                ),
            }
        }
        if let Some(b) = o.bool("chargeUncachedInputOnly", d) {
            p.charge_uncached_input_only = b;
        }
        p
    }

    pub fn render(&self) -> Value {
        json!({
            "inputTokenWeight": self.input_token_weight,
            "outputTokenWeight": self.output_token_weight,
            "tenantWeights": self.tenant_weights,
            "chargeUncachedInputOnly": self.charge_uncached_input_only,
        })
    }
}

// === static-usage-limit-policy ===

#[derive(Debug, Clone, PartialEq)]
pub struct UsageLimitParams {
    /// Saturation ceiling for every band.
    pub threshold: f64,
}

impl Default for UsageLimitParams {
    fn default() -> Self {
        Self { threshold: 1.0 }
    }
}

impl UsageLimitParams {
    pub fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(v) = o.f64("threshold", d) {
            if v <= 0.0 {
                d.error(o.at("threshold"), format!("must be > 0, got {v}"));
            } else {
                p.threshold = v;
            }
        }
        p
    }

    pub fn render(&self) -> Value {
        json!({ "threshold": self.threshold })
    }
}

// === helpers ===

fn unit_interval(o: &mut Obj<'_>, key: &'static str, d: &mut Diagnostics) -> Option<f64> {
    let v = o.f64(key, d)?;
    if (0.0..=1.0).contains(&v) {
        Some(v)
    } else {
        d.error(o.at(key), format!("must be in [0, 1], got {v}"));
        None
    }
}

fn non_negative(o: &mut Obj<'_>, key: &'static str, d: &mut Diagnostics) -> Option<f64> {
    let v = o.f64(key, d)?;
    if v >= 0.0 {
        Some(v)
    } else {
        d.error(o.at(key), format!("must be >= 0, got {v}"));
        None
    }
}

fn positive_u32(o: &mut Obj<'_>, key: &'static str, d: &mut Diagnostics) -> Option<u32> {
    let v = o.i64(key, d)?;
    if v <= 0 || v > i64::from(u32::MAX) {
        d.error(o.at(key), format!("must be > 0, got {v}"));
        None
    } else {
        Some(v as u32)
    }
}

/// Renders a duration in Go's style (`200ms`, `1m30s`) for the effective-config printer.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns.is_multiple_of(1_000_000_000) {
        let s = ns / 1_000_000_000;
        let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if s > 0 || out.is_empty() {
            out.push_str(&format!("{s}s"));
        }
        out
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::value::parse_go_duration;

    #[test]
    fn durations_round_trip() {
        for s in ["200ms", "1m30s", "2h", "0s", "15us", "7ns", "1h0m5s"] {
            let d = parse_go_duration(s).unwrap();
            assert_eq!(parse_go_duration(&format_duration(d)).unwrap(), d, "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn max_blocks_from_tokens() {
        let mut p = PrefixProducerParams::default();
        assert_eq!(p.max_blocks(), 256);
        p.max_prefix_tokens_to_match = 1000;
        assert_eq!(p.max_blocks(), 62);
        p.max_prefix_tokens_to_match = 3;
        assert_eq!(p.max_blocks(), 1);
    }
}
