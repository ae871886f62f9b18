//! An in-process Switchyard on loopback and an ext_proc client that talks to it as Envoy does
//! (header values in `raw_value`, FULL_DUPLEX_STREAMED bodies).
#![allow(dead_code)]

pub mod process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Msg;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse, body_mutation,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use prometheus_client::registry::Registry;
use switchyard::clock::Clock;
use switchyard::config;
use switchyard::discovery::{Datastore, Sink};
use switchyard::flowcontrol::FlowControl;
use switchyard::pool::EndpointPool;
use switchyard::runtime::{ConfigOrigin, ConfigSource, Flags, Live};
use switchyard::scheduling::{Endpoint, EndpointMetrics};
use switchyard::server::{self, Listeners, ServeOptions, health::Readiness, tls::CertPair};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Harness {
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub pool: Arc<EndpointPool>,
    pub datastore: Arc<Datastore>,
    pub clock: Clock,
    pub registry: Arc<Registry>,
    pub readiness: Readiness,
    pub flow_control: Option<Arc<FlowControl>>,
    pub live: Arc<Live>,
    /// Stops the flow controller's dispatcher and the other background tasks.
    pub fc_stop: tokio::sync::watch::Sender<bool>,
    stop: Option<tokio::sync::watch::Sender<u32>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Setup {
    pub config: Option<String>,
    pub flags: Flags,
    pub tls: Option<CertPair>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            config: None,
            flags: Flags {
                pool_name: "pool".into(),
                ..Flags::default()
            },
            tls: None,
        }
    }
}

/// GIE's hermetic-test config: queue, KV, prefix and LoRA scorers at weight 1.
pub const HERMETIC_CONFIG: &str = "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: lora-affinity-scorer
";

impl Harness {
    pub async fn start(setup: Setup) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = setup
            .config
            .clone()
            .unwrap_or_else(|| config::DEFAULT_CONFIG_YAML.to_string());
        let mut cfg = config::load_str(&text).expect("valid config");
        // Hermetic: the tests publish endpoint metrics themselves; nothing is scraped.
        cfg.data_layer = None;
        let source = ConfigSource::new(ConfigOrigin::Text, text.as_bytes());
        let sink = Sink::new();
        sink.set_synced(true);
        let (pool, datastore) = (sink.pool.clone(), sink.datastore.clone());
        let mut registry = Registry::default();
        let clock = Clock::new();
        let (fc_stop, fc_stop_rx) = tokio::sync::watch::channel(false);
        let live = Live::start(
            cfg,
            source,
            setup.flags,
            &sink,
            clock,
            &mut registry,
            fc_stop_rx,
        )
        .expect("the runtime starts");
        let registry = Arc::new(registry);
        let flow_control = live.flow_control();
        let director = live.director().clone();
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let listeners = Listeners {
            grpc: bind().await,
            health: bind().await,
            metrics: bind().await,
        };
        let addr = listeners.grpc.local_addr().unwrap();
        let health_addr = listeners.health.local_addr().unwrap();
        let metrics_addr = listeners.metrics.local_addr().unwrap();
        let readiness = Readiness::default();
        readiness.set(true);
        let (stop_tx, stops) = tokio::sync::watch::channel(0u32);
        let (closing, _) = tokio::sync::watch::channel(false);
        let reg = registry.clone();
        let rd = readiness.clone();
        let task = tokio::spawn(async move {
            server::serve(
                listeners,
                director,
                reg,
                rd,
                ServeOptions {
                    tls: setup
                        .tls
                        .map(|p| server::tls::CertStore::new(&p).expect("valid pair")),
                    health_on_grpc_port: true,
                    drain: Duration::ZERO,
                    grace: Duration::from_secs(5),
                    metrics_tls: None,
                    max_recv_msg_size: None,
                    max_send_msg_size: None,
                },
                stops,
                closing,
            )
            .await
            .expect("server ran");
        });
        Harness {
            addr,
            health_addr,
            metrics_addr,
            pool,
            datastore,
            clock,
            registry,
            readiness,
            flow_control,
            live,
            fc_stop,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Endpoints `ep-<i>` at `127.0.0.<11+i>:8000` with the given queue and KV, freshly scraped.
    pub fn set_pods(&self, pods: &[(u64, f64)]) {
        self.pool.set_endpoints(
            (0..pods.len())
                .map(|i| Endpoint::new(format!("ep-{i}"), pod_ip(i).parse().unwrap(), 8000))
                .collect(),
        );
        for (i, &(q, kv)) in pods.iter().enumerate() {
            self.set_metrics(
                i,
                EndpointMetrics {
                    waiting_queue_size: q,
                    kv_cache_usage: kv,
                    ..Default::default()
                },
            );
        }
    }

    pub fn set_metrics(&self, i: usize, mut m: EndpointMetrics) {
        m.updated_at = Some(self.clock.now());
        assert!(self.pool.update_metrics(&format!("ep-{i}"), Arc::new(m)));
    }

    pub async fn client(&self) -> ExternalProcessorClient<Channel> {
        ExternalProcessorClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    pub fn metrics_text(&self) -> String {
        switchyard::telemetry::encode(&self.registry)
    }

    pub async fn stop(mut self) {
        let _ = self.fc_stop.send(true);
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(1);
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(TIMEOUT, t)
                .await
                .expect("stopped")
                .unwrap();
        }
    }
}

pub fn pod_ip(i: usize) -> String {
    format!("127.0.0.{}", 11 + i)
}

pub fn pod(i: usize) -> String {
    format!("{}:8000", pod_ip(i))
}

/// One open ext_proc stream.
pub struct Stream {
    tx: Option<mpsc::Sender<ProcessingRequest>>,
    rx: tonic::Streaming<ProcessingResponse>,
}

impl Stream {
    pub async fn open(client: &mut ExternalProcessorClient<Channel>) -> Stream {
        let (tx, rx) = mpsc::channel(64);
        let resp = client
            .process(ReceiverStream::new(rx))
            .await
            .expect("process");
        Stream {
            tx: Some(tx),
            rx: resp.into_inner(),
        }
    }

