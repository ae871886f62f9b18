//! Our fairness metric on the VTC paper's own measurements reproduces the numbers recomputed
//! from them in papers-and-data.md §1 (FCFS 760.0 / 433.5 / 777 tok/s, VTC 368.4 / 251.7 / 779).

use std::path::Path;

use switchyard_sim::fairness;
use switchyard_sim::trace::read_vtc_measurements;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn check(file: &str, max_diff: f64, avg_diff: f64, throughput: f64) {
    let (records, total_time) = read_vtc_measurements(&data(file)).unwrap();
    let f = fairness::fairness(&records, fairness::horizon(&records, Some(600.0)));
    let tokens: u64 = records
        .iter()
        .map(|r| r.prompt_tokens + r.output_tokens)
        .sum();
    let tput = tokens as f64 / total_time;
    eprintln!("{file}: {f:?} throughput {tput:.1}");
    assert!(
        (f.max_diff - max_diff).abs() < 0.1,
        "{file}: MaxDiff {}",
        f.max_diff
    );
    assert!(
        (f.avg_diff - avg_diff).abs() < 0.1,
        "{file}: AvgDiff {}",
        f.avg_diff
    );
    assert!((tput - throughput).abs() < 1.0, "{file}: throughput {tput}");
}

#[test]
fn fcfs_run_of_the_paper() {
    check("vtc_FCFS_all_results_real.jsonl", 760.0, 433.5, 777.0);
}

#[test]
fn vtc_run_of_the_paper() {
    check("vtc_VTC_all_results_real.jsonl", 368.4, 251.7, 779.0);
}
