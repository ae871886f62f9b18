//! The flow controller in the server: request streams enqueue and await a [`Ticket`]; dispatch
//! runs inline on arrival and in one task woken by events — a metrics refresh (only while
//! requests wait), a completion, the next TTL deadline. Nothing ticks, so an idle EPP spends no
//! CPU here (GIE's 1 ms ticker kept a core busy).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};

use super::controller::{ControllerConfig, FlowController, ItemId, NewItem, Rejected, Released};
use super::metrics::{
    EnqueueLabels, FlowControlMetrics, PoolLabels, QueueDurationLabels, QueueLabels, TenantLabels,
};
use super::release::{Charge, Transit};
use crate::clock::Clock;
use crate::pool::EndpointPool;
use crate::scheduling::{SaturationDetector, Timestamp, Usage};

/// How a queued request left the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Dispatched(Released),
    /// Waited longer than its TTL (503).
    EvictedTtl(Duration),
    /// The server is shutting down (503).
    Shutdown,
}

struct Waiter {
    tx: oneshot::Sender<Outcome>,
    labels: QueueLabels,
    bytes: u64,
    enqueued: Instant,
}

struct State {
    ctl: FlowController,
    waiters: HashMap<ItemId, Waiter>,
    transit: Transit,
}

pub struct FlowControl {
    state: Mutex<State>,
    wake: Notify,
    pool: Arc<EndpointPool>,
    detector: Arc<dyn SaturationDetector>,
    clock: Clock,
    metrics: FlowControlMetrics,
    pool_name: String,
    /// Dispatch cycles run by the background task (for the idle-CPU guarantee's test).
    background_cycles: AtomicU64,
}

