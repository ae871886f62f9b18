//! Decoding an `EndpointPickerConfig` document and applying GIE's system defaults
//! (gie-epp.md §2.1–2.2). Every problem is collected with its field path; loading fails with all
//! of them at once.

use std::collections::HashSet;

use serde_json::Value;

use super::model::*;
use super::registry::{DataKey, PluginSpec, Roles};
use crate::datalayer::{ExtractorParams, MetricsSourceParams};
use crate::decode::{ConfigError, ConfigErrors, Diagnostics, NoParams, Obj, index, kind, show};
use crate::flowcontrol::UsageLimitParams;
use crate::scheduling::plugins::{MaxScorePicker, SingleProfileHandler, UtilizationFilter};

/// The apiVersions accepted: GIE's, and llm-d's (where the Go EPP moved).
pub const API_VERSIONS: &[&str] = &[
    "inference.networking.x-k8s.io/v1alpha1",
    "llm-d.ai/v1alpha1",
];
pub const KIND: &str = "EndpointPickerConfig";

/// The configuration used when none is given: GIE's `loadDefaultConfig()`.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/default.yaml");

/// Parses and validates a YAML (or JSON) document.
pub fn load_str(text: &str) -> Result<EndpointPickerConfig, ConfigErrors> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("not a valid YAML document: {e}"),
        }])
    })?;
    if value.is_null() {
        return Err(ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: "the document is empty".into(),
        }]));
    }
    let (value, defaulted) = with_default_plugins(value);
    decode(&value, defaulted)
}

/// GIE fills in defaults when a document has no `plugins` (e.g. only `featureGates:
/// [flowControl]`): with neither `plugins` nor `schedulingProfiles`, the built-in plugins and
/// profile are used, and the rest of the document applies to them.
fn with_default_plugins(mut value: Value) -> (Value, bool) {
    let Value::Object(map) = &mut value else {
        return (value, false);
    };
    if map.contains_key("plugins") || map.contains_key("schedulingProfiles") {
        return (value, false);
    }
    let default: Value =
        serde_saphyr::from_str(DEFAULT_CONFIG_YAML).expect("the embedded default config is valid");
    for key in ["plugins", "schedulingProfiles"] {
        map.insert(key.to_string(), default[key].clone());
    }
    (value, true)
}

/// The built-in default configuration.
pub fn default_config() -> EndpointPickerConfig {
    load_str(DEFAULT_CONFIG_YAML).expect("the embedded default config is valid")
}

/// A plugin reference as written, with where it was written.
struct Ref {
    name: String,
    path: String,
}

struct Loader {
    d: Diagnostics,
    plugins: Vec<PluginInstance>,
    /// Names of plugins that failed to decode: references to them are not reported again.
    broken: HashSet<String>,
}

impl Loader {
    fn find(&self, name: &str) -> Option<usize> {
        self.plugins.iter().position(|p| p.name == name)
    }

    /// Resolves a reference that must have `role`.
    fn resolve(&mut self, r: &Ref, role: Roles, what: &str) -> Option<usize> {
        match self.find(&r.name) {
            Some(i) if self.plugins[i].spec.roles().contains(role) => Some(i),
            Some(i) => {
                let t = self.plugins[i].spec.type_name();
                self.d.error(
                    &r.path,
                    format!("plugin {:?} (type {t}) is not a {what}", r.name),
                );
                None
            }
            None if self.broken.contains(&r.name) => None,
            None => {
                let mut defined: Vec<&str> = self.plugins.iter().map(|p| p.name.as_str()).collect();
                defined.sort_unstable();
                self.d.error(
                    &r.path,
                    format!(
                        "no plugin named {:?} (defined: {})",
                        r.name,
                        if defined.is_empty() {
                            "none".to_string()
                        } else {
                            defined.join(", ")
                        }
                    ),
                );
                None
            }
        }
    }

    /// Adds a plugin created by a system default, named after its type unless that name is taken.
    fn add_default(&mut self, spec: PluginSpec) -> usize {
        let base = spec.type_name();
        let name = if self.find(base).is_none() {
            base.to_string()
        } else {
            format!("{base}-default")
        };
        self.plugins.push(PluginInstance {
            name,
            spec,
            origin: Origin::Default,
        });
        self.plugins.len() - 1
    }

    /// The plugin named `name` when it has `role`, else a new default instance of `spec`.
    fn named_or_default(&mut self, name: &str, role: Roles, spec: PluginSpec) -> usize {
        match self.find(name) {
            Some(i) if self.plugins[i].spec.roles().contains(role) => i,
            _ => self.add_default(spec),
        }
    }
}

