//! Standalone mode (gie-epp.md §4.5): no InferencePool; the pods come from
//! `--endpoint-selector k=v[,k=v]` and `--endpoint-target-ports p[,p]`, and the "pool" is named
//! after the EPP's own Deployment, read from env `POD_NAME`.

use std::collections::BTreeMap;

use super::KubeError;
use super::objects::{AppProtocol, MAX_TARGET_PORTS, PoolSpec};

/// Parses `k1=v1,k2=v2` (equality pairs, no spaces) into a selector.
pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, KubeError> {
    let bad = |why: String| KubeError::Options(format!("--endpoint-selector {text:?}: {why}"));
    let mut out = BTreeMap::new();
    for pair in text.split(',') {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad(format!("{pair:?} is not key=value")));
        };
        if !valid_label_key(k) {
            return Err(bad(format!("{k:?} is not a label key")));
        }
        if !valid_label_value(v) {
            return Err(bad(format!("{v:?} is not a label value")));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad(format!("{k:?} is given twice")));
        }
    }
    Ok(out)
}

fn name_chars(s: &str, max: usize) -> bool {
    s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `[prefix/]name`: an optional DNS-subdomain prefix and a name of at most 63 characters.
fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    }) && !name.is_empty()
        && name_chars(name, 63)
}

/// Empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn valid_label_value(v: &str) -> bool {
    v.is_empty() || name_chars(v, 63)
}

/// The standalone pool: the selector, and 1–8 target ports with duplicates dropped.
pub fn pool_spec(selector: &str, ports: &[u16]) -> Result<PoolSpec, KubeError> {
    let selector = parse_selector(selector)?;
    let mut target_ports = Vec::with_capacity(ports.len());
    for &p in ports {
        if p == 0 {
            return Err(KubeError::Options(
                "--endpoint-target-ports: 0 is not a port".into(),
            ));
        }
        if !target_ports.contains(&p) {
            target_ports.push(p);
        }
    }
    if target_ports.is_empty() || target_ports.len() > MAX_TARGET_PORTS {
        return Err(KubeError::Options(format!(
            "--endpoint-target-ports: give 1 to {MAX_TARGET_PORTS} ports with --endpoint-selector, got {}",
            target_ports.len()
        )));
    }
    Ok(PoolSpec {
        selector,
        target_ports,
        app_protocol: AppProtocol::Http,
    })
}

/// The Deployment name in a pod name `<deployment>-<replicaset hash>-<pod suffix>`, as GIE reads
/// `POD_NAME` with `^(.+)-[a-z0-9]+-[a-z0-9]+$`; `None` when the name has another shape.
pub fn deployment_name(pod_name: &str) -> Option<&str> {
    let is_part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    let (rest, suffix) = pod_name.rsplit_once('-')?;
    let (deployment, hash) = rest.rsplit_once('-')?;
    (is_part(suffix) && is_part(hash) && !deployment.is_empty()).then_some(deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            parse_selector("app=vllm,inference.networking.k8s.io/engine-type=sglang").unwrap(),
            BTreeMap::from([
                ("app".to_string(), "vllm".to_string()),
                (
                    "inference.networking.k8s.io/engine-type".to_string(),
                    "sglang".to_string()
                ),
            ])
        );
        assert_eq!(parse_selector("tier=").unwrap()["tier"], "");
        for (bad, why) in [
            ("app", "\"app\" is not key=value"),
            ("app=vllm,", "\"\" is not key=value"),
            ("app = vllm", "\"app \" is not a label key"),
            ("app=a b", "\"a b\" is not a label value"),
            ("a=1,a=2", "\"a\" is given twice"),
            ("Bad_/x=1", "\"Bad_/x\" is not a label key"),
            ("app!=vllm", "\"app!\" is not a label key"),
        ] {
            let e = parse_selector(bad).unwrap_err().to_string();
            assert_eq!(e, format!("--endpoint-selector {bad:?}: {why}"), "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(
            pool_spec("app=vllm", &[8000, 8001, 8000])
                .unwrap()
                .target_ports,
            vec![8000, 8001]
        );
        assert!(pool_spec("app=vllm", &[]).is_err());
        assert!(pool_spec("app=vllm", &[1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        assert!(pool_spec("app=vllm", &[0]).is_err());
    }

    #[test]
    fn deployment_from_pod_name() {
        assert_eq!(
            deployment_name("vllm-epp-7d9f8c6b5-x2x9z"),
            Some("vllm-epp")
        );
        assert_eq!(deployment_name("epp-abc-def"), Some("epp"));
        assert_eq!(deployment_name("epp-0"), None);
        assert_eq!(deployment_name("epp-ABC-def"), None);
        assert_eq!(deployment_name("-abc-def"), None);
    }
}
