//! Kubernetes discovery, as GIE's EPP does it (gie-epp.md §4.1–4.5): the pods of one
//! InferencePool become endpoints, and InferenceObjective / InferenceModelRewrite objects naming
//! the pool become objectives and model rewrites; or, standalone, the pods of a label selector.
//!
//! - [`objects`]: the custom resources read leniently from untyped objects (a bad object is
//!   skipped with a reason, never fails a list);
//! - [`endpoints`]: ready pods → endpoints `<pod>-rank-<i>`, the active-ports annotation;
//! - [`reconcile`]: the sans-IO state machine from watch caches to what the [`Sink`] receives;
//! - [`standalone`]: `--endpoint-selector`, `--endpoint-target-ports`, `POD_NAME`;
//! - [`metrics`]: objects per kind, watch restarts and relists, last sync time;
//! - `client` and `run`: the client, CRD discovery, and the watch loop (kube-runtime watchers
//!   with backoff feeding reflector stores; every change rebuilds from the stores).

mod client;
pub mod endpoints;
pub mod metrics;
pub mod objects;
pub mod reconcile;
mod run;
pub mod standalone;

use std::fmt;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use metrics::KubeMetrics;
pub use objects::{DEFAULT_POOL_GROUP, PoolSpec};

use super::Sink;

/// The kinds of object the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pool,
    Pod,
    Objective,
    Rewrite,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pool => "InferencePool",
            Kind::Pod => "Pod",
            Kind::Objective => "InferenceObjective",
            Kind::Rewrite => "InferenceModelRewrite",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// Flags or environment that cannot work.
    #[error("{0}")]
    Options(String),
    /// Neither in-cluster configuration nor a usable kubeconfig.
    #[error("Kubernetes configuration (in-cluster, or KUBECONFIG / ~/.kube/config): {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Which pods to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The InferencePool `name` (API group `group`) says, and its objectives and rewrites.
    Pool { name: String, group: String },
    /// A fixed selector and ports; `pool_name` only names the pool in metrics.
    Standalone { pool_name: String, spec: PoolSpec },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesOptions {
    /// Pods, pools, objectives and rewrites are read in this namespace only.
    pub namespace: String,
    pub target: Target,
}

