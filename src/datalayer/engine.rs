//! Engine mappings: which metric of which model server feeds which field of [`EndpointMetrics`]
//! (gie-epp.md §3.1), how an endpoint's engine is chosen, and the extraction itself.
//!
//! Extraction follows GIE's rules (each spec independent; a failed spec keeps the previous value;
//! `updated_at = now` when any spec succeeded; LoRA from the newest `lora_requests_info` series)
//! with one deliberate improvement: when several series match a spec and differ only by a
//! data-parallel label (`engine` in vLLM), they are aggregated (queues and running summed, KV usage
//! the maximum) instead of silently taking the first.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::extractor::{BUILTIN_ENGINES, EngineConfig, ExtractorParams};
use super::metric_spec::MetricSpec;
use super::parse::{self, MetricType, ParseStats, Sample, Visitor};
use crate::scheduling::{Endpoint, EndpointMetrics, Timestamp};

/// Labels that tell data-parallel ranks of one server apart. Series that differ only by these are
/// one server's ranks and are aggregated.
pub const DATA_PARALLEL_LABELS: &[&str] = &["engine", "dp_rank", "data_parallel_rank"];

/// The field of [`EndpointMetrics`] a spec feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Queued,
    Running,
    KvUsage,
    Lora,
    CacheInfo,
    CacheBlockSize,
    CacheNumBlocks,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queuedRequests",
            Self::Running => "runningRequests",
            Self::KvUsage => "kvUsage",
            Self::Lora => "lora",
            Self::CacheInfo => "cacheInfo",
            Self::CacheBlockSize => "cacheBlockSize",
            Self::CacheNumBlocks => "cacheNumBlocks",
        }
    }

    /// How matching series of several data-parallel ranks combine.
    fn aggregate(self, acc: f64, v: f64) -> f64 {
        match self {
            Self::Queued | Self::Running => acc + v,
            Self::KvUsage => acc.max(v),
            // Block size, block count and info series: the first rank speaks for all.
            _ => acc,
        }
    }
}

/// One spec of one role.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    role: Role,
    spec: MetricSpec,
}

/// A compiled engine mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineMapping {
    pub name: String,
    /// In priority order; a role may have several specs (vLLM's KV usage falls back to the
    /// pre-0.10 name), the first one found wins.
    slots: Vec<Slot>,
    block_size_label: String,
    num_blocks_label: String,
    /// Distinct metric names of the slots: what the parser is asked for.
    wanted: Vec<String>,
}

fn spec(s: &str) -> Option<MetricSpec> {
    MetricSpec::parse(s).expect("built-in spec is valid")
}

impl EngineMapping {
    /// The built-in mapping of a GIE engine name (gie-epp.md §3.1), `None` for other names.
    pub fn builtin(name: &str) -> Option<Self> {
        let ec = |q: &str,
                  r: &str,
                  kv: &str,
                  lora: &str,
                  info: &str,
                  bl: &str,
                  nl: &str,
                  bs: &str,
                  nb: &str| EngineConfig {
            name: name.to_string(),
            queued_requests_spec: spec(q),
            running_requests_spec: spec(r),
            kv_usage_spec: spec(kv),
            lora_spec: spec(lora),
            cache_info_spec: spec(info),
            cache_block_size_label_name: Some(bl.to_string()),
            cache_num_blocks_label_name: Some(nl.to_string()),
            cache_block_size_spec: spec(bs),
            cache_num_blocks_spec: spec(nb),
        };
        let mut m = match name {
            "vllm" => Self::from_config(&ec(
                "vllm:num_requests_waiting",
                "vllm:num_requests_running",
                "vllm:kv_cache_usage_perc",
                "vllm:lora_requests_info",
                "vllm:cache_config_info",
                "block_size",
                "num_gpu_blocks",
                "",
                "",
            )),
            "sglang" => Self::from_config(&ec(
                "sglang:num_queue_reqs",
                "sglang:num_running_reqs",
                "sglang:token_usage",
                "",
                "sglang:cache_config_info",
                "page_size",
                "num_pages",
                "",
                "",
            )),
            "trtllm-serve" => Self::from_config(&ec(
                "trtllm_num_requests_waiting",
                "trtllm_num_requests_running",
                "trtllm_kv_cache_utilization",
                "",
                "",
                "block_size",
                "num_gpu_blocks",
                "trtllm_kv_cache_tokens_per_block",
                "trtllm_kv_cache_max_blocks",
            )),
            "triton-tensorrt-llm" => Self::from_config(&ec(
                "nv_trt_llm_request_metrics{request_type=waiting}",
                "nv_trt_llm_request_metrics{request_type=scheduled}",
                "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}",
                "",
                "",
                "block_size",
                "num_gpu_blocks",
                "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=tokens_per}",
                "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=max}",
            )),
            // Triton Inference Server for non-LLM models (llm-d-router v0.9+): queue and running
            // counts only, no KV cache or LoRA.
            "triton" => Self::from_config(&ec(
                "nv_inference_pending_request_count",
                "nv_inference_exec_count",
                "",
                "",
                "",
                "block_size",
                "num_gpu_blocks",
                "",
                "",
            )),
            _ => return None,
        };
        if name == "vllm" {
            // vLLM before 0.10 (and GIE before #1905) named it gpu_cache_usage_perc.
            m.push(Role::KvUsage, spec("vllm:gpu_cache_usage_perc"));
        }
        Some(m)
    }

