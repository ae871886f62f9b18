//! The engine: request table, running batch and waiting queue, and the step loop.
//!
//! One step, as vLLM V1's scheduler with chunked prefill:
//! 1. Running sequences in order, each with all its remaining tokens (1 for a decode, the rest of
//!    a chunked prefill) up to the token budget. When its new blocks cannot be allocated, the
//!    NEWEST running sequence is preempted (blocks freed, back to the waiting head, recompute)
//!    until they can, or the sequence itself was the newest.
//! 2. Unless something was preempted, waiting sequences FCFS while budget and `max_num_seqs`
//!    allow: prefix-cache lookup (leading full blocks resident, capped so at least one token is
//!    computed), then a prefill chunk. The queue stops at the first sequence whose blocks do not
//!    fit; a sequence whose adapter would exceed `max_loras` is skipped and keeps its place.
//! 3. The step's duration comes from [`StepWork`]; sequences whose KV reached their full length
//!    produce a token, and finish at `max_output_tokens`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use super::block_pool::{BlockPool, KvEvent};
use super::config::EngineConfig;
use super::hash::{BuildU64Hasher, private_block_hash};
use super::lora::Loras;
use super::stats::EngineStats;
use super::step_time::StepWork;
use super::{Event, EventKind, FinishReason, SeqRequest, Step};

/// Why [`Engine::add_request`] refused a request (answer it with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// `prompt_tokens` was 0.
    EmptyPrompt,
    /// `prompt_tokens + max_output_tokens` exceeds the model length or the KV pool.
    TooLong {
        /// Prompt plus output tokens requested.
        requested: u64,
        /// The limit ([`EngineConfig::effective_max_model_len`]).
        max_model_len: u32,
    },
    /// A LoRA adapter was requested but the engine has no LoRA slots.
    LoraDisabled,
    /// A live request already has this id.
    DuplicateId(u64),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyPrompt => f.write_str("the prompt is empty"),
            Self::TooLong {
                requested,
                max_model_len,
            } => write!(
                f,
                "this model's maximum context length is {max_model_len} tokens, \
                 but {requested} tokens were requested"
            ),
            Self::LoraDisabled => f.write_str("LoRA adapters are not enabled"),
            Self::DuplicateId(id) => write!(f, "request id {id} is already in use"),
        }
    }
}

impl std::error::Error for RejectReason {}

/// A live request.
#[derive(Debug, Clone)]
struct Seq {
    id: u64,
    prompt_tokens: u32,
    /// Given prompt block hashes, truncated to the prompt's full blocks.
    hashes: Vec<u64>,
    max_output: u32,
    lora: Option<u32>,
    /// Output tokens generated so far.
    output: u32,
    /// Tokens whose KV is computed.
    computed: u32,
    blocks: Vec<u32>,
    /// Leading blocks already registered in the prefix cache.
    registered: u32,
    scheduled_once: bool,
    running: bool,
    arrival: Duration,
}

impl Seq {
    fn num_tokens(&self) -> u32 {
        self.prompt_tokens + self.output
    }

    fn block_hash(&self, index: u32) -> u64 {
        match self.hashes.get(index as usize) {
            Some(&h) => h,
            None => private_block_hash(self.id, index),
        }
    }
}

/// One simulated engine (see the module docs of [`super`]).
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    pool: BlockPool,
    slots: Vec<Option<Seq>>,
    free_slots: Vec<u32>,
    by_id: HashMap<u64, u32, BuildU64Hasher>,
    running: Vec<u32>,
    waiting: VecDeque<u32>,
    loras: Loras,
    // Per-step scratch buffers, reused.
    scheduled: Vec<(u32, u32)>,
    skipped: Vec<u32>,
    reserve: Vec<(u32, u32)>,
    stats: Counters,
}

#[derive(Debug, Clone, Default)]
struct Counters {
    prefix_queries: u64,
    prefix_hits: u64,
    prompt_tokens: u64,
    generation_tokens: u64,
    preemptions: u64,
    success: [u64; 3],
    steps: u64,
    busy: Duration,
}

