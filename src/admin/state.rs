//! `GetState`: what the endpoint picker sees now — endpoints with their metrics and age, scrape
//! health, the configuration in force and the last failed reload, the prefix index, flow-control
//! queues and VTC counters. Read-only; the per-tenant lists are bounded by the caller's
//! `max_tenants` (largest first).

use std::time::SystemTime;

use super::{inflight_message, metrics_message, millis, origin_name, proto, unix_ms};
use crate::runtime::Live;

/// Per-tenant rows returned when the caller sets no limit, and the most it may ask for.
pub const DEFAULT_MAX_TENANTS: usize = 100;
pub const MAX_TENANTS: usize = 1000;

/// The caller's `max_tenants`, defaulted and capped.
pub fn tenant_limit(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_MAX_TENANTS,
        n => (n as usize).min(MAX_TENANTS),
    }
}

/// The state of `live` now.
pub fn state(live: &Live, max_tenants: usize) -> proto::State {
    use proto::scrape_health::Status;
    let rt = live.runtime();
    let d = live.director();
    let snapshot = d.pool.snapshot();
    let now = d.clock.now();
    let collecting = rt.collector.is_some();
    let health = live.scrape_health();
    let (succeeded, failed) = live.reload_counts();

    let endpoints = snapshot
        .endpoints()
        .iter()
        .map(|e| {
            let name = &e.endpoint.name;
            let scrape = if !collecting {
                proto::ScrapeHealth {
                    status: Status::Disabled as i32,
                    ..Default::default()
                }
            } else {
                match health.get(name) {
                    None => proto::ScrapeHealth {
                        status: Status::Pending as i32,
                        ..Default::default()
                    },
                    Some(h) => {
                        let status = if h.consecutive_failures > 0 {
                            Status::Failing
                        } else if h.last_success.is_some() {
                            Status::Ok
                        } else {
                            Status::Pending
                        };
                        let (reason, detail) = h
                            .last_error
                            .map(|(r, d)| (r.as_str().to_string(), d))
                            .unwrap_or_default();
                        proto::ScrapeHealth {
                            status: status as i32,
                            consecutive_failures: h.consecutive_failures,
                            last_error_reason: reason,
                            last_error: detail,
                            last_success_age_ms: h
                                .last_success
                                .map(|t| millis(now.saturating_since(t))),
                        }
                    }
                }
            };
            let prefix_blocks = rt
                .plugins
                .prefix_producers
                .iter()
                .map(|p| p.index().len_of(name) as u64)
                .sum();
            let inflight = rt
                .plugins
                .inflight_producers
                .first()
                .map(|p| p.load_of(name))
                .unwrap_or_default();
            proto::EndpointState {
                name: name.clone(),
                address: e.endpoint.host_port().to_string(),
                labels: e
                    .endpoint
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                metrics: Some(metrics_message(&e.metrics, now)),
                scrape: Some(scrape),
                prefix_blocks,
                inflight: Some(inflight_message(inflight)),
            }
        })
        .collect();

    let prefix_index = proto::PrefixIndexState {
        entries: rt
            .plugins
            .prefix_producers
            .iter()
            .map(|p| p.index().len() as u64)
            .sum(),
        endpoints: rt
            .plugins
            .prefix_producers
            .iter()
            .map(|p| p.index().endpoint_count() as u64)
            .max()
            .unwrap_or(0),
    };

    let flow_control = match live.flow_control() {
        None => proto::FlowControlState::default(),
        Some(fc) => fc.inspect(|g| {
            let mut fcs = proto::FlowControlState {
                enabled: g.queues(),
                queued_requests: g.queued() as u64,
                saturation: g.last_saturation(),
                ..Default::default()
            };
            if let Some(ctl) = g.controller() {
                fcs.queued_bytes = ctl.bytes();
                let mut flows: Vec<proto::Flow> = ctl
                    .flows()
                    .map(|(priority, t, requests, bytes)| proto::Flow {
                        priority,
                        fairness_id: t.to_string(),
                        requests: requests as u64,
                        bytes,
                    })
                    .collect();
                flows.sort_by(|a, b| {
                    b.requests
                        .cmp(&a.requests)
                        .then(b.priority.cmp(&a.priority))
                        .then(a.fairness_id.cmp(&b.fairness_id))
                });
                fcs.flows_omitted = flows.len().saturating_sub(max_tenants) as u32;
                flows.truncate(max_tenants);
                fcs.flows = flows;
                let mut counters: Vec<proto::TenantCounter> = ctl
                    .counters()
                    .map(|(priority, t, counter)| proto::TenantCounter {
                        priority,
                        fairness_id: t.to_string(),
                        counter,
                    })
                    .collect();
                counters.sort_by(|a, b| {
                    b.counter
                        .total_cmp(&a.counter)
                        .then(b.priority.cmp(&a.priority))
                        .then(a.fairness_id.cmp(&b.fairness_id))
                });
                fcs.vtc_counters_omitted = counters.len().saturating_sub(max_tenants) as u32;
                counters.truncate(max_tenants);
                fcs.vtc_counters = counters;
            }
            fcs
        }),
    };

    proto::State {
        at_unix_ms: unix_ms(SystemTime::now()),
        config: Some(proto::ConfigState {
            origin: origin_name(&rt.source.origin),
            hash: rt.source.hash.clone(),
            loaded_at_unix_ms: unix_ms(rt.source.loaded_at),
            reloads_succeeded: succeeded,
            reloads_failed: failed,
            last_reload_failure: live.last_reload_failure().map(|f| proto::ReloadFailure {
                at_unix_ms: unix_ms(f.at),
                errors: f.errors,
            }),
            profiles: rt
                .scheduler
                .profiles()
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            flow_control: rt.flow_control_config.is_some(),
        }),
        metrics_collection: collecting,
        endpoints,
        prefix_index: Some(prefix_index),
        flow_control: Some(flow_control),
    }
}
