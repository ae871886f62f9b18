//! The **null ext_proc server**: the floor any endpoint picker pays, for `switchyard-sim bench
//! extproc` to measure Switchyard against.
//!
//! It speaks the same protocol as Switchyard (FULL_DUPLEX_STREAMED bodies both ways) on the same
//! gRPC stack (tonic, the same message size limits, keepalive and `TCP_NODELAY`), but decides
//! nothing: it reads the whole request body, answers one fixed endpoint (header and `envoy.lb`
//! dynamic metadata), echoes the received request chunks, and echoes every response message as
//! it arrives. No parsing, no scheduling, no metrics. Whatever Switchyard costs above it is the
//! cost of picking.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Msg;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, ProcessingRequest, ProcessingResponse,
};
use futures::Stream;
use switchyard::extproc::protocol::{
    DESTINATION_ENDPOINT, body_response, destination_metadata, header_mutation, headers_response,
    set_header, trailers_response,
};
use switchyard::server::health::{HealthService, Readiness};
use switchyard::server::tls;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// The line the server prints once it listens (the bench reads the address from it).
pub const LISTENING: &str = "null-extproc: ext_proc listening on ";

#[derive(Clone)]
pub struct NullExtProc {
    /// The `ip:port` every request is sent to.
    endpoint: String,
}

