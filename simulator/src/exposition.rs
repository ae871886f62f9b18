//! `/metrics` pages in the exact text format of the engine a fake pod impersonates: vLLM (with
//! `engine` and `model_name` labels, HELP/TYPE, `_created`, histograms with vLLM's buckets,
//! `cache_config_info`, `lora_requests_info`), SGLang, trtllm-serve and Triton TensorRT-LLM.

use std::fmt::Write;

use crate::engine::EngineStats;

/// Which engine's metric names a pod exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Vllm,
    Sglang,
    TrtllmServe,
    TritonTrtllm,
}

impl Personality {
    pub const NAMES: [&'static str; 4] = ["vllm", "sglang", "trtllm-serve", "triton-tensorrt-llm"];

    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "vllm" => Self::Vllm,
            "sglang" => Self::Sglang,
            "trtllm-serve" => Self::TrtllmServe,
            "triton-tensorrt-llm" => Self::TritonTrtllm,
            _ => return None,
        })
    }

    /// The value of the `inference.networking.k8s.io/engine-type` label for this engine.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vllm => "vllm",
            Self::Sglang => "sglang",
            Self::TrtllmServe => "trtllm-serve",
            Self::TritonTrtllm => "triton-tensorrt-llm",
        }
    }

    /// The path the engine serves metrics on.
    pub fn metrics_path(self) -> &'static str {
        match self {
            Self::TrtllmServe => "/prometheus/metrics",
            _ => "/metrics",
        }
    }
}

pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
pub const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];

/// A cumulative histogram with fixed bucket edges.
#[derive(Debug, Clone)]
pub struct Histogram {
    edges: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(edges: &'static [f64]) -> Self {
        Self {
            edges,
            counts: vec![0; edges.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.edges.iter().position(|&e| v <= e) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        for (e, c) in self.edges.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{e:?}\"}} {cum}.0");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}.0",
            self.count
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}.0", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
    }
}

/// Latency histograms a pod keeps from its requests' events.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub ttft: Histogram,
    pub e2e: Histogram,
    pub itl: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            ttft: Histogram::new(TTFT_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
        }
    }
}

/// Everything a page shows.
pub struct PageInput<'a> {
    pub model: &'a str,
    pub stats: &'a EngineStats,
    pub latencies: &'a Latencies,
    /// Unix time the pod started (for `_created` series).
    pub created: f64,
    /// Unix time now (the `lora_requests_info` value).
    pub now: f64,
}

pub fn render(p: Personality, input: &PageInput<'_>) -> String {
    match p {
        Personality::Vllm => vllm(input),
        Personality::Sglang => sglang(input),
        Personality::TrtllmServe => trtllm_serve(input),
        Personality::TritonTrtllm => triton(input),
    }
}

fn vllm(i: &PageInput<'_>) -> String {
    let s = i.stats;
    let l = format!("engine=\"0\",model_name=\"{}\"", i.model);
    let mut o = String::with_capacity(16 * 1024);
    let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{l}}} {v:?}"
        );
    };
    let counter = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            o,
            "# HELP {name}_total {help}\n# TYPE {name}_total counter\n{name}_total{{{l}}} {v}.0\n# HELP {name}_created {help}\n# TYPE {name}_created gauge\n{name}_created{{{l}}} {:?}",
            i.created
        );
    };
    gauge(
        &mut o,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        f64::from(s.num_requests_running),
    );
    gauge(
        &mut o,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        f64::from(s.num_requests_waiting),
    );
    gauge(
        &mut o,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        s.kv_cache_usage,
    );
    counter(
        &mut o,
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        s.prefix_cache_queries_tokens,
    );
    counter(
        &mut o,
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        s.prefix_cache_hits_tokens,
    );
    counter(
        &mut o,
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        s.num_preemptions,
    );
    counter(
        &mut o,
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        s.prompt_tokens_total,
    );
    counter(
        &mut o,
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        s.generation_tokens_total,
    );
    let _ = writeln!(
        o,
        "# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter"
    );
    for (reason, v) in [
        ("stop", s.request_success[0]),
        ("length", s.request_success[1]),
        ("abort", s.request_success[2]),
    ] {
        let _ = writeln!(
            o,
            "vllm:request_success_total{{{l},finished_reason=\"{reason}\"}} {v}.0"
        );
    }
    let _ = writeln!(
        o,
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\",enable_prefix_caching=\"True\",engine=\"0\",gpu_memory_utilization=\"0.9\",num_gpu_blocks=\"{}\",prefix_caching_hash_algo=\"sha256\"}} 1.0",
        s.block_size, s.num_gpu_blocks
    );
    if s.max_loras > 0 {
        let _ = writeln!(
            o,
            "# HELP vllm:lora_requests_info Running stats on lora requests.\n# TYPE vllm:lora_requests_info gauge\nvllm:lora_requests_info{{max_lora=\"{}\",running_lora_adapters=\"{}\",waiting_lora_adapters=\"{}\"}} {:?}",
            s.max_loras,
            s.running_lora_adapters.join(","),
            s.waiting_lora_adapters.join(","),
            i.now
        );
    }
    for (name, help, h) in [
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &i.latencies.ttft,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &i.latencies.e2e,
        ),
        (
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            &i.latencies.itl,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
        h.write(&mut o, name, &l);
    }
    o
}

