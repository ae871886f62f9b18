//! The server's shell around the admission [`Gate`]: request streams enqueue and await a
//! [`Ticket`]; the gate runs under one lock; dispatch runs inline on arrival and in one task
//! woken by events — a metrics refresh (only while requests wait), a completion or first token,
//! the next TTL deadline, a reconfiguration. Nothing ticks, so an idle EPP spends no CPU here
//! (GIE's 1 ms ticker kept a core busy). This file keeps the waiters and the metrics; every
//! decision is the gate's, which the simulator drives too.
//!
//! One `FlowControl` lives as long as the process: a configuration reload reconfigures it in
//! place, so queued requests, VTC counters and the books of dispatched requests survive.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};

use super::admission::{Arrival, Charged, Gate, PoolSignal, Preview, Refusal, Step};
use super::controller::{ControllerConfig, ItemId, NewItem, Released};
use super::metrics::{
    EnqueueLabels, FlowControlMetrics, PoolLabels, QueueDurationLabels, QueueLabels, TenantLabels,
};
use crate::clock::Clock;
use crate::pool::EndpointPool;
use crate::scheduling::{SaturationDetector, Timestamp, Usage};
use crate::telemetry::ModelLabels;

/// How a queued request left the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Dispatched(Released),
    Refused(Refusal),
}

struct Waiter {
    tx: oneshot::Sender<Outcome>,
    labels: QueueLabels,
    bytes: u64,
    enqueued: Instant,
}

struct State {
    gate: Gate,
    detector: Arc<dyn SaturationDetector>,
    waiters: HashMap<ItemId, Waiter>,
}

pub struct FlowControl {
    state: Mutex<State>,
    wake: Notify,
    pool: Arc<EndpointPool>,
    clock: Clock,
    metrics: FlowControlMetrics,
    pool_name: String,
    /// Dispatch cycles run by the background task (for the idle-CPU guarantee's test).
    background_cycles: AtomicU64,
}

impl FlowControl {
    /// Flow control with `cfg`, judging saturation with `detector`; `None` starts it without a
    /// queue (legacy admission) until [`FlowControl::reconfigure`] turns one on.
    pub fn new(
        cfg: Option<ControllerConfig>,
        pool: Arc<EndpointPool>,
        detector: Arc<dyn SaturationDetector>,
        clock: Clock,
        metrics: FlowControlMetrics,
        pool_name: &str,
    ) -> Arc<Self> {
        let gate = match cfg {
            Some(cfg) => {
                metrics.tenants.set_known(weighted_tenants(&cfg));
                Gate::new(cfg, detector.visible_when_picked())
            }
            None => Gate::legacy(),
        };
        Arc::new(Self {
            state: Mutex::new(State {
                gate,
                detector,
                waiters: HashMap::new(),
            }),
            wake: Notify::new(),
            pool,
            clock,
            metrics,
            pool_name: pool_name.to_string(),
            background_cycles: AtomicU64::new(0),
        })
    }

    /// Takes a reloaded configuration: queued requests are re-admitted under it (or released
    /// when it turns flow control off, or refused with 503 when they no longer fit).
    pub fn reconfigure(
        &self,
        cfg: Option<ControllerConfig>,
        detector: Arc<dyn SaturationDetector>,
    ) {
        if let Some(c) = &cfg {
            self.metrics.tenants.set_known(weighted_tenants(c));
        }
        let mut st = self.state.lock();
        let visible = detector.visible_when_picked();
        st.gate.reconfigure(cfg, visible);
        st.detector = detector;
        let now = self.clock.now();
        self.cycle(&mut st, now);
        drop(st);
        self.wake.notify_one();
    }

