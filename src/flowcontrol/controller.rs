//! The flow controller's state: priority bands, one queue per tenant (flow) in each band, the
//! fairness policy that picks a flow and the ordering policy that orders its items. Pure and
//! synchronous: time and the pool's saturation are passed in, so the server and the simulator's
//! discrete-event mode run the same code.
//!
//! Semantics follow GIE's flow control (gie-epp.md §5.2): strict priority between bands, a band
//! is only served while the pool's saturation is under its ceiling (and a saturated pool stops
//! the whole cycle, so a lower band never overtakes a blocked higher one), capacity limits
//! checked at enqueue, TTL eviction. Where GIE runs a 1 ms ticker, the caller here dispatches on
//! events (an arrival, a metrics refresh, a completion, the next deadline).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::vtc::{VirtualCounters, VtcParams};
use crate::decode::{Diagnostics, Obj, Params};
use crate::scheduling::Timestamp;

/// Default per-band byte limit (GIE).
pub const DEFAULT_BAND_MAX_BYTES: u64 = 1_000_000_000;

/// `static-usage-limit-policy`'s parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLimitParams {
    /// Saturation ceiling for every band.
    pub threshold: f64,
}

impl Default for UsageLimitParams {
    fn default() -> Self {
        Self { threshold: 1.0 }
    }
}

impl Params for UsageLimitParams {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let mut p = Self::default();
        if let Some(v) = o.f64("threshold", d) {
            if v <= 0.0 {
                d.error(o.at("threshold"), format!("must be > 0, got {v}"));
            } else {
                p.threshold = v;
            }
        }
        p
    }

    fn render(&self) -> Option<Value> {
        Some(json!({ "threshold": self.threshold }))
    }
}

/// Identifies a queued request.
pub type ItemId = u64;

/// How items inside one flow are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// `fcfs-ordering-policy`: arrival order.
    Fcfs,
    /// `edf-ordering-policy`: earliest deadline first; items without a deadline last.
    Edf,
}

/// How a band picks the flow to serve.
#[derive(Debug, Clone, PartialEq)]
pub enum Fairness {
    /// `global-strict-fairness-policy`: the best head across flows under the ordering policy.
    GlobalStrict,
    /// `round-robin-fairness-policy`: turns over the sorted flow ids.
    RoundRobin,
    /// `vtc-fairness-policy`: the backlogged tenant with the least virtual service.
    Vtc(VtcParams),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BandConfig {
    /// 0 = unlimited.
    pub max_bytes: u64,
    /// 0 = unlimited.
    pub max_requests: u64,
    pub ordering: Ordering,
    pub fairness: Fairness,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// 0 = unlimited.
    pub max_bytes: u64,
    /// 0 = unlimited.
    pub max_requests: u64,
    /// How long an item may wait when the request brings no deadline; `None` = until cancelled.
    pub default_ttl: Option<Duration>,
    /// Template for priorities without their own band.
    pub default_band: BandConfig,
    /// Template for negative priorities without their own band (llm-d-router's
    /// `defaultNegativePriorityBand`); `None` uses `default_band`.
    pub default_negative_band: Option<BandConfig>,
    pub bands: BTreeMap<i32, BandConfig>,
    /// A band is served only while the pool's saturation is below this (static usage limit).
    pub ceiling: f64,
    /// VTC state of a tenant idle this long (nothing queued, nothing being charged) is
    /// collected (`--fairness-idle-timeout`).
    pub tenant_idle_timeout: Duration,
}

/// Default of [`ControllerConfig::tenant_idle_timeout`].
pub const DEFAULT_TENANT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            max_bytes: 0,
            max_requests: 0,
            default_ttl: None,
            default_band: BandConfig {
                max_bytes: DEFAULT_BAND_MAX_BYTES,
                max_requests: 0,
                ordering: Ordering::Fcfs,
                fairness: Fairness::GlobalStrict,
            },
            default_negative_band: None,
            bands: BTreeMap::new(),
            ceiling: 1.0,
            tenant_idle_timeout: DEFAULT_TENANT_IDLE_TIMEOUT,
        }
    }
}

/// A request asking to be queued.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub fairness_id: String,
    pub priority: i32,
    /// Request body size, for the byte limits.
    pub bytes: u64,
    /// Estimated input tokens, charged to the tenant at dispatch under VTC.
    pub input_tokens: u64,
    /// The request's own deadline, if it brings one; else the default TTL applies.
    pub ttl: Option<Duration>,
}

