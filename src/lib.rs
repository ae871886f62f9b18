//! Switchyard: an LLM-aware inference endpoint picker for Envoy `ext_proc` gateways, a drop-in
//! replacement for the Gateway API Inference Extension's EPP.
//!
//! # Layout
//!
//! - [`cli`]: the command line: GIE's and llm-d-router's flags, Go-style spellings, deprecated
//!   flags accepted with a warning, unknown flags refused, every bad value reported at once.
//! - [`scheduling`]: the pure core. Endpoints and their metrics, the request, the plugin traits
//!   (filter, scorer, picker, profile handler, data producer, pre-request, response-complete), the
//!   profile run and the built-in plugins, each with its typed parameters. No I/O, no async; time
//!   and randomness are arguments.
//! - [`prefix`]: prefix-cache affinity: GIE-compatible prompt block hashing, the concurrent
//!   block-hash → endpoints index with a bounded LRU per endpoint, and the
//!   `approx-prefix-cache-producer` that feeds `prefix-cache-scorer`.
//! - [`flowcontrol`]: admission — one synchronous state machine (legacy shedding or queues with
//!   priority bands, fairness incl. VTC, ordering) shared with the simulator — and its async
//!   shell in the server.
//! - [`datalayer`]: scraping the model servers' Prometheus pages: our own tolerant text parser, the
//!   vLLM / SGLang / trtllm-serve / Triton mappings, the per-endpoint scrape loop and its metrics.
//! - [`decode`]: path-tracking decoding of YAML trees, which the config loader, the static
//!   endpoints file and every plugin's parameters use.
//! - [`config`]: the `EndpointPickerConfig` YAML, a leaf: strict decoding that reports every
//!   error with its field path, GIE's system defaults, rendering, and the plugin registry.
//! - [`runtime`]: the one assembly point: config + flags → a [`runtime::Runtime`], swapped on
//!   reload by [`runtime::Live`], which also runs the flow-control dispatcher and the scraper.
//! - [`discovery`]: endpoint sources (a list, a watched file, Kubernetes: InferencePool and its
//!   pods, InferenceObjective, InferenceModelRewrite, or a standalone selector) delivering into a
//!   [`discovery::Sink`]: the pool plus objectives and model rewrites.
//! - [`pool`]: the live endpoint pool: discovery sets the endpoints, the data layer their metrics,
//!   the request path reads lock-free snapshots.
//! - [`extproc`]: the Envoy ext_proc service: the per-stream state machine, request parsing,
//!   body mutation, response usage parsing, errors.
//! - [`server`]: the listeners (ext_proc, gRPC health, metrics, admin), TLS and graceful stop.
//! - [`telemetry`]: the EPP's own Prometheus metrics with GIE's names.
//! - [`admin`]: the admin API (`proto/`): `Explain` (a dry run of admission and scheduling, with
//!   every filter's verdict and scorer's contribution), `GetState`/`WatchState`, and the
//!   `switchyard explain` / `switchyard state` commands.
//! - [`tasks`]: background tasks whose panic ends the process rather than leaving it degraded.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datalayer;
pub mod decode;
pub mod discovery;
pub mod extproc;
pub mod flowcontrol;
pub mod pool;
pub mod prefix;
pub mod runtime;
pub mod scheduling;
pub mod server;
pub mod tasks;
pub mod telemetry;
