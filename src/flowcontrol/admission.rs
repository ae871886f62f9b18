//! The EPP's admission stage, between a request's arrival and its scheduling: the one
//! implementation the server ([`super::service`]) and the simulator's discrete-event mode both
//! drive. A synchronous state machine: time and the pool's state are arguments.
//!
//! Without flow control ([`Gate::legacy`]) every request goes straight to scheduling, except that
//! a sheddable one (priority < 0) is refused while its candidates are saturated — GIE's legacy
//! admission ([`legacy_admit`]). With flow control ([`Gate::new`]) requests wait in a
//! [`FlowController`] while the pool is saturated and leave in the order its priority bands,
//! fairness and ordering policies set. Around each release the gate keeps the same books in both
//! callers: released requests the metrics cannot show yet ([`Transit`]) and what each dispatched
//! request has been charged to its tenant ([`Charge`]).
//!
//! The caller reports what it sees: an arrival, a poll whenever the pool may have changed (an
//! arrival, a scrape, a first token, a completion, a deadline it was told to wake at), the pick,
//! usage as the response reports it, the first token and completion.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::controller::{ControllerConfig, FlowController, ItemId, NewItem, Rejected, Released};
use super::release::{Charge, Transit};
use crate::scheduling::{EndpointSnapshot, SaturationDetector, Timestamp, Usage};

/// The pool as admission sees it.
pub struct PoolSignal<'a> {
    pub snapshot: &'a EndpointSnapshot,
    pub detector: &'a dyn SaturationDetector,
    pub now: Timestamp,
}

/// Why admission refused a request or dropped it from the queue; the gateway gets
/// [`Refusal::status`] and [`Refusal::message`].
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A sheddable request while the pool is saturated (legacy admission).
    Shed,
    /// The queue is at a capacity limit.
    Capacity(Rejected),
    /// Waited past its time to live.
    Expired(Duration),
    /// The endpoint picker is shutting down.
    Shutdown,
    /// A configuration reload left no room for it in the queue.
    Reconfigured(Rejected),
}

impl Refusal {
    /// 429 when the pool is overloaded, 503 when the request could not be served in time.
    pub fn status(&self) -> u16 {
        match self {
            Self::Shed | Self::Capacity(_) => 429,
            Self::Expired(_) | Self::Shutdown | Self::Reconfigured(_) => 503,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Shed => "system saturated, sheddable request dropped".into(),
            Self::Capacity(e) => format!("request rejected by flow control: {e}"),
            Self::Expired(waited) => format!(
                "request timed out in queue: waited {} ms, past its time to live",
                waited.as_millis()
            ),
            Self::Shutdown => {
                "request evicted from the queue: the endpoint picker is shutting down".into()
            }
            Self::Reconfigured(e) => format!(
                "request evicted from the queue: it does not fit the reloaded flow-control \
                 configuration ({e})"
            ),
        }
    }
}

/// GIE's legacy admission: a sheddable request (priority < 0) is refused while `candidates` are
/// saturated; everything else is admitted.
pub fn legacy_admit(
    priority: i32,
    candidates: &[usize],
    pool: &PoolSignal<'_>,
) -> Result<(), Refusal> {
    if priority < 0
        && pool
            .detector
            .saturation(pool.snapshot, candidates, pool.now)
            >= 1.0
    {
        Err(Refusal::Shed)
    } else {
        Ok(())
    }
}

/// The answer to an arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrival {
    /// Schedule it now (no flow control).
    Admitted(ItemId),
    /// Queued: a later [`Gate::poll`] releases or evicts it.
    Queued(ItemId),
    Refused(Refusal),
}

/// The answer to a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Schedule this queued request now.
    Dispatch(Released),
    /// This queued request leaves without being served.
    Evict(Released, Refusal),
    /// Nothing now; poll again at this instant (a deadline).
    WakeAt(Timestamp),
    /// Nothing until something changes.
    Idle,
}

/// Service charged to a tenant (before its weight), and its virtual counter afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Charged {
    pub priority: i32,
    pub tenant: Arc<str>,
    pub service: f64,
    pub counter: Option<f64>,
}

/// What admission would do with a request now, without doing it ([`Gate::preview`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Preview {
    /// Scheduled at once: legacy admission let it through, or flow control would dispatch it in
    /// its arrival's dispatch cycle.
    Admit,
    /// It would wait. `position` requests would leave the queue before it if the pool freed up
    /// now (its place in dispatch order under the bands, fairness and ordering policies, VTC
    /// charges of those ahead included); `queued` were waiting before it arrived.
    Queue { position: usize, queued: usize },
    /// Refused at arrival (429: capacity, or a sheddable request while saturated), or evicted in
    /// its arrival's dispatch cycle.
    Refuse(Refusal),
}