impl NullExtProc {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
        }
    }

    pub fn into_server(self) -> ExternalProcessorServer<Self> {
        // Switchyard's limits.
        ExternalProcessorServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for NullExtProc {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(run_stream(self.endpoint.clone(), inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The pick: the fixed endpoint as header and dynamic metadata, route cache cleared.
fn pick(endpoint: &str) -> ProcessingResponse {
    let mut r = headers_response(
        CommonResponse {
            header_mutation: header_mutation(vec![set_header(DESTINATION_ENDPOINT, endpoint)]),
            clear_route_cache: true,
            ..Default::default()
        },
        true,
    );
    r.dynamic_metadata = Some(destination_metadata(endpoint));
    r
}

async fn run_stream(
    endpoint: String,
    mut inbound: Streaming<ProcessingRequest>,
    tx: mpsc::Sender<Result<ProcessingResponse, Status>>,
) {
    // The request body, as received, until it is complete.
    let mut body: Vec<Vec<u8>> = Vec::new();
    while let Ok(Some(req)) = inbound.message().await {
        let out: Vec<ProcessingResponse> = match req.request {
            Some(Msg::RequestHeaders(h)) if h.end_of_stream => vec![pick(&endpoint)],
            Some(Msg::RequestHeaders(_)) => Vec::new(),
            Some(Msg::RequestBody(b)) => {
                body.push(b.body);
                if b.end_of_stream {
                    let chunks = std::mem::take(&mut body);
                    let n = chunks.len();
                    let mut out = vec![pick(&endpoint)];
                    out.extend(
                        chunks
                            .into_iter()
                            .enumerate()
                            .map(|(i, c)| body_response(c, i + 1 == n, true)),
                    );
                    out
                } else {
                    Vec::new()
                }
            }
            Some(Msg::RequestTrailers(_)) => vec![trailers_response(true)],
            Some(Msg::ResponseHeaders(_)) => {
                vec![headers_response(CommonResponse::default(), false)]
            }
            Some(Msg::ResponseBody(b)) => vec![body_response(b.body, b.end_of_stream, false)],
            Some(Msg::ResponseTrailers(_)) => vec![trailers_response(false)],
            None => Vec::new(),
        };
        for r in out {
            if tx.send(Ok(r)).await.is_err() {
                return;
            }
        }
    }
}

/// How the null server listens.
#[derive(Debug, Clone)]
pub struct NullOptions {
    pub bind: SocketAddr,
    pub endpoint: String,
    /// TLS with a self-signed certificate and `grpc.health.v1` on the same port, as Switchyard
    /// serves behind real Envoy (`--health-checking`).
    pub secure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NullError {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Serves until the process is stopped; prints [`LISTENING`] and the address once bound.
pub async fn serve(opts: NullOptions) -> Result<(), NullError> {
    let listener = TcpListener::bind(opts.bind)
        .await
        .map_err(|e| NullError::Bind(opts.bind, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| NullError::Bind(opts.bind, e))?;
    eprintln!("{LISTENING}{addr}");
    serve_on(listener, opts.endpoint, opts.secure).await
}

/// Serves on a bound listener until the task is dropped.
pub async fn serve_on(
    listener: TcpListener,
    endpoint: String,
    secure: bool,
) -> Result<(), NullError> {
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(NullExtProc::new(endpoint).into_server());
    if secure {
        // As Switchyard serves TLS: its own acceptor, with grpc.health.v1 on the same port.
        let pair = tls::self_signed().map_err(|e| NullError::Tls(e.to_string()))?;
        let store = tls::CertStore::new(&pair).map_err(|e| NullError::Tls(e.to_string()))?;
        let ready = Readiness::default();
        ready.set(true);
        router
            .add_service(HealthService::new(ready).into_server())
            .serve_with_incoming(tls::incoming(listener, store.server_config()))
            .await?;
    } else {
        router
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
    use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, body_mutation};
    use futures::StreamExt;

    fn msg(m: Msg) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(m),
            ..Default::default()
        }
    }

    fn body(b: &[u8], eos: bool) -> Msg {
        Msg::RequestBody(HttpBody {
            body: b.to_vec(),
            end_of_stream: eos,
            ..Default::default()
        })
    }

    fn streamed(r: &ProcessingResponse) -> (Vec<u8>, bool) {
        let common = match &r.response {
            Some(Resp::RequestBody(b)) | Some(Resp::ResponseBody(b)) => {
                b.response.as_ref().unwrap()
            }
            other => panic!("not a body response: {other:?}"),
        };
        match &common.body_mutation.as_ref().unwrap().mutation {
            Some(body_mutation::Mutation::StreamedResponse(s)) => (s.body.clone(), s.end_of_stream),
            other => panic!("not streamed: {other:?}"),
        }
    }

    #[tokio::test]
    async fn picks_the_fixed_endpoint_after_the_whole_body_and_echoes_every_chunk() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_on(listener, "10.1.2.3:8000".into(), false));
        let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut responses = client
            .process(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(msg(Msg::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: ":path".into(),
                    raw_value: b"/v1/completions".to_vec(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        })))
        .await
        .unwrap();
        tx.send(msg(body(b"{\"model\":", false))).await.unwrap();
        tx.send(msg(body(b"\"m\"}", true))).await.unwrap();
        let pick = responses.next().await.unwrap().unwrap();
        let Some(Resp::RequestHeaders(h)) = &pick.response else {
            panic!("{pick:?}")
        };
        let set = &h
            .response
            .as_ref()
            .unwrap()
            .header_mutation
            .as_ref()
            .unwrap()
            .set_headers;
        let hv = set[0].header.as_ref().unwrap();
        assert_eq!(
            (hv.key.as_str(), hv.raw_value.as_slice()),
            (DESTINATION_ENDPOINT, b"10.1.2.3:8000".as_slice())
        );
        assert!(pick.dynamic_metadata.is_some());
        let a = streamed(&responses.next().await.unwrap().unwrap());
        let b = streamed(&responses.next().await.unwrap().unwrap());
        assert_eq!(
            (a, b),
            ((b"{\"model\":".to_vec(), false), (b"\"m\"}".to_vec(), true))
        );
        // The response side: headers answered, every body chunk echoed as it came.
        tx.send(msg(Msg::ResponseHeaders(HttpHeaders::default())))
            .await
            .unwrap();
        assert!(matches!(
            responses.next().await.unwrap().unwrap().response,
            Some(Resp::ResponseHeaders(_))
        ));
        for (chunk, eos) in [(&b"data: 1\n\n"[..], false), (&b""[..], true)] {
            tx.send(msg(Msg::ResponseBody(HttpBody {
                body: chunk.to_vec(),
                end_of_stream: eos,
                ..Default::default()
            })))
            .await
            .unwrap();
            assert_eq!(
                streamed(&responses.next().await.unwrap().unwrap()),
                (chunk.to_vec(), eos)
            );
        }
        drop(tx);
        assert!(
            responses.next().await.is_none(),
            "the stream ends with the client's"
        );
        server.abort();
    }
}
