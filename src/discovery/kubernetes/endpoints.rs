//! How pods become endpoints (gie-epp.md §4.4): a ready pod matching the pool's selector gives one
//! endpoint per target port, `<pod>-rank-<i>` at `podIP:targetPorts[i]`, carrying the pod's
//! labels; the `inference.networking.k8s.io/active-ports` annotation narrows which ranks are live.
//! Pure: the caller passes the pods it has and gets the endpoint set back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use super::objects::PoolSpec;
use crate::scheduling::Endpoint;

/// The annotation restricting which target ports of a pod are live.
pub const ACTIVE_PORTS_ANNOTATION: &str = "inference.networking.k8s.io/active-ports";

/// Why a selected pod gives fewer endpoints than it might; reported once per pod version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNote {
    pub pod: String,
    pub message: String,
}

/// Ready means no `deletionTimestamp` and the condition `Ready` is `True` (§4.4).
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ports the active-ports annotation lists: `None` when the annotation is absent or lists no
/// valid port at all (then every target port is live); malformed entries are skipped and
/// reported in `bad`.
pub fn active_ports(pod: &Pod, bad: &mut Vec<String>) -> Option<BTreeSet<u16>> {
    let value = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ACTIVE_PORTS_ANNOTATION)?;
    let mut ports = BTreeSet::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.parse::<u16>() {
            Ok(p) if p > 0 => {
                ports.insert(p);
            }
            _ => {
                if bad.len() < 4 {
                    let mut e: String = entry.chars().take(16).collect();
                    if e.len() < entry.len() {
                        e.push('…');
                    }
                    bad.push(e);
                }
            }
        }
    }
    (!ports.is_empty()).then_some(ports)
}