    /// A mapping from a user's `engineConfigs` entry (no fallbacks: the user said what to read).
    pub fn from_config(c: &EngineConfig) -> Self {
        let mut m = Self {
            name: c.name.clone(),
            slots: Vec::new(),
            block_size_label: c
                .cache_block_size_label_name
                .clone()
                .unwrap_or_else(|| "block_size".into()),
            num_blocks_label: c
                .cache_num_blocks_label_name
                .clone()
                .unwrap_or_else(|| "num_gpu_blocks".into()),
            wanted: Vec::new(),
        };
        m.push(Role::Queued, c.queued_requests_spec.clone());
        m.push(Role::Running, c.running_requests_spec.clone());
        m.push(Role::KvUsage, c.kv_usage_spec.clone());
        m.push(Role::Lora, c.lora_spec.clone());
        m.push(Role::CacheInfo, c.cache_info_spec.clone());
        m.push(Role::CacheBlockSize, c.cache_block_size_spec.clone());
        m.push(Role::CacheNumBlocks, c.cache_num_blocks_spec.clone());
        m
    }

    fn push(&mut self, role: Role, spec: Option<MetricSpec>) {
        let Some(spec) = spec else { return };
        if !self.wanted.contains(&spec.name) {
            self.wanted.push(spec.name.clone());
        }
        self.slots.push(Slot { role, spec });
    }

