//! The data layer: scrape each model server's Prometheus `/metrics`, map the engine's metric names
//! to [`EndpointMetrics`](crate::scheduling::EndpointMetrics), and publish them into the
//! [`EndpointPool`](crate::pool::EndpointPool).
//!
//! - [`parse`]: our own tolerant, zero-copy Prometheus text parser.
//! - [`engine`]: the vLLM, SGLang, trtllm-serve and Triton TensorRT-LLM mappings (GIE's
//!   `core-metrics-extractor`), engine selection by pod label, and extraction.
//! - [`fake`]: realistic vLLM pages for tests, benchmarks and fake servers.

pub mod engine;
pub mod fake;
pub mod parse;

pub use engine::{EngineMapping, Engines, Extraction, Role, SpecError};