fn sglang(i: &PageInput<'_>) -> String {
    let s = i.stats;
    let l = format!("model_name=\"{}\"", i.model);
    let hit = if s.prefix_cache_queries_tokens > 0 {
        s.prefix_cache_hits_tokens as f64 / s.prefix_cache_queries_tokens as f64
    } else {
        0.0
    };
    let mut o = String::new();
    for (name, help, v) in [
        (
            "sglang:num_running_reqs",
            "The number of running requests.",
            f64::from(s.num_requests_running),
        ),
        (
            "sglang:num_queue_reqs",
            "The number of requests in the waiting queue.",
            f64::from(s.num_requests_waiting),
        ),
        ("sglang:token_usage", "The token usage.", s.kv_cache_usage),
        ("sglang:cache_hit_rate", "The prefix cache hit rate.", hit),
    ] {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{l}}} {v:?}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP sglang:cache_config_info Information of the cache config\n# TYPE sglang:cache_config_info gauge\nsglang:cache_config_info{{{l},num_pages=\"{}\",page_size=\"{}\"}} 1.0",
        s.num_gpu_blocks, s.block_size
    );
    for (name, v) in [
        ("sglang:prompt_tokens_total", s.prompt_tokens_total),
        ("sglang:generation_tokens_total", s.generation_tokens_total),
    ] {
        let _ = writeln!(
            o,
            "# HELP {name} Number of tokens.\n# TYPE {name} counter\n{name}{{{l}}} {v}.0"
        );
    }
    let _ = writeln!(
        o,
        "# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.\n# TYPE sglang:time_to_first_token_seconds histogram"
    );
    i.latencies
        .ttft
        .write(&mut o, "sglang:time_to_first_token_seconds", &l);
    o
}

fn trtllm_serve(i: &PageInput<'_>) -> String {
    let s = i.stats;
    let l = format!("model_name=\"{}\",engine_type=\"trtllm\"", i.model);
    let mut o = String::new();
    for (name, help, v) in [
        (
            "trtllm_num_requests_running",
            "Number of requests running.",
            f64::from(s.num_requests_running),
        ),
        (
            "trtllm_num_requests_waiting",
            "Number of requests waiting.",
            f64::from(s.num_requests_waiting),
        ),
        (
            "trtllm_kv_cache_utilization",
            "KV cache utilization.",
            s.kv_cache_usage,
        ),
        (
            "trtllm_kv_cache_tokens_per_block",
            "Tokens per KV cache block.",
            f64::from(s.block_size),
        ),
        (
            "trtllm_kv_cache_max_blocks",
            "Maximum KV cache blocks.",
            f64::from(s.num_gpu_blocks),
        ),
    ] {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{l}}} {v:?}"
        );
    }
    o
}

fn triton(i: &PageInput<'_>) -> String {
    let s = i.stats;
    let used = (s.kv_cache_usage * f64::from(s.num_gpu_blocks)).round();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP nv_trt_llm_request_metrics TRT LLM request metrics\n# TYPE nv_trt_llm_request_metrics gauge"
    );
    for (t, v) in [
        ("context", 0.0),
        ("scheduled", f64::from(s.num_requests_running)),
        ("max", 1024.0),
        (
            "active",
            f64::from(s.num_requests_running + s.num_requests_waiting),
        ),
        ("waiting", f64::from(s.num_requests_waiting)),
    ] {
        let _ = writeln!(
            o,
            "nv_trt_llm_request_metrics{{model=\"tensorrt_llm\",request_type=\"{t}\",version=\"1\"}} {v:?}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics\n# TYPE nv_trt_llm_kv_cache_block_metrics gauge"
    );
    for (t, v) in [
        ("fraction", s.kv_cache_usage),
        ("tokens_per", f64::from(s.block_size)),
        ("used", used),
        ("free", f64::from(s.num_gpu_blocks) - used),
        ("max", f64::from(s.num_gpu_blocks)),
    ] {
        let _ = writeln!(
            o,
            "nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type=\"{t}\",model=\"tensorrt_llm\",version=\"1\"}} {v:?}"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut s = String::new();
        h.write(&mut s, "x", "a=\"1\"");
        assert!(s.contains("x_bucket{a=\"1\",le=\"0.1\"} 1.0"));
        assert!(s.contains("x_bucket{a=\"1\",le=\"1.0\"} 2.0"));
        assert!(s.contains("x_bucket{a=\"1\",le=\"+Inf\"} 3.0"));
        assert!(s.contains("x_count{a=\"1\"} 3.0"));
    }
}
