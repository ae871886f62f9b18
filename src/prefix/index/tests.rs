use std::sync::Arc;

use super::*;

impl PrefixIndex {
    /// Checks that the hash map and the LRUs agree exactly, and that `len()` is their size.
    fn assert_consistent(&self) {
        let t = self.endpoints.load();
        let mut from_lrus = 0;
        for (name, e) in t.by_id.iter().flatten() {
            let g = e.lru.lock();
            from_lrus += g.lru.len();
            for h in g.lru.hashes() {
                let map = self.shards[shard_of(h)].0.read();
                let holders = map
                    .get(&h)
                    .unwrap_or_else(|| panic!("{name}: {h:#x} not in map"));
                assert!(holders.find(e.id).is_some(), "{name}: {h:#x} lacks holder");
            }
        }
        let mut from_map = 0;
        for s in self.shards.iter() {
            for holders in s.0.read().values() {
                assert!(!holders.as_slice().is_empty());
                if let Holders::Many(m) = holders {
                    assert!(m.list.len() >= 2);
                    assert!(m.list.windows(2).all(|w| w[0].endpoint < w[1].endpoint));
                    let sum = m
                        .list
                        .iter()
                        .fold(0u64, |a, x| a.wrapping_add(id_mix(x.endpoint)));
                    assert_eq!(m.sum, sum);
                }
                for h in holders.as_slice() {
                    assert!(
                        t.by_id
                            .get(h.endpoint as usize)
                            .is_some_and(|slot| slot.is_some()),
                        "holder of a forgotten endpoint id {}",
                        h.endpoint
                    );
                }
                from_map += holders.as_slice().len();
            }
        }
        assert_eq!(from_lrus, from_map);
        assert_eq!(self.len(), from_lrus);
    }
}

/// Hashes spread over every shard.
fn h(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 59)
}

#[test]
fn record_then_match() {
    let idx = PrefixIndex::new(100);
    let req: Vec<u64> = (1..=4).map(h).collect();
    idx.record("a", 0, &req[..3]);
    idx.record("b", 0, &req[..1]);
    assert_eq!(idx.len(), 4);
    assert_eq!(idx.matches(&req, ["a", "b", "c"]), vec![3, 1, 0]);
    // Nothing matches a different first block.
    assert_eq!(idx.matches(&[h(99), req[1]], ["a", "b"]), vec![0, 0]);
    // Recording again touches, it does not duplicate.
    idx.record("a", 0, &req[..3]);
    assert_eq!(idx.len(), 4);
    assert!(idx.holds("a", req[2]));
    assert!(!idx.holds("b", req[2]));
    idx.assert_consistent();
}

#[test]
fn match_counts_survive_gaps_after_eviction() {
    let idx = PrefixIndex::new(3);
    let (h1, h2, h3, h9) = (h(1), h(2), h(3), h(9));
    idx.record("a", 0, &[h1, h2, h3]);
    idx.record("b", 10, &[h1, h2, h3]);
    // Touch 1 and 3 on a: LRU order is now 3, 1, 2 (least recent last).
    idx.record("a", 0, &[h1]);
    idx.record("a", 0, &[h3]);
    // A fourth block evicts h2 from a only.
    idx.record("a", 0, &[h9]);
    assert!(!idx.holds("a", h2));
    assert!(idx.holds("a", h1) && idx.holds("a", h3) && idx.holds("a", h9));
    assert!(idx.holds("b", h2));
    // b still holds h2, so the walk goes on past the gap and a keeps counting.
    assert_eq!(idx.matches(&[h1, h2, h3], ["a", "b"]), vec![2, 3]);
    // Without b, nobody holds h2 and the walk stops there.
    assert!(idx.forget("b"));
    assert_eq!(idx.matches(&[h1, h2, h3], ["a", "b"]), vec![1, 0]);
    idx.assert_consistent();
}

#[test]
fn a_request_longer_than_the_lru_keeps_its_newest_blocks() {
    let idx = PrefixIndex::new(4);
    let req: Vec<u64> = (0..10).map(h).collect();
    idx.record("a", 0, &req);
    assert_eq!(idx.len_of("a"), 4);
    assert_eq!(idx.len(), 4);
    for (i, &x) in req.iter().enumerate() {
        assert_eq!(idx.holds("a", x), i >= 6, "block {i}");
    }
    // The first block was evicted, so nothing matches from the start.
    assert_eq!(idx.matches(&req, ["a"]), vec![0]);
    idx.assert_consistent();
}

#[test]
fn lru_capacity_comes_from_the_first_record() {
    let idx = PrefixIndex::new(31_250);
    idx.record("metrics-known", 7, &[h(1)]);
    idx.record("unknown", 0, &[h(1)]);
    assert_eq!(idx.capacity_of("metrics-known"), Some(7));
    assert_eq!(idx.capacity_of("unknown"), Some(31_250));
    assert_eq!(idx.capacity_of("never"), None);
    // Fixed once created, as in GIE.
    idx.record("metrics-known", 100, &[h(2)]);
    assert_eq!(idx.capacity_of("metrics-known"), Some(7));
    let many: Vec<u64> = (10..30).map(h).collect();
    idx.record("metrics-known", 100, &many);
    assert_eq!(idx.len_of("metrics-known"), 7);
    idx.assert_consistent();
}

