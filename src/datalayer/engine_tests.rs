use std::collections::BTreeMap;

use super::*;
use crate::datalayer::fake::{EngineState, LoraState, VllmPage};

const SGLANG: &str = include_str!("testdata/sglang-docs-example.txt");
const TRITON: &str = include_str!("testdata/triton-trtllm-docs-example.txt");
const VLLM_DOCS: &str = include_str!("testdata/vllm-v1-docs-example.txt");

const NOW: Timestamp = Timestamp::from_millis(42);

fn extract(engine: &str, text: &str) -> Extraction {
    EngineMapping::builtin(engine).unwrap().extract(
        text.as_bytes(),
        &EndpointMetrics::default(),
        NOW,
    )
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn engine(waiting: u64, running: u64, kv_usage: f64) -> EngineState {
    EngineState {
        waiting,
        running,
        kv_usage,
    }
}

#[test]
fn vllm_single_engine_page() {
    let page = VllmPage {
        engines: vec![engine(3, 7, 0.25)],
        block_size: 32,
        num_gpu_blocks: 34_470,
        ..Default::default()
    };
    let x = extract("vllm", &page.render());
    assert_eq!(x.metrics.waiting_queue_size, 3);
    assert_eq!(x.metrics.running_requests_size, 7);
    assert_eq!(x.metrics.kv_cache_usage, 0.25);
    assert_eq!(x.metrics.cache_block_size, 32);
    assert_eq!(x.metrics.cache_num_blocks, 34_470);
    assert_eq!(x.metrics.updated_at, Some(NOW));
    // No LoRA on this server: that one spec fails, like GIE's "metric family not found".
    assert_eq!(
        x.errors,
        vec![SpecError::new(Role::Lora, ErrorKind::NotFound)]
    );
    assert_eq!(x.succeeded, 4);
    assert_eq!(x.stats.bad_lines, 0);
    assert_eq!(x.stats.samples, 4);
}

#[test]
fn vllm_data_parallel_ranks_are_aggregated() {
    let page = VllmPage {
        engines: vec![engine(3, 7, 0.25), engine(5, 1, 0.75), engine(0, 2, 0.5)],
        ..Default::default()
    };
    let x = extract("vllm", &page.render());
    assert_eq!(x.metrics.waiting_queue_size, 8, "queues are summed");
    assert_eq!(x.metrics.running_requests_size, 10, "running is summed");
    assert_eq!(
        x.metrics.kv_cache_usage, 0.75,
        "KV usage is the busiest rank's"
    );
    assert_eq!(x.metrics.cache_block_size, 16);
    assert_eq!(x.metrics.cache_num_blocks, 27_000, "one rank's blocks");
}

#[test]
fn series_that_differ_by_more_than_the_rank_are_not_summed() {
    let text = "vllm:num_requests_waiting{engine=\"0\",model_name=\"a\"} 3\n\
                vllm:num_requests_waiting{engine=\"1\",model_name=\"b\"} 4\n\
                vllm:num_requests_waiting{model_name=\"a\",engine=\"1\"} 5\n\
                vllm:num_requests_waiting{model_name=\"a\",engine=\"0\"} 6\n\
                vllm:num_requests_running{model_name=\"a\"} 1\n\
                vllm:num_requests_running{model_name=\"a\"} 9\n";
    let x = extract("vllm", text);
    // Rank 0 and the other rank of model a (label order does not matter); b is another server;
    // the exact duplicate of rank 0 is not a new rank.
    assert_eq!(x.metrics.waiting_queue_size, 8);
    assert_eq!(
        x.metrics.running_requests_size, 1,
        "a duplicate series is ignored"
    );
}

#[test]
fn newest_timestamp_wins_between_unrelated_series() {
    let text = "vllm:num_requests_waiting{pod=\"a\"} 3 1000\n\
                vllm:num_requests_waiting{pod=\"b\"} 4 2000\n\
                vllm:num_requests_waiting{pod=\"c\"} 5 1500\n";
    assert_eq!(extract("vllm", text).metrics.waiting_queue_size, 4);
}

#[test]
fn vllm_falls_back_to_the_old_kv_name() {
    let page = VllmPage {
        engines: vec![engine(0, 0, 0.6)],
        legacy_kv_name: true,
        ..Default::default()
    };
    let x = extract("vllm", &page.render());
    assert_eq!(x.metrics.kv_cache_usage, 0.6);
    assert!(!x.errors.iter().any(|e| e.role == Role::KvUsage));
    // When both exist the current name wins.
    let text = "vllm:kv_cache_usage_perc 0.1\nvllm:gpu_cache_usage_perc 0.9\n";
    assert_eq!(extract("vllm", text).metrics.kv_cache_usage, 0.1);
}

#[test]
fn kv_usage_is_clamped_and_flagged() {
    let x = extract("vllm", "vllm:kv_cache_usage_perc 87.5\n");
    assert_eq!(x.metrics.kv_cache_usage, 1.0);
    assert_eq!(x.kv_above_one, Some(87.5));
}

#[test]
fn unusable_load_values_count_as_fully_loaded_and_not_fresh() {
    for (line, role) in [
        ("vllm:kv_cache_usage_perc NaN", Role::KvUsage),
        ("vllm:kv_cache_usage_perc -0.5", Role::KvUsage),
        ("vllm:num_requests_waiting NaN", Role::Queued),
        ("vllm:num_requests_waiting -3", Role::Queued),
        ("vllm:num_requests_running +Inf", Role::Running),
    ] {
        let name = line.split(' ').next().unwrap();
        let page: String = [
            "vllm:num_requests_waiting 0",
            "vllm:num_requests_running 1",
            "vllm:kv_cache_usage_perc 0.1",
        ]
        .iter()
        .map(|good| if good.starts_with(name) { line } else { good })
        .map(|l| format!("{l}\n"))
        .collect();
        let x = extract("vllm", &page);
        assert!(
            x.errors
                .contains(&SpecError::new(role, ErrorKind::BadValue)),
            "{line}: {:?}",
            x.errors
        );
        assert!(x.bad_load);
        assert_eq!(x.metrics.updated_at, None, "{line}: not fresh");
        let m = &x.metrics;
        let worst = match role {
            Role::Queued => m.waiting_queue_size == u64::MAX,
            Role::Running => m.running_requests_size == u64::MAX,
            _ => m.kv_cache_usage == 1.0,
        };
        assert!(worst, "{line}: {m:?}");
    }
}

#[test]
fn vllm_lora_takes_the_newest_series() {
    let page = VllmPage {
        lora: Some(LoraState {
            max_lora: 4,
            running: vec!["sql-lora".into(), " tweet-summary ".into()],
            waiting: vec![],
            updated: 1.7e9,
        }),
        ..Default::default()
    };
    let mut text = page.render();
    // An older series lingers (vLLM never removes label combinations).
    text.push_str(
        "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"old\",waiting_lora_adapters=\"x,y\"} 1.6e9\n",
    );
    let x = extract("vllm", &text);
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    assert_eq!(x.metrics.active_models, set(&["sql-lora", "tweet-summary"]));
    assert!(x.metrics.waiting_models.is_empty());
    assert_eq!(x.metrics.max_active_models, 4);
    let x = extract(
        "vllm",
        "vllm:lora_requests_info{max_lora=\"1\",running_lora_adapters=\"\",waiting_lora_adapters=\"a, b,\"} 1\n",
    );
    assert_eq!(x.metrics.waiting_models, set(&["a", "b"]));
    assert!(x.metrics.active_models.is_empty());
}

#[test]
fn vllm_docs_sample() {
    let x = extract("vllm", VLLM_DOCS);
    assert_eq!(x.metrics.running_requests_size, 8);
    assert_eq!(
        x.stats.bad_lines, 1,
        "the docs' elided cache_config_info line"
    );
    let roles: Vec<Role> = x.errors.iter().map(|e| e.role).collect();
    assert_eq!(
        roles,
        vec![Role::Queued, Role::KvUsage, Role::Lora, Role::CacheInfo]
    );
}

#[test]
fn sglang_docs_sample() {
    let x = extract("sglang", SGLANG);
    assert_eq!(x.metrics.waiting_queue_size, 2826);
    assert_eq!(x.metrics.running_requests_size, 162);
    assert_eq!(x.metrics.kv_cache_usage, 0.28);
    // This build predates sglang:cache_config_info.
    assert_eq!(
        x.errors,
        vec![SpecError::new(Role::CacheInfo, ErrorKind::NotFound)]
    );
    let with_info = format!(
        "{SGLANG}# TYPE sglang:cache_config_info gauge\nsglang:cache_config_info{{model_name=\"m\",page_size=\"64\",num_pages=\"4000\"}} 1\n"
    );
    let x = extract("sglang", &with_info);
    assert!(x.errors.is_empty());
    assert_eq!(
        (x.metrics.cache_block_size, x.metrics.cache_num_blocks),
        (64, 4000)
    );
}

#[test]
fn triton_docs_sample() {
    let x = extract("triton-tensorrt-llm", TRITON);
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    assert_eq!(x.metrics.waiting_queue_size, 1);
    assert_eq!(x.metrics.running_requests_size, 1);
    assert_eq!(x.metrics.kv_cache_usage, 0.4875);
    assert_eq!(x.metrics.cache_block_size, 64);
    assert_eq!(x.metrics.cache_num_blocks, 6239);
}

#[test]
fn trtllm_serve_page() {
    let text = "# HELP trtllm_num_requests_waiting Number of requests waiting.\n\
                # TYPE trtllm_num_requests_waiting gauge\n\
                trtllm_num_requests_waiting{model_name=\"llama\",engine_type=\"trtllm\"} 4.0\n\
                # TYPE trtllm_num_requests_running gauge\n\
                trtllm_num_requests_running{model_name=\"llama\",engine_type=\"trtllm\"} 12.0\n\
                # TYPE trtllm_kv_cache_utilization gauge\n\
                trtllm_kv_cache_utilization{model_name=\"llama\",engine_type=\"trtllm\"} 0.33\n\
                # TYPE trtllm_kv_cache_hit_rate gauge\n\
                trtllm_kv_cache_hit_rate{model_name=\"llama\",engine_type=\"trtllm\"} 0.5\n\
                # TYPE trtllm_kv_cache_tokens_per_block gauge\n\
                trtllm_kv_cache_tokens_per_block{model_name=\"llama\",engine_type=\"trtllm\"} 32\n\
                # TYPE trtllm_kv_cache_max_blocks gauge\n\
                trtllm_kv_cache_max_blocks{model_name=\"llama\",engine_type=\"trtllm\"} 8192\n\
                # TYPE trtllm_e2e_request_latency_seconds histogram\n\
                trtllm_e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"llama\"} 3\n";
    let x = extract("trtllm-serve", text);
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    assert_eq!(
        (
            x.metrics.waiting_queue_size,
            x.metrics.running_requests_size,
            x.metrics.kv_cache_usage,
            x.metrics.cache_block_size,
            x.metrics.cache_num_blocks
        ),
        (4, 12, 0.33, 32, 8192)
    );
}

#[test]
fn failed_specs_keep_previous_values() {
    let prev = EndpointMetrics {
        waiting_queue_size: 9,
        kv_cache_usage: 0.9,
        updated_at: Some(Timestamp::from_millis(1)),
        ..Default::default()
    };
    let m = EngineMapping::builtin("vllm").unwrap();
    let x = m.extract(b"vllm:num_requests_running 2\n", &prev, NOW);
    assert_eq!(x.metrics.running_requests_size, 2);
    assert_eq!(
        (x.metrics.waiting_queue_size, x.metrics.kv_cache_usage),
        (9, 0.9)
    );
    assert_eq!(x.metrics.updated_at, Some(NOW));
    // Nothing readable: the old snapshot and its timestamp stay.
    let x = m.extract(b"<html>502 Bad Gateway</html>", &prev, NOW);
    assert_eq!(x.metrics, prev);
    assert_eq!(x.succeeded, 0);
    assert_eq!(x.stats.bad_lines, 1);
}

#[test]
fn histogram_and_summary_typed_specs_read_zero_like_gie() {
    let text = "# TYPE vllm:num_requests_waiting summary\nvllm:num_requests_waiting 5\n";
    let x = extract("vllm", text);
    assert_eq!(x.metrics.waiting_queue_size, 0);
    let text = "vllm:num_requests_waiting 5\n";
    assert_eq!(
        extract("vllm", text).metrics.waiting_queue_size,
        5,
        "untyped reads"
    );
}

#[test]
fn engine_selection_and_user_overrides() {
    let ep = |engine: Option<&str>| {
        let mut labels = BTreeMap::new();
        if let Some(e) = engine {
            labels.insert(
                "inference.networking.k8s.io/engine-type".to_string(),
                e.to_string(),
            );
        }
        Endpoint::new("e", "127.0.0.1".parse().unwrap(), 8000).with_labels(labels)
    };
    let engines = Engines::default();
    assert_eq!(engines.select(&ep(None)).name, "vllm");
    assert_eq!(engines.select(&ep(Some("sglang"))).name, "sglang");
    assert_eq!(engines.select(&ep(Some("nonesuch"))).name, "vllm");

    // A user entry with a built-in name replaces it entirely: no fallback, no cache info.
    let user = EngineConfig {
        name: "vllm".into(),
        queued_requests_spec: MetricSpec::parse("custom_waiting{kind=\"q\"}").unwrap(),
        running_requests_spec: None,
        kv_usage_spec: MetricSpec::parse("custom_kv").unwrap(),
        lora_spec: None,
        cache_info_spec: None,
        cache_block_size_label_name: None,
        cache_num_blocks_label_name: None,
        cache_block_size_spec: None,
        cache_num_blocks_spec: None,
    };
    let mine = EngineConfig {
        name: "mine".into(),
        ..user.clone()
    };
    let engines = Engines::new(&ExtractorParams {
        engine_label_key: "engine".into(),
        default_engine: "sglang".into(),
        engine_configs: vec![user, mine],
    });
    let mut labels = BTreeMap::new();
    labels.insert("engine".to_string(), "vllm".to_string());
    let e = Endpoint::new("e", "127.0.0.1".parse().unwrap(), 8000).with_labels(labels);
    let m = engines.select(&e);
    assert_eq!(
        m.wanted(),
        &["custom_waiting".to_string(), "custom_kv".to_string()]
    );
    let x = m.extract(
        b"custom_waiting{kind=\"other\"} 1\ncustom_waiting{kind=\"q\"} 6\nvllm:gpu_cache_usage_perc 0.5\n",
        &EndpointMetrics::default(),
        NOW,
    );
    assert_eq!(x.metrics.waiting_queue_size, 6);
    assert_eq!(
        x.errors,
        vec![SpecError::new(Role::KvUsage, ErrorKind::NotFound)]
    );
    assert_eq!(engines.select(&ep(None)).name, "sglang", "defaultEngine");
    assert!(engines.get("mine").is_some());
}

#[test]
fn error_messages_name_the_role() {
    assert_eq!(
        SpecError::new(Role::Lora, ErrorKind::NotFound).to_string(),
        "lora: metric not found"
    );
    assert_eq!(
        SpecError::new(Role::CacheInfo, ErrorKind::BadLabel("block_size".into())).to_string(),
        "cacheInfo: label \"block_size\" missing or not an integer"
    );
}

#[test]
fn triton_reads_queue_and_running_counts_only() {
    let text = "nv_inference_pending_request_count{model=\"resnet\",version=\"1\"} 3\n\
                nv_inference_exec_count{model=\"resnet\",version=\"1\"} 7\n";
    let x = extract("triton", text);
    assert_eq!(x.metrics.waiting_queue_size, 3);
    assert_eq!(x.metrics.running_requests_size, 7);
}
