//! Fake pods over loopback: the OpenAI surface (JSON, SSE with usage, cached tokens, chunked
//! bodies, errors) and every personality's `/metrics` read by Switchyard's own parser and
//! engine mappings.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::datalayer::EngineMapping;
use switchyard::scheduling::{EndpointMetrics, Timestamp};
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::exposition::Personality;
use switchyard_sim::pod::{Pod, PodSpec};

fn ip(last: u8) -> IpAddr {
    format!("127.0.0.{last}").parse().unwrap()
}

async fn pod(last: u8, personality: Personality, engine: EngineConfig) -> Pod {
    Pod::spawn(PodSpec {
        ip: ip(last),
        port: 0,
        personality,
        engine,
    })
    .await
    .expect("pod starts")
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn prompt(chars: usize) -> String {
    "abcd".repeat(chars / 4)
}

#[tokio::test]
async fn json_completion_reports_usage_and_cached_tokens_on_a_repeat() {
    let p = pod(61, Personality::Vllm, EngineConfig::h100_llama3_8b()).await;
    let http = client();
    let url = format!("http://{}/v1/completions", p.addr);
    let body = json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt(4000), "max_tokens": 5});
    let first: Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["usage"]["prompt_tokens"], 1000);
    assert_eq!(first["usage"]["completion_tokens"], 5);
    assert_eq!(first["usage"]["total_tokens"], 1005);
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(first["choices"][0]["finish_reason"], "length");
    assert_eq!(first["choices"][0]["text"], " the cat sat on a");

    let second: Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // 1000 tokens = 62 full blocks of 16 (992 tokens) are cached; the partial block is not.
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"],
        992
    );
    let stats = p.stats();
    assert_eq!(stats.prefix_cache_queries_tokens, 2000);
    assert_eq!(stats.prefix_cache_hits_tokens, 992);
    p.stop().await;
}

#[tokio::test]
async fn sse_chat_stream_ends_with_usage_then_done() {
    let p = pod(62, Personality::Vllm, EngineConfig::h100_llama3_8b()).await;
    let body = json!({
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "messages": [{"role": "user", "content": prompt(400)}],
        "max_tokens": 4,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let resp = client()
        .post(format!("http://{}/v1/chat/completions", p.addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is a data line")
        })
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    // 4 token deltas, the finish chunk, the usage chunk, [DONE].
    assert_eq!(events.len(), 7, "{text}");
    let content: String = events[..4]
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(content, " the cat sat on");
    let finish: Value = serde_json::from_str(events[4]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage: Value = serde_json::from_str(events[5]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 100);
    p.stop().await;
}

#[tokio::test]
async fn sse_without_include_usage_has_no_usage_chunk() {
    let p = pod(63, Personality::Vllm, EngineConfig::h100_llama3_8b()).await;
    let body = json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": "hello", "max_tokens": 2, "stream": true});
    let text = client()
        .post(format!("http://{}/v1/completions", p.addr))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    p.stop().await;
}

#[tokio::test]
async fn chunked_body_without_content_length_is_served() {
    let p = pod(64, Personality::Vllm, EngineConfig::h100_llama3_8b()).await;
    let raw = json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt(8000), "max_tokens": 1}).to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = raw
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = client()
        .post(format!("http://{}/v1/completions", p.addr))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 2000);
    p.stop().await;
}