    pub async fn send(&mut self, msg: ProcessingRequest) {
        self.tx
            .as_ref()
            .expect("open")
            .send(msg)
            .await
            .expect("send");
    }

    /// Half-closes the client side, as Envoy does when the HTTP exchange is over.
    pub fn close(&mut self) {
        self.tx = None;
    }

    pub async fn recv(&mut self) -> Option<ProcessingResponse> {
        tokio::time::timeout(TIMEOUT, self.rx.next())
            .await
            .expect("a response in time")
            .map(|r| r.expect("ok response"))
    }

    /// Receives `n` responses.
    pub async fn recv_n(&mut self, n: usize) -> Vec<ProcessingResponse> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.recv().await.expect("stream still open"));
        }
        out
    }

    /// Everything until the server closes the stream.
    pub async fn recv_all(&mut self) -> Vec<ProcessingResponse> {
        let mut out = Vec::new();
        while let Some(r) = self.recv().await {
            out.push(r);
        }
        out
    }
}

pub fn headers_msg(headers: &[(&str, &str)], eos: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Msg::RequestHeaders(HttpHeaders {
            headers: Some(header_map(headers)),
            end_of_stream: eos,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_string(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    }
}

pub fn body_msg(body: &[u8], eos: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Msg::RequestBody(HttpBody {
            body: body.to_vec(),
            end_of_stream: eos,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn request_trailers_msg() -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Msg::RequestTrailers(HttpTrailers::default())),
        ..Default::default()
    }
}

pub fn response_headers_msg(headers: &[(&str, &str)], eos: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Msg::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(headers)),
            end_of_stream: eos,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn response_body_msg(body: &[u8], eos: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Msg::ResponseBody(HttpBody {
            body: body.to_vec(),
            end_of_stream: eos,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn response_trailers_msg() -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Msg::ResponseTrailers(HttpTrailers::default())),
        ..Default::default()
    }
}

/// The subset hint as Envoy puts it in `metadata_context`.
pub fn with_subset(mut msg: ProcessingRequest, endpoints: &[&str]) -> ProcessingRequest {
    let list = Value {
        kind: Some(Kind::ListValue(ListValue {
            values: endpoints
                .iter()
                .map(|e| Value {
                    kind: Some(Kind::StringValue(e.to_string())),
                })
                .collect(),
        })),
    };
    msg.metadata_context = Some(Metadata {
        filter_metadata: HashMap::from([(
            "envoy.lb.subset_hint".to_string(),
            Struct {
                fields: HashMap::from([(
                    "x-gateway-destination-endpoint-subset".to_string(),
                    list,
                )]),
            },
        )]),
        ..Default::default()
    });
    msg
}

/// GIE's `ReqLLM` request headers.
pub fn llm_headers(objective: &str, rewrite: &str) -> Vec<(String, String)> {
    vec![
        (":path".into(), "/v1/completions".into()),
        ("hi".into(), "mom".into()),
        ("x-request-id".into(), "test-request-id".into()),
        ("x-gateway-inference-objective".into(), objective.into()),
        ("x-gateway-model-name-rewrite".into(), rewrite.into()),
    ]
}

pub fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

// === reading responses ===

/// `(key, value)` pairs of a headers response's set_headers.
pub fn set_headers(r: &ProcessingResponse) -> Vec<(String, String)> {
    let common = match &r.response {
        Some(Resp::RequestHeaders(h)) | Some(Resp::ResponseHeaders(h)) => h.response.as_ref(),
        other => panic!("not a headers response: {other:?}"),
    };
    common
        .and_then(|c| c.header_mutation.as_ref())
        .map(|m| {
            m.set_headers
                .iter()
                .map(|h| {
                    let h = h.header.as_ref().unwrap();
                    (
                        h.key.clone(),
                        String::from_utf8(h.raw_value.clone()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn header<'a>(set: &'a [(String, String)], key: &str) -> Option<&'a str> {
    set.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub fn clear_route_cache(r: &ProcessingResponse) -> bool {
    match &r.response {
        Some(Resp::RequestHeaders(h)) => h.response.as_ref().unwrap().clear_route_cache,
        _ => false,
    }
}

pub fn destination_metadata(r: &ProcessingResponse) -> Option<String> {
    let md = r.dynamic_metadata.as_ref()?;
    let Some(Kind::StructValue(s)) = &md.fields.get("envoy.lb")?.kind else {
        return None;
    };
    match &s.fields.get("x-gateway-destination-endpoint")?.kind {
        Some(Kind::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

/// `(bytes, end_of_stream)` of a streamed body response, request or response side.
pub fn body_chunk(r: &ProcessingResponse) -> (Vec<u8>, bool) {
    let common = match &r.response {
        Some(Resp::RequestBody(b)) | Some(Resp::ResponseBody(b)) => b.response.as_ref().unwrap(),
        other => panic!("not a body response: {other:?}"),
    };
    match &common.body_mutation.as_ref().unwrap().mutation {
        Some(body_mutation::Mutation::StreamedResponse(s)) => (s.body.clone(), s.end_of_stream),
        other => panic!("not a streamed response: {other:?}"),
    }
}

/// `(status, body)` of an immediate response.
pub fn immediate(r: &ProcessingResponse) -> (i32, String) {
    match &r.response {
        Some(Resp::ImmediateResponse(i)) => (
            i.status.as_ref().unwrap().code,
            String::from_utf8(i.body.clone()).unwrap(),
        ),
        other => panic!("not an immediate response: {other:?}"),
    }
}

pub fn is_response_trailers(r: &ProcessingResponse) -> bool {
    matches!(r.response, Some(Resp::ResponseTrailers(_)))
}

pub fn is_request_trailers(r: &ProcessingResponse) -> bool {
    matches!(r.response, Some(Resp::RequestTrailers(_)))
}

/// Concatenated body of body responses and whether the last one ended the stream.
pub fn joined_body(rs: &[ProcessingResponse]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut eos = false;
    for r in rs {
        let (b, e) = body_chunk(r);
        out.extend(b);
        eos = e;
    }
    (out, eos)
}
