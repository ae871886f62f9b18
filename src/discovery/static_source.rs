//! Static endpoints: a first-class discovery source for running without Kubernetes. Endpoints come
//! from `--static-endpoints ip:port,...` or from a YAML file that may also carry objectives and
//! model rewrites, and is re-read when it changes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::datastore::{Datastore, ModelRewrite, RewriteRule, RewriteTarget};
use crate::decode::{ConfigError, ConfigErrors, Diagnostics, Obj, index, int_of, show};
use crate::pool::EndpointPool;
use crate::scheduling::Endpoint;

/// Every error found in a static endpoints file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.render("static endpoints file"))]
pub struct StaticFileError(pub ConfigErrors);

impl StaticFileError {
    pub fn messages(&self) -> Vec<String> {
        self.0.messages()
    }
}

/// Everything a static endpoints file declares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StaticFile {
    pub endpoints: Vec<Endpoint>,
    pub objectives: HashMap<String, Option<i32>>,
    pub rewrites: Vec<ModelRewrite>,
}

/// Parses `ip:port,ip:port` (IPv6 as `[addr]:port`); each endpoint is named `ip:port`.
pub fn parse_endpoint_list(list: &str) -> Result<Vec<Endpoint>, String> {
    let mut out: Vec<Endpoint> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr: SocketAddr = item
            .parse()
            .map_err(|_| format!("--static-endpoints: {item:?} is not an ip:port address"))?;
        if addr.port() == 0 {
            return Err(format!("--static-endpoints: {item:?} has port 0"));
        }
        let ep = Endpoint::new(addr.to_string(), addr.ip(), addr.port());
        if out.iter().any(|e| e.name == ep.name) {
            return Err(format!("--static-endpoints: {item:?} is listed twice"));
        }
        out.push(ep);
    }
    Ok(out)
}

/// Parses a static endpoints file, reporting every error with its path.
pub fn parse_static_file(text: &str) -> Result<StaticFile, StaticFileError> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| {
        StaticFileError(ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("not a valid YAML document: {e}"),
        }]))
    })?;
    if value.is_null() {
        // What a truncate-then-write edit leaves for a moment: never taken as "no endpoints".
        return Err(StaticFileError(ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: "the file is empty".into(),
        }])));
    }
    let mut d = Diagnostics::default();
    let mut top = Obj::new("", Some(&value), &mut d);
    let mut out = StaticFile::default();
    if !top.has("endpoints") {
        d.error(
            "endpoints",
            "required (write `endpoints: []` to run with no endpoints)",
        );
    }
    if let Some(items) = top.list("endpoints", &mut d) {
        for (i, item) in items.iter().enumerate() {
            parse_endpoint(&index("endpoints", i), item, &mut out.endpoints, &mut d);
        }
    }
    if let Some(items) = top.list("objectives", &mut d) {
        for (i, item) in items.iter().enumerate() {
            let path = index("objectives", i);
            let mut o = Obj::new(path.clone(), Some(item), &mut d);
            let name = o.string("name", &mut d);
            let priority = o.i64("priority", &mut d);
            o.finish(&mut d);
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                d.error(format!("{path}.name"), "required");
                continue;
            };
            let priority = match priority.map(i32::try_from) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(_)) => {
                    d.error(format!("{path}.priority"), "must fit in 32 bits");
                    continue;
                }
            };
            if out.objectives.insert(name.clone(), priority).is_some() {
                d.error(
                    format!("{path}.name"),
                    format!("duplicate objective {name:?}"),
                );
            }
        }
    }
    if let Some(items) = top.list("modelRewrites", &mut d) {
        for (i, item) in items.iter().enumerate() {
            if let Some(rw) = parse_rewrite(&index("modelRewrites", i), item, &mut d) {
                if out.rewrites.iter().any(|r| r.name == rw.name) {
                    d.error(
                        format!("{}.name", index("modelRewrites", i)),
                        format!("duplicate model rewrite {:?}", rw.name),
                    );
                } else {
                    out.rewrites.push(rw);
                }
            }
        }
    }
    top.finish(&mut d);
    if d.errors.is_empty() {
        Ok(out)
    } else {
        Err(StaticFileError(ConfigErrors(d.errors)))
    }
}

