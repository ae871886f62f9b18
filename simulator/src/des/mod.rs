//! Discrete-event mode: Switchyard's scheduling core and the engine model in virtual time.
//!
//! No sockets, no threads, no clock: a run is a pure function of the trace, the policy and the
//! seed. Per request, the same code runs as in the server and the fake pods:
//!
//! 1. **Arrival.** The completion body the load generator would send is built and parsed by
//!    Switchyard's own request parser into the `Request` the server schedules.
//! 2. **Admission** ([`admission`]): pass-through, or held in the EPP while the pool is saturated.
//! 3. **Routing** ([`router`]): Switchyard's scheduler built from an `EndpointPickerConfig`
//!    (producers, profiles, pre-request hooks), or a baseline, on the scraped snapshot.
//! 4. **Serving**: after the API server's overhead the pod's engine queues the request, hashing its
//!    prompt as the fake pod does; engine steps are events, and the tokens they produce are
//!    reported back (first token, completion with usage) to the router and the admission stage.
//! 5. **Scraping** ([`pods`]): every scrape interval (with a per-pod phase) each pod's metrics page
//!    is rendered and extracted by Switchyard's engine mapping, so staleness is simulated too.
//!
//! Events at the same instant run in the order they were scheduled ([`queue`]).

pub mod admission;
pub mod pods;
pub mod queue;
pub mod router;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use switchyard::datalayer::engine::Engines;
use switchyard::extproc::openai;
use switchyard::scheduling::{
    EndpointMetrics, EndpointSnapshot, EndpointState, Request, SaturationDetector, SchedulerRng,
    Timestamp, Usage,
};

use self::admission::{Admission, Admit, Pending, Poll, PoolSignal};
use self::pods::{Scraping, SimPod};
use self::queue::{Event, EventQueue};
use self::router::{Completion, PoolView, RouteRequest, Router};
use crate::engine::{BuildU64Hasher, EngineConfig, EngineStats, EventKind, SeqRequest};
use crate::exposition::Personality;
use crate::load::{Record, completion_body};
use crate::trace::Trace;

/// The header that carries the tenant.
const FAIRNESS_HEADER: &str = "x-gateway-inference-fairness-id";

/// How long past the last arrival a run may go on before unfinished requests are given up.
const DRAIN_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// The simulated pool.
#[derive(Debug, Clone)]
pub struct DesOptions {
    pub pods: usize,
    pub engine: EngineConfig,
    pub personality: Personality,
    /// The EPP's `--refresh-metrics-interval`.
    pub scrape_interval: Duration,
    pub seed: u64,
    pub scraping: Scraping,
    pub usage: UsageReports,
}

/// When responses report token usage to the EPP (what flow control charges output from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageReports {
    /// With every generated token, as vLLM's `stream_options.continuous_usage_stats` does.
    #[default]
    PerToken,
    /// Once, in the last chunk (`include_usage` alone; what the fake pods send).
    Final,
}

impl Default for DesOptions {
    fn default() -> Self {
        Self {
            pods: 4,
            engine: EngineConfig::default(),
            personality: Personality::Vllm,
            scrape_interval: Duration::from_millis(50),
            seed: 42,
            scraping: Scraping::Incremental,
            usage: UsageReports::PerToken,
        }
    }
}

/// The EPP side of a run.
pub struct Epp<'a> {
    pub router: &'a mut dyn Router,
    pub admission: &'a mut Admission,
    /// The configuration's saturation detector (what flow control consults).
    pub saturation: &'a dyn SaturationDetector,
    /// The configuration's engine mappings (what the collector extracts with); `None` when the
    /// configuration disables metrics collection, so the EPP never sees any.
    pub engines: Option<&'a Engines>,
}

