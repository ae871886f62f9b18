//! The GIE custom resources read leniently from untyped objects: InferencePool (v1, and the
//! v1alpha2 shape), InferenceObjective and InferenceModelRewrite (v1alpha2). Each is watched as a
//! `DynamicObject`, so one malformed object cannot fail a whole list; it is converted here and,
//! when it does not make sense, rejected with a reason that names the field.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use serde_json::{Map, Value};

use crate::discovery::{ModelRewrite, RewriteRule, RewriteTarget};

/// The default `poolRef.group` (the InferencePool API group).
pub const DEFAULT_POOL_GROUP: &str = "inference.networking.k8s.io";
/// At most this many target ports per pool (the CRD's `MaxItems`).
pub const MAX_TARGET_PORTS: usize = 8;
/// The largest weight of a rewrite target (the CRD's maximum).
pub const MAX_REWRITE_WEIGHT: i64 = 1_000_000;

/// How the model servers of a pool speak HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocol {
    /// `http` (the default): HTTP/1.1.
    Http,
    /// `kubernetes.io/h2c`: HTTP/2 over cleartext.
    H2c,
}

/// What Switchyard uses of an InferencePool: which pods, which ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Equality selector on pod labels (never empty).
    pub selector: BTreeMap<String, String>,
    /// 1 to 8 distinct ports; endpoint `<pod>-rank-<i>` serves on `target_ports[i]`.
    pub target_ports: Vec<u16>,
    pub app_protocol: AppProtocol,
}

impl PoolSpec {
    /// Whether a pod with `labels` belongs to the pool.
    pub fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let Some(labels) = labels else {
            return false;
        };
        self.selector
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// A `poolRef`: which InferencePool an objective or rewrite belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

impl PoolRef {
    /// Whether this reference names the InferencePool `name` of API group `group`.
    pub fn names(&self, name: &str, group: &str) -> bool {
        self.kind == "InferencePool" && self.name == name && self.group == group
    }
}

/// An InferenceObjective: a priority by name for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Objective {
    pub pool_ref: PoolRef,
    /// `None` when unset, which GIE treats as 0.
    pub priority: Option<i32>,
}

/// An InferenceModelRewrite, its rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub pool_ref: PoolRef,
    pub rules: Vec<RewriteRule>,
}

impl Rewrite {
    /// As the datastore keeps it, with the object's name and age for precedence.
    pub fn into_model_rewrite(self, name: String, created: Option<SystemTime>) -> ModelRewrite {
        ModelRewrite {
            name,
            rules: self.rules,
            created,
        }
    }
}

/// Why an object was rejected: the field path and what is wrong with it.
pub type Reason = String;

