//! Results per policy: a terminal table, JSON, and SVG charts (the TTFT distributions, and each
//! tenant's service over time).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::fairness::{self, Fairness, ServiceSeries};
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
    /// Input + output tokens of served requests per second.
    pub tokens_per_s: f64,
    pub ttft_mean_ms: f64,
    pub e2e_mean_ms: f64,
    pub e2e_p90_ms: f64,
    /// The hit rate an infinite cache on one node would reach on the same requests, when known.
    pub ideal_prefix_hit_rate: Option<f64>,
    /// Engine preemptions summed over the pods, when known.
    pub preemptions: Option<u64>,
    /// Fraction of the run the engines spent stepping, mean over the pods, when known: how loaded
    /// the pool was.
    pub engine_busy: Option<f64>,
    pub tenants: BTreeMap<String, TenantReport>,
    pub fairness: Fairness,
    pub service: ServiceSeries,
    /// Sorted TTFT samples in ms (for the chart).
    #[serde(skip)]
    pub ttft_sorted: Vec<f64>,
}

/// Latencies and service of one tenant's served requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TenantReport {
    pub requests: usize,
    pub errors: usize,
    pub ttft_mean_ms: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p90_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p90_ms: f64,
    pub e2e_p99_ms: f64,
    /// Input + 2·output tokens served.
    pub service: f64,
}

/// What a run knows besides its records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunFacts {
    /// Prefix-cache token hit rate from the engines' counters.
    pub prefix_hit_rate: f64,
    pub ideal_prefix_hit_rate: Option<f64>,
    pub preemptions: Option<u64>,
    pub engine_busy: Option<f64>,
    /// The workload's nominal length in seconds (the fairness horizon).
    pub horizon_s: Option<f64>,
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn sorted(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v
}

fn is_ok(r: &Record) -> bool {
    r.status == 200 && r.error.is_none()
}

fn tenant_reports(records: &[Record]) -> BTreeMap<String, TenantReport> {
    let mut by: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by.entry(r.tenant.as_str()).or_default().push(r);
    }
    by.into_iter()
        .map(|(t, rs)| {
            let ok: Vec<&&Record> = rs.iter().filter(|r| is_ok(r)).collect();
            let ttft = sorted(ok.iter().filter_map(|r| r.ttft_ms));
            let e2e = sorted(ok.iter().map(|r| r.e2e_ms));
            let rep = TenantReport {
                requests: ok.len(),
                errors: rs.len() - ok.len(),
                ttft_mean_ms: mean(&ttft),
                ttft_p50_ms: quantile(&ttft, 0.5),
                ttft_p90_ms: quantile(&ttft, 0.9),
                ttft_p99_ms: quantile(&ttft, 0.99),
                e2e_p50_ms: quantile(&e2e, 0.5),
                e2e_p90_ms: quantile(&e2e, 0.9),
                e2e_p99_ms: quantile(&e2e, 0.99),
                service: ok
                    .iter()
                    .map(|r| fairness::service_of(r.prompt_tokens, r.output_tokens))
                    .sum(),
            };
            (t.to_string(), rep)
        })
        .collect()
}

impl PolicyReport {
    pub fn from_records(policy: &str, records: &[Record], prefix_hit_rate: f64) -> Self {
        Self::build(
            policy,
            records,
            RunFacts {
                prefix_hit_rate,
                ..RunFacts::default()
            },
        )
    }

    pub fn build(policy: &str, records: &[Record], facts: RunFacts) -> Self {
        let prefix_hit_rate = facts.prefix_hit_rate;
        let ok: Vec<&Record> = records.iter().filter(|r| is_ok(r)).collect();
        let ttft = sorted(ok.iter().filter_map(|r| r.ttft_ms));
        let e2e = sorted(ok.iter().map(|r| r.e2e_ms));
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
        let in_tokens: u64 = ok.iter().map(|r| r.prompt_tokens).sum();
        let horizon = fairness::horizon(records, facts.horizon_s);
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
            tokens_per_s: (in_tokens + out_tokens) as f64 / duration_s,
            ttft_mean_ms: mean(&ttft),
            e2e_mean_ms: mean(&e2e),
            e2e_p90_ms: quantile(&e2e, 0.9),
            ideal_prefix_hit_rate: facts.ideal_prefix_hit_rate,
            preemptions: facts.preemptions,
            engine_busy: facts.engine_busy,
            tenants: tenant_reports(records),
            fairness: fairness::fairness(records, horizon),
            // Until the last request finished: a backlog keeps being served after arrivals end.
            service: fairness::service_series(
                records,
                horizon.max((duration_s / 10.0).ceil() * 10.0),
            ),
            ttft_sorted: ttft,
        }
    }
}

