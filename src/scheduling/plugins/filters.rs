//! The built-in filters.

use std::net::IpAddr;
use std::time::Duration;

use rand::RngExt;
use serde_json::{Value, json};

use crate::decode::{Diagnostics, Obj, Params, format_duration};
use crate::scheduling::plugin::{
    Filter, FilterCheck, SaturationDetector, SchedulerRng, SchedulingContext,
};
use crate::scheduling::{EndpointSnapshot, Timestamp};

// === impl HeaderBasedTestingFilter ===

/// Keeps only the endpoints named in the request header `test-epp-endpoint-selection`, a comma
/// list of `ip` or `ip:port`. Used by the GIE conformance suite to steer traffic. A missing or
/// empty header keeps nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderBasedTestingFilter;

impl Params for HeaderBasedTestingFilter {}

impl HeaderBasedTestingFilter {
    pub const HEADER: &'static str = "test-epp-endpoint-selection";
}

/// The endpoints a `test-epp-endpoint-selection` value lists: bare IPs and `ip:port` items.
struct Selection<'a> {
    ips: Vec<IpAddr>,
    host_ports: Vec<&'a str>,
}

impl<'a> Selection<'a> {
    fn parse(value: &'a str) -> Self {
        let mut sel = Selection {
            ips: Vec::new(),
            host_ports: Vec::new(),
        };
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bare = item.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                sel.ips.push(ip);
            } else {
                sel.host_ports.push(item);
            }
        }
        sel
    }

    fn lists(&self, ctx: &SchedulingContext<'_>, index: usize) -> bool {
        let ep = &ctx.snapshot.get(index).endpoint;
        self.ips.contains(&ep.address) || self.host_ports.contains(&ep.host_port())
    }
}

impl Filter for HeaderBasedTestingFilter {
    fn type_name(&self) -> &'static str {
        "header-based-testing-filter"
    }

    fn filter(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &mut Vec<usize>,
        _: &mut SchedulerRng,
    ) {
        let Some(value) = ctx.request.header(Self::HEADER) else {
            candidates.clear();
            return;
        };
        let sel = Selection::parse(value);
        candidates.retain(|&i| sel.lists(ctx, i));
    }

    fn check(&self, ctx: &SchedulingContext<'_>, index: usize) -> FilterCheck {
        match ctx.request.header(Self::HEADER) {
            None => FilterCheck::new(false, format!("no {} header", Self::HEADER)),
            Some(v) if Selection::parse(v).lists(ctx, index) => {
                FilterCheck::new(true, format!("listed in {}", Self::HEADER))
            }
            Some(v) => FilterCheck::new(false, format!("not listed in {}: {v:?}", Self::HEADER)),
        }
    }
}

// === impl DecodeFilter ===

/// llm-d's `decode-filter`: keeps the endpoints that can decode, by their `llm-d.ai/role` label
/// (`decode`, `prefill-decode`, `both`, `encode-prefill-decode`), and endpoints without the label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeFilter;

impl Params for DecodeFilter {}

impl DecodeFilter {
    pub const ROLE_LABEL: &'static str = "llm-d.ai/role";
    const DECODE_ROLES: &'static [&'static str] =
        &["decode", "prefill-decode", "both", "encode-prefill-decode"];
}

impl Filter for DecodeFilter {
    fn type_name(&self) -> &'static str {
        "decode-filter"
    }

    fn filter(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &mut Vec<usize>,
        _: &mut SchedulerRng,
    ) {
        candidates.retain(|&i| self.check(ctx, i).passes);
    }

    fn check(&self, ctx: &SchedulingContext<'_>, index: usize) -> FilterCheck {
        match ctx
            .snapshot
            .get(index)
            .endpoint
            .labels
            .get(Self::ROLE_LABEL)
        {
            None => FilterCheck::new(true, format!("no {} label", Self::ROLE_LABEL)),
            Some(role) if Self::DECODE_ROLES.contains(&role.as_str()) => {
                FilterCheck::new(true, format!("role {role:?} decodes"))
            }
            Some(role) => FilterCheck::new(false, format!("role {role:?} does not decode")),
        }
    }
}

// === impl PrefixCacheAffinityFilter ===

