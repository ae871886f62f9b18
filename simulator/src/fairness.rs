//! Per-tenant service over time and how unequal it is, as the VTC paper measures it.
//!
//! Service of a request is `input + 2·output` tokens (OpenAI-style prices), spread uniformly over
//! its `[first token, finish]` span. The paper's fairness table (`fair_bench/plot/visualize.py`,
//! `plot_revision.py` in the VTC artifact) then takes 19 windows of 60 s over the run after a 30 s
//! warm-up and, in each, sums over tenants `min(max_service − service_j, |demand_j − service_j|)`,
//! where demand is the service of the requests that arrived in the window: a tenant far below the
//! best-served one counts only as far as it is also below what it asked for. "Max Diff" and
//! "Avg Diff" are the maximum and mean of that sum over the windows. We compute exactly that, over a
//! horizon that is the paper's 600 s for its traces and the workload's length otherwise.
//!
//! Jain's index is computed per window on service relative to the max-min fair share (the
//! window's delivered service water-filled over the tenants' demands), so 1.0 means "as fair as
//! max-min allows" rather than "everyone got the same", and averaged over the windows.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::Record;

/// Window length of the paper's service-rate measurements, seconds.
pub const WINDOW_S: f64 = 60.0;
/// Warm-up skipped before the first window, seconds.
pub const WARMUP_S: f64 = 30.0;
/// The horizon is cut into this many steps; windows start at steps 1..N−1.
pub const STEPS: usize = 20;
/// Points of the service-over-time series.
pub const SERIES_POINTS: usize = 100;

/// What the fairness table reports for one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Fairness {
    /// The span the windows cover, seconds.
    pub horizon_s: f64,
    /// VTC's "Max Diff": the largest per-window summed service gap (tokens/s).
    pub max_diff: f64,
    /// VTC's "Avg Diff": its mean over the windows.
    pub avg_diff: f64,
    /// Jain's index of service relative to the max-min fair share, mean over windows.
    pub jain: f64,
}

/// Per-tenant service rate (tokens/s over a 60 s window centred on each point).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceSeries {
    pub t_s: Vec<f64>,
    pub tenants: BTreeMap<String, Vec<f64>>,
}

/// A served request's service and when it was delivered.
#[derive(Debug, Clone, Copy)]
struct Span {
    tenant: usize,
    arrival: f64,
    start: f64,
    end: f64,
    service: f64,
}

/// The input + 2·output price of a request.
pub fn service_of(prompt_tokens: u64, output_tokens: u64) -> f64 {
    prompt_tokens as f64 + 2.0 * output_tokens as f64
}

/// Served requests as spans, and the sorted tenant names they index.
fn spans(records: &[Record]) -> (Vec<String>, Vec<Span>) {
    let ok = records
        .iter()
        .filter(|r| r.status == 200 && r.error.is_none() && r.ttft_ms.is_some());
    let tenants: Vec<String> = ok
        .clone()
        .map(|r| r.tenant.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let spans = ok
        .map(|r| {
            let arrival = r.sent_at_ms / 1e3;
            Span {
                tenant: tenants.binary_search(&r.tenant).expect("collected above"),
                arrival,
                start: arrival + r.ttft_ms.unwrap_or(0.0) / 1e3,
                end: arrival + r.e2e_ms / 1e3,
                service: service_of(r.prompt_tokens, r.output_tokens),
            }
        })
        .collect();
    (tenants, spans)
}

/// The horizon: `nominal` when known, else the last arrival rounded up to 10 s.
pub fn horizon(records: &[Record], nominal: Option<f64>) -> f64 {
    nominal.unwrap_or_else(|| {
        let last = records
            .iter()
            .map(|r| r.sent_at_ms / 1e3)
            .fold(0.0f64, f64::max);
        ((last / 10.0).ceil() * 10.0).max(10.0)
    })
}

/// Per-tenant (service delivered, service demanded) rates in `[l, r]`, tokens/s.
fn window(spans: &[Span], tenants: usize, l: f64, r: f64) -> (Vec<f64>, Vec<f64>) {
    let mut service = vec![0.0; tenants];
    let mut demand = vec![0.0; tenants];
    let w = r - l;
    for s in spans {
        if l <= s.arrival && s.arrival <= r {
            demand[s.tenant] += s.service;
        }
        // The paper leaves out spans that end in the first second or last no time at all.
        if s.end < 1.0 || s.end - s.start < 1e-5 {
            continue;
        }
        let overlap = (r.min(s.end) - l.max(s.start)).max(0.0);
        service[s.tenant] += s.service * overlap / (s.end - s.start);
    }
    for v in service.iter_mut().chain(demand.iter_mut()) {
        *v /= w;
    }
    (service, demand)
}

/// The paper's summed service gap of one window.
fn summed_gap(service: &[f64], demand: &[f64]) -> f64 {
    let max = service.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    service
        .iter()
        .zip(demand)
        .map(|(&y, &d)| (max - y).min((d - y).abs()))
        .sum()
}

/// Max-min fair shares of `capacity` for `demands` (water-filling).
fn max_min_shares(demands: &[f64], capacity: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]));
    let mut shares = vec![0.0; demands.len()];
    let mut left = capacity;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (order.len() - k) as f64;
        shares[i] = demands[i].min(fair);
        left -= shares[i];
    }
    shares
}

/// Jain's index `(Σx)² / (n·Σx²)` of `xs`; 1.0 for fewer than two values.
pub fn jain(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 1.0;
    }
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if sq == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * sq)
}

