//! `inflight-load-producer`: requests and estimated tokens in flight per endpoint, counted by
//! this EPP (GIE's `InFlightLoadProducer`). Incremented after the pick for the primary
//! profile's targets, released when the response completes or the stream ends.
//!
//! Release is keyed by request id and idempotent: the request path may report completion and
//! then the end of the stream, and only the first report releases anything. What was added is
//! what is released, whatever endpoint the completion names, so nothing leaks when the picker
//! returned several targets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::scheduling::plugin::{
    DataProducer, PreRequest, ResponseComplete, SchedulingContext, SchedulingResult, Usage,
};
use crate::scheduling::{CycleState, EndpointLoad, EndpointSnapshot, Request, Timestamp};

/// GIE's `SimpleTokenEstimator`: input = body bytes ÷ 4 (at least 1), else prompt characters ÷ 4
/// rounded (at least 1); output = round(input × 1.5); the estimate is input + output.
pub fn estimate_tokens(request: &Request) -> u64 {
    let input = if request.body_size > 0 {
        (request.body_size as u64 / 4).max(1)
    } else if !request.prompt.is_empty() {
        // round(chars / 4), halves away from zero like Go's math.Round.
        ((request.prompt.len() as u64 + 2) / 4).max(1)
    } else {
        return 0;
    };
    // round(input × 1.5) = input + round(input / 2), halves rounded up.
    let output = input + input.div_ceil(2);
    input + output
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    tokens: AtomicU64,
}

impl Counters {
    fn load(&self) -> EndpointLoad {
        EndpointLoad {
            requests: self.requests.load(Ordering::Relaxed),
            tokens: self.tokens.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub struct InflightLoadProducer {
    endpoints: RwLock<HashMap<Arc<str>, Arc<Counters>>>,
    /// What each in-flight request added, by request id.
    requests: DashMap<String, Vec<(Arc<Counters>, u64)>>,
}

impl InflightLoadProducer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The load this producer counts on `endpoint`.
    pub fn load_of(&self, endpoint: &str) -> EndpointLoad {
        self.endpoints
            .read()
            .get(endpoint)
            .map(|c| c.load())
            .unwrap_or_default()
    }

    /// Requests picked and not yet released.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    fn counters(&self, endpoint: &str) -> Arc<Counters> {
        if let Some(c) = self.endpoints.read().get(endpoint) {
            return c.clone();
        }
        self.endpoints
            .write()
            .entry(Arc::from(endpoint))
            .or_default()
            .clone()
    }

    /// Adds `request` to `endpoints`.
    pub fn acquire<'a>(&self, request: &Request, endpoints: impl IntoIterator<Item = &'a str>) {
        let tokens = estimate_tokens(request);
        let added: Vec<(Arc<Counters>, u64)> = endpoints
            .into_iter()
            .map(|name| {
                let c = self.counters(name);
                c.requests.fetch_add(1, Ordering::Relaxed);
                c.tokens.fetch_add(tokens, Ordering::Relaxed);
                (c, tokens)
            })
            .collect();
        if added.is_empty() {
            return;
        }
        // A reused request id: keep both, the first release frees both (never a leak).
        self.requests
            .entry(request.request_id.clone())
            .or_default()
            .extend(added);
    }

    /// Releases what `request_id` added; later calls for the same id do nothing.
    pub fn release(&self, request_id: &str) -> bool {
        let Some((_, added)) = self.requests.remove(request_id) else {
            return false;
        };
        for (c, tokens) in added {
            c.requests.fetch_sub(1, Ordering::Relaxed);
            c.tokens.fetch_sub(tokens, Ordering::Relaxed);
        }
        true
    }

    /// Drops the counters of endpoints for which `keep` is false (they left the pool). Requests
    /// still in flight on them release into the detached counters harmlessly.
    pub fn retain_endpoints(&self, mut keep: impl FnMut(&str) -> bool) {
        self.endpoints.write().retain(|k, _| keep(k));
    }
}