/// A latency for the tables: milliseconds below 10 s, seconds above.
fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}s", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}ms")
    } else {
        format!("{v:.1}ms")
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// Fixed-width tables: one row per policy (throughput, latencies, prefix cache), the fairness
/// table, and each tenant's latencies under each policy.
pub fn table(reports: &[PolicyReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>6} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>5}",
        "policy",
        "reqs",
        "errs",
        "req/s",
        "tok/s",
        "TTFTmean",
        "TTFT p50",
        "TTFT p90",
        "TTFT p99",
        "e2e p50",
        "e2e p90",
        "e2e p99",
        "prefix",
        "ideal",
        "preempt",
        "busy"
    );
    for r in reports {
        let _ = writeln!(
            s,
            "{:<22} {:>6} {:>5} {:>7.2} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>5}",
            r.policy,
            r.requests,
            r.errors,
            r.requests_per_s,
            r.tokens_per_s,
            ms(r.ttft_mean_ms),
            ms(r.ttft_p50_ms),
            ms(r.ttft_p90_ms),
            ms(r.ttft_p99_ms),
            ms(r.e2e_p50_ms),
            ms(r.e2e_p90_ms),
            ms(r.e2e_p99_ms),
            pct(Some(r.prefix_hit_rate)),
            pct(r.ideal_prefix_hit_rate),
            r.preemptions.map_or_else(|| "-".into(), |p| p.to_string()),
            r.engine_busy
                .map_or_else(|| "-".into(), |b| format!("{:.0}%", b * 100.0)),
        );
    }
    if reports.iter().any(|r| r.tenants.len() > 1) {
        let h = reports.first().map_or(0.0, |r| r.fairness.horizon_s);
        let w = fairness::windows(h);
        let _ = writeln!(
            s,
            "\nfairness: service = input + 2·output tokens/s; {} window(s) of {:.0} s over {h:.0} s",
            w.len(),
            w.first().map_or(0.0, |(l, r)| r - l),
        );
        let _ = writeln!(
            s,
            "{:<22} {:>9} {:>9} {:>6}",
            "policy", "MaxDiff", "AvgDiff", "Jain"
        );
        for r in reports {
            let f = &r.fairness;
            let _ = writeln!(
                s,
                "{:<22} {:>9.1} {:>9.1} {:>6.3}",
                r.policy, f.max_diff, f.avg_diff, f.jain
            );
        }
    }
    let tenants: std::collections::BTreeSet<&String> =
        reports.iter().flat_map(|r| r.tenants.keys()).collect();
    if !tenants.is_empty() {
        let _ = writeln!(s, "\nper tenant: requests served, TTFT p50 / p99");
        let _ = write!(s, "{:<22}", "tenant");
        for r in reports {
            let _ = write!(s, " {:>24}", truncate(&r.policy, 24));
        }
        let _ = writeln!(s);
        for t in &tenants {
            let _ = write!(s, "{:<22}", truncate(t, 22));
            for r in reports {
                let cell = r.tenants.get(*t).map_or_else(
                    || "-".to_string(),
                    |x| {
                        format!(
                            "{} {} / {}",
                            x.requests,
                            ms(x.ttft_p50_ms),
                            ms(x.ttft_p99_ms)
                        )
                    },
                );
                let _ = write!(s, " {cell:>24}");
            }
            let _ = writeln!(s);
        }
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let keep: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{keep}")
    }
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
            xml_escape(&r.policy),
            r.ttft_p50_ms
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// Colours of the chart lines, cycled.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// An SVG chart of each tenant's service rate over time (tokens/s of input + 2·output in a 60 s
/// window) under one policy.
pub fn service_svg(report: &PolicyReport) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 70.0;
    const R: f64 = 150.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    let series = &report.service;
    let t_max = series
        .t_s
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(report.fairness.horizon_s)
        .max(1.0);
    let y_max = series
        .tenants
        .values()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.05;
    let x = |t: f64| L + t / t_max * (W - L - R);
    let y = |v: f64| T + (1.0 - v / y_max) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Service per tenant (input + 2·output tokens/s, 60 s window): {}</text>"#,
        (W - R + L) / 2.0,
        xml_escape(&report.policy)
    );
    for k in 0..=5 {
        let v = y_max / 5.0 * f64::from(k);
        let py = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/>"##,
            W - R
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"#,
            L - 6.0,
            py + 4.0
        );
        let t = t_max / 5.0 * f64::from(k);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#,
            x(t),
            H - B + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        W - L - R,
        H - T - B
    );
    for (i, (tenant, vals)) in series.tenants.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let mut pts = String::new();
        for (t, v) in series.t_s.iter().zip(vals) {
            let _ = write!(pts, "{:.1},{:.1} ", x(*t), y(*v));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#,
            pts.trim_end()
        );
        if i < 20 {
            let ly = T + 8.0 + 16.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                W - R + 10.0,
                W - R + 28.0,
                W - R + 32.0,
                ly + 4.0,
                xml_escape(&truncate(tenant, 18))
            );
        } else if i == 20 {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">… {} tenants</text>"#,
                W - R + 10.0,
                T + 8.0 + 16.0 * 20.0 + 4.0,
                series.tenants.len()
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
