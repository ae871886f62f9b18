//! Flow control: with the `flowControl` feature gate, requests wait in the EPP while the pool is
//! saturated and leave in an order set by priority bands, a fairness policy per band (GIE's
//! global-strict and round-robin, and VTC) and an ordering policy per flow (FCFS, EDF).
//!
//! [`controller`] is the pure state (also driven by the simulator in virtual time); [`service`]
//! runs it in the server, dispatching on events instead of GIE's 1 ms ticker.

pub mod controller;
pub mod metrics;
pub mod release;
pub mod service;
pub mod vtc;

use std::collections::BTreeMap;

pub use controller::{
    BandConfig, ControllerConfig, Fairness, FlowController, ItemId, NewItem, Ordering, Rejected,
    Released,
};
pub use metrics::FlowControlMetrics;
pub use release::{Charge, Transit};
pub use service::{Admission, FlowControl, Outcome, Ticket};

use crate::config::model::{BandSpec, EndpointPickerConfig};
use crate::config::registry::PluginSpec;

/// The controller configuration the `flowControl` section describes; `None` when the feature
/// gate is off (then admission is GIE's legacy one: sheddable requests shed when saturated).
pub fn controller_config(cfg: &EndpointPickerConfig) -> Option<ControllerConfig> {
    let fc = cfg.flow_control.as_ref()?;
    let band = |b: &BandSpec| BandConfig {
        max_bytes: b.max_bytes,
        max_requests: b.max_requests,
        ordering: match &cfg.plugin(b.ordering_policy).spec {
            PluginSpec::EdfOrderingPolicy => Ordering::Edf,
            _ => Ordering::Fcfs,
        },
        fairness: match &cfg.plugin(b.fairness_policy).spec {
            PluginSpec::RoundRobinFairnessPolicy => Fairness::RoundRobin,
            PluginSpec::VtcFairnessPolicy(p) => Fairness::Vtc(p.clone()),
            _ => Fairness::GlobalStrict,
        },
    };
    let ceiling = match &cfg.plugin(fc.usage_limit_policy).spec {
        PluginSpec::StaticUsageLimitPolicy(p) => p.threshold,
        _ => 1.0,
    };
    Some(ControllerConfig {
        max_bytes: fc.max_bytes,
        max_requests: fc.max_requests,
        default_ttl: fc.default_request_ttl,
        default_band: band(&fc.default_band),
        bands: fc
            .bands
            .iter()
            .filter_map(|b| Some((b.priority?, band(b))))
            .collect::<BTreeMap<_, _>>(),
        ceiling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn config_maps_bands_policies_and_ceiling() {
        let cfg = load_str(
            "apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- {type: vtc-fairness-policy, name: vtc, parameters: {tenantWeights: {gold: 2}}}
- {type: edf-ordering-policy}
- {type: round-robin-fairness-policy}
- {type: static-usage-limit-policy, name: limit, parameters: {threshold: 0.8}}
flowControl:
  maxRequests: 100
  defaultRequestTTL: 30s
  defaultPriorityBand: {fairnessPolicyRef: vtc}
  priorityBands:
  - {priority: 10, maxRequests: 5, orderingPolicyRef: edf-ordering-policy, fairnessPolicyRef: round-robin-fairness-policy}
  usageLimitPolicyPluginRef: limit
",
        )
        .unwrap();
        let c = controller_config(&cfg).unwrap();
        assert_eq!(c.max_requests, 100);
        assert_eq!(c.default_ttl, Some(std::time::Duration::from_secs(30)));
        assert_eq!(c.ceiling, 0.8);
        let Fairness::Vtc(p) = &c.default_band.fairness else {
            panic!("default band runs VTC: {:?}", c.default_band)
        };
        assert_eq!(p.tenant_weights.get("gold"), Some(&2.0));
        assert_eq!(c.default_band.ordering, Ordering::Fcfs);
        let b = &c.bands[&10];
        assert_eq!(
            (b.max_requests, b.ordering, &b.fairness),
            (5, Ordering::Edf, &Fairness::RoundRobin)
        );
        let off = load_str(
            "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins: []\n",
        )
        .unwrap();
        assert!(controller_config(&off).is_none());
    }
}
