//! Endpoints as the scheduler sees them: identity, the latest metrics, and the immutable pool
//! snapshot that every request reads without taking a lock.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::time::Timestamp;

/// Who an endpoint is. Fixed for the endpoint's lifetime; metrics change, identity does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Unique within the pool, e.g. `vllm-0-rank-0` (GIE names one endpoint per pod and port).
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub labels: BTreeMap<String, String>,
    /// `ip:port` (IPv6 in brackets), rendered once because every pick sends it to the gateway.
    host_port: String,
}

impl Endpoint {
    pub fn new(name: impl Into<String>, address: IpAddr, port: u16) -> Self {
        Self {
            name: name.into(),
            address,
            port,
            labels: BTreeMap::new(),
            host_port: SocketAddr::new(address, port).to_string(),
        }
    }

    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The value of `x-gateway-destination-endpoint` for this endpoint.
    pub fn host_port(&self) -> &str {
        &self.host_port
    }
}

/// The model-server metrics the scorers read, as last scraped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointMetrics {
    /// Requests waiting in the engine's queue.
    pub waiting_queue_size: u64,
    /// Requests in the running batch.
    pub running_requests_size: u64,
    /// KV-cache utilisation as a fraction in `0..=1`.
    pub kv_cache_usage: f64,
    /// LoRA adapters in the running batch.
    pub active_models: HashSet<String>,
    /// LoRA adapters requested but not yet loaded.
    pub waiting_models: HashSet<String>,
    /// How many adapters the engine can hold at once (`max_lora`); 0 when unknown.
    pub max_active_models: usize,
    /// Tokens per KV block (`block_size`); 0 when unknown.
    pub cache_block_size: u32,
    /// KV blocks on the device (`num_gpu_blocks`); 0 when unknown.
    pub cache_num_blocks: u64,
    /// When these values were scraped; `None` until the first successful scrape.
    pub updated_at: Option<Timestamp>,
}

impl EndpointMetrics {
    /// Age of these metrics at `now`; `None` when they were never scraped.
    pub fn age(&self, now: Timestamp) -> Option<Duration> {
        self.updated_at.map(|t| now.saturating_since(t))
    }

    /// Whether these metrics are missing or older than `threshold` at `now`.
    pub fn is_stale(&self, now: Timestamp, threshold: Duration) -> bool {
        self.age(now).is_none_or(|age| age > threshold)
    }
}

/// One endpoint with the metrics in force when the snapshot was taken.
#[derive(Debug, Clone)]
pub struct EndpointState {
    pub endpoint: Arc<Endpoint>,
    pub metrics: Arc<EndpointMetrics>,
}

/// The pool at one instant. Immutable and shared by `Arc`: the data layer publishes a new one when
/// anything changes and in-flight requests keep the one they started with.
#[derive(Debug, Clone, Default)]
pub struct EndpointSnapshot {
    endpoints: Vec<EndpointState>,
}

impl EndpointSnapshot {
    pub fn new(endpoints: Vec<EndpointState>) -> Self {
        Self { endpoints }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn get(&self, index: usize) -> &EndpointState {
        &self.endpoints[index]
    }

    pub fn endpoints(&self) -> &[EndpointState] {
        &self.endpoints
    }

    pub fn find_by_name(&self, name: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| e.endpoint.name == name)
    }

    /// Indices of the endpoints a request may use. `None` means every endpoint (no subset hint);
    /// otherwise an endpoint qualifies when its IP is in `subset`, whatever its port, as in GIE
    /// (all data-parallel ranks of a listed pod qualify).
    pub fn candidates(&self, subset: Option<&[IpAddr]>) -> Vec<usize> {
        match subset {
            None => (0..self.endpoints.len()).collect(),
            Some(ips) => self
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| ips.contains(&e.endpoint.address))
                .map(|(i, _)| i)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> EndpointSnapshot {
        let mk = |n: &str, ip: &str, port| EndpointState {
            endpoint: Arc::new(Endpoint::new(n, ip.parse().unwrap(), port)),
            metrics: Arc::new(EndpointMetrics::default()),
        };
        EndpointSnapshot::new(vec![
            mk("a-rank-0", "10.0.0.1", 8000),
            mk("a-rank-1", "10.0.0.1", 8001),
            mk("b", "10.0.0.2", 8000),
            mk("v6", "fd00::1", 8000),
        ])
    }

    #[test]
    fn host_port_brackets_ipv6() {
        let s = snap();
        assert_eq!(s.get(0).endpoint.host_port(), "10.0.0.1:8000");
        assert_eq!(s.get(3).endpoint.host_port(), "[fd00::1]:8000");
    }

    #[test]
    fn candidates_match_subset_by_ip_only() {
        let s = snap();
        assert_eq!(s.candidates(None), vec![0, 1, 2, 3]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(s.candidates(Some(&[ip])), vec![0, 1]);
        assert!(s.candidates(Some(&[])).is_empty());
        let other: IpAddr = "10.0.0.99".parse().unwrap();
        assert!(s.candidates(Some(&[other])).is_empty());
    }

    #[test]
    fn staleness() {
        let mut m = EndpointMetrics::default();
        let now = Timestamp::from_millis(1_000);
        assert!(m.is_stale(now, Duration::from_millis(200)));
        m.updated_at = Some(Timestamp::from_millis(900));
        assert!(!m.is_stale(now, Duration::from_millis(200)));
        assert!(m.is_stale(now, Duration::from_millis(50)));
        assert_eq!(m.age(now), Some(Duration::from_millis(100)));
    }
}
