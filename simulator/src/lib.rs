//! Switchyard's simulator: fake model-server pods driven by a pure engine model.
//!
//! # Layout
//! - [`engine`]: the PURE model of one vLLM-like engine (continuous batching, chunked prefill,
//!   KV block pool with prefix caching and preemption, LoRA slots, step-time model). Both the
//!   live fake pods (real clock) and the discrete-event mode (virtual time) drive it.

#![forbid(unsafe_code)]

pub mod engine;
