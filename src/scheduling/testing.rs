//! Builders shared by the core's unit tests.

use std::sync::Arc;

use super::{
    CycleState, Endpoint, EndpointMetrics, EndpointSnapshot, EndpointState, Request,
    SchedulingContext, Timestamp,
};

/// Metrics with the given queue and KV usage, scraped at time zero.
pub fn metrics(queue: u64, kv: f64) -> EndpointMetrics {
    EndpointMetrics {
        waiting_queue_size: queue,
        kv_cache_usage: kv,
        updated_at: Some(Timestamp::ZERO),
        ..Default::default()
    }
}

/// Endpoints `ep-<i>` at `10.0.0.<i+1>:8000`, one per metrics value.
pub fn snapshot(ms: Vec<EndpointMetrics>) -> EndpointSnapshot {
    EndpointSnapshot::new(
        ms.into_iter()
            .enumerate()
            .map(|(i, m)| EndpointState {
                endpoint: Arc::new(Endpoint::new(
                    format!("ep-{i}"),
                    format!("10.0.0.{}", i + 1).parse().unwrap(),
                    8000,
                )),
                metrics: Arc::new(m),
            })
            .collect(),
    )
}

pub fn ctx_for<'a>(
    req: &'a Request,
    snap: &'a EndpointSnapshot,
    state: &'a CycleState,
) -> SchedulingContext<'a> {
    ctx_at(req, snap, state, Timestamp::ZERO)
}

pub fn ctx_at<'a>(
    req: &'a Request,
    snap: &'a EndpointSnapshot,
    state: &'a CycleState,
    now: Timestamp,
) -> SchedulingContext<'a> {
    SchedulingContext {
        request: req,
        snapshot: snap,
        state,
        now,
    }
}