impl DataProducer for InflightLoadProducer {
    fn type_name(&self) -> &'static str {
        "inflight-load-producer"
    }

    fn produce(
        &self,
        _: &Request,
        snapshot: &EndpointSnapshot,
        candidates: &[usize],
        _: Timestamp,
        state: &mut CycleState,
    ) {
        let mut loads = vec![EndpointLoad::default(); snapshot.len()];
        let map = self.endpoints.read();
        if !map.is_empty() {
            for &i in candidates {
                if let Some(c) = map.get(snapshot.get(i).endpoint.name.as_str()) {
                    loads[i] = c.load();
                }
            }
        }
        state.inflight = Some(loads);
    }
}

impl PreRequest for InflightLoadProducer {
    fn type_name(&self) -> &'static str {
        "inflight-load-producer"
    }

    fn pre_request(&self, ctx: &SchedulingContext<'_>, result: &SchedulingResult) {
        self.acquire(
            ctx.request,
            result
                .targets()
                .iter()
                .map(|t| ctx.snapshot.get(t.index).endpoint.name.as_str()),
        );
    }
}

impl ResponseComplete for InflightLoadProducer {
    fn type_name(&self) -> &'static str {
        "inflight-load-producer"
    }

    fn response_complete(&self, request: &Request, _endpoint_name: &str, _usage: Option<Usage>) {
        self.release(&request.request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::testing::{metrics, snapshot};

    fn req(id: &str, body: usize) -> Request {
        let mut r = Request::new(id, "m");
        r.body_size = body;
        r
    }

    #[test]
    fn token_estimate_matches_gie() {
        assert_eq!(estimate_tokens(&req("a", 0)), 0);
        assert_eq!(estimate_tokens(&req("a", 3)), 1 + 2); // input max(0, 1) = 1, output round(1.5) = 2
        assert_eq!(estimate_tokens(&req("a", 400)), 100 + 150);
        assert_eq!(estimate_tokens(&req("a", 404)), 101 + 152); // round(151.5) = 152
        let mut r = req("a", 0);
        r.prompt = bytes::Bytes::from_static(b"0123456789"); // 10 chars: round(2.5) = 3
        assert_eq!(estimate_tokens(&r), 3 + 5);
    }

    #[test]
    fn acquire_produce_and_idempotent_release() {
        let p = InflightLoadProducer::new();
        let snap = snapshot(vec![metrics(0, 0.0); 3]);
        p.acquire(&req("r1", 400), ["ep-1"]);
        p.acquire(&req("r2", 40), ["ep-1", "ep-2"]);
        let mut state = CycleState::default();
        p.produce(&req("x", 0), &snap, &[0, 1, 2], Timestamp::ZERO, &mut state);
        assert_eq!(state.inflight_load(0), EndpointLoad::default());
        assert_eq!(
            state.inflight_load(1),
            EndpointLoad {
                requests: 2,
                tokens: 250 + 25
            }
        );
        assert_eq!(state.inflight_load(2).requests, 1);

        // Completion, then the stream's end: one release.
        let r1 = req("r1", 400);
        p.response_complete(&r1, "ep-1", None);
        p.response_complete(&r1, "ep-1", None);
        assert!(!p.release("r1"));
        assert_eq!(
            p.load_of("ep-1"),
            EndpointLoad {
                requests: 1,
                tokens: 25
            }
        );
        // Released on every endpoint it was added to, whichever one the completion names.
        p.response_complete(&req("r2", 40), "ep-1", None);
        assert_eq!(p.load_of("ep-1"), EndpointLoad::default());
        assert_eq!(p.load_of("ep-2"), EndpointLoad::default());
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn concurrent_acquire_release_balances() {
        let p = Arc::new(InflightLoadProducer::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let r = req(&format!("{t}-{i}"), 100 + i);
                        p.acquire(&r, [format!("ep-{}", i % 3).as_str()]);
                        p.release(&r.request_id);
                        p.release(&r.request_id);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        for e in 0..3 {
            assert_eq!(p.load_of(&format!("ep-{e}")), EndpointLoad::default());
        }
    }
}