/// Work counters of a run (for speed reports; they do not affect results).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub steps: u64,
    pub scrapes: u64,
    /// Scrapes that rendered and parsed a page (the others found the gauges unchanged).
    pub pages: u64,
    /// The most requests the admission stage held at once.
    pub max_queued: usize,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct DesOutcome {
    /// One per trace request, in trace order.
    pub records: Vec<Record>,
    /// Each pod's counters at the end.
    pub engine_stats: Vec<EngineStats>,
    /// Prompt tokens an infinite prefix cache on one node would have served, over prompt tokens.
    pub ideal_prefix_hit_rate: f64,
    /// When the last request finished.
    pub end: Duration,
    pub counts: Counts,
}

impl DesOutcome {
    /// Prefix-cache token hit rate from the engines' own counters.
    pub fn prefix_hit_rate(&self) -> f64 {
        let (h, q) = self.engine_stats.iter().fold((0, 0), |(h, q), s| {
            (
                h + s.prefix_cache_hits_tokens,
                q + s.prefix_cache_queries_tokens,
            )
        });
        if q == 0 { 0.0 } else { h as f64 / q as f64 }
    }

    /// Fraction of the run the engines spent stepping, mean over the pods.
    pub fn engine_busy(&self) -> f64 {
        let end = self.end.as_secs_f64();
        if end <= 0.0 || self.engine_stats.is_empty() {
            return 0.0;
        }
        let busy: f64 = self
            .engine_stats
            .iter()
            .map(|s| s.busy_time.as_secs_f64())
            .sum();
        busy / (end * self.engine_stats.len() as f64)
    }

    pub fn preemptions(&self) -> u64 {
        self.engine_stats.iter().map(|s| s.num_preemptions).sum()
    }
}

/// The prefix cache of one node with infinite capacity: the upper bound of any routing's hit rate.
/// Hits are leading blocks seen before, capped as the engine caps them (at least one prompt token
/// is computed).
#[derive(Debug, Default)]
pub struct IdealCache {
    seen: HashSet<u64, BuildU64Hasher>,
    block_size: u32,
    hits: u64,
    tokens: u64,
}

impl IdealCache {
    pub fn new(block_size: u32) -> Self {
        Self {
            block_size: block_size.max(1),
            ..Self::default()
        }
    }

    /// A prompt of `tokens` tokens whose full blocks hash to `hashes`.
    pub fn observe(&mut self, tokens: u32, hashes: &[u64]) {
        let max_hit = (tokens.saturating_sub(1) / self.block_size) as usize;
        let hit = hashes
            .iter()
            .take(max_hit)
            .take_while(|h| self.seen.contains(h))
            .count();
        self.hits += hit as u64 * u64::from(self.block_size);
        self.tokens += u64::from(tokens);
        self.seen.extend(hashes.iter().skip(hit).copied());
    }

    pub fn hit_rate(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.hits as f64 / self.tokens as f64
        }
    }

    /// The ideal hit rate of `trace` for engines with `block_size` serving `model`.
    pub fn of_trace(trace: &Trace, model: &str, block_size: u32) -> f64 {
        let mut c = Self::new(block_size);
        for r in &trace.requests {
            let (tokens, hashes) =
                crate::engine::prompt_blocks(&r.prompt_text(), model, block_size);
            c.observe(tokens, &hashes);
        }
        c.hit_rate()
    }
}

/// A request between its arrival and its end.
struct Flight {
    request: Request,
    /// The prompt's KV block hashes, until the engine takes them.
    hashes: Vec<u64>,
    prompt_tokens: u32,
    output_tokens: u32,
    pod: Option<usize>,
    first_token: Option<Timestamp>,
    generated: u32,
    cached: u32,
}

impl Flight {
    /// What the response has reported so far.
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: u64::from(self.prompt_tokens),
            completion_tokens: u64::from(self.generated),
            cached_tokens: u64::from(self.cached),
        }
    }
}

fn dur(t: Timestamp) -> Duration {
    Duration::from_nanos(t.as_nanos())
}

