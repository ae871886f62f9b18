//! The EPP's admission stage, between a request's arrival and its scheduling.
//!
//! Without flow control every request is scheduled at once ([`PassThrough`]; a sheddable one is
//! refused when the pool is saturated, as GIE's legacy admission does). With flow control
//! ([`FlowControlAdmission`]) requests wait in Switchyard's own [`FlowController`] — the pure
//! state the server runs — while the pool is saturated, and leave in the order its priority bands,
//! fairness policy (global-strict, round-robin, VTC) and ordering policy set.
//!
//! The trait is what the discrete-event loop needs from either: it sees arrivals, is polled with
//! the pool's state whenever that may have changed (an arrival, a scrape, a completion, a
//! deadline it asked for), and hears when a dispatched request was scheduled, what usage it
//! reported, and when it ended, so a token-counting policy (VTC) can charge tenants.
//!
//! Saturation is the configured detector's over the scraped snapshot: by default the
//! `utilization-detector`'s mean over endpoints of `max(waiting / 5, kv / 0.8)`, a stale endpoint
//! counting 1.0 (gie-epp.md §5.3).

use std::collections::{HashMap, VecDeque};

use switchyard::flowcontrol::{Charge, ControllerConfig, FlowController, ItemId, NewItem, Transit};
use switchyard::scheduling::{EndpointSnapshot, SaturationDetector, Timestamp, Usage};

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

/// The pool as the admission stage sees it.
pub struct PoolSignal<'a> {
    pub snapshot: &'a EndpointSnapshot,
    pub detector: &'a dyn SaturationDetector,
    pub now: Timestamp,
}

impl PoolSignal<'_> {
    /// The detector's saturation over the whole pool (flow control ignores subsets, as GIE).
    pub fn saturation(&self) -> f64 {
        let all: Vec<usize> = (0..self.snapshot.len()).collect();
        self.detector.saturation(self.snapshot, &all, self.now)
    }
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

/// An EPP admission stage (see the module docs).
pub trait Admission {
    fn name(&self) -> &'static str;
    /// A request reached the EPP. The loop polls right after.
    fn arrive(&mut self, request: Pending, pool: &PoolSignal<'_>) -> Admit;
    /// What to do now.
    fn poll(&mut self, pool: &PoolSignal<'_>) -> Poll;
    /// Dispatched request `id` was scheduled; `prefix_hit` is the share of its prompt blocks
    /// the picked endpoint holds per the prefix index, when one runs.
    fn on_picked(&mut self, _id: usize, _prefix_hit: Option<f64>) {}
    /// Usage the response reported so far (cumulative).
    fn on_usage(&mut self, _id: usize, _usage: Usage) {}

    /// The pod produced the request's first token: it runs, it no longer waits.
    fn on_first_token(&mut self, _id: usize) {}
    /// A dispatched request ended (served or failed).
    fn on_complete(&mut self, _id: usize) {}
    /// Requests held right now.
    fn queued(&self) -> usize;
}

// === impl PassThrough ===

/// No flow control: every request is scheduled the moment it arrives; a sheddable one
/// (priority < 0) is refused with 429 when the pool is saturated.
#[derive(Debug, Default)]
pub struct PassThrough {
    queue: VecDeque<Pending>,
}

impl Admission for PassThrough {
    fn name(&self) -> &'static str {
        "pass-through"
    }

    fn arrive(&mut self, request: Pending, pool: &PoolSignal<'_>) -> Admit {
        if request.priority < 0 && pool.saturation() >= 1.0 {
            return Admit::Rejected(429, "system saturated, sheddable request dropped".into());
        }
        self.queue.push_back(request);
        Admit::Queued
    }

    fn poll(&mut self, _pool: &PoolSignal<'_>) -> Poll {
        self.queue.pop_front().map_or(Poll::Idle, Poll::Dispatch)
    }

    fn queued(&self) -> usize {
        self.queue.len()
    }
}

// === impl FlowControlAdmission ===

/// Switchyard's flow control: the [`FlowController`] driven as the server's dispatcher drives it
/// (`flowcontrol::service`), with the same [`Transit`] accounting and the same [`Charge`]
/// bookkeeping: a cycle on every arrival, scrape, first token, completion and deadline; VTC
/// charged the estimated input at dispatch, corrected by reported usage, and output tokens as
/// reported.
#[derive(Debug)]
pub struct FlowControlAdmission {
    label: &'static str,
    ctl: FlowController,
    queued: HashMap<ItemId, Pending>,
    transit: Transit,
    /// Dispatched requests (by trace index): their controller id and charge.
    charges: HashMap<usize, (ItemId, Charge)>,
    evicted: VecDeque<(usize, u16, String)>,
}

impl FlowControlAdmission {
    /// `label` names the configuration in reports (`fcfs`, `vtc`, `flow-control`).
    pub fn new(label: &'static str, cfg: ControllerConfig) -> Self {
        Self {
            label,
            ctl: FlowController::new(cfg),
            queued: HashMap::new(),
            transit: Transit::default(),
            charges: HashMap::new(),
            evicted: VecDeque::new(),
        }
    }