/// The admission state of one EPP (see the module docs).
#[derive(Debug, Clone)]
pub struct Gate {
    /// `None`: legacy admission, nothing queues.
    ctl: Option<FlowController>,
    transit: Transit,
    /// Dispatched requests until they complete: what their tenants were charged.
    charges: HashMap<ItemId, Charge>,
    /// Evictions not reported yet (one per poll).
    evicted: VecDeque<(Released, Refusal)>,
    /// Queued requests a reload released from a queue that no longer exists.
    unqueued: VecDeque<Released>,
    /// Whether the detector sees a request as soon as it is scheduled (it counts this EPP's own
    /// in-flight requests) rather than at the next scrape.
    visible_when_picked: bool,
    next_id: ItemId,
    last_saturation: f64,
    /// When idle tenants were last collected.
    last_collection: Timestamp,
    /// Tenants collected so far.
    collected: u64,
}

impl Gate {
    /// Flow control with `cfg`.
    pub fn new(cfg: ControllerConfig, visible_when_picked: bool) -> Self {
        Self::with(Some(cfg), visible_when_picked)
    }

    /// GIE's legacy admission: nothing queues.
    pub fn legacy() -> Self {
        Self::with(None, false)
    }

    fn with(cfg: Option<ControllerConfig>, visible_when_picked: bool) -> Self {
        Self {
            ctl: cfg.map(FlowController::new),
            transit: Transit::default(),
            charges: HashMap::new(),
            evicted: VecDeque::new(),
            unqueued: VecDeque::new(),
            visible_when_picked,
            next_id: 1,
            last_saturation: 0.0,
            last_collection: Timestamp::ZERO,
            collected: 0,
        }
    }

    /// Whether requests can queue here.
    pub fn queues(&self) -> bool {
        self.ctl.is_some()
    }

    /// The flow controller (queues, counters), when flow control is on.
    pub fn controller(&self) -> Option<&FlowController> {
        self.ctl.as_ref()
    }

    /// A request reached the EPP. `candidates` are the endpoints it may go to (legacy admission
    /// judges saturation over them; flow control over the whole pool, as GIE does).
    pub fn arrive(
        &mut self,
        item: NewItem,
        candidates: &[usize],
        pool: &PoolSignal<'_>,
    ) -> Arrival {
        let id = self.next_id;
        self.next_id += 1;
        let Some(ctl) = &mut self.ctl else {
            return match legacy_admit(item.priority, candidates, pool) {
                Ok(()) => Arrival::Admitted(id),
                Err(r) => Arrival::Refused(r),
            };
        };
        match ctl.enqueue_as(id, item, pool.now) {
            Ok(()) => Arrival::Queued(id),
            Err(e) => Arrival::Refused(Refusal::Capacity(e)),
        }
    }

    /// What [`Gate::arrive`] and the dispatch cycle after it would do with `item` now, judged on
    /// a copy: this gate does not change. With flow control, also the pool saturation its
    /// dispatch cycle saw (requests released but not visible yet included); `None` when it was
    /// refused before one ran, or under legacy admission.
    pub fn preview(
        &self,
        item: NewItem,
        candidates: &[usize],
        pool: &PoolSignal<'_>,
    ) -> (Preview, Option<f64>) {
        let queued = self.queued();
        let mut g = self.clone();
        let id = match g.arrive(item, candidates, pool) {
            Arrival::Admitted(_) => return (Preview::Admit, None),
            Arrival::Refused(r) => return (Preview::Refuse(r), None),
            Arrival::Queued(id) => id,
        };
        // The arrival's dispatch cycle, as the server runs it.
        loop {
            match g.poll(pool) {
                Step::Dispatch(r) if r.id == id => {
                    return (Preview::Admit, Some(g.last_saturation));
                }
                Step::Evict(r, why) if r.id == id => {
                    return (Preview::Refuse(why), Some(g.last_saturation));
                }
                Step::Dispatch(_) | Step::Evict(..) => {}
                Step::WakeAt(_) | Step::Idle => break,
            }
        }
        let saturation = g.last_saturation;
        let mut position = g.evicted.len() + g.unqueued.len();
        let ctl = g.ctl.as_mut().expect("only flow control queues");
        while let Some(r) = ctl.dispatch(f64::NEG_INFINITY) {
            if r.id == id {
                break;
            }
            position += 1;
        }
        (Preview::Queue { position, queued }, Some(saturation))
    }

    /// What to do now: report one eviction, release one request, or say when to look again.
    pub fn poll(&mut self, pool: &PoolSignal<'_>) -> Step {
        if let Some(r) = self.unqueued.pop_front() {
            return self.released(r, pool.now);
        }
        self.collect_idle(pool.now);
        let Some(ctl) = &mut self.ctl else {
            return Step::Idle;
        };
        for r in ctl.expire(pool.now) {
            let waited = pool.now.saturating_since(r.enqueued_at);
            self.evicted.push_back((r, Refusal::Expired(waited)));
        }
        if let Some((r, why)) = self.evicted.pop_front() {
            return Step::Evict(r, why);
        }
        if ctl.is_empty() {
            return Step::Idle;
        }
        let (saturation, _) = self
            .transit
            .saturation(pool.detector, pool.snapshot, pool.now);
        self.last_saturation = saturation;
        match ctl.dispatch(saturation) {
            Some(r) => self.released(r, pool.now),
            None => ctl.next_deadline().map_or(Step::Idle, Step::WakeAt),
        }
    }