/// Why an item was refused at enqueue (429).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("queue at capacity ({0})")]
    Capacity(String),
}

/// An item leaving the queue: dispatched, expired or cancelled.
#[derive(Debug, Clone, PartialEq)]
pub struct Released {
    pub id: ItemId,
    pub fairness_id: Arc<str>,
    pub priority: i32,
    pub enqueued_at: Timestamp,
    pub bytes: u64,
    /// Input tokens charged to the tenant at dispatch (0 unless the band runs VTC).
    pub charged_input_tokens: u64,
    /// The service that charge stands for (weighted tokens, before the tenant's weight).
    pub charged_service: f64,
}

#[derive(Debug, Clone)]
struct Meta {
    priority: i32,
    fairness_id: Arc<str>,
    key: (u64, u64),
    bytes: u64,
    enqueued_at: Timestamp,
    deadline: Option<Timestamp>,
    input_tokens: u64,
    /// The request's own time to live, kept to re-admit it under a new configuration.
    ttl: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
struct Flow {
    /// (ordering key, arrival sequence) → item.
    queue: BTreeMap<(u64, u64), ItemId>,
    bytes: u64,
}

#[derive(Debug, Clone)]
enum Policy {
    GlobalStrict,
    RoundRobin { last: Option<Arc<str>> },
    Vtc(VirtualCounters),
}

/// A float ordered by `total_cmp`, for keys.
#[derive(Debug, Clone, Copy)]
struct OrdF64(f64);

impl PartialEq for OrdF64 {
    fn eq(&self, o: &Self) -> bool {
        self.0.total_cmp(&o.0).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Where a backlogged flow stands for global-strict and VTC picks: its counter (0 for
/// global-strict), then its head item's ordering key.
type Rank = (OrdF64, (u64, u64));

#[derive(Debug, Clone)]
struct Band {
    cfg: BandConfig,
    /// Non-empty flows only: a flow exists while it is backlogged.
    flows: BTreeMap<Arc<str>, Flow>,
    policy: Policy,
    /// Backlogged flows by rank, so a pick is a lookup, not a scan over tenants.
    index: BTreeSet<(Rank, Arc<str>)>,
    ranks: HashMap<Arc<str>, Rank>,
    bytes: u64,
    requests: u64,
}

impl Band {
    fn new(cfg: BandConfig) -> Self {
        let policy = match &cfg.fairness {
            Fairness::GlobalStrict => Policy::GlobalStrict,
            Fairness::RoundRobin => Policy::RoundRobin { last: None },
            Fairness::Vtc(p) => Policy::Vtc(VirtualCounters::new(p)),
        };
        Self {
            cfg,
            flows: BTreeMap::new(),
            policy,
            index: BTreeSet::new(),
            ranks: HashMap::new(),
            bytes: 0,
            requests: 0,
        }
    }

    /// Re-ranks `tenant` after its head or counter changed (or its flow emptied).
    fn reindex(&mut self, tenant: &Arc<str>) {
        let counter = match &self.policy {
            Policy::RoundRobin { .. } => return,
            Policy::GlobalStrict => 0.0,
            Policy::Vtc(v) => v.counter(tenant),
        };
        if let Some(old) = self.ranks.remove(tenant) {
            self.index.remove(&(old, tenant.clone()));
        }
        if let Some(flow) = self.flows.get(tenant) {
            let rank = (OrdF64(counter), Self::head_key(flow));
            self.index.insert((rank, tenant.clone()));
            self.ranks.insert(tenant.clone(), rank);
        }
    }

    fn head_key(flow: &Flow) -> (u64, u64) {
        *flow.queue.keys().next().expect("flows are never empty")
    }

    /// The flow to serve next; `None` when the band is empty.
    fn pick(&mut self) -> Option<Arc<str>> {
        if self.flows.is_empty() {
            return None;
        }
        match &mut self.policy {
            // Global-strict: the best head; VTC: the least counter, then the earliest head.
            Policy::GlobalStrict | Policy::Vtc(_) => self.index.first().map(|(_, t)| t.clone()),
            Policy::RoundRobin { last } => {
                let flows = &self.flows;
                let next = match last {
                    Some(l) => flows
                        .range::<str, _>((
                            std::ops::Bound::Excluded(l.as_ref()),
                            std::ops::Bound::Unbounded,
                        ))
                        .next()
                        .or_else(|| flows.iter().next()),
                    None => flows.iter().next(),
                };
                let k = next.map(|(k, _)| k.clone());
                last.clone_from(&k);
                k
            }
        }
    }
}

/// The band serving `priority`, created from its configuration (or the default band's) on first
/// use.
fn band_entry<'a>(
    bands: &'a mut BTreeMap<i32, Band>,
    cfg: &ControllerConfig,
    priority: i32,
) -> &'a mut Band {
    bands
        .entry(priority)
        .or_insert_with(|| Band::new(cfg.band_config(priority).clone()))
}

impl ControllerConfig {
    /// The configuration of the band serving `priority`: its own, else the template for its
    /// sign.
    pub fn band_config(&self, priority: i32) -> &BandConfig {
        self.bands
            .get(&priority)
            .unwrap_or(match &self.default_negative_band {
                Some(neg) if priority < 0 => neg,
                _ => &self.default_band,
            })
    }