    /// The underlying controller (counters, queues), for inspection.
    pub fn controller(&self) -> &FlowController {
        &self.ctl
    }
}

fn apply(ctl: &mut FlowController, c: &Charge, input: f64, output: u64) {
    if input != 0.0 || output > 0 {
        ctl.charge(c.priority, &c.tenant, input, output);
    }
}

impl Admission for FlowControlAdmission {
    fn name(&self) -> &'static str {
        self.label
    }

    fn arrive(&mut self, request: Pending, pool: &PoolSignal<'_>) -> Admit {
        let item = NewItem {
            fairness_id: request.tenant.clone(),
            priority: request.priority,
            bytes: request.bytes as u64,
            input_tokens: u64::from(request.input_tokens),
            ttl: None,
        };
        match self.ctl.enqueue(item, pool.now) {
            Ok(item) => {
                self.queued.insert(item, request);
                Admit::Queued
            }
            Err(e) => Admit::Rejected(429, format!("request rejected by flow control: {e}")),
        }
    }

    fn poll(&mut self, pool: &PoolSignal<'_>) -> Poll {
        for r in self.ctl.expire(pool.now) {
            if let Some(p) = self.queued.remove(&r.id) {
                let waited = pool.now.saturating_since(r.enqueued_at);
                self.evicted.push_back((
                    p.id,
                    503,
                    format!("request timed out in queue after {waited:?}"),
                ));
            }
        }
        if let Some((id, status, msg)) = self.evicted.pop_front() {
            return Poll::Evict(id, status, msg);
        }
        if self.ctl.is_empty() {
            return Poll::Idle;
        }
        let (saturation, _) = self
            .transit
            .saturation(pool.detector, pool.snapshot, pool.now);
        match self.ctl.dispatch(saturation) {
            Some(r) => {
                let p = self
                    .queued
                    .remove(&r.id)
                    .expect("released items were queued here");
                self.transit.record(r.id, pool.now);
                let charge = Charge::new(&r, self.ctl.charges_uncached_only(r.priority));
                self.charges.insert(p.id, (r.id, charge));
                Poll::Dispatch(p)
            }
            None => self.ctl.next_deadline().map_or(Poll::Idle, Poll::WakeAt),
        }
    }

    fn on_picked(&mut self, id: usize, prefix_hit: Option<f64>) {
        let Some((_, c)) = self.charges.get_mut(&id) else {
            return;
        };
        let input = c.picked(prefix_hit);
        apply(&mut self.ctl, c, input, 0);
    }

    fn on_usage(&mut self, id: usize, u: Usage) {
        let Some((_, c)) = self.charges.get_mut(&id) else {
            return;
        };
        let (input, output) = c.usage(u);
        apply(&mut self.ctl, c, input, output);
    }

    fn on_first_token(&mut self, id: usize) {
        if let Some((item, _)) = self.charges.get(&id) {
            self.transit.remove(*item);
        }
    }

    fn on_complete(&mut self, id: usize) {
        if let Some((item, _)) = self.charges.remove(&id) {
            self.transit.remove(item);
        }
    }