fn read_ref(o: &mut Obj<'_>, key: &'static str, d: &mut Diagnostics) -> Option<Ref> {
    let path = o.at(key);
    let name = o.string(key, d)?;
    if name.is_empty() {
        d.error(&path, "must not be empty");
        return None;
    }
    Some(Ref { name, path })
}

/// `{pluginRef: name}` sections (`saturationDetector`, `parser`).
fn read_ref_section(top: &mut Obj<'_>, key: &'static str, d: &mut Diagnostics) -> Option<Ref> {
    let v = top.get(key)?;
    let mut o = Obj::new(top.at(key), Some(v), d);
    let r = read_ref(&mut o, "pluginRef", d);
    if r.is_none() && !o.has("pluginRef") {
        d.error(o.at("pluginRef"), "required");
    }
    o.finish(d);
    r
}

struct RawProfile {
    name: String,
    path: String,
    refs: Vec<(Ref, Option<f64>)>,
}

struct RawBand {
    path: String,
    priority: Option<i32>,
    max_bytes: Option<u64>,
    max_requests: Option<u64>,
    ordering: Option<Ref>,
    fairness: Option<Ref>,
}

struct RawFlowControl {
    max_bytes: u64,
    max_requests: u64,
    ttl: Option<std::time::Duration>,
    default_band: Option<RawBand>,
    default_negative_band: Option<RawBand>,
    bands: Vec<RawBand>,
    usage_limit: Option<Ref>,
    saturation_detector: Option<Ref>,
    /// Whether anything but the saturation detector is set (ignored without the gate).
    settings: bool,
    /// llm-d-router v0.10's bounded defaults (TTL 60 s, 5,000 requests per band).
    llm_d: bool,
}

