//! GIE-compatible prompt block hashing.
//!
//! The prompt bytes are cut into blocks of `block_size_tokens × 4` bytes (GIE assumes four
//! characters per token) and each block is hashed with xxHash64 (seed 0) over the block's bytes
//! followed by the previous hash in little-endian, starting from `xxh64(target_model ‖ cache_salt)`.
//! A chained hash therefore names the whole prefix up to and including its block.
//!
//! Rules, as in GIE's `hashing.go`:
//! - input shorter than one block yields no hashes;
//! - the input is truncated to `max_blocks × chars_per_block` bytes (a byte cut, which may split a
//!   UTF-8 character, exactly like Go's slice);
//! - a trailing partial block is hashed like a full one.
//!
//! The hash is computed straight from the borrowed prompt: [`xxh64_with_suffix`] runs xxHash64 over
//! `block ‖ LE(prev)` without building that concatenation; only the last < 32 bytes of a block and
//! the 8-byte suffix pass through a small stack buffer.

use xxhash_rust::xxh64::Xxh64;

/// GIE's `averageCharactersPerToken`.
pub const CHARS_PER_TOKEN: usize = 4;

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline(always)]
fn read_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn read_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

#[inline(always)]
fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline(always)]
fn merge_round(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

#[inline(always)]
fn stripe(v: &mut [u64; 4], s: &[u8]) {
    v[0] = round(v[0], read_u64(&s[0..]));
    v[1] = round(v[1], read_u64(&s[8..]));
    v[2] = round(v[2], read_u64(&s[16..]));
    v[3] = round(v[3], read_u64(&s[24..]));
}

/// xxHash64 with seed 0 of `data ‖ suffix.to_le_bytes()`, computed without concatenating.
/// Bit-identical to `xxhash_rust::xxh64::xxh64(&[data, &suffix.to_le_bytes()].concat(), 0)`.
#[inline]
pub fn xxh64_with_suffix(data: &[u8], suffix: u64) -> u64 {
    let total = data.len() + 8;
    let full = data.len() / 32 * 32;
    // The bytes after the last whole stripe of `data`, then the suffix: at most 31 + 8.
    let mut tail = [0u8; 40];
    let rest = data.len() - full;
    tail[..rest].copy_from_slice(&data[full..]);
    tail[rest..rest + 8].copy_from_slice(&suffix.to_le_bytes());
    let mut tail_len = rest + 8;
    let mut tail_at = 0;

    let mut h = if total >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        for s in data[..full].chunks_exact(32) {
            stripe(&mut v, s);
        }
        if tail_len >= 32 {
            stripe(&mut v, &tail[..32]);
            tail_at = 32;
            tail_len -= 32;
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for x in v {
            h = merge_round(h, x);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(total as u64);

    let mut t = &tail[tail_at..tail_at + tail_len];
    while t.len() >= 8 {
        h ^= round(0, read_u64(t));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        t = &t[8..];
    }
    if t.len() >= 4 {
        h ^= u64::from(read_u32(t)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        t = &t[4..];
    }
    for &b in t {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

/// The chain's starting value: `xxh64(target_model ‖ cache_salt)`, seed 0.
pub fn chain_seed(target_model: &str, cache_salt: Option<&str>) -> u64 {
    let mut h = Xxh64::new(0);
    h.update(target_model.as_bytes());
    if let Some(s) = cache_salt {
        h.update(s.as_bytes());
    }
    h.digest()
}

/// How prompts are cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHasher {
    /// Bytes per block: `block_size_tokens × 4`.
    pub chars_per_block: usize,
    /// Blocks hashed at most (GIE's `maxPrefixBlocksToMatch`).
    pub max_blocks: usize,
}

impl BlockHasher {
    pub fn new(block_size_tokens: u32, max_blocks: u32) -> Self {
        Self {
            chars_per_block: (block_size_tokens as usize)
                .max(1)
                .saturating_mul(CHARS_PER_TOKEN),
            max_blocks: max_blocks as usize,
        }
    }

    /// How many hashes [`Self::hash_into`] produces for a prompt of `len` bytes.
    pub fn block_count(&self, len: usize) -> usize {
        if len < self.chars_per_block {
            return 0;
        }
        let len = len.min(self.max_blocks.saturating_mul(self.chars_per_block));
        len.div_ceil(self.chars_per_block)
    }

    /// Appends the chained block hashes of `prompt` to `out` (cleared first).
    pub fn hash_into(&self, prompt: &[u8], seed: u64, out: &mut Vec<u64>) {
        out.clear();
        let n = self.block_count(prompt.len());
        if n == 0 {
            return;
        }
        out.reserve(n);
        let limit = prompt
            .len()
            .min(self.max_blocks.saturating_mul(self.chars_per_block));
        let mut prev = seed;
        for block in prompt[..limit].chunks(self.chars_per_block) {
            prev = xxh64_with_suffix(block, prev);
            out.push(prev);
        }
    }

    /// The chained block hashes of `prompt` for `target_model` and `cache_salt`.
    pub fn hash(&self, prompt: &[u8], target_model: &str, cache_salt: Option<&str>) -> Vec<u64> {
        let mut out = Vec::new();
        self.hash_into(prompt, chain_seed(target_model, cache_salt), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh64::xxh64;

    fn concat(a: &[u8], s: u64) -> Vec<u8> {
        let mut v = a.to_vec();
        v.extend_from_slice(&s.to_le_bytes());
        v
    }

    #[test]
    fn suffix_hash_matches_reference_xxh64_for_every_length() {
        let data: Vec<u8> = (0..400u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            for suffix in [0u64, 1, 0xDEAD_BEEF_0123_4567, u64::MAX] {
                let d = &data[..len];
                assert_eq!(
                    xxh64_with_suffix(d, suffix),
                    xxh64(&concat(d, suffix), 0),
                    "len {len} suffix {suffix:#x}"
                );
            }
        }
    }

    /// The chain computed independently with the reference xxh64 on concatenated buffers.
    fn reference_chain(prompt: &[u8], model: &str, salt: &str, cpb: usize, max: usize) -> Vec<u64> {
        if prompt.len() < cpb {
            return Vec::new();
        }
        let prompt = &prompt[..prompt.len().min(max * cpb)];
        let mut prev = xxh64(format!("{model}{salt}").as_bytes(), 0);
        let mut out = Vec::new();
        let mut i = 0;
        while i < prompt.len() {
            let end = (i + cpb).min(prompt.len());
            prev = xxh64(&concat(&prompt[i..end], prev), 0);
            out.push(prev);
            i = end;
        }
        out
    }

    #[test]
    fn chain_matches_gie_rules() {
        let h = BlockHasher::new(16, 256); // 64 chars per block
        let model = "meta-llama/Llama-3.1-8B-Instruct";

        // Shorter than one block: nothing.
        assert!(h.hash(&[b'a'; 63], model, None).is_empty());

        // Exactly one block.
        let one = h.hash(&[b'a'; 64], model, None);
        assert_eq!(one, reference_chain(&[b'a'; 64], model, "", 64, 256));
        assert_eq!(one.len(), 1);

        // Two full blocks and a trailing partial one.
        let prompt: Vec<u8> = b"The quick brown fox jumps over the lazy dog. "
            .iter()
            .copied()
            .cycle()
            .take(64 * 2 + 10)
            .collect();
        let got = h.hash(&prompt, model, None);
        assert_eq!(got.len(), 3);
        assert_eq!(got, reference_chain(&prompt, model, "", 64, 256));
        // A pinned value, so any change in the algorithm shows up here.
        let first = xxh64(&concat(&prompt[..64], xxh64(model.as_bytes(), 0)), 0);
        assert_eq!(got[0], first);
    }

    #[test]
    fn salt_and_model_change_every_hash() {
        let h = BlockHasher::new(16, 256);
        let prompt = vec![b'x'; 200];
        let a = h.hash(&prompt, "m", None);
        let b = h.hash(&prompt, "m", Some("tenant-1"));
        let c = h.hash(&prompt, "m2", None);
        assert_eq!(b, reference_chain(&prompt, "m", "tenant-1", 64, 256));
        for i in 0..a.len() {
            assert_ne!(a[i], b[i]);
            assert_ne!(a[i], c[i]);
        }
        // model ‖ salt is a plain concatenation, as in GIE.
        assert_eq!(
            h.hash(&prompt, "ab", Some("c")),
            h.hash(&prompt, "a", Some("bc"))
        );
    }

    #[test]
    fn truncates_to_max_blocks_and_splits_utf8_like_go() {
        let h = BlockHasher::new(2, 3); // 8 bytes per block, 3 blocks at most
        let prompt = "ééééééééééééééééééééé".as_bytes(); // 42 bytes
        let got = h.hash(prompt, "m", None);
        assert_eq!(got.len(), 3);
        assert_eq!(got, reference_chain(prompt, "m", "", 8, 3));
        assert_eq!(h.block_count(prompt.len()), 3);
        assert_eq!(h.block_count(7), 0);
        assert_eq!(h.block_count(9), 2);
    }

    #[test]
    fn shared_prefix_shares_leading_hashes() {
        let h = BlockHasher::new(16, 256);
        let mut a = vec![b's'; 64 * 3];
        let mut b = a.clone();
        a.extend_from_slice(b"question one, followed by padding to make a whole block........");
        b.extend_from_slice(b"another question, different from the first one entirely........");
        let ha = h.hash(&a, "m", None);
        let hb = h.hash(&b, "m", None);
        assert_eq!(ha[..3], hb[..3]);
        assert_ne!(ha[3], hb[3]);
    }
}