/// Keeps the "sticky" endpoints whose prefix match ratio reaches `affinity_threshold`, so a
/// conversation stays where its cache is; with probability `exploration_probability` it keeps
/// everyone so other endpoints get to build cache too. Keeps everyone when nobody is sticky or no
/// prefix information exists.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixCacheAffinityFilter {
    pub affinity_threshold: f64,
    pub exploration_probability: f64,
    /// GIE's `maxTTFTPenaltyMs`: only a latency predictor acts on it, which Switchyard does not
    /// run; accepted so GIE configs load, with a warning when set.
    pub max_ttft_penalty_ms: f64,
}

impl Default for PrefixCacheAffinityFilter {
    fn default() -> Self {
        Self {
            affinity_threshold: 0.8,
            exploration_probability: 0.01,
            max_ttft_penalty_ms: 5000.0,
        }
    }
}

impl Params for PrefixCacheAffinityFilter {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(x) = o.unit_interval("affinityThreshold", d) {
            p.affinity_threshold = x;
        }
        if let Some(x) = o.unit_interval("explorationProbability", d) {
            p.exploration_probability = x;
        }
        if let Some(x) = o.non_negative("maxTTFTPenaltyMs", d) {
            p.max_ttft_penalty_ms = x;
            d.warn(format!(
                "{}: has no effect: it applies only with GIE's latency predictor",
                o.at("maxTTFTPenaltyMs")
            ));
        }
        p
    }

    fn render(&self) -> Option<Value> {
        Some(json!({
            "affinityThreshold": self.affinity_threshold,
            "explorationProbability": self.exploration_probability,
            "maxTTFTPenaltyMs": self.max_ttft_penalty_ms,
        }))
    }
}

impl PrefixCacheAffinityFilter {
    /// Whether the endpoint at `index` holds enough of the prompt to be sticky.
    fn sticky(&self, ctx: &SchedulingContext<'_>, index: usize) -> bool {
        match ctx.state.prefix_match(index) {
            Some((m, t)) if t > 0 => f64::from(m) / f64::from(t) >= self.affinity_threshold,
            _ => false,
        }
    }
}

impl Filter for PrefixCacheAffinityFilter {
    fn type_name(&self) -> &'static str {
        "prefix-cache-affinity-filter"
    }

    fn filter(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &mut Vec<usize>,
        rng: &mut SchedulerRng,
    ) {
        if ctx.state.prefix.is_none() {
            return;
        }
        if self.exploration_probability > 0.0 && rng.random::<f64>() < self.exploration_probability
        {
            return;
        }
        if candidates.iter().any(|&i| self.sticky(ctx, i)) {
            candidates.retain(|&i| self.sticky(ctx, i));
        }
    }

    fn check(&self, ctx: &SchedulingContext<'_>, index: usize) -> FilterCheck {
        let Some((m, t)) = ctx.state.prefix_match(index) else {
            return FilterCheck::new(true, "no prefix data: everyone is kept");
        };
        if t == 0 {
            return FilterCheck::new(false, "the prompt is shorter than one block");
        }
        let ratio = f64::from(m) / f64::from(t);
        let passes = self.sticky(ctx, index);
        let op = if passes { "≥" } else { "<" };
        FilterCheck::new(
            passes,
            format!(
                "prefix match {m}/{t} = {ratio:.2} {op} affinityThreshold {}",
                self.affinity_threshold
            ),
        )
    }
}

// === impl UtilizationFilter ===

/// The filter side of `utilization-detector`: keeps endpoints with fresh metrics whose queue and
/// KV usage are under the thresholds (stretched by `headroom`). Fails open: if that would drop
/// everyone, everyone stays.
#[derive(Debug, Clone, PartialEq)]
pub struct UtilizationFilter {
    pub queue_depth_threshold: u64,
    pub kv_cache_util_threshold: f64,
    pub metrics_staleness_threshold: Duration,
    pub headroom: f64,
}

/// GIE's defaults.
impl Default for UtilizationFilter {
    fn default() -> Self {
        Self {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            metrics_staleness_threshold: Duration::from_millis(200),
            headroom: 0.0,
        }
    }
}

impl Params for UtilizationFilter {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(v) = o.positive_u64("queueDepthThreshold", d) {
            p.queue_depth_threshold = v;
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
        if let Some(v) = o.non_negative("headroom", d) {
            p.headroom = v;
        }
        p
    }