fn spec(obj: &DynamicObject) -> Result<&Map<String, Value>, Reason> {
    match obj.data.get("spec") {
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(format!("spec: must be an object, got {}", kind_of(other))),
        None => Err("spec: missing".into()),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Shows a value in a reason, cut short so a huge field cannot flood the log.
fn show(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 64 {
        let mut end = 64;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

fn port_number(v: &Value, path: &str) -> Result<u16, Reason> {
    match v.as_i64().map(u16::try_from) {
        Some(Ok(p)) if p > 0 => Ok(p),
        _ => Err(format!(
            "{path}: must be a port number in 1..65535, got {}",
            show(v)
        )),
    }
}

fn string_map(v: &Value, path: &str) -> Result<BTreeMap<String, String>, Reason> {
    let Value::Object(m) = v else {
        return Err(format!(
            "{path}: must be a map of strings, got {}",
            kind_of(v)
        ));
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(format!("{path}.{k}: must be a string, got {}", show(other))),
        })
        .collect()
}

/// Reads an InferencePool's spec: `inference.networking.k8s.io/v1` (`selector.matchLabels`,
/// `targetPorts[].number`, `appProtocol`) or the v1alpha2 shape (`selector` as a plain map,
/// `targetPortNumber`).
pub fn pool_spec(obj: &DynamicObject) -> Result<PoolSpec, Reason> {
    let spec = spec(obj)?;
    let selector = match spec.get("selector") {
        None | Some(Value::Null) => return Err("spec.selector: missing".into()),
        Some(Value::Object(sel)) if sel.contains_key("matchLabels") => {
            if sel.get("matchExpressions").is_some_and(|e| {
                !matches!(e, Value::Null) && e.as_array().is_none_or(|a| !a.is_empty())
            }) {
                return Err(
                    "spec.selector.matchExpressions: not supported (an InferencePool selects by label equality)"
                        .into(),
                );
            }
            string_map(&sel["matchLabels"], "spec.selector.matchLabels")?
        }
        Some(v) => string_map(v, "spec.selector")?,
    };
    if selector.is_empty() {
        return Err("spec.selector: must name at least one label".into());
    }
    let target_ports = match (spec.get("targetPorts"), spec.get("targetPortNumber")) {
        (Some(Value::Array(items)), _) => {
            if items.is_empty() || items.len() > MAX_TARGET_PORTS {
                return Err(format!(
                    "spec.targetPorts: must list 1 to {MAX_TARGET_PORTS} ports, got {}",
                    items.len()
                ));
            }
            let mut ports = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let path = format!("spec.targetPorts[{i}].number");
                let number = item.get("number").unwrap_or(&Value::Null);
                let p = port_number(number, &path)?;
                if ports.contains(&p) {
                    return Err(format!("{path}: duplicate port {p}"));
                }
                ports.push(p);
            }
            ports
        }
        (Some(other), _) => {
            return Err(format!(
                "spec.targetPorts: must be a list, got {}",
                kind_of(other)
            ));
        }
        (None, Some(n)) => vec![port_number(n, "spec.targetPortNumber")?],
        (None, None) => return Err("spec.targetPorts: missing".into()),
    };
    let app_protocol = match spec.get("appProtocol") {
        None | Some(Value::Null) => AppProtocol::Http,
        Some(Value::String(s)) if s == "http" => AppProtocol::Http,
        Some(Value::String(s)) if s == "kubernetes.io/h2c" => AppProtocol::H2c,
        Some(other) => {
            return Err(format!(
                "spec.appProtocol: must be http or kubernetes.io/h2c, got {}",
                show(other)
            ));
        }
    };
    Ok(PoolSpec {
        selector,
        target_ports,
        app_protocol,
    })
}

fn pool_ref(spec: &Map<String, Value>) -> Result<PoolRef, Reason> {
    let Some(Value::Object(r)) = spec.get("poolRef") else {
        return Err("spec.poolRef: missing".into());
    };
    let field = |key: &str, default: &str| match r.get(key) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "spec.poolRef.{key}: must be a string, got {}",
            show(other)
        )),
    };
    let name = field("name", "")?;
    if name.is_empty() {
        return Err("spec.poolRef.name: missing".into());
    }
    Ok(PoolRef {
        group: field("group", DEFAULT_POOL_GROUP)?,
        kind: field("kind", "InferencePool")?,
        name,
    })
}

/// Reads an InferenceObjective (`spec.poolRef`, optional `spec.priority`).
pub fn objective(obj: &DynamicObject) -> Result<Objective, Reason> {
    let spec = spec(obj)?;
    let pool_ref = pool_ref(spec)?;
    let priority = match spec.get("priority") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().map(i32::try_from) {
            Some(Ok(p)) => Some(p),
            _ => {
                return Err(format!(
                    "spec.priority: must be a 32-bit integer, got {}",
                    show(v)
                ));
            }
        },
    };
    Ok(Objective { pool_ref, priority })
}

/// Reads an InferenceModelRewrite: `spec.poolRef` and `spec.rules[]` of `matches[].model
/// {type: Exact, value}` (none: a generic rule) and weighted `targets[] {modelRewrite, weight}`.
pub fn rewrite(obj: &DynamicObject) -> Result<Rewrite, Reason> {
    let spec = spec(obj)?;
    let pool_ref = pool_ref(spec)?;
    let rules_v = match spec.get("rules") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err("spec.rules: must have at least one rule".into());
        }
        Some(other) => {
            return Err(format!(
                "spec.rules: must be a list, got {}",
                kind_of(other)
            ));
        }
    };
    let mut rules = Vec::with_capacity(rules_v.len());
    for (i, rule) in rules_v.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let mut exact = Vec::new();
        match rule.get("matches") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ms)) => {
                for (j, m) in ms.iter().enumerate() {
                    let mpath = format!("{path}.matches[{j}].model");
                    let Some(model) = m.get("model").filter(|v| v.is_object()) else {
                        return Err(format!("{mpath}: missing"));
                    };
                    match model.get("type") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(t)) if t == "Exact" => {}
                        Some(other) => {
                            return Err(format!(
                                "{mpath}.type: only Exact is supported, got {}",
                                show(other)
                            ));
                        }
                    }
                    match model.get("value") {
                        Some(Value::String(v)) if !v.is_empty() => exact.push(v.clone()),
                        _ => return Err(format!("{mpath}.value: must be a model name")),
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "{path}.matches: must be a list, got {}",
                    kind_of(other)
                ));
            }
        }
        let targets_v = match rule.get("targets") {
            Some(Value::Array(t)) if !t.is_empty() => t,
            _ => return Err(format!("{path}.targets: must name at least one target")),
        };
        let mut targets = Vec::with_capacity(targets_v.len());
        for (j, t) in targets_v.iter().enumerate() {
            let tpath = format!("{path}.targets[{j}]");
            let model = match t.get("modelRewrite") {
                Some(Value::String(m)) if !m.is_empty() => m.clone(),
                _ => return Err(format!("{tpath}.modelRewrite: must be a model name")),
            };
            let weight = match t.get("weight") {
                None | Some(Value::Null) => 1,
                Some(w) => match w.as_i64() {
                    Some(w) if (1..=MAX_REWRITE_WEIGHT).contains(&w) => w as u32,
                    _ => {
                        return Err(format!(
                            "{tpath}.weight: must be an integer in 1..{MAX_REWRITE_WEIGHT}, got {}",
                            show(w)
                        ));
                    }
                },
            };
            targets.push(RewriteTarget { model, weight });
        }
        rules.push(RewriteRule { exact, targets });
    }
    Ok(Rewrite { pool_ref, rules })
}

