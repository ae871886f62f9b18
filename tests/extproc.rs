//! The ext_proc request path, driven over loopback gRPC by a client that behaves like Envoy.
//! Covers GIE's hermetic integration cases (gie-epp.md §7.1), every error status, split and large
//! bodies, SSE usage split across chunks, and clients that disconnect mid-stream.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use switchyard::discovery::{ModelRewrite, RewriteRule, RewriteTarget};
use switchyard::scheduling::EndpointMetrics;

fn completion(model: &str, prompt: &str) -> Vec<u8> {
    format!(r#"{{"max_tokens":100,"model":"{model}","prompt":"{prompt}","temperature":0}}"#)
        .into_bytes()
}

async fn hermetic() -> Harness {
    let h = Harness::start(Setup {
        config: Some(HERMETIC_CONFIG.to_string()),
        ..Default::default()
    })
    .await;
    h.datastore.set_objectives(HashMap::from([
        ("sql-lora".to_string(), Some(2)),
        ("sql-lora-sheddable".to_string(), None),
        ("my-model".to_string(), Some(2)),
        ("direct-model".to_string(), Some(2)),
        ("sheddable".to_string(), Some(-1)),
    ]));
    h
}

/// Sends headers and a one-chunk body; returns the responses to the request side.
async fn route(h: &Harness, headers: &[(String, String)], body: &[u8]) -> Vec<switchyard_pb::Resp> {
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&refs(headers), false)).await;
    s.send(body_msg(body, true)).await;
    let first = s.recv().await.expect("a response");
    let mut out = vec![first.clone()];
    if matches!(
        first.response,
        Some(envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response::RequestHeaders(_))
    ) {
        loop {
            let r = s.recv().await.expect("body responses");
            let eos = body_chunk(&r).1;
            out.push(r);
            if eos {
                break;
            }
        }
    }
    out
}

mod switchyard_pb {
    pub type Resp = envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse;
}

fn routed_to(rs: &[switchyard_pb::Resp]) -> String {
    header(&set_headers(&rs[0]), "x-gateway-destination-endpoint")
        .expect("destination header")
        .to_string()
}

