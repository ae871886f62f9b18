//! Building and reading ext_proc v3 messages: header values, dynamic metadata, body chunks and
//! immediate responses, exactly as the Go EPP shapes them (gie-epp.md §1.2–1.3).

use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderMap, HeaderValue, HeaderValueOption, Metadata,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
    processing_response::Response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use super::error::InferenceError;
use crate::scheduling::{EndpointSnapshot, ScoredEndpoint};

/// Header and metadata key of the pick.
pub const DESTINATION_ENDPOINT: &str = "x-gateway-destination-endpoint";
/// Header and metadata key of the scores behind the pick (`--emit-endpoint-scores`, llm-d's
/// name).
pub const ENDPOINT_SCORES: &str = "x-gateway-destination-endpoint-scores";
/// Endpoints the scores header names at most; the metadata carries every scored endpoint.
pub const MAX_SCORES_IN_HEADER: usize = 8;
/// Dynamic metadata namespace of the pick.
pub const DESTINATION_NAMESPACE: &str = "envoy.lb";
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
pub const SERVED_KEY: &str = "x-gateway-destination-endpoint-served";
/// Envoy's body chunk limit is 64 KiB; GIE keeps this margin below it.
pub const BODY_CHUNK_LIMIT: usize = 62_000;

/// Request headers Switchyard reads (GIE names first, then the llm-d aliases).
pub const OBJECTIVE_HEADERS: [&str; 2] = [
    "x-gateway-inference-objective",
    "x-llm-d-inference-objective",
];
pub const FAIRNESS_HEADERS: [&str; 2] = [
    "x-gateway-inference-fairness-id",
    "x-llm-d-inference-fairness-id",
];
pub const REWRITE_HEADERS: [&str; 2] =
    ["x-gateway-model-name-rewrite", "x-llm-d-model-name-rewrite"];

/// Headers the EPP owns and never echoes back (GIE's system-owned set, with the llm-d aliases).
pub fn is_system_owned(name: &str) -> bool {
    matches!(
        name,
        "x-gateway-inference-fairness-id"
            | "x-gateway-inference-objective"
            | "x-gateway-model-name-rewrite"
            | "x-gateway-destination-endpoint-subset"
            | "x-llm-d-inference-fairness-id"
            | "x-llm-d-inference-objective"
            | "x-llm-d-model-name-rewrite"
            | "x-gateway-destination-endpoint"
            | "x-gateway-destination-endpoint-served"
            | "x-gateway-destination-endpoint-scores"
            | "content-length"
    )
}

/// Whether a header may be echoed to Envoy. Envoy's default mutation rules refuse pseudo-headers,
/// `host` and `x-envoy-*` (it adds `x-envoy-upstream-service-time` to every response): echoing
/// them is counted as a rejected mutation, and fails the request under
/// `mutation_rules.disallow_is_error`.
pub fn echoable(name: &str) -> bool {
    !name.starts_with(':')
        && name != "host"
        && !name.starts_with("x-envoy-")
        && !is_system_owned(name)
}

/// Header names in lower case with values from `raw_value` (falling back to `value`).
pub fn read_headers(map: Option<&HeaderMap>) -> Vec<(String, String)> {
    let Some(map) = map else { return Vec::new() };
    map.headers
        .iter()
        .map(|h| {
            let value = if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            };
            (h.key.to_ascii_lowercase(), value)
        })
        .collect()
}

pub fn first<'a>(headers: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    })
}