fn parse_endpoint(path: &str, item: &Value, out: &mut Vec<Endpoint>, d: &mut Diagnostics) {
    let mut o = Obj::new(path, Some(item), d);
    let name = o.string("name", d);
    let address = o.string("address", d);
    let port = o.i64("port", d);
    let ports = o.list("ports", d);
    let labels_v = o.get("labels");
    o.finish(d);
    let Some(address) = address else {
        d.error(format!("{path}.address"), "required (an IP address)");
        return;
    };
    let ip: IpAddr = match address.parse() {
        Ok(ip) => ip,
        Err(_) => {
            d.error(
                format!("{path}.address"),
                format!("must be an IP address, got {address:?}"),
            );
            return;
        }
    };
    let mut port_list: Vec<u16> = Vec::new();
    let check = |p: i64, at: String, d: &mut Diagnostics| match u16::try_from(p) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            d.error(at, format!("must be a port in 1..65535, got {p}"));
            None
        }
    };
    match (port, ports) {
        (Some(_), Some(_)) => {
            d.error(
                format!("{path}.ports"),
                "give either port or ports, not both",
            );
            return;
        }
        (Some(p), None) => port_list.extend(check(p, format!("{path}.port"), d)),
        (None, Some(list)) => {
            for (j, v) in list.iter().enumerate() {
                let at = index(&format!("{path}.ports"), j);
                match int_of(v) {
                    Some(p) => {
                        if let Some(p) = check(p, at.clone(), d) {
                            if port_list.contains(&p) {
                                d.error(at, format!("duplicate port {p}"));
                            } else {
                                port_list.push(p);
                            }
                        }
                    }
                    None => d.error(at, format!("must be a port number, got {}", show(v))),
                }
            }
            if list.is_empty() {
                d.error(format!("{path}.ports"), "must not be empty");
            }
        }
        (None, None) => {
            d.error(format!("{path}.port"), "required (or ports)");
            return;
        }
    }
    let mut labels = BTreeMap::new();
    match labels_v {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        labels.insert(k.clone(), s.clone());
                    }
                    other => d.error(
                        format!("{path}.labels.{k}"),
                        format!("must be a string, got {}", show(other)),
                    ),
                }
            }
        }
        Some(other) => d.error(
            format!("{path}.labels"),
            format!("must be a mapping, got {}", show(other)),
        ),
    }
    let multi = port_list.len() > 1;
    for (rank, p) in port_list.into_iter().enumerate() {
        let ep_name = match (&name, multi) {
            (Some(n), false) if !n.is_empty() => n.clone(),
            (Some(n), true) if !n.is_empty() => format!("{n}-rank-{rank}"),
            _ => SocketAddr::new(ip, p).to_string(),
        };
        if out.iter().any(|e| e.name == ep_name) {
            d.error(
                format!("{path}.name"),
                format!("duplicate endpoint name {ep_name:?}"),
            );
            continue;
        }
        if out.iter().any(|e| e.address == ip && e.port == p) {
            d.error(
                format!("{path}.address"),
                format!("duplicate endpoint {}", SocketAddr::new(ip, p)),
            );
            continue;
        }
        out.push(Endpoint::new(ep_name, ip, p).with_labels(labels.clone()));
    }
}

