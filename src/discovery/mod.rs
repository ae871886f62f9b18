//! Where endpoints, objectives and model rewrites come from: static sources (flags and a watched
//! file) and Kubernetes. Every source delivers into a [`Sink`]; the request path only sees the
//! [`crate::pool::EndpointPool`] and the [`Datastore`], so sources plug in without touching it.

pub mod datastore;
pub mod kubernetes;
pub mod static_source;

use std::sync::Arc;

use tokio::sync::watch;

pub use datastore::{Datastore, ModelRewrite, RewriteDecision, RewriteRule, RewriteTarget};
pub use static_source::{StaticFile, apply, parse_endpoint_list, parse_static_file, watch_file};

use crate::pool::EndpointPool;

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