/// The endpoints of `pods` under `spec`, sorted by pod name then rank. Pods not selected, not
/// ready, without a parsable IP, or in another namespace than `namespace` give none.
pub fn endpoints<'a>(
    spec: &PoolSpec,
    namespace: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
    notes: &mut Vec<PodNote>,
) -> Vec<Endpoint> {
    let mut selected: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| {
            p.metadata
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == namespace)
        })
        .filter(|p| spec.selects(p.metadata.labels.as_ref()))
        .filter(|p| is_ready(p))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::with_capacity(selected.len() * spec.target_ports.len());
    for pod in selected {
        let Some(name) = pod.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let ip_text = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
        let ip: IpAddr = match ip_text.map(str::parse) {
            Some(Ok(ip)) => ip,
            Some(Err(_)) => {
                notes.push(PodNote {
                    pod: name.to_string(),
                    message: "ready but status.podIP is not an IP address; skipped".into(),
                });
                continue;
            }
            None => {
                notes.push(PodNote {
                    pod: name.to_string(),
                    message: "ready but has no status.podIP yet; skipped".into(),
                });
                continue;
            }
        };
        let mut bad = Vec::new();
        let active = active_ports(pod, &mut bad);
        if !bad.is_empty() {
            notes.push(PodNote {
                pod: name.to_string(),
                message: format!(
                    "annotation {ACTIVE_PORTS_ANNOTATION}: ignoring malformed entries {bad:?}"
                ),
            });
        }
        let labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
        for (rank, &port) in spec.target_ports.iter().enumerate() {
            if active.as_ref().is_some_and(|a| !a.contains(&port)) {
                continue;
            }
            out.push(
                Endpoint::new(format!("{name}-rank-{rank}"), ip, port).with_labels(labels.clone()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::kubernetes::objects::AppProtocol;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn spec(ports: &[u16]) -> PoolSpec {
        PoolSpec {
            selector: BTreeMap::from([("app".into(), "vllm".into())]),
            target_ports: ports.to_vec(),
            app_protocol: AppProtocol::Http,
        }
    }

    fn pod(name: &str, ip: Option<&str>, ready: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn names(eps: &[Endpoint]) -> Vec<String> {
        eps.iter()
            .map(|e| format!("{}@{}", e.name, e.host_port()))
            .collect()
    }

    #[test]
    fn ready_selected_pods_give_one_endpoint_per_port() {
        let pods = [
            pod(
                "b",
                Some("10.0.0.2"),
                "True",
                &[("app", "vllm"), ("tier", "gpu")],
            ),
            pod("a", Some("10.0.0.1"), "True", &[("app", "vllm")]),
            pod("unready", Some("10.0.0.3"), "False", &[("app", "vllm")]),
            pod("other", Some("10.0.0.4"), "True", &[("app", "sglang")]),
            pod("nolabels", Some("10.0.0.5"), "True", &[]),
        ];
        let mut notes = Vec::new();
        let eps = endpoints(&spec(&[8000, 8001]), "ns", &pods, &mut notes);
        assert_eq!(
            names(&eps),
            [
                "a-rank-0@10.0.0.1:8000",
                "a-rank-1@10.0.0.1:8001",
                "b-rank-0@10.0.0.2:8000",
                "b-rank-1@10.0.0.2:8001"
            ]
        );
        assert_eq!(eps[2].labels.get("tier").map(String::as_str), Some("gpu"));
        assert!(notes.is_empty());
        let eps = endpoints(&spec(&[8000]), "ns", &pods, &mut notes);
        assert_eq!(
            names(&eps),
            ["a-rank-0@10.0.0.1:8000", "b-rank-0@10.0.0.2:8000"]
        );
    }

    #[test]
    fn terminating_pods_and_pods_without_an_ip_are_not_endpoints() {
        let mut terminating = pod("t", Some("10.0.0.1"), "True", &[("app", "vllm")]);
        terminating.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(!is_ready(&terminating));
        let no_ip = pod("n", None, "True", &[("app", "vllm")]);
        let bad_ip = pod("x", Some("nonsense"), "True", &[("app", "vllm")]);
        let mut no_status = pod("s", Some("10.0.0.9"), "True", &[("app", "vllm")]);
        no_status.status = None;
        let mut notes = Vec::new();
        let eps = endpoints(
            &spec(&[8000]),
            "ns",
            &[terminating, no_ip, bad_ip, no_status],
            &mut notes,
        );
        assert!(eps.is_empty());
        let pods: Vec<&str> = notes.iter().map(|n| n.pod.as_str()).collect();
        assert_eq!(pods, ["n", "x"]);
    }

    #[test]
    fn other_namespaces_are_never_endpoints() {
        let mut p = pod("a", Some("10.0.0.1"), "True", &[("app", "vllm")]);
        p.metadata.namespace = Some("elsewhere".into());
        assert!(endpoints(&spec(&[8000]), "ns", &[p], &mut Vec::new()).is_empty());
    }

    #[test]
    fn active_ports_annotation() {
        let with = |v: &str| {
            let mut p = pod("a", Some("10.0.0.1"), "True", &[("app", "vllm")]);
            p.metadata.annotations = Some(BTreeMap::from([(
                ACTIVE_PORTS_ANNOTATION.to_string(),
                v.to_string(),
            )]));
            p
        };
        let s = spec(&[8000, 8001, 8002]);
        let run = |v: &str| {
            let mut notes = Vec::new();
            let eps = endpoints(&s, "ns", &[with(v)], &mut notes);
            (names(&eps), notes.len())
        };
        assert_eq!(
            run("8001"),
            (vec!["a-rank-1@10.0.0.1:8001".to_string()], 0),
            "the rank keeps its index"
        );
        assert_eq!(
            run(" 8000 , 9999,8002"),
            (
                vec![
                    "a-rank-0@10.0.0.1:8000".to_string(),
                    "a-rank-2@10.0.0.1:8002".to_string()
                ],
                0
            ),
            "unknown ports are ignored"
        );
        assert_eq!(run("8000,abc,-1,70000").0.len(), 1);
        assert_eq!(run("8000,abc,-1,70000").1, 1, "malformed entries are noted");
        assert_eq!(
            run("garbage").0.len(),
            3,
            "nothing valid: the annotation is ignored"
        );
        assert_eq!(run("").0.len(), 3);
        assert_eq!(run("9999").0.len(), 0, "only unknown ports: none live");
        let huge = format!("8000,{}", "x".repeat(1 << 20));
        let (eps, notes) = run(&huge);
        assert_eq!(eps.len(), 1);
        assert_eq!(notes, 1);
    }
}