#[tokio::test]
async fn select_lower_queue_and_kv_cache() {
    let h = hermetic().await;
    h.set_pods(&[(3, 0.2), (0, 0.1), (10, 0.2)]);
    let rs = route(
        &h,
        &llm_headers("my-model", "my-model-12345"),
        &completion("my-model", "test1"),
    )
    .await;
    assert_eq!(rs.len(), 2);
    assert!(clear_route_cache(&rs[0]));
    let set = set_headers(&rs[0]);
    assert_eq!(
        header(&set, "x-gateway-destination-endpoint"),
        Some(pod(1).as_str())
    );
    assert_eq!(
        destination_metadata(&rs[0]).as_deref(),
        Some(pod(1).as_str())
    );
    assert_eq!(header(&set, "hi"), Some("mom"));
    assert_eq!(header(&set, "x-request-id"), Some("test-request-id"));
    // The body keeps its bytes; only the model value changes.
    let want = completion("my-model-12345", "test1");
    assert_eq!(
        header(&set, "Content-Length"),
        Some(want.len().to_string().as_str())
    );
    assert_eq!(body_chunk(&rs[1]), (want, true));
    // The objective, rewrite and control headers are not echoed.
    assert_eq!(header(&set, "x-gateway-inference-objective"), None);
    assert_eq!(header(&set, ":path"), None);
    let m = h.metrics_text();
    assert!(m.contains(r#"inference_objective_request_total{model_name="my-model",target_model_name="my-model-12345",priority="2"} 1"#), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn select_active_lora_with_low_queue_and_despite_higher_kv() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.2), (0, 0.1), (10, 0.2)]);
    for (i, kv) in [(1usize, 0.1), (1, 0.4)] {
        let mut m = EndpointMetrics {
            waiting_queue_size: 0,
            kv_cache_usage: kv,
            max_active_models: 2,
            ..Default::default()
        };
        m.active_models.insert("sql-lora-1fdg2".into());
        h.set_metrics(i, m);
        let mut full = EndpointMetrics {
            kv_cache_usage: 0.2,
            max_active_models: 2,
            ..Default::default()
        };
        full.active_models.insert("foo".into());
        full.active_models.insert("bar".into());
        h.set_metrics(0, full);
        let rs = route(
            &h,
            &llm_headers("sql-lora", "sql-lora-1fdg2"),
            &completion("sql-lora", "test2"),
        )
        .await;
        assert_eq!(routed_to(&rs), pod(1), "kv {kv}");
    }
    h.stop().await;
}

#[tokio::test]
async fn passthrough_parser_routes_raw_bodies_unchanged() {
    let h = Harness::start(Setup {
        config: Some(format!("{HERMETIC_CONFIG}- type: passthrough-parser\nparser: {{pluginRef: passthrough-parser}}\n")),
        ..Default::default()
    })
    .await;
    h.set_pods(&[(3, 0.2), (0, 0.1), (10, 0.2)]);
    let raw = b"\x00\x01 not json at all";
    let rs = route(&h, &llm_headers("my-model", "other"), raw).await;
    assert_eq!(routed_to(&rs), pod(1));
    assert_eq!(body_chunk(&rs[1]), (raw.to_vec(), true));
    let m = h.metrics_text();
    assert!(m.contains(r#"inference_objective_request_total{model_name="",target_model_name="",priority="0"} 1"#), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn requests_are_not_shed_by_default_even_when_saturated() {
    let h = hermetic().await;
    h.set_pods(&[(10, 0.95), (50, 0.99), (20, 0.9)]);
    let rs = route(
        &h,
        &llm_headers("sql-lora", "sql-lora-1fdg3"),
        &completion("sql-lora", "test"),
    )
    .await;
    assert_eq!(routed_to(&rs), pod(0));
    h.stop().await;
}

#[tokio::test]
async fn sheddable_request_on_saturated_pool_gets_429() {
    let h = hermetic().await;
    h.set_pods(&[(10, 0.95), (50, 0.99)]);
    let rs = route(&h, &llm_headers("sheddable", "m"), &completion("m", "x")).await;
    assert_eq!(
        immediate(&rs[0]),
        (
            429,
            "inference error: ResourceExhausted - system saturated, sheddable request dropped"
                .into()
        )
    );
    // Not saturated: admitted.
    h.set_pods(&[(0, 0.1), (1, 0.1)]);
    let rs = route(&h, &llm_headers("sheddable", "m"), &completion("m", "x")).await;
    assert!(routed_to(&rs).starts_with("127.0.0.1"));
    let m = h.metrics_text();
    assert!(m.contains(r#"inference_objective_request_error_total{model_name="m",target_model_name="m",error_code="ResourceExhausted"} 1"#), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn invalid_json_body_is_400() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let rs = route(&h, &llm_headers("my-model", ""), b"no healthy upstream").await;
    let (status, body) = immediate(&rs[0]);
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "inference error: BadRequest - error unmarshaling request body: expected ident at line 1 column 2"
    );
    h.stop().await;
}

#[tokio::test]
async fn missing_model_and_wrong_api_shape_are_400() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let rs = route(
        &h,
        &llm_headers("my-model", ""),
        br#"{"prompt":"hello world"}"#,
    )
    .await;
    assert_eq!(
        immediate(&rs[0]),
        (
            400,
            "inference error: BadRequest - model not found in request body".into()
        )
    );
    let mut hdrs = llm_headers("my-model", "");
    hdrs[0].1 = "/v1/chat/completions".into();
    let rs = route(&h, &hdrs, br#"{"model":"m","prompt":"x"}"#).await;
    assert_eq!(
        immediate(&rs[0]),
        (400, "inference error: BadRequest - invalid chat completions request: must have valid messages field".into())
    );
    h.stop().await;
}

#[tokio::test]
async fn body_split_across_chunks_is_routed_with_rewritten_model() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1), (10, 0.2)]);
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(
        &refs(&llm_headers("sql-lora-sheddable", "sql-lora-1fdg3")),
        false,
    ))
    .await;
    let body = completion("sql-lora-sheddable", "test6");
    let (a, b) = body.split_at(body.len() / 2);
    s.send(body_msg(a, false)).await;
    s.send(body_msg(b, true)).await;
    let rs = s.recv_n(2).await;
    assert_eq!(routed_to(&rs), pod(0));
    assert_eq!(
        body_chunk(&rs[1]),
        (completion("sql-lora-1fdg3", "test6"), true)
    );
    drop(s);
    h.stop().await;
}

