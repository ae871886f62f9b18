//! `grpc.health.v1.Health` with GIE's semantics: without leader election every service name —
//! including `inference-extension`, which the Helm chart probes — is SERVING once endpoints are
//! known, and NOT_SERVING before that or while shutting down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Readiness shared by the health servers and whoever decides it. Once stopping, it stays
/// not ready whatever else reports.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>, Arc<AtomicBool>);

impl Readiness {
    /// Readiness that follows `synced` (a discovery source's view being complete) until the
    /// server sets it otherwise (on stop).
    pub fn following(mut synced: tokio::sync::watch::Receiver<bool>) -> Self {
        let r = Self::default();
        r.set(*synced.borrow_and_update());
        let mirror = r.clone();
        tokio::spawn(async move {
            while synced.changed().await.is_ok() {
                mirror.set(*synced.borrow_and_update());
            }
        });
        r
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// The process is stopping: not ready from now on.
    pub fn stop(&self) {
        self.1.store(true, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst) && !self.1.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
pub struct HealthService {
    ready: Readiness,
}

impl HealthService {
    pub fn new(ready: Readiness) -> Self {
        Self { ready }
    }

    pub fn into_server(self) -> HealthServer<Self> {
        HealthServer::new(self)
    }
}

type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = if self.ready.get() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("Watch is not implemented"))
    }
}
