//! The API client and CRD discovery.

use std::time::Duration;

use kube::Client;
use kube::discovery::ApiResource;

use super::KubeError;

/// A client over `config`, using the process's one rustls provider (ring).
pub(super) fn build(config: kube::Config) -> Result<Client, KubeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Client::try_from(config)?)
}

/// The InferencePool resource of API group `group`: `v1`, or `v1alpha2` for the alpha group
/// `inference.networking.x-k8s.io` (the shape GIE read before v1.5).
pub(super) fn pool_resource(group: &str) -> ApiResource {
    let version = if group == "inference.networking.x-k8s.io" {
        "v1alpha2"
    } else {
        "v1"
    };
    resource(group, version, "InferencePool", "inferencepools")
}

pub(super) fn objective_resource() -> ApiResource {
    resource(
        "inference.networking.x-k8s.io",
        "v1alpha2",
        "InferenceObjective",
        "inferenceobjectives",
    )
}

pub(super) fn rewrite_resource() -> ApiResource {
    resource(
        "inference.networking.x-k8s.io",
        "v1alpha2",
        "InferenceModelRewrite",
        "inferencemodelrewrites",
    )
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Whether the API server serves `resource`, from the discovery API (`/apis/<group>/<version>`):
/// a 404 means the group version is not installed. Other failures are retried with backoff
/// until the server answers.
pub(super) async fn is_served(client: &Client, resource: &ApiResource) -> bool {
    let mut delay = Duration::from_millis(500);
    loop {
        match client.list_api_group_resources(&resource.api_version).await {
            Ok(list) => return list.resources.iter().any(|r| r.name == resource.plural),
            Err(kube::Error::Api(status)) if status.code == 404 => return false,
            Err(e) => {
                tracing::warn!(
                    api = %resource.api_version,
                    error = %e,
                    retry_in = ?delay,
                    "cannot ask the API server which resources it serves"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
