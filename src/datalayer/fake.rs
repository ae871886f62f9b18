//! Realistic vLLM V1 `/metrics` pages, for tests, benchmarks and fake model servers.
//!
//! The families, label sets and histogram buckets follow vLLM's `PrometheusStatLogger` (about
//! v0.10; papers-and-data.md §5): every engine metric carries `engine` (the data-parallel rank) and
//! `model_name`, counters come with `_total` and `_created`, histograms with `_bucket`, `_sum` and
//! `_count`. A page with one engine is about 40 KB, like a real one.

use std::fmt::Write;

/// One data-parallel engine's live state.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineState {
    pub waiting: u64,
    pub running: u64,
    /// KV-cache usage as a fraction.
    pub kv_usage: f64,
}

/// LoRA state as `vllm:lora_requests_info` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraState {
    pub max_lora: u32,
    pub running: Vec<String>,
    pub waiting: Vec<String>,
    /// The series value: the wall-clock time of the update.
    pub updated: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VllmPage {
    pub model: String,
    /// One entry per data-parallel rank (`engine="0"`, `"1"`, …).
    pub engines: Vec<EngineState>,
    pub lora: Option<LoraState>,
    pub block_size: u32,
    pub num_gpu_blocks: u64,
    /// Name KV usage `vllm:gpu_cache_usage_perc`, as vLLM before 0.10 did.
    pub legacy_kv_name: bool,
    /// Include the latency and size histograms (most of a real page's bytes).
    pub histograms: bool,
}

impl Default for VllmPage {
    fn default() -> Self {
        Self {
            model: "meta-llama/Llama-3.1-8B-Instruct".into(),
            engines: vec![EngineState {
                waiting: 0,
                running: 0,
                kv_usage: 0.0,
            }],
            lora: None,
            block_size: 16,
            num_gpu_blocks: 27_000,
            legacy_kv_name: false,
            histograms: true,
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0, 100000.0, 131072.0,
];
const ITERATION_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
const N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];

impl VllmPage {
    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(48 * 1024 * self.engines.len().max(1));
        let w = &mut out;
        python_process_metrics(w);
        let ranks: Vec<String> = (0..self.engines.len())
            .map(|i| format!("engine=\"{i}\",model_name=\"{}\"", self.model))
            .collect();
        let gauge = |w: &mut String, name: &str, help: &str, f: &dyn Fn(&EngineState) -> f64| {
            let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (l, e) in ranks.iter().zip(&self.engines) {
                let _ = writeln!(w, "{name}{{{l}}} {:?}", f(e));
            }
        };
        gauge(
            w,
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            &|e| e.running as f64,
        );
        gauge(
            w,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            &|e| e.waiting as f64,
        );
        let kv = if self.legacy_kv_name {
            "vllm:gpu_cache_usage_perc"
        } else {
            "vllm:kv_cache_usage_perc"
        };
        gauge(w, kv, "KV-cache usage. 1 means 100 percent usage.", &|e| {
            e.kv_usage
        });
        if let Some(l) = &self.lora {
            let _ = writeln!(
                w,
                "# HELP vllm:lora_requests_info Running stats on lora requests.\n# TYPE vllm:lora_requests_info gauge\n\
                 vllm:lora_requests_info{{max_lora=\"{}\",running_lora_adapters=\"{}\",waiting_lora_adapters=\"{}\"}} {:e}",
                l.max_lora,
                l.running.join(","),
                l.waiting.join(","),
                l.updated
            );
        }
        let counters = [
            (
                "vllm:num_preemptions",
                "Cumulative number of preemption from the engine.",
            ),
            ("vllm:prompt_tokens", "Number of prefill tokens processed."),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
            ),
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
            ),
            (
                "vllm:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
            ),
        ];
        for (i, (name, help)) in counters.iter().enumerate() {
            let _ = writeln!(w, "# HELP {name}_total {help}\n# TYPE {name}_total counter");
            for l in &ranks {
                let _ = writeln!(w, "{name}_total{{{l}}} {:.1}", 1000.0 * (i + 1) as f64);
            }
            let _ = writeln!(
                w,
                "# HELP {name}_created {help}\n# TYPE {name}_created gauge"
            );
            for l in &ranks {
                let _ = writeln!(w, "{name}_created{{{l}}} 1.7321234567891e+09");
            }
        }
        let _ = writeln!(
            w,
            "# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter"
        );
        for l in &ranks {
            for reason in ["stop", "length", "abort"] {
                let _ = writeln!(
                    w,
                    "vllm:request_success_total{{{l},finished_reason=\"{reason}\"}} 17.0"
                );
            }
        }
        if self.histograms {
            let hists: [(&str, &str, &[f64]); 15] = [
                (
                    "vllm:iteration_tokens_total",
                    "Histogram of number of tokens per engine_step.",
                    ITERATION_BUCKETS,
                ),
                (
                    "vllm:time_to_first_token_seconds",
                    "Histogram of time to first token in seconds.",
                    TTFT_BUCKETS,
                ),
                (
                    "vllm:time_per_output_token_seconds",
                    "Histogram of time per output token in seconds.",
                    TPOT_BUCKETS,
                ),
                (
                    "vllm:inter_token_latency_seconds",
                    "Histogram of inter-token latency in seconds.",
                    TPOT_BUCKETS,
                ),
                (
                    "vllm:request_time_per_output_token_seconds",
                    "Histogram of time_per_output_token_seconds per request.",
                    TPOT_BUCKETS,
                ),
                (
                    "vllm:e2e_request_latency_seconds",
                    "Histogram of e2e request latency in seconds.",
                    LATENCY_BUCKETS,
                ),
                (
                    "vllm:request_queue_time_seconds",
                    "Histogram of time spent in WAITING phase for request.",
                    LATENCY_BUCKETS,
                ),
                (
                    "vllm:request_inference_time_seconds",
                    "Histogram of time spent in RUNNING phase for request.",
                    LATENCY_BUCKETS,
                ),
                (
                    "vllm:request_prefill_time_seconds",
                    "Histogram of time spent in PREFILL phase for request.",
                    LATENCY_BUCKETS,
                ),
                (
                    "vllm:request_decode_time_seconds",
                    "Histogram of time spent in DECODE phase for request.",
                    LATENCY_BUCKETS,
                ),
                (
                    "vllm:request_prompt_tokens",
                    "Number of prefill tokens processed.",
                    TOKEN_BUCKETS,
                ),
                (
                    "vllm:request_generation_tokens",
                    "Number of generation tokens processed.",
                    TOKEN_BUCKETS,
                ),
                (
                    "vllm:request_max_num_generation_tokens",
                    "Histogram of maximum number of requested generation tokens.",
                    TOKEN_BUCKETS,
                ),
                (
                    "vllm:request_params_max_tokens",
                    "Histogram of the max_tokens request parameter.",
                    TOKEN_BUCKETS,
                ),
                (
                    "vllm:request_params_n",
                    "Histogram of the n request parameter.",
                    N_BUCKETS,
                ),
            ];
            for (name, help, buckets) in hists {
                let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} histogram");
                for l in &ranks {
                    let mut count = 0.0;
                    for (i, le) in buckets.iter().enumerate() {
                        count += (i * 7 % 13) as f64;
                        let _ = writeln!(w, "{name}_bucket{{{l},le=\"{le:?}\"}} {count:?}");
                    }
                    let _ = writeln!(w, "{name}_bucket{{{l},le=\"+Inf\"}} {count:?}");
                    let _ = writeln!(w, "{name}_count{{{l}}} {count:?}");
                    let _ = writeln!(w, "{name}_sum{{{l}}} {:?}", count * 0.37);
                }
                let _ = writeln!(
                    w,
                    "# HELP {name}_created {help}\n# TYPE {name}_created gauge"
                );
                for l in &ranks {
                    let _ = writeln!(w, "{name}_created{{{l}}} 1.7321234567891e+09");
                }
            }
        }
        let _ = writeln!(
            w,
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge"
        );
        for l in &ranks {
            let _ = writeln!(
                w,
                "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\",calculate_kv_scales=\"False\",cpu_offload_gb=\"0\",{l},\
                 enable_prefix_caching=\"True\",gpu_memory_utilization=\"0.9\",is_attention_free=\"False\",num_cpu_blocks=\"None\",\
                 num_gpu_blocks=\"{}\",num_gpu_blocks_override=\"None\",prefix_caching_hash_algo=\"sha256\",sliding_window=\"None\",\
                 swap_space=\"4\",swap_space_bytes=\"4294967296\"}} 1.0",
                self.block_size, self.num_gpu_blocks
            );
        }
        out
    }
}

