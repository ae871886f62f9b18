//! The benchmark's model servers: as cheap as a listener can be, so that the load generator's
//! process spends its CPU on the gateway side. Each endpoint serves a fixed vLLM `/metrics` page
//! (rendered once, as a real pod's would read) and answers completions with a canned response:
//! one JSON body, or an SSE stream of as many events as the request's [`CHUNKS_HEADER`] asks for
//! (the last one carrying usage), each event its own HTTP chunk.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::engine::EngineStats;
use crate::exposition::{Latencies, PageInput, Personality, render};

/// Request header naming how many response events the upstream streams (1 = a JSON body).
pub const CHUNKS_HEADER: &str = "x-bench-response-chunks";

/// The most events one response may ask for.
pub const MAX_CHUNKS: u32 = 100_000;

struct Canned {
    metrics: String,
    json: Bytes,
    event: Bytes,
    last: Bytes,
}

impl Canned {
    fn new(model: &str) -> Self {
        let stats = EngineStats::default();
        let latencies = Latencies::default();
        let metrics = render(
            Personality::Vllm,
            &PageInput {
                model,
                stats: &stats,
                latencies: &latencies,
                created: 1.7e9,
                now: 1.7e9,
            },
        );
        let json = serde_json::json!({
            "id": "cmpl-bench",
            "object": "text_completion",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{"index": 0, "text": " a canned answer of a few tokens", "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2500, "total_tokens": 2516, "completion_tokens": 16, "prompt_tokens_details": {"cached_tokens": 2048}},
        });
        let chunk = |text: &str, finish: Option<&str>| {
            serde_json::json!({
                "id": "cmpl-bench",
                "object": "text_completion",
                "created": 1_700_000_000u64,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            })
        };
        let mut last = chunk("", Some("length"));
        last["usage"] = json["usage"].clone();
        let sse = |v: &serde_json::Value| Bytes::from(format!("data: {v}\n\n"));
        let mut last_bytes = sse(&last).to_vec();
        last_bytes.extend_from_slice(b"data: [DONE]\n\n");
        Self {
            metrics,
            json: Bytes::from(json.to_string()),
            event: sse(&chunk(" token", None)),
            last: Bytes::from(last_bytes),
        }
    }
}

async fn metrics(State(c): State<Arc<Canned>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics.clone(),
    )
        .into_response()
}

async fn completions(State(c): State<Arc<Canned>>, headers: HeaderMap, _body: Bytes) -> Response {
    let chunks = headers
        .get(CHUNKS_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_CHUNKS);
    if chunks == 1 {
        return ([(header::CONTENT_TYPE, "application/json")], c.json.clone()).into_response();
    }
    let (event, last) = (c.event.clone(), c.last.clone());
    let events = futures::stream::iter((0..chunks).map(move |i| {
        Ok::<_, std::io::Error>(if i + 1 == chunks {
            last.clone()
        } else {
            event.clone()
        })
    }));
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(events),
    )
        .into_response()
}

/// Endpoints on `127.0.0.1`, each on its own port; aborted when dropped.
pub struct Upstreams {
    pub addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Upstreams {
    pub async fn start(n: usize, model: &str) -> std::io::Result<Upstreams> {
        let canned = Arc::new(Canned::new(model));
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/v1/completions", post(completions))
            .with_state(canned);
        let mut addrs = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(l.local_addr()?);
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                use axum::serve::ListenerExt;
                let l = l.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let _ = axum::serve(l, app).await;
            }));
        }
        Ok(Upstreams { addrs, tasks })
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
