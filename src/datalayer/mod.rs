//! The data layer: scrape each model server's Prometheus `/metrics`, map the engine's metric names
//! to [`EndpointMetrics`](crate::scheduling::EndpointMetrics), and publish them into the
//! [`EndpointPool`](crate::pool::EndpointPool).
//!
//! - [`parse`]: our own tolerant, zero-copy Prometheus text parser.

pub mod parse;
