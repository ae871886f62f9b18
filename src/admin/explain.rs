//! `Explain`: a dry run of admission and scheduling for one request, against the live runtime
//! and optionally an alternative configuration side by side.
//!
//! It builds the request as the request path does (body parsing, model rewrites, objective,
//! fairness id, subset hint), asks flow control what it would do on a copy of its gate, runs the
//! data producers (which only read the prefix index and in-flight counts) and the profiles with
//! a recording observer. It does not run the pre-request hooks, so no prefix is recorded and
//! nothing is counted in flight; no tenant is charged and no metric is observed.
//!
//! An alternative configuration is built as a reload would build it from the live runtime: its
//! prefix producer shares the live index (read only here) when its hashing is unchanged, and
//! starts empty otherwise; the output says which. Its flow-control verdict is judged on a copy
//! of the live queue reconfigured as a reload would, or on an empty queue when flow control is
//! not running.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use rand::SeedableRng;
use serde_json::{Value, json};

use super::{inflight_message, metrics_message, origin_name, proto, unix_ms};
use crate::config::{self, ConfigErrors};
use crate::extproc::Director;
use crate::extproc::error::{Code, InferenceError};
use crate::extproc::openai;
use crate::extproc::protocol::{
    FAIRNESS_HEADERS, OBJECTIVE_HEADERS, REWRITE_HEADERS, first, ip_of,
};
use crate::extproc::stream::{estimate_input_tokens, refusal};
use crate::flowcontrol::{FlowControl, Gate, NewItem, PoolSignal, Preview, legacy_admit};
use crate::runtime::{ConfigOrigin, ConfigSource, Live, Runtime};
use crate::scheduling::trace::ProfileTrace;
use crate::scheduling::{
    DEFAULT_FAIRNESS_ID, DataProducer, DecisionError, EndpointSnapshot, Request, SchedulerRng,
    Timestamp, Trace,
};

/// Largest alternative configuration accepted.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Most request headers accepted.
pub const MAX_HEADERS: usize = 256;

/// Why an explain request cannot be answered (the gRPC status is INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Invalid(String),
    #[error("alternative_config: {}", .0.render("EndpointPickerConfig"))]
    Config(ConfigErrors),
}

/// The request to explain, as the request path would receive it.
#[derive(Debug, Clone)]
pub struct ExplainInput {
    pub path: String,
    pub body: Bytes,
    /// Names in lower case, as Envoy sends them.
    pub headers: Vec<(String, String)>,
    pub subset: Option<Vec<IpAddr>>,
    pub seed: u64,
}

