//! Arbitrary bytes as a `/metrics` page: the parser and every built-in engine mapping must never
//! panic, and every accepted sample's labels must be readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::datalayer::EngineMapping;
use switchyard::datalayer::parse::parse_all;
use switchyard::scheduling::{EndpointMetrics, Timestamp};

fuzz_target!(|data: &[u8]| {
    let (c, stats) = parse_all(data);
    assert_eq!(stats.samples, c.samples.len());
    for s in &c.samples {
        for (k, v) in s.labels() {
            assert!(!k.is_empty());
            let _ = v.len();
        }
    }
    for engine in ["vllm", "sglang", "trtllm-serve", "triton-tensorrt-llm"] {
        let m = EngineMapping::builtin(engine).unwrap();
        let x = m.extract(data, &EndpointMetrics::default(), Timestamp::ZERO);
        assert!((0.0..=1.0).contains(&x.metrics.kv_cache_usage));
    }
});
