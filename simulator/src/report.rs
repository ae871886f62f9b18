//! Results per policy: a terminal table, JSON, and an SVG chart of the TTFT distributions.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::load::Record;

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    pub requests: usize,
    pub errors: usize,
    pub duration_s: f64,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p90_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// Prefix-cache token hit rate from the pods' own counters (hits ÷ queries).
    pub prefix_hit_rate: f64,
    pub per_tenant: BTreeMap<String, usize>,
    /// Sorted TTFT samples in ms (for the chart).
    #[serde(skip)]
    pub ttft_sorted: Vec<f64>,
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl PolicyReport {
    pub fn from_records(policy: &str, records: &[Record], prefix_hit_rate: f64) -> Self {
        let ok: Vec<&Record> = records
            .iter()
            .filter(|r| r.status == 200 && r.error.is_none())
            .collect();
        let mut ttft: Vec<f64> = ok.iter().filter_map(|r| r.ttft_ms).collect();
        ttft.sort_by(f64::total_cmp);
        let mut e2e: Vec<f64> = ok.iter().map(|r| r.e2e_ms).collect();
        e2e.sort_by(f64::total_cmp);
        let end_ms = records
            .iter()
            .map(|r| r.sent_at_ms + r.e2e_ms)
            .fold(0.0f64, f64::max);
        let duration_s = (end_ms / 1e3).max(1e-9);
        let mut per_tenant = BTreeMap::new();
        for r in &ok {
            *per_tenant.entry(r.tenant.clone()).or_insert(0) += 1;
        }
        let out_tokens: u64 = ok.iter().map(|r| r.output_tokens).sum();
        Self {
            policy: policy.to_string(),
            requests: records.len(),
            errors: records.len() - ok.len(),
            duration_s,
            requests_per_s: ok.len() as f64 / duration_s,
            output_tokens_per_s: out_tokens as f64 / duration_s,
            ttft_p50_ms: quantile(&ttft, 0.5),
            ttft_p90_ms: quantile(&ttft, 0.9),
            ttft_p99_ms: quantile(&ttft, 0.99),
            e2e_p50_ms: quantile(&e2e, 0.5),
            e2e_p99_ms: quantile(&e2e, 0.99),
            prefix_hit_rate,
            per_tenant,
            ttft_sorted: ttft,
        }
    }
}

/// A fixed-width table, one row per policy.
pub fn table(reports: &[PolicyReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>6} {:>5} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "policy",
        "reqs",
        "errs",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p90",
        "TTFT p99",
        "e2e p50",
        "e2e p99",
        "prefix"
    );
    for r in reports {
        let _ = writeln!(
            s,
            "{:<22} {:>6} {:>5} {:>7.2} {:>8.0} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.0}ms {:>7.0}ms {:>6.1}%",
            r.policy,
            r.requests,
            r.errors,
            r.requests_per_s,
            r.output_tokens_per_s,
            r.ttft_p50_ms,
            r.ttft_p90_ms,
            r.ttft_p99_ms,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.prefix_hit_rate * 100.0
        );
    }
    let tenants: std::collections::BTreeSet<&String> =
        reports.iter().flat_map(|r| r.per_tenant.keys()).collect();
    if !tenants.is_empty() {
        let _ = writeln!(s, "\nrequests served per tenant:");
        let _ = write!(s, "{:<22}", "policy");
        for t in &tenants {
            let _ = write!(s, " {t:>10}");
        }
        let _ = writeln!(s);
        for r in reports {
            let _ = write!(s, "{:<22}", r.policy);
            for t in &tenants {
                let _ = write!(s, " {:>10}", r.per_tenant.get(*t).copied().unwrap_or(0));
            }
            let _ = writeln!(s);
        }
    }
    s
}

/// An SVG chart of the TTFT cumulative distribution per policy (log-scaled time axis).
pub fn ttft_cdf_svg(reports: &[PolicyReport]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 60.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let all: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.ttft_sorted.iter().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.1);
    let hi = all.iter().copied().fold(0.0f64, f64::max).max(lo * 10.0);
    let (llo, lhi) = (lo.log10().floor(), hi.log10().ceil());
    let x = |v: f64| L + (v.max(lo).log10() - llo) / (lhi - llo) * (W - L - R);
    let y = |p: f64| T + (1.0 - p) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Time to first token, CDF</text>"#,
        W / 2.0
    );
    // Axes and grid.
    let mut e = llo;
    while e <= lhi {
        let v = 10f64.powf(e);
        let px = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{T}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            H - B
        );
        let _ = writeln!(
            s,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{} ms</text>"#,
            H - B + 18.0,
            v
        );
        e += 1.0;
    }
    for p in [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
        let py = y(p);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/>"##,
            W - R
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{p}</text>"#,
            L - 6.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        W - L - R,
        H - T - B
    );
    for (i, r) in reports.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let n = r.ttft_sorted.len();
        if n == 0 {
            continue;
        }
        let step = (n / 400).max(1);
        let mut pts = String::new();
        for (k, v) in r.ttft_sorted.iter().enumerate().step_by(step) {
            let _ = write!(pts, "{:.1},{:.1} ", x(*v), y((k + 1) as f64 / n as f64));
        }
        let _ = write!(pts, "{:.1},{:.1}", x(r.ttft_sorted[n - 1]), y(1.0));
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>"#
        );
        let ly = T + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="3"/>"#,
            L + 12.0,
            L + 36.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} (p50 {:.0} ms)</text>"#,
            L + 42.0,
            ly + 4.0,
            r.policy,
            r.ttft_p50_ms
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tenant: &str, ttft: f64, status: u16) -> Record {
        Record {
            tenant: tenant.into(),
            group: 0,
            sent_at_ms: 0.0,
            status,
            ttft_ms: Some(ttft),
            e2e_ms: ttft * 2.0,
            prompt_tokens: 10,
            output_tokens: 5,
            cached_tokens: 0,
            endpoint: None,
            error: None,
        }
    }

    #[test]
    fn quantiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn report_counts_and_renders() {
        let recs = vec![
            rec("a", 10.0, 200),
            rec("b", 30.0, 200),
            rec("a", 20.0, 503),
        ];
        let r = PolicyReport::from_records("p", &recs, 0.5);
        assert_eq!((r.requests, r.errors), (3, 1));
        assert_eq!(r.per_tenant.get("a"), Some(&1));
        assert_eq!(r.ttft_p50_ms, 10.0);
        let t = table(std::slice::from_ref(&r));
        assert!(t.contains("50.0%"), "{t}");
        let svg = ttft_cdf_svg(&[r]);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }
}