impl ExplainInput {
    /// The body and path a client would send for `r`, its headers and subset hint.
    pub fn from_request(r: &proto::ExplainRequest, seed: u64) -> Result<Self, ExplainError> {
        use proto::explain_request::Input;
        let body_of = |v: Value| Bytes::from(serde_json::to_vec(&v).expect("JSON values encode"));
        let (path, body) = match &r.input {
            Some(Input::Prompt(p)) => (
                "/v1/completions".to_string(),
                body_of(json!({"model": r.model, "prompt": p})),
            ),
            Some(Input::MessagesJson(m)) => {
                let messages: Value = serde_json::from_str(m)
                    .map_err(|e| ExplainError::Invalid(format!("messages_json: not JSON: {e}")))?;
                if !messages.is_array() {
                    return Err(ExplainError::Invalid(
                        "messages_json: must be a JSON array of messages".into(),
                    ));
                }
                (
                    "/v1/chat/completions".to_string(),
                    body_of(json!({"model": r.model, "messages": messages})),
                )
            }
            Some(Input::Body(b)) => {
                let path = if r.path.is_empty() {
                    "/v1/completions".to_string()
                } else {
                    r.path.clone()
                };
                (path, Bytes::from(b.clone()))
            }
            None => {
                return Err(ExplainError::Invalid(
                    "one of prompt, messages_json or body is required".into(),
                ));
            }
        };
        if r.headers.len() > MAX_HEADERS {
            return Err(ExplainError::Invalid(format!(
                "headers: at most {MAX_HEADERS}, got {}",
                r.headers.len()
            )));
        }
        let headers = r
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect();
        let subset = if r.subset.is_empty() {
            None
        } else {
            let ips = r
                .subset
                .iter()
                .map(|s| {
                    ip_of(s).ok_or_else(|| {
                        ExplainError::Invalid(format!("subset: {s:?} is not an IP or ip:port"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(ips)
        };
        Ok(Self {
            path,
            body,
            headers,
            subset,
            seed,
        })
    }
}

/// Answers an explain request against `live` (see the module docs).
pub fn explain(
    live: &Live,
    r: &proto::ExplainRequest,
) -> Result<proto::ExplainResponse, ExplainError> {
    let seed = r.seed.unwrap_or_else(rand::random);
    let input = ExplainInput::from_request(r, seed)?;
    let rt = live.runtime();
    let alternative = if r.alternative_config.is_empty() {
        None
    } else {
        Some(alternative_runtime(live, &rt, &r.alternative_config)?)
    };
    let d = live.director();
    let snapshot = d.pool.snapshot();
    let scene = Scene {
        director: d,
        snapshot: &snapshot,
        now: d.clock.now(),
        input: &input,
        live_flow_control: live.flow_control(),
    };
    let live_explanation = scene.explain(&rt, Which::Live);
    let alternative = alternative.map(|alt| {
        let shared = alt.plugins.prefix_index_shared_with(&rt.plugins);
        scene.explain(
            &alt,
            Which::Alternative {
                shared_prefix: shared.first().copied(),
                live_has_prefix: !rt.plugins.prefix_producers.is_empty(),
            },
        )
    });
    Ok(proto::ExplainResponse {
        live: Some(live_explanation),
        alternative,
        seed,
        at_unix_ms: unix_ms(SystemTime::now()),
    })
}

/// The runtime `yaml` describes, built as a reload of `rt` would build it.
fn alternative_runtime(live: &Live, rt: &Runtime, yaml: &str) -> Result<Runtime, ExplainError> {
    if yaml.len() > MAX_CONFIG_BYTES {
        return Err(ExplainError::Invalid(format!(
            "alternative_config: larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    let cfg = config::load_str(yaml).map_err(ExplainError::Config)?;
    let source = ConfigSource::new(ConfigOrigin::Text, yaml.as_bytes());
    Runtime::rebuild(cfg, source, live.flags(), rt).map_err(ExplainError::Config)
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Live,
    Alternative {
        /// Whether its first prefix producer reads the live index.
        shared_prefix: Option<bool>,
        live_has_prefix: bool,
    },
}

/// What both explanations see: one snapshot, one instant, one request.
struct Scene<'a> {
    director: &'a Director,
    snapshot: &'a EndpointSnapshot,
    now: Timestamp,
    input: &'a ExplainInput,
    live_flow_control: Option<Arc<FlowControl>>,
}

impl Scene<'_> {
    fn explain(&self, rt: &Runtime, which: Which) -> proto::Explanation {
        let config = Some(proto::ConfigSummary {
            origin: match which {
                Which::Live => origin_name(&rt.source.origin),
                Which::Alternative { .. } => "alternative".into(),
            },
            hash: rt.source.hash.clone(),
        });
        // One RNG per explanation, drawn in the request path's order: rewrite, then scheduling.
        let mut rng = SchedulerRng::seed_from_u64(self.input.seed);
        let request = match self.build_request(rt, &mut rng) {
            Ok(r) => r,
            Err(e) => {
                return proto::Explanation {
                    config,
                    outcome: Some(proto::Outcome {
                        http_status: u32::from(e.code.http_status()),
                        error: e.to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
            }
        };
        let candidates = self.snapshot.candidates(request.subset.as_deref());
        let admission = self.admission(rt, &request, &candidates);
        let state = rt
            .scheduler
            .prepare(&request, self.snapshot, &candidates, self.now);
        let mut trace = Trace::new();
        let decision = if candidates.is_empty() {
            Err(DecisionError::NoCandidates)
        } else {
            rt.scheduler
                .schedule_observed(
                    &request,
                    self.snapshot,
                    &candidates,
                    &state,
                    self.now,
                    &mut rng,
                    &mut trace,
                )
                .map_err(DecisionError::from)
        };

        let mut outcome = match &decision {
            Ok(result) => proto::Outcome {
                http_status: 200,
                error: String::new(),
                targets: result
                    .targets()
                    .iter()
                    .map(|t| self.snapshot.get(t.index).endpoint.host_port().to_string())
                    .collect(),
                primary_profile: result.primary_name().to_string(),
            },
            Err(e) => {
                let code = match e {
                    DecisionError::NoCandidates => Code::ServiceUnavailable,
                    DecisionError::Scheduling(_) => Code::ResourceExhausted,
                };
                let err = InferenceError::new(code, e.to_string());
                proto::Outcome {
                    http_status: u32::from(code.http_status()),
                    error: err.to_string(),
                    ..Default::default()
                }
            }
        };
        if admission.decision == proto::admission::Decision::Reject as i32 {
            outcome = proto::Outcome {
                http_status: admission.http_status,
                error: admission.message.clone(),
                ..Default::default()
            };
        }
        let primary = decision.as_ref().ok().map(|r| r.primary_name().to_string());
        let profiles = trace
            .profiles
            .iter()
            .map(|t| self.profile(rt, t, primary.as_deref()))
            .collect();
        let endpoints = self
            .snapshot
            .endpoints()
            .iter()
            .enumerate()
            .map(|(i, e)| proto::EndpointFacts {
                name: e.endpoint.name.clone(),
                address: e.endpoint.host_port().to_string(),
                outside_subset: !candidates.contains(&i),
                metrics: Some(metrics_message(&e.metrics, self.now)),
                prefix_matched_blocks: state.prefix_match(i).map_or(0, |(m, _)| m),
                inflight: Some(inflight_message(state.inflight_load(i))),
            })
            .collect();
        let prefix = state.prefix.as_ref().map(|p| proto::PrefixSummary {
            producer: rt
                .plugins
                .prefix_producers
                .first()
                .map_or("", |p| p.type_name())
                .to_string(),
            block_size_tokens: p.block_size_tokens,
            total_blocks: p.total_blocks,
            index: match which {
                Which::Live => "live".into(),
                Which::Alternative {
                    shared_prefix: Some(true),
                    ..
                } => "shared with the live configuration (read-only)".into(),
                Which::Alternative {
                    live_has_prefix: false,
                    ..
                } => "empty (the live configuration keeps no prefix index)".into(),
                Which::Alternative { .. } => {
                    "empty (this configuration hashes prompts differently)".into()
                }
            },
        });
        proto::Explanation {
            config,
            request: Some(proto::RequestSummary {
                incoming_model: request.incoming_model.clone(),
                target_model: request.target_model.clone(),
                fairness_id: request.fairness_id.clone(),
                priority: request.priority,
                body_bytes: request.body_size as u64,
                prompt_bytes: request.prompt.len() as u64,
                subset: request
                    .subset
                    .iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect(),
            }),
            admission: Some(admission),
            outcome: Some(outcome),
            profiles,
            endpoints,
            prefix,
        }
    }

    /// The request as `route` in the request path builds it.
    fn build_request(
        &self,
        rt: &Runtime,
        rng: &mut SchedulerRng,
    ) -> Result<Request, InferenceError> {
        let d = self.director;
        let input = self.input;
        if input.body.len() > rt.extproc.max_request_body_bytes {
            return Err(InferenceError::new(
                Code::PayloadTooLarge,
                format!(
                    "request body is larger than the limit of {} bytes (--max-request-body-bytes)",
                    rt.extproc.max_request_body_bytes
                ),
            ));
        }
        let parsed = if rt.extproc.passthrough {
            None
        } else {
            Some(openai::parse(&input.body, &input.path)?)
        };
        let (incoming, prompt, cache_salt) = match &parsed {
            Some(p) => (p.model.clone(), p.prompt.clone(), p.cache_salt.clone()),
            None => (String::new(), input.body.clone(), None),
        };
        let mut target = match first(&input.headers, &REWRITE_HEADERS) {
            Some(t) if !t.is_empty() && parsed.is_some() => t.to_string(),
            _ => incoming.clone(),
        };
        if parsed.is_some()
            && let Some(dec) = d.datastore.rewrite(&incoming, rng)
        {
            target = dec.target;
        }
        let priority = d
            .datastore
            .priority(first(&input.headers, &OBJECTIVE_HEADERS));
        let fairness_id = first(&input.headers, &FAIRNESS_HEADERS)
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_FAIRNESS_ID)
            .to_string();
        Ok(Request {
            request_id: "explain".into(),
            incoming_model: incoming,
            target_model: target,
            prompt,
            cache_salt,
            body_size: input.body.len(),
            headers: input.headers.clone(),
            fairness_id,
            priority,
            subset: if rt.extproc.disable_subset_filter {
                None
            } else {
                input.subset.clone()
            },
        })
    }

    /// What admission would do: legacy shedding, or flow control's verdict on a copy of its gate.
    fn admission(&self, rt: &Runtime, request: &Request, candidates: &[usize]) -> proto::Admission {
        use proto::admission::Decision;
        let item = NewItem {
            fairness_id: request.fairness_id.clone(),
            priority: request.priority,
            bytes: self.input.body.len() as u64,
            input_tokens: estimate_input_tokens(request),
            ttl: None,
        };
        let from_preview = |(p, saturation): (Preview, Option<f64>), basis: &str| {
            let mut a = proto::Admission {
                mode: "flow-control".into(),
                saturation,
                basis: basis.into(),
                ..Default::default()
            };
            match p {
                Preview::Admit => a.decision = Decision::Admit as i32,
                Preview::Queue { position, queued } => {
                    a.decision = Decision::Queue as i32;
                    a.queue_position = position as u64;
                    a.queued = queued as u64;
                }
                Preview::Refuse(r) => {
                    a.decision = Decision::Reject as i32;
                    a.http_status = u32::from(r.status());
                    a.message = refusal(&r).to_string();
                }
            }
            a
        };
        if let Some(fc) = &rt.flow_control {
            return from_preview(fc.preview(item, None), "live queue");
        }
        if let Some(cfg) = &rt.flow_control_config {
            let detector = rt.flow_control_detector.clone();
            return match &self.live_flow_control {
                Some(fc) => from_preview(
                    fc.preview(item, Some((Some(cfg.clone()), detector))),
                    "live queue under this configuration",
                ),
                None => {
                    let gate = Gate::new(cfg.clone(), detector.visible_when_picked());
                    let pool = PoolSignal {
                        snapshot: self.snapshot,
                        detector: detector.as_ref(),
                        now: self.now,
                    };
                    from_preview(
                        gate.preview(item, &[], &pool),
                        "empty queue (flow control is not running)",
                    )
                }
            };
        }
        // GIE's legacy admission, as the request path runs it.
        let mut a = proto::Admission {
            decision: Decision::Admit as i32,
            mode: "legacy".into(),
            ..Default::default()
        };
        if let Some(det) = &rt.saturation {
            a.saturation = Some(det.saturation(self.snapshot, candidates, self.now));
            if request.is_sheddable() {
                let pool = PoolSignal {
                    snapshot: self.snapshot,
                    detector: det.as_ref(),
                    now: self.now,
                };
                if let Err(r) = legacy_admit(request.priority, candidates, &pool) {
                    a.decision = Decision::Reject as i32;
                    a.http_status = u32::from(r.status());
                    a.message = refusal(&r).to_string();
                }
            }
        }
        a
    }

    fn profile(
        &self,
        rt: &Runtime,
        t: &ProfileTrace,
        primary: Option<&str>,
    ) -> proto::ProfileExplanation {
        use proto::filter_verdict::Verdict;
        let p = &rt.scheduler.profiles()[t.index];
        let result = t.outcome.as_ref().and_then(|o| o.as_ref().ok());
        let mut endpoints: Vec<proto::EndpointDecision> = t
            .candidates
            .iter()
            .map(|&i| {
                let mut filters = Vec::new();
                for step in &t.filters {
                    let Some((_, check)) = step.checked.iter().find(|(j, _)| *j == i) else {
                        break;
                    };
                    let kept = step.keeps(i);
                    let mut reason = check.detail.clone();
                    if kept && !check.passes {
                        reason.push_str(if step.any_passed() {
                            " (kept: the filter let every candidate through this time)"
                        } else {
                            " (kept: no candidate passes, so the filter keeps them all)"
                        });
                    }
                    filters.push(proto::FilterVerdict {
                        filter: step.name.clone(),
                        verdict: if kept {
                            Verdict::Kept
                        } else {
                            Verdict::Dropped
                        } as i32,
                        passes: check.passes,
                        reason,
                    });
                    if !kept {
                        break;
                    }
                }
                let scores = t
                    .scorers
                    .iter()
                    .filter_map(|s| {
                        let &(_, raw) = s.raw.iter().find(|(j, _)| *j == i)?;
                        Some(proto::ScorerContribution {
                            scorer: s.name.clone(),
                            raw,
                            weight: s.weight,
                            weighted: s.contribution(raw),
                        })
                    })
                    .collect();
                let ep = &self.snapshot.get(i).endpoint;
                proto::EndpointDecision {
                    name: ep.name.clone(),
                    address: ep.host_port().to_string(),
                    filters,
                    scores,
                    total: result
                        .and_then(|r| r.scores.iter().find(|s| s.index == i))
                        .map(|s| s.score),
                    pick_rank: result
                        .and_then(|r| r.targets.iter().position(|s| s.index == i))
                        .map_or(0, |k| k as u32 + 1),
                }
            })
            .collect();
        // Best total first (the picker's targets first among equals), then the filtered out.
        endpoints.sort_by(|a, b| {
            let rank = |e: &proto::EndpointDecision| {
                if e.pick_rank == 0 {
                    u32::MAX
                } else {
                    e.pick_rank
                }
            };
            b.total
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&a.total.unwrap_or(f64::NEG_INFINITY))
                .then(rank(a).cmp(&rank(b)))
        });
        proto::ProfileExplanation {
            name: t.name.clone(),
            primary: primary == Some(t.name.as_str()),
            error: match &t.outcome {
                Some(Err(e)) => e.to_string(),
                _ => String::new(),
            },
            filters: p
                .filters
                .iter()
                .map(|f| proto::PluginRef {
                    name: f.name.clone(),
                    r#type: f.filter.type_name().into(),
                })
                .collect(),
            scorers: p
                .scorers
                .iter()
                .map(|s| proto::WeightedScorer {
                    name: s.name.clone(),
                    r#type: s.scorer.type_name().into(),
                    weight: s.weight,
                })
                .collect(),
            picker: Some(proto::PluginRef {
                name: p.picker_name.clone(),
                r#type: p.picker.type_name().into(),
            }),
            endpoints,
        }
    }
}
