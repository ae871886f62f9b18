//! Engine state and counters for `/metrics` (vLLM V1 semantics).

use std::time::Duration;

use super::FinishReason;

/// A snapshot of an engine's gauges and counters. Counters are cumulative since
/// [`super::Engine::new`]; gauges reflect the state after the last call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// `vllm:num_requests_running`: sequences in the running batch.
    pub num_requests_running: u32,
    /// `vllm:num_requests_waiting`: waiting-queue length, preempted requests included.
    pub num_requests_waiting: u32,
    /// `vllm:kv_cache_usage_perc` as a FRACTION in [0, 1]: blocks held by requests ÷ total
    /// (evictable cached blocks count as free).
    pub kv_cache_usage: f64,
    /// `cache_config_info{num_gpu_blocks}`.
    pub num_gpu_blocks: u32,
    /// `cache_config_info{block_size}`.
    pub block_size: u32,
    /// Blocks registered in the prefix cache (held or evictable).
    pub num_cached_blocks: u32,
    /// `vllm:prefix_cache_queries_total`: prompt tokens looked up (once per request, at admission).
    pub prefix_cache_queries_tokens: u64,
    /// `vllm:prefix_cache_hits_total`: of those, tokens found cached.
    pub prefix_cache_hits_tokens: u64,
    /// `vllm:prompt_tokens_total`: prompt tokens of requests that produced their first token.
    pub prompt_tokens_total: u64,
    /// `vllm:generation_tokens_total`: output tokens produced.
    pub generation_tokens_total: u64,
    /// `vllm:num_preemptions_total`.
    pub num_preemptions: u64,
    /// `vllm:request_success_total{finished_reason}`, indexed by [`FinishReason::index`].
    pub request_success: [u64; 3],
    /// `vllm:lora_requests_info{running_lora_adapters}` (join with `,`).
    pub running_lora_adapters: Vec<String>,
    /// `vllm:lora_requests_info{waiting_lora_adapters}` (join with `,`).
    pub waiting_lora_adapters: Vec<String>,
    /// `vllm:lora_requests_info{max_lora}`.
    pub max_loras: u32,
    /// Engine steps run so far (non-empty ones).
    pub num_steps: u64,
    /// Sum of step durations so far (busy time).
    pub busy_time: Duration,
}

impl EngineStats {
    /// `request_success_total` for `reason`.
    pub fn request_success(&self, reason: FinishReason) -> u64 {
        self.request_success[reason.index()]
    }
}
