//! The admin listener: the admin gRPC service with gRPC reflection (v1, and v1alpha for older
//! grpcurl), plaintext. It binds loopback unless `--admin-bind-address` says otherwise.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::ServeError;
use crate::admin::proto::FILE_DESCRIPTOR_SET;
use crate::admin::service::AdminService;
use crate::runtime::Live;

/// Serves the admin API on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1()?;
    let v1alpha = reflection().build_v1alpha()?;
    Server::builder()
        .add_service(AdminService::new(live).into_server())
        .add_service(v1)
        .add_service(v1alpha)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await
        .map_err(ServeError::Admin)
}
