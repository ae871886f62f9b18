//! The prefix index: which endpoints hold which chained block hashes.
//!
//! Layout (no global lock):
//! - 64 shards, chosen by the hash's top bits, each a `RwLock<HashMap<hash, Holders>>`. Holders
//!   are `(endpoint id, LRU slot)` pairs; one holder is stored inline, more go to a boxed vector.
//! - One LRU per endpoint, behind its own mutex, capacity fixed when the endpoint is first
//!   recorded (its `num_gpu_blocks`, else the configured default).
//! - Endpoint names are interned to dense `u32` ids in a table published copy-on-write
//!   (`ArcSwap`): the request path reads it without a lock; it changes only when an endpoint is
//!   first recorded or forgotten.
//!
//! Lock order: an endpoint's LRU mutex, then one shard lock at a time. Readers (matching) take
//! only shard read locks. Only the holder of an endpoint's LRU mutex adds or removes that
//! endpoint's holders, which is what keeps the map and the LRUs consistent.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

use super::lru::Lru;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// The keys are already xxh64 outputs; one multiply spreads them over hashbrown's position and
/// tag bits, which a plain identity would not (the shard index uses the top bits).
#[derive(Default, Clone, Copy)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type HashMapMix<V> = HashMap<u64, V, BuildHasherDefault<MixHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    endpoint: u32,
    slot: u32,
}

/// Spreads an endpoint id over 64 bits for the holder-set fingerprint.
#[inline]
fn id_mix(endpoint: u32) -> u64 {
    let mut z = u64::from(endpoint).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Two or more holders, sorted by endpoint id, with the wrapping sum of their [`id_mix`]: the
/// set's fingerprint, kept up to date in O(1) on every change.
#[derive(Debug)]
struct Many {
    sum: u64,
    list: Vec<Holder>,
}

/// The endpoints holding one hash. 16 bytes: most hashes have one holder, stored inline.
#[derive(Debug)]
enum Holders {
    One(Holder),
    Many(Box<Many>),
}

impl Holders {
    fn as_slice(&self) -> &[Holder] {
        match self {
            Self::One(h) => std::slice::from_ref(h),
            Self::Many(m) => &m.list,
        }
    }

    /// Identifies the set of endpoints (not their slots): equal sets give equal fingerprints,
    /// different sets collide with probability about 2⁻⁶⁴.
    #[inline]
    fn fingerprint(&self) -> (usize, u64) {
        match self {
            Self::One(h) => (1, id_mix(h.endpoint)),
            Self::Many(m) => (m.list.len(), m.sum),
        }
    }

    fn find(&self, endpoint: u32) -> Option<u32> {
        match self {
            Self::One(h) => (h.endpoint == endpoint).then_some(h.slot),
            Self::Many(m) => m
                .list
                .binary_search_by_key(&endpoint, |h| h.endpoint)
                .ok()
                .map(|i| m.list[i].slot),
        }
    }

    /// Adds a holder for an endpoint not yet in the set.
    fn push(&mut self, h: Holder) {
        match self {
            Self::One(first) => {
                let first = *first;
                let list = if first.endpoint < h.endpoint {
                    vec![first, h]
                } else {
                    vec![h, first]
                };
                *self = Self::Many(Box::new(Many {
                    sum: id_mix(first.endpoint).wrapping_add(id_mix(h.endpoint)),
                    list,
                }));
            }
            Self::Many(m) => {
                let at = m
                    .list
                    .binary_search_by_key(&h.endpoint, |x| x.endpoint)
                    .unwrap_or_else(|i| i);
                m.list.insert(at, h);
                m.sum = m.sum.wrapping_add(id_mix(h.endpoint));
            }
        }
    }

    /// Removes `endpoint`; returns true when nobody holds the hash any more.
    fn remove(&mut self, endpoint: u32) -> bool {
        match self {
            Self::One(h) => h.endpoint == endpoint,
            Self::Many(m) => {
                if let Ok(i) = m.list.binary_search_by_key(&endpoint, |x| x.endpoint) {
                    m.list.remove(i);
                    m.sum = m.sum.wrapping_sub(id_mix(endpoint));
                }
                match m.list.len() {
                    0 => true,
                    1 => {
                        *self = Self::One(m.list[0]);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::One(_) => 0,
            Self::Many(m) => {
                std::mem::size_of::<Many>() + m.list.capacity() * std::mem::size_of::<Holder>()
            }
        }
    }
}

/// FxHash-style hasher for endpoint names (trusted input from discovery, short strings): the
/// producer resolves every candidate's name per request, and SipHash would dominate that.
#[derive(Default, Clone, Copy)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..c.len()].copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(buf))
                .wrapping_mul(0x517C_C1B7_2722_0A95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[repr(align(64))]
#[derive(Default)]
struct Shard(RwLock<HashMapMix<Holders>>);

struct EndpointLru {
    lru: Lru,
    /// Set when the endpoint is forgotten; a recorder that raced with the removal backs off.
    removed: bool,
}

struct EndpointEntry {
    id: u32,
    lru: Mutex<EndpointLru>,
}

#[derive(Default, Clone)]
struct EndpointTable {
    ids: HashMap<Arc<str>, u32, BuildHasherDefault<NameHasher>>,
    by_id: Vec<Option<(Arc<str>, Arc<EndpointEntry>)>>,
    free_ids: Vec<u32>,
}

/// Block hash → endpoints, with a bounded LRU per endpoint. Safe to share between threads.
pub struct PrefixIndex {
    shards: Box<[Shard]>,
    endpoints: ArcSwap<EndpointTable>,
    /// Serialises table writers (new and forgotten endpoints).
    table_write: Mutex<()>,
    default_capacity: u64,
    entries: AtomicUsize,
}

impl std::fmt::Debug for PrefixIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixIndex")
            .field("entries", &self.len())
            .field("endpoints", &self.endpoint_count())
            .field("default_capacity", &self.default_capacity)
            .finish()
    }
}

#[inline]
fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARD_BITS)) as usize
}