fn ms_between(a: Timestamp, b: Timestamp) -> f64 {
    b.saturating_since(a).as_secs_f64() * 1e3
}

struct Sim<'t, 'e> {
    trace: &'t Trace,
    opts: &'t DesOptions,
    epp: Epp<'e>,
    q: EventQueue,
    rng: SchedulerRng,
    pods: Vec<SimPod>,
    states: Vec<EndpointState>,
    snapshot: EndpointSnapshot,
    snapshot_dirty: bool,
    flights: Vec<Option<Flight>>,
    records: Vec<Option<Record>>,
    next_arrival: usize,
    outstanding: usize,
    wake_at: Option<Timestamp>,
    ideal: IdealCache,
    end: Timestamp,
    counts: Counts,
    scratch: Vec<crate::engine::Event>,
}

/// Runs `trace` (in arrival order) through `epp` on the pool of `opts`.
pub fn simulate(trace: &Trace, epp: Epp<'_>, opts: &DesOptions) -> DesOutcome {
    let n = trace.requests.len();
    let default_engines;
    let engines = match epp.engines {
        Some(e) => e,
        None => {
            default_engines = Engines::default();
            &default_engines
        }
    };
    let pods: Vec<SimPod> = (0..opts.pods.max(1))
        .map(|i| SimPod::new(i, &opts.engine, opts.personality, engines))
        .collect();
    let states: Vec<EndpointState> = pods
        .iter()
        .map(|p| p.state(Arc::new(EndpointMetrics::default())))
        .collect();
    let mut sim = Sim {
        trace,
        opts,
        epp,
        q: EventQueue::default(),
        rng: SchedulerRng::seed_from_u64(opts.seed ^ 0x5357_4954_4348_5944),
        snapshot: EndpointSnapshot::new(states.clone()),
        pods,
        states,
        snapshot_dirty: false,
        flights: (0..n).map(|_| None).collect(),
        records: vec![None; n],
        next_arrival: 0,
        outstanding: 0,
        wake_at: None,
        ideal: IdealCache::new(opts.engine.block_size),
        end: Timestamp::ZERO,
        counts: Counts::default(),
        scratch: Vec::new(),
    };
    sim.run();
    sim.finish()
}

impl Sim<'_, '_> {
    fn run(&mut self) {
        if let Some(first) = self.trace.requests.first() {
            self.q.push(
                Timestamp::ZERO.saturating_add(first.arrival),
                Event::Arrival,
            );
        }
        // Each pod's scrapes start at a seeded phase, as independent scrape loops would.
        let interval = self.opts.scrape_interval.max(Duration::from_micros(1));
        let mut phases = rand_pcg::Pcg64Mcg::seed_from_u64(self.opts.seed ^ 0x7363_7261_7065);
        let scraping = self.epp.engines.is_some();
        for p in (0..self.pods.len()).filter(|_| scraping) {
            let phase = phases.random_range(0..interval.as_nanos() as u64);
            self.q.push(Timestamp::from_nanos(phase), Event::Scrape(p));
        }
        let last_arrival = self
            .trace
            .requests
            .last()
            .map_or(Duration::ZERO, |r| r.arrival);
        let deadline = Timestamp::ZERO.saturating_add(last_arrival + DRAIN_LIMIT);
        while let Some((now, ev)) = self.q.pop() {
            if now > deadline {
                break;
            }
            self.counts.events += 1;
            match ev {
                Event::Arrival => self.arrive(now),
                Event::Deliver(id) => self.deliver(id, now),
                Event::StepDone(p) => self.step_done(p, now),
                Event::Scrape(p) => {
                    self.scrape(p, now);
                    if self.active() {
                        self.q.push(now.saturating_add(interval), Event::Scrape(p));
                    }
                }
                Event::Wake => {
                    if self.wake_at == Some(now) {
                        self.wake_at = None;
                    }
                    self.poll(now);
                }
            }
        }
    }

    fn active(&self) -> bool {
        self.next_arrival < self.trace.requests.len() || self.outstanding > 0
    }