    fn render(&self) -> Option<Value> {
        Some(json!({
            "queueDepthThreshold": self.queue_depth_threshold,
            "kvCacheUtilThreshold": self.kv_cache_util_threshold,
            "metricsStalenessThreshold": format_duration(self.metrics_staleness_threshold),
            "headroom": self.headroom,
        }))
    }
}

impl UtilizationFilter {
    /// The queue and KV limits, stretched by `headroom`.
    fn limits(&self) -> (f64, f64) {
        (
            self.queue_depth_threshold as f64 * (1.0 + self.headroom),
            self.kv_cache_util_threshold * (1.0 + self.headroom),
        )
    }

    fn passes(&self, ctx: &SchedulingContext<'_>, index: usize) -> bool {
        let (q_limit, kv_limit) = self.limits();
        let m = &ctx.snapshot.get(index).metrics;
        !m.is_stale(ctx.now, self.metrics_staleness_threshold)
            && (m.waiting_queue_size as f64) < q_limit
            && m.kv_cache_usage < kv_limit
    }
}

impl Filter for UtilizationFilter {
    fn type_name(&self) -> &'static str {
        "utilization-detector"
    }

    fn filter(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &mut Vec<usize>,
        _: &mut SchedulerRng,
    ) {
        if candidates.iter().any(|&i| self.passes(ctx, i)) {
            candidates.retain(|&i| self.passes(ctx, i));
        }
    }

    fn check(&self, ctx: &SchedulingContext<'_>, index: usize) -> FilterCheck {
        let (q_limit, kv_limit) = self.limits();
        let m = &ctx.snapshot.get(index).metrics;
        let q = m.waiting_queue_size;
        let q_op = if (q as f64) < q_limit { "<" } else { "≥" };
        let kv_op = if m.kv_cache_usage < kv_limit {
            "<"
        } else {
            "≥"
        };
        let age = match m.age(ctx.now) {
            None => "never scraped".to_string(),
            Some(a) => {
                let op = if a > self.metrics_staleness_threshold {
                    ">"
                } else {
                    "≤"
                };
                format!(
                    "metrics {}ms old {op} {}",
                    a.as_millis(),
                    format_duration(self.metrics_staleness_threshold)
                )
            }
        };
        FilterCheck::new(
            self.passes(ctx, index),
            format!(
                "queue {q} {q_op} {q_limit}, KV {:.2} {kv_op} {kv_limit:.2}, {age}",
                m.kv_cache_usage
            ),
        )
    }
}

impl SaturationDetector for UtilizationFilter {
    fn type_name(&self) -> &'static str {
        "utilization-detector"
    }

    /// Mean over the candidates of `max(queue / Q, kv / KV)`; an endpoint with stale or missing
    /// metrics counts as fully saturated, and so does an empty candidate list.
    fn saturation(&self, snapshot: &EndpointSnapshot, candidates: &[usize], now: Timestamp) -> f64 {
        if candidates.is_empty() {
            return 1.0;
        }
        let q = self.queue_depth_threshold.max(1) as f64;
        let kv = self.kv_cache_util_threshold;
        let total: f64 = candidates
            .iter()
            .map(|&i| {
                let m = &snapshot.get(i).metrics;
                if m.is_stale(now, self.metrics_staleness_threshold) {
                    1.0
                } else {
                    (m.waiting_queue_size as f64 / q).max(m.kv_cache_usage / kv)
                }
            })
            .sum();
        total / candidates.len() as f64
    }

    /// A released request lands in some endpoint's queue before the next scrape shows it: one
    /// more waiting request, spread over the candidates.
    fn pending_weight(&self, _: &EndpointSnapshot, candidates: &[usize]) -> f64 {
        1.0 / (self.queue_depth_threshold.max(1) as f64 * candidates.len().max(1) as f64)
    }
}

// === impl ConcurrencyFilter ===

/// What `concurrency-detector` counts: requests or estimated tokens in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyMode {
    Requests,
    Tokens,
}

/// The filter side of `concurrency-detector`: drops endpoints whose in-flight work exceeds their
/// capacity stretched by `headroom`. Fails open like the utilization filter.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyFilter {
    pub mode: ConcurrencyMode,
    pub max_concurrency: u64,
    pub max_token_concurrency: u64,
    pub headroom: f64,
}

/// GIE's defaults.
impl Default for ConcurrencyFilter {
    fn default() -> Self {
        Self {
            mode: ConcurrencyMode::Requests,
            max_concurrency: 100,
            max_token_concurrency: 1_000_000,
            headroom: 0.0,
        }
    }
}