/// The fairness table row of `records` over `horizon_s`.
/// The paper's windows over `horizon_s`; a run too short for them gets one window spanning it.
pub fn windows(horizon_s: f64) -> Vec<(f64, f64)> {
    if horizon_s <= WARMUP_S + WINDOW_S {
        return vec![(0.0, horizon_s.max(1e-9))];
    }
    let step = (horizon_s - WARMUP_S) / STEPS as f64;
    (1..STEPS)
        .map(|i| {
            let x = step * i as f64;
            (x - WINDOW_S / 2.0 + WARMUP_S, x + WINDOW_S / 2.0 + WARMUP_S)
        })
        .collect()
}

pub fn fairness(records: &[Record], horizon_s: f64) -> Fairness {
    let (tenants, spans) = spans(records);
    let (mut gaps, mut jains) = (Vec::new(), Vec::new());
    for (l, r) in windows(horizon_s) {
        let (service, demand) = window(&spans, tenants.len(), l, r);
        if tenants.is_empty() {
            continue;
        }
        gaps.push(summed_gap(&service, &demand));
        let active: Vec<usize> = (0..tenants.len()).filter(|&j| demand[j] > 0.0).collect();
        let capacity: f64 = service.iter().sum();
        if active.len() >= 2 && capacity > 0.0 {
            let d: Vec<f64> = active.iter().map(|&j| demand[j]).collect();
            let fair = max_min_shares(&d, capacity);
            let rel: Vec<f64> = active
                .iter()
                .zip(&fair)
                .filter(|(_, f)| **f > 0.0)
                .map(|(&j, f)| service[j] / f)
                .collect();
            jains.push(jain(&rel));
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Fairness {
        horizon_s,
        max_diff: gaps.iter().copied().fold(0.0, f64::max),
        avg_diff: mean(&gaps),
        jain: if jains.is_empty() { 1.0 } else { mean(&jains) },
    }
}

/// Per-tenant service rate at [`SERIES_POINTS`] points of `[0, horizon_s)`.
pub fn service_series(records: &[Record], horizon_s: f64) -> ServiceSeries {
    let (tenants, spans) = spans(records);
    let t_s: Vec<f64> = (0..SERIES_POINTS)
        .map(|i| horizon_s / SERIES_POINTS as f64 * i as f64)
        .collect();
    let mut rows = vec![Vec::with_capacity(t_s.len()); tenants.len()];
    for &x in &t_s {
        let (service, _) = window(
            &spans,
            tenants.len(),
            x - WINDOW_S / 2.0,
            x + WINDOW_S / 2.0,
        );
        for (row, v) in rows.iter_mut().zip(service) {
            row.push(v);
        }
    }
    ServiceSeries {
        t_s,
        tenants: tenants.into_iter().zip(rows).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tenant: &str, at_s: f64, ttft_s: f64, e2e_s: f64, p: u64, o: u64) -> Record {
        Record {
            tenant: tenant.into(),
            group: 0,
            sent_at_ms: at_s * 1e3,
            status: 200,
            ttft_ms: Some(ttft_s * 1e3),
            e2e_ms: e2e_s * 1e3,
            prompt_tokens: p,
            output_tokens: o,
            cached_tokens: 0,
            endpoint: None,
            error: None,
        }
    }

    #[test]
    fn equal_service_to_equal_demand_is_fair() {
        // Two tenants, one request each per second, served in 1 s each: no gap anywhere.
        let mut rs = Vec::new();
        for s in 0..600 {
            for t in ["a", "b"] {
                rs.push(rec(t, s as f64, 0.1, 1.0, 10, 5));
            }
        }
        let f = fairness(&rs, 600.0);
        assert!(f.max_diff < 1e-6, "{f:?}");
        assert!((f.jain - 1.0).abs() < 1e-9);
    }

    #[test]
    fn starving_a_backlogged_tenant_shows() {
        // Both ask for the same; "b" is served only after 300 s.
        let mut rs = Vec::new();
        for s in 0..600 {
            rs.push(rec("a", s as f64, 0.1, 1.0, 100, 0));
            let delay = if s < 300 { 300.0 } else { 0.0 };
            rs.push(rec("b", s as f64, delay + 0.1, delay + 1.0, 100, 0));
        }
        let f = fairness(&rs, 600.0);
        assert!(f.max_diff > 90.0, "{f:?}");
        assert!(f.jain < 0.9, "{f:?}");
    }

    #[test]
    fn windows_are_the_papers_or_one_for_short_runs() {
        let w = windows(600.0);
        assert_eq!(w.len(), 19);
        assert!((w[0].0 - 28.5).abs() < 1e-9 && (w[0].1 - 88.5).abs() < 1e-9);
        assert!((w[18].1 - 601.5).abs() < 1e-9);
        assert_eq!(windows(20.0), vec![(0.0, 20.0)]);
    }

    #[test]
    fn water_filling_and_jain() {
        let s = max_min_shares(&[1.0, 10.0, 10.0], 9.0);
        assert_eq!(s, vec![1.0, 4.0, 4.0]);
        assert_eq!(jain(&[1.0, 1.0, 1.0]), 1.0);
        assert!((jain(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn series_and_horizon() {
        let rs = vec![rec("a", 5.0, 1.0, 11.0, 60, 0)];
        assert_eq!(horizon(&rs, None), 10.0);
        assert_eq!(horizon(&rs, Some(600.0)), 600.0);
        let s = service_series(&rs, 100.0);
        assert_eq!(s.t_s.len(), SERIES_POINTS);
        // 60 tokens over [6, 16] s, seen whole by the window centred on 10 s.
        let a = &s.tenants["a"];
        assert!((a[10] - 1.0).abs() < 1e-9, "{}", a[10]);
    }
}
