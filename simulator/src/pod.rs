//! A fake model-server pod on its own loopback address: an HTTP front (OpenAI completions and
//! chat, JSON and SSE, `/health`, `/metrics` in the engine's own format) over the engine model,
//! which a driver task steps in real time. Request bodies may arrive chunked without
//! `Content-Length`, as real Envoy sends them. A pod can also be killed, cutting its streams
//! mid-body, so gateway tests can see what clients get when a model server dies.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::engine::{
    Engine, EngineConfig, EngineStats, Event, EventKind, SeqRequest, prompt_blocks,
};
use crate::exposition::{Latencies, PageInput, Personality, render};

#[derive(Debug, Clone)]
pub struct PodSpec {
    pub ip: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub personality: Personality,
    pub engine: EngineConfig,
}

/// What the driver tells a request's handler.
enum PodEvent {
    Engine(EventKind),
    Rejected(String),
}

enum Cmd {
    Add {
        req: SeqRequest,
        events: mpsc::UnboundedSender<PodEvent>,
    },
    Abort(u64),
}

struct Shared {
    stats: EngineStats,
    latencies: Latencies,
}

struct PodState {
    model: String,
    block_size: u32,
    api_overhead: Duration,
    personality: Personality,
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Mutex<Shared>>,
    next_id: AtomicU64,
    created: f64,
    /// Requests received per `model` in the body, as the pod saw it (after any gateway rewrite).
    models: Mutex<BTreeMap<String, u64>>,
    killed: watch::Receiver<bool>,
}

pub struct Pod {
    pub addr: SocketAddr,
    pub personality: Personality,
    shared: Arc<Mutex<Shared>>,
    state: Arc<PodState>,
    stop: watch::Sender<bool>,
    kill: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Pod {
    pub async fn spawn(spec: PodSpec) -> std::io::Result<Pod> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(spec.ip, spec.port)).await?;
        let addr = listener.local_addr()?;
        let engine = Engine::new(spec.engine.clone());
        let shared = Arc::new(Mutex::new(Shared {
            stats: engine.stats(),
            latencies: Latencies::default(),
        }));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let (kill, killed) = watch::channel(false);
        let driver = Driver {
            engine,
            cmds: cmd_rx,
            subs: HashMap::new(),
            shared: shared.clone(),
        };
        let driver_task = tokio::spawn(driver.run(stop_rx.clone()));
        let state = Arc::new(PodState {
            model: spec.engine.model.clone(),
            block_size: spec.engine.block_size,
            api_overhead: spec.engine.api_overhead,
            personality: spec.personality,
            cmds: cmd_tx,
            shared: shared.clone(),
            next_id: AtomicU64::new(1),
            created: unix_now(),
            models: Mutex::new(BTreeMap::new()),
            killed,
        });
        let app = Router::new()
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat))
            .route("/health", get(|| async { "ok" }))
            .route(spec.personality.metrics_path(), get(metrics))
            .with_state(state.clone());
        let mut rx = stop_rx;
        // As uvicorn/uvloop do for vLLM: without TCP_NODELAY the first SSE chunk after the
        // response headers waits for the proxy's delayed ACK (up to 40 ms) on kept-alive
        // connections, a delay real model servers do not have.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Pod {
            addr,
            personality: spec.personality,
            shared,
            state,
            stop,
            kill,
            tasks: vec![driver_task, server],
        })
    }

    pub fn stats(&self) -> EngineStats {
        self.shared.lock().stats.clone()
    }

    /// Completions and chat requests received so far, by the `model` of their body.
    pub fn requests_by_model(&self) -> BTreeMap<String, u64> {
        self.state.models.lock().clone()
    }

    /// Completions and chat requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.models.lock().values().sum()
    }

    /// Dies as a crashed server would: streaming responses are cut mid-body (the connection is
    /// closed without the final chunk), idle connections are closed and new ones refused.
    pub async fn kill(self) {
        let _ = self.kill.send(true);
        self.stop().await;
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(2), &mut Box::pin(t))
                .await
                .is_err()
            {
                // A handler still streaming to a client that does not read: leave it.
            }
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