#[tokio::test]
async fn bad_requests_get_400_with_a_message() {
    let p = pod(65, Personality::Vllm, EngineConfig::h100_llama3_8b()).await;
    let http = client();
    let url = format!("http://{}/v1/completions", p.addr);
    for (body, msg) in [
        ("{not json".to_string(), "invalid JSON"),
        (json!({"prompt": "x"}).to_string(), "model is required"),
        (json!({"model": "m"}).to_string(), "prompt is required"),
    ] {
        let resp = http.post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(msg), "{v}");
    }
    let resp = http
        .post(format!("http://{}/v1/chat/completions", p.addr))
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Longer than the model's context: the engine refuses it.
    let mut small = EngineConfig::h100_llama3_8b();
    small.max_model_len = 256;
    let q = pod(66, Personality::Vllm, small).await;
    let resp = http
        .post(format!("http://{}/v1/completions", q.addr))
        .json(&json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt(4000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    p.stop().await;
    q.stop().await;
}

/// Every personality's page, under load, read by Switchyard's parser with the built-in mapping
/// of that engine: no spec fails and the values match the pod's own state.
#[tokio::test]
async fn switchyard_reads_every_personality() {
    for (i, personality) in [
        Personality::Vllm,
        Personality::Sglang,
        Personality::TrtllmServe,
        Personality::TritonTrtllm,
    ]
    .into_iter()
    .enumerate()
    {
        let mut engine = EngineConfig::h100_llama3_8b();
        engine.max_num_seqs = 2; // so a queue forms
        let p = pod(70 + i as u8, personality, engine).await;
        let http = client();
        let url = format!("http://{}/v1/completions", p.addr);
        let mut inflight = Vec::new();
        for _ in 0..5 {
            let http = http.clone();
            let url = url.clone();
            inflight.push(tokio::spawn(async move {
                http.post(&url)
                    .json(&json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt(2000), "max_tokens": 2000}))
                    .send()
                    .await
            }));
        }
        // Wait until the engine runs 2 and queues 3.
        let mut ready = false;
        for _ in 0..200 {
            let s = p.stats();
            if s.num_requests_running == 2 && s.num_requests_waiting == 3 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(ready, "{}: the engine never queued", personality.name());
        let page = http
            .get(format!("http://{}{}", p.addr, personality.metrics_path()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let stats = p.stats();
        let mapping = EngineMapping::builtin(personality.name()).expect("a built-in engine");
        let ex = mapping.extract(
            &page,
            &EndpointMetrics::default(),
            Timestamp::from_millis(1),
        );
        assert!(
            ex.errors.is_empty(),
            "{}: {:?}",
            personality.name(),
            ex.errors
        );
        assert_eq!(ex.stats.bad_lines, 0, "{}", personality.name());
        let m = &ex.metrics;
        assert_eq!(m.running_requests_size, 2, "{}", personality.name());
        assert_eq!(m.waiting_queue_size, 3, "{}", personality.name());
        assert!(
            m.kv_cache_usage > 0.0 && m.kv_cache_usage <= 1.0,
            "{}",
            personality.name()
        );
        assert!(
            (m.kv_cache_usage - stats.kv_cache_usage).abs() < 0.05,
            "{}: {} vs {}",
            personality.name(),
            m.kv_cache_usage,
            stats.kv_cache_usage
        );
        if personality == Personality::Vllm {
            assert_eq!(m.cache_block_size, 16);
            assert_eq!(m.cache_num_blocks, u64::from(stats.num_gpu_blocks));
            assert!(m.max_active_models > 0);
        }
        for t in inflight {
            t.abort();
        }
        p.stop().await;
    }
}

#[tokio::test]
async fn a_killed_pod_cuts_its_streams_and_refuses_connections() {
    let p = pod(69, Personality::Vllm, EngineConfig::h100_llama3_8b()).await;
    let addr = p.addr;
    let http = client();
    let url = format!("http://{addr}/v1/completions");
    let mut r = http
        .post(&url)
        .json(&json!({"model": "served-as", "prompt": prompt(400), "max_tokens": 2000, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    assert_eq!(
        p.requests_by_model().into_iter().collect::<Vec<_>>(),
        vec![("served-as".to_string(), 1)]
    );
    p.kill().await;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("the stream ends at once")
        {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(end.is_err(), "cut, not finished: {end:?}");
    assert!(http.post(&url).body("{}").send().await.is_err());
}
