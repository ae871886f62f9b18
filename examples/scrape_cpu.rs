//! CPU cost of the real collector scraping N fake vLLM endpoints every 50 ms over loopback HTTP.
//!
//! ```sh
//! cargo run --release --example scrape_cpu -- [endpoints=100] [seconds=10] [interval_ms=50]
//! ```
//!
//! The fake servers run in a **child process** (this program re-executed with `--serve`), so the
//! CPU time reported — `getrusage(RUSAGE_SELF)` user + system over wall time, after a 1 s warm-up —
//! is the collector's alone: HTTP client, kernel socket work on the client side, parsing,
//! extraction and publishing into the pool. Each endpoint serves a ~40 KB vLLM V1 page with every
//! latency histogram, as a real one does.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::datalayer::fake::{EngineState, VllmPage};
use switchyard::datalayer::{Collector, CollectorConfig, DataLayerMetrics, monotonic_clock};
use switchyard::pool::EndpointPool;
use switchyard::scheduling::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        serve(args[1].parse().expect("endpoint count"));
        return;
    }
    let n: usize = args.first().map_or(100, |a| a.parse().expect("endpoints"));
    let secs: u64 = args.get(1).map_or(10, |a| a.parse().expect("seconds"));
    let interval_ms: u64 = args.get(2).map_or(50, |a| a.parse().expect("interval"));

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fake servers");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), n);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = Arc::new(EndpointPool::new());
        pool.set_endpoints(
            ports
                .iter()
                .enumerate()
                .map(|(i, &p)| Endpoint::new(format!("ep-{i}"), "127.0.0.1".parse().unwrap(), p))
                .collect(),
        );
        let metrics = DataLayerMetrics::new("bench");
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let config = CollectorConfig {
            pool_name: "bench".into(),
            refresh_interval: Duration::from_millis(interval_ms),
            ..Default::default()
        };
        let collector =
            Collector::spawn(pool.clone(), config, monotonic_clock(), metrics).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, scrapes0, wall0) = (cpu_time(), scrapes(&registry), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu1, scrapes1, wall) = (cpu_time(), scrapes(&registry), wall0.elapsed());
        let fresh = pool
            .snapshot()
            .endpoints()
            .iter()
            .filter(|s| s.metrics.updated_at.is_some())
            .count();
        collector.shutdown().await;
        let cpu = cpu1 - cpu0;
        let rate = (scrapes1 - scrapes0) as f64 / wall.as_secs_f64();
        println!(
            "endpoints={n} interval={interval_ms}ms wall={:.2}s scrapes/s={rate:.0} (ideal {:.0}) \
             endpoints_with_metrics={fresh} cpu={:.3}s => {:.1}% of one core, {:.1} µs CPU per scrape",
            wall.as_secs_f64(),
            n as f64 * 1000.0 / interval_ms as f64,
            cpu.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            1e6 * cpu.as_secs_f64() / (rate * wall.as_secs_f64()).max(1.0),
        );
    });
    drop(child.stdin.take()); // the child exits when its stdin closes
    let _ = child.wait();
}

/// Successful and failed scrapes so far, from the duration histogram's count.
fn scrapes(registry: &prometheus_client::registry::Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with("inference_extension_model_server_scrape_duration_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let ru = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()), 0);
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The child: N keep-alive HTTP/1.1 servers on loopback answering every request with the page.
fn serve(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let page = VllmPage {
            engines: vec![EngineState {
                waiting: 3,
                running: 5,
                kv_usage: 0.4,
            }],
            ..Default::default()
        }
        .render();
        let response: Arc<[u8]> = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{page}",
            page.len()
        )
        .into_bytes()
        .into();
        let mut ports = Vec::new();
        for _ in 0..n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(l.local_addr().unwrap().port().to_string());
            let response = response.clone();
            tokio::spawn(async move {
                while let Ok((mut sock, _)) = l.accept().await {
                    let response = response.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::with_capacity(1024);
                        loop {
                            match sock.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                buf.drain(..i + 4);
                                if sock.write_all(&response).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
        }
        println!("{}", ports.join(" "));
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read(&mut [0u8; 1]);
        })
        .await
        .unwrap();
    });
}
