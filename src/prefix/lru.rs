//! A bounded LRU list of block hashes for one endpoint, stored in a slab: nodes are 16 bytes
//! (hash, prev, next as `u32` slot numbers), and a node's slot number never changes while it is
//! in the list, so the prefix index can keep it next to the hash and touch the node without a
//! second map.

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: u64,
    prev: u32,
    next: u32,
}

#[derive(Debug)]
pub(crate) struct Lru {
    nodes: Vec<Node>,
    /// Head of the free-slot list, threaded through `next`.
    free: u32,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    len: u32,
    capacity: u32,
}

impl Lru {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            nodes: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            capacity: capacity.clamp(1, NIL - 1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Bytes held by the slab (allocated, not just used).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
    }

    fn unlink(&mut self, slot: u32) {
        let Node { prev, next, .. } = self.nodes[slot as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn link_front(&mut self, slot: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[slot as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old == NIL {
            self.tail = slot;
        } else {
            self.nodes[old as usize].prev = slot;
        }
        self.head = slot;
    }

    /// Marks the node in `slot` as most recently used.
    pub(crate) fn touch(&mut self, slot: u32) {
        if self.head != slot {
            self.unlink(slot);
            self.link_front(slot);
        }
    }

    /// Inserts `hash` as most recently used and returns its slot. The caller evicts first when
    /// the list is full.
    pub(crate) fn push_front(&mut self, hash: u64) -> u32 {
        debug_assert!(!self.is_full());
        let slot = if self.free != NIL {
            let s = self.free;
            self.free = self.nodes[s as usize].next;
            self.nodes[s as usize].hash = hash;
            s
        } else {
            if self.nodes.len() == self.nodes.capacity() {
                // Grow by doubling, but never past the capacity: a full endpoint holds no slack.
                let room = self.capacity as usize - self.nodes.len();
                self.nodes.reserve_exact(self.nodes.len().max(16).min(room));
            }
            self.nodes.push(Node {
                hash,
                prev: NIL,
                next: NIL,
            });
            (self.nodes.len() - 1) as u32
        };
        self.link_front(slot);
        self.len += 1;
        slot
    }

    /// Removes the least recently used node and returns its hash.
    pub(crate) fn pop_back(&mut self) -> Option<u64> {
        if self.tail == NIL {
            return None;
        }
        let slot = self.tail;
        self.unlink(slot);
        self.nodes[slot as usize].next = self.free;
        self.free = slot;
        self.len -= 1;
        Some(self.nodes[slot as usize].hash)
    }

    /// Hashes from most to least recently used.
    pub(crate) fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let n = self.nodes[at as usize];
            at = n.next;
            Some(n.hash)
        })
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::new(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_touch_and_eviction() {
        let mut l = Lru::new(3);
        let a = l.push_front(1);
        l.push_front(2);
        l.push_front(3);
        assert!(l.is_full());
        assert_eq!(l.hashes().collect::<Vec<_>>(), vec![3, 2, 1]);
        l.touch(a);
        assert_eq!(l.hashes().collect::<Vec<_>>(), vec![1, 3, 2]);
        assert_eq!(l.pop_back(), Some(2));
        let d = l.push_front(4);
        assert_eq!(l.hashes().collect::<Vec<_>>(), vec![4, 1, 3]);
        // The freed slot is reused, so the slab never outgrows the capacity.
        assert!(d < 3);
        assert_eq!(l.len(), 3);
        assert!(l.heap_bytes() <= 16 * 16);
        while l.pop_back().is_some() {}
        assert_eq!(l.len(), 0);
        assert_eq!(l.hashes().count(), 0);
    }

    #[test]
    fn slab_never_exceeds_capacity() {
        let mut l = Lru::new(31_250);
        for h in 0..31_250u64 {
            l.push_front(h);
        }
        assert_eq!(l.heap_bytes(), 31_250 * 16);
    }
}