#[test]
fn forget_and_retain_remove_endpoints() {
    let idx = PrefixIndex::new(100);
    let req: Vec<u64> = (0..5).map(h).collect();
    for ep in ["a", "b", "c"] {
        idx.record(ep, 0, &req);
    }
    assert_eq!(idx.len(), 15);
    assert!(idx.forget("b"));
    assert!(!idx.forget("b"));
    assert_eq!(idx.len(), 10);
    assert_eq!(idx.matches(&req, ["a", "b", "c"]), vec![5, 0, 5]);
    idx.assert_consistent();

    assert_eq!(idx.retain(|n| n == "c"), 1);
    assert_eq!(idx.endpoints(), vec!["c".to_string()]);
    assert_eq!(idx.len(), 5);
    // A new endpoint may reuse a freed id; it must not inherit anything.
    idx.record("d", 0, &req[..1]);
    assert_eq!(idx.matches(&req, ["a", "c", "d"]), vec![0, 5, 1]);
    idx.assert_consistent();

    assert_eq!(idx.retain(|_| false), 2);
    assert!(idx.is_empty());
    assert_eq!(idx.matches(&req, ["c", "d"]), vec![0, 0]);
    idx.assert_consistent();
}

#[test]
fn concurrent_record_match_and_forget() {
    let idx = Arc::new(PrefixIndex::new(500));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let idx = idx.clone();
            std::thread::spawn(move || {
                let mut counts = Vec::new();
                for round in 0..300u64 {
                    // Shared system prompt plus a per-thread tail: plenty of multi-holder hashes.
                    let req: Vec<u64> = (0..40)
                        .map(|i| {
                            if i < 20 {
                                h(i)
                            } else {
                                h(1_000 * t + round * 7 + i)
                            }
                        })
                        .collect();
                    let ep = format!("ep-{}", (t + round) % 8);
                    idx.match_longest_prefix(&req, &mut counts);
                    idx.record(&ep, if t % 2 == 0 { 0 } else { 300 }, &req);
                    if round % 50 == 49 {
                        idx.forget(&format!("ep-{}", (t * 3 + round) % 8));
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("no panic");
    }
    idx.assert_consistent();
    let shared: Vec<u64> = (0..20).map(h).collect();
    let names: Vec<String> = idx.endpoints();
    let m = idx.matches(&shared, names.iter().map(String::as_str));
    // Every endpoint still present recorded the shared prefix recently enough to hold it.
    assert!(m.contains(&20), "{m:?}");
}

#[test]
fn memory_per_entry_is_small() {
    // 8 endpoints × 2,000 distinct blocks: the same layout as the full-size measurement in
    // examples/prefix_memory.rs, small enough for a debug test.
    let idx = PrefixIndex::new(2_000);
    for e in 0..8u64 {
        let hashes: Vec<u64> = (0..2_000).map(|i| h(e * 1_000_000 + i)).collect();
        idx.record(&format!("ep-{e}"), 0, &hashes);
    }
    assert_eq!(idx.len(), 16_000);
    let per_entry = idx.heap_bytes() as f64 / idx.len() as f64;
    assert!(per_entry <= 96.0, "{per_entry:.1} bytes per entry");
}

#[test]
fn map_entries_are_compact() {
    assert_eq!(std::mem::size_of::<Holders>(), 16);
    assert_eq!(std::mem::size_of::<(u64, Holders)>(), 24);
}

/// The run-compressed matching agrees with a plain walk over `holds`, whatever the holder sets.
#[test]
fn matching_equals_a_naive_walk() {
    let idx = PrefixIndex::new(60);
    let names: Vec<String> = (0..12).map(|e| format!("ep-{e}")).collect();
    let mut x = 0x1234_5678u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..400 {
        let e = (next() % 12) as usize;
        let start = next() % 30;
        let len = 1 + next() % 40;
        let req: Vec<u64> = (start..start + len).map(h).collect();
        idx.record(&names[e], 0, &req);
        if next() % 50 == 0 {
            idx.forget(&names[(next() % 12) as usize]);
        }
        let probe: Vec<u64> = (0..70).map(h).collect();
        let got = idx.matches(&probe, names.iter().map(String::as_str));
        let mut want = vec![0u32; names.len()];
        for &p in &probe {
            let holders: Vec<usize> = (0..names.len())
                .filter(|&k| idx.holds(&names[k], p))
                .collect();
            if holders.is_empty() {
                break;
            }
            for k in holders {
                want[k] += 1;
            }
        }
        assert_eq!(got, want);
    }
    idx.assert_consistent();
}