#[tokio::test]
async fn header_only_request_with_no_pods_is_500_and_with_pods_is_routed() {
    let h = hermetic().await;
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(
        &[(":method", "GET"), (":path", "/v1/models")],
        true,
    ))
    .await;
    let rs = s.recv_all().await;
    assert_eq!(
        immediate(&rs[0]),
        (
            500,
            "inference error: Internal - no pods available in datastore".into()
        )
    );

    h.set_pods(&[(0, 0.1), (0, 0.1), (0, 0.1)]);
    let mut seen = HashSet::new();
    for _ in 0..30 {
        let mut s = Stream::open(&mut client).await;
        s.send(headers_msg(
            &[(":method", "GET"), (":path", "/v1/models")],
            true,
        ))
        .await;
        let r = s.recv().await.unwrap();
        let set = set_headers(&r);
        assert_eq!(header(&set, "Content-Length"), None);
        seen.insert(
            header(&set, "x-gateway-destination-endpoint")
                .unwrap()
                .to_string(),
        );
        assert!(
            header(&set, "x-request-id").is_some(),
            "a request id is generated"
        );
    }
    assert_eq!(seen.len(), 3, "GET picks uniformly at random: {seen:?}");
    h.stop().await;
}

#[tokio::test]
async fn subset_hint_restricts_candidates() {
    let h = hermetic().await;
    h.set_pods(&[(3, 0.2), (0, 0.1), (10, 0.2)]);
    let cases: [(&[&str], Option<String>); 3] = [
        (
            &["127.0.0.11:8000", "127.0.0.12:8000", "127.0.0.13:8000"],
            Some(pod(1)),
        ),
        (&["127.0.0.13:8000"], Some(pod(2))),
        (&["127.0.0.99:8000"], None),
    ];
    for (subset, want) in cases {
        let mut client = h.client().await;
        let mut s = Stream::open(&mut client).await;
        s.send(with_subset(
            headers_msg(&refs(&llm_headers("my-model", "")), false),
            subset,
        ))
        .await;
        s.send(body_msg(&completion("my-model", "x"), true)).await;
        let r = s.recv().await.unwrap();
        match want {
            Some(p) => assert_eq!(header(&set_headers(&r), "x-gateway-destination-endpoint"), Some(p.as_str())),
            None => assert_eq!(
                immediate(&r),
                (503, "inference error: ServiceUnavailable - failed to find endpoint candidates for serving the request".into())
            ),
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn empty_pool_for_a_body_request_is_503() {
    let h = hermetic().await;
    let rs = route(
        &h,
        &llm_headers("my-model", ""),
        &completion("my-model", "x"),
    )
    .await;
    assert_eq!(immediate(&rs[0]).0, 503);
    h.stop().await;
}

#[tokio::test]
async fn all_endpoints_filtered_is_429() {
    let h = Harness::start(Setup {
        config: Some(
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/conformance.yaml"
            ))
            .unwrap(),
        ),
        ..Default::default()
    })
    .await;
    h.set_pods(&[(0, 0.0), (0, 0.0), (0, 0.0)]);
    // No selection header: the conformance filter keeps nothing.
    let rs = route(&h, &llm_headers("m", ""), &completion("m", "x")).await;
    assert_eq!(
        immediate(&rs[0]),
        (429, "inference error: ResourceExhausted - failed to find target endpoint: failed to run scheduler profile 'conformance-profile': no endpoints available for the given request".into())
    );
    // With it, traffic stays on the named pods.
    let mut hdrs = llm_headers("m", "");
    hdrs.push((
        "test-epp-endpoint-selection".into(),
        format!("{},{}", pod_ip(0), pod(2)),
    ));
    for _ in 0..10 {
        let rs = route(&h, &hdrs, &completion("m", "x")).await;
        let to = routed_to(&rs);
        assert!(to == pod(0) || to == pod(2), "{to}");
    }
    h.stop().await;
}

#[tokio::test]
async fn model_not_in_objectives_passes_through_unchanged() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let rs = route(
        &h,
        &llm_headers("direct-model", "direct-model"),
        &completion("direct-model", "x"),
    )
    .await;
    assert_eq!(body_chunk(&rs[1]).0, completion("direct-model", "x"));
    let rs = route(
        &h,
        &llm_headers("unknown-objective", ""),
        &completion("m", "x"),
    )
    .await;
    assert_eq!(body_chunk(&rs[1]).0, completion("m", "x"));
    h.stop().await;
}

