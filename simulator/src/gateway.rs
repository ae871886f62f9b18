//! An Envoy-like gateway in a library: for each request it opens an ext_proc `Process` stream,
//! sends the request headers (values in `raw_value`) and body in FULL_DUPLEX_STREAMED mode, waits
//! for the pick or an immediate response, forwards the (possibly mutated) body to the picked
//! `ip:port` chunked without `Content-Length` as Envoy does, and streams the response headers and
//! body back through the same ext_proc stream, delivering what the EPP returns to the client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Msg;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse, body_mutation,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Envoy's default chunking of request bodies towards ext_proc.
const CHUNK: usize = 16 * 1024;

/// One HTTP request as a client sends it to the gateway.
#[derive(Debug, Clone)]
pub struct GatewayRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What the client saw.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status: u16,
    /// `ip:port` the gateway sent the request to (none for an immediate response).
    pub endpoint: Option<String>,
    /// Time to the first response body bytes delivered to the client.
    pub ttft: Option<Duration>,
    pub e2e: Duration,
    /// The response body as delivered to the client (after the EPP's rewrites).
    pub body: Vec<u8>,
    /// Through an EPP: from opening its stream to the pick and the whole request body back.
    pub pick: Option<Duration>,
    /// Through an EPP: response body messages sent to it.
    pub response_messages: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("ext_proc: {0}")]
    ExtProc(#[from] tonic::Status),
    #[error("ext_proc stream ended early: {0}")]
    Protocol(String),
    #[error("upstream {endpoint}: {source}")]
    Upstream {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
}

/// How the gateway picks an upstream.
#[derive(Clone)]
pub enum Router {
    /// Ask an ext_proc EPP (Switchyard).
    ExtProc(ExternalProcessorClient<Channel>),
    /// A fixed upstream chosen by the caller (baselines such as round-robin).
    Direct,
    /// A proxy that routes by itself (real Envoy, a peer router): requests go to the address the
    /// caller gives, as a client sends them (with `Content-Length`).
    Proxy,
}

#[derive(Clone)]
pub struct Gateway {
    router: Router,
    http: reqwest::Client,
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.clone(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    }
}

fn msg(request: Msg) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(request),
        ..Default::default()
    }
}

fn streamed(r: &ProcessingResponse) -> Option<(Vec<u8>, bool)> {
    let common = match &r.response {
        Some(Resp::RequestBody(b)) | Some(Resp::ResponseBody(b)) => b.response.as_ref()?,
        _ => return None,
    };
    match &common.body_mutation.as_ref()?.mutation {
        Some(body_mutation::Mutation::StreamedResponse(s)) => {
            Some((s.body.clone(), s.end_of_stream))
        }
        _ => None,
    }
}

async fn next(
    responses: &mut tonic::Streaming<ProcessingResponse>,
) -> Result<ProcessingResponse, GatewayError> {
    match responses.next().await {
        Some(Ok(r)) => Ok(r),
        Some(Err(s)) => Err(GatewayError::ExtProc(s)),
        None => Err(GatewayError::Protocol("no response".into())),
    }
}

impl Gateway {
    pub fn new(router: Router) -> Self {
        // reqwest is built with rustls but without a default provider (the
        // switchyard crate picks ring); a client cannot be built until one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .expect("an HTTP client");
        Self { router, http }
    }