/// The pool namespace: `flag`, else `env_namespace` (env `NAMESPACE`), else `default`.
pub fn resolve_namespace(flag: &str, env_namespace: Option<&str>) -> String {
    [Some(flag), env_namespace]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// A DNS-1123 subdomain (object names, API groups): lowercase alphanumerics, `-` and `.`.
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn check_namespace(namespace: &str) -> Result<(), KubeError> {
    if namespace.len() <= 63 && !namespace.contains('.') && dns_subdomain(namespace) {
        Ok(())
    } else {
        Err(KubeError::Options(format!(
            "pool namespace {namespace:?} is not a valid namespace name"
        )))
    }
}

impl KubernetesOptions {
    /// `--pool-name` mode. The namespace is `namespace_flag`, else env `NAMESPACE`, else
    /// `default`.
    pub fn pool(name: &str, namespace_flag: &str, group: &str) -> Result<Self, KubeError> {
        Self::pool_with_env(
            name,
            namespace_flag,
            group,
            std::env::var("NAMESPACE").ok().as_deref(),
        )
    }

    fn pool_with_env(
        name: &str,
        namespace_flag: &str,
        group: &str,
        env_namespace: Option<&str>,
    ) -> Result<Self, KubeError> {
        if !dns_subdomain(name) {
            return Err(KubeError::Options(format!(
                "--pool-name {name:?} is not a valid object name"
            )));
        }
        if !dns_subdomain(group) {
            return Err(KubeError::Options(format!(
                "--pool-group {group:?} is not a valid API group"
            )));
        }
        let namespace = resolve_namespace(namespace_flag, env_namespace);
        check_namespace(&namespace)?;
        Ok(Self {
            namespace,
            target: Target::Pool {
                name: name.into(),
                group: group.into(),
            },
        })
    }

    /// Standalone mode (`--endpoint-selector`, `--endpoint-target-ports`). The pool is named
    /// after the Deployment in env `POD_NAME` (`<deployment>-<hash>-<suffix>`).
    pub fn standalone(
        selector: &str,
        ports: &[u16],
        namespace_flag: &str,
    ) -> Result<Self, KubeError> {
        Self::standalone_with_env(
            selector,
            ports,
            namespace_flag,
            std::env::var("NAMESPACE").ok().as_deref(),
            std::env::var("POD_NAME").ok().as_deref(),
        )
    }

    fn standalone_with_env(
        selector: &str,
        ports: &[u16],
        namespace_flag: &str,
        env_namespace: Option<&str>,
        env_pod_name: Option<&str>,
    ) -> Result<Self, KubeError> {
        let spec = standalone::pool_spec(selector, ports)?;
        let namespace = resolve_namespace(namespace_flag, env_namespace);
        check_namespace(&namespace)?;
        let pool_name = match env_pod_name.filter(|p| !p.is_empty()) {
            Some(pod) => match standalone::deployment_name(pod) {
                Some(d) => d.to_string(),
                None => {
                    tracing::warn!(
                        pod_name = pod,
                        "POD_NAME is not <deployment>-<hash>-<suffix>; the pool is named after it as is"
                    );
                    pod.to_string()
                }
            },
            None => {
                tracing::warn!(
                    "POD_NAME is not set (the downward API gives it); the standalone pool is named \"switchyard\""
                );
                "switchyard".to_string()
            }
        };
        Ok(Self {
            namespace,
            target: Target::Standalone { pool_name, spec },
        })
    }

    /// The name the pool goes by in metrics.
    pub fn pool_name(&self) -> &str {
        match &self.target {
            Target::Pool { name, .. } => name,
            Target::Standalone { pool_name, .. } => pool_name,
        }
    }
}

/// Kubernetes as a discovery source: [`KubernetesSource::connect`], then
/// [`KubernetesSource::spawn`] to keep a [`Sink`] current until stopped.
#[derive(Clone)]
pub struct KubernetesSource {
    client: kube::Client,
    opts: KubernetesOptions,
    metrics: KubeMetrics,
}

impl fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesSource")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl KubernetesSource {
    /// Builds the client with `kube::Config::infer()`: the in-cluster service account, else
    /// `KUBECONFIG` or `~/.kube/config`. Nothing is sent to the API server yet, so an unreachable
    /// server does not stop the EPP from starting (it reports NOT_SERVING until synced).
    pub async fn connect(opts: KubernetesOptions) -> Result<Self, KubeError> {
        let config = kube::Config::infer().await?;
        let client = client::build(config)?;
        Ok(Self::with_client(client, opts))
    }

    /// Over an existing client.
    pub fn with_client(client: kube::Client, opts: KubernetesOptions) -> Self {
        Self {
            client,
            opts,
            metrics: KubeMetrics::new(),
        }
    }

    pub fn options(&self) -> &KubernetesOptions {
        &self.opts
    }

    pub fn metrics(&self) -> &KubeMetrics {
        &self.metrics
    }

    /// Watches until `stop` turns true (or its sender is dropped), delivering into `sink`:
    /// endpoints into the pool, objectives and rewrites into the datastore, and `synced` true
    /// iff the pool exists with a valid spec and every watch has listed once.
    pub fn spawn(self, sink: Sink, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        crate::tasks::spawn_critical(
            "kubernetes watchers",
            run::run(self.client, self.opts, self.metrics, sink, stop),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_precedence() {
        assert_eq!(resolve_namespace("flag", Some("env")), "flag");
        assert_eq!(resolve_namespace("", Some("env")), "env");
        assert_eq!(resolve_namespace("", Some("")), "default");
        assert_eq!(resolve_namespace("", None), "default");
    }

    #[test]
    fn pool_options() {
        let o = KubernetesOptions::pool_with_env("vllm", "", DEFAULT_POOL_GROUP, Some("team-a"))
            .unwrap();
        assert_eq!(o.namespace, "team-a");
        assert_eq!(o.pool_name(), "vllm");
        for (name, ns, group) in [
            ("Bad_Name", "", DEFAULT_POOL_GROUP),
            ("p", "a.b", DEFAULT_POOL_GROUP),
            ("p", "UPPER", DEFAULT_POOL_GROUP),
            ("p", "", ""),
        ] {
            assert!(
                KubernetesOptions::pool_with_env(name, ns, group, None).is_err(),
                "{name} {ns} {group}"
            );
        }
    }

    #[test]
    fn standalone_options() {
        let o = KubernetesOptions::standalone_with_env(
            "app=vllm",
            &[8000],
            "",
            None,
            Some("epp-5d8f9c7b6-abcde"),
        )
        .unwrap();
        assert_eq!(o.pool_name(), "epp");
        assert_eq!(o.namespace, "default");
        let o =
            KubernetesOptions::standalone_with_env("app=vllm", &[8000], "ns", None, None).unwrap();
        assert_eq!(o.pool_name(), "switchyard");
        assert!(KubernetesOptions::standalone_with_env("app", &[8000], "", None, None).is_err());
    }
}