impl PrefixIndex {
    /// An empty index whose endpoints hold `default_capacity` blocks each unless told otherwise
    /// (GIE's `lruCapacityPerServer`, 31,250 by default).
    pub fn new(default_capacity: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            endpoints: ArcSwap::from_pointee(EndpointTable::default()),
            table_write: Mutex::new(()),
            default_capacity: default_capacity.max(1),
            entries: AtomicUsize::new(0),
        }
    }

    /// Indexed (block, endpoint) entries: the sum of every endpoint's LRU length. This is what
    /// `inference_extension_prefix_indexer_size` reports.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.load().ids.len()
    }

    /// Names of the endpoints the index holds blocks for.
    pub fn endpoints(&self) -> Vec<String> {
        let t = self.endpoints.load();
        t.ids.keys().map(|k| k.to_string()).collect()
    }

    /// The LRU capacity of `endpoint`, once it has been recorded.
    pub fn capacity_of(&self, endpoint: &str) -> Option<usize> {
        let e = self.entry(endpoint)?;
        Some(e.lru.lock().lru.capacity())
    }

    /// Blocks `endpoint` holds.
    pub fn len_of(&self, endpoint: &str) -> usize {
        self.entry(endpoint).map_or(0, |e| e.lru.lock().lru.len())
    }

    /// Whether `endpoint` holds `hash`.
    pub fn holds(&self, endpoint: &str, hash: u64) -> bool {
        let Some(e) = self.entry(endpoint) else {
            return false;
        };
        let map = self.shards[shard_of(hash)].0.read();
        map.get(&hash).and_then(|h| h.find(e.id)).is_some()
    }

    fn entry(&self, name: &str) -> Option<Arc<EndpointEntry>> {
        let t = self.endpoints.load();
        let id = *t.ids.get(name)?;
        t.by_id[id as usize].as_ref().map(|(_, e)| e.clone())
    }

    fn entry_or_insert(&self, name: &str, capacity: u64) -> Arc<EndpointEntry> {
        if let Some(e) = self.entry(name) {
            return e;
        }
        let _w = self.table_write.lock();
        let mut t = EndpointTable::clone(&self.endpoints.load());
        if let Some(&id) = t.ids.get(name)
            && let Some((_, e)) = &t.by_id[id as usize]
        {
            return e.clone();
        }
        let id = match t.free_ids.pop() {
            Some(id) => id,
            None => {
                t.by_id.push(None);
                (t.by_id.len() - 1) as u32
            }
        };
        let cap = if capacity > 0 {
            capacity
        } else {
            self.default_capacity
        };
        let entry = Arc::new(EndpointEntry {
            id,
            lru: Mutex::new(EndpointLru {
                lru: Lru::new(u32::try_from(cap).unwrap_or(u32::MAX)),
                removed: false,
            }),
        });
        let name: Arc<str> = Arc::from(name);
        t.ids.insert(name.clone(), id);
        t.by_id[id as usize] = Some((name, entry.clone()));
        self.endpoints.store(Arc::new(t));
        entry
    }

    /// Records that `endpoint` now caches every block in `hashes`, most recent last (as GIE adds
    /// them). `capacity` sets the endpoint's LRU size when this is its first record; 0 means the
    /// default. Full LRUs evict their least recently used block, which also drops the endpoint
    /// from that hash's holders.
    pub fn record(&self, endpoint: &str, capacity: u64, hashes: &[u64]) {
        if hashes.is_empty() {
            return;
        }
        let entry = self.entry_or_insert(endpoint, capacity);
        let id = entry.id;
        let mut guard = entry.lru.lock();
        if guard.removed {
            return;
        }
        let lru = &mut guard.lru;
        let mut added = 0usize;
        for &h in hashes {
            {
                let mut map = self.shards[shard_of(h)].0.write();
                match map.get_mut(&h) {
                    Some(holders) => {
                        if let Some(slot) = holders.find(id) {
                            lru.touch(slot);
                            continue;
                        }
                        if !lru.is_full() {
                            let slot = lru.push_front(h);
                            holders.push(Holder { endpoint: id, slot });
                            added += 1;
                            continue;
                        }
                    }
                    None if !lru.is_full() => {
                        let slot = lru.push_front(h);
                        map.insert(h, Holders::One(Holder { endpoint: id, slot }));
                        added += 1;
                        continue;
                    }
                    None => {}
                }
            }
            // Full: evict the least recently used block (under its own shard lock), then insert.
            // Nobody else adds holders for this endpoint meanwhile: we hold its LRU.
            if let Some(old) = lru.pop_back() {
                self.remove_holder(old, id);
            }
            let slot = lru.push_front(h);
            let holder = Holder { endpoint: id, slot };
            let mut map = self.shards[shard_of(h)].0.write();
            match map.get_mut(&h) {
                Some(holders) => holders.push(holder),
                None => {
                    map.insert(h, Holders::One(holder));
                }
            }
        }
        if added > 0 {
            self.entries.fetch_add(added, Ordering::Relaxed);
        }
    }

    fn remove_holder(&self, hash: u64, endpoint: u32) {
        let mut map = self.shards[shard_of(hash)].0.write();
        if let Some(holders) = map.get_mut(&hash)
            && holders.remove(endpoint)
        {
            map.remove(&hash);
        }
    }

    /// GIE's `matchLongestPrefix`: walks `hashes` in order and stops at the first one no endpoint
    /// holds; every endpoint holding a visited hash gets +1. An endpoint's count is therefore the
    /// number of visited hashes it holds, even with gaps (e.g. after an eviction).
    ///
    /// `counts` is indexed by endpoint id (see [`Self::counts_for`]); returns how many hashes were
    /// visited.
    pub fn match_longest_prefix(&self, hashes: &[u64], counts: &mut Vec<u32>) -> usize {
        counts.clear();
        counts.resize(self.endpoints.load().by_id.len(), 0);
        // Consecutive hashes usually have the same holders (a prefix cached on the same
        // endpoints), so counts are added per run of equal holder sets, not per hash: with 512
        // endpoints sharing a system prompt this is 512 additions instead of 512 per block.
        let mut run: Vec<u32> = Vec::new();
        let mut run_fp = (0usize, 0u64);
        let mut run_len = 0u32;
        let flush = |run: &[u32], n: u32, counts: &mut Vec<u32>| {
            for &e in run {
                let e = e as usize;
                if e >= counts.len() {
                    counts.resize(e + 1, 0);
                }
                counts[e] += n;
            }
        };
        let mut visited = 0;
        for &h in hashes {
            let map = self.shards[shard_of(h)].0.read();
            let Some(holders) = map.get(&h) else {
                break;
            };
            visited += 1;
            let fp = holders.fingerprint();
            if run_len > 0 && fp == run_fp {
                run_len += 1;
                continue;
            }
            flush(&run, run_len, counts);
            run.clear();
            run.extend(holders.as_slice().iter().map(|x| x.endpoint));
            run_fp = fp;
            run_len = 1;
        }
        flush(&run, run_len, counts);
        visited
    }

    /// Resolves the counts of [`Self::match_longest_prefix`] to endpoint names: `out[k]` is the
    /// count of `names[k]`.
    pub fn counts_for<'a>(
        &self,
        counts: &[u32],
        names: impl IntoIterator<Item = &'a str>,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        if counts.iter().all(|&c| c == 0) {
            out.extend(names.into_iter().map(|_| 0));
            return;
        }
        let t = self.endpoints.load();
        out.extend(names.into_iter().map(|n| {
            t.ids
                .get(n)
                .and_then(|&id| counts.get(id as usize).copied())
                .unwrap_or(0)
        }));
    }

    /// Matched blocks per endpoint name, for tests and tools; the request path uses
    /// [`Self::match_longest_prefix`] and [`Self::counts_for`] with reused buffers.
    pub fn matches<'a>(
        &self,
        hashes: &[u64],
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<u32> {
        let mut counts = Vec::new();
        self.match_longest_prefix(hashes, &mut counts);
        let mut out = Vec::new();
        self.counts_for(&counts, names, &mut out);
        out
    }

    /// Drops everything `endpoint` holds. Returns false when it held nothing.
    pub fn forget(&self, endpoint: &str) -> bool {
        let entry = {
            let _w = self.table_write.lock();
            let mut t = EndpointTable::clone(&self.endpoints.load());
            let Some(id) = t.ids.remove(endpoint) else {
                return false;
            };
            let Some((_, e)) = t.by_id[id as usize].take() else {
                return false;
            };
            self.endpoints.store(Arc::new(t));
            e
        };
        let mut guard = entry.lru.lock();
        guard.removed = true;
        let n = guard.lru.len();
        for h in guard.lru.hashes() {
            self.remove_holder(h, entry.id);
        }
        guard.lru.clear();
        drop(guard);
        self.entries.fetch_sub(n, Ordering::Relaxed);
        // The id is reusable only now that no holder refers to it.
        let _w = self.table_write.lock();
        let mut t = EndpointTable::clone(&self.endpoints.load());
        t.free_ids.push(entry.id);
        self.endpoints.store(Arc::new(t));
        true
    }

    /// Forgets every endpoint for which `keep` is false (endpoints that left the pool).
    /// Returns how many were forgotten.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) -> usize {
        let gone: Vec<Arc<str>> = {
            let t = self.endpoints.load();
            t.ids.keys().filter(|n| !keep(n)).cloned().collect()
        };
        gone.iter().filter(|n| self.forget(n)).count()
    }

    /// Bytes the index holds on the heap, from the data structures' allocated capacities: hash
    /// map buckets (entry + control byte), multi-holder vectors, LRU slabs and the endpoint
    /// table. Allocator overhead is not included; the memory example cross-checks with a
    /// counting allocator.
    pub fn heap_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(u64, Holders)>() + 1;
        let mut total = std::mem::size_of::<Shard>() * SHARDS;
        for s in self.shards.iter() {
            let map = s.0.read();
            // hashbrown allocates a power of two of buckets, 7/8 of which are usable.
            let buckets = if map.capacity() == 0 {
                0
            } else {
                (map.capacity() * 8 / 7).next_power_of_two()
            };
            total += buckets * bucket;
            total += map.values().map(Holders::heap_bytes).sum::<usize>();
        }
        let t = self.endpoints.load();
        for (name, e) in t.by_id.iter().flatten() {
            total += name.len() + std::mem::size_of::<EndpointEntry>() + 16;
            total += e.lru.lock().lru.heap_bytes();
        }
        total
    }
}

#[cfg(test)]
mod tests;
