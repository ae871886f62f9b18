//! Synthetic workloads. The shared-prefix generator follows GIE's prefix-cache benchmark presets
//! and SGLang's `generated-shared-prefix`: groups of requests share a long system prompt and differ
//! in a short question. Text is deterministic for a seed and exactly 4 characters per token, the
//! fake pods' tokenizer, so prompt lengths are reproducible.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    pub tenant: String,
    pub group: usize,
    pub prompt: String,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SharedPrefix {
    pub groups: usize,
    pub prompts_per_group: usize,
    pub system_prompt_tokens: usize,
    pub question_tokens: usize,
    pub output_tokens: u32,
    /// Tenants; group `g` belongs to tenant `g % tenants.len()`.
    pub tenants: Vec<String>,
    pub seed: u64,
}

impl Default for SharedPrefix {
    /// The demo's workload: 32 groups × 20 prompts, 2,000-token system prompts, 150-token
    /// questions, 64 output tokens, 4 tenants.
    fn default() -> Self {
        Self {
            groups: 32,
            prompts_per_group: 20,
            system_prompt_tokens: 2000,
            question_tokens: 150,
            output_tokens: 64,
            tenants: (0..4).map(|i| format!("tenant-{i}")).collect(),
            seed: 42,
        }
    }
}

/// `tokens` pseudo-words of exactly 4 characters each (3 letters and a space).
pub fn text(rng: &mut impl Rng, tokens: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let mut s = String::with_capacity(tokens * 4);
    for _ in 0..tokens {
        for _ in 0..3 {
            s.push(LETTERS[rng.random_range(0..LETTERS.len())] as char);
        }
        s.push(' ');
    }
    s
}

impl SharedPrefix {
    /// All requests, in a shuffled (but seeded) order as SGLang's generator sends them.
    pub fn items(&self) -> Vec<WorkItem> {
        let mut rng = Pcg64Mcg::seed_from_u64(self.seed);
        let mut out = Vec::with_capacity(self.groups * self.prompts_per_group);
        for g in 0..self.groups {
            let system = text(&mut rng, self.system_prompt_tokens);
            for _ in 0..self.prompts_per_group {
                let question = text(&mut rng, self.question_tokens);
                out.push(WorkItem {
                    tenant: self.tenants[g % self.tenants.len().max(1)].clone(),
                    group: g,
                    prompt: format!("{system}{question}"),
                    max_tokens: self.output_tokens,
                });
            }
        }
        out.shuffle(&mut rng);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let w = SharedPrefix {
            groups: 3,
            prompts_per_group: 4,
            system_prompt_tokens: 50,
            question_tokens: 10,
            output_tokens: 7,
            tenants: vec!["a".into(), "b".into()],
            seed: 1,
        };
        let items = w.items();
        assert_eq!(items.len(), 12);
        assert_eq!(items, w.items(), "same seed, same requests");
        for it in &items {
            assert_eq!(it.prompt.len(), 60 * 4);
            assert_eq!(it.tenant, if it.group % 2 == 0 { "a" } else { "b" });
        }
        // Requests of one group share the system prompt exactly.
        let g0: Vec<&WorkItem> = items.iter().filter(|i| i.group == 0).collect();
        assert!(g0.iter().all(|i| i.prompt[..200] == g0[0].prompt[..200]));
        let g1 = items.iter().find(|i| i.group == 1).unwrap();
        assert_ne!(g1.prompt[..200], g0[0].prompt[..200]);
    }
}