impl Params for ConcurrencyFilter {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
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
        if let Some(v) = o.positive_u64("maxConcurrency", d) {
            p.max_concurrency = v;
        }
        if let Some(v) = o.positive_u64("maxTokenConcurrency", d) {
            p.max_token_concurrency = v;
        }
        if let Some(v) = o.non_negative("headroom", d) {
            p.headroom = v;
        }
        p
    }

    fn render(&self) -> Option<Value> {
        let mode = match self.mode {
            ConcurrencyMode::Requests => "requests",
            ConcurrencyMode::Tokens => "tokens",
        };
        Some(json!({
            "concurrencyMode": mode,
            "maxConcurrency": self.max_concurrency,
            "maxTokenConcurrency": self.max_token_concurrency,
            "headroom": self.headroom,
        }))
    }
}

impl ConcurrencyFilter {
    /// The saturation side, counting `inflight`'s requests.
    pub fn detector(
        &self,
        inflight: std::sync::Arc<super::InflightLoadProducer>,
    ) -> ConcurrencyDetector {
        ConcurrencyDetector {
            mode: self.mode,
            max_concurrency: self.max_concurrency,
            max_token_concurrency: self.max_token_concurrency,
            inflight,
        }
    }
}

impl ConcurrencyFilter {
    /// What the endpoint at `index` has in flight and its limit, in the configured unit.
    fn load_and_limit(&self, ctx: &SchedulingContext<'_>, index: usize) -> (u64, f64) {
        let load = ctx.state.inflight_load(index);
        let (cap, n) = match self.mode {
            ConcurrencyMode::Requests => (self.max_concurrency, load.requests),
            ConcurrencyMode::Tokens => (self.max_token_concurrency, load.tokens),
        };
        (n, cap as f64 * (1.0 + self.headroom))
    }

    fn passes(&self, ctx: &SchedulingContext<'_>, index: usize) -> bool {
        let (n, limit) = self.load_and_limit(ctx, index);
        n as f64 <= limit
    }
}

impl Filter for ConcurrencyFilter {
    fn type_name(&self) -> &'static str {
        "concurrency-detector"
    }

    fn filter(
        &self,
        ctx: &SchedulingContext<'_>,
        candidates: &mut Vec<usize>,
        _: &mut SchedulerRng,
    ) {
        if candidates.iter().any(|&i| self.passes(ctx, i)) {
            candidates.retain(|&i| self.passes(ctx, i));
        }
    }

    fn check(&self, ctx: &SchedulingContext<'_>, index: usize) -> FilterCheck {
        let (n, limit) = self.load_and_limit(ctx, index);
        let passes = self.passes(ctx, index);
        let unit = match self.mode {
            ConcurrencyMode::Requests => "requests",
            ConcurrencyMode::Tokens => "tokens",
        };
        let op = if passes { "≤" } else { ">" };
        FilterCheck::new(passes, format!("{n} {unit} in flight {op} {limit}"))
    }
}

/// The saturation side of `concurrency-detector`: in-flight work this EPP counts (requests or
/// estimated tokens) over the candidates' aggregate capacity.
pub struct ConcurrencyDetector {
    pub mode: ConcurrencyMode,
    pub max_concurrency: u64,
    pub max_token_concurrency: u64,
    pub inflight: std::sync::Arc<super::InflightLoadProducer>,
}