    /// The metric names this mapping reads.
    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }

    /// The specs of `role`, in priority order.
    pub fn specs(&self, role: Role) -> impl Iterator<Item = &MetricSpec> {
        self.slots
            .iter()
            .filter(move |s| s.role == role)
            .map(|s| &s.spec)
    }

    /// Reads `body` (a `/metrics` page) into a copy of `prev`: fields whose spec succeeded are
    /// replaced, the others keep their previous values, and `updated_at` becomes `now` when any
    /// spec succeeded.
    pub fn extract(&self, body: &[u8], prev: &EndpointMetrics, now: Timestamp) -> Extraction {
        let mut v = Collect {
            mapping: self,
            found: vec![Found::default(); self.slots.len()],
            types: Vec::new(),
        };
        let stats = parse::parse(body, &mut v);
        let mut out = Extraction {
            metrics: prev.clone(),
            succeeded: 0,
            errors: Vec::new(),
            stats,
            kv_above_one: None,
            bad_load: false,
        };
        let m = &mut out.metrics;
        let mut done: Vec<Role> = Vec::with_capacity(7);
        let mut missing: Vec<Role> = Vec::new();
        for (slot, found) in self.slots.iter().zip(&v.found) {
            if done.contains(&slot.role) {
                continue;
            }
            let Some(sample) = found.sample else {
                if !missing.contains(&slot.role) {
                    missing.push(slot.role);
                }
                continue;
            };
            done.push(slot.role);
            let value = if v
                .type_of(&slot.spec.name)
                .is_some_and(|t| matches!(t, MetricType::Histogram | MetricType::Summary))
            {
                0.0 // GIE reads only gauges, counters (and untyped) values.
            } else {
                found.value
            };
            // A load value that is not a number, negative or infinite is unknown: the endpoint
            // is taken as fully loaded (it must not look idle and attract traffic) and this
            // scrape does not count as fresh.
            let load = matches!(slot.role, Role::Queued | Role::Running | Role::KvUsage);
            if load && !(value.is_finite() && value >= 0.0) {
                out.errors
                    .push(SpecError::new(slot.role, ErrorKind::BadValue));
                out.bad_load = true;
                match slot.role {
                    Role::Queued => m.waiting_queue_size = u64::MAX,
                    Role::Running => m.running_requests_size = u64::MAX,
                    _ => m.kv_cache_usage = 1.0,
                }
                continue;
            }
            let ok = match slot.role {
                Role::Queued => {
                    m.waiting_queue_size = to_count(value);
                    true
                }
                Role::Running => {
                    m.running_requests_size = to_count(value);
                    true
                }
                Role::KvUsage => {
                    if value > 1.0 {
                        out.kv_above_one = Some(value);
                    }
                    m.kv_cache_usage = value.min(1.0);
                    true
                }
                Role::Lora => {
                    let set = |label: &str| -> HashSet<String> {
                        sample.label(label).map_or_else(HashSet::new, |l| {
                            l.split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                    };
                    m.active_models = set("running_lora_adapters");
                    m.waiting_models = set("waiting_lora_adapters");
                    match int_label(&sample, "max_lora") {
                        Ok(n) => m.max_active_models = n as usize,
                        Err(kind) => out.errors.push(SpecError::new(slot.role, kind)),
                    }
                    true
                }
                Role::CacheInfo => {
                    let mut any = false;
                    match int_label(&sample, &self.block_size_label) {
                        Ok(n) => {
                            m.cache_block_size = u32::try_from(n).unwrap_or(u32::MAX);
                            any = true;
                        }
                        Err(kind) => out.errors.push(SpecError::new(slot.role, kind)),
                    }
                    match int_label(&sample, &self.num_blocks_label) {
                        Ok(n) => {
                            m.cache_num_blocks = n;
                            any = true;
                        }
                        Err(kind) => out.errors.push(SpecError::new(slot.role, kind)),
                    }
                    any
                }
                Role::CacheBlockSize => {
                    m.cache_block_size = u32::try_from(to_count(value)).unwrap_or(u32::MAX);
                    true
                }
                Role::CacheNumBlocks => {
                    m.cache_num_blocks = to_count(value);
                    true
                }
            };
            if ok {
                out.succeeded += 1;
            }
        }
        for role in missing {
            if !done.contains(&role) {
                out.errors.push(SpecError::new(role, ErrorKind::NotFound));
            }
        }
        if out.succeeded > 0 && !out.bad_load {
            out.metrics.updated_at = Some(now);
        }
        out
    }
}

/// What one extraction produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Extraction {
    /// The endpoint's new metrics (previous values where a spec failed).
    pub metrics: EndpointMetrics,
    /// Specs (roles) read successfully.
    pub succeeded: usize,
    /// Specs that failed, in role order; empty on a complete read.
    pub errors: Vec<SpecError>,
    pub stats: ParseStats,
    /// The raw KV usage when it was above 1 (then clamped): a percent-reporting adapter?
    pub kv_above_one: Option<f64>,
    /// A load value was unusable: the metrics were not refreshed (`updated_at` kept).
    pub bad_load: bool,
}

/// Why one spec could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub role: Role,
    pub kind: ErrorKind,
}

impl SpecError {
    fn new(role: Role, kind: ErrorKind) -> Self {
        Self { role, kind }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No series matched the spec ("metric family not found" in GIE).
    NotFound,
    /// The matching series lacks a label the role needs, or it is not a non-negative integer.
    BadLabel(String),
    /// A load value (queue, running, KV usage) that is NaN, infinite or negative.
    BadValue,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::NotFound => write!(f, "{}: metric not found", self.role.as_str()),
            ErrorKind::BadLabel(l) => {
                write!(
                    f,
                    "{}: label {l:?} missing or not an integer",
                    self.role.as_str()
                )
            }
            ErrorKind::BadValue => write!(
                f,
                "{}: value is NaN, infinite or negative (the endpoint counts as fully loaded)",
                self.role.as_str()
            ),
        }
    }
}

fn to_count(v: f64) -> u64 {
    // `as` saturates: negative and NaN become 0.
    v as u64
}

fn int_label(s: &Sample<'_>, key: &str) -> Result<u64, ErrorKind> {
    s.label(key)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ErrorKind::BadLabel(key.to_string()))
}

