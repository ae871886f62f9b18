use super::*;
use proptest::prelude::*;

const VLLM_DOCS: &str = include_str!("testdata/vllm-v1-docs-example.txt");
const VLLM_USAGE: &str = include_str!("testdata/vllm-v1-docs-usage-example.txt");
const SGLANG: &str = include_str!("testdata/sglang-docs-example.txt");
const TRITON: &str = include_str!("testdata/triton-trtllm-docs-example.txt");

fn one(line: &str) -> Sample<'_> {
    let (c, stats) = parse_all(line.as_bytes());
    assert_eq!(stats.bad_lines, 0, "{line:?}");
    assert_eq!(c.samples.len(), 1, "{line:?}");
    c.samples[0]
}

fn bad(line: &str) {
    let (c, stats) = parse_all(line.as_bytes());
    assert_eq!(stats.bad_lines, 1, "{line:?} should be bad");
    assert!(c.samples.is_empty());
}

#[test]
fn names_with_colons_and_plain_values() {
    let s = one("vllm:num_requests_running{model_name=\"m\"} 8.0");
    assert_eq!(s.name, "vllm:num_requests_running");
    assert_eq!(s.value, 8.0);
    assert_eq!(s.label("model_name").as_deref(), Some("m"));
    assert_eq!(s.timestamp, None);
    let s = one(":odd_name 1e3");
    assert_eq!((s.name, s.value), (":odd_name", 1000.0));
    assert_eq!(s.labels().count(), 0);
}

#[test]
fn label_values_keep_commas_equals_braces_and_unescape() {
    let s = one(
        r#"vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora, tweet-summary",waiting_lora_adapters="a=b}{c",q="say \"hi\"\\n\nx"} 1.7e9"#,
    );
    assert_eq!(
        s.label("running_lora_adapters").as_deref(),
        Some("sql-lora, tweet-summary")
    );
    assert_eq!(s.label("waiting_lora_adapters").as_deref(), Some("a=b}{c"));
    assert_eq!(s.label("q").as_deref(), Some("say \"hi\"\\n\nx"));
    assert!(matches!(s.label("max_lora"), Some(Cow::Borrowed("4"))));
    assert!(s.has_label("max_lora", "4"));
    assert!(!s.has_label("max_lora", "5"));
    assert_eq!(s.label("absent"), None);
}

#[test]
fn special_values_timestamps_blanks_and_empty_label_sets() {
    assert!(one("a NaN").value.is_nan());
    assert_eq!(one("a +Inf").value, f64::INFINITY);
    assert_eq!(one("a -Inf").value, f64::NEG_INFINITY);
    let s = one("a{} 3 1700000000000");
    assert_eq!((s.value, s.timestamp), (3.0, Some(1_700_000_000_000)));
    let s = one("  a { x = \"1\" , } \t -2.5e-3  -5  ");
    assert_eq!(s.value, -0.0025);
    assert_eq!(s.timestamp, Some(-5));
    assert_eq!(s.label("x").as_deref(), Some("1"));
    // Go's expfmt accepts no blank between `}` and the value.
    assert_eq!(one("a{x=\"1\"}7").value, 7.0);
}

#[test]
fn bad_lines_are_skipped_and_counted() {
    bad("9starts_with_digit 1");
    bad("a");
    bad("a{x=\"1\"}");
    bad("a{x=\"1\" 2");
    bad("a{x=1} 2");
    bad("a{1x=\"1\"} 2");
    bad("a{x=\"unterminated} 2");
    bad("a 1 2 3");
    bad("a 1 notatime");
    bad("a one");
    bad("a-b 1");
    bad("a{x=\"1\"y=\"2\"} 3");
    bad("# TYPE a nosuchtype");
    bad("a{x=\"\\\"} 1");
    // The bad line does not disturb its neighbours.
    let text = "a 1\nb{oops 2\r\nc 3\n";
    let (c, stats) = parse_all(text.as_bytes());
    assert_eq!(stats.bad_lines, 1);
    let got: Vec<_> = c.samples.iter().map(|s| (s.name, s.value)).collect();
    assert_eq!(got, vec![("a", 1.0), ("c", 3.0)]);
}

#[test]
fn comments_and_types_anywhere_crlf() {
    let text = "# just a comment\r\n# HELP a some help with {braces} and \"quotes\"\r\na 1\r\n# TYPE a gauge\r\n\r\n# TYPE b_total counter\r\nb_total 2\r\n#TYPE c histogram\r\n# TYPEnot a type\n";
    let (c, stats) = parse_all(text.as_bytes());
    assert_eq!(stats.bad_lines, 0);
    assert_eq!(stats.samples, 2);
    assert_eq!(
        c.types,
        vec![
            ("a", MetricType::Gauge),
            ("b_total", MetricType::Counter),
            ("c", MetricType::Histogram)
        ]
    );
}

