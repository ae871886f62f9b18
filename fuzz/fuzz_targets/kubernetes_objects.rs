//! Arbitrary Kubernetes objects as the API server might send them: reading an InferencePool,
//! InferenceObjective or InferenceModelRewrite never panics (a bad one is rejected with a reason),
//! and a pod becomes endpoints under any pool spec without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::discovery::kubernetes::{endpoints, objects};

fuzz_target!(|data: &[u8]| {
    if let Ok(obj) = serde_json::from_slice::<kube::api::DynamicObject>(data) {
        let pool = objects::pool_spec(&obj);
        let _ = objects::objective(&obj);
        let _ = objects::rewrite(&obj);
        if let (Ok(spec), Ok(pod)) = (pool, serde_json::from_slice(data)) {
            let pods: [k8s_openapi::api::core::v1::Pod; 1] = [pod];
            let _ = endpoints::endpoints(&spec, "ns", &pods, &mut Vec::new());
        }
    }
    if let Ok(pod) = serde_json::from_slice::<k8s_openapi::api::core::v1::Pod>(data) {
        let _ = endpoints::active_ports(&pod, &mut Vec::new());
    }
});
