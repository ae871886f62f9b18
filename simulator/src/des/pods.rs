//! Simulated pods: an engine stepped in virtual time, the gauges it last published, and the
//! EPP's view of it, refreshed by scraping.
//!
//! A scrape renders the pod's metrics page with [`crate::exposition`] and extracts it with the
//! engine mapping Switchyard's collector selects for the endpoint, the same rules the server applies
//! to a real page. The page is rendered from the gauges the engine published at the end of its
//! last step, as vLLM updates its gauges once per step, so the EPP sees the pool up to one step
//! plus one scrape interval late.
//!
//! Rendering and parsing a page costs microseconds, and an hour on eight pods is half a million
//! scrapes. When the gauges the mapping reads are unchanged since the last scrape, the extraction
//! would reproduce the previous metrics, so only their timestamp is refreshed; a run with
//! [`Scraping::Exact`] renders every page, and the tests compare both byte for byte.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use switchyard::datalayer::engine::{EngineMapping, Engines};
use switchyard::scheduling::{Endpoint, EndpointMetrics, EndpointState, Timestamp};

use super::router::CacheView;
use crate::engine::{Engine, EngineConfig, EngineStats, Event};
use crate::exposition::{self, Latencies, PageInput, Personality};

/// The label that selects an endpoint's engine mapping (GIE's default key).
pub const ENGINE_TYPE_LABEL: &str = "inference.networking.k8s.io/engine-type";

/// How scrapes are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scraping {
    /// Skip rendering when the gauges the extraction reads did not change.
    #[default]
    Incremental,
    /// Render and parse every page.
    Exact,
}

/// The gauges a metrics page shows that an engine mapping can read.
#[derive(Debug, Clone, PartialEq)]
struct PageKey {
    running: u32,
    waiting: u32,
    kv_bits: u64,
    blocks: u32,
    block_size: u32,
    max_loras: u32,
    running_loras: Vec<String>,
    waiting_loras: Vec<String>,
}

impl PageKey {
    fn of(s: &EngineStats) -> Self {
        Self {
            running: s.num_requests_running,
            waiting: s.num_requests_waiting,
            kv_bits: s.kv_cache_usage.to_bits(),
            blocks: s.num_gpu_blocks,
            block_size: s.block_size,
            max_loras: s.max_loras,
            running_loras: s.running_lora_adapters.clone(),
            waiting_loras: s.waiting_lora_adapters.clone(),
        }
    }
}

/// One simulated model server.
pub struct SimPod {
    pub engine: Engine,
    pub endpoint: Arc<Endpoint>,
    /// Whether a step is in flight (its end is scheduled).
    pub busy: bool,
    /// Events of the step in flight; they happen when it ends.
    pub pending: Vec<Event>,
    /// Gauges as of the end of the last step.
    published: EngineStats,
    mapping: Arc<EngineMapping>,
    last_key: Option<PageKey>,
    latencies: Latencies,
    /// Pages rendered and parsed so far.
    pub pages: u64,
}

/// The address of pod `i`: `10.0.<i / 250>.<i % 250 + 1>`.
pub fn pod_address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8))
}

impl SimPod {
    /// Pod `i` named like a static endpoint (`ip:port`) and labelled with its engine type.
    pub fn new(i: usize, cfg: &EngineConfig, personality: Personality, engines: &Engines) -> Self {
        let labels = BTreeMap::from([(
            ENGINE_TYPE_LABEL.to_string(),
            personality.name().to_string(),
        )]);
        let addr = pod_address(i);
        let name = std::net::SocketAddr::new(addr, 8000).to_string();
        let endpoint = Arc::new(Endpoint::new(name, addr, 8000).with_labels(labels));
        let engine = Engine::new(cfg.clone());
        Self {
            published: engine.stats(),
            engine,
            mapping: engines.select(&endpoint),
            endpoint,
            busy: false,
            pending: Vec::new(),
            last_key: None,
            latencies: Latencies::default(),
            pages: 0,
        }
    }

    /// Publishes the engine's gauges (at the end of a step).
    pub fn publish(&mut self) {
        self.published = self.engine.stats();
    }

    /// Scrapes the pod at `now` into a new metrics value; `None` when the page yielded nothing
    /// (the collector then keeps the previous metrics and their age).
    pub fn scrape(
        &mut self,
        personality: Personality,
        prev: &EndpointMetrics,
        now: Timestamp,
        mode: Scraping,
    ) -> Option<EndpointMetrics> {
        let key = PageKey::of(&self.published);
        if mode == Scraping::Incremental && self.last_key.as_ref() == Some(&key) {
            let mut m = prev.clone();
            m.updated_at = Some(now);
            return Some(m);
        }
        self.pages += 1;
        let secs = Duration::from_nanos(now.as_nanos()).as_secs_f64();
        let page = exposition::render(
            personality,
            &PageInput {
                model: &self.engine.config().model,
                stats: &self.published,
                latencies: &self.latencies,
                created: 0.0,
                now: secs,
            },
        );
        let x = self.mapping.extract(page.as_bytes(), prev, now);
        if x.succeeded == 0 {
            self.last_key = None;
            return None;
        }
        self.last_key = Some(key);
        Some(x.metrics)
    }

    /// The endpoint with `metrics`, as a snapshot entry.
    pub fn state(&self, metrics: Arc<EndpointMetrics>) -> EndpointState {
        EndpointState {
            endpoint: self.endpoint.clone(),
            metrics,
        }
    }
}

impl CacheView for Vec<SimPod> {
    fn cached_prefix_blocks(&self, pod: usize, hashes: &[u64]) -> u32 {
        let pool = self[pod].engine.block_pool();
        hashes
            .iter()
            .take_while(|&&h| pool.lookup(h).is_some())
            .count() as u32
    }
}