    /// Queues a request. The ticket resolves when it is dispatched or refused; dropping it
    /// unresolved (the client went away) removes the request from the queue.
    /// `models` are the request's (bounded) model labels; the fairness id is bounded here.
    pub fn enqueue(
        self: &Arc<Self>,
        item: NewItem,
        models: &ModelLabels,
    ) -> Result<Ticket, Refusal> {
        let started = Instant::now();
        let labels = QueueLabels {
            fairness_id: self.metrics.tenants.resolve(&item.fairness_id).to_string(),
            priority: item.priority.to_string(),
            inference_pool: self.pool_name.clone(),
            model_name: models.model_name.clone(),
            target_model_name: models.target_model_name.clone(),
        };
        let bytes = item.bytes;
        let (fairness_id, priority) = (item.fairness_id.clone(), item.priority);
        let now = self.clock.now();
        let snap = self.pool.snapshot();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let arrival = {
            let pool = PoolSignal {
                snapshot: &snap,
                detector: st.detector.as_ref(),
                now,
            };
            st.gate.arrive(item, &[], &pool)
        };
        let outcome = match &arrival {
            // GIE names the outcome of an item still waiting in the queue so.
            Arrival::Queued(_) => "NotYetFinalized",
            Arrival::Admitted(_) => "Dispatched",
            Arrival::Refused(_) => "RejectedCapacity",
        };
        self.metrics
            .enqueue_duration
            .get_or_create(&EnqueueLabels {
                fairness_id: labels.fairness_id.clone(),
                priority: labels.priority.clone(),
                outcome: outcome.into(),
            })
            .observe(started.elapsed().as_secs_f64());
        let (tx, rx) = oneshot::channel();
        let id = match arrival {
            Arrival::Refused(r) => {
                self.observe_wait(&labels, "RejectedCapacity", std::time::Duration::ZERO);
                return Err(r);
            }
            // Flow control was turned off by a reload: nothing queues.
            Arrival::Admitted(id) => {
                let _ = tx.send(Outcome::Dispatched(Released {
                    id,
                    fairness_id: Arc::from(fairness_id.as_str()),
                    priority,
                    enqueued_at: now,
                    bytes,
                    charged_input_tokens: 0,
                    charged_service: 0.0,
                }));
                id
            }
            Arrival::Queued(id) => {
                self.metrics.queue_size.get_or_create(&labels).inc();
                self.metrics
                    .queue_bytes
                    .get_or_create(&labels)
                    .inc_by(bytes as i64);
                st.waiters.insert(
                    id,
                    Waiter {
                        tx,
                        labels,
                        bytes,
                        enqueued: started,
                    },
                );
                // GIE runs one dispatch cycle per arrival; an unsaturated pool dispatches here.
                self.cycle(st, now);
                id
            }
        };
        let waiting = st.gate.is_waiting();
        drop(guard);
        if waiting {
            // Make sure the background task watches metrics now that something waits.
            self.wake.notify_one();
        }
        Ok(Ticket {
            id,
            rx,
            fc: self.clone(),
            resolved: false,
        })
    }

