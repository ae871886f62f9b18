//! The effective configuration after decoding, GIE's system defaults and validation. Plugins are
//! referred to by their index in [`EndpointPickerConfig::plugins`].

use std::time::Duration;

use super::registry::PluginSpec;

/// Where a plugin instance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `plugins[i]` of the document.
    User(usize),
    /// Added by a system default.
    Default,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginInstance {
    pub name: String,
    pub spec: PluginSpec,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSpec {
    pub name: String,
    pub filters: Vec<usize>,
    /// Scorer plugin and its weight.
    pub scorers: Vec<(usize, f64)>,
    pub picker: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureGates {
    pub data_layer: bool,
    pub enable_legacy_metrics: bool,
    pub flow_control: bool,
}

impl FeatureGates {
    pub const KNOWN: &'static [&'static str] = &[
        "dataLayer",
        "enableLegacyMetrics",
        "flowControl",
        "haPopulateNonLeaderDatastore",
    ];

    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.data_layer {
            v.push("dataLayer");
        }
        if self.enable_legacy_metrics {
            v.push("enableLegacyMetrics");
        }
        if self.flow_control {
            v.push("flowControl");
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataSourceSpec {
    pub source: usize,
    pub extractors: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BandSpec {
    /// `None` for the default band template.
    pub priority: Option<i32>,
    /// Bytes queued in the band at most; GIE's default is 1,000,000,000.
    pub max_bytes: u64,
    /// Requests queued in the band at most; 0 means unlimited.
    pub max_requests: u64,
    pub ordering_policy: usize,
    pub fairness_policy: usize,
}

pub use crate::flowcontrol::controller::DEFAULT_BAND_MAX_BYTES;

#[derive(Debug, Clone, PartialEq)]
pub struct FlowControlSpec {
    /// Bytes queued across all bands at most; 0 means unlimited.
    pub max_bytes: u64,
    /// Requests queued across all bands at most; 0 means unlimited.
    pub max_requests: u64,
    /// How long a request may wait when the client set no deadline; `None` waits until the
    /// client goes away.
    pub default_request_ttl: Option<Duration>,
    pub default_band: BandSpec,
    /// Template for priorities below zero without their own band (llm-d-router's
    /// `defaultNegativePriorityBand`); `None` uses `default_band`.
    pub default_negative_band: Option<BandSpec>,
    pub bands: Vec<BandSpec>,
    pub usage_limit_policy: usize,
}

/// The effective `EndpointPickerConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointPickerConfig {
    pub api_version: String,
    pub feature_gates: FeatureGates,
    pub plugins: Vec<PluginInstance>,
    pub profiles: Vec<ProfileSpec>,
    pub profile_handler: usize,
    pub saturation_detector: usize,
    pub parser: usize,
    /// Metrics collection; `None` when explicitly disabled with `dataLayer: {sources: []}`.
    pub data_layer: Option<DataSourceList>,
    /// Present only when the `flowControl` gate is on.
    pub flow_control: Option<FlowControlSpec>,
    /// Things the user should know that are not errors (deprecated fields, ignored sections).
    pub warnings: Vec<String>,
}

pub type DataSourceList = Vec<DataSourceSpec>;

impl EndpointPickerConfig {
    pub fn plugin(&self, index: usize) -> &PluginInstance {
        &self.plugins[index]
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.plugins.iter().position(|p| p.name == name)
    }

    /// Instances of type `type_name`, in definition order.
    pub fn of_type<'a>(
        &'a self,
        type_name: &'a str,
    ) -> impl Iterator<Item = &'a PluginInstance> + 'a {
        self.plugins
            .iter()
            .filter(move |p| p.spec.type_name() == type_name)
    }
}
