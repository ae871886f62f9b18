//! Switchyard: an LLM-aware inference endpoint picker for Envoy `ext_proc` gateways, a drop-in
//! replacement for the Gateway API Inference Extension's EPP.
//!
//! # Layout
//!
//! - [`scheduling`]: the pure core. Endpoints and their metrics, the request, the plugin traits
//!   (filter, scorer, picker, profile handler, data producer, pre-request, response-complete), the
//!   profile run and the built-in plugins. No I/O, no async; time and randomness are arguments.
//! - [`config`]: the `EndpointPickerConfig` YAML: strict decoding that reports every error with its
//!   field path, GIE's system defaults, and building a [`scheduling::Scheduler`] from it.
//! - [`datalayer`]: scraping the model servers' Prometheus pages: our own tolerant text parser, the
//!   vLLM / SGLang / trtllm-serve / Triton mappings, the per-endpoint scrape loop and its metrics.
//! - [`prefix`]: prefix-cache affinity: GIE-compatible prompt block hashing, the concurrent
//!   block-hash → endpoints index with a bounded LRU per endpoint, and the
//!   `approx-prefix-cache-producer` that feeds `prefix-cache-scorer`.
//! - [`discovery`]: where endpoints, objectives and model rewrites come from — static flags or a
//!   watched file, or Kubernetes (InferencePool and its pods, InferenceObjective,
//!   InferenceModelRewrite, or a standalone selector) — each delivering into one `Sink`.
//! - [`pool`]: the live endpoint pool: discovery sets the endpoints, the data layer their metrics,
//!   the request path reads lock-free snapshots.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod datalayer;
pub mod discovery;
pub mod extproc;
pub mod flowcontrol;
pub mod pool;
pub mod prefix;
pub mod scheduling;
pub mod server;
pub mod telemetry;
