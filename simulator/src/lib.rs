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

#![forbid(unsafe_code)]

pub mod demo;
pub mod engine;
pub mod envoy;
pub mod exposition;
pub mod gateway;
pub mod live_compare;
pub mod load;
pub mod peers;
pub mod pod;
pub mod report;
pub mod workload;
