//! The closed set of plugin types, readable in one screen: each GIE type name, its Rust type
//! (whose file holds its typed parameters, their defaults and their decoding), the roles it can
//! fill and the per-request data it reads. Adding a plugin is one line here.

use std::sync::Arc;

use serde_json::Value;

use crate::datalayer::{ExtractorParams, MetricsSourceParams};
use crate::decode::{Diagnostics, NoParams, Obj, Params};
use crate::flowcontrol::{UsageLimitParams, VtcParams};
use crate::prefix::producer::PrefixProducerParams;
use crate::scheduling::plugins::*;
use crate::scheduling::{Filter, Picker, Scorer};
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
            DataKey::InFlightLoad => PluginSpec::InflightLoadProducer(NoParams),
        }
    }
}

/// Declares [`PluginSpec`] from one line per plugin type. Scorers, filters (detectors are filters
/// too) and pickers are built straight from their decoded parameters; the other roles are
/// assembled by the runtime.
macro_rules! registry {
    (
        scorers { $($sv:ident($st:ty) = $sn:literal $([$($sc:ident),*])?,)* }
        pickers { $($pv:ident($pt:ty) = $pn:literal,)* }
        filters { $($fv:ident($ft:ty) = $fname:literal $([$($fc:ident),*])?,)* }
        detectors { $($dv:ident($dt:ty) = $dn:literal $([$($dc:ident),*])?,)* }
        others { $($ov:ident($ot:ty) = $on:literal : $orole:ident,)* }
    ) => {
        /// A plugin type with its decoded parameters.
        #[derive(Debug, Clone, PartialEq)]
        pub enum PluginSpec {
            $($sv($st),)* $($pv($pt),)* $($fv($ft),)* $($dv($dt),)* $($ov($ot),)*
        }

        /// Every type name Switchyard accepts, in the order the docs list them.
        pub const KNOWN_TYPES: &[&str] = &[$($sn,)* $($pn,)* $($fname,)* $($dn,)* $($on,)*];

        impl PluginSpec {
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$sv(_) => $sn,)* $(Self::$fv(_) => $fname,)* $(Self::$dv(_) => $dn,)*
                    $(Self::$pv(_) => $pn,)* $(Self::$ov(_) => $on,)*
                }
            }

            pub fn roles(&self) -> Roles {
                match self {
                    $(Self::$sv(_) => Roles::SCORER,)*
                    $(Self::$fv(_) => Roles::FILTER,)*
                    $(Self::$dv(_) => Roles::SATURATION_DETECTOR.union(Roles::FILTER),)*
                    $(Self::$pv(_) => Roles::PICKER,)*
                    $(Self::$ov(_) => Roles::$orole,)*
                }
            }

            /// The per-request data the plugin reads.
            pub fn consumes(&self) -> &'static [DataKey] {
                match self {
                    $(Self::$sv(_) => &[$($(DataKey::$sc),*)?],)*
                    $(Self::$fv(_) => &[$($(DataKey::$fc),*)?],)*
                    $(Self::$dv(_) => &[$($(DataKey::$dc),*)?],)*
                    _ => &[],
                }
            }

            /// The effective parameters, defaults filled in; `None` for types that take none.
            pub fn parameters(&self) -> Option<Value> {
                match self {
                    $(Self::$sv(p) => p.render(),)* $(Self::$fv(p) => p.render(),)*
                    $(Self::$dv(p) => p.render(),)* $(Self::$pv(p) => p.render(),)*
                    $(Self::$ov(p) => p.render(),)*
                }
            }

            pub fn as_scorer(&self) -> Option<Arc<dyn Scorer>> {
                match self {
                    $(Self::$sv(p) => Some(Arc::new(p.clone())),)*
                    _ => None,
                }
            }

            pub fn as_filter(&self) -> Option<Arc<dyn Filter>> {
                match self {
                    $(Self::$fv(p) => Some(Arc::new(p.clone())),)*
                    $(Self::$dv(p) => Some(Arc::new(p.clone())),)*
                    _ => None,
                }
            }

            pub fn as_picker(&self) -> Option<Arc<dyn Picker>> {
                match self {
                    $(Self::$pv(p) => Some(Arc::new(p.clone())),)*
                    _ => None,
                }
            }

            fn decode_known(type_name: &str, o: &mut Obj<'_>, d: &mut Diagnostics) -> Option<Self> {
                Some(match type_name {
                    $($sn => Self::$sv(<$st>::decode(o, d)),)*
                    $($fname => Self::$fv(<$ft>::decode(o, d)),)*
                    $($dn => Self::$dv(<$dt>::decode(o, d)),)*
                    $($pn => Self::$pv(<$pt>::decode(o, d)),)*
                    $($on => Self::$ov(<$ot>::decode(o, d)),)*
                    _ => return None,
                })
            }
        }
    };
}