/// A Kubernetes timestamp as a `SystemTime`.
pub fn system_time(t: &Time) -> SystemTime {
    let ms = t.0.as_millisecond();
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> DynamicObject {
        let mut v = json!({"metadata": {"name": "x", "namespace": "default"}});
        v.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn v1_pool() {
        let p = pool_spec(&obj(json!({"spec": {
            "selector": {"matchLabels": {"app": "vllm"}},
            "targetPorts": [{"number": 8000}, {"number": 8001}],
            "appProtocol": "kubernetes.io/h2c",
            "endpointPickerRef": {"name": "epp", "port": {"number": 9002}},
        }})))
        .unwrap();
        assert_eq!(p.selector, BTreeMap::from([("app".into(), "vllm".into())]));
        assert_eq!(p.target_ports, vec![8000, 8001]);
        assert_eq!(p.app_protocol, AppProtocol::H2c);
        let labels = BTreeMap::from([
            ("app".to_string(), "vllm".to_string()),
            ("x".into(), "y".into()),
        ]);
        assert!(p.selects(Some(&labels)));
        assert!(!p.selects(None));
        assert!(!p.selects(Some(&BTreeMap::from([("app".into(), "sglang".into())]))));
    }

    #[test]
    fn alpha_pool_shape() {
        let p = pool_spec(&obj(json!({"spec": {
            "selector": {"app": "vllm"}, "targetPortNumber": 8000,
        }})))
        .unwrap();
        assert_eq!(p.target_ports, vec![8000]);
        assert_eq!(p.app_protocol, AppProtocol::Http);
    }

    #[test]
    fn bad_pools_say_why() {
        let cases = [
            (json!({}), "spec: missing"),
            (
                json!({"spec": "x"}),
                "spec: must be an object, got a string",
            ),
            (
                json!({"spec": {"targetPorts": [{"number": 1}]}}),
                "spec.selector: missing",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {}}, "targetPorts": [{"number": 1}]}}),
                "spec.selector: must name at least one label",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {"a": 1}}, "targetPorts": [{"number": 1}]}}),
                "spec.selector.matchLabels.a: must be a string, got 1",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "a"}]}, "targetPorts": [{"number": 1}]}}),
                "spec.selector.matchExpressions: not supported (an InferencePool selects by label equality)",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": []}}),
                "spec.targetPorts: must list 1 to 8 ports, got 0",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": (1..=9).map(|n| json!({"number": n})).collect::<Vec<_>>()}}),
                "spec.targetPorts: must list 1 to 8 ports, got 9",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 70000}]}}),
                "spec.targetPorts[0].number: must be a port number in 1..65535, got 70000",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 1}, {"number": 1}]}}),
                "spec.targetPorts[1].number: duplicate port 1",
            ),
            (
                json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 1}], "appProtocol": "grpc"}}),
                "spec.appProtocol: must be http or kubernetes.io/h2c, got \"grpc\"",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(pool_spec(&obj(v.clone())).unwrap_err(), want, "{v}");
        }
    }

    #[test]
    fn objectives() {
        let o = objective(&obj(
            json!({"spec": {"poolRef": {"name": "p"}, "priority": -1}}),
        ))
        .unwrap();
        assert!(o.pool_ref.names("p", DEFAULT_POOL_GROUP));
        assert!(!o.pool_ref.names("p", "inference.networking.x-k8s.io"));
        assert_eq!(o.priority, Some(-1));
        let o = objective(&obj(
            json!({"spec": {"poolRef": {"name": "p", "group": "g", "kind": "Service"}}}),
        ))
        .unwrap();
        assert_eq!(o.priority, None);
        assert!(!o.pool_ref.names("p", "g"), "not an InferencePool");
        assert_eq!(
            objective(&obj(
                json!({"spec": {"poolRef": {"name": "p"}, "priority": 1e30}})
            ))
            .unwrap_err(),
            "spec.priority: must be a 32-bit integer, got 1e+30"
        );
        assert_eq!(
            objective(&obj(
                json!({"spec": {"poolRef": {"name": "p"}, "priority": 4294967296i64}})
            ))
            .unwrap_err(),
            "spec.priority: must be a 32-bit integer, got 4294967296"
        );
        assert_eq!(
            objective(&obj(json!({"spec": {"priority": 1}}))).unwrap_err(),
            "spec.poolRef: missing"
        );
        assert_eq!(
            objective(&obj(json!({"spec": {"poolRef": {"name": 5}}}))).unwrap_err(),
            "spec.poolRef.name: must be a string, got 5"
        );
    }

    #[test]
    fn rewrites() {
        let r = rewrite(&obj(json!({"spec": {"poolRef": {"name": "p"}, "rules": [
            {"matches": [{"model": {"type": "Exact", "value": "a"}}, {"model": {"value": "b"}}],
             "targets": [{"modelRewrite": "a-v2", "weight": 90}, {"modelRewrite": "a-v3"}]},
            {"targets": [{"modelRewrite": "default"}]},
        ]}})))
        .unwrap();
        assert_eq!(r.rules.len(), 2);
        assert_eq!(r.rules[0].exact, vec!["a", "b"]);
        assert_eq!(r.rules[0].targets[0].weight, 90);
        assert_eq!(r.rules[0].targets[1].weight, 1);
        assert!(r.rules[1].exact.is_empty(), "no matches: a generic rule");
        let bad = [
            (
                json!({"spec": {"poolRef": {"name": "p"}}}),
                "spec.rules: must have at least one rule",
            ),
            (
                json!({"spec": {"poolRef": {"name": "p"}, "rules": []}}),
                "spec.rules: must have at least one rule",
            ),
            (
                json!({"spec": {"poolRef": {"name": "p"}, "rules": [{"matches": []}]}}),
                "spec.rules[0].targets: must name at least one target",
            ),
            (
                json!({"spec": {"poolRef": {"name": "p"}, "rules": [{"matches": [{"model": {"type": "Prefix", "value": "a"}}], "targets": [{"modelRewrite": "b"}]}]}}),
                "spec.rules[0].matches[0].model.type: only Exact is supported, got \"Prefix\"",
            ),
            (
                json!({"spec": {"poolRef": {"name": "p"}, "rules": [{"targets": [{"modelRewrite": "b", "weight": 0}]}]}}),
                "spec.rules[0].targets[0].weight: must be an integer in 1..1000000, got 0",
            ),
            (
                json!({"spec": {"poolRef": {"name": "p"}, "rules": [{"targets": [{"weight": 1}]}]}}),
                "spec.rules[0].targets[0].modelRewrite: must be a model name",
            ),
        ];
        for (v, want) in bad {
            assert_eq!(rewrite(&obj(v.clone())).unwrap_err(), want, "{v}");
        }
    }

    #[test]
    fn long_values_are_cut_in_reasons() {
        let long = "x".repeat(10_000);
        let e = pool_spec(&obj(json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": long}]}}))).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-zA-Z0-9./:-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop_oneof![
                Just("selector".to_string()),
                Just("matchLabels".to_string()),
                Just("matchExpressions".to_string()),
                Just("targetPorts".to_string()),
                Just("targetPortNumber".to_string()),
                Just("number".to_string()),
                Just("appProtocol".to_string()),
                Just("poolRef".to_string()),
                Just("name".to_string()),
                Just("group".to_string()),
                Just("kind".to_string()),
                Just("priority".to_string()),
                Just("rules".to_string()),
                Just("matches".to_string()),
                Just("model".to_string()),
                Just("type".to_string()),
                Just("value".to_string()),
                Just("targets".to_string()),
                Just("modelRewrite".to_string()),
                Just("weight".to_string()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever the API server sends as a spec, reading it never panics, and an accepted
        /// pool keeps the invariants the rest of the code relies on.
        #[test]
        fn arbitrary_specs_never_panic(spec in json_value()) {
            let o = obj(json!({"spec": spec}));
            if let Ok(p) = pool_spec(&o) {
                proptest::prop_assert!(!p.selector.is_empty());
                proptest::prop_assert!((1..=MAX_TARGET_PORTS).contains(&p.target_ports.len()));
                proptest::prop_assert!(p.target_ports.iter().all(|&port| port > 0));
            }
            let _ = objective(&o);
            if let Ok(r) = rewrite(&o) {
                proptest::prop_assert!(!r.rules.is_empty());
                proptest::prop_assert!(r.rules.iter().all(|rule| !rule.targets.is_empty()));
            }
        }
    }
}
