//! KV block pool: reference counts, prefix cache of full blocks keyed by chained hashes, and an
//! LRU free queue in which free-but-cached blocks (ref 0) stay evictable (vLLM V1 `BlockPool`).
//!
//! The free queue is an intrusive doubly linked list over the block array, so taking a cached
//! block out of the middle on a prefix hit is O(1). Blocks are allocated from the head (least
//! recently freed); a request's blocks are released tail first, so its last blocks are evicted
//! before its shared leading blocks.

use std::collections::HashMap;

use super::hash::BuildU64Hasher;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    /// Prefix-cache key when the block is full and registered.
    hash: Option<u64>,
    prev: u32,
    next: u32,
    in_free: bool,
}

/// A change to the set of cached blocks, as vLLM's KV events (`BlockStored` / `BlockRemoved`)
/// report it, keyed by this engine's chained block hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvEvent {
    /// A full block became resident under `hash`.
    Stored {
        /// The block's chained hash.
        hash: u64,
    },
    /// The block cached under `hash` was evicted.
    Removed {
        /// The block's chained hash.
        hash: u64,
    },
}

/// The GPU's KV blocks.
#[derive(Debug, Clone)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    num_free: u32,
    cached: HashMap<u64, u32, BuildU64Hasher>,
    /// Recorded KV events, when enabled.
    kv_events: Option<Vec<KvEvent>>,
}

impl BlockPool {
    /// A pool of `num_blocks` free, uncached blocks.
    pub fn new(num_blocks: u32) -> Self {
        let mut pool = Self {
            blocks: Vec::with_capacity(num_blocks as usize),
            head: NIL,
            tail: NIL,
            num_free: 0,
            cached: HashMap::with_capacity_and_hasher(num_blocks as usize, BuildU64Hasher),
            kv_events: None,
        };
        for i in 0..num_blocks {
            pool.blocks.push(Block {
                ref_cnt: 0,
                hash: None,
                prev: NIL,
                next: NIL,
                in_free: false,
            });
            pool.push_back(i);
        }
        pool
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> u32 {
        self.blocks.len() as u32
    }

    /// Blocks that can be allocated now (free, including evictable cached ones).
    pub fn num_free(&self) -> u32 {
        self.num_free
    }

    /// Blocks held by at least one request.
    pub fn num_used(&self) -> u32 {
        self.num_blocks() - self.num_free
    }

    /// Blocks currently registered in the prefix cache (held or evictable).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// The resident block holding the prefix ending in `hash`, if any.
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        self.cached.get(&hash).copied()
    }

    /// Whether `block` sits in the free queue (ref 0).
    pub fn is_free(&self, block: u32) -> bool {
        self.blocks[block as usize].in_free
    }

    /// Takes a reference on a cached block found by [`BlockPool::lookup`].
    pub fn touch(&mut self, block: u32) {
        if self.blocks[block as usize].in_free {
            self.unlink(block);
        }
        self.blocks[block as usize].ref_cnt += 1;
    }

    /// Allocates one block from the LRU head, evicting its cached hash if any.
    /// Returns `None` when no block is free.
    pub fn allocate(&mut self) -> Option<u32> {
        let block = self.head;
        if block == NIL {
            return None;
        }
        self.unlink(block);
        let b = &mut self.blocks[block as usize];
        if let Some(hash) = b.hash.take() {
            self.cached.remove(&hash);
            if let Some(ev) = &mut self.kv_events {
                ev.push(KvEvent::Removed { hash });
            }
        }
        b.ref_cnt = 1;
        Some(block)
    }

    /// Drops one reference on each of `blocks`, releasing them tail first; blocks reaching ref 0
    /// go to the back of the free queue and stay cached until evicted.
    pub fn free_all(&mut self, blocks: &[u32]) {
        for &block in blocks.iter().rev() {
            let b = &mut self.blocks[block as usize];
            debug_assert!(b.ref_cnt > 0, "double free of block {block}");
            b.ref_cnt -= 1;
            if b.ref_cnt == 0 {
                self.push_back(block);
            }
        }
    }