    /// Every band configuration: the templates and the configured bands.
    pub fn all_bands(&self) -> impl Iterator<Item = &BandConfig> {
        std::iter::once(&self.default_band)
            .chain(self.default_negative_band.iter())
            .chain(self.bands.values())
    }
}

/// The queue state of one EPP.
#[derive(Debug, Clone)]
pub struct FlowController {
    cfg: ControllerConfig,
    /// Keyed by priority; served from the highest.
    bands: BTreeMap<i32, Band>,
    items: HashMap<ItemId, Meta>,
    deadlines: BTreeSet<(Timestamp, ItemId)>,
    next_id: ItemId,
    bytes: u64,
}

impl FlowController {
    pub fn new(cfg: ControllerConfig) -> Self {
        let bands = cfg
            .bands
            .iter()
            .map(|(p, b)| (*p, Band::new(b.clone())))
            .collect();
        Self {
            cfg,
            bands,
            items: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_id: 1,
            bytes: 0,
        }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// Queued requests.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queued bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Queues `item`, or refuses it when a global or band limit would be exceeded.
    pub fn enqueue(&mut self, item: NewItem, now: Timestamp) -> Result<ItemId, Rejected> {
        let id = self.next_id;
        self.enqueue_as(id, item, now)?;
        Ok(id)
    }

    /// Queues `item` under the caller's `id` (unique among queued items), arrived at
    /// `enqueued_at`: its FCFS position and deadline count from then.
    pub fn enqueue_as(
        &mut self,
        id: ItemId,
        item: NewItem,
        enqueued_at: Timestamp,
    ) -> Result<(), Rejected> {
        let c = &self.cfg;
        if c.max_requests > 0 && self.items.len() as u64 >= c.max_requests {
            return Err(Rejected::Capacity(format!(
                "maxRequests {} reached",
                c.max_requests
            )));
        }
        if c.max_bytes > 0 && self.bytes.saturating_add(item.bytes) > c.max_bytes {
            return Err(Rejected::Capacity(format!(
                "maxBytes {} would be exceeded",
                c.max_bytes
            )));
        }
        let band = band_entry(&mut self.bands, c, item.priority);
        if band.cfg.max_requests > 0 && band.requests >= band.cfg.max_requests {
            return Err(Rejected::Capacity(format!(
                "priority band {} maxRequests {} reached",
                item.priority, band.cfg.max_requests
            )));
        }
        if band.cfg.max_bytes > 0 && band.bytes.saturating_add(item.bytes) > band.cfg.max_bytes {
            return Err(Rejected::Capacity(format!(
                "priority band {} maxBytes {} would be exceeded",
                item.priority, band.cfg.max_bytes
            )));
        }
        self.next_id = self.next_id.max(id.saturating_add(1));
        let deadline = item
            .ttl
            .or(c.default_ttl)
            .map(|ttl| enqueued_at.saturating_add(ttl));
        let key = match band.cfg.ordering {
            Ordering::Fcfs => (enqueued_at.as_nanos(), id),
            Ordering::Edf => (deadline.map_or(u64::MAX, Timestamp::as_nanos), id),
        };
        let tenant: Arc<str> = match band.flows.get_key_value(item.fairness_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let t: Arc<str> = Arc::from(item.fairness_id.as_str());
                // Becoming backlogged: VTC lifts the counter so idle time is not banked.
                if let Policy::Vtc(v) = &mut band.policy {
                    v.lift(&t, band.flows.keys());
                }
                t
            }
        };
        if let Policy::Vtc(v) = &mut band.policy {
            v.seen(&tenant, enqueued_at);
        }
        let flow = band.flows.entry(tenant.clone()).or_default();
        flow.queue.insert(key, id);
        flow.bytes += item.bytes;
        band.reindex(&tenant);
        band.bytes += item.bytes;
        band.requests += 1;
        self.bytes += item.bytes;
        if let Some(d) = deadline {
            self.deadlines.insert((d, id));
        }
        self.items.insert(
            id,
            Meta {
                priority: item.priority,
                fairness_id: tenant,
                key,
                bytes: item.bytes,
                enqueued_at,
                deadline,
                input_tokens: item.input_tokens,
                ttl: item.ttl,
            },
        );
        Ok(())
    }

