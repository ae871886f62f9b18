//! Memory per indexed (block, endpoint) entry of the prefix index at 100 endpoints × 31,250
//! blocks (GIE's default `lruCapacityPerServer`).
//!
//! Method: a counting global allocator records the bytes live on the heap before and after the
//! index is filled through its public `record` API (256 hashes per call, like a request at the
//! default `maxPrefixBlocksToMatch`); the difference divided by the entries (`len()`) is the
//! cost per entry. `PrefixIndex::heap_bytes()` (computed from the data structures' capacities)
//! is printed next to it as a cross-check.
//!
//! Two layouts: every block distinct (the worst case: one holder per hash) and half of each
//! endpoint's blocks shared by all endpoints (a common system prompt).
//!
//! Run: `cargo run --release --example prefix_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use switchyard::prefix::PrefixIndex;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ENDPOINTS: u64 = 100;
const BLOCKS: u64 = 31_250;

fn mix(x: u64) -> u64 {
    // splitmix64: distinct inputs give distinct, well-spread 64-bit values.
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn measure(label: &str, shared: u64) {
    let names: Vec<String> = (0..ENDPOINTS).map(|e| format!("vllm-{e}-rank-0")).collect();
    let mut chunk = Vec::with_capacity(256);
    let before = LIVE.load(Ordering::Relaxed);
    let index = PrefixIndex::new(BLOCKS);
    for (e, name) in names.iter().enumerate() {
        for start in (0..BLOCKS).step_by(256) {
            chunk.clear();
            chunk.extend((start..(start + 256).min(BLOCKS)).map(|b| {
                if b < shared {
                    mix(b)
                } else {
                    mix((e as u64 + 1) << 32 | b)
                }
            }));
            index.record(name, 0, &chunk);
        }
    }
    let after = LIVE.load(Ordering::Relaxed);
    let entries = index.len();
    assert_eq!(entries as u64, ENDPOINTS * BLOCKS);
    let measured = after - before;
    let computed = index.heap_bytes();
    println!(
        "{label}: {entries} entries, {:.1} MiB live ({:.1} B/entry); heap_bytes() {:.1} MiB ({:.1} B/entry)",
        measured as f64 / (1 << 20) as f64,
        measured as f64 / entries as f64,
        computed as f64 / (1 << 20) as f64,
        computed as f64 / entries as f64,
    );
    drop(index);
}

fn main() {
    measure("all blocks distinct", 0);
    measure("half of each endpoint's blocks shared", BLOCKS / 2);
}
