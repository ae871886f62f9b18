//! Arbitrary message sequences (the `extproc_stream` fuzz target's space, in `cargo test`): the
//! state machine never panics, and when the stream ends whatever a request held is released.

use std::sync::Arc;

use proptest::prelude::*;
use rand::SeedableRng;

use super::*;
use crate::clock::Clock;
use crate::discovery::Datastore;
use crate::pool::EndpointPool;
use crate::runtime::{ConfigOrigin, ConfigSource, Flags, Runtime};
use crate::scheduling::Endpoint;
use crate::telemetry::RequestMetrics;

/// A director over three endpoints whose config counts in-flight requests.
fn director() -> Arc<Director> {
    let cfg = crate::config::load_str(
        "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins: [queue-scorer, prefix-cache-scorer, token-load-scorer]
",
    )
    .unwrap();
    let flags = Flags {
        max_request_body_bytes: 4096,
        ..Flags::default()
    };
    let rt = Runtime::build(cfg, ConfigSource::new(ConfigOrigin::Text, b""), &flags).unwrap();
    let pool = Arc::new(EndpointPool::new());
    pool.set_endpoints(
        (0..3)
            .map(|i| Endpoint::new(format!("e{i}"), [127, 0, 0, 11 + i].into(), 8000))
            .collect(),
    );
    Arc::new(Director::new(
        pool,
        Arc::new(Datastore::default()),
        Arc::new(rt),
        Arc::new(RequestMetrics::default()),
        Clock::new(),
    ))
}

/// Feeds the sequence `data` encodes, ends the stream; the most requests held at once.
fn run(d: &Arc<Director>, data: &[u8]) -> usize {
    let mut state = StreamState::new(d.clone(), SchedulerRng::seed_from_u64(1));
    let mut most = 0;
    for msg in super::super::sequence::messages(data) {
        let out = state.handle(msg);
        assert!(out.wait.is_none(), "no flow control configured");
        most = most.max(held(d));
        if out.close {
            break;
        }
    }
    state.abort();
    most
}

fn held(d: &Director) -> usize {
    d.runtime().plugins.inflight_producers[0].in_flight()
}

#[test]
fn a_routed_request_is_released_when_its_stream_ends_early() {
    let d = director();
    // Headers, then a completion body: routed, then the stream ends without a response.
    let data = [0u8, 0, 0x41 | 0x80, 4, b'a', b'b', b'c', b'd'];
    assert_eq!(run(&d, &data), 1, "the request was routed");
    assert_eq!(held(&d), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_sequences_never_panic_and_release_everything(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let d = director();
        let _ = run(&d, &data);
        prop_assert_eq!(held(&d), 0);
        let m = crate::telemetry::encode(&{
            let mut r = prometheus_client::registry::Registry::default();
            d.metrics.register(&mut r);
            r
        });
        prop_assert!(
            !m.lines().any(|l| l.starts_with("inference_objective_running_requests{") && !l.ends_with(" 0")),
            "{}", m
        );
    }
}
