//! Pure model of one vLLM-V1-like inference engine: continuous batching with chunked prefill, a
//! KV block pool with prefix caching and preemption, LoRA slots, and a step-time model.
//!
//! The model does no I/O, reads no clock and draws no random numbers: the driver passes `now`
//! in and sleeps (live pods) or advances virtual time (discrete-event mode) by the returned
//! [`Step::duration`]. Same inputs give the same events.
//!
//! # Driving it
//! ```
//! use std::time::Duration;
//! use switchyard_sim::engine::{Engine, EngineConfig, EventKind, SeqRequest, prompt_blocks};
//!
//! let cfg = EngineConfig::h100_llama3_8b();
//! let (tokens, hashes) = prompt_blocks(&[b'x'; 8192], &cfg.model, cfg.block_size);
//! let mut engine = Engine::new(cfg);
//! let mut now = Duration::ZERO;
//! assert!(engine.add_request(
//!     SeqRequest { id: 1, prompt_tokens: tokens, block_hashes: hashes, max_output_tokens: 3, lora: None },
//!     now,
//! ));
//! while engine.has_work() {
//!     let step = engine.step(now);
//!     now += step.duration; // every event of the step happens at this instant
//!     for ev in &step.events {
//!         if let EventKind::Finished { .. } = ev.kind { assert_eq!(ev.id, 1) }
//!     }
//! }
//! ```
//!
//! # Events of one request
//! `Scheduled { cached_tokens }` once (first admission; `cached_tokens` is what vLLM reports as
//! `prompt_tokens_details.cached_tokens`), then exactly one `FirstToken` or `Token` per generated
//! token (the first is `FirstToken`), and after the last token `Finished { reason }` in the same
//! step. `Preempted` may come at any point before `Finished`; the request then waits again and
//! recomputes its KV (no second `Scheduled`), and its next generated token is a `Token`.
//! A request removed by [`Engine::abort`] gets no further events. Within a step, events are in
//! scheduling order, preemptions first.
//!
//! # Layout
//! - `config`: [`EngineConfig`], profiles, step-time coefficients.
//! - `block_pool`: [`BlockPool`], ref-counted KV blocks, prefix cache, LRU free queue, and the
//!   opt-in [`KvEvent`] record ([`Engine::record_kv_events`]).
//! - `scheduler`: [`Engine`], the step loop (running first, then waiting FCFS), preemption, LoRA.
//! - `step_time`: [`StepWork`], the step-duration model.
//! - `stats`: [`EngineStats`], what `/metrics` needs.
//! - `hash`: [`prompt_blocks`], the fake tokenizer and block hashes.

mod block_pool;
mod config;
mod hash;
mod lora;
mod scheduler;
mod stats;
mod step_time;

#[cfg(test)]
mod tests;

pub use block_pool::{BlockPool, KvEvent};
pub use config::{EngineConfig, StepTimeCoeffs};
pub use hash::{BuildU64Hasher, CHARS_PER_TOKEN, prompt_blocks};
pub use scheduler::{Engine, RejectReason};
pub use stats::EngineStats;
pub use step_time::StepWork;

use std::time::Duration;

/// One request as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRequest {
    /// Caller-chosen id, unique among the engine's live requests.
    pub id: u64,
    /// Prompt length in tokens (at least 1).
    pub prompt_tokens: u32,
    /// Chained hashes of the prompt's FULL blocks (block_size tokens each), in order; shared
    /// prefixes share leading hashes. Extra hashes beyond `prompt_tokens / block_size` are ignored;
    /// missing ones make those blocks private to the request.
    pub block_hashes: Vec<u64>,
    /// Tokens to generate (the request always runs to this length; 0 is treated as 1).
    pub max_output_tokens: u32,
    /// LoRA adapter name, if any.
    pub lora: Option<String>,
}

/// Why a request finished (vLLM's `finished_reason` label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// Stop condition met (never produced by the engine itself, which always runs to length).
    Stop,
    /// `max_output_tokens` generated.
    Length,
    /// Aborted by the client ([`Engine::abort`]).
    Abort,
}

impl FinishReason {
    /// All reasons, in the order of [`EngineStats::request_success`].
    pub const ALL: [FinishReason; 3] = [Self::Stop, Self::Length, Self::Abort];

    /// The `finished_reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }

    /// Index into [`EngineStats::request_success`].
    pub fn index(self) -> usize {
        match self {
            Self::Stop => 0,
            Self::Length => 1,
            Self::Abort => 2,
        }
    }
}

/// What happened to a request in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// First admitted into the running batch; `cached_tokens` prompt tokens were prefix-cache hits.
    Scheduled {
        /// Prompt tokens served from the prefix cache (whole blocks, at most prompt − 1).
        cached_tokens: u32,
    },
    /// The first output token was produced.
    FirstToken,
    /// A later output token was produced.
    Token,
    /// The request is done; its blocks are released (and stay cached until evicted).
    Finished {
        /// Why it finished.
        reason: FinishReason,
    },
    /// Evicted from the batch for lack of KV blocks; it waits again at the queue head.
    Preempted,
}

/// An event for request `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The request's [`SeqRequest::id`].
    pub id: u64,
    /// What happened.
    pub kind: EventKind,
}

/// The outcome of one engine iteration started at `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// How long the iteration takes; all `events` happen at `now + duration`.
    /// Zero when nothing could be scheduled.
    pub duration: Duration,
    /// Events of the step.
    pub events: Vec<Event>,
}