fn python_process_metrics(w: &mut String) {
    w.push_str(
        "# HELP python_gc_objects_collected_total Objects collected during gc\n\
         # TYPE python_gc_objects_collected_total counter\n\
         python_gc_objects_collected_total{generation=\"0\"} 12345.0\n\
         python_gc_objects_collected_total{generation=\"1\"} 2345.0\n\
         python_gc_objects_collected_total{generation=\"2\"} 345.0\n\
         # HELP python_info Python platform information\n\
         # TYPE python_info gauge\n\
         python_info{implementation=\"CPython\",major=\"3\",minor=\"12\",patchlevel=\"3\",version=\"3.12.3\"} 1.0\n\
         # HELP process_virtual_memory_bytes Virtual memory size in bytes.\n\
         # TYPE process_virtual_memory_bytes gauge\n\
         process_virtual_memory_bytes 4.6127259648e+010\n\
         # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
         # TYPE process_resident_memory_bytes gauge\n\
         process_resident_memory_bytes 3.525697536e+09\n\
         # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total 1234.56\n",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datalayer::parse::parse_all;

    #[test]
    fn pages_parse_cleanly_and_are_realistically_sized() {
        let p = VllmPage::default();
        let text = p.render();
        let (c, stats) = parse_all(text.as_bytes());
        assert_eq!(stats.bad_lines, 0);
        assert!(c.samples.len() > 300);
        assert!((30_000..60_000).contains(&text.len()), "{}", text.len());
        let dp = VllmPage {
            engines: vec![p.engines[0].clone(); 2],
            ..p
        };
        assert!(dp.render().len() > 60_000);
    }
}
