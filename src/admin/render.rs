//! Readable tables of the admin API's answers, for `switchyard explain` and `switchyard state`.
//! Pure functions from the messages to text, so tests can pin the layout.

use std::fmt::Write as _;

use super::proto::{
    self, Admission, EndpointDecision, ExplainResponse, Explanation, ProfileExplanation, State,
};

// === Table ===

/// Columns padded to their widest cell, two spaces apart; numeric columns right-aligned.
struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&str, bool)]) -> Self {
        Self {
            header: columns.iter().map(|(h, _)| h.to_string()).collect(),
            right: columns.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, indent: &str, out: &mut String) {
        let n = self.header.len();
        let mut width = vec![0usize; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::from(indent);
            for (k, c) in r.iter().enumerate() {
                let pad = width[k].saturating_sub(c.chars().count());
                if k > 0 {
                    line.push_str("  ");
                }
                if self.right[k] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if k + 1 < r.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// An endpoint as "name address", or just the name when it is the address.
fn label(name: &str, address: &str) -> String {
    if name == address {
        name.to_string()
    } else {
        format!("{name} {address}")
    }
}

fn num(x: f64) -> String {
    format!("{x:.3}")
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 600_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m", ms / 60_000),
    }
}

// === Explain ===

fn admission_text(a: Option<&Admission>) -> String {
    use proto::admission::Decision;
    let Some(a) = a else {
        return "—".into();
    };
    let sat = a
        .saturation
        .map(|s| format!(", saturation {s:.2}"))
        .unwrap_or_default();
    let basis = if a.basis.is_empty() {
        String::new()
    } else {
        format!(", {}", a.basis)
    };
    match Decision::try_from(a.decision).unwrap_or(Decision::Unspecified) {
        Decision::Admit => format!("ADMIT ({}{sat}{basis})", a.mode),
        Decision::Queue => format!(
            "QUEUE at position {} of {} waiting ({}{sat}{basis})",
            a.queue_position + 1,
            a.queued + 1,
            a.mode
        ),
        Decision::Reject => format!("REJECT {}: {} ({}{sat})", a.http_status, a.message, a.mode),
        Decision::Unspecified => "—".into(),
    }
}

fn outcome_text(e: &Explanation) -> String {
    let Some(o) = &e.outcome else {
        return "—".into();
    };
    if o.http_status == 200 {
        format!("{} (profile {})", o.targets.join(","), o.primary_profile)
    } else {
        format!("{} {}", o.http_status, o.error)
    }
}

fn config_text(e: &Explanation) -> String {
    e.config
        .as_ref()
        .map_or("—".into(), |c| format!("{} (hash {})", c.origin, c.hash))
}

fn prefix_text(e: &Explanation) -> String {
    e.prefix.as_ref().map_or("no prefix producer".into(), |p| {
        format!(
            "{} blocks of {} tokens; index {}",
            p.total_blocks, p.block_size_tokens, p.index
        )
    })
}

fn request_text(e: &Explanation, seed: u64) -> String {
    let Some(r) = &e.request else {
        return format!("(not parsed)  seed {seed}");
    };
    let model = if r.incoming_model == r.target_model {
        r.incoming_model.clone()
    } else {
        format!("{} → {}", r.incoming_model, r.target_model)
    };
    let subset = if r.subset.is_empty() {
        String::new()
    } else {
        format!("  subset {}", r.subset.join(","))
    };
    format!(
        "model {model}  fairness {}  priority {}  body {} B  prompt {} B{subset}  seed {seed}",
        r.fairness_id, r.priority, r.body_bytes, r.prompt_bytes
    )
}

/// One profile: scored endpoints with each scorer's raw → weighted score, then those a filter
/// dropped with the reason.
fn profile_text(p: &ProfileExplanation, out: &mut String) {
    let filters = if p.filters.is_empty() {
        "none".to_string()
    } else {
        p.filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    };
    let picker = p.picker.as_ref().map_or("", |x| x.name.as_str());
    let _ = writeln!(
        out,
        "profile {}{}: filters {filters}; picker {picker}",
        p.name,
        if p.primary { " (primary)" } else { "" }
    );
    if !p.error.is_empty() {
        let _ = writeln!(out, "  failed: {}", p.error);
    }
    let scored: Vec<&EndpointDecision> = p.endpoints.iter().filter(|e| e.total.is_some()).collect();
    if !scored.is_empty() {
        let heads: Vec<String> = p
            .scorers
            .iter()
            .map(|s| format!("{} ×{}", s.name, s.weight))
            .collect();
        let mut cols: Vec<(&str, bool)> = vec![("pick", true), ("endpoint", false)];
        cols.extend(heads.iter().map(|h| (h.as_str(), true)));
        cols.push(("total", true));
        let mut t = Table::new(&cols);
        for e in scored {
            let mut row = vec![
                if e.pick_rank > 0 {
                    e.pick_rank.to_string()
                } else {
                    String::new()
                },
                label(&e.name, &e.address),
            ];
            for s in &p.scorers {
                row.push(
                    e.scores
                        .iter()
                        .find(|c| c.scorer == s.name)
                        .map_or("—".into(), |c| {
                            format!("{} → {}", num(c.raw), num(c.weighted))
                        }),
                );
            }
            row.push(e.total.map_or("—".into(), num));
            t.row(row);
        }
        out.push_str("  scores (raw → weighted):\n");
        t.render("  ", out);
    }
    let dropped: Vec<&EndpointDecision> =
        p.endpoints.iter().filter(|e| e.total.is_none()).collect();
    if !dropped.is_empty() {
        out.push_str("  filtered out:\n");
        let mut t = Table::new(&[("endpoint", false), ("filter", false), ("reason", false)]);
        for e in dropped {
            let (filter, reason) = e
                .filters
                .last()
                .map_or(("", ""), |f| (f.filter.as_str(), f.reason.as_str()));
            t.row(vec![
                label(&e.name, &e.address),
                filter.into(),
                reason.into(),
            ]);
        }
        t.render("  ", out);
    }
    // Endpoints a filter kept although they fail its test (fail-open or exploration).
    for e in &p.endpoints {
        for f in e.filters.iter().filter(|f| !f.passes && e.total.is_some()) {
            let _ = writeln!(out, "  note: {} kept by {}: {}", e.name, f.filter, f.reason);
        }
    }
}

fn endpoints_text(e: &Explanation, out: &mut String) {
    let mut t = Table::new(&[
        ("endpoint", false),
        ("address", false),
        ("queue", true),
        ("running", true),
        ("kv", true),
        ("metrics age", true),
        ("prefix blocks", true),
        ("in flight", true),
        ("", false),
    ]);
    let total = e.prefix.as_ref().map_or(0, |p| p.total_blocks);
    for f in &e.endpoints {
        let m = f.metrics.clone().unwrap_or_default();
        let l = f.inflight.unwrap_or_default();
        t.row(vec![
            f.name.clone(),
            f.address.clone(),
            m.waiting_requests.to_string(),
            m.running_requests.to_string(),
            format!("{:.2}", m.kv_cache_usage),
            age(m.age_ms),
            if e.prefix.is_some() {
                format!("{}/{total}", f.prefix_matched_blocks)
            } else {
                "—".into()
            },
            format!("{} ({} tok)", l.requests, l.tokens),
            if f.outside_subset {
                "outside subset".into()
            } else {
                String::new()
            },
        ]);
    }
    t.render("  ", out);
}

fn explanation_text(label: &str, e: &Explanation, seed: u64, out: &mut String) {
    let _ = writeln!(out, "== {label}: {}", config_text(e));
    let _ = writeln!(out, "request    {}", request_text(e, seed));
    let _ = writeln!(out, "admission  {}", admission_text(e.admission.as_ref()));
    let _ = writeln!(out, "outcome    {}", outcome_text(e));
    let _ = writeln!(out, "prefix     {}", prefix_text(e));
    for p in &e.profiles {
        out.push('\n');
        profile_text(p, out);
    }
    out.push_str("\nendpoints (what the scorers read):\n");
    endpoints_text(e, out);
}

/// The primary profile's total and pick rank of `name`, as "total (#rank)".
fn standing(e: &Explanation, name: &str) -> String {
    let Some(p) = e.profiles.iter().find(|p| p.primary).or(e.profiles.first()) else {
        return "—".into();
    };
    match p.endpoints.iter().find(|d| d.name == name) {
        None => "—".into(),
        Some(d) => match d.total {
            None => format!(
                "dropped by {}",
                d.filters.last().map_or("", |f| f.filter.as_str())
            ),
            Some(t) if d.pick_rank > 0 => format!("{} ← pick #{}", num(t), d.pick_rank),
            Some(t) => num(t),
        },
    }
}

/// `switchyard explain`'s text: the live explanation, or the live and alternative ones side by
/// side followed by each in full.
pub fn explain_text(r: &ExplainResponse) -> String {
    let mut out = String::new();
    let Some(live) = &r.live else {
        return out;
    };
    let Some(alt) = &r.alternative else {
        explanation_text("live", live, r.seed, &mut out);
        return out;
    };
    let mut t = Table::new(&[("", false), ("live", false), ("alternative", false)]);
    t.row(vec!["config".into(), config_text(live), config_text(alt)]);
    t.row(vec![
        "admission".into(),
        admission_text(live.admission.as_ref()),
        admission_text(alt.admission.as_ref()),
    ]);
    t.row(vec!["pick".into(), outcome_text(live), outcome_text(alt)]);
    t.row(vec!["prefix".into(), prefix_text(live), prefix_text(alt)]);
    for f in &live.endpoints {
        t.row(vec![
            f.name.clone(),
            standing(live, &f.name),
            standing(alt, &f.name),
        ]);
    }
    t.render("", &mut out);
    out.push('\n');
    explanation_text("live", live, r.seed, &mut out);
    out.push('\n');
    explanation_text("alternative", alt, r.seed, &mut out);
    out
}

// === State ===

/// `switchyard state`'s text.
pub fn state_text(s: &State) -> String {
    use proto::scrape_health::Status;
    let mut out = String::new();
    if let Some(c) = &s.config {
        let loaded = s.at_unix_ms.saturating_sub(c.loaded_at_unix_ms).max(0) as u64;
        let _ = writeln!(
            out,
            "config      {} (hash {}), loaded {} ago; reloads: {} ok, {} failed",
            c.origin,
            c.hash,
            age(Some(loaded)),
            c.reloads_succeeded,
            c.reloads_failed
        );
        if let Some(f) = &c.last_reload_failure {
            let ago = s.at_unix_ms.saturating_sub(f.at_unix_ms).max(0) as u64;
            let _ = writeln!(
                out,
                "            last failed reload {} ago (the configuration in force was kept):",
                age(Some(ago))
            );
            for e in &f.errors {
                let e = e.replace('\n', "\n                ");
                let _ = writeln!(out, "              - {e}");
            }
        }
        let _ = writeln!(
            out,
            "profiles    {}; flow control {}; metrics collection {}",
            c.profiles.join(", "),
            if c.flow_control { "on" } else { "off" },
            if s.metrics_collection { "on" } else { "off" }
        );
    }
    if let Some(p) = &s.prefix_index {
        let _ = writeln!(
            out,
            "prefix      {} indexed blocks on {} endpoints",
            p.entries, p.endpoints
        );
    }
    out.push('\n');
    let mut t = Table::new(&[
        ("endpoint", false),
        ("address", false),
        ("queue", true),
        ("running", true),
        ("kv", true),
        ("metrics age", true),
        ("scrape", false),
        ("prefix blocks", true),
        ("in flight", true),
    ]);
    for e in &s.endpoints {
        let m = e.metrics.clone().unwrap_or_default();
        let h = e.scrape.clone().unwrap_or_default();
        let scrape = match Status::try_from(h.status).unwrap_or(Status::Unspecified) {
            Status::Ok => "ok".to_string(),
            Status::Pending => "pending".into(),
            Status::Disabled => "off".into(),
            Status::Failing => format!(
                "failing ×{}: {} ({})",
                h.consecutive_failures, h.last_error_reason, h.last_error
            ),
            Status::Unspecified => "—".into(),
        };
        let l = e.inflight.unwrap_or_default();
        t.row(vec![
            e.name.clone(),
            e.address.clone(),
            m.waiting_requests.to_string(),
            m.running_requests.to_string(),
            format!("{:.2}", m.kv_cache_usage),
            age(m.age_ms),
            scrape,
            e.prefix_blocks.to_string(),
            format!("{} ({} tok)", l.requests, l.tokens),
        ]);
    }
    t.render("", &mut out);
    if let Some(fc) = &s.flow_control
        && fc.enabled
    {
        let _ = writeln!(
            out,
            "\nflow control: {} queued ({} bytes), saturation {:.2} at the last dispatch decision",
            fc.queued_requests, fc.queued_bytes, fc.saturation
        );
        if !fc.flows.is_empty() {
            let mut t = Table::new(&[
                ("priority", true),
                ("fairness id", false),
                ("queued", true),
                ("bytes", true),
            ]);
            for f in &fc.flows {
                t.row(vec![
                    f.priority.to_string(),
                    f.fairness_id.clone(),
                    f.requests.to_string(),
                    f.bytes.to_string(),
                ]);
            }
            t.render("  ", &mut out);
            if fc.flows_omitted > 0 {
                let _ = writeln!(out, "  … {} more flows", fc.flows_omitted);
            }
        }
        if !fc.vtc_counters.is_empty() {
            out.push_str("  VTC counters:\n");
            let mut t = Table::new(&[
                ("priority", true),
                ("fairness id", false),
                ("counter", true),
            ]);
            for c in &fc.vtc_counters {
                t.row(vec![
                    c.priority.to_string(),
                    c.fairness_id.clone(),
                    format!("{:.1}", c.counter),
                ]);
            }
            t.render("  ", &mut out);
            if fc.vtc_counters_omitted > 0 {
                let _ = writeln!(out, "  … {} more tenants", fc.vtc_counters_omitted);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_align_numbers_right() {
        let mut t = Table::new(&[("name", false), ("n", true), ("note", false)]);
        t.row(vec!["a".into(), "10".into(), "x".into()]);
        t.row(vec!["long-name".into(), "2".into(), String::new()]);
        let mut out = String::new();
        t.render("> ", &mut out);
        assert_eq!(
            out,
            "> name        n  note\n> a          10  x\n> long-name   2\n"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(None), "never");
        assert_eq!(age(Some(35)), "35ms");
        assert_eq!(age(Some(1_995)), "2.0s");
        assert_eq!(age(Some(12_345)), "12.3s");
        assert_eq!(age(Some(3_600_000)), "60m");
    }
}
