//! Trace readers on the excerpts in `tests/data` (see its README for sources and licences).

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_sim::des::IdealCache;
use switchyard_sim::engine::EngineConfig;
use switchyard_sim::trace::{self, PromptSource, TenantRule};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn mooncake_blocks_become_shared_text_prefixes() {
    let t = trace::read_mooncake(&data("mooncake_conversation_head200.jsonl")).unwrap();
    assert_eq!(t.requests.len(), 200);
    assert!(t.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    let first = &t.requests[0];
    assert_eq!((first.prompt_tokens, first.output_tokens), (6758, 500));
    assert_eq!(first.prompt_text().len(), 6758 * 4);

    // The ideal hit rate with 16-token blocks matches the one counted on the trace's own
    // 512-token block ids: shared ids became shared text.
    let cfg = EngineConfig::h100_llama3_8b();
    let ideal = IdealCache::of_trace(&t, &cfg.model, cfg.block_size);
    let mut seen = std::collections::HashSet::new();
    let (mut hit, mut total) = (0u64, 0u64);
    for r in &t.requests {
        let PromptSource::Blocks { ids, .. } = &r.prompt else {
            panic!("block prompt")
        };
        let n = u64::from(r.prompt_tokens);
        let mut h = 0u64;
        for (i, id) in ids.iter().enumerate() {
            if !seen.contains(id) {
                break;
            }
            h = (512 * (i as u64 + 1)).min(n - 1) / 16 * 16;
        }
        seen.extend(ids.iter().copied());
        hit += h;
        total += n;
    }
    let by_ids = hit as f64 / total as f64;
    assert!(by_ids > 0.05, "{by_ids}");
    assert!(
        (ideal - by_ids).abs() < 1e-9,
        "ideal {ideal} vs block ids {by_ids}"
    );
}

#[test]
fn tenants_by_block_hash_follow_shared_prefixes() {
    let mut t = trace::read_mooncake(&data("mooncake_conversation_head200.jsonl")).unwrap();
    t.assign_tenants(TenantRule::parse("hash-block", 4).unwrap());
    assert_eq!(t.tenants().len(), 4);
    let mut by_block = std::collections::HashMap::new();
    for r in &t.requests {
        let PromptSource::Blocks { ids, .. } = &r.prompt else {
            unreachable!()
        };
        if ids.len() > 1 {
            let prev = by_block.insert(ids[1], r.tenant.clone());
            assert!(prev.is_none_or(|p| p == r.tenant));
        }
    }
    t.assign_tenants(TenantRule::parse("round-robin", 3).unwrap());
    assert_eq!(t.requests[4].tenant, "tenant-1");
}

#[test]
fn azure_csv() {
    let t = trace::read_azure(&data("azure_conv_2023_head200.csv")).unwrap();
    assert_eq!(t.requests.len(), 200);
    let r0 = &t.requests[0];
    assert_eq!(r0.arrival, Duration::ZERO);
    assert_eq!((r0.prompt_tokens, r0.output_tokens), (374, 44));
    // 2023-11-16 18:15:50.9951690 is 4.314579 s after the first row.
    let r1 = &t.requests[1];
    assert!(
        (r1.arrival.as_secs_f64() - 4.314_579).abs() < 1e-6,
        "{:?}",
        r1.arrival
    );
    // No prefix information: prompts are private.
    assert_ne!(r0.prompt_text()[..64], t.requests[2].prompt_text()[..64]);
}

#[test]
fn vtc_artifact_results() {
    let t = trace::read_vtc_results(&data("vtc_FCFS_all_results_real.jsonl")).unwrap();
    assert_eq!(t.requests.len(), 1500);
    assert_eq!(t.tenants().len(), 27);
    assert_eq!(t.duration, Some(Duration::from_secs(600)));
    assert!(t.requests.last().unwrap().arrival <= Duration::from_secs(600));
    assert!(
        t.requests
            .iter()
            .all(|r| (1..=1024).contains(&r.prompt_tokens))
    );
}

#[test]
fn readers_report_the_bad_line() {
    let dir = std::env::temp_dir().join(format!("sy-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 1}\nnot json\n",
    )
    .unwrap();
    let e = trace::read_mooncake(&p).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2"), "{e}");
    let p = dir.join("bad.csv");
    std::fs::write(
        &p,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,x,3\n",
    )
    .unwrap();
    let e = trace::read_azure(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.csv:2") && e.contains("ContextTokens"),
        "{e}"
    );
    assert!(trace::read_azure(&dir.join("missing.csv")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
