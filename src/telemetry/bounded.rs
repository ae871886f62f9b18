//! Bounded label values. Any client behind the gateway chooses the `model` and the fairness id,
//! and every distinct value would otherwise become new series in several metric families forever.
//! A [`LabelBound`] passes values the configuration knows unchanged and keeps the most recently
//! seen N others (LRU); a value beyond that takes the slot of the least recently used one whose
//! series are all idle (their gauges back at zero) — those series are removed — and when no slot
//! can be freed the value is counted under [`OTHER`]. Series are tracked per value by
//! [`TrackedFamily`], so forgetting a value removes exactly its series.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label value for everything beyond the bound.
pub const OTHER: &str = "other";

/// How many least recently used values an insertion looks at for an idle one to replace.
const EVICTION_CANDIDATES: usize = 16;

/// Series that can tell whether a value's series are idle and forget them.
pub trait SeriesIndex: Send + Sync {
    /// True when every series of `value` can be removed without losing state (no gauge is
    /// away from zero).
    fn idle(&self, value: &str) -> bool;
    /// Removes every series of `value`.
    fn forget(&self, value: &str);
}

struct Lru {
    /// value → last use.
    used: HashMap<Arc<str>, u64>,
    /// last use → value.
    order: BTreeMap<u64, Arc<str>>,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, v: &Arc<str>) {
        self.tick += 1;
        if let Some(old) = self.used.insert(v.clone(), self.tick) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, v.clone());
    }

    fn remove(&mut self, v: &str) {
        if let Some(t) = self.used.remove(v) {
            self.order.remove(&t);
        }
    }
}

/// One dimension of client-chosen label values (see the module docs).
pub struct LabelBound {
    what: &'static str,
    capacity: usize,
    known: Mutex<Arc<HashSet<String>>>,
    lru: Mutex<Lru>,
    indexes: Mutex<Vec<Arc<dyn SeriesIndex>>>,
    other: Arc<str>,
    dropped: Counter,
    forgotten: Counter,
}

impl std::fmt::Debug for LabelBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelBound")
            .field("what", &self.what)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl LabelBound {
    /// A bound on `what` (the label it names) keeping at most `capacity` values besides the
    /// known ones; its caps are counted in `metrics`.
    pub fn new(what: &'static str, capacity: usize, metrics: &BoundMetrics) -> Arc<Self> {
        let l = BoundLabels {
            label: what.to_string(),
        };
        Arc::new(Self {
            what,
            capacity,
            known: Mutex::new(Arc::new(HashSet::new())),
            lru: Mutex::new(Lru {
                used: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
            }),
            indexes: Mutex::new(Vec::new()),
            other: Arc::from(OTHER),
            dropped: metrics.dropped.get_or_create_owned(&l),
            forgotten: metrics.forgotten.get_or_create_owned(&l),
        })
    }

    /// Adds series that use this bound's values (before the first value resolves).
    pub fn track(&self, indexes: Vec<Arc<dyn SeriesIndex>>) {
        self.indexes.lock().extend(indexes);
    }

    /// Values that always pass (named by the configuration: objectives' models, rewrite
    /// targets, tenants with weights).
    pub fn set_known(&self, values: impl IntoIterator<Item = String>) {
        *self.known.lock() = Arc::new(values.into_iter().collect());
    }

    /// The label value to use for `value`.
    pub fn resolve(&self, value: &str) -> Arc<str> {
        if self.known.lock().contains(value) {
            return Arc::from(value);
        }
        let mut lru = self.lru.lock();
        if let Some((v, _)) = lru.used.get_key_value(value) {
            let v = v.clone();
            lru.touch(&v);
            return v;
        }
        if lru.used.len() >= self.capacity && !self.make_room(&mut lru) {
            self.dropped.inc();
            return self.other.clone();
        }
        let v: Arc<str> = Arc::from(value);
        lru.touch(&v);
        v
    }

    /// Forgets the least recently used value whose series are idle; false when none is.
    fn make_room(&self, lru: &mut Lru) -> bool {
        let indexes = self.indexes.lock();
        let victim = lru
            .order
            .values()
            .take(EVICTION_CANDIDATES)
            .find(|v| indexes.iter().all(|i| i.idle(&self.key(v))))
            .cloned();
        let Some(v) = victim else {
            return false;
        };
        for i in indexes.iter() {
            i.forget(&self.key(&v));
        }
        lru.remove(&v);
        self.forgotten.inc();
        true
    }

    /// How series index a value of this bound: values of different bounds never collide.
    pub fn key(&self, value: &str) -> Arc<str> {
        index_key(self.what, value)
    }

    /// Values kept besides the known ones.
    pub fn len(&self) -> usize {
        self.lru.lock().used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoundLabels {
    pub label: String,
}

/// The cap metrics of every bound, registered once.
#[derive(Clone, Default)]
pub struct BoundMetrics {
    dropped: Family<BoundLabels, Counter>,
    forgotten: Family<BoundLabels, Counter>,
}

impl BoundMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "switchyard_label_values_dropped",
            "Requests whose client-chosen label value was counted under \"other\" because the bound was full",
            self.dropped.clone(),
        );
        r.register(
            "switchyard_label_values_forgotten",
            "Client-chosen label values whose series were removed to make room for newer ones",
            self.forgotten.clone(),
        );
    }
}

