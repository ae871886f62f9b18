//! Where endpoints, objectives and model rewrites come from: static sources (flags and a watched
//! file) and Kubernetes. Every source delivers into a [`Sink`]; the request path only sees the
//! [`crate::pool::EndpointPool`] and the [`Datastore`], so sources plug in without touching it.

pub mod datastore;
pub mod kubernetes;
pub mod static_source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use datastore::{Datastore, ModelRewrite, RewriteDecision, RewriteRule, RewriteTarget};
pub use static_source::{StaticFile, apply, parse_endpoint_list, parse_static_file, watch_file};

use crate::pool::EndpointPool;
use crate::scheduling::Endpoint;

/// Where the endpoints come from: exactly one source per process.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--static-endpoints`: a fixed list.
    List(Vec<Endpoint>),
    /// `--static-endpoints-file`: endpoints, objectives and model rewrites, re-read every
    /// `interval` and on SIGHUP.
    File { path: PathBuf, interval: Duration },
    /// `--pool-name` or `--endpoint-selector`: watched in Kubernetes; synced once the pool exists
    /// and every watch has listed, unsynced while the pool is missing.
    Kubernetes(Box<kubernetes::KubernetesSource>),
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("reading --static-endpoints-file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading {path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: static_source::StaticFileError,
    },
}

impl Source {
    /// The pool name the source gives (Kubernetes), for metrics; `None` for static sources.
    pub fn pool_name(&self) -> Option<&str> {
        match self {
            Source::Kubernetes(k) => Some(k.options().pool_name()),
            _ => None,
        }
    }

    /// Loads the source's first view into `sink` and keeps it current until `stop`: the file
    /// source re-reads its file every interval and whenever `hup` changes.
    pub async fn start(
        self,
        sink: &Sink,
        hup: watch::Receiver<u64>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), DiscoveryError> {
        match self {
            Source::Kubernetes(k) => {
                k.spawn(sink.clone(), stop);
                return Ok(());
            }
            Source::List(endpoints) => sink.pool.set_endpoints(endpoints),
            Source::File { path, interval } => {
                let bytes = std::fs::read(&path).map_err(|source| DiscoveryError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let file =
                    parse_static_file(&String::from_utf8_lossy(&bytes)).map_err(|source| {
                        DiscoveryError::Invalid {
                            path: path.display().to_string(),
                            source,
                        }
                    })?;
                apply(file, &sink.pool, &sink.datastore);
                crate::tasks::spawn_critical(
                    "static endpoints watcher",
                    watch_file(path, interval, sink.clone(), bytes, hup, stop),
                );
            }
        }
        // Static sources are complete as soon as they are read.
        sink.set_synced(true);
        Ok(())
    }
}

/// Where a discovery source delivers what it finds: the endpoints into the pool, objectives and
/// model rewrites into the datastore, and whether its view is complete and current into
/// `synced` (health reports SERVING only while it is true).
#[derive(Clone)]
pub struct Sink {
    pub pool: Arc<EndpointPool>,
    pub datastore: Arc<Datastore>,
    pub synced: Arc<watch::Sender<bool>>,
}

impl Sink {
    /// A sink over fresh, empty state, not synced.
    pub fn new() -> Self {
        Self {
            pool: Arc::new(EndpointPool::new()),
            datastore: Arc::new(Datastore::default()),
            synced: Arc::new(watch::channel(false).0),
        }
    }

    /// Marks the source's view as complete and current (or not).
    pub fn set_synced(&self, synced: bool) {
        self.synced
            .send_if_modified(|s| std::mem::replace(s, synced) != synced);
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }
}

impl Default for Sink {
    fn default() -> Self {
        Self::new()
    }
}