#[test]
fn unwanted_families_are_skipped() {
    struct Only(&'static str, Vec<f64>);
    impl<'a> Visitor<'a> for Only {
        fn wants(&mut self, name: &str) -> bool {
            name == self.0
        }
        fn sample(&mut self, s: Sample<'a>) {
            self.1.push(s.value);
        }
    }
    let mut v = Only("sglang:num_queue_reqs", vec![]);
    let stats = parse(SGLANG.as_bytes(), &mut v);
    assert_eq!(v.1, vec![2826.0]);
    assert_eq!(stats.samples, 1);
    assert_eq!(stats.bad_lines, 0);
    assert_eq!(stats.skipped, 90);
    // A malformed line of an unwanted family is not even looked at past its name.
    let mut v = Only("x", vec![]);
    let stats = parse(b"y{broken 1\nx 2\n", &mut v);
    assert_eq!(
        (stats.bad_lines, stats.skipped, v.1.as_slice()),
        (0, 1, &[2.0][..])
    );
}

#[test]
fn real_samples_parse() {
    // vLLM docs: the cache_config_info line ends in the docs' own `,...}` elision, which is not
    // valid exposition text: it alone is bad.
    let (c, stats) = parse_all(VLLM_DOCS.as_bytes());
    assert_eq!(stats.bad_lines, 1);
    assert_eq!(c.samples.len(), 14);
    assert_eq!(c.samples[0].name, "vllm:num_requests_running");
    let stop = c
        .samples
        .iter()
        .find(|s| {
            s.name == "vllm:request_success_total" && s.has_label("finished_reason", "length")
        })
        .unwrap();
    assert_eq!(stop.value, 131.0);

    let (c, stats) = parse_all(VLLM_USAGE.as_bytes());
    assert_eq!((stats.bad_lines, c.samples.len()), (0, 9));

    let (c, stats) = parse_all(SGLANG.as_bytes());
    assert_eq!(stats.bad_lines, 0);
    assert_eq!(c.samples.len(), 91);
    let tpot_inf = c
        .samples
        .iter()
        .find(|s| {
            s.name == "sglang:time_per_output_token_seconds_bucket" && s.has_label("le", "+Inf")
        })
        .unwrap();
    assert_eq!(tpot_inf.value, 7.400757e+06);
    assert!(
        c.types
            .contains(&("sglang:func_latency_seconds", MetricType::Histogram))
    );

    let (c, stats) = parse_all(TRITON.as_bytes());
    assert_eq!((stats.bad_lines, c.samples.len()), (0, 21));
    let frac = c
        .samples
        .iter()
        .find(|s| s.has_label("kv_cache_block_type", "fraction"))
        .unwrap();
    assert_eq!(frac.value, 0.4875);
}

// === property tests: no input may panic the parser ===

fn line_strategy() -> impl Strategy<Value = String> {
    let name = "[a-z_:][a-z0-9_:]{0,12}";
    let value = prop_oneof![
        Just("NaN".to_string()),
        Just("+Inf".to_string()),
        Just("-Inf".to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[0-9eE+.-]{0,8}",
    ];
    let label_value = r#"([^"\\]|\\[\\"n]|[,={}])*"#;
    let label = (r"[a-z_][a-z0-9_]{0,6}", label_value).prop_map(|(k, v)| format!("{k}=\"{v}\""));
    prop_oneof![
        (
            name,
            prop::collection::vec(label, 0..4),
            value,
            prop::option::of(any::<i64>())
        )
            .prop_map(|(n, ls, v, ts)| {
                let ts = ts.map(|t| format!(" {t}")).unwrap_or_default();
                format!("{n}{{{}}} {v}{ts}", ls.join(","))
            }),
        ("(HELP|TYPE)", name, "[a-z ]{0,12}").prop_map(|(k, n, r)| format!("# {k} {n} {r}")),
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (c, stats) = parse_all(&bytes);
        prop_assert!(stats.samples == c.samples.len());
        for s in &c.samples {
            // Reading labels of an accepted sample must not panic either.
            for (k, v) in s.labels() {
                prop_assert!(!k.is_empty());
                let _ = v.len();
            }
        }
    }

    #[test]
    fn near_valid_text_never_panics(lines in prop::collection::vec(line_strategy(), 0..20), crlf in any::<bool>()) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let (c, stats) = parse_all(text.as_bytes());
        prop_assert!(stats.samples + stats.bad_lines <= stats.lines);
        for s in &c.samples {
            for (_, v) in s.labels() {
                let _ = v.len();
            }
        }
    }

    #[test]
    fn well_formed_samples_round_trip(
        name in "[a-z_:][a-z0-9_:]{0,12}",
        labels in prop::collection::btree_map(r"[a-z_][a-z0-9_]{0,6}", ".{0,12}", 0..4),
        value in any::<f64>(),
    ) {
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let ls: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        let line = format!("{name}{{{}}} {value:?}\n", ls.join(","));
        let (c, stats) = parse_all(line.as_bytes());
        prop_assert_eq!(stats.bad_lines, 0, "{}", line);
        prop_assert_eq!(c.samples.len(), 1);
        let s = &c.samples[0];
        prop_assert_eq!(s.name, name.as_str());
        prop_assert!(s.value == value || (s.value.is_nan() && value.is_nan()));
        let got: Vec<(String, String)> = s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
        let want: Vec<(String, String)> = labels.into_iter().collect();
        prop_assert_eq!(got, want);
    }
}