fn decode(value: &Value, defaulted: bool) -> Result<EndpointPickerConfig, ConfigErrors> {
    let mut d = Diagnostics::default();
    if !value.is_object() {
        d.error("", format!("must be a mapping, got {}", kind(value)));
        return Err(ConfigErrors(d.errors));
    }
    let mut top = Obj::new("", Some(value), &mut d);
    if defaulted {
        d.warn(
            "no plugins given: using the default plugins and profile (queue-scorer ×2, \
             kv-cache-utilization-scorer ×2, prefix-cache-scorer ×3)",
        );
    }
    let llm_d = value.get("apiVersion").and_then(Value::as_str) == Some(API_VERSIONS[1]);

    // --- header ---
    let api_version = top.string("apiVersion", &mut d).unwrap_or_default();
    if !top.has("apiVersion") {
        d.error(
            "apiVersion",
            format!("required (one of: {})", API_VERSIONS.join(", ")),
        );
    } else if !api_version.is_empty() && !API_VERSIONS.contains(&api_version.as_str()) {
        d.error(
            "apiVersion",
            format!(
                "must be one of {}, got {api_version:?}",
                API_VERSIONS.join(", ")
            ),
        );
    }
    match top.string("kind", &mut d) {
        Some(k) if k == KIND => {}
        Some(k) => d.error("kind", format!("must be {KIND:?}, got {k:?}")),
        None if !top.has("kind") => d.error("kind", format!("required ({KIND:?})")),
        None => {}
    }

    // --- featureGates ---
    let mut gates = FeatureGates::default();
    if let Some(items) = top.list("featureGates", &mut d) {
        for (i, g) in items.iter().enumerate() {
            // llm-d-router: `gate` or `gate=<bool>`.
            let (name, on) = match g.as_str().map(|s| s.split_once('=')) {
                Some(Some((n, v))) => match parse_go_bool(v) {
                    Some(on) => (Some(n.trim()), on),
                    None => {
                        d.error(
                            index("featureGates", i),
                            format!("{v:?} is not a valid value for the feature gate {n:?}"),
                        );
                        continue;
                    }
                },
                Some(None) => (g.as_str(), true),
                None => (None, true),
            };
            match name {
                Some("dataLayer") => gates.data_layer = on,
                Some("enableLegacyMetrics") => gates.enable_legacy_metrics = on,
                Some("flowControl") => gates.flow_control = on,
                Some("haPopulateNonLeaderDatastore") => {
                    if on {
                        d.warn(
                            "featureGates: haPopulateNonLeaderDatastore: Switchyard's followers do \
                             not watch Kubernetes; they start routing when they become leader",
                        );
                    }
                }
                Some(other) => d.error(
                    index("featureGates", i),
                    format!(
                        "unknown feature gate {other:?} (known: {})",
                        FeatureGates::KNOWN.join(", ")
                    ),
                ),
                None => d.error(
                    index("featureGates", i),
                    format!("must be a string, got {}", show(g)),
                ),
            }
        }
    }

    // --- plugins ---
    let mut l = Loader {
        d,
        plugins: Vec::new(),
        broken: HashSet::new(),
    };
    let mut first_path: Vec<(String, String)> = Vec::new(); // name → path of its definition
    if !top.has("plugins") {
        l.d.error("plugins", "required (a list of {name?, type, parameters?})");
    }
    if let Some(items) = top.list("plugins", &mut l.d) {
        for (i, item) in items.iter().enumerate() {
            let path = index("plugins", i);
            // Shorthand: a bare type name stands for `{type: <name>}`.
            let expanded;
            let item = match item {
                Value::String(t) => {
                    expanded = serde_json::json!({ "type": t });
                    &expanded
                }
                other => other,
            };
            let mut o = Obj::new(path.clone(), Some(item), &mut l.d);
            let type_name = o.string("type", &mut l.d);
            let name = o.string("name", &mut l.d);
            let params = o.get("parameters");
            o.finish(&mut l.d);
            let Some(type_name) = type_name else {
                if !matches!(item, Value::Object(m) if m.contains_key("type")) {
                    l.d.error(format!("{path}.type"), "required");
                }
                if let Some(n) = name {
                    l.broken.insert(n);
                }
                continue;
            };
            // GIE's static default: the name is the type unless given.
            let name = match name {
                Some(n) if !n.is_empty() => n,
                _ => type_name.clone(),
            };
            if let Some((_, first)) = first_path.iter().find(|(n, _)| *n == name) {
                l.d.error(
                    format!("{path}.name"),
                    format!("duplicate plugin name {name:?} (first defined at {first})"),
                );
                continue;
            }
            first_path.push((name.clone(), path.clone()));
            match PluginSpec::decode(&type_name, params, &path, &mut l.d) {
                Some(spec) => l.plugins.push(PluginInstance {
                    name,
                    spec,
                    origin: Origin::User(i),
                }),
                None => {
                    l.broken.insert(name);
                }
            }
        }
    }
    let user_count = l.plugins.len();

    // --- schedulingProfiles (shape) ---
    let mut raw_profiles: Option<Vec<RawProfile>> = None;
    if let Some(items) = top.list("schedulingProfiles", &mut l.d) {
        let mut list = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = index("schedulingProfiles", i);
            let mut o = Obj::new(path.clone(), Some(item), &mut l.d);
            let name = o.string("name", &mut l.d);
            let mut refs = Vec::new();
            if !o.has("plugins") {
                l.d.error(o.at("plugins"), "required (a list of {pluginRef, weight?})");
            }
            if let Some(entries) = o.list("plugins", &mut l.d) {
                for (j, e) in entries.iter().enumerate() {
                    let epath = index(&o.at("plugins"), j);
                    let mut eo = Obj::new(epath.clone(), Some(e), &mut l.d);
                    let r = read_ref(&mut eo, "pluginRef", &mut l.d);
                    if !eo.has("pluginRef") {
                        l.d.error(eo.at("pluginRef"), "required");
                    }
                    let weight = eo.f64("weight", &mut l.d);
                    eo.finish(&mut l.d);
                    if let Some(r) = r {
                        refs.push((r, weight));
                    }
                }
            }
            o.finish(&mut l.d);
            match name {
                Some(n) if !n.is_empty() => {
                    if let Some(prev) = list.iter().position(|p: &RawProfile| p.name == n) {
                        l.d.error(
                            format!("{path}.name"),
                            format!(
                                "duplicate profile name {n:?} (first defined at schedulingProfiles[{prev}])"
                            ),
                        );
                    } else {
                        list.push(RawProfile {
                            name: n,
                            path,
                            refs,
                        });
                    }
                }
                Some(_) => l.d.error(format!("{path}.name"), "must not be empty"),
                None if !o_has_key(item, "name") => l.d.error(format!("{path}.name"), "required"),
                None => {}
            }
        }
        raw_profiles = Some(list);
    }

    // --- single-reference sections ---
    let top_detector_ref = read_ref_section(&mut top, "saturationDetector", &mut l.d);
    let top_parser_ref = read_ref_section(&mut top, "parser", &mut l.d);
    let mut parser_refs: Vec<Ref> = Vec::new();
    if let Some(v) = top.get("requestHandler") {
        let mut o = Obj::new("requestHandler", Some(v), &mut l.d);
        if let Some(items) = o.list("parsers", &mut l.d) {
            for (i, item) in items.iter().enumerate() {
                let mut po = Obj::new(index("requestHandler.parsers", i), Some(item), &mut l.d);
                match read_ref(&mut po, "pluginRef", &mut l.d) {
                    Some(r) => parser_refs.push(r),
                    None if !po.has("pluginRef") => l.d.error(po.at("pluginRef"), "required"),
                    None => {}
                }
                po.finish(&mut l.d);
            }
        }
        o.finish(&mut l.d);
    }
    // llm-d-router: requestHandler.parsers replaces the deprecated top-level parser; when both
    // are set the new field is used.
    if top_parser_ref.is_some() && !parser_refs.is_empty() {
        l.d.warn("parser: ignored because requestHandler.parsers is set");
    }
    if parser_refs.len() > 1 {
        let names: Vec<&str> = parser_refs.iter().map(|r| r.name.as_str()).collect();
        l.d.error(
            "requestHandler.parsers",
            format!(
                "Switchyard runs one parser for every request, got {} ({}); choosing a parser \
                 by request path is not supported yet",
                names.len(),
                names.join(", ")
            ),
        );
    }
    let parser_ref = parser_refs.into_iter().next().or(top_parser_ref);

    // --- dataLayer (shape) ---
    let mut raw_sources: Option<Vec<(Ref, Vec<Ref>)>> = None;
    let mut inject_defaults: Option<bool> = None;
    if let Some(v) = top.get("dataLayer") {
        let mut o = Obj::new("dataLayer", Some(v), &mut l.d);
        inject_defaults = o.bool("injectDefaults", &mut l.d);
        for (key, what) in [
            (
                "discovery",
                "endpoint discovery plugins are not supported yet; use --static-endpoints-file, \
                 --pool-name or --endpoint-selector",
            ),
            (
                "crossReplicaSyncerPluginRef",
                "cross-replica state sync is not supported yet",
            ),
            (
                "crossReplicaSyncInterval",
                "cross-replica state sync is not supported yet",
            ),
        ] {
            if o.get(key).is_some() {
                l.d.error(o.at(key), what);
            }
        }
        let mut sources = Vec::new();
        if let Some(items) = o.list("sources", &mut l.d) {
            for (i, item) in items.iter().enumerate() {
                let mut so = Obj::new(index("dataLayer.sources", i), Some(item), &mut l.d);
                let r = read_ref(&mut so, "pluginRef", &mut l.d);
                if !so.has("pluginRef") {
                    l.d.error(so.at("pluginRef"), "required");
                }
                let mut extractors = Vec::new();
                if let Some(exs) = so.list("extractors", &mut l.d) {
                    for (j, e) in exs.iter().enumerate() {
                        let mut eo = Obj::new(index(&so.at("extractors"), j), Some(e), &mut l.d);
                        if let Some(er) = read_ref(&mut eo, "pluginRef", &mut l.d) {
                            extractors.push(er);
                        } else if !eo.has("pluginRef") {
                            l.d.error(eo.at("pluginRef"), "required");
                        }
                        eo.finish(&mut l.d);
                    }
                }
                so.finish(&mut l.d);
                if let Some(r) = r {
                    sources.push((r, extractors));
                }
            }
        }
        o.finish(&mut l.d);
        raw_sources = Some(sources);
    }

    // --- flowControl (shape) ---
    let raw_fc = top
        .get("flowControl")
        .map(|v| decode_flow_control(v, llm_d, &mut l.d));
    // llm-d-router: flowControl.saturationDetector replaces the deprecated top-level one and
    // wins when both are set; it applies with or without the flowControl gate.
    let fc_detector_ref = raw_fc.as_ref().and_then(|f| f.saturation_detector.as_ref());
    if top_detector_ref.is_some() && fc_detector_ref.is_some() {
        l.d.warn("saturationDetector: ignored because flowControl.saturationDetector is set");
    }
    let detector_ref = fc_detector_ref
        .map(|r| Ref {
            name: r.name.clone(),
            path: r.path.clone(),
        })
        .or(top_detector_ref);

    top.finish(&mut l.d);

    // ===== system defaults and reference resolution =====

    // Profiles: given, or one "default" profile holding every filter, scorer and picker.
    let raw_profiles = raw_profiles.unwrap_or_else(|| {
        vec![RawProfile {
            name: "default".into(),
            path: "schedulingProfiles".into(),
            refs: l.plugins[..user_count]
                .iter()
                .filter(|p| {
                    let r = p.spec.roles();
                    r.contains(Roles::FILTER)
                        || r.contains(Roles::SCORER)
                        || r.contains(Roles::PICKER)
                })
                .map(|p| {
                    (
                        Ref {
                            name: p.name.clone(),
                            path: "schedulingProfiles".into(),
                        },
                        None,
                    )
                })
                .collect(),
        }]
    });
    let mut profiles: Vec<(ProfileSpecDraft, String)> = Vec::new();
    for rp in &raw_profiles {
        let mut draft = ProfileSpecDraft {
            name: rp.name.clone(),
            filters: Vec::new(),
            scorers: Vec::new(),
            picker: None,
        };
        let mut seen: Vec<usize> = Vec::new();
        for (r, weight) in &rp.refs {
            let Some(i) = l.find(&r.name) else {
                if !l.broken.contains(&r.name) {
                    let _ = l.resolve(r, Roles::FILTER, "filter, scorer or picker");
                }
                continue;
            };
            if seen.contains(&i) {
                l.d.error(
                    &r.path,
                    format!(
                        "plugin {:?} is referenced twice in profile {:?}",
                        r.name, rp.name
                    ),
                );
                continue;
            }
            seen.push(i);
            let spec = &l.plugins[i].spec;
            let roles = spec.roles();
            let type_name = spec.type_name();
            let mut slotted = false;
            if roles.contains(Roles::FILTER) {
                draft.filters.push(i);
                slotted = true;
            }
            if roles.contains(Roles::SCORER) {
                draft.scorers.push((i, weight.unwrap_or(1.0)));
                slotted = true;
            } else if weight.is_some() {
                l.d.warn(format!(
                    "{}: weight is ignored because {:?} (type {type_name}) is not a scorer",
                    r.path, r.name
                ));
            }
            if roles.contains(Roles::PICKER) {
                if let Some(first) = draft.picker {
                    let first = l.plugins[first].name.clone();
                    l.d.error(
                        &r.path,
                        format!(
                            "profile {:?} may have only one picker, but has {first:?} and {:?}",
                            rp.name, r.name
                        ),
                    );
                } else {
                    draft.picker = Some(i);
                }
                slotted = true;
            }
            if !slotted {
                // GIE's profile skips plugins that fill no scheduling slot (upstream's own
                // configs list parsers and producers in profiles).
                l.d.warn(format!(
                    "{}: plugin {:?} (type {type_name}) is not a filter, scorer or picker; it is \
                     skipped in profile {:?}",
                    r.path, r.name, rp.name
                ));
            }
        }
        profiles.push((draft, rp.path.clone()));
    }

    // Pickers: a profile without one gets the first picker defined, or max-score-picker.
    if profiles.iter().any(|(p, _)| p.picker.is_none()) {
        let first = l.plugins[..user_count]
            .iter()
            .position(|p| p.spec.roles().contains(Roles::PICKER));
        let picker = first.unwrap_or_else(|| {
            l.add_default(PluginSpec::MaxScorePicker(MaxScorePicker::default()))
        });
        for (p, _) in &mut profiles {
            p.picker.get_or_insert(picker);
        }
    }

    // Profile handler: at most one; single-profile-handler is added for one profile.
    let handlers: Vec<usize> = (0..user_count)
        .filter(|&i| l.plugins[i].spec.roles().contains(Roles::PROFILE_HANDLER))
        .collect();
    let profile_handler = match handlers.as_slice() {
        [] => {
            if profiles.len() > 1 {
                l.d.error(
                    "schedulingProfiles",
                    format!(
                        "{} profiles need a profile handler plugin, and single-profile-handler supports exactly one profile",
                        profiles.len()
                    ),
                );
            }
            l.add_default(PluginSpec::SingleProfileHandler(SingleProfileHandler))
        }
        [h, rest @ ..] => {
            for &other in rest {
                let (a, b) = (l.plugins[*h].name.clone(), l.plugins[other].name.clone());
                l.d.error(
                    origin_path(&l.plugins[other]),
                    format!("at most one profile handler may be defined, got {a:?} and {b:?}"),
                );
            }
            if matches!(l.plugins[*h].spec, PluginSpec::SingleProfileHandler(_))
                && profiles.len() > 1
            {
                l.d.error(
                    "schedulingProfiles",
                    format!(
                        "single-profile-handler supports exactly one profile, got {}",
                        profiles.len()
                    ),
                );
            }
            *h
        }
    };

    // Data producers a consumer needs and nothing produces are created, as in GIE.
    for key in [DataKey::PrefixCacheMatchInfo, DataKey::InFlightLoad] {
        let consumed = l.plugins.iter().any(|p| p.spec.consumes().contains(&key));
        let produced = l.plugins.iter().any(|p| p.spec.produces() == Some(key));
        if consumed && !produced {
            let legacy = l.plugins.iter().find_map(|p| match &p.spec {
                PluginSpec::PrefixCacheScorer(s) => s.legacy_producer_params,
                _ => None,
            });
            let spec = match (key, legacy) {
                (DataKey::PrefixCacheMatchInfo, Some(params)) => {
                    PluginSpec::ApproxPrefixCacheProducer(params)
                }
                _ => key.default_producer(),
            };
            l.add_default(spec);
        }
    }

    // Saturation detector and parser: referenced, or GIE's defaults.
    let saturation_detector = match &detector_ref {
        // llm-d-router creates the default detector when it is referenced by its type name
        // without being defined.
        Some(r) if r.name == "utilization-detector" && l.find(&r.name).is_none() => {
            l.add_default(PluginSpec::UtilizationDetector(UtilizationFilter::default()))
        }
        Some(r) => l
            .resolve(r, Roles::SATURATION_DETECTOR, "saturation detector")
            .unwrap_or(usize::MAX),
        None => l.named_or_default(
            "utilization-detector",
            Roles::SATURATION_DETECTOR,
            PluginSpec::UtilizationDetector(UtilizationFilter::default()),
        ),
    };
    let parser = match &parser_ref {
        // llm-d-router creates a parser referenced by its type name without being defined.
        Some(r) if l.find(&r.name).is_none() && !l.broken.contains(&r.name) => {
            match PluginSpec::decode(&r.name, None, &r.path, &mut Diagnostics::default()) {
                Some(spec) if spec.roles().contains(Roles::PARSER) => l.add_default(spec),
                _ => l.resolve(r, Roles::PARSER, "parser").unwrap_or(usize::MAX),
            }
        }
        Some(r) => l.resolve(r, Roles::PARSER, "parser").unwrap_or(usize::MAX),
        None => l.named_or_default(
            "openai-parser",
            Roles::PARSER,
            PluginSpec::OpenAiParser(NoParams),
        ),
    };

    // Flow-control policies GIE always registers.
    let fcfs = l.named_or_default(
        "fcfs-ordering-policy",
        Roles::ORDERING,
        PluginSpec::FcfsOrderingPolicy(NoParams),
    );
    let strict = l.named_or_default(
        "global-strict-fairness-policy",
        Roles::FAIRNESS,
        PluginSpec::GlobalStrictFairnessPolicy(NoParams),
    );
    let usage = l.named_or_default(
        "static-usage-limit-policy",
        Roles::USAGE_LIMIT,
        PluginSpec::StaticUsageLimitPolicy(UsageLimitParams::default()),
    );

    // Data layer: given, explicitly disabled, or the default scrape source.
    let data_layer = match raw_sources {
        Some(sources) if sources.is_empty() && inject_defaults != Some(true) => {
            l.d.warn("dataLayer.sources is empty: endpoint metrics collection is disabled");
            None
        }
        Some(sources) => {
            let mut list = Vec::new();
            for (r, exs) in &sources {
                let src = l.resolve(r, Roles::DATA_SOURCE, "data source");
                let extractors: Vec<usize> = exs
                    .iter()
                    .filter_map(|e| l.resolve(e, Roles::EXTRACTOR, "metrics extractor"))
                    .collect();
                if let Some(source) = src {
                    list.push(DataSourceSpec { source, extractors });
                }
            }
            // llm-d-router's injectDefaults: true adds the default scrape source unless one is
            // configured.
            let has_metrics = list
                .iter()
                .any(|s| matches!(l.plugins[s.source].spec, PluginSpec::MetricsDataSource(_)));
            if inject_defaults == Some(true) && !has_metrics {
                let source = l.named_or_default(
                    "metrics-data-source",
                    Roles::DATA_SOURCE,
                    PluginSpec::MetricsDataSource(MetricsSourceParams::default()),
                );
                let extractor = l.named_or_default(
                    "core-metrics-extractor",
                    Roles::EXTRACTOR,
                    PluginSpec::CoreMetricsExtractor(ExtractorParams::default()),
                );
                list.push(DataSourceSpec {
                    source,
                    extractors: vec![extractor],
                });
            }
            Some(list)
        }
        None => {
            if gates.enable_legacy_metrics {
                l.d.warn(
                    "featureGates: enableLegacyMetrics has no separate code path in Switchyard; \
                     metrics are collected by metrics-data-source with core-metrics-extractor",
                );
            }
            let source = l.named_or_default(
                "metrics-data-source",
                Roles::DATA_SOURCE,
                PluginSpec::MetricsDataSource(MetricsSourceParams::default()),
            );
            let extractor = l.named_or_default(
                "core-metrics-extractor",
                Roles::EXTRACTOR,
                PluginSpec::CoreMetricsExtractor(ExtractorParams::default()),
            );
            Some(vec![DataSourceSpec {
                source,
                extractors: vec![extractor],
            }])
        }
    };

    // Flow control: validated always, in force only behind its gate.
    let flow_control = match raw_fc {
        Some(raw) => {
            let settings = raw.settings;
            let spec = resolve_flow_control(&mut l, raw, fcfs, strict, usage);
            if gates.flow_control {
                spec
            } else {
                if settings {
                    l.d.warn(
                        "flowControl: its settings (other than saturationDetector) are ignored \
                         because the flowControl feature gate is not enabled",
                    );
                }
                None
            }
        }
        None if gates.flow_control => {
            let mut band = default_band(fcfs, strict);
            if llm_d {
                band.max_requests = LLM_D_DEFAULT_BAND_REQUESTS;
            }
            Some(FlowControlSpec {
                max_bytes: 0,
                max_requests: 0,
                default_request_ttl: llm_d.then_some(LLM_D_DEFAULT_TTL),
                default_band: band,
                default_negative_band: None,
                bands: Vec::new(),
                usage_limit_policy: usage,
            })
        }
        None => None,
    };

    if !l.d.errors.is_empty() {
        return Err(ConfigErrors(l.d.errors));
    }
    Ok(EndpointPickerConfig {
        api_version,
        feature_gates: gates,
        profiles: profiles
            .into_iter()
            .map(|(p, _)| ProfileSpec {
                name: p.name,
                filters: p.filters,
                scorers: p.scorers,
                picker: p.picker.expect("every profile got a picker"),
            })
            .collect(),
        plugins: l.plugins,
        profile_handler,
        saturation_detector,
        parser,
        data_layer,
        flow_control,
        warnings: l.d.warnings,
    })
}

