//! The admin gRPC service: `Explain`, `GetState` and `WatchState` over a [`Live`] system.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::proto::admin_server::{Admin, AdminServer};
use super::proto::{ExplainRequest, ExplainResponse, GetStateRequest, State, WatchStateRequest};
use super::{explain, state};
use crate::runtime::Live;

/// `WatchState` streams open at once, at most.
pub const MAX_WATCHERS: usize = 16;
/// Least and default time between two states of one `WatchState` stream.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct AdminService {
    live: Arc<Live>,
    watchers: Arc<Semaphore>,
}

impl AdminService {
    pub fn new(live: Arc<Live>) -> Self {
        Self {
            live,
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
        }
    }

    /// The tonic server, accepting explain requests as large as the request path accepts
    /// bodies, plus an alternative configuration.
    pub fn into_server(self) -> AdminServer<Self> {
        let limit =
            self.live.flags().max_request_body_bytes + explain::MAX_CONFIG_BYTES + (64 << 10);
        AdminServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(64 << 20)
    }
}

type StateStream = Pin<Box<dyn Stream<Item = Result<State, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let live = self.live.clone();
        let r = request.into_inner();
        // Hashing a long prompt and building an alternative runtime are CPU work.
        tokio::task::spawn_blocking(move || explain::explain(&live, &r))
            .await
            .map_err(|e| Status::internal(format!("explain failed: {e}")))?
            .map(Response::new)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<State>, Status> {
        let limit = state::tenant_limit(request.get_ref().max_tenants);
        Ok(Response::new(state::state(&self.live, limit)))
    }

    type WatchStateStream = StateStream;

    async fn watch_state(
        &self,
        request: Request<WatchStateRequest>,
    ) -> Result<Response<StateStream>, Status> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "at most {MAX_WATCHERS} WatchState streams may be open at once"
            ))
        })?;
        let r = request.into_inner();
        let limit = state::tenant_limit(r.max_tenants);
        let interval = match r.min_interval_ms {
            0 => DEFAULT_WATCH_INTERVAL,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_WATCH_INTERVAL),
        };
        let (tx, rx) = mpsc::channel(1);
        let live = self.live.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let pool = live.director().pool.clone();
            let mut membership = pool.watch_membership();
            let mut metrics = pool.watch_metrics();
            let mut reloads = live.watch_reloads();
            let mut stop = live.stopping();
            loop {
                membership.borrow_and_update();
                metrics.borrow_and_update();
                reloads.borrow_and_update();
                if tx.send(Ok(state::state(&live, limit))).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tx.closed() => return,
                    _ = stop.wait_for(|s| *s) => return,
                }
                tokio::select! {
                    r = membership.changed() => if r.is_err() { return },
                    r = metrics.changed() => if r.is_err() { return },
                    r = reloads.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