    /// Registers a full block under `hash` unless that prefix is already cached in another block.
    pub fn register(&mut self, block: u32, hash: u64) {
        if self.blocks[block as usize].hash.is_some() {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(block);
            self.blocks[block as usize].hash = Some(hash);
            if let Some(ev) = &mut self.kv_events {
                ev.push(KvEvent::Stored { hash });
            }
        }
    }

    /// Starts (or stops, dropping what was recorded) recording [`KvEvent`]s.
    pub fn record_kv_events(&mut self, on: bool) {
        self.kv_events = on.then(Vec::new);
    }

    /// Moves the recorded KV events, oldest first, to the end of `out`.
    pub fn drain_kv_events(&mut self, out: &mut Vec<KvEvent>) {
        if let Some(ev) = &mut self.kv_events {
            out.append(ev);
        }
    }

    /// Reference count of `block` (tests and invariants).
    pub fn ref_cnt(&self, block: u32) -> u32 {
        self.blocks[block as usize].ref_cnt
    }

    fn unlink(&mut self, block: u32) {
        let (prev, next) = {
            let b = &self.blocks[block as usize];
            debug_assert!(b.in_free);
            (b.prev, b.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        let b = &mut self.blocks[block as usize];
        b.prev = NIL;
        b.next = NIL;
        b.in_free = false;
        self.num_free -= 1;
    }

    fn push_back(&mut self, block: u32) {
        let tail = self.tail;
        {
            let b = &mut self.blocks[block as usize];
            b.prev = tail;
            b.next = NIL;
            b.in_free = true;
        }
        if tail == NIL {
            self.head = block;
        } else {
            self.blocks[tail as usize].next = block;
        }
        self.tail = block;
        self.num_free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_until_empty_then_free_reuses() {
        let mut pool = BlockPool::new(3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        let c = pool.allocate().unwrap();
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.num_free(), 0);
        pool.free_all(&[a, b, c]);
        assert_eq!(pool.num_free(), 3);
        // Released tail first: c is least recently freed and comes back first.
        assert_eq!(pool.allocate(), Some(c));
    }

    #[test]
    fn cached_free_blocks_are_hit_then_evicted_lru() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate().unwrap();
        pool.register(a, 11);
        pool.free_all(&[a]);
        let b = pool.allocate().unwrap();
        pool.register(b, 22);
        pool.free_all(&[b]);
        // Both evictable and still cached; both count as free.
        assert_eq!(pool.num_free(), 2);
        assert_eq!(pool.lookup(11), Some(a));
        // A hit takes the block out of the free queue.
        pool.touch(a);
        assert_eq!(pool.num_free(), 1);
        assert_eq!(pool.ref_cnt(a), 1);
        // The only free block is b: allocating evicts its hash.
        assert_eq!(pool.allocate(), Some(b));
        assert_eq!(pool.lookup(22), None);
        assert_eq!(pool.lookup(11), Some(a));
    }

    #[test]
    fn shared_block_freed_only_at_last_reference() {
        let mut pool = BlockPool::new(1);
        let a = pool.allocate().unwrap();
        pool.register(a, 5);
        pool.touch(a);
        pool.free_all(&[a]);
        assert_eq!(pool.num_free(), 0);
        pool.free_all(&[a]);
        assert_eq!(pool.num_free(), 1);
    }

    #[test]
    fn kv_events_report_stores_and_evictions() {
        let mut pool = BlockPool::new(1);
        pool.record_kv_events(true);
        let a = pool.allocate().unwrap();
        pool.register(a, 1);
        pool.free_all(&[a]);
        pool.allocate().unwrap();
        let mut out = Vec::new();
        pool.drain_kv_events(&mut out);
        assert_eq!(
            out,
            [KvEvent::Stored { hash: 1 }, KvEvent::Removed { hash: 1 }]
        );
        pool.drain_kv_events(&mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn duplicate_hash_keeps_the_first_block() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.register(a, 9);
        pool.register(b, 9);
        assert_eq!(pool.lookup(9), Some(a));
        assert_eq!(pool.num_cached(), 1);
    }
}