registry! {
    scorers {
        QueueScorer(QueueScorer) = "queue-scorer",
        KvCacheUtilizationScorer(KvCacheUtilizationScorer) = "kv-cache-utilization-scorer",
        RunningRequestsSizeScorer(RunningRequestsSizeScorer) = "running-requests-size-scorer",
        LoraAffinityScorer(LoraAffinityScorer) = "lora-affinity-scorer",
        PrefixCacheScorer(PrefixCacheScorer) = "prefix-cache-scorer" [PrefixCacheMatchInfo],
        TokenLoadScorer(TokenLoadScorer) = "token-load-scorer" [InFlightLoad],
    }
    pickers {
        MaxScorePicker(MaxScorePicker) = "max-score-picker",
        RandomPicker(RandomPicker) = "random-picker",
        WeightedRandomPicker(WeightedRandomPicker) = "weighted-random-picker",
    }
    filters {
        HeaderBasedTestingFilter(HeaderBasedTestingFilter) = "header-based-testing-filter",
        DecodeFilter(DecodeFilter) = "decode-filter",
        PrefixCacheAffinityFilter(PrefixCacheAffinityFilter) = "prefix-cache-affinity-filter" [PrefixCacheMatchInfo],
    }
    detectors {
        UtilizationDetector(UtilizationFilter) = "utilization-detector",
        ConcurrencyDetector(ConcurrencyFilter) = "concurrency-detector" [InFlightLoad],
    }
    others {
        SingleProfileHandler(SingleProfileHandler) = "single-profile-handler": PROFILE_HANDLER,
        ApproxPrefixCacheProducer(PrefixProducerParams) = "approx-prefix-cache-producer": PRODUCER,
        InflightLoadProducer(NoParams) = "inflight-load-producer": PRODUCER,
        MetricsDataSource(MetricsSourceParams) = "metrics-data-source": DATA_SOURCE,
        CoreMetricsExtractor(ExtractorParams) = "core-metrics-extractor": EXTRACTOR,
        GlobalStrictFairnessPolicy(NoParams) = "global-strict-fairness-policy": FAIRNESS,
        RoundRobinFairnessPolicy(NoParams) = "round-robin-fairness-policy": FAIRNESS,
        VtcFairnessPolicy(VtcParams) = "vtc-fairness-policy": FAIRNESS,
        FcfsOrderingPolicy(NoParams) = "fcfs-ordering-policy": ORDERING,
        EdfOrderingPolicy(NoParams) = "edf-ordering-policy": ORDERING,
        StaticUsageLimitPolicy(UsageLimitParams) = "static-usage-limit-policy": USAGE_LIMIT,
        OpenAiParser(NoParams) = "openai-parser": PARSER,
        PassthroughParser(NoParams) = "passthrough-parser": PARSER,
        DestinationEndpointServedVerifier(NoParams) = "destination-endpoint-served-verifier": RESPONSE,
    }
}

const LATENCY: &str =
    "latency-predictor plugins are not supported yet (they need the external latency predictor)";
