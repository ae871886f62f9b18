//! `switchyard-sim run` / `compare` / `baselines` as a user runs them: two processes with the
//! same seed print the same JSON; outputs are written; mistakes are explained.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard-sim"))
        .args(args)
        .output()
        .expect("switchyard-sim runs")
}

const SMALL: &[&str] = &[
    "--pods",
    "2",
    "--kv-blocks",
    "2000",
    "--rate",
    "20",
    "--duration",
    "2",
    "--quiet",
];

#[test]
fn compare_is_byte_for_byte_deterministic_across_processes() {
    fn args(seed: &str) -> Vec<&str> {
        let mut a = vec![
            "compare",
            "gie-default",
            "round-robin",
            "sglang-cache-aware",
            "--json",
            "--seed",
            seed,
        ];
        a.extend_from_slice(SMALL);
        a
    }
    let a = sim(&args("3"));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = sim(&args("3"));
    assert_eq!(a.stdout, b.stdout);
    let c = sim(&args("4"));
    assert_ne!(a.stdout, c.stdout);
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(v["run"]["mode"], "des");
    assert_eq!(v["policies"].as_array().unwrap().len(), 3);
}

#[test]
fn run_writes_the_report_and_charts() {
    let dir = std::env::temp_dir().join(format!("sy-sim-cli-{}", std::process::id()));
    let mut args = vec![
        "run",
        "--policy",
        "least-kv",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = sim(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("least-kv") && table.contains("TTFT p50"),
        "{table}"
    );
    for f in ["report.json", "ttft.svg", "service-least-kv.svg"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(!text.is_empty(), "{f}");
    }
    let svg = std::fs::read_to_string(dir.join("service-least-kv.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("tenant-3"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_files_are_policies() {
    let dir = std::env::temp_dir().join(format!("sy-sim-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prefix-only.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: prefix-cache-scorer\n",
    )
    .unwrap();
    let mut args = vec!["compare", cfg.to_str().unwrap(), "--json"];
    args.extend_from_slice(SMALL);
    let out = sim(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policies"][0]["policy"], "prefix-only");

    std::fs::write(
        &cfg,
        "kind: EndpointPickerConfig\nplugins: [{type: no-such-plugin}]\n",
    )
    .unwrap();
    let out = sim(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-plugin"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mistakes_are_explained() {
    let out = sim(&["compare", "no-such-policy", "--quiet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("round-robin"));
    let out = sim(&["run", "--workload", "vtc:nope", "--quiet"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("overload-multi"));
    let out = sim(&["run", "--mode", "sideways", "--quiet"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("des, live"));
    let out = sim(&["baselines"]);
    let list = String::from_utf8_lossy(&out.stdout);
    for name in [
        "round-robin",
        "sglang-cache-aware",
        "dynamo-cost",
        "gie-default",
    ] {
        assert!(list.contains(name), "{list}");
    }
}

#[test]
fn compare_live_explains_what_it_cannot_run() {
    // Without --live the policies are required.
    let o = sim(&["compare", "--quiet"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("<POLICIES>"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for (args, message) in [
        (
            &["compare", "--live", "--workload", "vtc:overload"][..],
            "--live runs the synthetic shared-prefix workload only",
        ),
        (
            &["compare", "--live", "dynamo-cost"][..],
            "\"dynamo-cost\" is a discrete-event baseline; --live measures Switchyard configurations",
        ),
        (
            &["compare", "--live", "--only", "nginx"][..],
            "--only \"nginx\": expected some of switchyard, vtc, sglang, vllm, round-robin",
        ),
    ] {
        let o = sim(args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

/// `bench extproc` end to end, as small as it goes: both servers start, answer every request,
/// and one row each comes out (the null server first, ratios against it).
#[test]
fn bench_extproc_measures_both_servers() {
    let dir = std::env::temp_dir().join(format!("sy-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("rows.json");
    let out = sim(&[
        "bench",
        "extproc",
        "--sizes",
        "2k",
        "--concurrency",
        "2",
        "--seconds",
        "0.3",
        "--rounds",
        "1",
        "--gateway",
        "builtin",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| gateway | endpoints | body |"),
        "{stdout}"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let servers: Vec<&str> = rows.iter().map(|r| r["server"].as_str().unwrap()).collect();
    assert_eq!(servers, ["null", "switchyard"]);
    for r in &rows {
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
        assert!(r["peak_rss_mb"].as_f64().unwrap() > 1.0, "{r}");
        assert!(
            (1900..2100).contains(&r["body_bytes"].as_u64().unwrap()),
            "{r}"
        );
    }
    assert_eq!(rows[0]["cpu_ratio"].as_f64(), Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_extproc_refuses_impossible_sweeps() {
    let out = sim(&["bench", "extproc", "--chunks", "0", "--gateway", "builtin"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--chunks 0: must be in 1..=100000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