/// A metric family whose series are indexed by the bounded values in their labels, so a value
/// can be forgotten. `keys` extracts, for one bound, the value a label set carries.
pub struct TrackedFamily<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    keys: fn(&L) -> Vec<Arc<str>>,
    index: Mutex<HashMap<Arc<str>, HashSet<L>>>,
    idle: fn(&M) -> bool,
}

impl<L, M, C> TrackedFamily<L, M, C>
where
    L: Clone + Hash + Eq + Send + Sync,
    C: MetricConstructor<M>,
{
    pub fn new(
        family: Family<L, M, C>,
        keys: fn(&L) -> Vec<Arc<str>>,
        idle: fn(&M) -> bool,
    ) -> Self {
        Self {
            family,
            keys,
            index: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// The series for `labels`, created (and indexed under its bounded values) if new.
    pub fn get_or_create(&self, labels: &L) -> parking_lot::MappedRwLockReadGuard<'_, M> {
        if let Some(m) = self.family.get(labels) {
            return m;
        }
        let mut index = self.index.lock();
        for k in (self.keys)(labels) {
            let set = index.entry(k).or_default();
            if !set.contains(labels) {
                set.insert(labels.clone());
            }
        }
        drop(index);
        self.family.get_or_create(labels)
    }

    pub fn family(&self) -> &Family<L, M, C> {
        &self.family
    }
}

impl<L, M, C> SeriesIndex for TrackedFamily<L, M, C>
where
    L: Clone + Hash + Eq + Send + Sync,
    M: Send + Sync,
    C: MetricConstructor<M> + Send + Sync,
{
    fn idle(&self, value: &str) -> bool {
        let index = self.index.lock();
        index.get(value).is_none_or(|set| {
            set.iter()
                .all(|l| self.family.get(l).is_none_or(|m| (self.idle)(&m)))
        })
    }

    fn forget(&self, value: &str) {
        let Some(set) = self.index.lock().remove(value) else {
            return;
        };
        let mut index = self.index.lock();
        for l in set {
            self.family.remove(&l);
            // A series under several bounded values goes from every entry.
            for k in (self.keys)(&l) {
                if let Some(s) = index.get_mut(&k) {
                    s.remove(&l);
                }
            }
        }
    }
}

/// The index key of `value` for the bound on label `what`.
pub fn index_key(what: &str, value: &str) -> Arc<str> {
    Arc::from(format!("{what}\u{1e}{value}"))
}

/// Counters and histograms can always be dropped.
pub fn always_idle<M>(_: &M) -> bool {
    true
}

/// A gauge is idle at zero.
pub fn gauge_idle(g: &Gauge) -> bool {
    g.get() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct L {
        v: String,
    }

    type Setup = (
        Arc<LabelBound>,
        Arc<TrackedFamily<L, Gauge>>,
        Arc<TrackedFamily<L, Counter>>,
    );

    fn setup(cap: usize) -> Setup {
        let bm = BoundMetrics::default();
        let b = LabelBound::new("v", cap, &bm);
        let gauges = Arc::new(TrackedFamily::new(
            Family::default(),
            |l: &L| vec![index_key("v", &l.v)],
            gauge_idle,
        ));
        let counters = Arc::new(TrackedFamily::new(
            Family::default(),
            |l: &L| vec![index_key("v", &l.v)],
            always_idle,
        ));
        b.track(vec![gauges.clone(), counters.clone()]);
        (b, gauges, counters)
    }

    fn l(v: &str) -> L {
        L { v: v.into() }
    }

    #[test]
    fn known_values_pass_and_the_rest_is_bounded_by_recency() {
        let (b, _, counters) = setup(2);
        b.set_known(["gold".to_string()]);
        for v in ["a", "b"] {
            let r = b.resolve(v);
            counters.get_or_create(&l(&r)).inc();
        }
        assert_eq!(&*b.resolve("gold"), "gold");
        b.resolve("a"); // a is now more recent than b
        let r = b.resolve("c");
        assert_eq!(&*r, "c", "b, the least recently used, made room");
        assert!(
            counters.family().get(&l("b")).is_none(),
            "b's series were removed"
        );
        assert!(counters.family().get(&l("a")).is_some());
        assert_eq!(b.len(), 2);
        assert_eq!(b.forgotten.get(), 1);
    }

    #[test]
    fn a_value_with_a_live_gauge_is_not_forgotten() {
        let (b, gauges, _) = setup(2);
        for v in ["a", "b"] {
            gauges.get_or_create(&l(&b.resolve(v))).inc();
        }
        // Both hold a gauge above zero: nothing can be forgotten.
        assert_eq!(&*b.resolve("c"), OTHER);
        assert_eq!(b.dropped.get(), 1);
        gauges.get_or_create(&l("a")).dec();
        assert_eq!(&*b.resolve("c"), "c", "a is idle now");
        assert!(gauges.family().get(&l("a")).is_none());
        assert_eq!(gauges.family().get(&l("b")).map(|g| g.get()), Some(1));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_values() {
        let (b, _, counters) = setup(50);
        for i in 0..20_000 {
            let r = b.resolve(&format!("model-{i}"));
            counters.get_or_create(&l(&r)).inc();
        }
        assert_eq!(b.len(), 50);
        let series = counters.index.lock().len();
        assert!(series <= 51, "{series} values indexed");
    }
}