// === impl Collect ===

#[derive(Debug, Clone, Copy, Default)]
struct Found<'a> {
    /// The representative series: the first of the winning group (LoRA: the newest).
    sample: Option<Sample<'a>>,
    /// The group's aggregate.
    value: f64,
}

struct Collect<'m, 'a> {
    mapping: &'m EngineMapping,
    found: Vec<Found<'a>>,
    types: Vec<(&'a str, MetricType)>,
}

impl Collect<'_, '_> {
    fn type_of(&self, name: &str) -> Option<MetricType> {
        self.types.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

impl<'a> Visitor<'a> for Collect<'_, 'a> {
    fn wants(&mut self, name: &str) -> bool {
        self.mapping.wanted.iter().any(|w| w == name)
    }

    fn type_hint(&mut self, name: &'a str, ty: MetricType) {
        self.types.push((name, ty));
    }

    fn sample(&mut self, s: Sample<'a>) {
        for (slot, found) in self.mapping.slots.iter().zip(self.found.iter_mut()) {
            if slot.spec.name != s.name || !slot.spec.labels.iter().all(|(k, v)| s.has_label(k, v))
            {
                continue;
            }
            let Some(first) = found.sample else {
                *found = Found {
                    sample: Some(s),
                    value: s.value,
                };
                continue;
            };
            if slot.role == Role::Lora {
                // The value is the update's wall-clock time: the newest series is current.
                if s.value > found.value {
                    *found = Found {
                        sample: Some(s),
                        value: s.value,
                    };
                }
            } else if same_server_other_rank(&first, &s) {
                found.value = slot.role.aggregate(found.value, s.value);
            } else if s.timestamp.unwrap_or(0) > first.timestamp.unwrap_or(0) {
                // GIE's rule between unrelated series: the newest exposition timestamp wins.
                *found = Found {
                    sample: Some(s),
                    value: s.value,
                };
            }
        }
    }
}

/// Whether `a` and `b` have the same labels except for data-parallel ones, in which they differ.
fn same_server_other_rank(a: &Sample<'_>, b: &Sample<'_>) -> bool {
    let mut differs = false;
    let mut n_a = 0;
    for (k, v) in a.labels() {
        let dp = DATA_PARALLEL_LABELS.contains(&k);
        if !dp {
            n_a += 1;
        }
        match b.label(k) {
            Some(w) if w == v => {}
            Some(_) | None if dp => differs = true,
            _ => return false,
        }
    }
    let n_b = b
        .labels()
        .filter(|(k, _)| !DATA_PARALLEL_LABELS.contains(k))
        .count();
    if n_a != n_b {
        return false;
    }
    // A rank label only on `b` also tells the ranks apart.
    differs
        || b.labels()
            .any(|(k, _)| DATA_PARALLEL_LABELS.contains(&k) && a.label(k).is_none())
}

// === engine selection ===

/// The engines of one `core-metrics-extractor`, and how an endpoint picks one.
#[derive(Debug, Clone)]
pub struct Engines {
    label_key: String,
    default: Arc<EngineMapping>,
    by_name: HashMap<String, Arc<EngineMapping>>,
}

impl Engines {
    /// The built-ins, replaced entry by entry by `engineConfigs` (no field merge).
    pub fn new(p: &ExtractorParams) -> Self {
        let mut by_name: HashMap<String, Arc<EngineMapping>> = BUILTIN_ENGINES
            .iter()
            .filter_map(|n| EngineMapping::builtin(n))
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        for c in &p.engine_configs {
            by_name.insert(c.name.clone(), Arc::new(EngineMapping::from_config(c)));
        }
        let default = by_name
            .get(&p.default_engine)
            .or_else(|| by_name.get("vllm"))
            .cloned()
            .expect("vllm is built in");
        Self {
            label_key: p.engine_label_key.clone(),
            default,
            by_name,
        }
    }

    /// The mapping for `endpoint`: its engine label's value, else the default engine.
    pub fn select(&self, endpoint: &Endpoint) -> Arc<EngineMapping> {
        endpoint
            .labels
            .get(&self.label_key)
            .and_then(|e| self.by_name.get(e))
            .unwrap_or(&self.default)
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<EngineMapping>> {
        self.by_name.get(name)
    }
}

impl Default for Engines {
    fn default() -> Self {
        Self::new(&ExtractorParams::default())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
