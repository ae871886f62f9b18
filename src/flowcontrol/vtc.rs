//! Virtual token counters (VTC, Sheng et al., OSDI'24), as the paper's artifact runs them, moved
//! from the engine to the EPP's queue.
//!
//! Each tenant has a counter of the service it received, divided by its weight. The queue
//! dispatches the backlogged tenant with the smallest counter. A tenant that becomes backlogged
//! again is lifted to the smallest counter among the other backlogged tenants, so time spent idle
//! is not banked as credit. Input tokens are charged at dispatch, output tokens as the response
//! reports them; together these keep two continuously backlogged tenants within `2·U` of each
//! other (U = the largest charge one request can cause before the next dispatch).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::decode::{Diagnostics, Obj, Params, show};
use crate::scheduling::Timestamp;

// === vtc-fairness-policy parameters ===

#[derive(Debug, Clone, PartialEq)]
pub struct VtcParams {
    pub input_token_weight: f64,
    pub output_token_weight: f64,
    /// Per-tenant weights (fairness id → weight > 0); a tenant of weight 2 gets twice the service.
    pub tenant_weights: BTreeMap<String, f64>,
    /// Charge only input tokens the engine did not find in its prefix cache.
    pub charge_uncached_input_only: bool,
}

impl Default for VtcParams {
    fn default() -> Self {
        Self {
            input_token_weight: 1.0,
            output_token_weight: 2.0,
            tenant_weights: BTreeMap::new(),
            charge_uncached_input_only: false,
        }
    }
}

impl Params for VtcParams {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(v) = o.non_negative("inputTokenWeight", d) {
            p.input_token_weight = v;
        }
        if let Some(v) = o.non_negative("outputTokenWeight", d) {
            p.output_token_weight = v;
        }
        if p.input_token_weight == 0.0 && p.output_token_weight == 0.0 {
            d.error(
                o.path.clone(),
                "inputTokenWeight and outputTokenWeight must not both be 0",
            );
        }
        let path = o.at("tenantWeights");
        if let Some(v) = o.get("tenantWeights") {
            match v {
                Value::Object(m) => {
                    for (tenant, w) in m {
                        match w.as_f64() {
                            Some(x) if x.is_finite() && x > 0.0 => {
                                p.tenant_weights.insert(tenant.clone(), x);
                            }
                            _ => d.error(
                                format!("{path}.{tenant}"),
                                format!("must be a number > 0, got {}", show(w)),
                            ),
                        }
                    }
                }
                other => d.error(
                    path,
                    format!("must be a mapping of tenant to weight, got {}", show(other)),
                ),
            }
        }
        if let Some(b) = o.bool("chargeUncachedInputOnly", d) {
            p.charge_uncached_input_only = b;
        }
        p
    }

    fn render(&self) -> Option<Value> {
        Some(json!({
            "inputTokenWeight": self.input_token_weight,
            "outputTokenWeight": self.output_token_weight,
            "tenantWeights": self.tenant_weights,
            "chargeUncachedInputOnly": self.charge_uncached_input_only,
        }))
    }
}

// === impl VirtualCounters ===

#[derive(Debug, Clone)]
pub struct VirtualCounters {
    input_weight: f64,
    output_weight: f64,
    tenant_weights: HashMap<Arc<str>, f64>,
    counters: HashMap<Arc<str>, f64>,
    /// When each tenant last asked for service.
    last_seen: HashMap<Arc<str>, Timestamp>,
}