impl FlowControl {
    pub fn new(
        cfg: ControllerConfig,
        pool: Arc<EndpointPool>,
        detector: Arc<dyn SaturationDetector>,
        clock: Clock,
        metrics: FlowControlMetrics,
        pool_name: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                ctl: FlowController::new(cfg),
                waiters: HashMap::new(),
                transit: Transit::default(),
            }),
            wake: Notify::new(),
            pool,
            detector,
            clock,
            metrics,
            pool_name: pool_name.to_string(),
            background_cycles: AtomicU64::new(0),
        })
    }

    /// Queues a request. The ticket resolves when it is dispatched or evicted; dropping it
    /// unresolved (the client went away) removes the request from the queue.
    pub fn enqueue(
        self: &Arc<Self>,
        item: NewItem,
        model_name: &str,
        target_model_name: &str,
    ) -> Result<Ticket, Rejected> {
        let started = Instant::now();
        let labels = QueueLabels {
            fairness_id: item.fairness_id.clone(),
            priority: item.priority.to_string(),
            inference_pool: self.pool_name.clone(),
            model_name: model_name.to_string(),
            target_model_name: target_model_name.to_string(),
        };
        let bytes = item.bytes;
        let now = self.clock.now();
        let mut st = self.state.lock();
        let result = st.ctl.enqueue(item, now);
        self.metrics
            .enqueue_duration
            .get_or_create(&EnqueueLabels {
                fairness_id: labels.fairness_id.clone(),
                priority: labels.priority.clone(),
                outcome: if result.is_ok() {
                    "Enqueued"
                } else {
                    "RejectedCapacity"
                }
                .into(),
            })
            .observe(started.elapsed().as_secs_f64());
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                self.observe_wait(&labels, "RejectedCapacity", Duration::ZERO);
                return Err(e);
            }
        };
        let (tx, rx) = oneshot::channel();
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
        // GIE runs one dispatch cycle per arrival; an unsaturated pool dispatches right here.
        self.cycle(&mut st, now);
        let waiting = !st.ctl.is_empty();
        drop(st);
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

    fn observe_wait(&self, labels: &QueueLabels, outcome: &str, waited: Duration) {
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

    fn resolve(&self, st: &mut State, r: &Released, outcome: Outcome) {
        let Some(w) = st.waiters.remove(&r.id) else {
            return;
        };
        self.metrics.queue_size.get_or_create(&w.labels).dec();
        self.metrics
            .queue_bytes
            .get_or_create(&w.labels)
            .dec_by(w.bytes as i64);
        let name = match &outcome {
            Outcome::Dispatched(_) => "Dispatched",
            Outcome::EvictedTtl(_) => "EvictedTTL",
            Outcome::Shutdown => "EvictedOther",
        };
        self.observe_wait(&w.labels, name, w.enqueued.elapsed());
        if r.charged_service != 0.0 {
            self.account(st, r.priority, &r.fairness_id, r.charged_service);
        }
        let _ = w.tx.send(outcome);
    }

    fn account(&self, st: &State, priority: i32, tenant: &str, service: f64) {
        let labels = TenantLabels {
            fairness_id: tenant.to_string(),
            priority: priority.to_string(),
        };
        if service > 0.0 {
            self.metrics
                .tenant_service
                .get_or_create(&labels)
                .inc_by(service);
        }
        if let Some(c) = st.ctl.counter(priority, tenant) {
            self.metrics.tenant_counter.get_or_create(&labels).set(c);
        }
    }

    /// Expires what is due, then releases as much as the pool's saturation allows.
    fn cycle(&self, st: &mut State, now: Timestamp) {
        let started = Instant::now();
        for r in st.ctl.expire(now) {
            let ttl = now.saturating_since(r.enqueued_at);
            self.resolve(st, &r, Outcome::EvictedTtl(ttl));
        }
        if st.ctl.is_empty() {
            return;
        }
        let snap = self.pool.snapshot();
        let (mut saturation, per_pending) =
            st.transit.saturation(self.detector.as_ref(), &snap, now);
        while let Some(r) = st.ctl.dispatch(saturation) {
            st.transit.record(r.id, now);
            saturation += per_pending;
            self.resolve(st, &r.clone(), Outcome::Dispatched(r));
        }
        self.metrics
            .pool_saturation
            .get_or_create(&PoolLabels {
                inference_pool: self.pool_name.clone(),
            })
            .set(saturation);
        self.metrics
            .dispatch_cycle_duration
            .observe(started.elapsed().as_secs_f64());
    }

    fn cancel(&self, id: ItemId) {
        let mut st = self.state.lock();
        st.transit.remove(id);
        if let Some(r) = st.ctl.cancel(id)
            && let Some(w) = st.waiters.remove(&r.id)
        {
            self.metrics.queue_size.get_or_create(&w.labels).dec();
            self.metrics
                .queue_bytes
                .get_or_create(&w.labels)
                .dec_by(w.bytes as i64);
            self.observe_wait(&w.labels, "EvictedContextCancelled", w.enqueued.elapsed());
        }
    }

    /// The dispatched request `id` was scheduled onto an endpoint.
    pub fn picked(&self, id: ItemId) {
        if self.detector.visible_when_picked() {
            self.state.lock().transit.remove(id);
        }
    }

    /// The pod started answering the dispatched request `id` (its first token): it is running,
    /// not waiting, so it no longer counts towards saturation as a queued request.
    pub fn responding(&self, id: ItemId) {
        let mut st = self.state.lock();
        if st.transit.remove(id) && !st.ctl.is_empty() {
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Charges a dispatched request's tenant (VTC bands only): a correction of the input
    /// estimate and newly reported output tokens.
    pub fn charge(&self, priority: i32, tenant: &str, input_delta: f64, output_tokens: u64) {
        let mut st = self.state.lock();
        let service = st.ctl.charge(priority, tenant, input_delta, output_tokens);
        if service != 0.0 {
            self.account(&st, priority, tenant, service);
        }
    }

    /// A dispatched request finished: what it held may free capacity.
    pub fn completed(&self, id: ItemId) {
        let mut st = self.state.lock();
        st.transit.remove(id);
        let waiting = !st.ctl.is_empty();
        drop(st);
        if waiting {
            self.wake.notify_one();
        }
    }

    /// Whether the band for `priority` charges only uncached input tokens.
    pub fn charges_uncached_only(&self, priority: i32) -> bool {
        self.state.lock().ctl.charges_uncached_only(priority)
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.state.lock().ctl.len()
    }

    /// Dispatch cycles the background task has run.
    pub fn background_cycles(&self) -> u64 {
        self.background_cycles.load(AtomicOrdering::Relaxed)
    }

    /// The dispatcher: sleeps until woken by an arrival that had to wait, a completion, a
    /// metrics refresh while requests wait, or the next deadline. Resolves everything still
    /// queued with [`Outcome::Shutdown`] when `stop` fires.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut metrics = self.pool.watch_metrics();
        loop {
            let (waiting, deadline) = {
                let st = self.state.lock();
                (!st.ctl.is_empty(), st.ctl.next_deadline())
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
            if let Some(r) = st.ctl.cancel(id) {
                self.resolve(&mut st, &r, Outcome::Shutdown);
            }
        }
    }
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
        let o = (&mut self.rx).await.unwrap_or(Outcome::Shutdown);
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

/// What a dispatched request's stream reports back: the pick, usage as the response streams,
/// completion. Charges VTC bands and releases what the request held.
pub struct Admission {
    fc: Arc<FlowControl>,
    id: ItemId,
    charge: Charge,
    responded: bool,
    done: bool,
}

impl Admission {
    pub fn new(fc: Arc<FlowControl>, r: &Released) -> Self {
        let charge = Charge::new(r, fc.charges_uncached_only(r.priority));
        Self {
            fc,
            id: r.id,
            charge,
            responded: false,
            done: false,
        }
    }

    /// The request was scheduled; `prefix_hit` is the fraction of its prompt blocks the picked
    /// endpoint holds per the prefix index, when one runs.
    pub fn picked(&mut self, prefix_hit: Option<f64>) {
        self.fc.picked(self.id);
        let input = self.charge.picked(prefix_hit);
        self.apply(input, 0);
    }

    /// The first bytes of the response body arrived (for a stream, the first token).
    pub fn responding(&mut self) {
        if !self.responded {
            self.responded = true;
            self.fc.responding(self.id);
        }
    }

    /// Usage as the response reports it (cumulative, possibly partial while streaming).
    pub fn usage(&mut self, u: Usage) {
        let (input, output) = self.charge.usage(u);
        self.apply(input, output);
    }

    fn apply(&self, input: f64, output: u64) {
        if input != 0.0 || output > 0 {
            self.fc
                .charge(self.charge.priority, &self.charge.tenant, input, output);
        }
    }

    /// The response ended (complete or not); idempotent.
    pub fn complete(&mut self) {
        if !self.done {
            self.done = true;
            self.fc.completed(self.id);
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