    /// Connects to an EPP's ext_proc port (plaintext h2c).
    pub async fn connect_epp(addr: &str) -> Result<Self, tonic::transport::Error> {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .expect("a valid URI")
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Self::new(Router::ExtProc(ExternalProcessorClient::new(ch))))
    }

    /// Sends a request through the gateway. `direct` is the upstream for [`Router::Direct`].
    pub async fn send(
        &self,
        req: GatewayRequest,
        direct: Option<&str>,
    ) -> Result<Outcome, GatewayError> {
        match &self.router {
            Router::Direct | Router::Proxy => {
                let ep = direct.expect("a direct upstream").to_string();
                self.forward_direct(req, ep).await
            }
            Router::ExtProc(client) => self.via_ext_proc(client.clone(), req).await,
        }
    }

    async fn forward_direct(
        &self,
        req: GatewayRequest,
        endpoint: String,
    ) -> Result<Outcome, GatewayError> {
        let start = Instant::now();
        let mut resp = self
            .upstream(&endpoint, &req.path, &req.headers, req.body)
            .await?;
        let status = resp.status().as_u16();
        let mut out = Outcome {
            status,
            endpoint: Some(endpoint.clone()),
            ..Default::default()
        };
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| GatewayError::Upstream {
                endpoint: endpoint.clone(),
                source,
            })?
        {
            if out.ttft.is_none() && !chunk.is_empty() {
                out.ttft = Some(start.elapsed());
            }
            out.body.extend_from_slice(&chunk);
        }
        out.e2e = start.elapsed();
        Ok(out)
    }

    async fn upstream(
        &self,
        endpoint: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<reqwest::Response, GatewayError> {
        let mut rb = self.http.post(format!("http://{endpoint}{path}"));
        for (k, v) in headers {
            if !k.starts_with(':') && k != "content-length" && k != "host" {
                rb = rb.header(k.as_str(), v.as_str());
            }
        }
        let rb = if matches!(self.router, Router::Proxy) {
            rb.body(body)
        } else {
            // Chunked, without Content-Length, as Envoy forwards full-duplex bodies.
            let stream = futures::stream::iter(
                body.chunks(CHUNK)
                    .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            );
            rb.body(reqwest::Body::wrap_stream(stream))
        };
        rb.send().await.map_err(|source| GatewayError::Upstream {
            endpoint: endpoint.to_string(),
            source,
        })
    }

    async fn via_ext_proc(
        &self,
        mut client: ExternalProcessorClient<Channel>,
        req: GatewayRequest,
    ) -> Result<Outcome, GatewayError> {
        let start = Instant::now();
        let (tx, rx) = mpsc::channel::<ProcessingRequest>(64);
        let mut responses = client.process(ReceiverStream::new(rx)).await?.into_inner();
        let send = |m: ProcessingRequest| {
            let tx = tx.clone();
            async move {
                tx.send(m)
                    .await
                    .map_err(|_| GatewayError::Protocol("EPP closed the stream".into()))
            }
        };

        // Request headers, then the body in chunks.
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), "POST".into()),
            (":path".into(), req.path.clone()),
            (":scheme".into(), "http".into()),
            (":authority".into(), "gateway".into()),
        ];
        headers.extend(req.headers.iter().cloned());
        if !headers.iter().any(|(k, _)| k == "x-request-id") {
            headers.push(("x-request-id".into(), uuid::Uuid::new_v4().to_string()));
        }
        send(msg(Msg::RequestHeaders(HttpHeaders {
            headers: Some(header_map(&headers)),
            end_of_stream: req.body.is_empty(),
            ..Default::default()
        })))
        .await?;
        let n = req.body.len().div_ceil(CHUNK).max(1);
        for (i, chunk) in req.body.chunks(CHUNK).enumerate() {
            send(msg(Msg::RequestBody(HttpBody {
                body: chunk.to_vec(),
                end_of_stream: i + 1 == n,
                ..Default::default()
            })))
            .await?;
        }

        // The pick (or an immediate answer), then the mutated body.
        let first = next(&mut responses).await?;
        let set = match &first.response {
            Some(Resp::ImmediateResponse(i)) => {
                return Ok(Outcome {
                    status: i.status.as_ref().map_or(500, |s| s.code as u16),
                    endpoint: None,
                    ttft: None,
                    e2e: start.elapsed(),
                    body: i.body.clone(),
                    pick: Some(start.elapsed()),
                    response_messages: 0,
                });
            }
            Some(Resp::RequestHeaders(h)) => h
                .response
                .as_ref()
                .and_then(|c| c.header_mutation.as_ref())
                .map(|m| m.set_headers.clone())
                .unwrap_or_default(),
            other => {
                return Err(GatewayError::Protocol(format!(
                    "unexpected first response {other:?}"
                )));
            }
        };
        for hv in set.iter().filter_map(|o| o.header.as_ref()) {
            let v = String::from_utf8_lossy(&hv.raw_value).into_owned();
            match headers
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(&hv.key))
            {
                Some(slot) => slot.1 = v,
                None => headers.push((hv.key.to_ascii_lowercase(), v)),
            }
        }
        let endpoint = headers
            .iter()
            .find(|(k, _)| k == "x-gateway-destination-endpoint")
            .map(|(_, v)| v.split(',').next().unwrap_or("").trim().to_string())
            .ok_or_else(|| GatewayError::Protocol("no destination endpoint".into()))?;
        let mut body = Vec::with_capacity(req.body.len());
        if !req.body.is_empty() {
            loop {
                let r = next(&mut responses).await?;
                let (chunk, eos) = streamed(&r)
                    .ok_or_else(|| GatewayError::Protocol("expected a body response".into()))?;
                body.extend(chunk);
                if eos {
                    break;
                }
            }
        }

        let pick = start.elapsed();

        // Upstream, with the response streamed back through the EPP.
        let mut resp = self
            .upstream(&endpoint, &req.path, &headers, Bytes::from(body))
            .await?;
        let status = resp.status().as_u16();
        let mut rh: Vec<(String, String)> = vec![(":status".into(), status.to_string())];
        for (k, v) in resp.headers() {
            rh.push((
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
        send(msg(Msg::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(&rh)),
            end_of_stream: false,
            ..Default::default()
        })))
        .await?;
        let rh_resp = next(&mut responses).await?;
        if !matches!(rh_resp.response, Some(Resp::ResponseHeaders(_))) {
            return Err(GatewayError::Protocol(
                "expected a response-headers response".into(),
            ));
        }

        // Feed upstream chunks while reading what the EPP releases to the client.
        let mut out = Outcome {
            status,
            endpoint: Some(endpoint.clone()),
            pick: Some(pick),
            ..Default::default()
        };
        let (rtx, mut rrx) = mpsc::channel::<Result<(Vec<u8>, bool), GatewayError>>(64);
        let reader = tokio::spawn(async move {
            while let Some(r) = responses.next().await {
                let item = match r {
                    Ok(r) => match streamed(&r) {
                        Some(c) => Ok(c),
                        None => continue,
                    },
                    Err(s) => Err(GatewayError::ExtProc(s)),
                };
                let done = matches!(item, Ok((_, true)) | Err(_));
                if rtx.send(item).await.is_err() || done {
                    break;
                }
            }
        });
        let mut upstream_done = false;
        let mut delivered_eos = false;
        while !delivered_eos {
            tokio::select! {
                chunk = resp.chunk(), if !upstream_done => {
                    let chunk = chunk.map_err(|source| GatewayError::Upstream { endpoint: endpoint.clone(), source })?;
                    let (bytes, eos) = match chunk {
                        Some(c) => (c.to_vec(), false),
                        None => (Vec::new(), true),
                    };
                    upstream_done = eos;
                    out.response_messages += 1;
                    send(msg(Msg::ResponseBody(HttpBody { body: bytes, end_of_stream: eos, ..Default::default() }))).await?;
                }
                item = rrx.recv() => {
                    let (chunk, eos) = item.ok_or_else(|| GatewayError::Protocol("response stream ended early".into()))??;
                    if out.ttft.is_none() && !chunk.is_empty() {
                        out.ttft = Some(start.elapsed());
                    }
                    out.body.extend(chunk);
                    delivered_eos = eos;
                }
            }
        }
        drop(tx);
        reader.abort();
        out.e2e = start.elapsed();
        Ok(out)
    }
}