pub fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        // OVERWRITE_IF_EXISTS_OR_ADD
        append_action: 2,
        ..Default::default()
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// `{"envoy.lb": {"x-gateway-destination-endpoint": endpoints}}`.
pub fn destination_metadata(endpoints: &str) -> Struct {
    let inner = Struct {
        fields: HashMap::from([(DESTINATION_ENDPOINT.to_string(), string_value(endpoints))]),
    };
    Struct {
        fields: HashMap::from([(
            DESTINATION_NAMESPACE.to_string(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]),
    }
}

/// The scored endpoints, best first (ties in snapshot order).
fn ranked(scores: &[ScoredEndpoint]) -> Vec<ScoredEndpoint> {
    let mut v = scores.to_vec();
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    v
}

/// The scores header: `ip:port=total` for the [`MAX_SCORES_IN_HEADER`] best-scored endpoints,
/// best first, comma-separated; totals printed exactly (shortest round-trip form).
pub fn endpoint_scores_header(snapshot: &EndpointSnapshot, scores: &[ScoredEndpoint]) -> String {
    ranked(scores)
        .iter()
        .take(MAX_SCORES_IN_HEADER)
        .map(|s| format!("{}={}", snapshot.get(s.index).endpoint.host_port(), s.score))
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds `x-gateway-destination-endpoint-scores: {ip:port: total, ...}` for every scored endpoint
/// to the `envoy.lb` namespace of `metadata` (as llm-d's `--emit-endpoint-scores`).
pub fn add_endpoint_scores(
    metadata: &mut Struct,
    snapshot: &EndpointSnapshot,
    scores: &[ScoredEndpoint],
) {
    let fields = scores
        .iter()
        .map(|s| {
            (
                snapshot.get(s.index).endpoint.host_port().to_string(),
                Value {
                    kind: Some(Kind::NumberValue(s.score)),
                },
            )
        })
        .collect();
    let value = Value {
        kind: Some(Kind::StructValue(Struct { fields })),
    };
    if let Some(Value {
        kind: Some(Kind::StructValue(ns)),
    }) = metadata.fields.get_mut(DESTINATION_NAMESPACE)
    {
        ns.fields.insert(ENDPOINT_SCORES.to_string(), value);
    }
}

/// The subset hint: `None` when absent (every endpoint allowed); a present but empty, malformed or
/// unparseable list allows none. Entries are `ip:port`; only the IP matters.
pub fn subset_hint(md: &Metadata) -> Option<Vec<IpAddr>> {
    let ns = md.filter_metadata.get(SUBSET_NAMESPACE)?;
    let v = ns.fields.get(SUBSET_KEY)?;
    let Some(Kind::ListValue(list)) = &v.kind else {
        return Some(Vec::new());
    };
    Some(
        list.values
            .iter()
            .filter_map(|x| match &x.kind {
                Some(Kind::StringValue(s)) => ip_of(s),
                _ => None,
            })
            .collect(),
    )
}

/// The endpoint the gateway reports it actually served, from response-phase metadata.
pub fn served_endpoint(md: &Metadata) -> Result<Option<String>, &'static str> {
    let Some(ns) = md.filter_metadata.get(DESTINATION_NAMESPACE) else {
        return Err("fail: missing envoy lb metadata");
    };
    match ns.fields.get(SERVED_KEY).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Ok(Some(s.clone())),
        _ => Err("fail: missing destination endpoint served metadata"),
    }
}

/// The IP of `ip`, `ip:port` or `[v6]:port`.
pub fn ip_of(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, _) = s.rsplit_once(':')?;
    host.parse().ok()
}

pub fn headers_response(common: CommonResponse, request_phase: bool) -> ProcessingResponse {
    let hr = HeadersResponse {
        response: Some(common),
    };
    ProcessingResponse {
        response: Some(if request_phase {
            Response::RequestHeaders(hr)
        } else {
            Response::ResponseHeaders(hr)
        }),
        ..Default::default()
    }
}

pub fn header_mutation(set: Vec<HeaderValueOption>) -> Option<HeaderMutation> {
    Some(HeaderMutation {
        set_headers: set,
        remove_headers: Vec::new(),
    })
}

/// Body messages for `body`, in chunks of at most [`BODY_CHUNK_LIMIT`] bytes; the last carries
/// `end_of_stream`. An empty body with `end_of_stream` still gets one (empty) message.
pub fn body_responses(
    body: &[u8],
    end_of_stream: bool,
    request_phase: bool,
    out: &mut Vec<ProcessingResponse>,
) {
    let mk = |chunk: &[u8], eos: bool| {
        let br = BodyResponse {
            response: Some(CommonResponse {
                body_mutation: Some(BodyMutation {
                    mutation: Some(body_mutation::Mutation::StreamedResponse(
                        StreamedBodyResponse {
                            body: chunk.to_vec(),
                            end_of_stream: eos,
                            ..Default::default()
                        },
                    )),
                }),
                ..Default::default()
            }),
        };
        ProcessingResponse {
            response: Some(if request_phase {
                Response::RequestBody(br)
            } else {
                Response::ResponseBody(br)
            }),
            ..Default::default()
        }
    };
    if body.is_empty() {
        if end_of_stream {
            out.push(mk(&[], true));
        }
        return;
    }
    let n = body.len().div_ceil(BODY_CHUNK_LIMIT);
    for (i, chunk) in body.chunks(BODY_CHUNK_LIMIT).enumerate() {
        out.push(mk(chunk, end_of_stream && i + 1 == n));
    }
}

pub fn trailers_response(request_phase: bool) -> ProcessingResponse {
    let tr = TrailersResponse::default();
    ProcessingResponse {
        response: Some(if request_phase {
            Response::RequestTrailers(tr)
        } else {
            Response::ResponseTrailers(tr)
        }),
        ..Default::default()
    }
}

