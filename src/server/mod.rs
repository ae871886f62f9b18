//! The listeners: ext_proc gRPC (TLS by default), gRPC health, and Prometheus `/metrics`; and a
//! graceful stop that lets open streams finish. The admin API has its own listener
//! ([`admin::serve`]).

pub mod admin;
pub mod health;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::extproc::{Director, ExtProcService};
use health::{HealthService, Readiness};
use tls::CertStore;

/// Listeners bound by the caller, so tests can bind port 0 and read the ports back.
pub struct Listeners {
    pub grpc: TcpListener,
    pub health: TcpListener,
    pub metrics: TcpListener,
}

pub struct ServeOptions {
    /// `None` serves plaintext (`--secure-serving=false`).
    pub tls: Option<Arc<CertStore>>,
    /// Also answer `grpc.health.v1` on the ext_proc port (`--health-checking`).
    pub health_on_grpc_port: bool,
    /// After the stop signal, how long new streams are still served while the gateway notices
    /// that readiness dropped (`--drain-timeout`).
    pub drain: Duration,
    /// Then, how long open streams may finish once the listeners close
    /// (`--shutdown-grace-period`).
    pub grace: Duration,
    /// `None` serves /metrics in plaintext; else over TLS (`--metrics-cert-dir`).
    pub metrics_tls: Option<Arc<CertStore>>,
    /// Largest ext_proc message received / sent (`--grpc-max-recv-msg-size`,
    /// `--grpc-max-send-msg-size`); `None` keeps 16 MiB each way.
    pub max_recv_msg_size: Option<usize>,
    pub max_send_msg_size: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("ext_proc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("metrics server: {0}")]
    Metrics(#[from] std::io::Error),
    #[error("admin server: {0}")]
    Admin(tonic::transport::Error),
    #[error("admin server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves until asked to stop, then shuts down in steps, each logged: on the first stop signal
/// (`stops` counts SIGTERM/SIGINT) readiness drops and new streams are still served for
/// `drain`; then `closing` is set (the listeners close, background tasks stop, queued requests
/// are answered) and open streams may finish for `grace`. A second stop signal at any point ends
/// everything at once.
pub async fn serve(
    listeners: Listeners,
    director: Arc<Director>,
    registry: Arc<Registry>,
    readiness: Readiness,
    opts: ServeOptions,
    mut stops: watch::Receiver<u32>,
    closing: watch::Sender<bool>,
) -> Result<(), ServeError> {
    let stop_rx = closing.subscribe();
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // gRPC health on its own port (plaintext, as GIE).
    let health_svc = HealthService::new(readiness.clone());
    let health_incoming = TcpIncoming::from(listeners.health).with_nodelay(Some(true));
    let health_task = tokio::spawn(
        Server::builder()
            .add_service(health_svc.clone().into_server())
            .serve_with_incoming_shutdown(health_incoming, signal(stop_rx.clone())),
    );

    // Prometheus metrics.
    use crate::telemetry::exposition;
    let app = Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| {
            let registry = registry.clone();
            async move {
                let accept = headers
                    .get(axum::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let text = crate::telemetry::encode(&registry);
                if exposition::wants_openmetrics(accept) {
                    ([(CONTENT_TYPE, exposition::OPENMETRICS)], text)
                } else {
                    (
                        [(CONTENT_TYPE, exposition::TEXT_004)],
                        exposition::to_text_004(&text),
                    )
                }
            }
        }),
    );
    let metrics_task = match &opts.metrics_tls {
        None => tokio::spawn(
            axum::serve(listeners.metrics, app)
                .with_graceful_shutdown(signal(stop_rx.clone()))
                .into_future(),
        ),
        Some(store) => {
            let l = tls::TlsListener::new(listeners.metrics, store.server_config_for(b"http/1.1"))?;
            tokio::spawn(
                axum::serve(l, app)
                    .with_graceful_shutdown(signal(stop_rx.clone()))
                    .into_future(),
            )
        }
    };

    // ext_proc.
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service({
            let mut svc = ExtProcService::new(director).into_server();
            if let Some(n) = opts.max_recv_msg_size {
                svc = svc.max_decoding_message_size(n);
            }
            if let Some(n) = opts.max_send_msg_size {
                svc = svc.max_encoding_message_size(n);
            }
            svc
        })
        .add_optional_service(opts.health_on_grpc_port.then(|| health_svc.into_server()));
    let shutdown = signal(stop_rx.clone());
    let mut grpc_task = match &opts.tls {
        Some(store) => {
            let incoming = tls::incoming(listeners.grpc, store.server_config());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
        None => {
            let incoming = TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
    };

    // Run until stopped (or until a server fails).
    tokio::select! {
        _ = stops.wait_for(|n| *n >= 1) => {}
        res = &mut grpc_task => {
            readiness.stop();
            let _ = closing.send(true);
            return match res {
                Ok(r) => r.map_err(ServeError::from),
                Err(e) => Err(ServeError::Metrics(std::io::Error::other(e))),
            };
        }
    }
    readiness.stop();
    let second = |mut s: watch::Receiver<u32>| async move {
        let _ = s.wait_for(|n| *n >= 2).await;
    };
    let mut at_once = false;
    if !opts.drain.is_zero() {
        tracing::info!(
            drain = ?opts.drain,
            "stopping: readiness is NOT_SERVING; new streams are still served while the gateway notices"
        );
        tokio::select! {
            _ = tokio::time::sleep(opts.drain) => {}
            _ = second(stops.clone()) => at_once = true,
        }
    }
    let _ = closing.send(true);
    if !at_once {
        tracing::info!(grace = ?opts.grace, "stopping: listeners closed; open streams may finish");
        tokio::select! {
            r = tokio::time::timeout(opts.grace, &mut grpc_task) => match r {
                Ok(Ok(r)) => r?,
                Ok(Err(e)) => return Err(ServeError::Metrics(std::io::Error::other(e))),
                Err(_) => tracing::warn!("grace period over: closing the remaining streams"),
            },
            _ = second(stops) => at_once = true,
        }
    }
    if at_once {
        tracing::warn!("second stop signal: exiting now");
    }
    grpc_task.abort();
    health_task.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), metrics_task).await {
        return Err(ServeError::Metrics(e));
    }
    Ok(())
}
