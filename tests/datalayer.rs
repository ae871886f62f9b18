//! The collector against fake model servers on loopback: values change, a server goes down and
//! comes back, serves garbage, errors or hangs, and endpoints join and leave the pool.
//!
//! No assertion depends on timing: every check polls (generously) until the expected state shows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use switchyard::datalayer::fake::{EngineState, VllmPage};
use switchyard::datalayer::{
    Collector, CollectorConfig, DataLayerMetrics, ScrapeErrorReason, monotonic_clock,
};
use switchyard::pool::EndpointPool;
use switchyard::scheduling::{Endpoint, EndpointMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Clone)]
enum Mode {
    Page(String),
    Status(u16),
    /// Accept the request and never answer.
    Hang,
}

/// A tiny HTTP/1.1 keep-alive server answering every request according to its mode.
struct FakeServer {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl FakeServer {
    async fn start(page: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut s = Self {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(Mode::Page(page))),
            requests: Arc::default(),
            task: None,
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: TcpListener) {
        let (mode, requests) = (self.mode.clone(), self.requests.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(connection(sock, mode.clone(), requests.clone()));
            }
        }));
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Closes the listener and every connection.
    async fn go_down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same address.
    async fn come_back(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn endpoint(&self, name: &str, engine: Option<&str>) -> Endpoint {
        let mut labels = BTreeMap::new();
        if let Some(e) = engine {
            labels.insert(
                "inference.networking.k8s.io/engine-type".to_string(),
                e.to_string(),
            );
        }
        Endpoint::new(name, self.addr.ip(), self.addr.port()).with_labels(labels)
    }
}

