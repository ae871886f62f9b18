//! A corpus of upstream-style EndpointPickerConfig documents (GIE v1.5 chart defaults per engine,
//! the conformance config, the flow-control guide, llm-d-router v0.10's layout and samples),
//! written from the documented layouts. Each file says what must happen to it in its header:
//! `# expect: ok` or `# expect: error <text>` (one of the errors contains the text), and any
//! number of `# warn: <text>` lines (a warning contains each).

use std::path::Path;

use switchyard::config::load_str;

#[test]
fn every_upstream_style_config_is_accepted_or_refused_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upstream-configs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is in {}", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let header = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .map(str::to_string)
                .collect()
        };
        let expect = header("expect");
        let [expect] = expect.as_slice() else {
            panic!("{name}: needs one `# expect:` line");
        };
        match (load_str(&text), expect.strip_prefix("error ")) {
            (Ok(cfg), None) => {
                assert_eq!(expect, "ok", "{name}");
                for w in header("warn") {
                    if !cfg.warnings.iter().any(|x| x.contains(&w)) {
                        failures.push(format!("{name}: no warning {w:?} in {:?}", cfg.warnings));
                    }
                }
                // The effective config renders and loads back to itself.
                let again = load_str(&cfg.to_yaml())
                    .unwrap_or_else(|e| panic!("{name}: rendered config: {e}"));
                assert_eq!(again.profiles, cfg.profiles, "{name}");
            }
            (Ok(_), Some(want)) => failures.push(format!("{name}: accepted, want error {want:?}")),
            (Err(e), None) => failures.push(format!("{name}: refused: {e}")),
            (Err(e), Some(want)) => {
                if !e.messages().iter().any(|m| m.contains(want)) {
                    failures.push(format!(
                        "{name}: want error {want:?}, got {:?}",
                        e.messages()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn llm_d_layout_means_what_it_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upstream-configs");
    let load = |f: &str| load_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();

    // flowControl.saturationDetector wins over the deprecated top-level one.
    let c = load("llm-d-v0.10-flow-control.yaml");
    assert_eq!(
        c.plugin(c.saturation_detector).spec.type_name(),
        "concurrency-detector"
    );
    let fc = c.flow_control.as_ref().expect("gate on (flowControl=true)");
    let neg = fc.default_negative_band.as_ref().expect("negative band");
    assert_eq!(neg.max_requests, 10);
    assert_eq!(
        c.plugin(neg.ordering_policy).spec.type_name(),
        "edf-ordering-policy"
    );
    assert_eq!(
        fc.default_request_ttl,
        Some(std::time::Duration::from_secs(30))
    );
    // llm-d-router v0.10's bounded default for bands left unset.
    assert_eq!(fc.default_band.max_requests, 5000);

    // requestHandler.parsers selects the parser, created from its type name if need be.
    let c = load("llm-d-v0.10-chart-triton.yaml");
    assert_eq!(c.plugin(c.parser).spec.type_name(), "passthrough-parser");

    // GIE's gate-only document gets the default profile; its flow control is on with GIE's
    // unbounded defaults.
    let c = load("gie-v1.5-flow-control-gate-only.yaml");
    assert_eq!(c.profiles[0].scorers.len(), 3);
    let fc = c.flow_control.as_ref().unwrap();
    assert_eq!(
        (fc.default_request_ttl, fc.default_band.max_requests),
        (None, 0)
    );

    // A parser listed in a profile is skipped, not slotted.
    let c = load("gie-v1.5-testdata-parser-in-profile.yaml");
    assert_eq!(c.profiles[0].filters, Vec::<usize>::new());
    assert_eq!(c.profiles[0].scorers.len(), 1);
}
