//! `approx-prefix-cache-producer`: before scoring, hashes the prompt and fills the prefix match
//! info that `prefix-cache-scorer` reads; after the pick, records the request's blocks on the
//! chosen endpoint.
//!
//! GIE updates its index in a goroutine after the pick; here the update runs inline in the
//! pre-request hook. It touches at most `maxPrefixBlocksToMatch` hashes under short per-shard
//! locks, so doing it inline costs microseconds and keeps the core deterministic.

use std::sync::Arc;

use serde_json::{Value, json};

use super::hashing::{BlockHasher, CHARS_PER_TOKEN, chain_seed};
use super::index::PrefixIndex;
use super::metrics::PrefixMetrics;
use crate::decode::{Diagnostics, Obj, Params, show};
use crate::scheduling::{
    CycleState, DataProducer, EndpointSnapshot, PreRequest, PrefixMatchInfo, Request,
    SchedulingContext, SchedulingResult, Timestamp,
};

/// The profile name GIE treats as the prefill stage in P/D disaggregation.
pub const PREFILL_PROFILE: &str = "prefill";

/// `approx-prefix-cache-producer`'s parameters, with GIE's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixProducerParams {
    /// Take the block size and LRU capacity from each endpoint's cache metrics when known.
    pub auto_tune: bool,
    pub block_size_tokens: u32,
    pub max_prefix_blocks_to_match: u32,
    /// When > 0, overrides `max_prefix_blocks_to_match` as `tokens / block_size_tokens`.
    pub max_prefix_tokens_to_match: u64,
    /// LRU capacity of an endpoint whose `num_gpu_blocks` is unknown.
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
    /// Blocks hashed and matched at most, after `maxPrefixTokensToMatch`.
    pub fn max_blocks(&self) -> u32 {
        if self.max_prefix_tokens_to_match > 0 {
            let b = self.max_prefix_tokens_to_match / u64::from(self.block_size_tokens.max(1));
            u32::try_from(b).unwrap_or(u32::MAX).max(1)
        } else {
            self.max_prefix_blocks_to_match
        }
    }

    /// Whether an index built with `self` can keep serving `other`: the same blocks are hashed
    /// the same way (the LRU capacity may differ).
    pub fn same_hashing(&self, other: &Self) -> bool {
        self.auto_tune == other.auto_tune
            && self.block_size_tokens == other.block_size_tokens
            && self.max_blocks() == other.max_blocks()
    }
}

impl Params for PrefixProducerParams {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(b) = o.bool("autoTune", d) {
            p.auto_tune = b;
        }
        let tokens_set = o.has("blockSizeTokens");
        if let Some(v) = o.positive_u32("blockSizeTokens", d) {
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
        if let Some(v) = o.positive_u32("maxPrefixBlocksToMatch", d) {
            p.max_prefix_blocks_to_match = v;
        }
        if let Some(v) = o.u64("maxPrefixTokensToMatch", d) {
            p.max_prefix_tokens_to_match = v;
        }
        if let Some(v) = o.positive_u64("lruCapacityPerServer", d) {
            p.lru_capacity_per_server = v;
        }
        p
    }

    fn render(&self) -> Option<Value> {
        Some(json!({
            "autoTune": self.auto_tune,
            "blockSizeTokens": self.block_size_tokens,
            "maxPrefixBlocksToMatch": self.max_prefix_blocks_to_match,
            "maxPrefixTokensToMatch": self.max_prefix_tokens_to_match,
            "lruCapacityPerServer": self.lru_capacity_per_server,
        }))
    }
}

pub struct ApproxPrefixCacheProducer {
    settings: PrefixProducerParams,
    index: Arc<PrefixIndex>,
    metrics: PrefixMetrics,
}

impl std::fmt::Debug for ApproxPrefixCacheProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproxPrefixCacheProducer")
            .field("settings", &self.settings)
            .field("index", &self.index)
            .finish()
    }
}

impl ApproxPrefixCacheProducer {
    pub fn new(settings: PrefixProducerParams, metrics: PrefixMetrics) -> Self {
        Self {
            settings,
            index: Arc::new(PrefixIndex::new(settings.lru_capacity_per_server)),
            metrics,
        }
    }

    /// A producer with `settings` that keeps `previous`'s index: a configuration reload whose
    /// hashing is unchanged keeps what the index learned.
    pub fn sharing(
        settings: PrefixProducerParams,
        previous: &ApproxPrefixCacheProducer,
        metrics: PrefixMetrics,
    ) -> Self {
        Self {
            settings,
            index: previous.index.clone(),
            metrics,
        }
    }

