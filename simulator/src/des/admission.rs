//! The EPP's admission stage, between a request's arrival and its scheduling.
//!
//! Without flow control GIE schedules every request at once ([`PassThrough`]). With flow control
//! it holds requests in its own queue while the pool is saturated and a fairness policy picks
//! which to release ([`FcfsUntilSaturated`] is the first-come-first-served version). The trait is
//! the seam where `switchyard::flowcontrol` plugs in: it sees arrivals, is polled with the pool's
//! saturation whenever that may have changed, and hears about generated tokens and completions so
//! a token-counting policy (VTC) can charge tenants.
//!
//! Saturation is the `utilization-detector`'s (gie-epp.md §5.3): the mean over endpoints of
//! `max(waiting / 5, kv / 0.8)`, a stale endpoint counting 1.0, computed from the scraped metrics
//! by the very detector the server builds from its configuration.

use std::collections::VecDeque;
use std::time::Duration;

use switchyard::scheduling::Timestamp;

/// A request waiting in the EPP.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The request's index in the trace.
    pub id: usize,
    pub tenant: String,
    pub priority: i32,
    /// Prompt tokens (what a token-counting policy charges at dispatch).
    pub input_tokens: u32,
    /// Request body bytes (what GIE's capacity limits count).
    pub bytes: usize,
    pub arrival: Timestamp,
}

/// The answer to an arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    Queued,
    /// Refused (429) with this message.
    Rejected(String),
}

/// The answer to a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Schedule this request now.
    Dispatch(Pending),
    /// Nothing now; poll again at this instant (pacing). Saturation changes also trigger polls.
    WakeAt(Timestamp),
    /// Nothing until something changes (an arrival, a completion, a scrape).
    Idle,
}

/// An EPP admission stage (see the module docs).
pub trait Admission {
    fn name(&self) -> &'static str;
    /// A request reached the EPP.
    fn arrive(&mut self, request: Pending, now: Timestamp) -> Admit;
    /// What to dispatch now, given the pool's saturation (≥ 1.0 means saturated).
    fn poll(&mut self, now: Timestamp, saturation: f64) -> Poll;
    /// `tenant` received `output_tokens` more generated tokens.
    fn on_tokens(&mut self, _tenant: &str, _output_tokens: u32) {}
    /// A dispatched request finished (or failed after dispatch).
    fn on_complete(&mut self, _tenant: &str, _id: usize) {}
    /// Requests held right now.
    fn queued(&self) -> usize;
}

// === impl PassThrough ===

/// GIE without the `flowControl` gate: every request is scheduled the moment it arrives.
#[derive(Debug, Default)]
pub struct PassThrough {
    queue: VecDeque<Pending>,
}

impl Admission for PassThrough {
    fn name(&self) -> &'static str {
        "pass-through"
    }

    fn arrive(&mut self, request: Pending, _now: Timestamp) -> Admit {
        self.queue.push_back(request);
        Admit::Queued
    }

    fn poll(&mut self, _now: Timestamp, _saturation: f64) -> Poll {
        self.queue.pop_front().map_or(Poll::Idle, Poll::Dispatch)
    }

    fn queued(&self) -> usize {
        self.queue.len()
    }
}

// === impl FcfsUntilSaturated ===

/// GIE's flow control with its default policies (one band, `global-strict-fairness-policy`,
/// `fcfs-ordering-policy`): requests wait in arrival order while the pool is saturated. Like GIE's
/// shard processor, it dispatches at most one request per arrival and one per 1 ms tick, so a burst
/// released by one fresh scrape is paced rather than instantaneous.
#[derive(Debug)]
pub struct FcfsUntilSaturated {
    queue: VecDeque<Pending>,
    tick: Duration,
    next_tick: Timestamp,
    arrival_turn: bool,
    /// Refuse arrivals beyond this many held requests (0: unlimited).
    pub max_requests: usize,
}

impl Default for FcfsUntilSaturated {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            tick: Duration::from_millis(1),
            next_tick: Timestamp::ZERO,
            arrival_turn: false,
            max_requests: 0,
        }
    }
}

impl FcfsUntilSaturated {
    /// Refusing arrivals beyond `max_requests` held requests (0: unlimited).
    pub fn with_max_requests(max_requests: usize) -> Self {
        Self {
            max_requests,
            ..Self::default()
        }
    }
}

impl Admission for FcfsUntilSaturated {
    fn name(&self) -> &'static str {
        "fcfs"
    }

    fn arrive(&mut self, request: Pending, _now: Timestamp) -> Admit {
        if self.max_requests > 0 && self.queue.len() >= self.max_requests {
            return Admit::Rejected("flow control queue is full".into());
        }
        self.queue.push_back(request);
        self.arrival_turn = true;
        Admit::Queued
    }

    fn poll(&mut self, now: Timestamp, saturation: f64) -> Poll {
        if self.queue.is_empty() {
            self.arrival_turn = false;
            return Poll::Idle;
        }
        if saturation >= 1.0 {
            // The arrival's dispatch cycle found the pool saturated; wait for a change.
            self.arrival_turn = false;
            return Poll::Idle;
        }
        if self.arrival_turn {
            self.arrival_turn = false;
        } else if now < self.next_tick {
            return Poll::WakeAt(self.next_tick);
        } else {
            self.next_tick = now.saturating_add(self.tick);
        }
        self.queue.pop_front().map_or(Poll::Idle, Poll::Dispatch)
    }

    fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: usize) -> Pending {
        Pending {
            id,
            tenant: "t".into(),
            priority: 0,
            input_tokens: 10,
            bytes: 40,
            arrival: Timestamp::ZERO,
        }
    }

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    #[test]
    fn pass_through_releases_everything_in_order() {
        let mut a = PassThrough::default();
        a.arrive(p(1), ms(0));
        a.arrive(p(2), ms(0));
        assert_eq!(a.poll(ms(0), 5.0), Poll::Dispatch(p(1)));
        assert_eq!(a.poll(ms(0), 5.0), Poll::Dispatch(p(2)));
        assert_eq!(a.poll(ms(0), 0.0), Poll::Idle);
    }

    #[test]
    fn fcfs_holds_while_saturated_then_paces_in_arrival_order() {
        let mut a = FcfsUntilSaturated::default();
        for i in 0..3 {
            assert_eq!(a.arrive(p(i), ms(0)), Admit::Queued);
            assert_eq!(a.poll(ms(0), 1.2), Poll::Idle);
        }
        assert_eq!(a.queued(), 3);
        // The pool drains: one per tick.
        assert_eq!(a.poll(ms(10), 0.5), Poll::Dispatch(p(0)));
        assert_eq!(a.poll(ms(10), 0.5), Poll::WakeAt(ms(11)));
        assert_eq!(a.poll(ms(11), 0.5), Poll::Dispatch(p(1)));
        // An arrival gets its own turn.
        a.arrive(p(9), ms(11));
        assert_eq!(a.poll(ms(11), 0.5), Poll::Dispatch(p(2)));
        assert_eq!(a.poll(ms(11), 0.5), Poll::WakeAt(ms(12)));
        assert_eq!(a.poll(ms(12), 0.5), Poll::Dispatch(p(9)));
        assert_eq!(a.poll(ms(20), 0.0), Poll::Idle);
    }

    #[test]
    fn fcfs_capacity_rejects() {
        let mut a = FcfsUntilSaturated::with_max_requests(1);
        assert_eq!(a.arrive(p(0), ms(0)), Admit::Queued);
        assert!(matches!(a.arrive(p(1), ms(0)), Admit::Rejected(_)));
    }
}
