//! The prefix indexer's Prometheus metrics, with GIE's names, help texts and buckets.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Buckets of `inference_extension_prefix_indexer_hit_ratio`: 0.0 to 1.0 by 0.1.
pub const HIT_RATIO_BUCKETS: [f64; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Buckets of `inference_extension_prefix_indexer_hit_bytes`.
pub const HIT_BYTES_BUCKETS: [f64; 14] = [
    0.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
    65536.0,
];

/// Cheap to clone: every field is a shared handle. One instance serves every prefix producer of
/// a scheduler, so the families are registered once.
#[derive(Debug, Clone)]
pub struct PrefixMetrics {
    /// Indexed (block, endpoint) entries.
    pub size: Gauge,
    /// Matched ÷ total prefix length on the picked endpoint, per request with a prompt.
    pub hit_ratio: Histogram,
    /// Matched prefix length in bytes (blocks × block size × 4) on the picked endpoint.
    pub hit_bytes: Histogram,
}

impl Default for PrefixMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PrefixMetrics {
    pub fn new() -> Self {
        Self {
            size: Gauge::default(),
            hit_ratio: Histogram::new(HIT_RATIO_BUCKETS),
            hit_bytes: Histogram::new(HIT_BYTES_BUCKETS),
        }
    }

    /// Adds the three families to `registry` (no prefix: the names are GIE's). The registry
    /// appends the final full stop to each help text.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "inference_extension_prefix_indexer_size",
            "[ALPHA] Size of the prefix indexer",
            self.size.clone(),
        );
        registry.register(
            "inference_extension_prefix_indexer_hit_ratio",
            "[ALPHA] Ratio of prefix length matched to total prefix length in the cache lookup",
            self.hit_ratio.clone(),
        );
        registry.register(
            "inference_extension_prefix_indexer_hit_bytes",
            "[ALPHA] Length of the prefix match in number of bytes in the cache lookup",
            self.hit_bytes.clone(),
        );
    }

    /// GIE's `RecordPrefixCacheMatch`: the matched length always, the ratio when there was a
    /// prompt to match.
    pub fn observe_match(&self, matched_bytes: u64, total_bytes: u64) {
        self.hit_bytes.observe(matched_bytes as f64);
        if total_bytes > 0 {
            self.hit_ratio
                .observe(matched_bytes as f64 / total_bytes as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exposition_uses_gie_names_and_buckets() {
        let m = PrefixMetrics::new();
        let mut r = Registry::default();
        m.register(&mut r);
        m.size.set(42);
        m.observe_match(640, 1280);
        m.observe_match(0, 0);
        let mut out = String::new();
        encode(&mut out, &r).expect("encodes");
        assert!(out.contains(
            "# HELP inference_extension_prefix_indexer_size [ALPHA] Size of the prefix indexer.\n"
        ));
        assert!(out.contains("inference_extension_prefix_indexer_size 42\n"));
        assert!(out.contains("# TYPE inference_extension_prefix_indexer_hit_ratio histogram"));
        assert!(out.contains("inference_extension_prefix_indexer_hit_ratio_count 1\n"));
        assert!(out.contains("inference_extension_prefix_indexer_hit_bytes_count 2\n"));
        assert!(
            out.contains("inference_extension_prefix_indexer_hit_bytes_bucket{le=\"65536.0\"} 2")
        );
        assert!(out.contains("inference_extension_prefix_indexer_hit_ratio_bucket{le=\"0.5\"} 1"));
    }
}