    pub fn settings(&self) -> &PrefixProducerParams {
        &self.settings
    }

    pub fn index(&self) -> &Arc<PrefixIndex> {
        &self.index
    }

    /// Forgets every endpoint for which `keep` is false; the server calls this when endpoints
    /// leave the pool (GIE sweeps every 2 minutes).
    pub fn retain_endpoints(&self, keep: impl FnMut(&str) -> bool) -> usize {
        let n = self.index.retain(keep);
        self.metrics.size.set(self.index.len() as i64);
        n
    }

    /// Tokens per block: with `autoTune`, the first candidate's `block_size` metric when known.
    pub fn block_size(&self, snapshot: &EndpointSnapshot, candidates: &[usize]) -> u32 {
        if self.settings.auto_tune
            && let Some(&first) = candidates.first()
        {
            let bs = snapshot.get(first).metrics.cache_block_size;
            if bs > 0 {
                return bs;
            }
        }
        self.settings.block_size_tokens
    }

    /// The request's chained block hashes with `block_size` tokens per block.
    pub fn hash_request(&self, request: &Request, block_size: u32, out: &mut Vec<u64>) {
        let hasher = BlockHasher::new(block_size, self.settings.max_blocks());
        if hasher.block_count(request.prompt.len()) == 0 {
            out.clear();
            return;
        }
        let seed = chain_seed(&request.target_model, request.cache_salt.as_deref());
        hasher.hash_into(&request.prompt, seed, out);
    }
}

impl DataProducer for ApproxPrefixCacheProducer {
    fn type_name(&self) -> &'static str {
        "approx-prefix-cache-producer"
    }

    fn produce(
        &self,
        request: &Request,
        snapshot: &EndpointSnapshot,
        candidates: &[usize],
        _now: Timestamp,
        state: &mut CycleState,
    ) {
        let block_size = self.block_size(snapshot, candidates);
        let mut hashes = Vec::new();
        self.hash_request(request, block_size, &mut hashes);
        // Left empty (which readers treat as all zeros) unless something matched.
        let mut matched_blocks = Vec::new();
        if !hashes.is_empty() {
            let mut counts = Vec::new();
            if self.index.match_longest_prefix(&hashes, &mut counts) > 0 {
                matched_blocks = vec![0u32; snapshot.len()];
                let mut per_candidate = Vec::with_capacity(candidates.len());
                self.index.counts_for(
                    &counts,
                    candidates
                        .iter()
                        .map(|&i| snapshot.get(i).endpoint.name.as_str()),
                    &mut per_candidate,
                );
                for (&i, c) in candidates.iter().zip(per_candidate) {
                    matched_blocks[i] = c;
                }
            }
        }
        state.prefix = Some(PrefixMatchInfo {
            matched_blocks,
            total_blocks: hashes.len() as u32,
            block_size_tokens: block_size,
            hashes,
        });
    }
}

impl PreRequest for ApproxPrefixCacheProducer {
    fn type_name(&self) -> &'static str {
        "approx-prefix-cache-producer"
    }

    /// Records all the request's hashes on the primary profile's first target, and on the first
    /// target of a profile named `prefill` (P/D), then observes the hit metrics.
    fn pre_request(&self, ctx: &SchedulingContext<'_>, result: &SchedulingResult) {
        let Some(info) = &ctx.state.prefix else {
            return;
        };
        let Some(primary) = result.targets().first().map(|t| t.index) else {
            return;
        };
        let prefill = result
            .profile(PREFILL_PROFILE)
            .and_then(|p| p.targets.first())
            .map(|t| t.index)
            .filter(|&i| i != primary);
        if !info.hashes.is_empty() {
            for i in std::iter::once(primary).chain(prefill) {
                let st = ctx.snapshot.get(i);
                let capacity = if self.settings.auto_tune {
                    st.metrics.cache_num_blocks
                } else {
                    0
                };
                self.index.record(&st.endpoint.name, capacity, &info.hashes);
            }
            self.metrics.size.set(self.index.len() as i64);
        }
        let bytes_per_block = u64::from(info.block_size_tokens) * CHARS_PER_TOKEN as u64;
        let matched = info.matched_blocks.get(primary).copied().unwrap_or(0);
        // Saturating: the block size comes from scraped metrics and may be absurd.
        self.metrics.observe_match(
            u64::from(matched).saturating_mul(bytes_per_block),
            u64::from(info.total_blocks).saturating_mul(bytes_per_block),
        );
    }
}

#[cfg(test)]
mod tests;