    fn queued(&self) -> usize {
        self.ctl.len() + self.evicted.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use switchyard::config::params::VtcParams;
    use switchyard::flowcontrol::Fairness;
    use switchyard::scheduling::plugins::UtilizationFilter;
    use switchyard::scheduling::{Endpoint, EndpointMetrics, EndpointState};

    use super::*;

    fn p(id: usize, tenant: &str) -> Pending {
        Pending {
            id,
            tenant: tenant.into(),
            priority: 0,
            input_tokens: 100,
            bytes: 400,
            arrival: Timestamp::ZERO,
        }
    }

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    fn detector() -> UtilizationFilter {
        UtilizationFilter {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            metrics_staleness_threshold: Duration::from_millis(200),
            headroom: 0.0,
        }
    }

    /// One endpoint scraped at `at` with `waiting` queued requests.
    fn snapshot(waiting: u64, at: Timestamp) -> EndpointSnapshot {
        EndpointSnapshot::new(vec![EndpointState {
            endpoint: Arc::new(Endpoint::new("a", "10.0.0.1".parse().unwrap(), 8000)),
            metrics: Arc::new(EndpointMetrics {
                waiting_queue_size: waiting,
                updated_at: Some(at),
                ..EndpointMetrics::default()
            }),
        }])
    }

    fn drain(a: &mut dyn Admission, pool: &PoolSignal<'_>) -> Vec<usize> {
        let mut out = Vec::new();
        while let Poll::Dispatch(p) = a.poll(pool) {
            out.push(p.id);
        }
        out
    }

    #[test]
    fn pass_through_releases_everything_and_sheds_sheddable_when_saturated() {
        let d = detector();
        let snap = snapshot(10, ms(0));
        let pool = PoolSignal {
            snapshot: &snap,
            detector: &d,
            now: ms(1),
        };
        let mut a = PassThrough::default();
        assert_eq!(a.arrive(p(1, "x"), &pool), Admit::Queued);
        assert_eq!(a.arrive(p(2, "x"), &pool), Admit::Queued);
        let mut shed = p(3, "x");
        shed.priority = -1;
        assert!(matches!(a.arrive(shed, &pool), Admit::Rejected(429, _)));
        assert_eq!(drain(&mut a, &pool), vec![1, 2]);
    }

    #[test]
    fn flow_control_holds_while_saturated_and_counts_requests_in_transit() {
        let d = detector();
        let mut a = FlowControlAdmission::new("fcfs", ControllerConfig::default());
        let busy = snapshot(5, ms(0));
        let pool = PoolSignal {
            snapshot: &busy,
            detector: &d,
            now: ms(10),
        };
        for i in 0..4 {
            a.arrive(p(i, "x"), &pool);
        }
        assert_eq!(a.poll(&pool), Poll::Idle, "5 waiting of 5: saturated");
        // The queue drains to 2 waiting (0.4): released requests are not in the metrics yet,
        // each counts 1/5, so three go before the pool looks saturated.
        let draining = snapshot(2, ms(20));
        let pool = PoolSignal {
            snapshot: &draining,
            detector: &d,
            now: ms(20),
        };
        assert_eq!(drain(&mut a, &pool), vec![0, 1, 2]);
        // A scrape after their release makes them visible (and they are still 2 waiting).
        let seen = snapshot(2, ms(30));
        let pool = PoolSignal {
            snapshot: &seen,
            detector: &d,
            now: ms(30),
        };
        assert_eq!(drain(&mut a, &pool), vec![3]);
        assert_eq!(a.queued(), 0);
    }

    #[test]
    fn expired_requests_are_evicted_one_poll_at_a_time_and_stay_counted_until_then() {
        let d = detector();
        let cfg = ControllerConfig {
            default_ttl: Some(Duration::from_secs(1)),
            ..ControllerConfig::default()
        };
        let mut a = FlowControlAdmission::new("fcfs", cfg);
        let busy = snapshot(9, ms(0));
        let at = |now| PoolSignal {
            snapshot: &busy,
            detector: &d,
            now,
        };
        a.arrive(p(0, "x"), &at(ms(0)));
        a.arrive(p(1, "y"), &at(ms(0)));
        assert_eq!(a.poll(&at(ms(10))), Poll::WakeAt(ms(1000)));
        let first = a.poll(&at(ms(1000)));
        assert!(matches!(first, Poll::Evict(0, 503, _)), "{first:?}");
        assert_eq!(a.queued(), 1, "the second eviction is still to be reported");
        assert!(matches!(a.poll(&at(ms(1000))), Poll::Evict(1, 503, _)));
        assert_eq!(a.queued(), 0);
        assert_eq!(a.poll(&at(ms(1000))), Poll::Idle);
    }

    #[test]
    fn vtc_serves_the_tenant_with_less_service_first() {
        let d = detector();
        let cfg = ControllerConfig {
            default_band: switchyard::flowcontrol::BandConfig {
                fairness: Fairness::Vtc(VtcParams::default()),
                ..ControllerConfig::default().default_band
            },
            ..ControllerConfig::default()
        };
        let mut a = FlowControlAdmission::new("vtc", cfg);
        let busy = snapshot(9, ms(0));
        let pool = PoolSignal {
            snapshot: &busy,
            detector: &d,
            now: ms(1),
        };
        a.arrive(p(0, "heavy"), &pool);
        a.arrive(p(1, "heavy"), &pool);
        a.arrive(p(2, "light"), &pool);
        let idle = snapshot(0, ms(5));
        let pool = PoolSignal {
            snapshot: &idle,
            detector: &d,
            now: ms(5),
        };
        // Equal counters: the first in tenant order goes first; its output then makes it the
        // most served, so the other tenant goes next even though heavy queued earlier.
        let Poll::Dispatch(first) = a.poll(&pool) else {
            panic!("idle pool dispatches")
        };
        assert_eq!(first.tenant, "heavy");
        a.on_usage(
            first.id,
            Usage {
                prompt_tokens: 100,
                completion_tokens: 500,
                cached_tokens: 0,
            },
        );
        let next: Vec<String> = std::iter::from_fn(|| match a.poll(&pool) {
            Poll::Dispatch(p) => Some(p.tenant),
            _ => None,
        })
        .collect();
        assert_eq!(next, vec!["light", "heavy"]);
        let c = a.controller();
        assert!(c.counter(0, "heavy").unwrap() > c.counter(0, "light").unwrap());
    }
}