fn parse_rewrite(path: &str, item: &Value, d: &mut Diagnostics) -> Option<ModelRewrite> {
    let mut o = Obj::new(path, Some(item), d);
    let name = o.string("name", d);
    let mut rules = Vec::new();
    if let Some(items) = o.list("rules", d) {
        for (i, r) in items.iter().enumerate() {
            let rpath = index(&format!("{path}.rules"), i);
            let mut ro = Obj::new(rpath.clone(), Some(r), d);
            let mut exact = Vec::new();
            if let Some(ms) = ro.list("matches", d) {
                for (j, m) in ms.iter().enumerate() {
                    let mpath = index(&format!("{rpath}.matches"), j);
                    let mut mo = Obj::new(mpath.clone(), Some(m), d);
                    let model = mo.get("model");
                    mo.finish(d);
                    let mut mm = Obj::new(format!("{mpath}.model"), model, d);
                    let ty = mm.string("type", d);
                    let value = mm.string("value", d);
                    mm.finish(d);
                    match ty.as_deref() {
                        None | Some("Exact") => {}
                        Some(other) => {
                            d.error(
                                format!("{mpath}.model.type"),
                                format!("only Exact is supported, got {other:?}"),
                            );
                            continue;
                        }
                    }
                    match value {
                        Some(v) if !v.is_empty() => exact.push(v),
                        _ => d.error(format!("{mpath}.model.value"), "required"),
                    }
                }
            }
            let mut targets = Vec::new();
            if let Some(ts) = ro.list("targets", d) {
                for (j, t) in ts.iter().enumerate() {
                    let tpath = index(&format!("{rpath}.targets"), j);
                    let mut to = Obj::new(tpath.clone(), Some(t), d);
                    let model = to.string("modelRewrite", d);
                    let weight = to.i64("weight", d).unwrap_or(1);
                    to.finish(d);
                    let Some(model) = model.filter(|m| !m.is_empty()) else {
                        d.error(format!("{tpath}.modelRewrite"), "required");
                        continue;
                    };
                    match u32::try_from(weight) {
                        Ok(weight) => targets.push(RewriteTarget { model, weight }),
                        Err(_) => d.error(
                            format!("{tpath}.weight"),
                            format!("must be >= 0, got {weight}"),
                        ),
                    }
                }
            }
            ro.finish(d);
            if targets.is_empty() {
                d.error(format!("{rpath}.targets"), "must name at least one target");
            }
            rules.push(RewriteRule { exact, targets });
        }
    }
    o.finish(d);
    match name {
        Some(n) if !n.is_empty() => Some(ModelRewrite {
            name: n,
            rules,
            created: None,
        }),
        _ => {
            d.error(format!("{path}.name"), "required");
            None
        }
    }
}

/// Applies a parsed file to the pool and the datastore.
pub fn apply(file: StaticFile, pool: &EndpointPool, datastore: &Datastore) {
    if file.endpoints.is_empty() {
        tracing::warn!(
            "the static endpoints file lists no endpoints: requests get 503 until it lists some"
        );
    }
    pool.set_endpoints(file.endpoints);
    datastore.set_objectives(file.objectives);
    datastore.set_rewrites(file.rewrites);
}

