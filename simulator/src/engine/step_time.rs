//! Step-time model: `T_step = t0 + a·P_new + b·Σ_decode ctx + c·Σ_prefill (q,k) pairs`.

use std::time::Duration;

use super::config::StepTimeCoeffs;

/// Work of one engine step, accumulated while the batch is built.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepWork {
    /// New prefill tokens computed this step (cached tokens excluded).
    pub prefill_tokens: u64,
    /// KV tokens read by the decoding sequences (their context including the new token).
    pub decode_ctx_tokens: u64,
    /// Causal (query, key) pairs of the prefill chunks.
    pub attention_pairs: u64,
    /// Sequences decoding one token this step.
    pub decode_seqs: u32,
    /// Sequences with a prefill chunk this step.
    pub prefill_seqs: u32,
}

impl StepWork {
    /// Adds a prefill chunk of `n` tokens at positions `start..start + n` (the first `start`
    /// tokens already in the KV cache).
    pub fn add_prefill(&mut self, start: u32, n: u32) {
        let (s, n) = (u64::from(start), u64::from(n));
        self.prefill_tokens += n;
        // Query at position p attends to p + 1 keys: Σ_{p=s}^{s+n-1} (p + 1).
        self.attention_pairs += n * s + n * (n + 1) / 2;
        self.prefill_seqs += 1;
    }

    /// Adds one decode token whose sequence holds `ctx` tokens including the new one.
    pub fn add_decode(&mut self, ctx: u32) {
        self.decode_ctx_tokens += u64::from(ctx);
        self.decode_seqs += 1;
    }

    /// Whether nothing was scheduled.
    pub fn is_empty(&self) -> bool {
        self.decode_seqs == 0 && self.prefill_seqs == 0
    }

    /// Modelled duration in seconds (0 for an empty step).
    pub fn seconds(&self, k: &StepTimeCoeffs) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        k.t0 + k.a * self.prefill_tokens as f64
            + k.b * self.decode_ctx_tokens as f64
            + k.c * self.attention_pairs as f64
    }

    /// Modelled duration, rounded to whole nanoseconds.
    pub fn duration(&self, k: &StepTimeCoeffs) -> Duration {
        Duration::from_nanos((self.seconds(k) * 1e9).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_a_whole_prompt_and_of_a_chunk() {
        let mut w = StepWork::default();
        w.add_prefill(0, 4);
        assert_eq!(w.attention_pairs, 1 + 2 + 3 + 4);
        let mut w = StepWork::default();
        w.add_prefill(4, 2);
        assert_eq!(w.attention_pairs, 5 + 6);
    }

    #[test]
    fn empty_step_takes_no_time() {
        let k = StepTimeCoeffs {
            t0: 1.0,
            a: 1.0,
            b: 1.0,
            c: 1.0,
        };
        assert_eq!(StepWork::default().duration(&k), Duration::ZERO);
    }
}