// === the engine driver ===

struct Sub {
    events: mpsc::UnboundedSender<PodEvent>,
    arrived: Duration,
    last_token: Option<Duration>,
}

struct Driver {
    engine: Engine,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    subs: HashMap<u64, Sub>,
    shared: Arc<Mutex<Shared>>,
}

impl Driver {
    fn apply(&mut self, cmd: Cmd, now: Duration) {
        match cmd {
            Cmd::Add { req, events } => {
                if let Err(e) = self.engine.validate(&req) {
                    let _ = events.send(PodEvent::Rejected(e.to_string()));
                    return;
                }
                let id = req.id;
                if self.engine.add_request(req, now) {
                    self.subs.insert(
                        id,
                        Sub {
                            events,
                            arrived: now,
                            last_token: None,
                        },
                    );
                } else {
                    let _ = events.send(PodEvent::Rejected("request refused".into()));
                }
            }
            Cmd::Abort(id) => {
                if self.subs.remove(&id).is_some() {
                    self.engine.abort(id);
                }
            }
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let start = tokio::time::Instant::now();
        let mut events: Vec<Event> = Vec::new();
        loop {
            while let Ok(cmd) = self.cmds.try_recv() {
                self.apply(cmd, start.elapsed());
            }
            if !self.engine.has_work() {
                self.shared.lock().stats = self.engine.stats();
                tokio::select! {
                    cmd = self.cmds.recv() => match cmd {
                        Some(c) => self.apply(c, start.elapsed()),
                        None => return,
                    },
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            let now = start.elapsed();
            events.clear();
            let dur = self.engine.step_into(now, &mut events);
            let at = now + dur;
            tokio::select! {
                _ = tokio::time::sleep_until(start + at) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let mut shared = self.shared.lock();
            for ev in &events {
                let Some(sub) = self.subs.get_mut(&ev.id) else {
                    continue;
                };
                match ev.kind {
                    EventKind::FirstToken => {
                        shared
                            .latencies
                            .ttft
                            .observe((at - sub.arrived).as_secs_f64());
                        sub.last_token = Some(at);
                    }
                    EventKind::Token => {
                        if let Some(prev) = sub.last_token {
                            shared.latencies.itl.observe((at - prev).as_secs_f64());
                        }
                        sub.last_token = Some(at);
                    }
                    EventKind::Finished { .. } => {
                        shared
                            .latencies
                            .e2e
                            .observe((at - sub.arrived).as_secs_f64());
                    }
                    _ => {}
                }
                let gone = sub.events.send(PodEvent::Engine(ev.kind)).is_err();
                let finished = matches!(ev.kind, EventKind::Finished { .. });
                if finished || gone {
                    self.subs.remove(&ev.id);
                    if gone && !finished {
                        self.engine.abort(ev.id);
                    }
                }
            }
            shared.stats = self.engine.stats();
        }
    }
}

// === the HTTP front ===

/// Aborts the request in the engine if the client goes away before it finishes.
struct AbortGuard {
    id: u64,
    cmds: mpsc::UnboundedSender<Cmd>,
    done: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.cmds.send(Cmd::Abort(self.id));
        }
    }
}

fn bad_request(msg: impl Into<String>) -> Response {
    let body =
        json!({"object": "error", "message": msg.into(), "type": "BadRequestError", "code": 400});
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The deterministic text of generated token `i`.
fn token_text(i: u32) -> &'static str {
    const WORDS: [&str; 8] = [" the", " cat", " sat", " on", " a", " mat", " and", " ran"];
    WORDS[i as usize % WORDS.len()]
}

struct Parsed {
    model: String,
    prompt: Vec<u8>,
    max_tokens: u32,
    stream: bool,
    include_usage: bool,
}

fn parse_common(v: &Value, prompt: Vec<u8>) -> Result<Parsed, Box<Response>> {
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| Box::new(bad_request("model is required")))?
        .to_string();
    let max_tokens = v
        .get("max_tokens")
        .or_else(|| v.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .clamp(1, 1 << 20) as u32;
    Ok(Parsed {
        model,
        prompt,
        max_tokens,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .is_some_and(|u| u.as_bool() == Some(true) || u.as_str() == Some("true")),
    })
}

fn count_model(pod: &PodState, v: &Value) {
    if let Some(m) = v.get("model").and_then(Value::as_str) {
        *pod.models.lock().entry(m.to_string()).or_insert(0) += 1;
    }
}

async fn completions(State(pod): State<Arc<PodState>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    count_model(&pod, &v);
    let prompt = match v.get("prompt") {
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(" ")
            .into_bytes(),
        _ => return bad_request("prompt is required"),
    };
    match parse_common(&v, prompt) {
        Ok(p) => serve(pod, p, false).await,
        Err(r) => *r,
    }
}

async fn chat(State(pod): State<Arc<PodState>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    count_model(&pod, &v);
    let Some(msgs) = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return bad_request("messages is required");
    };
    // A chat template of sorts: role and content per message.
    let mut prompt = String::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        prompt.push_str(&format!("<|{role}|>{content}\n"));
    }
    match parse_common(&v, prompt.into_bytes()) {
        Ok(p) => serve(pod, p, true).await,
        Err(r) => *r,
    }
}

