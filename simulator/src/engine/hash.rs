//! Deterministic tokenizer and block hashes, plus the cheap hasher for maps keyed by `u64`.

use std::hash::{BuildHasher, Hasher};

use xxhash_rust::xxh64::xxh64;

/// Characters per token of the fake tokenizer (GIE's `averageCharactersPerToken`).
pub const CHARS_PER_TOKEN: u32 = 4;

/// Token count and chained block hashes of a prompt, for the HTTP front.
///
/// - Tokens: `ceil(len / 4)`, at least 1 (4 characters per token, as GIE estimates).
/// - Hashes: one per FULL block of `block_size` tokens, i.e. per `block_size * 4`-byte chunk of
///   `prompt`: `h0 = xxh64(model, 0)`, `h_i = xxh64(chunk_i ‖ le64(h_{i-1}), 0)` (GIE's chain,
///   full blocks only). Identical prompt prefixes under the same model give identical leading
///   hashes. `block_size == 0` gives no hashes.
pub fn prompt_blocks(prompt: &[u8], model: &str, block_size: u32) -> (u32, Vec<u64>) {
    let tokens = u32::try_from(prompt.len().div_ceil(CHARS_PER_TOKEN as usize))
        .unwrap_or(u32::MAX)
        .max(1);
    if block_size == 0 {
        return (tokens, Vec::new());
    }
    let chunk_len = block_size as usize * CHARS_PER_TOKEN as usize;
    let mut hashes = Vec::with_capacity(prompt.len() / chunk_len);
    let mut parent = xxh64(model.as_bytes(), 0);
    let mut buf = Vec::with_capacity(chunk_len + 8);
    for chunk in prompt.chunks_exact(chunk_len) {
        buf.clear();
        buf.extend_from_slice(chunk);
        buf.extend_from_slice(&parent.to_le_bytes());
        parent = xxh64(&buf, 0);
        hashes.push(parent);
    }
    (tokens, hashes)
}

/// Hash of a request's full block `index` beyond the hashes it brought (generated tokens, or a
/// prompt whose hashes were not supplied): unique to the request, so only the request itself can
/// hit it again (after a preemption).
pub(crate) fn private_block_hash(request_id: u64, index: u32) -> u64 {
    let mut buf = [0u8; 13];
    buf[..8].copy_from_slice(&request_id.to_le_bytes());
    buf[8..12].copy_from_slice(&index.to_le_bytes());
    buf[12] = 0xb7;
    xxh64(&buf, 0x5157_4954_4348_5944)
}

/// Hasher for maps whose keys are `u64` ids or hashes: one multiply-xorshift (no SipHash).
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildU64Hasher;

impl BuildHasher for BuildU64Hasher {
    type Hasher = U64Hasher;
    fn build_hasher(&self) -> U64Hasher {
        U64Hasher(0)
    }
}

/// See [`BuildU64Hasher`].
#[derive(Debug, Clone, Copy, Default)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^ (x >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_four_chars_rounded_up_min_one() {
        assert_eq!(prompt_blocks(b"", "m", 16).0, 1);
        assert_eq!(prompt_blocks(b"abcd", "m", 16).0, 1);
        assert_eq!(prompt_blocks(b"abcde", "m", 16).0, 2);
    }

    #[test]
    fn full_blocks_only_and_shared_prefixes_share_hashes() {
        let a = vec![b'a'; 64 * 3 + 10];
        let mut b = vec![b'a'; 64 * 2];
        b.extend(vec![b'b'; 64 * 2]);
        let (ta, ha) = prompt_blocks(&a, "m", 16);
        let (_, hb) = prompt_blocks(&b, "m", 16);
        assert_eq!(ta, 51);
        assert_eq!(ha.len(), 3);
        assert_eq!(hb.len(), 4);
        assert_eq!(ha[..2], hb[..2]);
        assert_ne!(ha[2], hb[2]);
        // Chained: equal chunks at different positions hash differently.
        assert_ne!(ha[0], ha[1]);
        // Seeded by the model.
        assert_ne!(prompt_blocks(&a, "other", 16).1[0], ha[0]);
    }
}
