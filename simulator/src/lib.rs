//! Switchyard's simulator: fake model-server pods driven by a pure engine model.
//!
//! # Layout
//! - [`engine`]: the PURE model of one vLLM-like engine (continuous batching, chunked prefill,
//!   KV block pool with prefix caching and preemption, LoRA slots, step-time model). Both the
//!   live fake pods (real clock) and the discrete-event mode (virtual time) drive it.
//! - [`pod`]: a fake model-server pod on a loopback address: OpenAI HTTP front, the engine
//!   stepped in real time, and [`exposition`] pages in vLLM, SGLang, trtllm-serve or Triton format.
//! - [`gateway`]: an Envoy-like ext_proc client that routes requests through an EPP.
//! - [`envoy`]: real Envoy from `manifests/envoy/envoy.yaml` in front of Switchyard (tests, demo).
//! - [`peers`]: other routers (SGLang model gateway, vLLM router) as processes, and CPU accounting.
//! - [`live_compare`]: the same workload through each router on fresh pods, side by side.
//! - [`workload`], [`load`], [`report`]: synthetic workloads, the load generator, and results.
//! - [`trace`], [`suites`]: timed workloads — Mooncake, Azure and VTC-artifact trace readers, the
//!   VTC paper's multi-tenant suites, the shared-prefix workload with Poisson arrivals.
//! - [`des`]: the discrete-event mode: Switchyard's scheduler and the engine model in virtual time,
//!   with an EPP admission stage and scraping at the configured interval.
//! - [`baselines`]: the policies a run can name: config files and baseline routers.
//! - [`evaluate`]: `run` and `compare`: workloads by name, policies, reports written to disk.
//! - [`live`]: `run --mode live`: a trace through fake pods and the real Switchyard binary.
//! - [`fairness`]: per-tenant service over time, VTC's service-difference table, Jain's index.
//! - [`null_extproc`]: the null ext_proc server, the floor of any EPP's request path.
//! - [`bench`]: `bench extproc`: Switchyard against the null server, interleaved, CPU per request.

#![forbid(unsafe_code)]

pub mod baselines;
pub mod bench;
pub mod child;
pub mod demo;
pub mod des;
pub mod engine;
pub mod envoy;
pub mod evaluate;
pub mod exposition;
pub mod fairness;
pub mod gateway;
pub mod live;
pub mod live_compare;
pub mod load;
pub mod null_extproc;
pub mod peers;
pub mod pod;
pub mod report;
pub mod suites;
pub mod trace;
pub mod workload;
