//! The Envoy-facing request path: `envoy.service.ext_proc.v3.ExternalProcessor/Process` with
//! FULL_DUPLEX_STREAMED bodies both ways, behaving as the Go EPP does (gie-epp.md §1).

pub mod director;
pub mod error;
pub mod openai;
pub mod protocol;
pub mod response;
pub mod sequence;
pub mod stream;

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use futures::Stream;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use director::{Director, ExtProcOptions};
use stream::StreamState;

use crate::scheduling::SchedulerRng;

#[derive(Clone)]
pub struct ExtProcService {
    director: Arc<Director>,
}

impl ExtProcService {
    pub fn new(director: Arc<Director>) -> Self {
        Self { director }
    }

    pub fn into_server(self) -> ExternalProcessorServer<Self> {
        ExternalProcessorServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProcService {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(32);
        let director = self.director.clone();
        tokio::spawn(run_stream(director, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Moves messages between Envoy and the stream's state machine until either side is done.
async fn run_stream(
    director: Arc<Director>,
    mut inbound: Streaming<ProcessingRequest>,
    tx: mpsc::Sender<Result<ProcessingResponse, Status>>,
) {
    let mut state = StreamState::new(director, SchedulerRng::seed_from_u64(rand::random()));
    // Messages that arrived while the request waited in flow control.
    let mut deferred: std::collections::VecDeque<ProcessingRequest> = Default::default();
    'stream: loop {
        let req = match deferred.pop_front() {
            Some(r) => r,
            None => {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = tx.closed() => break,
                };
                match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        if status.code() != tonic::Code::Cancelled {
                            tracing::debug!(error = %status, "ext_proc stream ended with an error");
                        }
                        break;
                    }
                }
            }
        };
        let mut out = state.handle(req);
        loop {
            for r in std::mem::take(&mut out.responses) {
                if tx.send(Ok(r)).await.is_err() {
                    break 'stream;
                }
            }
            if out.close {
                break 'stream;
            }
            let Some(mut ticket) = out.wait.take() else {
                break;
            };
            // Queued: wait for dispatch, watching for the gateway or client going away (the
            // dropped ticket takes the request out of the queue).
            let outcome = loop {
                tokio::select! {
                    o = ticket.wait() => break Some(o),
                    _ = tx.closed() => break None,
                    m = inbound.message() => match m {
                        Ok(Some(req)) => deferred.push_back(req),
                        _ => break None,
                    },
                }
            };
            match outcome {
                Some(o) => out = state.admitted(o),
                None => break 'stream,
            }
        }
    }
    state.abort();
}