impl SaturationDetector for ConcurrencyDetector {
    fn type_name(&self) -> &'static str {
        "concurrency-detector"
    }

    /// Aggregate in-flight ÷ aggregate capacity; an empty candidate list is saturated.
    fn saturation(&self, snapshot: &EndpointSnapshot, candidates: &[usize], _: Timestamp) -> f64 {
        if candidates.is_empty() {
            return 1.0;
        }
        let cap = match self.mode {
            ConcurrencyMode::Requests => self.max_concurrency,
            ConcurrencyMode::Tokens => self.max_token_concurrency,
        }
        .max(1) as f64;
        let load: u64 = candidates
            .iter()
            .map(|&i| {
                let l = self.inflight.load_of(&snapshot.get(i).endpoint.name);
                match self.mode {
                    ConcurrencyMode::Requests => l.requests,
                    ConcurrencyMode::Tokens => l.tokens,
                }
            })
            .sum();
        load as f64 / (cap * candidates.len() as f64)
    }

    fn pending_weight(&self, _: &EndpointSnapshot, candidates: &[usize]) -> f64 {
        match self.mode {
            ConcurrencyMode::Requests => {
                1.0 / (self.max_concurrency.max(1) as f64 * candidates.len().max(1) as f64)
            }
            // Tokens are unknown until the request is scheduled, which happens right after.
            ConcurrencyMode::Tokens => 0.0,
        }
    }

    fn visible_when_picked(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::testing::{ctx_at, ctx_for, metrics, snapshot};
    use crate::scheduling::{CycleState, EndpointLoad, PrefixMatchInfo, Request, Timestamp};
    use rand::SeedableRng;

    fn rng() -> SchedulerRng {
        SchedulerRng::seed_from_u64(1)
    }

    #[test]
    fn header_filter_by_ip_and_ip_port() {
        let snap = snapshot(vec![metrics(0, 0.0); 4]); // 10.0.0.1 .. 10.0.0.4, port 8000
        let mut req = Request::new("r", "m");
        req.headers.push((
            "test-epp-endpoint-selection".into(),
            "10.0.0.2, 10.0.0.4:8000,10.0.0.3:9999".into(),
        ));
        let state = CycleState::default();
        let mut c = vec![0, 1, 2, 3];
        HeaderBasedTestingFilter.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert_eq!(c, vec![1, 3]);
    }

    #[test]
    fn header_filter_missing_or_empty_keeps_nothing() {
        let snap = snapshot(vec![metrics(0, 0.0); 2]);
        let state = CycleState::default();
        let req = Request::new("r", "m");
        let mut c = vec![0, 1];
        HeaderBasedTestingFilter.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert!(c.is_empty());
        let mut req = Request::new("r", "m");
        req.headers
            .push(("test-epp-endpoint-selection".into(), String::new()));
        let mut c = vec![0, 1];
        HeaderBasedTestingFilter.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert!(c.is_empty());
    }

    #[test]
    fn affinity_filter_keeps_sticky_endpoints() {
        let snap = snapshot(vec![metrics(0, 0.0); 3]);
        let req = Request::new("r", "m");
        let state = CycleState {
            prefix: Some(PrefixMatchInfo {
                matched_blocks: vec![9, 10, 2],
                total_blocks: 10,
                block_size_tokens: 16,
                hashes: Vec::new(),
            }),
            inflight: None,
        };
        let f = PrefixCacheAffinityFilter {
            affinity_threshold: 0.8,
            exploration_probability: 0.0,
            ..Default::default()
        };
        let mut c = vec![0, 1, 2];
        f.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert_eq!(c, vec![0, 1]);
        // Always exploring: nothing is dropped.
        let f = PrefixCacheAffinityFilter {
            affinity_threshold: 0.8,
            exploration_probability: 1.0,
            ..Default::default()
        };
        let mut c = vec![0, 1, 2];
        f.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert_eq!(c, vec![0, 1, 2]);
        // Nobody sticky: everyone stays.
        let f = PrefixCacheAffinityFilter {
            affinity_threshold: 0.95,
            exploration_probability: 0.0,
            ..Default::default()
        };
        let mut c = vec![0, 2];
        f.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert_eq!(c, vec![0, 2]);
    }

    #[test]
    fn utilization_filter_drops_busy_and_stale_and_fails_open() {
        let mut ms = vec![
            metrics(0, 0.1),
            metrics(5, 0.1),
            metrics(0, 0.85),
            metrics(1, 0.1),
        ];
        ms[3].updated_at = Some(Timestamp::from_millis(0)); // stale at t=1s
        for m in &mut ms[..3] {
            m.updated_at = Some(Timestamp::from_millis(950));
        }
        let snap = snapshot(ms);
        let req = Request::new("r", "m");
        let state = CycleState::default();
        let f = UtilizationFilter {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            metrics_staleness_threshold: Duration::from_millis(200),
            headroom: 0.0,
        };
        let now = Timestamp::from_millis(1_000);
        let mut c = vec![0, 1, 2, 3];
        f.filter(&ctx_at(&req, &snap, &state, now), &mut c, &mut rng());
        assert_eq!(c, vec![0]);
        // Headroom 0.25 stretches the queue limit to 6.25 and KV to 1.0.
        let f2 = UtilizationFilter {
            headroom: 0.25,
            ..f.clone()
        };
        let mut c = vec![0, 1, 2, 3];
        f2.filter(&ctx_at(&req, &snap, &state, now), &mut c, &mut rng());
        assert_eq!(c, vec![0, 1, 2]);
        // Only busy endpoints: fail open.
        let mut c = vec![1, 2, 3];
        f.filter(&ctx_at(&req, &snap, &state, now), &mut c, &mut rng());
        assert_eq!(c, vec![1, 2, 3]);
    }

    #[test]
    fn utilization_saturation_is_mean_of_worst_ratio() {
        let mut ms = vec![metrics(5, 0.4), metrics(0, 0.8), metrics(1, 0.0)];
        for m in &mut ms[..2] {
            m.updated_at = Some(Timestamp::from_millis(900));
        }
        ms[2].updated_at = None; // never scraped: saturated
        let snap = snapshot(ms);
        let d = UtilizationFilter {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            metrics_staleness_threshold: Duration::from_millis(200),
            headroom: 0.0,
        };
        let now = Timestamp::from_millis(1_000);
        // max(5/5, 0.4/0.8) = 1, max(0, 0.8/0.8) = 1, stale = 1 → 1.0
        assert_eq!(d.saturation(&snap, &[0, 1, 2], now), 1.0);
        assert_eq!(d.saturation(&snap, &[], now), 1.0);
        let idle = snapshot(vec![Default::default(); 2]);
        let fresh = EndpointSnapshot::new(
            idle.endpoints()
                .iter()
                .map(|e| crate::scheduling::EndpointState {
                    endpoint: e.endpoint.clone(),
                    metrics: std::sync::Arc::new(crate::scheduling::EndpointMetrics {
                        waiting_queue_size: 1,
                        kv_cache_usage: 0.2,
                        updated_at: Some(now),
                        ..Default::default()
                    }),
                })
                .collect(),
        );
        // max(1/5, 0.2/0.8) = 0.25 each
        assert!((d.saturation(&fresh, &[0, 1], now) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn concurrency_filter_by_requests_and_tokens() {
        let snap = snapshot(vec![metrics(0, 0.0); 3]);
        let req = Request::new("r", "m");
        let state = CycleState {
            prefix: None,
            inflight: Some(vec![
                EndpointLoad {
                    requests: 2,
                    tokens: 100,
                },
                EndpointLoad {
                    requests: 3,
                    tokens: 10,
                },
                EndpointLoad {
                    requests: 0,
                    tokens: 500,
                },
            ]),
        };
        let f = ConcurrencyFilter {
            mode: ConcurrencyMode::Requests,
            max_concurrency: 2,
            max_token_concurrency: 200,
            headroom: 0.0,
        };
        let mut c = vec![0, 1, 2];
        f.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert_eq!(c, vec![0, 2]);
        let f = ConcurrencyFilter {
            mode: ConcurrencyMode::Tokens,
            ..f
        };
        let mut c = vec![0, 1, 2];
        f.filter(&ctx_for(&req, &snap, &state), &mut c, &mut rng());
        assert_eq!(c, vec![0, 1]);
    }

    #[test]
    fn concurrency_saturation_is_inflight_over_capacity() {
        let snap = snapshot(vec![metrics(0, 0.0); 2]);
        let inflight = std::sync::Arc::new(super::super::InflightLoadProducer::new());
        let d = ConcurrencyDetector {
            mode: ConcurrencyMode::Requests,
            max_concurrency: 2,
            max_token_concurrency: 0,
            inflight: inflight.clone(),
        };
        let now = Timestamp::from_millis(1);
        assert_eq!(d.saturation(&snap, &[0, 1], now), 0.0);
        assert_eq!(d.saturation(&snap, &[], now), 1.0);
        let names: Vec<String> = (0..2).map(|i| snap.get(i).endpoint.name.clone()).collect();
        for id in ["a", "b", "c"] {
            inflight.acquire(&Request::new(id, "m"), [names[0].as_str()]);
        }
        assert_eq!(d.saturation(&snap, &[0, 1], now), 0.75);
        assert_eq!(d.saturation(&snap, &[0], now), 1.5);
        assert_eq!(d.pending_weight(&snap, &[0, 1]), 0.25);
        assert!(d.visible_when_picked());
        inflight.release("a");
        assert_eq!(d.saturation(&snap, &[0, 1], now), 0.5);
    }
}
