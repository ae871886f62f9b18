//! The EPP's admission stage, between a request's arrival and its scheduling: Switchyard's own
//! admission state machine ([`switchyard::flowcontrol::Gate`]), the very code the server's
//! flow-control service drives, keyed here by the request's index in the trace.
//!
//! Without flow control every request is scheduled at once (a sheddable one is refused while
//! the pool is saturated, as GIE's legacy admission does); with flow control requests wait while
//! the pool is saturated and leave in the order the priority bands, fairness policy
//! (global-strict, round-robin, VTC) and ordering policy set. The discrete-event loop reports
//! arrivals, polls whenever the pool may have changed (an arrival, a scrape, a first token, a
//! completion, a deadline it asked for), and tells when a dispatched request was scheduled, what
//! usage it reported, and when it ended, so VTC can charge tenants.

use std::collections::{HashMap, VecDeque};

pub use switchyard::flowcontrol::PoolSignal;
use switchyard::flowcontrol::{
    Arrival, ControllerConfig, FlowController, Gate, ItemId, NewItem, Step,
};
use switchyard::scheduling::{Timestamp, Usage};

/// A request waiting in the EPP.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The request's index in the trace.
    pub id: usize,
    pub tenant: String,
    pub priority: i32,
    /// Input tokens as the EPP estimates them (prompt characters ÷ 4), charged at dispatch.
    pub input_tokens: u32,
    /// Request body bytes (what the capacity limits count).
    pub bytes: usize,
    pub arrival: Timestamp,
}

/// The answer to an arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    Queued,
    /// Refused with this status and message.
    Rejected(u16, String),
}

/// The answer to a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Schedule this request now.
    Dispatch(Pending),
    /// This queued request leaves without being served (status, message).
    Evict(usize, u16, String),
    /// Nothing now; poll again at this instant (a deadline).
    WakeAt(Timestamp),
    /// Nothing until something changes.
    Idle,
}

/// The EPP's admission stage: Switchyard's [`Gate`], keyed by trace index. An admitted request
/// (legacy admission) is handed out by the next poll, which the loop runs right after arrivals.
#[derive(Debug)]
pub struct Admission {
    label: &'static str,
    gate: Gate,
    /// Queued requests, and admitted ones not polled yet.
    waiting: HashMap<ItemId, Pending>,
    ready: VecDeque<ItemId>,
    /// Dispatched requests: trace index → the gate's id.
    dispatched: HashMap<usize, ItemId>,
}

impl Admission {
    /// GIE's legacy admission: everything goes at once; sheddable requests are refused while
    /// the pool is saturated.
    pub fn legacy() -> Self {
        Self::with("pass-through", Gate::legacy())
    }

    /// Flow control with `cfg`; `label` names the configuration in reports (`fcfs`, `vtc`,
    /// `flow-control`). `visible_when_picked`: the detector counts this EPP's in-flight requests.
    pub fn flow_control(
        label: &'static str,
        cfg: ControllerConfig,
        visible_when_picked: bool,
    ) -> Self {
        Self::with(label, Gate::new(cfg, visible_when_picked))
    }

