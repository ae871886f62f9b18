//! `core-metrics-extractor`'s parameters: which engine an endpoint runs (by pod label) and, per
//! engine, which metric feeds which field. User entries replace built-in ones by name.

use serde_json::{Value, json};

use super::metric_spec::MetricSpec;
use crate::decode::{Diagnostics, Obj, Params};

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
pub const BUILTIN_ENGINES: &[&str] = &[
    "vllm",
    "sglang",
    "trtllm-serve",
    "triton-tensorrt-llm",
    "triton",
];

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

impl Params for ExtractorParams {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
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

    fn render(&self) -> Option<Value> {
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
        Some(v)
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