    fn released(&mut self, r: Released, now: Timestamp) -> Step {
        self.transit.record(r.id, now);
        let uncached_only = self
            .ctl
            .as_ref()
            .is_some_and(|c| c.charges_uncached_only(r.priority));
        self.charges.insert(r.id, Charge::new(&r, uncached_only));
        Step::Dispatch(r)
    }

    /// Every half idle timeout, forgets the VTC state of tenants idle for the timeout.
    fn collect_idle(&mut self, now: Timestamp) {
        let Some(ctl) = &mut self.ctl else { return };
        let every = ctl.config().tenant_idle_timeout / 2;
        if now.saturating_since(self.last_collection) < every {
            return;
        }
        self.last_collection = now;
        let charging: HashSet<&str> = self.charges.values().map(|c| &*c.tenant).collect();
        self.collected += ctl.collect_idle(now, &charging) as u64;
    }

    /// Tenants whose idle VTC state has been collected so far.
    pub fn tenants_collected(&self) -> u64 {
        self.collected
    }

    /// The pool's saturation at the last dispatch decision, pending releases included.
    pub fn last_saturation(&self) -> f64 {
        self.last_saturation
    }

    /// The earliest deadline among queued requests.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.ctl.as_ref()?.next_deadline()
    }

    /// Requests waiting, evictions not reported yet included.
    pub fn queued(&self) -> usize {
        self.ctl.as_ref().map_or(0, FlowController::len) + self.evicted.len() + self.unqueued.len()
    }

    /// Whether anything waits to be released or evicted.
    pub fn is_waiting(&self) -> bool {
        self.queued() > 0
    }

    /// A queued request's client went away; `None` when it is not queued any more.
    pub fn cancel(&mut self, id: ItemId) -> Option<Released> {
        self.transit.remove(id);
        if let Some(i) = self.evicted.iter().position(|(r, _)| r.id == id) {
            return self.evicted.remove(i).map(|(r, _)| r);
        }
        if let Some(i) = self.unqueued.iter().position(|r| r.id == id) {
            return self.unqueued.remove(i);
        }
        self.ctl.as_mut()?.cancel(id)
    }

    /// The dispatched request `id` was scheduled; `prefix_hit` is the share of its prompt the
    /// picked endpoint holds per the prefix index, when one runs.
    pub fn picked(&mut self, id: ItemId, prefix_hit: Option<f64>) -> Option<Charged> {
        if self.visible_when_picked {
            self.transit.remove(id);
        }
        let charge = self.charges.get_mut(&id)?;
        let input = charge.picked(prefix_hit);
        let (priority, tenant) = (charge.priority, charge.tenant.clone());
        self.charge(priority, tenant, input, 0)
    }

    /// The pod produced the request's first token: it runs, it no longer waits. True when that
    /// may let a queued request go.
    pub fn first_token(&mut self, id: ItemId) -> bool {
        self.transit.remove(id) && self.is_waiting()
    }

    /// Usage the response reported so far (cumulative, possibly partial while streaming).
    pub fn usage(&mut self, id: ItemId, usage: Usage) -> Option<Charged> {
        let charge = self.charges.get_mut(&id)?;
        let (input, output) = charge.usage(usage);
        let (priority, tenant) = (charge.priority, charge.tenant.clone());
        self.charge(priority, tenant, input, output)
    }

    fn charge(
        &mut self,
        priority: i32,
        tenant: Arc<str>,
        input: f64,
        output: u64,
    ) -> Option<Charged> {
        if input == 0.0 && output == 0 {
            return None;
        }
        let ctl = self.ctl.as_mut()?;
        let service = ctl.charge(priority, &tenant, input, output);
        (service != 0.0).then(|| Charged {
            priority,
            counter: ctl.counter(priority, &tenant),
            tenant,
            service,
        })
    }

    /// A dispatched request ended (served or not). True when a queued request may go now.
    pub fn complete(&mut self, id: ItemId) -> bool {
        self.transit.remove(id);
        self.charges.remove(&id);
        self.is_waiting()
    }

    /// Takes a new configuration (a reload): queued requests are re-admitted under it in their
    /// original order with their VTC counters (those that no longer fit are evicted at the next
    /// polls); with flow control turned off they are all released. Dispatched requests keep
    /// being tracked until they complete.
    pub fn reconfigure(&mut self, cfg: Option<ControllerConfig>, visible_when_picked: bool) {
        self.visible_when_picked = visible_when_picked;
        match (self.ctl.take(), cfg) {
            (Some(old), Some(cfg)) => {
                let mut ctl = FlowController::new(cfg);
                for (r, e) in ctl.adopt(old) {
                    self.evicted.push_back((r, Refusal::Reconfigured(e)));
                }
                self.ctl = Some(ctl);
            }
            (Some(mut old), None) => {
                while let Some(r) = old.dispatch(f64::NEG_INFINITY) {
                    self.unqueued.push_back(r);
                }
                self.unqueued
                    .make_contiguous()
                    .sort_by_key(|r| (r.enqueued_at, r.id));
            }
            (None, cfg) => self.ctl = cfg.map(FlowController::new),
        }
    }
}

#[cfg(test)]
mod tests;
