//! The admin API (`proto/switchyard/admin/v1/admin.proto`), served on `--admin-port`, and the
//! `switchyard explain` / `switchyard state` commands that talk to it.
//!
//! - [`explain`]: a dry run of admission and scheduling for one request, against the live
//!   runtime and optionally an alternative configuration, changing no state.
//! - [`state`]: endpoints, metrics and their age, scrape health, the configuration in force, the
//!   prefix index, flow-control queues and VTC counters.
//! - [`service`]: the gRPC service (`Explain`, `GetState`, `WatchState`).
//! - [`cli`] and [`render`]: the client subcommands and their tables.

pub mod cli;
pub mod explain;
pub mod render;
pub mod service;
pub mod state;

use std::time::{Duration, SystemTime};

use crate::scheduling::{EndpointLoad, EndpointMetrics, Timestamp};

/// The generated messages, client and server.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("switchyard.admin.v1");

    /// The encoded descriptor set of the admin API, for gRPC reflection and protobuf JSON.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An endpoint's metrics as reported, with their age at `now`.
pub(crate) fn metrics_message(m: &EndpointMetrics, now: Timestamp) -> proto::EndpointMetrics {
    let sorted = |s: &std::collections::HashSet<String>| {
        let mut v: Vec<String> = s.iter().cloned().collect();
        v.sort();
        v
    };
    proto::EndpointMetrics {
        waiting_requests: m.waiting_queue_size,
        running_requests: m.running_requests_size,
        kv_cache_usage: m.kv_cache_usage,
        active_models: sorted(&m.active_models),
        waiting_models: sorted(&m.waiting_models),
        max_active_models: m.max_active_models as u64,
        cache_block_size: m.cache_block_size,
        cache_num_blocks: m.cache_num_blocks,
        age_ms: m.age(now).map(millis),
    }
}

pub(crate) fn inflight_message(l: EndpointLoad) -> proto::InflightLoad {
    proto::InflightLoad {
        requests: l.requests,
        tokens: l.tokens,
    }
}

/// Where a configuration came from, as the admin API names it.
pub(crate) fn origin_name(o: &crate::runtime::ConfigOrigin) -> String {
    use crate::runtime::ConfigOrigin;
    match o {
        ConfigOrigin::BuiltIn => "built-in".into(),
        ConfigOrigin::Text => "--config-text".into(),
        ConfigOrigin::File(p) => format!("file:{}", p.display()),
    }
}