impl Engine {
    /// An idle engine with an empty KV pool.
    pub fn new(cfg: EngineConfig) -> Self {
        let block_size = cfg.block_size.max(1);
        let cfg = EngineConfig { block_size, ..cfg };
        Self {
            pool: BlockPool::new(cfg.num_gpu_blocks),
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::with_hasher(BuildU64Hasher),
            running: Vec::new(),
            waiting: VecDeque::new(),
            loras: Loras::default(),
            scheduled: Vec::new(),
            skipped: Vec::new(),
            reserve: Vec::new(),
            stats: Counters::default(),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Checks that `req` can be served (see [`RejectReason`]).
    pub fn validate(&self, req: &SeqRequest) -> Result<(), RejectReason> {
        if req.prompt_tokens == 0 {
            return Err(RejectReason::EmptyPrompt);
        }
        let requested = u64::from(req.prompt_tokens) + u64::from(req.max_output_tokens.max(1));
        let max_model_len = self.cfg.effective_max_model_len();
        if requested > u64::from(max_model_len) {
            return Err(RejectReason::TooLong {
                requested,
                max_model_len,
            });
        }
        if req.lora.is_some() && self.cfg.max_loras == 0 {
            return Err(RejectReason::LoraDisabled);
        }
        if self.by_id.contains_key(&req.id) {
            return Err(RejectReason::DuplicateId(req.id));
        }
        Ok(())
    }

    /// Queues `req`, arrived at `now`, at the tail of the waiting queue. Returns false (and
    /// queues nothing, so no events will follow) when [`Engine::validate`] refuses it.
    pub fn add_request(&mut self, req: SeqRequest, now: Duration) -> bool {
        if self.validate(&req).is_err() {
            return false;
        }
        let full_blocks = (req.prompt_tokens / self.cfg.block_size) as usize;
        let mut hashes = req.block_hashes;
        hashes.truncate(full_blocks);
        let lora = req.lora.as_deref().map(|name| self.loras.intern(name));
        if let Some(l) = lora {
            self.loras.add_waiting(l);
        }
        let seq = Seq {
            id: req.id,
            prompt_tokens: req.prompt_tokens,
            hashes,
            max_output: req.max_output_tokens.max(1),
            lora,
            output: 0,
            computed: 0,
            blocks: Vec::new(),
            registered: 0,
            scheduled_once: false,
            running: false,
            arrival: now,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(seq);
                s
            }
            None => {
                self.slots.push(Some(seq));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_id.insert(req.id, slot);
        self.waiting.push_back(slot);
        true
    }

    /// Removes request `id` (the client went away): frees its blocks, counts it as finished
    /// with reason `abort`, and emits no further events for it. Returns false for an unknown id.
    pub fn abort(&mut self, id: u64) -> bool {
        let Some(&slot) = self.by_id.get(&id) else {
            return false;
        };
        let running = self.seq(slot).running;
        if running {
            self.running.retain(|&s| s != slot);
        } else {
            self.waiting.retain(|&s| s != slot);
        }
        self.release(slot, FinishReason::Abort);
        true
    }

    /// Whether any request is running or waiting.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// Arrival time of the oldest waiting request, if any.
    pub fn oldest_waiting_since(&self) -> Option<Duration> {
        self.waiting.iter().map(|&s| self.seq(s).arrival).min()
    }

    /// Runs one engine iteration starting at `now`.
    pub fn step(&mut self, now: Duration) -> Step {
        let mut events = Vec::new();
        let duration = self.step_into(now, &mut events);
        Step { duration, events }
    }

    /// [`Engine::step`] writing into a reused buffer (cleared first); returns the duration.
    pub fn step_into(&mut self, now: Duration, events: &mut Vec<Event>) -> Duration {
        events.clear();
        self.scheduled.clear();
        let bs = self.cfg.block_size;
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut lora_loads = 0u32;
        let mut preempted = false;

        // 1. Running sequences, oldest first.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let slot = self.running[i];
            let (n, need) = {
                let seq = self.seq(slot);
                let n = (seq.num_tokens() - seq.computed).min(budget);
                let need = (seq.computed + n).div_ceil(bs) as usize - seq.blocks.len();
                (n, need as u32)
            };
            let mut fits = true;
            while need > self.pool.num_free() {
                let Some(victim) = self.running.pop() else {
                    fits = false;
                    break;
                };
                self.preempt(victim, events);
                preempted = true;
                if victim == slot {
                    fits = false;
                    break;
                }
            }
            if !fits {
                break;
            }
            self.allocate(slot, need);
            if n > 0 {
                self.scheduled.push((slot, n));
                budget -= n;
            }
            i += 1;
        }

        // 2. Waiting sequences, FCFS.
        if !preempted {
            while budget > 0 && (self.running.len() as u32) < self.cfg.max_num_seqs {
                let Some(&slot) = self.waiting.front() else {
                    break;
                };
                if let Some(l) = self.seq(slot).lora
                    && !self.loras.can_run(l, self.cfg.max_loras)
                {
                    self.waiting.pop_front();
                    self.skipped.push(slot);
                    continue;
                }
                if self.cfg.reserve_output && !self.fits_with_reserve(slot) {
                    break;
                }
                // Prefix lookup: leading full blocks resident, leaving at least one token.
                let (hit, evictable, num_tokens) = {
                    let seq = self.seq(slot);
                    let num_tokens = seq.num_tokens();
                    let max_hit = (num_tokens - 1) / bs;
                    let (mut hit, mut evictable) = (0u32, 0u32);
                    while hit < max_hit {
                        match self.pool.lookup(seq.block_hash(hit)) {
                            Some(b) => {
                                evictable += u32::from(self.pool.is_free(b));
                                hit += 1;
                            }
                            None => break,
                        }
                    }
                    (hit, evictable, num_tokens)
                };
                let cached = hit * bs;
                let n = (num_tokens - cached).min(budget);
                let need = (cached + n).div_ceil(bs) - hit;
                if need + evictable > self.pool.num_free() {
                    break;
                }
                self.waiting.pop_front();
                self.admit(slot, hit, now, &mut lora_loads, events);
                self.allocate(slot, need);
                self.running.push(slot);
                self.scheduled.push((slot, n));
                budget -= n;
            }
            while let Some(slot) = self.skipped.pop() {
                self.waiting.push_front(slot);
            }
        }

        if self.scheduled.is_empty() {
            return Duration::ZERO;
        }

        // 3. Cost of the batch.
        let mut work = StepWork::default();
        for &(slot, n) in &self.scheduled {
            let seq = self.seq(slot);
            if n == 1 && seq.output > 0 && seq.computed + 1 == seq.num_tokens() {
                work.add_decode(seq.num_tokens());
            } else {
                work.add_prefill(seq.computed, n);
            }
        }
        let duration = work.duration(&self.cfg.step_time) + self.cfg.lora_load_time * lora_loads;
        self.stats.steps += 1;
        self.stats.busy += duration;

        // 4. Apply: KV computed, tokens sampled, finished sequences released.
        let mut finished = false;
        for k in 0..self.scheduled.len() {
            let (slot, n) = self.scheduled[k];
            let seq = self.slots[slot as usize]
                .as_mut()
                .expect("scheduled slot is live");
            seq.computed += n;
            let full = (seq.computed / bs).min(seq.blocks.len() as u32);
            for idx in seq.registered..full {
                let hash = match seq.hashes.get(idx as usize) {
                    Some(&h) => h,
                    None => private_block_hash(seq.id, idx),
                };
                self.pool.register(seq.blocks[idx as usize], hash);
            }
            seq.registered = seq.registered.max(full);
            if seq.computed < seq.num_tokens() {
                continue;
            }
            seq.output += 1;
            self.stats.generation_tokens += 1;
            let kind = if seq.output == 1 {
                self.stats.prompt_tokens += u64::from(seq.prompt_tokens);
                EventKind::FirstToken
            } else {
                EventKind::Token
            };
            let id = seq.id;
            events.push(Event { id, kind });
            if seq.output >= seq.max_output {
                let reason = FinishReason::Length;
                events.push(Event {
                    id,
                    kind: EventKind::Finished { reason },
                });
                self.release(slot, reason);
                finished = true;
            }
        }
        if finished {
            let slots = &self.slots;
            self.running.retain(|&s| slots[s as usize].is_some());
        }
        duration
    }

    /// A snapshot of the gauges and counters.
    pub fn stats(&self) -> EngineStats {
        let total = self.pool.num_blocks();
        EngineStats {
            num_requests_running: self.running.len() as u32,
            num_requests_waiting: self.waiting.len() as u32,
            kv_cache_usage: if total == 0 {
                0.0
            } else {
                f64::from(self.pool.num_used()) / f64::from(total)
            },
            num_gpu_blocks: total,
            block_size: self.cfg.block_size,
            num_cached_blocks: self.pool.num_cached() as u32,
            prefix_cache_queries_tokens: self.stats.prefix_queries,
            prefix_cache_hits_tokens: self.stats.prefix_hits,
            prompt_tokens_total: self.stats.prompt_tokens,
            generation_tokens_total: self.stats.generation_tokens,
            num_preemptions: self.stats.preemptions,
            request_success: self.stats.success,
            running_lora_adapters: self.loras.running_names(),
            waiting_lora_adapters: self.loras.waiting_names(),
            max_loras: self.cfg.max_loras,
            num_steps: self.stats.steps,
            busy_time: self.stats.busy,
        }
    }

    /// Names of the adapters loaded in GPU slots.
    pub fn resident_loras(&self) -> Vec<String> {
        self.loras.resident_names()
    }

    /// Starts or stops recording [`KvEvent`]s (off by default; costs nothing when off).
    pub fn record_kv_events(&mut self, on: bool) {
        self.pool.record_kv_events(on);
    }

    /// Moves the KV events recorded since the last call (e.g. once per step, as vLLM publishes
    /// one batch per step) to the end of `out`.
    pub fn drain_kv_events(&mut self, out: &mut Vec<KvEvent>) {
        self.pool.drain_kv_events(out);
    }

    /// The block pool (read-only, for tests and diagnostics).
    pub fn block_pool(&self) -> &BlockPool {
        &self.pool
    }

    // === internals ===

    fn seq(&self, slot: u32) -> &Seq {
        self.slots[slot as usize]
            .as_ref()
            .expect("queued slot is live")
    }

    /// Moves a waiting sequence into the batch with `hit` cached leading blocks.
    fn admit(
        &mut self,
        slot: u32,
        hit: u32,
        now: Duration,
        lora_loads: &mut u32,
        events: &mut Vec<Event>,
    ) {
        let bs = self.cfg.block_size;
        let seq = self.slots[slot as usize]
            .as_mut()
            .expect("waiting slot is live");
        for idx in 0..hit {
            let hash = match seq.hashes.get(idx as usize) {
                Some(&h) => h,
                None => private_block_hash(seq.id, idx),
            };
            let block = self.pool.lookup(hash).expect("looked-up block is resident");
            self.pool.touch(block);
            seq.blocks.push(block);
        }
        seq.computed = hit * bs;
        seq.registered = hit;
        seq.running = true;
        if !seq.scheduled_once {
            seq.scheduled_once = true;
            self.stats.prefix_queries += u64::from(seq.prompt_tokens);
            self.stats.prefix_hits += u64::from(seq.computed.min(seq.prompt_tokens));
            events.push(Event {
                id: seq.id,
                kind: EventKind::Scheduled {
                    cached_tokens: seq.computed.min(seq.prompt_tokens),
                },
            });
        }
        if let Some(l) = seq.lora {
            self.loras.remove_waiting(l);
            self.loras.add_running(l);
            if self.loras.ensure_resident(l, now, self.cfg.max_loras) {
                *lora_loads += 1;
            }
        }
    }

    /// Whether the running batch plus `slot` can all run to their `max_output_tokens` within the
    /// KV pool: with requests sorted by remaining output, longest first, the peak is
    /// `max_i (Σ_{j≤i} tokens_j + remaining_i · (i + 1))` tokens (the requests that finish later
    /// still hold their tokens when the i-th longest finishes); one block of rounding per request
    /// is kept free. A request alone is always admitted (it passed validation).
    fn fits_with_reserve(&mut self, slot: u32) -> bool {
        if self.running.is_empty() {
            return true;
        }
        self.reserve.clear();
        for &s in self.running.iter().chain(std::iter::once(&slot)) {
            let seq = self.seq(s);
            self.reserve
                .push((seq.num_tokens(), seq.max_output.saturating_sub(seq.output)));
        }
        self.reserve
            .sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
        let bs = u64::from(self.cfg.block_size);
        let capacity = u64::from(self.pool.num_blocks()) * bs;
        let mut held = 0u64;
        let mut peak = 0u64;
        for (i, &(tokens, remaining)) in self.reserve.iter().enumerate() {
            let n = i as u64 + 1;
            held += u64::from(tokens);
            peak = peak.max(held + u64::from(remaining) * n + n * bs);
        }
        peak <= capacity
    }

    fn allocate(&mut self, slot: u32, n: u32) {
        let seq = self.slots[slot as usize].as_mut().expect("live slot");
        for _ in 0..n {
            let block = self.pool.allocate().expect("free blocks were checked");
            seq.blocks.push(block);
        }
    }

    /// Preempts a running sequence (already removed from `running`): frees its blocks and puts
    /// it at the waiting head for recompute.
    fn preempt(&mut self, slot: u32, events: &mut Vec<Event>) {
        let seq = self.slots[slot as usize]
            .as_mut()
            .expect("running slot is live");
        self.pool.free_all(&seq.blocks);
        seq.blocks.clear();
        seq.computed = 0;
        seq.registered = 0;
        seq.running = false;
        if let Some(l) = seq.lora {
            self.loras.remove_running(l);
            self.loras.add_waiting(l);
        }
        self.stats.preemptions += 1;
        events.push(Event {
            id: seq.id,
            kind: EventKind::Preempted,
        });
        self.waiting.push_front(slot);
    }

    /// Frees a sequence's blocks and slot (the caller removes it from its queue).
    fn release(&mut self, slot: u32, reason: FinishReason) {
        let seq = self.slots[slot as usize].take().expect("live slot");
        self.pool.free_all(&seq.blocks);
        if let Some(l) = seq.lora {
            if seq.running {
                self.loras.remove_running(l);
            } else {
                self.loras.remove_waiting(l);
            }
        }
        self.by_id.remove(&seq.id);
        self.free_slots.push(slot);
        self.stats.success[reason.index()] += 1;
    }
}
