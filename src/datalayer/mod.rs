//! The data layer: scrape each model server's Prometheus `/metrics`, map the engine's metric names
//! to [`EndpointMetrics`](crate::scheduling::EndpointMetrics), and publish them into the
//! [`EndpointPool`](crate::pool::EndpointPool).
//!
//! - [`parse`]: our own tolerant, zero-copy Prometheus text parser.
//! - [`engine`]: the vLLM, SGLang, trtllm-serve and Triton TensorRT-LLM mappings (GIE's
//!   `core-metrics-extractor`), engine selection by pod label, and extraction.
//! - [`extractor`], [`metric_spec`]: `core-metrics-extractor`'s parameters and metric selectors.
//! - [`collector`]: the scrape loop (one task per endpoint), its supervisor and the pool gauges.
//! - [`metrics`]: the data layer's Prometheus metrics; [`health`]: each endpoint's scrape record.
//! - [`fake`]: realistic vLLM pages for tests, benchmarks and fake servers.

pub mod collector;
pub mod engine;
pub mod extractor;
pub mod fake;
pub mod health;
pub mod metric_spec;
pub mod metrics;
pub mod parse;

pub use collector::{
    Clock, Collector, CollectorConfig, CollectorError, MetricsSourceParams, monotonic_clock,
};
pub use engine::{EngineMapping, Engines, Extraction, Role, SpecError};
pub use extractor::{BUILTIN_ENGINES, EngineConfig, ExtractorParams};
pub use health::{ScrapeHealth, ScrapeStatus};
pub use metric_spec::MetricSpec;
pub use metrics::{DataLayerMetrics, ScrapeErrorReason};