    fn with(label: &'static str, gate: Gate) -> Self {
        Self {
            label,
            gate,
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            dispatched: HashMap::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.label
    }

    /// The flow controller (counters, queues), for inspection.
    pub fn controller(&self) -> Option<&FlowController> {
        self.gate.controller()
    }

    /// A request reached the EPP. The loop polls right after.
    pub fn arrive(&mut self, request: Pending, pool: &PoolSignal<'_>) -> Admit {
        let item = NewItem {
            fairness_id: request.tenant.clone(),
            priority: request.priority,
            bytes: request.bytes as u64,
            input_tokens: u64::from(request.input_tokens),
            ttl: None,
        };
        let all: Vec<usize> = (0..pool.snapshot.len()).collect();
        match self.gate.arrive(item, &all, pool) {
            Arrival::Admitted(id) => {
                self.ready.push_back(id);
                self.waiting.insert(id, request);
                Admit::Queued
            }
            Arrival::Queued(id) => {
                self.waiting.insert(id, request);
                Admit::Queued
            }
            Arrival::Refused(r) => Admit::Rejected(r.status(), r.message()),
        }
    }

    /// What to do now.
    pub fn poll(&mut self, pool: &PoolSignal<'_>) -> Poll {
        let step = match self.ready.pop_front() {
            Some(id) => return self.dispatch(id),
            None => self.gate.poll(pool),
        };
        match step {
            Step::Dispatch(r) => self.dispatch(r.id),
            Step::Evict(r, why) => {
                let p = self
                    .waiting
                    .remove(&r.id)
                    .expect("evicted items were queued here");
                Poll::Evict(p.id, why.status(), why.message())
            }
            Step::WakeAt(t) => Poll::WakeAt(t),
            Step::Idle => Poll::Idle,
        }
    }

    fn dispatch(&mut self, id: ItemId) -> Poll {
        let p = self
            .waiting
            .remove(&id)
            .expect("released items were queued here");
        self.dispatched.insert(p.id, id);
        Poll::Dispatch(p)
    }

    /// Dispatched request `id` was scheduled; `prefix_hit` is the share of its prompt blocks
    /// the picked endpoint holds per the prefix index, when one runs.
    pub fn on_picked(&mut self, id: usize, prefix_hit: Option<f64>) {
        if let Some(&item) = self.dispatched.get(&id) {
            self.gate.picked(item, prefix_hit);
        }
    }

    /// Usage the response reported so far (cumulative).
    pub fn on_usage(&mut self, id: usize, usage: Usage) {
        if let Some(&item) = self.dispatched.get(&id) {
            self.gate.usage(item, usage);
        }
    }

    /// The pod produced the request's first token: it runs, it no longer waits.
    pub fn on_first_token(&mut self, id: usize) {
        if let Some(&item) = self.dispatched.get(&id) {
            self.gate.first_token(item);
        }
    }

    /// A dispatched request ended (served or failed).
    pub fn on_complete(&mut self, id: usize) {
        if let Some(item) = self.dispatched.remove(&id) {
            self.gate.complete(item);
        }
    }

    /// Requests held right now.
    pub fn queued(&self) -> usize {
        self.gate.queued() + self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    //! The decisions are the gate's, tested in `switchyard::flowcontrol::admission`; these pin
    //! the mapping between trace indices and the gate's ids.
    use std::sync::Arc;

    use switchyard::scheduling::plugins::UtilizationFilter;
    use switchyard::scheduling::{Endpoint, EndpointMetrics, EndpointSnapshot, EndpointState};

    use super::*;

    fn p(id: usize, priority: i32) -> Pending {
        Pending {
            id,
            tenant: "t".into(),
            priority,
            input_tokens: 100,
            bytes: 400,
            arrival: Timestamp::ZERO,
        }
    }

    fn snapshot(waiting: u64) -> EndpointSnapshot {
        EndpointSnapshot::new(vec![EndpointState {
            endpoint: Arc::new(Endpoint::new("a", "10.0.0.1".parse().unwrap(), 8000)),
            metrics: Arc::new(EndpointMetrics {
                waiting_queue_size: waiting,
                updated_at: Some(Timestamp::ZERO),
                ..EndpointMetrics::default()
            }),
        }])
    }

    #[test]
    fn legacy_hands_out_arrivals_in_order_and_passes_refusals_through() {
        let d = UtilizationFilter::default();
        let snap = snapshot(10);
        let pool = PoolSignal {
            snapshot: &snap,
            detector: &d,
            now: Timestamp::from_millis(1),
        };
        let mut a = Admission::legacy();
        assert_eq!(a.arrive(p(7, 0), &pool), Admit::Queued);
        assert_eq!(a.arrive(p(3, 0), &pool), Admit::Queued);
        assert_eq!(
            a.arrive(p(9, -1), &pool),
            Admit::Rejected(429, "system saturated, sheddable request dropped".into())
        );
        assert_eq!(a.queued(), 2);
        assert_eq!(a.poll(&pool), Poll::Dispatch(p(7, 0)));
        assert_eq!(a.poll(&pool), Poll::Dispatch(p(3, 0)));
        assert_eq!(a.poll(&pool), Poll::Idle);
    }

    #[test]
    fn flow_control_reports_by_trace_index() {
        let d = UtilizationFilter::default();
        let busy = snapshot(9);
        let idle = snapshot(0);
        let at = |snap| PoolSignal {
            snapshot: snap,
            detector: &d,
            now: Timestamp::from_millis(1),
        };
        let mut a = Admission::flow_control("fcfs", ControllerConfig::default(), false);
        assert_eq!(a.arrive(p(40, 0), &at(&busy)), Admit::Queued);
        assert_eq!(a.poll(&at(&busy)), Poll::Idle);
        assert_eq!(a.poll(&at(&idle)), Poll::Dispatch(p(40, 0)));
        a.on_first_token(40);
        a.on_complete(40);
        assert_eq!(a.queued(), 0);
    }
}
