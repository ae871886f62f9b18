//! The closed set of plugin types, readable in one screen: each GIE type name, the roles it can
//! fill, and its typed parameters.

use serde_json::Value;

use super::error::Diagnostics;
use super::params::*;
use super::value::Obj;

/// What a plugin can do. One plugin may have several roles (a saturation detector is also a
/// filter); a profile slots it by the roles it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(u32);

impl Roles {
    pub const FILTER: Roles = Roles(1);
    pub const SCORER: Roles = Roles(1 << 1);
    pub const PICKER: Roles = Roles(1 << 2);
    pub const PROFILE_HANDLER: Roles = Roles(1 << 3);
    pub const PRODUCER: Roles = Roles(1 << 4);
    pub const SATURATION_DETECTOR: Roles = Roles(1 << 5);
    pub const DATA_SOURCE: Roles = Roles(1 << 6);
    pub const EXTRACTOR: Roles = Roles(1 << 7);
    pub const FAIRNESS: Roles = Roles(1 << 8);
    pub const ORDERING: Roles = Roles(1 << 9);
    pub const USAGE_LIMIT: Roles = Roles(1 << 10);
    pub const PARSER: Roles = Roles(1 << 11);
    pub const RESPONSE: Roles = Roles(1 << 12);

    pub const fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    pub const fn contains(self, other: Roles) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Per-request data a plugin produces or consumes; a consumer without a producer gets the
/// default producer created for it, as GIE does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKey {
    PrefixCacheMatchInfo,
    InFlightLoad,
}

impl DataKey {
    /// The plugin type GIE auto-creates to produce this key.
    pub fn default_producer(self) -> PluginSpec {
        match self {
            DataKey::PrefixCacheMatchInfo => {
                PluginSpec::ApproxPrefixCacheProducer(PrefixProducerParams::default())
            }
            DataKey::InFlightLoad => PluginSpec::InflightLoadProducer,
        }
    }
}

/// A plugin type with its decoded parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginSpec {
    QueueScorer,
    KvCacheUtilizationScorer,
    RunningRequestsSizeScorer,
    LoraAffinityScorer,
    /// `legacy` holds producer parameters given on the scorer, as older GIE releases did.
    PrefixCacheScorer {
        legacy: Option<PrefixProducerParams>,
    },
    TokenLoadScorer(TokenLoadParams),
    MaxScorePicker(PickerParams),
    RandomPicker(PickerParams),
    WeightedRandomPicker(PickerParams),
    SingleProfileHandler,
    HeaderBasedTestingFilter,
    PrefixCacheAffinityFilter(AffinityFilterParams),
    ApproxPrefixCacheProducer(PrefixProducerParams),
    InflightLoadProducer,
    UtilizationDetector(UtilizationParams),
    ConcurrencyDetector(ConcurrencyParams),
    MetricsDataSource(MetricsSourceParams),
    CoreMetricsExtractor(ExtractorParams),
    GlobalStrictFairnessPolicy,
    RoundRobinFairnessPolicy,
    VtcFairnessPolicy(VtcParams),
    FcfsOrderingPolicy,
    EdfOrderingPolicy,
    StaticUsageLimitPolicy(UsageLimitParams),
    OpenAiParser,
    PassthroughParser,
    DestinationEndpointServedVerifier,
}

/// Every type name Switchyard accepts, in the order the docs list them.
pub const KNOWN_TYPES: &[&str] = &[
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "running-requests-size-scorer",
    "lora-affinity-scorer",
    "prefix-cache-scorer",
    "token-load-scorer",
    "max-score-picker",
    "random-picker",
    "weighted-random-picker",
    "single-profile-handler",
    "header-based-testing-filter",
    "prefix-cache-affinity-filter",
    "approx-prefix-cache-producer",
    "inflight-load-producer",
    "utilization-detector",
    "concurrency-detector",
    "metrics-data-source",
    "core-metrics-extractor",
    "global-strict-fairness-policy",
    "round-robin-fairness-policy",
    "vtc-fairness-policy",
    "fcfs-ordering-policy",
    "edf-ordering-policy",
    "static-usage-limit-policy",
    "openai-parser",
    "passthrough-parser",
    "destination-endpoint-served-verifier",
];