#[tokio::test]
async fn model_rewrite_rule_overrides_the_body_model() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    h.datastore.set_rewrites(vec![ModelRewrite {
        name: "rewrite-test".into(),
        rules: vec![RewriteRule {
            exact: vec!["model-to-be-rewritten".into()],
            targets: vec![RewriteTarget {
                model: "rewritten-model".into(),
                weight: 1,
            }],
        }],
        created: None,
    }]);
    let rs = route(
        &h,
        &llm_headers("my-model", ""),
        &completion("model-to-be-rewritten", "x"),
    )
    .await;
    assert_eq!(body_chunk(&rs[1]).0, completion("rewritten-model", "x"));
    let m = h.metrics_text();
    assert!(m.contains(r#"inference_objective_request_total{model_name="model-to-be-rewritten",target_model_name="rewritten-model",priority="2"} 1"#), "{m}");
    assert!(m.contains(r#"inference_extension_model_rewrite_decisions_total{model_rewrite_name="rewrite-test",model_name="model-to-be-rewritten",target_model="rewritten-model"} 1"#), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn too_large_body_is_413_by_content_length_and_by_bytes() {
    let h = Harness::start(Setup {
        config: Some(HERMETIC_CONFIG.to_string()),
        flags: switchyard::runtime::Flags {
            max_request_body_bytes: 1000,
            ..Setup::default().flags
        },
        ..Default::default()
    })
    .await;
    h.set_pods(&[(0, 0.1)]);
    let want = (413, "inference error: PayloadTooLarge - request body is larger than the limit of 1000 bytes (--max-request-body-bytes)".to_string());
    // Declared up front.
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(
        &[(":path", "/v1/completions"), ("content-length", "5000")],
        false,
    ))
    .await;
    assert_eq!(immediate(&s.recv().await.unwrap()), want);
    assert!(
        s.recv().await.is_none(),
        "the stream closes after an immediate response"
    );
    // Discovered while streaming (Envoy drops content-length in full-duplex mode).
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&[(":path", "/v1/completions")], false))
        .await;
    s.send(body_msg(&[b' '; 600], false)).await;
    s.send(body_msg(&[b' '; 600], false)).await;
    assert_eq!(immediate(&s.recv().await.unwrap()), want);
    h.stop().await;
}

#[tokio::test]
async fn five_megabyte_prompt_is_routed_in_62k_chunks() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1), (5, 0.5)]);
    let prompt = "abcdefghij".repeat(500_000);
    let body = completion("my-model", &prompt);
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&refs(&llm_headers("my-model", "")), false))
        .await;
    for (i, chunk) in body.chunks(64 * 1024).enumerate() {
        s.send(body_msg(chunk, (i + 1) * 64 * 1024 >= body.len()))
            .await;
    }
    let first = s.recv().await.unwrap();
    assert_eq!(
        header(&set_headers(&first), "x-gateway-destination-endpoint"),
        Some(pod(0).as_str())
    );
    let n = body.len().div_ceil(62_000);
    let rest = s.recv_n(n).await;
    for r in &rest {
        assert!(body_chunk(r).0.len() <= 62_000);
    }
    let (got, eos) = joined_body(&rest);
    assert!(eos);
    assert_eq!(got, body);
    drop(s);
    h.stop().await;
}

/// Drives a full exchange: route, then the response as Envoy streams it back.
async fn exchange(
    h: &Harness,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    response_headers: &[(&str, &str)],
    response_chunks: &[&[u8]],
) -> (Vec<switchyard_pb::Resp>, Vec<switchyard_pb::Resp>) {
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&refs(&headers), false)).await;
    s.send(body_msg(&body, true)).await;
    let req = s.recv_n(2).await;
    s.send(response_headers_msg(response_headers, false)).await;
    let mut resp = vec![s.recv().await.unwrap()];
    for (i, c) in response_chunks.iter().enumerate() {
        s.send(response_body_msg(c, i + 1 == response_chunks.len()))
            .await;
    }
    s.close();
    resp.extend(s.recv_all().await);
    (req, resp)
}

