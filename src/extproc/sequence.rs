//! Arbitrary ext_proc message sequences from bytes, and the invariants a stream must keep
//! whatever it is sent: shared by the `extproc_stream` fuzz target and the property test that
//! runs in `cargo test`, so both explore the same space.
//!
//! Each message takes one tag byte (kind and end-of-stream flag), then a length byte and that
//! many payload bytes. Headers payloads are `key:value` lines drawn partly from the names the
//! request path reads (`:path`, `content-length`, the fairness, objective and rewrite headers);
//! bodies are the raw bytes or, on a flag, a well-formed completion so routing is reached.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Msg;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};

const HEADER_NAMES: &[&str] = &[
    ":path",
    ":status",
    "content-length",
    "content-type",
    "x-gateway-inference-fairness-id",
    "x-gateway-inference-objective",
    "x-gateway-model-name-rewrite",
    "x-request-id",
    "test-epp-endpoint-selection",
];

/// Reads one byte, or 0 past the end.
fn take(data: &mut &[u8]) -> u8 {
    match data.split_first() {
        Some((b, rest)) => {
            *data = rest;
            *b
        }
        None => 0,
    }
}

fn take_n<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, rest) = data.split_at(n);
    *data = rest;
    head
}

fn headers(payload: &[u8]) -> HeaderMap {
    let text = String::from_utf8_lossy(payload);
    HeaderMap {
        headers: text
            .split('\n')
            .enumerate()
            .map(|(i, line)| {
                let (k, v) = line.split_once(':').unwrap_or(("", line));
                let key = if k.is_empty() {
                    HEADER_NAMES[i % HEADER_NAMES.len()].to_string()
                } else {
                    k.to_string()
                };
                HeaderValue {
                    key,
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                }
            })
            .collect(),
    }
}

fn subset(payload: &[u8]) -> Metadata {
    let list = Value {
        kind: Some(Kind::ListValue(ListValue {
            values: String::from_utf8_lossy(payload)
                .split(',')
                .map(|e| Value {
                    kind: Some(Kind::StringValue(e.to_string())),
                })
                .collect(),
        })),
    };
    Metadata {
        filter_metadata: HashMap::from([(
            super::protocol::SUBSET_NAMESPACE.to_string(),
            Struct {
                fields: HashMap::from([(super::protocol::SUBSET_KEY.to_string(), list)]),
            },
        )]),
        ..Default::default()
    }
}

/// The message sequence `data` encodes (at most 64 messages).
pub fn messages(mut data: &[u8]) -> Vec<ProcessingRequest> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < 64 {
        let tag = take(&mut data);
        let eos = tag & 0x80 != 0;
        let len = usize::from(take(&mut data));
        let payload = take_n(&mut data, len);
        let body = |payload: &[u8]| {
            if tag & 0x40 != 0 {
                format!(
                    r#"{{"model":"m{}","prompt":"{}","stream":{}}}"#,
                    payload.len() % 3,
                    String::from_utf8_lossy(payload).escape_default(),
                    tag & 0x20 != 0
                )
                .into_bytes()
            } else {
                payload.to_vec()
            }
        };
        let request = match tag & 0x07 {
            0 => Msg::RequestHeaders(HttpHeaders {
                headers: Some(headers(payload)),
                end_of_stream: eos,
                ..Default::default()
            }),
            1 => Msg::RequestBody(HttpBody {
                body: body(payload),
                end_of_stream: eos,
                ..Default::default()
            }),
            2 => Msg::RequestTrailers(HttpTrailers::default()),
            3 => Msg::ResponseHeaders(HttpHeaders {
                headers: Some(headers(payload)),
                end_of_stream: eos,
                ..Default::default()
            }),
            4 | 5 => Msg::ResponseBody(HttpBody {
                body: payload.to_vec(),
                end_of_stream: eos,
                ..Default::default()
            }),
            6 => Msg::ResponseTrailers(HttpTrailers::default()),
            _ => {
                // A subset hint (or served-endpoint metadata in the response phase) on an
                // otherwise empty message.
                out.push(ProcessingRequest {
                    metadata_context: Some(subset(payload)),
                    ..Default::default()
                });
                continue;
            }
        };
        out.push(ProcessingRequest {
            request: Some(request),
            ..Default::default()
        });
    }
    out
}
