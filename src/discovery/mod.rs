//! Where endpoints, objectives and model rewrites come from. Static sources today (flags and a
//! watched file); the request path only sees the [`crate::pool::EndpointPool`] and the
//! [`Datastore`], so other sources plug in without touching it.

pub mod datastore;
pub mod static_source;

pub use datastore::{Datastore, ModelRewrite, RewriteDecision, RewriteRule, RewriteTarget};
pub use static_source::{StaticFile, apply, parse_endpoint_list, parse_static_file, watch_file};