struct ProfileSpecDraft {
    name: String,
    filters: Vec<usize>,
    scorers: Vec<(usize, f64)>,
    picker: Option<usize>,
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

fn o_has_key(v: &Value, key: &str) -> bool {
    matches!(v, Value::Object(m) if m.contains_key(key))
}

fn origin_path(p: &PluginInstance) -> String {
    match p.origin {
        Origin::User(i) => format!("plugins[{i}].type"),
        Origin::Default => "plugins".into(),
    }
}

fn default_band(fcfs: usize, strict: usize) -> BandSpec {
    BandSpec {
        priority: None,
        max_bytes: DEFAULT_BAND_MAX_BYTES,
        max_requests: 0,
        ordering_policy: fcfs,
        fairness_policy: strict,
    }
}

fn decode_band(path: String, v: &Value, with_priority: bool, d: &mut Diagnostics) -> RawBand {
    let mut o = Obj::new(path.clone(), Some(v), d);
    let priority = if with_priority {
        let p = o.i64("priority", d);
        if !o.has("priority") {
            d.error(o.at("priority"), "required");
        }
        p.and_then(|p| match i32::try_from(p) {
            Ok(p) => Some(p),
            Err(_) => {
                d.error(o.at("priority"), format!("must fit in 32 bits, got {p}"));
                None
            }
        })
    } else {
        None
    };
    let band = RawBand {
        priority,
        max_bytes: o.quantity("maxBytes", d),
        max_requests: o.quantity("maxRequests", d),
        ordering: read_ref(&mut o, "orderingPolicyRef", d),
        fairness: read_ref(&mut o, "fairnessPolicyRef", d),
        path,
    };
    o.finish(d);
    band
}

fn decode_flow_control(v: &Value, llm_d: bool, d: &mut Diagnostics) -> RawFlowControl {
    let mut o = Obj::new("flowControl", Some(v), d);
    let max_bytes = o.quantity("maxBytes", d).unwrap_or(0);
    let max_requests = o.quantity("maxRequests", d).unwrap_or(0);
    let ttl = match o.duration("defaultRequestTTL", d) {
        Some(t) => Some(t).filter(|t| !t.is_zero()),
        // llm-d-router v0.10: queueing is bounded by default.
        None if llm_d => Some(LLM_D_DEFAULT_TTL),
        None => None,
    };
    let default_band = o
        .get("defaultPriorityBand")
        .map(|b| decode_band("flowControl.defaultPriorityBand".into(), b, false, d));
    let default_negative_band = o.get("defaultNegativePriorityBand").map(|b| {
        decode_band(
            "flowControl.defaultNegativePriorityBand".into(),
            b,
            false,
            d,
        )
    });
    let mut bands: Vec<RawBand> = Vec::new();
    if let Some(items) = o.list("priorityBands", d) {
        for (i, item) in items.iter().enumerate() {
            let band = decode_band(index("flowControl.priorityBands", i), item, true, d);
            if let Some(p) = band.priority
                && let Some(first) = bands.iter().find(|b| b.priority == Some(p))
            {
                d.error(
                    format!("{}.priority", band.path),
                    format!("duplicate priority {p} (also {})", first.path),
                );
                continue;
            }
            bands.push(band);
        }
    }
    let usage_limit = read_ref(&mut o, "usageLimitPolicyPluginRef", d);
    let saturation_detector = o.get("saturationDetector").map(|sd| {
        let mut so = Obj::new("flowControl.saturationDetector", Some(sd), d);
        let r = read_ref(&mut so, "pluginRef", d);
        so.finish(d);
        r
    });
    if o.bool("enableEviction", d) == Some(true) {
        d.error(
            o.at("enableEviction"),
            "in-flight eviction of lower-priority requests is not supported yet",
        );
    }
    let settings = [
        "maxBytes",
        "maxRequests",
        "defaultRequestTTL",
        "defaultPriorityBand",
        "defaultNegativePriorityBand",
        "priorityBands",
        "usageLimitPolicyPluginRef",
    ]
    .iter()
    .any(|k| o.has(k));
    o.finish(d);
    RawFlowControl {
        max_bytes,
        max_requests,
        ttl,
        default_band,
        default_negative_band,
        bands,
        usage_limit,
        saturation_detector: saturation_detector.flatten(),
        settings,
        llm_d,
    }
}

/// llm-d-router v0.10's default `defaultRequestTTL` (documents with its apiVersion).
const LLM_D_DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// llm-d-router v0.10's default band `maxRequests`; 0 means this default too.
const LLM_D_DEFAULT_BAND_REQUESTS: u64 = 5000;

fn resolve_flow_control(
    l: &mut Loader,
    raw: RawFlowControl,
    fcfs: usize,
    strict: usize,
    usage: usize,
) -> Option<FlowControlSpec> {
    let mut template = default_band(fcfs, strict);
    let llm_d = raw.llm_d;
    if llm_d {
        template.max_requests = LLM_D_DEFAULT_BAND_REQUESTS;
    }
    let resolve_band = |l: &mut Loader, b: &RawBand, base: &BandSpec| BandSpec {
        priority: b.priority,
        max_bytes: b
            .max_bytes
            .filter(|n| *n > 0 || !llm_d)
            .unwrap_or(base.max_bytes),
        max_requests: b
            .max_requests
            .filter(|n| *n > 0 || !llm_d)
            .unwrap_or(base.max_requests),
        ordering_policy: b
            .ordering
            .as_ref()
            .and_then(|r| l.resolve(r, Roles::ORDERING, "ordering policy"))
            .unwrap_or(base.ordering_policy),
        fairness_policy: b
            .fairness
            .as_ref()
            .and_then(|r| l.resolve(r, Roles::FAIRNESS, "fairness policy"))
            .unwrap_or(base.fairness_policy),
    };
    let default_band = match &raw.default_band {
        Some(b) => resolve_band(l, b, &template),
        None => template.clone(),
    };
    let default_negative_band = raw
        .default_negative_band
        .as_ref()
        .map(|b| resolve_band(l, b, &default_band));
    let bands = raw
        .bands
        .iter()
        .map(|b| resolve_band(l, b, &default_band))
        .collect();
    let usage_limit_policy = match &raw.usage_limit {
        Some(r) => l.resolve(r, Roles::USAGE_LIMIT, "usage limit policy")?,
        None => usage,
    };
    Some(FlowControlSpec {
        max_bytes: raw.max_bytes,
        max_requests: raw.max_requests,
        default_request_ttl: raw.ttl,
        default_band,
        default_negative_band,
        bands,
        usage_limit_policy,
    })
}