    /// Takes over `old`'s queue and its tenants' virtual counters (where the band runs VTC in
    /// both), re-admitting every queued item under this configuration in its original order,
    /// with its id, arrival time and time to live. Returns the items that no longer fit.
    pub fn adopt(&mut self, mut old: FlowController) -> Vec<(Released, Rejected)> {
        self.next_id = self.next_id.max(old.next_id);
        for (priority, band) in &old.bands {
            let Policy::Vtc(old_v) = &band.policy else {
                continue;
            };
            if let Policy::Vtc(v) = &mut band_entry(&mut self.bands, &self.cfg, *priority).policy {
                v.carry_over(old_v);
            }
        }
        let mut items: Vec<(Timestamp, ItemId)> = old
            .items
            .iter()
            .map(|(id, m)| (m.enqueued_at, *id))
            .collect();
        items.sort_unstable();
        let mut refused = Vec::new();
        for (_, id) in items {
            let meta = old.items[&id].clone();
            let released = old.cancel(id).expect("listed from the queue");
            let item = NewItem {
                fairness_id: meta.fairness_id.to_string(),
                priority: meta.priority,
                bytes: meta.bytes,
                input_tokens: meta.input_tokens,
                ttl: meta.ttl,
            };
            if let Err(e) = self.enqueue_as(id, item, meta.enqueued_at) {
                refused.push((released, e));
            }
        }
        refused
    }

    /// One dispatch decision at `saturation` (0 idle, ≥ 1 saturated): the item to release now,
    /// or `None` when the pool is at the ceiling or nothing waits. Under VTC the tenant is
    /// charged the item's input tokens here.
    pub fn dispatch(&mut self, saturation: f64) -> Option<Released> {
        // NaN (unknown saturation) is not below the ceiling either.
        let below = saturation.partial_cmp(&self.cfg.ceiling) == Some(std::cmp::Ordering::Less);
        if self.items.is_empty() || !below {
            return None;
        }
        for band in self.bands.values_mut().rev() {
            let Some(tenant) = band.pick() else { continue };
            let flow = band.flows.get_mut(&tenant).expect("picked from the map");
            let (_, id) = flow.queue.pop_first().expect("flows are never empty");
            let meta = self.items.remove(&id).expect("queued items have metadata");
            flow.bytes -= meta.bytes;
            if flow.queue.is_empty() {
                band.flows.remove(&tenant);
            }
            band.bytes -= meta.bytes;
            band.requests -= 1;
            self.bytes -= meta.bytes;
            if let Some(d) = meta.deadline {
                self.deadlines.remove(&(d, id));
            }
            let (mut charged, mut service) = (0, 0.0);
            if let Policy::Vtc(v) = &mut band.policy {
                service = v.charge(&meta.fairness_id, meta.input_tokens as f64, 0.0);
                charged = meta.input_tokens;
            }
            band.reindex(&tenant);
            return Some(Released {
                id,
                fairness_id: meta.fairness_id,
                priority: meta.priority,
                enqueued_at: meta.enqueued_at,
                bytes: meta.bytes,
                charged_input_tokens: charged,
                charged_service: service,
            });
        }
        None
    }