/// The error as Envoy should answer the client: status and GIE's body text, no headers.
pub fn immediate(err: &InferenceError) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Response::ImmediateResponse(ImmediateResponse {
            status: Some(HttpStatus {
                code: i32::from(err.code.http_status()),
            }),
            body: err.to_string().into_bytes(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    #[test]
    fn endpoint_scores_best_first_in_the_header_and_all_in_the_metadata() {
        use crate::scheduling::{Endpoint, EndpointState};
        use std::sync::Arc;
        let snap = EndpointSnapshot::new(
            (0..10)
                .map(|i| EndpointState {
                    endpoint: Arc::new(Endpoint::new(
                        format!("e{i}"),
                        format!("10.0.0.{i}").parse().unwrap(),
                        8000,
                    )),
                    metrics: Default::default(),
                })
                .collect(),
        );
        let scores: Vec<ScoredEndpoint> = (0..10)
            .map(|i| ScoredEndpoint {
                index: i,
                score: [1.5, 4.0, 0.1, 4.0, 2.25, 0.0, 0.0, 0.0, 0.0, 3.0][i],
            })
            .collect();
        assert_eq!(
            endpoint_scores_header(&snap, &scores),
            "10.0.0.1:8000=4,10.0.0.3:8000=4,10.0.0.9:8000=3,10.0.0.4:8000=2.25,\
             10.0.0.0:8000=1.5,10.0.0.2:8000=0.1,10.0.0.5:8000=0,10.0.0.6:8000=0"
        );
        let mut md = destination_metadata("10.0.0.1:8000");
        add_endpoint_scores(&mut md, &snap, &scores);
        let Some(Kind::StructValue(ns)) = &md.fields[DESTINATION_NAMESPACE].kind else {
            panic!("namespace struct")
        };
        let Some(Kind::StructValue(sc)) = &ns.fields[ENDPOINT_SCORES].kind else {
            panic!("scores struct")
        };
        assert_eq!(sc.fields.len(), 10);
        assert_eq!(
            sc.fields["10.0.0.4:8000"].kind,
            Some(Kind::NumberValue(2.25))
        );
    }

    #[test]
    fn ip_parsing() {
        assert_eq!(ip_of("10.0.0.1:8000"), "10.0.0.1".parse().ok());
        assert_eq!(ip_of("10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(ip_of("[fd00::1]:80"), "fd00::1".parse().ok());
        assert_eq!(ip_of("fd00::1"), "fd00::1".parse().ok());
        assert_eq!(ip_of("pod-a:80"), None);
    }

    fn md_with(ns: &str, key: &str, v: Value) -> Metadata {
        Metadata {
            filter_metadata: HashMap::from([(
                ns.to_string(),
                Struct {
                    fields: HashMap::from([(key.to_string(), v)]),
                },
            )]),
            ..Default::default()
        }
    }

    #[test]
    fn subset_hint_shapes() {
        let list = |items: &[&str]| Value {
            kind: Some(Kind::ListValue(ListValue {
                values: items.iter().map(|s| string_value(s)).collect(),
            })),
        };
        assert_eq!(subset_hint(&Metadata::default()), None);
        let md = md_with(
            SUBSET_NAMESPACE,
            SUBSET_KEY,
            list(&["10.0.0.3:8000", "junk"]),
        );
        assert_eq!(subset_hint(&md), Some(vec!["10.0.0.3".parse().unwrap()]));
        let md = md_with(SUBSET_NAMESPACE, SUBSET_KEY, list(&[]));
        assert_eq!(subset_hint(&md), Some(vec![]));
        let md = md_with(SUBSET_NAMESPACE, SUBSET_KEY, string_value("10.0.0.1"));
        assert_eq!(subset_hint(&md), Some(vec![]));
        let md = md_with(SUBSET_NAMESPACE, "other", list(&["10.0.0.1"]));
        assert_eq!(subset_hint(&md), None);
    }

    #[test]
    fn body_chunking() {
        let mut out = Vec::new();
        body_responses(&vec![b'x'; BODY_CHUNK_LIMIT * 2 + 5], true, true, &mut out);
        assert_eq!(out.len(), 3);
        let eos: Vec<bool> = out
            .iter()
            .map(|r| match &r.response {
                Some(Response::RequestBody(b)) => match &b
                    .response
                    .as_ref()
                    .unwrap()
                    .body_mutation
                    .as_ref()
                    .unwrap()
                    .mutation
                {
                    Some(body_mutation::Mutation::StreamedResponse(s)) => s.end_of_stream,
                    _ => panic!(),
                },
                _ => panic!(),
            })
            .collect();
        assert_eq!(eos, vec![false, false, true]);
        let mut out = Vec::new();
        body_responses(&[], false, false, &mut out);
        assert!(out.is_empty());
        body_responses(&[], true, false, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn system_headers() {
        assert!(!echoable(":path"));
        assert!(!echoable("host"));
        assert!(!echoable("content-length"));
        assert!(!echoable("x-gateway-inference-objective"));
        assert!(!echoable("x-envoy-upstream-service-time"));
        assert!(echoable("x-request-id"));
        assert!(echoable("hi"));
    }
}
