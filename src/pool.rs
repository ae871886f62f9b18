//! The live endpoint pool: discovery sets which endpoints exist, the data layer publishes their
//! metrics, and the request path reads an immutable [`EndpointSnapshot`] without taking a lock.
//!
//! Writers (discovery, one scrape task per endpoint) serialise on a mutex and publish a new
//! snapshot copy-on-write; readers only load an `Arc`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::scheduling::{Endpoint, EndpointMetrics, EndpointSnapshot, EndpointState};

pub struct EndpointPool {
    current: ArcSwap<EndpointSnapshot>,
    write: Mutex<()>,
    /// Bumped whenever the set of endpoints changes (not on metrics updates), so the scraper and
    /// other watchers can reconcile.
    membership: watch::Sender<u64>,
    /// Bumped on every metrics update, for flow control's dispatcher (it subscribes only while
    /// requests wait, so an idle EPP does no work per scrape).
    metrics: watch::Sender<u64>,
}

impl Default for EndpointPool {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointPool {
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(EndpointSnapshot::default()),
            write: Mutex::new(()),
            membership: watch::channel(0).0,
            metrics: watch::channel(0).0,
        }
    }

    /// The pool as it is now. Cheap: one atomic load and an `Arc` clone.
    pub fn snapshot(&self) -> Arc<EndpointSnapshot> {
        self.current.load_full()
    }

    /// Replaces the set of endpoints. An endpoint that stays (same name, address and port) keeps
    /// its metrics; a new one starts with none (never scraped).
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        let _guard = self.write.lock();
        let old = self.current.load();
        let next: Vec<EndpointState> = endpoints
            .into_iter()
            .map(|ep| {
                match old.endpoints().iter().find(|s| {
                    s.endpoint.name == ep.name
                        && s.endpoint.address == ep.address
                        && s.endpoint.port == ep.port
                }) {
                    Some(prev) if *prev.endpoint == ep => prev.clone(),
                    Some(prev) => EndpointState {
                        endpoint: Arc::new(ep),
                        metrics: prev.metrics.clone(),
                    },
                    None => EndpointState {
                        endpoint: Arc::new(ep),
                        metrics: Arc::new(EndpointMetrics::default()),
                    },
                }
            })
            .collect();
        let changed = next.len() != old.len()
            || next
                .iter()
                .zip(old.endpoints())
                .any(|(a, b)| !Arc::ptr_eq(&a.endpoint, &b.endpoint));
        self.current.store(Arc::new(EndpointSnapshot::new(next)));
        if changed {
            self.membership.send_modify(|g| *g += 1);
        }
    }

    /// Publishes new metrics for the endpoint named `name`; returns false when it is no longer in
    /// the pool (the update is dropped).
    pub fn update_metrics(&self, name: &str, metrics: Arc<EndpointMetrics>) -> bool {
        let _guard = self.write.lock();
        let old = self.current.load();
        let Some(i) = old.find_by_name(name) else {
            return false;
        };
        let mut next = old.endpoints().to_vec();
        next[i].metrics = metrics;
        self.current.store(Arc::new(EndpointSnapshot::new(next)));
        self.metrics.send_modify(|g| *g = g.wrapping_add(1));
        true
    }

    /// A receiver that changes whenever endpoints join or leave.
    pub fn watch_membership(&self) -> watch::Receiver<u64> {
        self.membership.subscribe()
    }

    /// A receiver that changes whenever any endpoint's metrics are updated.
    pub fn watch_metrics(&self) -> watch::Receiver<u64> {
        self.metrics.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::Timestamp;

    fn ep(name: &str, ip: &str) -> Endpoint {
        Endpoint::new(name, ip.parse().unwrap(), 8000)
    }

    #[test]
    fn metrics_survive_membership_changes() {
        let pool = EndpointPool::new();
        let mut rx = pool.watch_membership();
        pool.set_endpoints(vec![ep("a", "127.0.0.11"), ep("b", "127.0.0.12")]);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let m = Arc::new(EndpointMetrics {
            waiting_queue_size: 3,
            updated_at: Some(Timestamp::from_millis(5)),
            ..Default::default()
        });
        assert!(pool.update_metrics("b", m.clone()));
        assert!(
            !rx.has_changed().unwrap(),
            "metrics are not a membership change"
        );
        let before = pool.snapshot();
        pool.set_endpoints(vec![ep("b", "127.0.0.12"), ep("c", "127.0.0.13")]);
        assert!(rx.has_changed().unwrap());
        let snap = pool.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(*snap.get(0).metrics, *m);
        assert_eq!(snap.get(1).metrics.updated_at, None);
        // The old snapshot is untouched.
        assert_eq!(before.len(), 2);
        assert_eq!(before.get(0).endpoint.name, "a");
        assert!(!pool.update_metrics("a", m));
    }

    #[test]
    fn same_endpoints_are_not_a_change() {
        let pool = EndpointPool::new();
        pool.set_endpoints(vec![ep("a", "127.0.0.11")]);
        let mut rx = pool.watch_membership();
        rx.borrow_and_update();
        pool.set_endpoints(vec![ep("a", "127.0.0.11")]);
        assert!(!rx.has_changed().unwrap());
    }
}