    fn finish(mut self) -> DesOutcome {
        let end = self.end;
        for id in 0..self.flights.len() {
            if self.flights[id].is_some() {
                self.fail(id, end, 504, "did not finish within the drain limit".into());
            }
        }
        let records = self
            .records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    let tr = &self.trace.requests[i];
                    Record {
                        tenant: tr.tenant.clone(),
                        group: tr.group,
                        sent_at_ms: tr.arrival.as_secs_f64() * 1e3,
                        status: 0,
                        ttft_ms: None,
                        e2e_ms: 0.0,
                        prompt_tokens: 0,
                        output_tokens: 0,
                        cached_tokens: 0,
                        endpoint: None,
                        error: Some("never arrived".into()),
                    }
                })
            })
            .collect();
        DesOutcome {
            records,
            engine_stats: self.pods.iter().map(|p| p.engine.stats()).collect(),
            ideal_prefix_hit_rate: self.ideal.hit_rate(),
            end: dur(end),
            counts: Counts {
                pages: self.pods.iter().map(|p| p.pages).sum(),
                ..self.counts
            },
        }
    }

    // === arrivals and admission ===

    fn arrive(&mut self, now: Timestamp) {
        let id = self.next_arrival;
        self.next_arrival += 1;
        if let Some(next) = self.trace.requests.get(self.next_arrival) {
            // Readers sort traces; a hand-made one out of order arrives late rather than in
            // the past.
            let at = Timestamp::ZERO.saturating_add(next.arrival).max(now);
            self.q.push(at, Event::Arrival);
        }
        self.outstanding += 1;
        let trace = self.trace;
        let tr = &trace.requests[id];
        let text = tr.prompt_text();
        let model = &self.opts.engine.model;
        let prompt = std::str::from_utf8(&text).expect("generated prompts are ASCII");
        let body = completion_body(model, prompt, tr.output_tokens, true);
        let parsed = match openai::parse(&body, "/v1/completions") {
            Ok(p) => p,
            Err(e) => {
                self.flights[id] = Some(self.flight(id, Request::new(id.to_string(), model)));
                self.fail(id, now, 400, e.to_string());
                return;
            }
        };
        let mut request = Request::new(id.to_string(), parsed.model);
        request.prompt = parsed.prompt;
        request.cache_salt = parsed.cache_salt;
        request.body_size = body.len();
        request.headers = vec![
            ("content-type".into(), "application/json".into()),
            (FAIRNESS_HEADER.into(), tr.tenant.clone()),
        ];
        request.fairness_id = tr.tenant.clone();

        // The pod tokenises and hashes the prompt exactly so.
        let bs = self.opts.engine.block_size;
        let (tokens, hashes) = crate::engine::prompt_blocks(&text, model, bs);
        self.ideal.observe(tokens, &hashes);
        let mut flight = self.flight(id, request);
        flight.prompt_tokens = tokens;
        flight.hashes = hashes;
        let pending = Pending {
            id,
            tenant: tr.tenant.clone(),
            priority: flight.request.priority,
            input_tokens: tokens,
            bytes: body.len(),
            arrival: now,
        };
        self.flights[id] = Some(flight);
        self.refresh_snapshot();
        let signal = PoolSignal {
            snapshot: &self.snapshot,
            detector: self.epp.saturation,
            now,
        };
        match self.epp.admission.arrive(pending, &signal) {
            Admit::Queued => {
                self.counts.max_queued = self.counts.max_queued.max(self.epp.admission.queued());
                self.poll(now);
            }
            Admit::Rejected(status, msg) => self.fail(id, now, status, msg),
        }
    }

    fn flight(&self, id: usize, request: Request) -> Flight {
        let tr = &self.trace.requests[id];
        Flight {
            request,
            hashes: Vec::new(),
            prompt_tokens: tr.prompt_tokens,
            output_tokens: tr.output_tokens,
            pod: None,
            first_token: None,
            generated: 0,
            cached: 0,
        }
    }

    fn refresh_snapshot(&mut self) {
        if self.snapshot_dirty {
            self.snapshot = EndpointSnapshot::new(self.states.clone());
            self.snapshot_dirty = false;
        }
    }

    fn poll(&mut self, now: Timestamp) {
        while self.epp.admission.queued() > 0 {
            self.refresh_snapshot();
            let signal = PoolSignal {
                snapshot: &self.snapshot,
                detector: self.epp.saturation,
                now,
            };
            match self.epp.admission.poll(&signal) {
                Poll::Dispatch(p) => self.dispatch(p.id, now),
                Poll::Evict(id, status, msg) => self.fail(id, now, status, msg),
                Poll::WakeAt(t) => {
                    if self.wake_at.is_none_or(|w| t < w || w < now) {
                        self.wake_at = Some(t);
                        self.q.push(t.max(now), Event::Wake);
                    }
                    break;
                }
                Poll::Idle => break,
            }
        }
    }

    // === routing and serving ===

    fn dispatch(&mut self, id: usize, now: Timestamp) {
        self.refresh_snapshot();
        let Some(flight) = self.flights[id].as_ref() else {
            return;
        };
        let req = RouteRequest {
            id,
            request: &flight.request,
            prompt_tokens: flight.prompt_tokens,
            block_hashes: &flight.hashes,
        };
        let view = PoolView {
            snapshot: &self.snapshot,
            cache: &self.pods,
            block_size: self.opts.engine.block_size,
            now,
        };
        match self.epp.router.route(&req, &view, &mut self.rng) {
            Ok(r) if r.pod < self.pods.len() => {
                self.flights[id].as_mut().expect("in flight").pod = Some(r.pod);
                self.epp.admission.on_picked(id, r.prefix_hit);
                self.q.push(
                    now.saturating_add(self.opts.engine.api_overhead),
                    Event::Deliver(id),
                );
            }
            Ok(r) => {
                let msg = format!("router picked pod {} of {}", r.pod, self.pods.len());
                self.epp.admission.on_complete(id);
                self.fail(id, now, 500, msg);
            }
            Err(e) => {
                self.epp.admission.on_complete(id);
                self.fail(id, now, e.status(), e.to_string());
            }
        }
    }

    fn deliver(&mut self, id: usize, now: Timestamp) {
        let Some(flight) = self.flights[id].as_mut() else {
            return;
        };
        let pod = flight.pod.expect("delivered requests were routed");
        let seq = SeqRequest {
            id: id as u64,
            prompt_tokens: flight.prompt_tokens,
            block_hashes: std::mem::take(&mut flight.hashes),
            max_output_tokens: flight.output_tokens,
            lora: None,
        };
        let engine = &mut self.pods[pod].engine;
        if let Err(reason) = engine.validate(&seq) {
            self.fail(id, now, 400, reason.to_string());
            return;
        }
        engine.add_request(seq, dur(now));
        if !self.pods[pod].busy {
            self.start_step(pod, now);
        }
    }

    fn start_step(&mut self, p: usize, now: Timestamp) {
        let pod = &mut self.pods[p];
        let d = pod.engine.step_into(dur(now), &mut pod.pending);
        if d.is_zero() {
            // Nothing could be scheduled; an arrival restarts the engine.
            pod.busy = false;
            pod.publish();
            return;
        }
        pod.busy = true;
        self.counts.steps += 1;
        self.q.push(now.saturating_add(d), Event::StepDone(p));
    }

    fn step_done(&mut self, p: usize, now: Timestamp) {
        let mut events = std::mem::take(&mut self.scratch);
        std::mem::swap(&mut events, &mut self.pods[p].pending);
        let mut completed = false;
        let mut started = false;
        for ev in &events {
            let id = ev.id as usize;
            let Some(f) = self.flights[id].as_mut() else {
                continue;
            };
            match ev.kind {
                EventKind::Scheduled { cached_tokens } => f.cached = cached_tokens,
                EventKind::FirstToken | EventKind::Token => {
                    if f.first_token.is_none() {
                        f.first_token = Some(now);
                        self.epp.router.first_token(id);
                        self.epp.admission.on_first_token(id);
                        started = true;
                    }
                    f.generated += 1;
                    if self.opts.usage == UsageReports::PerToken {
                        let usage = f.usage();
                        self.epp.admission.on_usage(id, usage);
                    }
                }
                EventKind::Finished { .. } => {
                    self.complete(id, now);
                    completed = true;
                }
                EventKind::Preempted => {}
            }
        }
        events.clear();
        self.scratch = events;
        self.pods[p].publish();
        if self.pods[p].engine.has_work() {
            self.start_step(p, now);
        } else {
            self.pods[p].busy = false;
        }
        if completed || started {
            self.poll(now);
        }
    }

    fn complete(&mut self, id: usize, now: Timestamp) {
        let Some(f) = self.flights[id].take() else {
            return;
        };
        let pod = f.pod.expect("completed requests were routed");
        let trace = self.trace;
        let tr = &trace.requests[id];
        let arrival = Timestamp::ZERO.saturating_add(tr.arrival);
        let endpoint = &self.pods[pod].endpoint.name;
        let usage = f.usage();
        self.epp.router.complete(&Completion {
            id,
            request: &f.request,
            pod,
            endpoint,
            usage,
        });
        if self.opts.usage == UsageReports::Final {
            self.epp.admission.on_usage(id, usage);
        }
        self.epp.admission.on_complete(id);
        self.records[id] = Some(Record {
            tenant: tr.tenant.clone(),
            group: tr.group,
            sent_at_ms: tr.arrival.as_secs_f64() * 1e3,
            status: 200,
            ttft_ms: f.first_token.map(|t| ms_between(arrival, t)),
            e2e_ms: ms_between(arrival, now),
            prompt_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            endpoint: Some(endpoint.clone()),
            error: None,
        });
        self.outstanding -= 1;
        self.end = self.end.max(now);
    }

    /// Ends request `id` with an error status.
    fn fail(&mut self, id: usize, now: Timestamp, status: u16, error: String) {
        let Some(f) = self.flights[id].take() else {
            return;
        };
        let trace = self.trace;
        let tr = &trace.requests[id];
        let arrival = Timestamp::ZERO.saturating_add(tr.arrival);
        let endpoint = f.pod.map(|p| self.pods[p].endpoint.name.clone());
        if let (Some(pod), Some(name)) = (f.pod, &endpoint) {
            self.epp.router.complete(&Completion {
                id,
                request: &f.request,
                pod,
                endpoint: name,
                usage: Usage::default(),
            });
            self.epp.admission.on_complete(id);
        }
        self.records[id] = Some(Record {
            tenant: tr.tenant.clone(),
            group: tr.group,
            sent_at_ms: tr.arrival.as_secs_f64() * 1e3,
            status,
            ttft_ms: None,
            e2e_ms: ms_between(arrival, now),
            prompt_tokens: u64::from(f.prompt_tokens),
            output_tokens: 0,
            cached_tokens: 0,
            endpoint,
            error: Some(error),
        });
        self.outstanding -= 1;
        self.end = self.end.max(now);
    }

    // === scraping ===

    fn scrape(&mut self, p: usize, now: Timestamp) {
        self.counts.scrapes += 1;
        let prev = self.states[p].metrics.clone();
        let personality = self.opts.personality;
        if let Some(m) = self.pods[p].scrape(personality, &prev, now, self.opts.scraping) {
            self.states[p] = self.pods[p].state(Arc::new(m));
            self.snapshot_dirty = true;
            if self.epp.admission.queued() > 0 {
                self.poll(now);
            }
        }
    }
}
