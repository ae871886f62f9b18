//! Arbitrary ext_proc message sequences against one stream's state machine (the decoder is
//! `switchyard::extproc::sequence`, shared with the property test in `src/extproc/stream`):
//! nothing panics, and what a request held is released when the stream ends.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use switchyard::clock::Clock;
use switchyard::discovery::Datastore;
use switchyard::extproc::Director;
use switchyard::extproc::stream::StreamState;
use switchyard::pool::EndpointPool;
use switchyard::runtime::{ConfigOrigin, ConfigSource, Flags, Runtime};
use switchyard::scheduling::{Endpoint, SchedulerRng};
use switchyard::telemetry::RequestMetrics;

fn director() -> &'static Arc<Director> {
    static D: OnceLock<Arc<Director>> = OnceLock::new();
    D.get_or_init(|| {
        let cfg = switchyard::config::load_str(
            "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins: [queue-scorer, prefix-cache-scorer, token-load-scorer]\n",
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
    })
}

fuzz_target!(|data: &[u8]| {
    let d = director();
    let mut state = StreamState::new(d.clone(), SchedulerRng::seed_from_u64(1));
    for msg in switchyard::extproc::sequence::messages(data) {
        let out = state.handle(msg);
        if out.close {
            break;
        }
    }
    state.abort();
    assert_eq!(d.runtime().plugins.inflight_producers[0].in_flight(), 0);
});
