//! Prefix-cache affinity, as GIE's `approx-prefix-cache-producer` does it: hash the prompt in
//! blocks ([`hashing`]), remember which endpoint was sent which blocks ([`index`]), and before
//! scoring tell `prefix-cache-scorer` how much of each request's prefix every candidate likely
//! holds ([`producer`]).
//!
//! Synchronous and free of I/O like the scheduling core; the index is shared by all request
//! streams and takes no global lock.

pub mod hashing;
pub mod index;
mod lru;
pub mod metrics;
pub mod producer;

pub use hashing::{BlockHasher, CHARS_PER_TOKEN, chain_seed, xxh64_with_suffix};
pub use index::PrefixIndex;
pub use metrics::PrefixMetrics;
pub use producer::ApproxPrefixCacheProducer;