/// GIE types Switchyard deliberately does not implement, with the reason given to the user.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "latency-scorer",
        "it needs GIE's external latency-predictor sidecars",
    ),
    (
        "predicted-latency-producer",
        "it needs GIE's external latency-predictor sidecars",
    ),
    (
        "slo-headroom-tier-filter",
        "it needs GIE's external latency-predictor sidecars",
    ),
    (
        "latency-slo-admitter",
        "it needs GIE's external latency-predictor sidecars",
    ),
    (
        "request-attribute-reporter",
        "it evaluates CEL expressions, which Switchyard does not embed",
    ),
    (
        "vllmgrpc-parser",
        "Switchyard parses OpenAI HTTP bodies only (openai-parser, passthrough-parser)",
    ),
];

impl PluginSpec {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::QueueScorer => "queue-scorer",
            Self::KvCacheUtilizationScorer => "kv-cache-utilization-scorer",
            Self::RunningRequestsSizeScorer => "running-requests-size-scorer",
            Self::LoraAffinityScorer => "lora-affinity-scorer",
            Self::PrefixCacheScorer { .. } => "prefix-cache-scorer",
            Self::TokenLoadScorer(_) => "token-load-scorer",
            Self::MaxScorePicker(_) => "max-score-picker",
            Self::RandomPicker(_) => "random-picker",
            Self::WeightedRandomPicker(_) => "weighted-random-picker",
            Self::SingleProfileHandler => "single-profile-handler",
            Self::HeaderBasedTestingFilter => "header-based-testing-filter",
            Self::PrefixCacheAffinityFilter(_) => "prefix-cache-affinity-filter",
            Self::ApproxPrefixCacheProducer(_) => "approx-prefix-cache-producer",
            Self::InflightLoadProducer => "inflight-load-producer",
            Self::UtilizationDetector(_) => "utilization-detector",
            Self::ConcurrencyDetector(_) => "concurrency-detector",
            Self::MetricsDataSource(_) => "metrics-data-source",
            Self::CoreMetricsExtractor(_) => "core-metrics-extractor",
            Self::GlobalStrictFairnessPolicy => "global-strict-fairness-policy",
            Self::RoundRobinFairnessPolicy => "round-robin-fairness-policy",
            Self::VtcFairnessPolicy(_) => "vtc-fairness-policy",
            Self::FcfsOrderingPolicy => "fcfs-ordering-policy",
            Self::EdfOrderingPolicy => "edf-ordering-policy",
            Self::StaticUsageLimitPolicy(_) => "static-usage-limit-policy",
            Self::OpenAiParser => "openai-parser",
            Self::PassthroughParser => "passthrough-parser",
            Self::DestinationEndpointServedVerifier => "destination-endpoint-served-verifier",
        }
    }

    pub fn roles(&self) -> Roles {
        match self {
            Self::QueueScorer
            | Self::KvCacheUtilizationScorer
            | Self::RunningRequestsSizeScorer
            | Self::LoraAffinityScorer
            | Self::PrefixCacheScorer { .. }
            | Self::TokenLoadScorer(_) => Roles::SCORER,
            Self::MaxScorePicker(_) | Self::RandomPicker(_) | Self::WeightedRandomPicker(_) => {
                Roles::PICKER
            }
            Self::SingleProfileHandler => Roles::PROFILE_HANDLER,
            Self::HeaderBasedTestingFilter | Self::PrefixCacheAffinityFilter(_) => Roles::FILTER,
            Self::ApproxPrefixCacheProducer(_) | Self::InflightLoadProducer => Roles::PRODUCER,
            Self::UtilizationDetector(_) | Self::ConcurrencyDetector(_) => {
                Roles::SATURATION_DETECTOR.union(Roles::FILTER)
            }
            Self::MetricsDataSource(_) => Roles::DATA_SOURCE,
            Self::CoreMetricsExtractor(_) => Roles::EXTRACTOR,
            Self::GlobalStrictFairnessPolicy
            | Self::RoundRobinFairnessPolicy
            | Self::VtcFairnessPolicy(_) => Roles::FAIRNESS,
            Self::FcfsOrderingPolicy | Self::EdfOrderingPolicy => Roles::ORDERING,
            Self::StaticUsageLimitPolicy(_) => Roles::USAGE_LIMIT,
            Self::OpenAiParser | Self::PassthroughParser => Roles::PARSER,
            Self::DestinationEndpointServedVerifier => Roles::RESPONSE,
        }
    }

    pub fn produces(&self) -> Option<DataKey> {
        match self {
            Self::ApproxPrefixCacheProducer(_) => Some(DataKey::PrefixCacheMatchInfo),
            Self::InflightLoadProducer => Some(DataKey::InFlightLoad),
            _ => None,
        }
    }

    pub fn consumes(&self) -> &'static [DataKey] {
        match self {
            Self::PrefixCacheScorer { .. } | Self::PrefixCacheAffinityFilter(_) => {
                &[DataKey::PrefixCacheMatchInfo]
            }
            Self::TokenLoadScorer(_) | Self::ConcurrencyDetector(_) => &[DataKey::InFlightLoad],
            _ => &[],
        }
    }

    /// Decodes `type` and `parameters` of `plugins[i]`. Unknown types, unknown parameters and
    /// out-of-range values are reported at `path`.
    pub fn decode(
        type_name: &str,
        params: Option<&Value>,
        path: &str,
        d: &mut Diagnostics,
    ) -> Option<Self> {
        let ppath = format!("{path}.parameters");
        let mut o = Obj::new(ppath, params, d);
        let spec = match type_name {
            "queue-scorer" => Self::QueueScorer,
            "kv-cache-utilization-scorer" => Self::KvCacheUtilizationScorer,
            "running-requests-size-scorer" => Self::RunningRequestsSizeScorer,
            "lora-affinity-scorer" => Self::LoraAffinityScorer,
            "prefix-cache-scorer" => {
                // Older GIE releases configured prefix matching on the scorer; those parameters
                // now belong to approx-prefix-cache-producer. Accept them so old configs load,
                // validate them, and say where they went.
                let legacy = if PREFIX_PRODUCER_KEYS.iter().any(|k| o.has(k)) {
                    d.warn(format!(
                        "{path}.parameters: prefix-cache-scorer takes no parameters any more; \
                         they belong to approx-prefix-cache-producer and are applied to the \
                         producer created for this scorer"
                    ));
                    Some(PrefixProducerParams::decode(&mut o, d))
                } else {
                    None
                };
                Self::PrefixCacheScorer { legacy }
            }
            "token-load-scorer" => Self::TokenLoadScorer(TokenLoadParams::decode(&mut o, d)),
            "max-score-picker" => Self::MaxScorePicker(PickerParams::decode(&mut o, d)),
            "random-picker" => Self::RandomPicker(PickerParams::decode(&mut o, d)),
            "weighted-random-picker" => Self::WeightedRandomPicker(PickerParams::decode(&mut o, d)),
            "single-profile-handler" => Self::SingleProfileHandler,
            "header-based-testing-filter" => Self::HeaderBasedTestingFilter,
            "prefix-cache-affinity-filter" => {
                Self::PrefixCacheAffinityFilter(AffinityFilterParams::decode(&mut o, d))
            }
            "approx-prefix-cache-producer" => {
                Self::ApproxPrefixCacheProducer(PrefixProducerParams::decode(&mut o, d))
            }
            "inflight-load-producer" => Self::InflightLoadProducer,
            "utilization-detector" => {
                Self::UtilizationDetector(UtilizationParams::decode(&mut o, d))
            }
            "concurrency-detector" => {
                Self::ConcurrencyDetector(ConcurrencyParams::decode(&mut o, d))
            }
            "metrics-data-source" => {
                Self::MetricsDataSource(MetricsSourceParams::decode(&mut o, d))
            }
            "core-metrics-extractor" => {
                Self::CoreMetricsExtractor(ExtractorParams::decode(&mut o, d))
            }
            "global-strict-fairness-policy" => Self::GlobalStrictFairnessPolicy,
            "round-robin-fairness-policy" => Self::RoundRobinFairnessPolicy,
            "vtc-fairness-policy" => Self::VtcFairnessPolicy(VtcParams::decode(&mut o, d)),
            "fcfs-ordering-policy" => Self::FcfsOrderingPolicy,
            "edf-ordering-policy" => Self::EdfOrderingPolicy,
            "static-usage-limit-policy" => {
                Self::StaticUsageLimitPolicy(UsageLimitParams::decode(&mut o, d))
            }
            "openai-parser" => Self::OpenAiParser,
            "passthrough-parser" => Self::PassthroughParser,
            "destination-endpoint-served-verifier" => Self::DestinationEndpointServedVerifier,
            other => {
                let msg = match UNSUPPORTED.iter().find(|(n, _)| *n == other) {
                    Some((_, why)) => format!("plugin type {other:?} is not supported: {why}"),
                    None => format!(
                        "unknown plugin type {other:?} (known types: {})",
                        KNOWN_TYPES.join(", ")
                    ),
                };
                d.error(format!("{path}.type"), msg);
                return None;
            }
        };
        o.finish(d);
        Some(spec)
    }

    /// The effective parameters, defaults filled in; `None` for types that take none.
    pub fn parameters(&self) -> Option<Value> {
        match self {
            Self::TokenLoadScorer(p) => Some(p.render()),
            Self::MaxScorePicker(p) | Self::RandomPicker(p) | Self::WeightedRandomPicker(p) => {
                Some(p.render())
            }
            Self::PrefixCacheAffinityFilter(p) => Some(p.render()),
            Self::ApproxPrefixCacheProducer(p) => Some(p.render()),
            Self::UtilizationDetector(p) => Some(p.render()),
            Self::ConcurrencyDetector(p) => Some(p.render()),
            Self::MetricsDataSource(p) => Some(p.render()),
            Self::CoreMetricsExtractor(p) => Some(p.render()),
            Self::VtcFairnessPolicy(p) => Some(p.render()),
            Self::StaticUsageLimitPolicy(p) => Some(p.render()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_type_decodes_with_defaults_and_round_trips_its_name() {
        for &t in KNOWN_TYPES {
            let mut d = Diagnostics::default();
            let spec = PluginSpec::decode(t, None, "plugins[0]", &mut d)
                .unwrap_or_else(|| panic!("{t}: {:?}", d.errors));
            assert!(d.errors.is_empty(), "{t}: {:?}", d.errors);
            assert_eq!(spec.type_name(), t);
            // Rendered parameters decode back to the same spec.
            let rendered = spec.parameters();
            let again = PluginSpec::decode(t, rendered.as_ref(), "p", &mut d).unwrap();
            assert!(d.errors.is_empty(), "{t}: {:?}", d.errors);
            assert_eq!(again, spec);
        }
    }

    #[test]
    fn unsupported_types_say_why() {
        let mut d = Diagnostics::default();
        assert!(PluginSpec::decode("latency-scorer", None, "plugins[3]", &mut d).is_none());
        assert_eq!(
            d.errors[0].to_string(),
            "plugins[3].type: plugin type \"latency-scorer\" is not supported: it needs GIE's \
             external latency-predictor sidecars"
        );
    }

    #[test]
    fn roles_compose() {
        let r = Roles::SATURATION_DETECTOR.union(Roles::FILTER);
        assert!(r.contains(Roles::FILTER));
        assert!(!r.contains(Roles::SCORER));
    }
}
