//! The two text formats `/metrics` speaks: OpenMetrics 1.0 (what the registry encodes) and the
//! Prometheus text format 0.0.4 that scrapers without OpenMetrics support ask for, chosen by the
//! `Accept` header as the Go client does.

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics; anything else (no header, `text/plain`,
/// `*/*`) gets the Prometheus text format, as from the Go client.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut fields = part.split(';').map(str::trim);
            let media = fields.next().unwrap_or("");
            let q_zero = fields.any(|f| f.replace(' ', "") == "q=0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        })
    })
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: no `# EOF` and `# UNIT` lines, counter
/// families named after their `_total` samples, info and stateset families as gauges, unknown as
/// untyped, and exemplars dropped.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_string(), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                "gaugehistogram" => (name.to_string(), "histogram"),
                k => (name.to_string(), k),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str("# HELP ");
            out.push_str(h);
            out.push('\n');
        }
        // An exemplar follows the value after " # ".
        let sample = match line.find(" # {") {
            Some(i) if !line.starts_with('#') => &line[..i],
            _ => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_chooses_the_format() {
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some(
            "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text; q=0"
        )));
    }

    #[test]
    fn openmetrics_becomes_text_004() {
        let om = "# HELP requests Requests.\n# TYPE requests counter\nrequests_total{a=\"b\"} 3 # {trace_id=\"x\"} 1.0\n\
                  # HELP build Build.\n# TYPE build info\nbuild_info{v=\"1\"} 1\n\
                  # HELP size Size.\n# TYPE size gauge\n# UNIT size bytes\nsize 7\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total{a=\"b\"} 3\n\
             # HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1\"} 1\n\
             # HELP size Size.\n# TYPE size gauge\nsize 7\n"
        );
    }
}