#[tokio::test]
async fn buffered_json_response_is_reemitted_once_with_usage() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let json = br#"{"id":"c1","object":"text_completion","model":"my-model-12345","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}"#;
    let (a, b) = json.split_at(40);
    let (_, resp) = exchange(
        &h,
        llm_headers("my-model", "my-model-12345"),
        completion("my-model", "x"),
        &[(":status", "200"), ("content-type", "application/json")],
        &[a, b],
    )
    .await;
    let set = set_headers(&resp[0]);
    assert_eq!(header(&set, "x-went-into-resp-headers"), Some("true"));
    assert_eq!(header(&set, "content-type"), Some("application/json"));
    assert_eq!(
        resp.len(),
        2,
        "one body message for the whole buffered body"
    );
    let (got, eos) = body_chunk(&resp[1]);
    assert!(eos);
    // The model name is mapped back to the one the client asked for.
    assert_eq!(
        String::from_utf8(got).unwrap(),
        String::from_utf8(json.to_vec())
            .unwrap()
            .replace("my-model-12345", "my-model")
    );
    let m = h.metrics_text();
    assert!(m.contains(r#"inference_objective_input_tokens_sum{model_name="my-model",target_model_name="my-model-12345"} 11.0"#), "{m}");
    assert!(m.contains(r#"inference_objective_output_tokens_count{model_name="my-model",target_model_name="my-model-12345"} 1"#), "{m}");
    assert!(
        m.contains(r#"inference_objective_running_requests{model_name="my-model"} 0"#),
        "{m}"
    );
    h.stop().await;
}

#[tokio::test]
async fn invalid_json_response_passes_through_and_empty_eos_chunk_is_fine() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let (_, resp) = exchange(
        &h,
        llm_headers("my-model", ""),
        completion("my-model", "x"),
        &[(":status", "200")],
        &[b"no healthy ", b"upstream", b""],
    )
    .await;
    let (got, eos) = joined_body(&resp[1..]);
    assert_eq!(got, b"no healthy upstream");
    assert!(eos);
    h.stop().await;
}

#[tokio::test]
async fn sse_chunks_are_echoed_one_for_one_and_usage_counted() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let chunks: [&[u8]; 4] = [
        b"data: {}\n\n",
        b"data: {\"choices\":[],\"usage\":{\"prompt_tok",
        b"ens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
        b"",
    ];
    let (_, resp) = exchange(
        &h,
        llm_headers("my-model", ""),
        completion("my-model", "x"),
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &chunks,
    )
    .await;
    assert_eq!(resp.len(), 1 + 4);
    for (r, c) in resp[1..].iter().zip(chunks) {
        assert_eq!(body_chunk(r).0, c.to_vec());
    }
    assert!(body_chunk(&resp[4]).1);
    let m = h.metrics_text();
    assert!(m.contains(r#"inference_objective_input_tokens_sum{model_name="my-model",target_model_name="my-model"} 7.0"#), "{m}");
    assert!(m.contains(r#"inference_objective_input_tokens_count{model_name="my-model",target_model_name="my-model"} 1"#), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn sse_model_name_split_across_chunks_is_rewritten_back() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let stream = "data: {\"model\":\"target-model\",\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"model\":\"target-model\",\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    let bytes = stream.as_bytes();
    let pieces: Vec<&[u8]> = vec![&bytes[..20], &bytes[20..70], &bytes[70..]];
    let (_, resp) = exchange(
        &h,
        llm_headers("my-model", "target-model"),
        completion("my-model", "x"),
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &pieces,
    )
    .await;
    let (got, eos) = joined_body(&resp[1..]);
    assert!(eos);
    assert_eq!(
        String::from_utf8(got).unwrap(),
        stream.replace("target-model", "my-model")
    );
    h.stop().await;
}

#[tokio::test]
async fn response_trailers_get_an_empty_trailers_response() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&refs(&llm_headers("my-model", "")), false))
        .await;
    s.send(body_msg(&completion("my-model", "x"), false)).await;
    // HTTP/2 request that ends with trailers instead of an end-of-stream body.
    s.send(request_trailers_msg()).await;
    let rs = s.recv_n(3).await;
    assert_eq!(
        header(&set_headers(&rs[0]), "x-gateway-destination-endpoint"),
        Some(pod(0).as_str())
    );
    assert!(body_chunk(&rs[1]).1);
    assert!(is_request_trailers(&rs[2]));
    s.send(response_headers_msg(&[(":status", "200")], false))
        .await;
    s.send(response_body_msg(
        br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        false,
    ))
    .await;
    s.send(response_trailers_msg()).await;
    s.close();
    let rest = s.recv_all().await;
    assert_eq!(rest.len(), 3);
    assert_eq!(
        body_chunk(&rest[1]),
        (
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#.to_vec(),
            false
        )
    );
    assert!(is_response_trailers(&rest[2]));
    h.stop().await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_releases_the_request() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    {
        let mut client = h.client().await;
        let mut s = Stream::open(&mut client).await;
        s.send(headers_msg(&refs(&llm_headers("my-model", "")), false))
            .await;
        s.send(body_msg(&completion("my-model", "x"), true)).await;
        s.recv_n(2).await;
        s.send(response_headers_msg(
            &[(":status", "200"), ("content-type", "text/event-stream")],
            false,
        ))
        .await;
        s.recv().await.unwrap();
        s.send(response_body_msg(b"data: {}\n\n", false)).await;
        s.recv().await.unwrap();
        let m = h.metrics_text();
        assert!(
            m.contains(r#"inference_objective_running_requests{model_name="my-model"} 1"#),
            "{m}"
        );
        // The client goes away: stream and channel dropped without end of stream.
    }
    let mut released = false;
    for _ in 0..100 {
        if h.metrics_text()
            .contains(r#"inference_objective_running_requests{model_name="my-model"} 0"#)
        {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        released,
        "running request released after disconnect: {}",
        h.metrics_text()
    );
    // Other streams are unaffected.
    let rs = route(
        &h,
        &llm_headers("my-model", ""),
        &completion("my-model", "x"),
    )
    .await;
    assert_eq!(routed_to(&rs), pod(0));
    h.stop().await;
}

#[tokio::test]
async fn generated_request_id_is_forwarded() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let rs = route(
        &h,
        &[(":path".to_string(), "/v1/completions".to_string())],
        &completion("m", "x"),
    )
    .await;
    let set = set_headers(&rs[0]);
    let id = header(&set, "x-request-id").expect("generated");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    h.stop().await;
}

#[tokio::test]
async fn health_reports_serving_for_any_service_name() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let h = hermetic().await;
    for addr in [h.health_addr, h.addr] {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = HealthClient::new(ch);
        for service in [
            "",
            "inference-extension",
            "envoy.service.ext_proc.v3.ExternalProcessor",
            "anything",
        ] {
            let r = c
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap();
            assert_eq!(
                r.into_inner().status,
                1,
                "SERVING for {service:?} on {addr}"
            );
        }
    }
    h.readiness.set(false);
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", h.health_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = HealthClient::new(ch);
    let r = c
        .check(HealthCheckRequest {
            service: "inference-extension".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status, 2, "NOT_SERVING");
    let err = c.watch(HealthCheckRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    h.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_serves_gie_names() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    route(
        &h,
        &llm_headers("my-model", ""),
        &completion("my-model", "x"),
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(h.metrics_addr)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // No Accept header: the Prometheus text format 0.0.4, as from the Go client.
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(text.contains("inference_objective_request_total{"));
    assert!(
        text.contains("inference_extension_scheduler_e2e_duration_seconds_count 1"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn tls_with_cert_path_serves_ext_proc() {
    let pair = switchyard::server::tls::self_signed().unwrap();
    let h = Harness::start(Setup {
        config: Some(HERMETIC_CONFIG.to_string()),
        tls: Some(pair.clone()),
        ..Default::default()
    })
    .await;
    h.set_pods(&[(0, 0.1)]);
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pair.cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", h.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient::new(channel);
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&refs(&llm_headers("my-model", "")), false))
        .await;
    s.send(body_msg(&completion("my-model", "x"), true)).await;
    let rs = s.recv_n(2).await;
    assert_eq!(routed_to(&rs), pod(0));
    // Plaintext is refused by a TLS server.
    let plain = envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient::connect(format!("http://{}", h.addr)).await;
    if let Ok(mut c) = plain {
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        assert!(
            c.process(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .is_err()
        );
    }
    drop(s);
    drop(client);
    h.stop().await;
}

#[tokio::test]
async fn stop_signal_lets_open_streams_finish() {
    let h = hermetic().await;
    h.set_pods(&[(0, 0.1)]);
    let mut client = h.client().await;
    let mut s = Stream::open(&mut client).await;
    s.send(headers_msg(&refs(&llm_headers("my-model", "")), false))
        .await;
    s.send(body_msg(&completion("my-model", "x"), true)).await;
    s.recv_n(2).await;
    let readiness = h.readiness.clone();
    let stopping = tokio::spawn(h.stop());
    // Readiness drops at once so the gateway stops sending new streams here...
    for _ in 0..100 {
        if !readiness.get() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!readiness.get());
    // ...while the open stream still gets its response processed.
    s.send(response_headers_msg(&[(":status", "200")], false))
        .await;
    s.send(response_body_msg(b"{}", true)).await;
    s.close();
    let rest = s.recv_all().await;
    assert_eq!(rest.len(), 2);
    assert!(body_chunk(&rest[1]).1);
    drop(s);
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn conformance_served_verifier_reports_the_served_endpoint() {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let h = Harness::start(Setup {
        config: Some(
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/conformance.yaml"
            ))
            .unwrap(),
        ),
        ..Default::default()
    })
    .await;
    h.set_pods(&[(0, 0.0), (0, 0.0)]);
    let mut hdrs = llm_headers("m", "");
    hdrs.push(("test-epp-endpoint-selection".into(), pod_ip(1)));
    for served in [Some(pod(1)), None] {
        let mut client = h.client().await;
        let mut s = Stream::open(&mut client).await;
        s.send(headers_msg(&refs(&hdrs), false)).await;
        s.send(body_msg(&completion("m", "x"), true)).await;
        let rs = s.recv_n(2).await;
        assert_eq!(routed_to(&rs), pod(1));
        let mut msg = response_headers_msg(&[(":status", "200")], false);
        let fields = served
            .iter()
            .map(|p| {
                (
                    "x-gateway-destination-endpoint-served".to_string(),
                    Value {
                        kind: Some(Kind::StringValue(p.clone())),
                    },
                )
            })
            .collect();
        msg.metadata_context = Some(Metadata {
            filter_metadata: HashMap::from([("envoy.lb".to_string(), Struct { fields })]),
            ..Default::default()
        });
        s.send(msg).await;
        let r = s.recv().await.unwrap();
        let want = served
            .clone()
            .unwrap_or_else(|| "fail: missing destination endpoint served metadata".into());
        assert_eq!(
            header(&set_headers(&r), "x-conformance-test-served-endpoint"),
            Some(want.as_str())
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn repeated_prompts_stick_to_the_endpoint_that_cached_them() {
    let h = Harness::start(Setup::default()).await; // the default config: queue 2, KV 2, prefix 3
    h.set_pods(&[(0, 0.1), (0, 0.1), (0, 0.1), (0, 0.1)]);
    let system = "You are a helpful assistant who answers in detail. ".repeat(40);
    let mut first_for_group = Vec::new();
    for g in 0..3 {
        let prompt = format!("{g}{system}");
        let rs = route(&h, &llm_headers("m", ""), &completion("m", &prompt)).await;
        first_for_group.push(routed_to(&rs));
    }
    for round in 0..5 {
        for (g, first) in first_for_group.iter().enumerate() {
            let prompt = format!("{g}{system} question {round}");
            let rs = route(&h, &llm_headers("m", ""), &completion("m", &prompt)).await;
            assert_eq!(&routed_to(&rs), first, "group {g} round {round}");
        }
    }
    h.stop().await;
}