async fn serve(pod: Arc<PodState>, p: Parsed, chat: bool) -> Response {
    let (tokens, block_hashes) = prompt_blocks(&p.prompt, &p.model, pod.block_size);
    let id = pod.next_id.fetch_add(1, Ordering::Relaxed);
    let lora = (p.model != pod.model).then(|| p.model.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::time::sleep(pod.api_overhead).await;
    let _ = pod.cmds.send(Cmd::Add {
        req: SeqRequest {
            id,
            prompt_tokens: tokens,
            block_hashes,
            max_output_tokens: p.max_tokens,
            lora,
        },
        events: tx,
    });
    let mut guard = AbortGuard {
        id,
        cmds: pod.cmds.clone(),
        done: false,
    };
    let rid = format!("{}-{id}", if chat { "chatcmpl" } else { "cmpl" });
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    let created = unix_now() as u64;
    let model = p.model.clone();
    let usage = move |generated: u32, cached: u32| {
        json!({
            "prompt_tokens": tokens,
            "completion_tokens": generated,
            "total_tokens": tokens + generated,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    };

    if !p.stream {
        let mut text = String::new();
        let (mut generated, mut cached) = (0u32, 0u32);
        while let Some(ev) = rx.recv().await {
            match ev {
                PodEvent::Rejected(msg) => {
                    guard.done = true;
                    return bad_request(msg);
                }
                PodEvent::Engine(EventKind::Scheduled { cached_tokens }) => cached = cached_tokens,
                PodEvent::Engine(EventKind::FirstToken | EventKind::Token) => {
                    text.push_str(token_text(generated));
                    generated += 1;
                }
                PodEvent::Engine(EventKind::Finished { reason }) => {
                    guard.done = true;
                    let choice = if chat {
                        json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason.as_str()})
                    } else {
                        json!({"index": 0, "text": text, "finish_reason": reason.as_str()})
                    };
                    let body = json!({"id": rid, "object": object, "created": created, "model": model, "choices": [choice], "usage": usage(generated, cached)});
                    return (
                        [(header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                        .into_response();
                }
                PodEvent::Engine(_) => {}
            }
        }
        guard.done = true;
        return (StatusCode::INTERNAL_SERVER_ERROR, "engine stopped").into_response();
    }

    // Streaming: one SSE event per token, then usage (when asked) and [DONE].
    let chunk_object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let include_usage = p.include_usage;
    let killed = pod.killed.clone();
    let stream = async_stream_body(killed, move |yield_tx: mpsc::Sender<Bytes>| async move {
        // Own the whole guard here: it must live as long as the stream does.
        let mut guard = guard;
        let (mut generated, mut cached) = (0u32, 0u32);
        while let Some(ev) = rx.recv().await {
            let line = match ev {
                PodEvent::Rejected(msg) => {
                    guard.done = true;
                    let e = json!({"object": "error", "message": msg, "code": 400});
                    Some(format!("data: {e}\n\ndata: [DONE]\n\n"))
                }
                PodEvent::Engine(EventKind::Scheduled { cached_tokens }) => {
                    cached = cached_tokens;
                    None
                }
                PodEvent::Engine(EventKind::FirstToken | EventKind::Token) => {
                    let t = token_text(generated);
                    generated += 1;
                    let choice = if chat {
                        json!({"index": 0, "delta": {"content": t}, "finish_reason": null})
                    } else {
                        json!({"index": 0, "text": t, "finish_reason": null})
                    };
                    let c = json!({"id": rid, "object": chunk_object, "created": created, "model": model, "choices": [choice]});
                    Some(format!("data: {c}\n\n"))
                }
                PodEvent::Engine(EventKind::Finished { reason }) => {
                    guard.done = true;
                    let choice = if chat {
                        json!({"index": 0, "delta": {}, "finish_reason": reason.as_str()})
                    } else {
                        json!({"index": 0, "text": "", "finish_reason": reason.as_str()})
                    };
                    let mut s = format!(
                        "data: {}\n\n",
                        json!({"id": rid, "object": chunk_object, "created": created, "model": model, "choices": [choice]})
                    );
                    if include_usage {
                        let u = json!({"id": rid, "object": chunk_object, "created": created, "model": model, "choices": [], "usage": usage(generated, cached)});
                        s.push_str(&format!("data: {u}\n\n"));
                    }
                    s.push_str("data: [DONE]\n\n");
                    Some(s)
                }
                PodEvent::Engine(_) => None,
            };
            if let Some(line) = line {
                let end = line.ends_with("[DONE]\n\n");
                if yield_tx.send(Bytes::from(line)).await.is_err() || end {
                    // The guard aborts the request if the client went away.
                    return;
                }
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        stream,
    )
        .into_response()
}

/// A streaming body fed by a task; dropping the body (client gone) stops the task. When the pod
/// is killed the body fails, and hyper closes the connection without finishing the chunked body.
fn async_stream_body<F, Fut>(killed: watch::Receiver<bool>, f: F) -> Body
where
    F: FnOnce(mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let task = tokio::spawn(f(tx));
    let stream = futures::stream::unfold(
        (rx, killed, Some(TaskGuard(task))),
        |(mut rx, mut killed, g)| async move {
            let g = g?;
            tokio::select! {
                b = rx.recv() => b.map(|b| (Ok(b), (rx, killed, Some(g)))),
                _ = until_killed(&mut killed) => {
                    Some((Err(std::io::Error::other("pod killed")), (rx, killed, None)))
                }
            }
        },
    );
    Body::from_stream(stream)
}

/// Resolves when the pod is killed; never when it is dropped without being killed.
async fn until_killed(killed: &mut watch::Receiver<bool>) {
    if killed.wait_for(|k| *k).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Aborts the producing task when the body is dropped.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn metrics(State(pod): State<Arc<PodState>>) -> Response {
    let shared = pod.shared.lock();
    let page = render(
        pod.personality,
        &PageInput {
            model: &pod.model,
            stats: &shared.stats,
            latencies: &shared.latencies,
            created: pod.created,
            now: unix_now(),
        },
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response()
}

/// The instant a run started, for tools that report relative times.
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}
