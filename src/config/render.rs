//! Renders the effective configuration back to `EndpointPickerConfig` YAML, every default made
//! explicit, so users can see what a short config really means (`switchyard --print-config`).

use serde_json::{Map, Value, json};

use super::loader::KIND;
use super::model::*;
use crate::decode::format_duration;

impl EndpointPickerConfig {
    pub fn to_value(&self) -> Value {
        let name = |i: usize| Value::String(self.plugins[i].name.clone());
        let plugins: Vec<Value> = self
            .plugins
            .iter()
            .map(|p| {
                let mut m = Map::new();
                m.insert("name".into(), json!(p.name));
                m.insert("type".into(), json!(p.spec.type_name()));
                if let Some(params) = p.spec.parameters() {
                    m.insert("parameters".into(), params);
                }
                Value::Object(m)
            })
            .collect();
        let profiles: Vec<Value> = self
            .profiles
            .iter()
            .map(|p| {
                let mut refs: Vec<Value> = p
                    .filters
                    .iter()
                    .map(|&f| json!({"pluginRef": name(f)}))
                    .collect();
                refs.extend(
                    p.scorers
                        .iter()
                        .map(|&(s, w)| json!({"pluginRef": name(s), "weight": w})),
                );
                refs.push(json!({"pluginRef": name(p.picker)}));
                json!({"name": p.name, "plugins": refs})
            })
            .collect();
        let mut doc = Map::new();
        doc.insert("apiVersion".into(), json!(self.api_version));
        doc.insert("kind".into(), json!(KIND));
        doc.insert("featureGates".into(), json!(self.feature_gates.names()));
        doc.insert("plugins".into(), Value::Array(plugins));
        doc.insert("schedulingProfiles".into(), Value::Array(profiles));
        doc.insert(
            "saturationDetector".into(),
            json!({"pluginRef": name(self.saturation_detector)}),
        );
        doc.insert("parser".into(), json!({"pluginRef": name(self.parser)}));
        let sources: Vec<Value> = self
            .data_layer
            .iter()
            .flatten()
            .map(|s| {
                let ex: Vec<Value> = s
                    .extractors
                    .iter()
                    .map(|&e| json!({"pluginRef": name(e)}))
                    .collect();
                json!({"pluginRef": name(s.source), "extractors": ex})
            })
            .collect();
        doc.insert("dataLayer".into(), json!({ "sources": sources }));
        if let Some(fc) = &self.flow_control {
            let band = |b: &BandSpec| {
                let mut m = Map::new();
                if let Some(p) = b.priority {
                    m.insert("priority".into(), json!(p));
                }
                m.insert("maxBytes".into(), json!(b.max_bytes));
                m.insert("maxRequests".into(), json!(b.max_requests));
                m.insert("orderingPolicyRef".into(), name(b.ordering_policy));
                m.insert("fairnessPolicyRef".into(), name(b.fairness_policy));
                Value::Object(m)
            };
            let mut m = Map::new();
            m.insert("maxBytes".into(), json!(fc.max_bytes));
            m.insert("maxRequests".into(), json!(fc.max_requests));
            if let Some(ttl) = fc.default_request_ttl {
                m.insert("defaultRequestTTL".into(), json!(format_duration(ttl)));
            }
            m.insert("defaultPriorityBand".into(), band(&fc.default_band));
            if let Some(neg) = &fc.default_negative_band {
                m.insert("defaultNegativePriorityBand".into(), band(neg));
            }
            m.insert(
                "priorityBands".into(),
                Value::Array(fc.bands.iter().map(band).collect()),
            );
            m.insert(
                "usageLimitPolicyPluginRef".into(),
                name(fc.usage_limit_policy),
            );
            doc.insert("flowControl".into(), Value::Object(m));
        }
        Value::Object(doc)
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(&self.to_value()).expect("a JSON tree always renders as YAML")
    }
}