    fn observe_wait(&self, labels: &QueueLabels, outcome: &str, waited: std::time::Duration) {
        self.metrics
            .queue_duration
            .get_or_create(&QueueDurationLabels {
                fairness_id: labels.fairness_id.clone(),
                priority: labels.priority.clone(),
                outcome: outcome.to_string(),
                inference_pool: labels.inference_pool.clone(),
                model_name: labels.model_name.clone(),
                target_model_name: labels.target_model_name.clone(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Takes a request's waiter out of the queue metrics and tells it the outcome.
    fn resolve(&self, st: &mut State, id: ItemId, outcome: Outcome) {
        let Some(w) = st.waiters.remove(&id) else {
            return;
        };
        self.metrics.queue_size.get_or_create(&w.labels).dec();
        self.metrics
            .queue_bytes
            .get_or_create(&w.labels)
            .dec_by(w.bytes as i64);
        let name = match &outcome {
            Outcome::Dispatched(_) => "Dispatched",
            Outcome::Refused(Refusal::Expired(_)) => "EvictedTTL",
            Outcome::Refused(_) => "EvictedOther",
        };
        self.observe_wait(&w.labels, name, w.enqueued.elapsed());
        let _ = w.tx.send(outcome);
    }

    fn account(&self, c: &Charged) {
        let labels = TenantLabels {
            fairness_id: self.metrics.tenants.resolve(&c.tenant).to_string(),
            priority: c.priority.to_string(),
        };
        if c.service > 0.0 {
            self.metrics
                .tenant_service
                .get_or_create(&labels)
                .inc_by(c.service);
        }
        if let Some(counter) = c.counter {
            self.metrics
                .tenant_counter
                .get_or_create(&labels)
                .set(counter);
        }
    }

    /// Lets the gate expire and release whatever it can now.
    fn cycle(&self, st: &mut State, now: Timestamp) {
        let started = Instant::now();
        let snap = self.pool.snapshot();
        loop {
            let step = {
                let pool = PoolSignal {
                    snapshot: &snap,
                    detector: st.detector.as_ref(),
                    now,
                };
                st.gate.poll(&pool)
            };
            match step {
                Step::Dispatch(r) => {
                    if r.charged_service != 0.0 {
                        let counter = st
                            .gate
                            .controller()
                            .and_then(|c| c.counter(r.priority, &r.fairness_id));
                        self.account(&Charged {
                            priority: r.priority,
                            tenant: r.fairness_id.clone(),
                            service: r.charged_service,
                            counter,
                        });
                    }
                    self.resolve(st, r.id, Outcome::Dispatched(r));
                }
                Step::Evict(r, why) => self.resolve(st, r.id, Outcome::Refused(why)),
                Step::WakeAt(_) | Step::Idle => break,
            }
        }
        self.metrics
            .pool_saturation
            .get_or_create(&PoolLabels {
                inference_pool: self.pool_name.clone(),
            })
            .set(st.gate.last_saturation());
        self.metrics
            .dispatch_cycle_duration
            .observe(started.elapsed().as_secs_f64());
        let collected = st.gate.tenants_collected();
        let reported = self.metrics.tenants_collected.get();
        if collected > reported {
            self.metrics.tenants_collected.inc_by(collected - reported);
        }
    }

    fn cancel(&self, id: ItemId) {
        let mut st = self.state.lock();
        if st.gate.cancel(id).is_some()
            && let Some(w) = st.waiters.remove(&id)
        {
            self.metrics.queue_size.get_or_create(&w.labels).dec();
            self.metrics
                .queue_bytes
                .get_or_create(&w.labels)
                .dec_by(w.bytes as i64);
            self.observe_wait(&w.labels, "EvictedContextCancelled", w.enqueued.elapsed());
        }
    }

    /// Runs `f` on the gate and wakes the dispatcher when it says a queued request may go.
    fn with_gate(&self, f: impl FnOnce(&mut Gate) -> bool) {
        let may_release = f(&mut self.state.lock().gate);
        if may_release {
            self.wake.notify_one();
        }
    }

    /// What would happen to `item` if it arrived now (see [`Gate::preview`]): judged on a copy
    /// of the gate taken under the lock, so nothing here changes, not even a metric. With
    /// `under`, the copy first takes that configuration, as a reload would.
    pub fn preview(
        &self,
        item: NewItem,
        under: Option<(Option<ControllerConfig>, Arc<dyn SaturationDetector>)>,
    ) -> (Preview, Option<f64>) {
        let (mut gate, mut detector) = {
            let st = self.state.lock();
            (st.gate.clone(), st.detector.clone())
        };
        if let Some((cfg, d)) = under {
            gate.reconfigure(cfg, d.visible_when_picked());
            detector = d;
        }
        let snap = self.pool.snapshot();
        let pool = PoolSignal {
            snapshot: &snap,
            detector: detector.as_ref(),
            now: self.clock.now(),
        };
        gate.preview(item, &[], &pool)
    }

    /// Runs `f` on the gate under the lock, for read-only views (queues, counters).
    pub fn inspect<T>(&self, f: impl FnOnce(&Gate) -> T) -> T {
        f(&self.state.lock().gate)
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.state.lock().gate.queued()
    }

    /// Whether requests queue here (the current configuration has flow control).
    pub fn queues(&self) -> bool {
        self.state.lock().gate.queues()
    }

    /// Dispatch cycles the background task has run.
    pub fn background_cycles(&self) -> u64 {
        self.background_cycles.load(AtomicOrdering::Relaxed)
    }

    /// The dispatcher: sleeps until woken by an arrival that had to wait, a completion, a
    /// metrics refresh while requests wait, or the next deadline. Resolves everything still
    /// queued with [`Refusal::Shutdown`] when `stop` fires.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut metrics = self.pool.watch_metrics();
        loop {
            let (waiting, deadline) = {
                let st = self.state.lock();
                (st.gate.is_waiting(), st.gate.next_deadline())
            };
            let sleep = deadline.map(|d| d.saturating_since(self.clock.now()));
            metrics.mark_unchanged();
            tokio::select! {
                _ = self.wake.notified() => {}
                r = metrics.changed(), if waiting => if r.is_err() { break },
                _ = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.background_cycles.fetch_add(1, AtomicOrdering::Relaxed);
            let mut st = self.state.lock();
            let now = self.clock.now();
            self.cycle(&mut st, now);
        }
        let mut st = self.state.lock();
        let ids: Vec<ItemId> = st.waiters.keys().copied().collect();
        for id in ids {
            if st.gate.cancel(id).is_some() {
                self.resolve(&mut st, id, Outcome::Refused(Refusal::Shutdown));
            }
        }
    }
}

/// The tenants a configuration names (VTC weights): their label values always pass the bound.
fn weighted_tenants(cfg: &ControllerConfig) -> Vec<String> {
    cfg.all_bands()
        .filter_map(|b| match &b.fairness {
            super::controller::Fairness::Vtc(p) => Some(p.tenant_weights.keys().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A queued request's claim on its outcome.
pub struct Ticket {
    id: ItemId,
    rx: oneshot::Receiver<Outcome>,
    fc: Arc<FlowControl>,
    resolved: bool,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("resolved", &self.resolved)
            .finish()
    }
}

impl Ticket {
    pub fn id(&self) -> ItemId {
        self.id
    }

    /// Waits for the outcome.
    pub async fn wait(&mut self) -> Outcome {
        let o = (&mut self.rx)
            .await
            .unwrap_or(Outcome::Refused(Refusal::Shutdown));
        self.resolved = true;
        o
    }

    /// The outcome if it is already known (an unsaturated pool dispatches at enqueue).
    pub fn try_outcome(&mut self) -> Option<Outcome> {
        let o = self.rx.try_recv().ok()?;
        self.resolved = true;
        Some(o)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.resolved {
            self.fc.cancel(self.id);
        }
    }
}

/// A dispatched request's line back to flow control: the pick, the first token, usage as the
/// response streams, completion. The gate charges VTC bands and releases what the request held.
pub struct Admission {
    fc: Arc<FlowControl>,
    id: ItemId,
    responded: bool,
    done: bool,
}

impl Admission {
    pub fn new(fc: Arc<FlowControl>, r: &Released) -> Self {
        Self {
            fc,
            id: r.id,
            responded: false,
            done: false,
        }
    }

    /// The request was scheduled; `prefix_hit` is the fraction of its prompt blocks the picked
    /// endpoint holds per the prefix index, when one runs.
    pub fn picked(&mut self, prefix_hit: Option<f64>) {
        let charged = self.fc.state.lock().gate.picked(self.id, prefix_hit);
        if let Some(c) = charged {
            self.fc.account(&c);
        }
    }

    /// The first bytes of the response body arrived (for a stream, the first token).
    pub fn responding(&mut self) {
        if !self.responded {
            self.responded = true;
            let id = self.id;
            self.fc.with_gate(|g| g.first_token(id));
        }
    }

    /// Usage as the response reports it (cumulative, possibly partial while streaming).
    pub fn usage(&mut self, u: Usage) {
        let charged = self.fc.state.lock().gate.usage(self.id, u);
        if let Some(c) = charged {
            self.fc.account(&c);
        }
    }

    /// The response ended (complete or not); idempotent.
    pub fn complete(&mut self) {
        if !self.done {
            self.done = true;
            let id = self.id;
            self.fc.with_gate(|g| g.complete(id));
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.complete();
    }
}

#[cfg(test)]
mod tests;