impl VirtualCounters {
    pub fn new(p: &VtcParams) -> Self {
        Self {
            input_weight: p.input_token_weight,
            output_weight: p.output_token_weight,
            tenant_weights: p
                .tenant_weights
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), *v))
                .collect(),
            counters: HashMap::new(),
            last_seen: HashMap::new(),
        }
    }

    /// Takes over `old`'s counters (a configuration reload): service already received keeps
    /// counting, so a reload cannot reset fairness.
    pub fn carry_over(&mut self, old: &VirtualCounters) {
        self.counters.clone_from(&old.counters);
        self.last_seen.clone_from(&old.last_seen);
    }

    /// `tenant` asked for service at `now`.
    pub fn seen(&mut self, tenant: &Arc<str>, now: Timestamp) {
        self.last_seen.insert(tenant.clone(), now);
    }

    /// Forgets tenants idle for `idle_for` (not asked for service since) that `keep` does not
    /// hold (backlogged, or with responses still being charged). A tenant that comes back starts
    /// again and is lifted to the backlogged tenants' smallest counter, as after any idle spell.
    /// Returns how many were forgotten.
    pub fn collect(
        &mut self,
        now: Timestamp,
        idle_for: std::time::Duration,
        keep: impl Fn(&str) -> bool,
    ) -> usize {
        let before = self.counters.len();
        let last_seen = &self.last_seen;
        self.counters.retain(|t, _| {
            keep(t)
                || last_seen
                    .get(t)
                    .is_some_and(|&at| now.saturating_since(at) < idle_for)
        });
        let counters = &self.counters;
        self.last_seen.retain(|t, _| counters.contains_key(t));
        before - self.counters.len()
    }

    /// Tenants with a counter.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Every tenant's counter.
    pub fn counters(&self) -> impl Iterator<Item = (&Arc<str>, f64)> {
        self.counters.iter().map(|(t, c)| (t, *c))
    }

    /// The tenant's counter; a tenant never seen starts at 0.
    pub fn counter(&self, tenant: &str) -> f64 {
        self.counters.get(tenant).copied().unwrap_or(0.0)
    }

    fn weight(&self, tenant: &str) -> f64 {
        self.tenant_weights.get(tenant).copied().unwrap_or(1.0)
    }

    fn entry(&mut self, tenant: &Arc<str>) -> &mut f64 {
        self.counters.entry(tenant.clone()).or_insert(0.0)
    }

    /// `tenant` just became backlogged: lift its counter to the smallest counter among the
    /// `others` that are backlogged (no lift when none are).
    pub fn lift<'a>(&mut self, tenant: &Arc<str>, others: impl Iterator<Item = &'a Arc<str>>) {
        let floor = others
            .filter(|o| o.as_ref() != tenant.as_ref())
            .map(|o| self.counter(o))
            .min_by(f64::total_cmp);
        if let Some(floor) = floor {
            let c = self.entry(tenant);
            if *c < floor {
                *c = floor;
            }
        }
    }

    /// Of `backlogged` tenants, the one to serve next: the smallest counter; ties go to the
    /// first in iteration order, so callers decide the tie-break by how they order candidates.
    pub fn pick<'a>(&self, backlogged: impl Iterator<Item = &'a Arc<str>>) -> Option<&'a Arc<str>> {
        let mut best: Option<(&Arc<str>, f64)> = None;
        for t in backlogged {
            let c = self.counter(t);
            if best.is_none_or(|(_, b)| c < b) {
                best = Some((t, c));
            }
        }
        best.map(|(t, _)| t)
    }

    /// Charges `input_tokens` (may be negative to correct an earlier estimate) and
    /// `output_tokens`, weighted and divided by the tenant's weight. Returns the service
    /// charged before the tenant's weight divides it.
    pub fn charge(&mut self, tenant: &Arc<str>, input_tokens: f64, output_tokens: f64) -> f64 {
        let cost = self.input_weight * input_tokens + self.output_weight * output_tokens;
        if cost == 0.0 || !cost.is_finite() {
            return 0.0;
        }
        let w = self.weight(tenant);
        *self.entry(tenant) += cost / w;
        cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn idle_tenants_are_collected_unless_kept() {
        let mut v = VirtualCounters::new(&VtcParams::default());
        let (a, b, c) = (t("a"), t("b"), t("c"));
        for (x, at) in [(&a, 0), (&b, 0), (&c, 50)] {
            v.seen(x, Timestamp::from_millis(at * 1000));
            v.charge(x, 10.0, 0.0);
        }
        let idle = std::time::Duration::from_secs(60);
        assert_eq!(
            v.collect(Timestamp::from_millis(30 * 1000), idle, |_| false),
            0
        );
        // a and b are idle for 60 s at t=60; b is kept (backlogged or still charged).
        assert_eq!(
            v.collect(Timestamp::from_millis(60 * 1000), idle, |t| t == "b"),
            1
        );
        assert_eq!((v.counter("a"), v.counter("b"), v.len()), (0.0, 10.0, 2));
    }

    #[test]
    fn lift_only_raises_to_the_smallest_other_backlogged_counter() {
        let mut v = VirtualCounters::new(&VtcParams::default());
        let (a, b, c) = (t("a"), t("b"), t("c"));
        v.charge(&a, 100.0, 0.0);
        v.charge(&b, 300.0, 0.0);
        // c returns from idle while a and b wait: lifted to a's 100, not b's 300.
        v.lift(&c, [a.clone(), b.clone()].iter());
        assert_eq!(v.counter("c"), 100.0);
        // A counter above the floor is never lowered.
        v.lift(&b, [a.clone()].iter());
        assert_eq!(v.counter("b"), 300.0);
        // Nobody else backlogged: no lift.
        let d = t("d");
        v.lift(&d, [d.clone()].iter());
        assert_eq!(v.counter("d"), 0.0);
    }

    #[test]
    fn charges_weight_input_and_output_and_divide_by_tenant_weight() {
        let mut p = VtcParams::default();
        p.tenant_weights.insert("gold".into(), 2.0);
        let mut v = VirtualCounters::new(&p);
        v.charge(&t("gold"), 100.0, 10.0);
        v.charge(&t("free"), 100.0, 10.0);
        assert_eq!(v.counter("gold"), 60.0); // (100 + 2·10) / 2
        assert_eq!(v.counter("free"), 120.0);
        // A correction may lower the counter.
        v.charge(&t("free"), -20.0, 0.0);
        assert_eq!(v.counter("free"), 100.0);
        v.charge(&t("free"), f64::NAN, 0.0);
        assert_eq!(v.counter("free"), 100.0);
    }

    #[test]
    fn pick_takes_the_smallest_counter_first_on_ties() {
        let mut v = VirtualCounters::new(&VtcParams::default());
        let (a, b, c) = (t("a"), t("b"), t("c"));
        v.charge(&a, 5.0, 0.0);
        let order = [b.clone(), c.clone(), a.clone()];
        assert_eq!(v.pick(order.iter()).map(|x| x.as_ref()), Some("b"));
        v.charge(&b, 1.0, 0.0);
        assert_eq!(v.pick(order.iter()).map(|x| x.as_ref()), Some("c"));
        assert_eq!(v.pick([].iter()), None);
    }
}