    /// Removes a queued item (the client went away); `None` when it is not queued any more.
    pub fn cancel(&mut self, id: ItemId) -> Option<Released> {
        let meta = self.items.remove(&id)?;
        let band = self.bands.get_mut(&meta.priority).expect("item's band");
        if let Some(flow) = band.flows.get_mut(&meta.fairness_id) {
            flow.queue.remove(&meta.key);
            flow.bytes -= meta.bytes;
            if flow.queue.is_empty() {
                band.flows.remove(&meta.fairness_id);
            }
        }
        band.reindex(&meta.fairness_id);
        band.bytes -= meta.bytes;
        band.requests -= 1;
        self.bytes -= meta.bytes;
        if let Some(d) = meta.deadline {
            self.deadlines.remove(&(d, id));
        }
        Some(Released {
            id,
            fairness_id: meta.fairness_id,
            priority: meta.priority,
            enqueued_at: meta.enqueued_at,
            bytes: meta.bytes,
            charged_input_tokens: 0,
            charged_service: 0.0,
        })
    }

    /// Removes and returns every item whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Timestamp) -> Vec<Released> {
        let mut out = Vec::new();
        while let Some(&(d, id)) = self.deadlines.first() {
            if d > now {
                break;
            }
            if let Some(r) = self.cancel(id) {
                out.push(r);
            } else {
                self.deadlines.pop_first();
            }
        }
        out
    }

    /// The earliest deadline among queued items.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// Charges `tenant` in band `priority` after dispatch: a correction of the input estimate
    /// (`input_delta`, may be negative) and output tokens as the response reports them. A no-op
    /// unless the band runs VTC. Returns the service charged (before the tenant's weight).
    pub fn charge(
        &mut self,
        priority: i32,
        tenant: &str,
        input_delta: f64,
        output_tokens: u64,
    ) -> f64 {
        if let Some(band) = self.bands.get_mut(&priority)
            && let Policy::Vtc(v) = &mut band.policy
        {
            let t: Arc<str> = Arc::from(tenant);
            let service = v.charge(&t, input_delta, output_tokens as f64);
            band.reindex(&t);
            return service;
        }
        0.0
    }

    /// Whether the band for `priority` charges only uncached input tokens.
    pub fn charges_uncached_only(&self, priority: i32) -> bool {
        let band = self
            .bands
            .get(&priority)
            .map(|b| &b.cfg)
            .unwrap_or_else(|| self.cfg.band_config(priority));
        matches!(&band.fairness, Fairness::Vtc(p) if p.charge_uncached_input_only)
    }

    /// Whether any band runs VTC (then usage must be reported back).
    pub fn uses_vtc(&self) -> bool {
        let vtc = |b: &BandConfig| matches!(b.fairness, Fairness::Vtc(_));
        self.cfg.all_bands().any(vtc)
    }

    /// The virtual counter of `tenant` in band `priority` (VTC bands only).
    pub fn counter(&self, priority: i32, tenant: &str) -> Option<f64> {
        match &self.bands.get(&priority)?.policy {
            Policy::Vtc(v) => Some(v.counter(tenant)),
            _ => None,
        }
    }

    /// Every tenant's virtual counter in each band that runs VTC: (priority, tenant, counter).
    pub fn counters(&self) -> impl Iterator<Item = (i32, &Arc<str>, f64)> {
        self.bands.iter().flat_map(|(p, b)| {
            let counters = match &b.policy {
                Policy::Vtc(v) => Some(v.counters()),
                _ => None,
            };
            counters.into_iter().flatten().map(move |(t, c)| (*p, t, c))
        })
    }

    /// Collects the VTC state of tenants idle for the configured timeout that are not
    /// backlogged and not in `charging` (dispatched requests still reporting usage). Returns
    /// how many tenants were forgotten.
    pub fn collect_idle(&mut self, now: Timestamp, charging: &HashSet<&str>) -> usize {
        let idle_for = self.cfg.tenant_idle_timeout;
        let mut n = 0;
        for band in self.bands.values_mut() {
            if let Policy::Vtc(v) = &mut band.policy {
                let flows = &band.flows;
                n += v.collect(now, idle_for, |t| {
                    flows.contains_key(t) || charging.contains(t)
                });
            }
        }
        n
    }

    /// Queued requests and bytes per flow: (priority, tenant, requests, bytes).
    pub fn flows(&self) -> impl Iterator<Item = (i32, &Arc<str>, usize, u64)> {
        self.bands.iter().flat_map(|(p, b)| {
            b.flows
                .iter()
                .map(move |(t, f)| (*p, t, f.queue.len(), f.bytes))
        })
    }
}

#[cfg(test)]
mod tests;
