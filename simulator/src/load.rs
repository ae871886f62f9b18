//! The load generator: open-loop (Poisson) or closed-loop (fixed concurrency) arrivals of work
//! items through a gateway, one record per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use switchyard::extproc::response::{SseUsageScanner, usage_from_json};
use tokio::task::JoinSet;

use crate::gateway::{Gateway, GatewayRequest};
use crate::workload::WorkItem;

#[derive(Debug, Clone, Copy)]
pub enum Arrival {
    /// Open loop: exponential inter-arrival times at `rate` requests per second.
    Poisson { rate: f64, seed: u64 },
    /// Closed loop: `concurrency` clients, each sending its next request when one finishes.
    Closed { concurrency: usize },
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub arrival: Arrival,
    /// No request starts after this much time.
    pub max_duration: Duration,
    pub model: String,
    pub stream: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Where requests go: through an EPP, round-robin over pods without one, or to a proxy that
/// routes by itself (real Envoy in front of Switchyard, a peer router).
#[derive(Clone)]
pub enum Target {
    Epp(Gateway),
    RoundRobin { gateway: Gateway, pods: Vec<String> },
    Proxy { gateway: Gateway, addr: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub tenant: String,
    pub group: usize,
    /// When the request was sent, from the start of the run.
    pub sent_at_ms: f64,
    pub status: u16,
    pub ttft_ms: Option<f64>,
    pub e2e_ms: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub endpoint: Option<String>,
    pub error: Option<String>,
}

/// The `/v1/completions` body the load generator sends; the discrete-event mode builds the same
/// bytes and hands them to Switchyard's request parser.
pub fn completion_body(model: &str, prompt: &str, max_tokens: u32, stream: bool) -> Bytes {
    let mut v = serde_json::json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    if stream {
        v["stream"] = true.into();
        v["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}

fn body_of(item: &WorkItem, spec: &LoadSpec) -> Bytes {
    completion_body(&spec.model, &item.prompt, item.max_tokens, spec.stream)
}

async fn one(
    target: Target,
    item: WorkItem,
    spec: Arc<LoadSpec>,
    start: Instant,
    rr: Arc<AtomicUsize>,
) -> Record {
    let sent = start.elapsed();
    let req = GatewayRequest {
        path: "/v1/completions".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "x-gateway-inference-fairness-id".into(),
                item.tenant.clone(),
            ),
        ],
        body: body_of(&item, &spec),
    };
    let res = match &target {
        Target::Epp(g) => g.send(req, None).await,
        Target::RoundRobin { gateway, pods } => {
            let i = rr.fetch_add(1, Ordering::Relaxed) % pods.len();
            gateway.send(req, Some(&pods[i])).await
        }
        Target::Proxy { gateway, addr } => gateway.send(req, Some(addr)).await,
    };
    let mut rec = Record {
        tenant: item.tenant,
        group: item.group,
        sent_at_ms: sent.as_secs_f64() * 1e3,
        status: 0,
        ttft_ms: None,
        e2e_ms: 0.0,
        prompt_tokens: 0,
        output_tokens: 0,
        cached_tokens: 0,
        endpoint: None,
        error: None,
    };
    match res {
        Ok(out) => {
            rec.status = out.status;
            rec.ttft_ms = out.ttft.map(|d| d.as_secs_f64() * 1e3);
            rec.e2e_ms = out.e2e.as_secs_f64() * 1e3;
            rec.endpoint = out.endpoint;
            let usage = if spec.stream {
                let mut s = SseUsageScanner::default();
                s.feed(&out.body);
                s.finish();
                s.usage()
            } else {
                usage_from_json(&out.body)
            };
            if let Some(u) = usage {
                rec.prompt_tokens = u.prompt_tokens;
                rec.output_tokens = u.completion_tokens;
                rec.cached_tokens = u.cached_tokens;
            }
            if out.status != 200 {
                rec.error = Some(
                    String::from_utf8_lossy(&out.body)
                        .chars()
                        .take(200)
                        .collect(),
                );
            }
        }
        Err(e) => {
            rec.error = Some(e.to_string());
            rec.e2e_ms = start.elapsed().as_secs_f64() * 1e3 - rec.sent_at_ms;
        }
    }
    rec
}

/// Sends `items` (in order, wrapping around if the run outlasts them) and returns every record.
pub async fn run(target: Target, items: Vec<WorkItem>, spec: LoadSpec) -> Vec<Record> {
    let spec = Arc::new(spec);
    let start = Instant::now();
    let rr = Arc::new(AtomicUsize::new(0));
    let bar = spec.progress.then(|| {
        let b = indicatif::ProgressBar::new(spec.max_duration.as_secs());
        b.set_style(
            indicatif::ProgressStyle::with_template("  {msg:<28} [{bar:30}] {pos}/{len}s")
                .expect("template")
                .progress_chars("=> "),
        );
        b
    });
    let mut records = Vec::new();
    let mut tasks = JoinSet::new();
    match spec.arrival {
        Arrival::Poisson { rate, seed } => {
            let mut rng = Pcg64Mcg::seed_from_u64(seed);
            let mut at = Duration::ZERO;
            for item in items.iter().cycle() {
                let u: f64 = rng.random();
                at += Duration::from_secs_f64(-(1.0 - u).ln() / rate);
                if at > spec.max_duration {
                    break;
                }
                tokio::time::sleep_until((start + at).into()).await;
                if let Some(b) = &bar {
                    b.set_position(start.elapsed().as_secs());
                    b.set_message(format!("{} requests sent", tasks.len() + records.len()));
                }
                while let Some(done) = tasks.try_join_next() {
                    records.push(done.expect("request task"));
                }
                tasks.spawn(one(
                    target.clone(),
                    item.clone(),
                    spec.clone(),
                    start,
                    rr.clone(),
                ));
            }
        }
        Arrival::Closed { concurrency } => {
            let next = Arc::new(AtomicUsize::new(0));
            let items = Arc::new(items);
            let mut clients = JoinSet::new();
            for _ in 0..concurrency {
                let (target, spec, rr, next, items) = (
                    target.clone(),
                    spec.clone(),
                    rr.clone(),
                    next.clone(),
                    items.clone(),
                );
                clients.spawn(async move {
                    let mut mine = Vec::new();
                    while start.elapsed() < spec.max_duration {
                        let i = next.fetch_add(1, Ordering::Relaxed) % items.len();
                        mine.push(
                            one(
                                target.clone(),
                                items[i].clone(),
                                spec.clone(),
                                start,
                                rr.clone(),
                            )
                            .await,
                        );
                    }
                    mine
                });
            }
            // Closed-loop tasks return their records in batches; unwrap below.
            let mut batches = Vec::new();
            while let Some(b) = clients.join_next().await {
                batches.push(b.expect("client task"));
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return batches.into_iter().flatten().collect();
        }
    }
    while let Some(done) = tasks.join_next().await {
        records.push(done.expect("request task"));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    records.sort_by(|a, b| a.sent_at_ms.total_cmp(&b.sent_at_ms));
    records
}

/// Sends each item at its own time from the start (a trace's arrivals, open loop) and returns
/// every record, in sending order.
pub async fn run_at(
    target: Target,
    timed: Vec<(Duration, WorkItem)>,
    spec: LoadSpec,
) -> Vec<Record> {
    let spec = Arc::new(spec);
    let start = Instant::now();
    let rr = Arc::new(AtomicUsize::new(0));
    let mut records = Vec::new();
    let mut tasks = JoinSet::new();
    for (at, item) in timed {
        if at > spec.max_duration {
            break;
        }
        tokio::time::sleep_until((start + at).into()).await;
        while let Some(done) = tasks.try_join_next() {
            records.push(done.expect("request task"));
        }
        tasks.spawn(one(target.clone(), item, spec.clone(), start, rr.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        records.push(done.expect("request task"));
    }
    records.sort_by(|a, b| a.sent_at_ms.total_cmp(&b.sent_at_ms));
    records
}