async fn connection(mut sock: TcpStream, mode: Arc<Mutex<Mode>>, requests: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        buf.drain(..head_end);
        requests.fetch_add(1, Ordering::Relaxed);
        let m = mode.lock().clone();
        let (status, body) = match m {
            Mode::Page(p) => (200, p),
            Mode::Status(code) => (code, "oops\n".to_string()),
            Mode::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if sock.write_all(head.as_bytes()).await.is_err()
            || sock.write_all(body.as_bytes()).await.is_err()
        {
            return;
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn metrics_of(pool: &EndpointPool, name: &str) -> Arc<EndpointMetrics> {
    let snap = pool.snapshot();
    let i = snap.find_by_name(name).expect("endpoint in pool");
    snap.get(i).metrics.clone()
}

fn vllm(engines: &[(u64, u64, f64)]) -> String {
    VllmPage {
        engines: engines
            .iter()
            .map(|&(waiting, running, kv_usage)| EngineState {
                waiting,
                running,
                kv_usage,
            })
            .collect(),
        ..Default::default()
    }
    .render()
}

const SGLANG: &str = "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 11\n\
                      sglang:num_running_reqs{model_name=\"m\"} 22\nsglang:token_usage{model_name=\"m\"} 0.5\n";

fn config() -> CollectorConfig {
    CollectorConfig {
        pool_name: "test-pool".into(),
        refresh_interval: Duration::from_millis(20),
        scrape_timeout: Duration::from_millis(500),
        prometheus_refresh_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_follow_changes_outages_and_garbage() {
    let mut a = FakeServer::start(vllm(&[(3, 4, 0.25), (5, 6, 0.5)])).await;
    let b = FakeServer::start(SGLANG.to_string()).await;
    let pool = Arc::new(EndpointPool::new());
    pool.set_endpoints(vec![a.endpoint("a", None), b.endpoint("b", Some("sglang"))]);
    let metrics = DataLayerMetrics::new("test-pool");
    let collector =
        Collector::spawn(pool.clone(), config(), monotonic_clock(), metrics.clone()).unwrap();

    // First scrape: DP ranks of a are aggregated; b is read with the SGLang mapping.
    eventually("first scrapes", || {
        let (ma, mb) = (metrics_of(&pool, "a"), metrics_of(&pool, "b"));
        ma.updated_at.is_some() && mb.updated_at.is_some()
    })
    .await;
    let ma = metrics_of(&pool, "a");
    assert_eq!(
        (
            ma.waiting_queue_size,
            ma.running_requests_size,
            ma.kv_cache_usage
        ),
        (8, 10, 0.5)
    );
    assert_eq!((ma.cache_block_size, ma.cache_num_blocks), (16, 27_000));
    let mb = metrics_of(&pool, "b");
    assert_eq!(
        (
            mb.waiting_queue_size,
            mb.running_requests_size,
            mb.kv_cache_usage
        ),
        (11, 22, 0.5)
    );

    // Values change.
    a.set(Mode::Page(vllm(&[(0, 1, 0.9)])));
    eventually("new values", || {
        metrics_of(&pool, "a").waiting_queue_size == 0
    })
    .await;
    assert_eq!(metrics_of(&pool, "a").kv_cache_usage, 0.9);
    let ages = collector.metrics_ages();
    assert_eq!(ages.len(), 2);
    assert!(ages.iter().all(|(_, age)| age.is_some()));

    // Down: the last values and their timestamp stay, the errors are counted.
    a.go_down().await;
    eventually("connect errors", || {
        metrics.scrape_errors("a", ScrapeErrorReason::Connect) >= 2
    })
    .await;
    let frozen = metrics_of(&pool, "a");
    eventually("more connect errors", || {
        metrics.scrape_errors("a", ScrapeErrorReason::Connect) >= 4
    })
    .await;
    assert_eq!(
        metrics_of(&pool, "a"),
        frozen,
        "a failed scrape changes nothing"
    );
    assert_eq!(frozen.running_requests_size, 1);

    // Back up with new values.
    a.set(Mode::Page(vllm(&[(7, 7, 0.7)])));
    a.come_back().await;
    eventually("recovery", || {
        metrics_of(&pool, "a").waiting_queue_size == 7
    })
    .await;
    assert!(metrics_of(&pool, "a").updated_at > frozen.updated_at);

    // Garbage and HTTP errors: counted, nothing published.
    b.set(Mode::Page(
        "<html><body>502 Bad Gateway</body></html>\n\0\u{7f}{{{\n".into(),
    ));
    eventually("garbage is rejected", || {
        metrics.scrape_errors("b", ScrapeErrorReason::NoMetrics) >= 2
    })
    .await;
    b.set(Mode::Status(503));
    eventually("HTTP errors are counted", || {
        metrics.scrape_errors("b", ScrapeErrorReason::HttpStatus) >= 2
    })
    .await;
    let mb2 = metrics_of(&pool, "b");
    assert_eq!(
        (mb2.waiting_queue_size, mb2.running_requests_size),
        (11, 22),
        "last good values kept"
    );

    // A hung server times out.
    b.set(Mode::Hang);
    eventually("timeouts", || {
        metrics.scrape_errors("b", ScrapeErrorReason::Timeout) >= 1
    })
    .await;
    b.set(Mode::Page(SGLANG.replace(" 11", " 12")));
    eventually("b recovers", || {
        metrics_of(&pool, "b").waiting_queue_size == 12
    })
    .await;

    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_follow_pool_membership() {
    let a = FakeServer::start(vllm(&[(1, 1, 0.1)])).await;
    let b = FakeServer::start(vllm(&[(2, 2, 0.2)])).await;
    let pool = Arc::new(EndpointPool::new());
    pool.set_endpoints(vec![a.endpoint("a", None)]);
    let metrics = DataLayerMetrics::new("p");
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let collector =
        Collector::spawn(pool.clone(), config(), monotonic_clock(), metrics.clone()).unwrap();
    eventually("a scraped", || metrics_of(&pool, "a").updated_at.is_some()).await;
    assert_eq!(b.requests(), 0);

    // b joins, a leaves.
    pool.set_endpoints(vec![b.endpoint("b", None)]);
    eventually("b scraped", || {
        metrics_of(&pool, "b").waiting_queue_size == 2
    })
    .await;
    // a's task stops: its request count settles.
    let mut last = a.requests();
    let mut stable = 0;
    eventually("a no longer scraped", || {
        let now = a.requests();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        stable >= 20 // 200 ms without a request, ten scrape intervals
    })
    .await;

    // The pool gauges see b only.
    eventually("pool gauges", || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.contains("inference_pool_ready_pods{name=\"p\"} 1")
            && text.contains("inference_pool_average_queue_size{name=\"p\"} 2.0")
            && text.contains(
                "inference_extension_model_server_metrics_age_seconds{name=\"p\",endpoint=\"b\"}",
            )
            && !text.contains("endpoint=\"a\"")
    })
    .await;

    collector.shutdown().await;
    // After shutdown nothing scrapes.
    let settled = b.requests();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(b.requests() <= settled + 1);
}