/// Re-reads `path` every `interval`, and whenever `hup` changes (SIGHUP), and applies it when its
/// content changed. An unreadable or invalid file keeps what is in force and logs why.
/// (Polling rather than inotify: it also sees Kubernetes ConfigMap updates, which swap a symlink,
/// and costs one small read per interval.)
pub async fn watch_file(
    path: PathBuf,
    interval: Duration,
    sink: super::Sink,
    mut last: Vec<u8>,
    mut hup: tokio::sync::watch::Receiver<u64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = hup.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                if !last.is_empty() {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the static endpoints file; keeping the endpoints in force");
                    last.clear();
                }
                continue;
            }
        };
        if bytes == last {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        match parse_static_file(&text) {
            Ok(file) => {
                tracing::info!(path = %path.display(), endpoints = file.endpoints.len(), "static endpoints file reloaded");
                apply(file, &sink.pool, &sink.datastore);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "invalid static endpoints file; keeping the endpoints in force");
            }
        }
        last = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_list_flag() {
        let eps = parse_endpoint_list("127.0.0.11:8000, 127.0.0.12:8001,[::1]:9000").unwrap();
        let names: Vec<&str> = eps.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["127.0.0.11:8000", "127.0.0.12:8001", "[::1]:9000"]
        );
        assert_eq!(
            parse_endpoint_list("localhost:80").unwrap_err(),
            "--static-endpoints: \"localhost:80\" is not an ip:port address"
        );
        assert_eq!(
            parse_endpoint_list("1.2.3.4:80,1.2.3.4:80").unwrap_err(),
            "--static-endpoints: \"1.2.3.4:80\" is listed twice"
        );
        assert!(parse_endpoint_list("1.2.3.4:0").is_err());
    }

    #[test]
    fn full_file() {
        let f = parse_static_file(
            "endpoints:
- name: vllm-a
  address: 127.0.0.11
  port: 8000
  labels: {inference.networking.k8s.io/engine-type: sglang}
- name: dp
  address: 127.0.0.12
  ports: [8000, 8001]
- address: 127.0.0.13
  port: 8000
objectives:
- {name: sql-lora, priority: 2}
- {name: best-effort, priority: -1}
- {name: plain}
modelRewrites:
- name: rewrite-test
  rules:
  - matches: [{model: {type: Exact, value: model-to-be-rewritten}}]
    targets: [{modelRewrite: rewritten-model, weight: 1}]
",
        )
        .unwrap();
        let names: Vec<&str> = f.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["vllm-a", "dp-rank-0", "dp-rank-1", "127.0.0.13:8000"]
        );
        assert_eq!(f.endpoints[2].port, 8001);
        assert_eq!(
            f.endpoints[0]
                .labels
                .get("inference.networking.k8s.io/engine-type")
                .map(String::as_str),
            Some("sglang")
        );
        assert_eq!(f.objectives.get("sql-lora"), Some(&Some(2)));
        assert_eq!(f.objectives.get("plain"), Some(&None));
        assert_eq!(f.rewrites[0].rules[0].exact, vec!["model-to-be-rewritten"]);
        assert_eq!(f.rewrites[0].rules[0].targets[0].model, "rewritten-model");
    }

    #[test]
    fn an_empty_file_is_an_error_and_an_empty_list_is_not() {
        for text in ["", "   \n", "# only a comment\n"] {
            let e = parse_static_file(text).unwrap_err();
            assert_eq!(e.messages(), vec!["the file is empty"], "{text:?}");
        }
        assert_eq!(
            parse_static_file("objectives: []\n")
                .unwrap_err()
                .messages(),
            vec!["endpoints: required (write `endpoints: []` to run with no endpoints)"]
        );
        assert!(
            parse_static_file("endpoints: []\n")
                .unwrap()
                .endpoints
                .is_empty()
        );
    }

    #[test]
    fn file_errors_are_all_reported() {
        let e = parse_static_file(
            "endpoints:
- {address: not-an-ip, port: 80}
- {address: 10.0.0.1, port: 70000}
- {address: 10.0.0.2}
- {address: 10.0.0.3, port: 1, ports: [2]}
- {name: a, address: 10.0.0.4, port: 80}
- {name: a, address: 10.0.0.5, port: 80}
objectives:
- {priority: 1}
modelRewrites:
- name: r
  rules:
  - matches: [{model: {type: RegularExpression, value: x}}]
    targets: []
extra: true
",
        )
        .unwrap_err();
        assert_eq!(
            e.messages(),
            vec![
                "endpoints[0].address: must be an IP address, got \"not-an-ip\"",
                "endpoints[1].port: must be a port in 1..65535, got 70000",
                "endpoints[2].port: required (or ports)",
                "endpoints[3].ports: give either port or ports, not both",
                "endpoints[5].name: duplicate endpoint name \"a\"",
                "objectives[0].name: required",
                "modelRewrites[0].rules[0].matches[0].model.type: only Exact is supported, got \"RegularExpression\"",
                "modelRewrites[0].rules[0].targets: must name at least one target",
                "extra: unknown field (known fields: endpoints, modelRewrites, objectives)",
            ]
        );
    }
}
