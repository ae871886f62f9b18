//! Objects for the fake API server, shaped as kubectl would create them.

use serde_json::{Value, json};

use super::now_rfc3339;

pub struct PodSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub ip: Option<&'a str>,
    pub ready: bool,
    pub labels: &'a [(&'a str, &'a str)],
    pub annotations: &'a [(&'a str, &'a str)],
    pub terminating: bool,
}

impl<'a> PodSpec<'a> {
    pub fn new(name: &'a str, ip: &'a str, labels: &'a [(&'a str, &'a str)]) -> Self {
        PodSpec {
            name,
            namespace: "ns",
            ip: Some(ip),
            ready: true,
            labels,
            annotations: &[],
            terminating: false,
        }
    }

    pub fn to_json(&self) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let annotations: serde_json::Map<String, Value> = self
            .annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut meta = json!({"name": self.name, "namespace": self.namespace,
                              "labels": labels, "annotations": annotations});
        if self.terminating {
            meta["deletionTimestamp"] = json!(now_rfc3339());
            meta["deletionGracePeriodSeconds"] = json!(30);
        }
        let mut status = json!({
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": if self.ready { "True" } else { "False" }},
                {"type": "ContainersReady", "status": if self.ready { "True" } else { "False" }},
            ],
            "containerStatuses": [{"name": "vllm", "ready": self.ready, "restartCount": 0,
                                   "image": "vllm/vllm-openai:latest", "imageID": "", "state": {"running": {}}}],
        });
        if let Some(ip) = self.ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        json!({
            "metadata": meta,
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest",
                                     "ports": [{"containerPort": 8000}]}]},
            "status": status,
        })
    }
}

/// An InferencePool (v1) in namespace `ns`.
pub fn pool(ns: &str, name: &str, selector: &[(&str, &str)], ports: &[u16]) -> Value {
    let labels: serde_json::Map<String, Value> = selector
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": labels},
            "targetPorts": ports.iter().map(|p| json!({"number": p})).collect::<Vec<_>>(),
            "endpointPickerRef": {"name": "switchyard", "port": {"number": 9002}, "failureMode": "FailOpen"},
        },
    })
}

/// An InferenceObjective naming pool `pool_name`.
pub fn objective(ns: &str, name: &str, pool_name: &str, priority: Option<i64>) -> Value {
    let mut spec = json!({"poolRef": {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": pool_name}});
    if let Some(p) = priority {
        spec["priority"] = json!(p);
    }
    json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// An InferenceModelRewrite with one rule: `models` exactly (none: generic) → `targets`.
pub fn rewrite(
    ns: &str,
    name: &str,
    pool_name: &str,
    created: &str,
    models: &[&str],
    targets: &[(&str, u32)],
) -> Value {
    let matches: Vec<Value> = models
        .iter()
        .map(|m| json!({"model": {"type": "Exact", "value": m}}))
        .collect();
    let targets: Vec<Value> = targets
        .iter()
        .map(|(m, w)| json!({"modelRewrite": m, "weight": w}))
        .collect();
    json!({
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": {"poolRef": {"name": pool_name}, "rules": [{"matches": matches, "targets": targets}]},
    })
}
