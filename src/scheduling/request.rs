//! The request as the scheduler sees it, and the per-request state plugins hand to each other.

use std::net::IpAddr;

use bytes::Bytes;

/// The fairness id used when the gateway sends none (GIE's `default-flow`).
pub const DEFAULT_FAIRNESS_ID: &str = "default-flow";

/// An inference request, built once by the request path (ext_proc or the simulator).
#[derive(Debug, Clone)]
pub struct Request {
    pub request_id: String,
    /// The model the client asked for (`model` in the body).
    pub incoming_model: String,
    /// The model sent to the backend after rewrites; LoRA affinity and prefix hashing use this one.
    pub target_model: String,
    /// The bytes prefix hashing reads. Usually a zero-copy slice of the request body (the prompt
    /// or the raw `messages` JSON); an owned buffer only when the body had to be unescaped.
    pub prompt: Bytes,
    /// `cache_salt` from the body, which partitions the prefix cache.
    pub cache_salt: Option<String>,
    /// Size of the request body in bytes, the basis of token estimates.
    pub body_size: usize,
    /// Request headers, names in lower case as Envoy sends them.
    pub headers: Vec<(String, String)>,
    /// Tenant for fair scheduling (`x-gateway-inference-fairness-id`).
    pub fairness_id: String,
    /// Priority from the InferenceObjective; below zero means sheddable.
    pub priority: i32,
    /// Subset hint from the gateway: `None` allows every endpoint.
    pub subset: Option<Vec<IpAddr>>,
}

impl Request {
    /// A request for `model` with no prompt, headers or hint; the other fields are set directly.
    pub fn new(request_id: impl Into<String>, model: impl Into<String>) -> Self {
        let model = model.into();
        Self {
            request_id: request_id.into(),
            incoming_model: model.clone(),
            target_model: model,
            prompt: Bytes::new(),
            cache_salt: None,
            body_size: 0,
            headers: Vec::new(),
            fairness_id: DEFAULT_FAIRNESS_ID.to_string(),
            priority: 0,
            subset: None,
        }
    }

    /// The first value of header `name` (give it in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether flow control may drop this request when the pool is saturated.
    pub fn is_sheddable(&self) -> bool {
        self.priority < 0
    }
}

/// How much of the request's prefix each candidate already caches, produced before scoring by the
/// prefix producer and read by `prefix-cache-scorer`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixMatchInfo {
    /// Matched blocks, indexed like the endpoint snapshot; missing entries (an empty vector when
    /// nothing matched) mean 0.
    pub matched_blocks: Vec<u32>,
    /// Blocks in the request's prompt.
    pub total_blocks: u32,
    pub block_size_tokens: u32,
    /// The request's chained block hashes, kept so the pre-request hook records them on the
    /// picked endpoint without hashing again.
    pub hashes: Vec<u64>,
}

/// Work in flight on one endpoint, as counted by the in-flight load producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointLoad {
    pub requests: u64,
    pub tokens: u64,
}

/// Per-request data that producers write before scoring and later hooks read. Typed slots rather
/// than a string-keyed map: the set of producers is closed and known at build time.
#[derive(Debug, Clone, Default)]
pub struct CycleState {
    pub prefix: Option<PrefixMatchInfo>,
    /// In-flight load, indexed like the endpoint snapshot.
    pub inflight: Option<Vec<EndpointLoad>>,
}

impl CycleState {
    /// Matched and total prefix blocks for the endpoint at `index`, when a producer ran.
    pub fn prefix_match(&self, index: usize) -> Option<(u32, u32)> {
        self.prefix.as_ref().map(|p| {
            (
                p.matched_blocks.get(index).copied().unwrap_or(0),
                p.total_blocks,
            )
        })
    }

    /// The share of the request's prefix blocks the endpoint at `index` holds, when a producer
    /// ran and the prompt has blocks.
    pub fn prefix_hit_ratio(&self, index: usize) -> Option<f64> {
        self.prefix_match(index)
            .filter(|&(_, total)| total > 0)
            .map(|(matched, total)| f64::from(matched) / f64::from(total))
    }

    pub fn inflight_load(&self, index: usize) -> EndpointLoad {
        self.inflight
            .as_ref()
            .and_then(|l| l.get(index).copied())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_defaults() {
        let r = Request::new("id-1", "llama");
        assert_eq!(r.incoming_model, "llama");
        assert_eq!(r.target_model, "llama");
        assert_eq!(r.fairness_id, "default-flow");
        assert_eq!(r.priority, 0);
        assert!(!r.is_sheddable());
        assert!(r.subset.is_none());
    }

    #[test]
    fn header_lookup_and_sheddable() {
        let mut r = Request::new("id", "m");
        r.headers.push(("x-a".into(), "1".into()));
        r.headers.push(("x-a".into(), "2".into()));
        r.priority = -1;
        assert_eq!(r.header("x-a"), Some("1"));
        assert_eq!(r.header("x-b"), None);
        assert!(r.is_sheddable());
    }

    #[test]
    fn cycle_state_lookups() {
        let mut s = CycleState::default();
        assert_eq!(s.prefix_match(0), None);
        assert_eq!(s.inflight_load(3), EndpointLoad::default());
        s.prefix = Some(PrefixMatchInfo {
            matched_blocks: vec![2, 0],
            total_blocks: 4,
            block_size_tokens: 16,
            hashes: Vec::new(),
        });
        assert_eq!(s.prefix_match(0), Some((2, 4)));
        assert_eq!(s.prefix_match(5), Some((0, 4)));
    }
}