const PD: &str = "prefill/decode disaggregation is not supported yet";
const LLM_D: &str = "this llm-d-router plugin is not supported yet";

/// GIE and llm-d-router types Switchyard does not implement (yet), with the reason given to the
/// user.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("latency-scorer", LATENCY),
    ("predicted-latency-producer", LATENCY),
    ("slo-headroom-tier-filter", LATENCY),
    ("latency-slo-admitter", LATENCY),
    ("prefill-filter", PD),
    ("encode-filter", PD),
    ("disagg-profile-handler", PD),
    ("pd-profile-handler", PD),
    ("disagg-headers-handler", PD),
    ("prefill-header-handler", PD),
    ("prefix-based-pd-decider", PD),
    ("always-disagg-pd-decider", PD),
    ("always-disagg-multimodal-decider", PD),
    ("data-parallel-profile-handler", PD),
    (
        "request-attribute-reporter",
        "it is not supported yet (CEL expressions over the response usage)",
    ),
    (
        "session-affinity-scorer",
        "session affinity is not supported yet (the response must carry the session token)",
    ),
    (
        "session-affinity-filter",
        "session affinity is not supported yet (the response must carry the session token)",
    ),
    (
        "slo-deadline-ordering-policy",
        "it is not supported yet; use edf-ordering-policy (deadline = arrival + TTL)",
    ),
    (
        "k8s-notification-source",
        "notification sources are not supported yet (no extractor consumes them)",
    ),
    (
        "endpoint-notification-source",
        "notification sources are not supported yet (no extractor consumes them)",
    ),
    (
        "vllmgrpc-parser",
        "Switchyard parses OpenAI HTTP bodies only (openai-parser, passthrough-parser)",
    ),
    ("anthropic-parser", LLM_D),
    ("vllmhttp-parser", LLM_D),
    ("vertexai-parser", LLM_D),
    ("active-request-scorer", LLM_D),
    ("load-aware-scorer", LLM_D),
    ("no-hit-lru-scorer", LLM_D),
    ("precise-prefix-cache-scorer", LLM_D),
    ("precise-prefix-cache-producer", LLM_D),
    ("token-producer", LLM_D),
    ("tokenizer", LLM_D),
    ("label-selector-filter", LLM_D),
    ("by-label", LLM_D),
    ("by-label-selector", LLM_D),
    ("utilization-filter", LLM_D),
    ("header-profile-handler", LLM_D),
    ("context-length-aware", LLM_D),
    ("file-discovery", LLM_D),
];

impl PluginSpec {
    /// The per-request data the plugin produces.
    pub fn produces(&self) -> Option<DataKey> {
        match self {
            Self::ApproxPrefixCacheProducer(_) => Some(DataKey::PrefixCacheMatchInfo),
            Self::InflightLoadProducer(_) => Some(DataKey::InFlightLoad),
            _ => None,
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
        let mut o = Obj::new(format!("{path}.parameters"), params, d);
        let Some(spec) = Self::decode_known(type_name, &mut o, d) else {
            let msg = match UNSUPPORTED.iter().find(|(n, _)| *n == type_name) {
                Some((_, why)) => format!("plugin type {type_name:?} is not supported: {why}"),
                None => format!(
                    "unknown plugin type {type_name:?} (known types: {})",
                    KNOWN_TYPES.join(", ")
                ),
            };
            d.error(format!("{path}.type"), msg);
            return None;
        };
        o.finish(d);
        Some(spec)
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
            "plugins[3].type: plugin type \"latency-scorer\" is not supported: latency-predictor \
             plugins are not supported yet (they need the external latency predictor)"
        );
    }

    #[test]
    fn roles_compose() {
        let r = Roles::SATURATION_DETECTOR.union(Roles::FILTER);
        assert!(r.contains(Roles::FILTER));
        assert!(!r.contains(Roles::SCORER));
    }
}
