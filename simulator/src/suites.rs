//! Generated workloads: the VTC paper's multi-tenant suites (papers-and-data.md §1) and the
//! shared-prefix workload of the demo, as [`Trace`]s.
//!
//! The VTC suites follow the artifact's generator (`fair_bench/trace.py`) in shape: "uniform"
//! suites give each client evenly spaced arrivals at its rate from a random phase, with on/off
//! suites silencing client 0 in every other period; the short/long suites draw one Poisson stream
//! and assign clients in proportion to their rates. Lengths are fixed by the suite. Our RNG is not
//! numpy's, so the arrival phases differ from the artifact's runs; the rates, lengths and patterns
//! do not.

use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::trace::{PromptSource, Trace, TraceRequest};
use crate::workload::SharedPrefix;

/// How a suite's arrivals are generated.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pattern {
    /// Client `i` every `1 / rate_i` seconds from a random phase.
    Uniform,
    /// One Poisson stream at the summed rate; each arrival is client `i` with probability
    /// `rate_i / Σ rate`.
    Poisson,
}

/// One of the VTC paper's synthetic suites.
#[derive(Debug, Clone, PartialEq)]
pub struct VtcSuite {
    pub name: &'static str,
    /// Requests per second of each client.
    pub rates: &'static [f64],
    /// (prompt, output) tokens of each client.
    pub lengths: &'static [(u32, u32)],
    pub duration_s: u64,
    /// Client 0 is silent in every other period of this many seconds.
    pub on_off_s: Option<u64>,
    pattern: Pattern,
}

const L256: &[(u32, u32)] = &[(256, 256); 8];

/// The suites, by name.
pub const VTC_SUITES: &[VtcSuite] = &[
    VtcSuite {
        name: "overload",
        rates: &[1.5, 3.0],
        lengths: L256,
        duration_s: 360,
        on_off_s: None,
        pattern: Pattern::Uniform,
    },
    VtcSuite {
        name: "overload-multi",
        rates: &[0.4, 0.4, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6],
        lengths: L256,
        duration_s: 360,
        on_off_s: None,
        pattern: Pattern::Uniform,
    },
    VtcSuite {
        name: "overload-weighted",
        rates: &[0.8, 0.8, 1.2, 1.6],
        lengths: L256,
        duration_s: 360,
        on_off_s: None,
        pattern: Pattern::Uniform,
    },
    VtcSuite {
        name: "proportional",
        rates: &[0.25, 0.5, 1.5],
        lengths: L256,
        duration_s: 600,
        on_off_s: None,
        pattern: Pattern::Uniform,
    },
    VtcSuite {
        name: "on-off-less",
        rates: &[0.5, 2.0],
        lengths: L256,
        duration_s: 600,
        on_off_s: Some(60),
        pattern: Pattern::Uniform,
    },
    VtcSuite {
        name: "on-off-overload",
        rates: &[2.0, 3.0],
        lengths: L256,
        duration_s: 600,
        on_off_s: Some(60),
        pattern: Pattern::Uniform,
    },
    VtcSuite {
        name: "poisson-short-long",
        rates: &[8.0, 1.5],
        lengths: &[(64, 64), (256, 256)],
        duration_s: 600,
        on_off_s: None,
        pattern: Pattern::Poisson,
    },
    VtcSuite {
        name: "poisson-short-long-2",
        rates: &[8.0, 1.5],
        lengths: &[(512, 32), (32, 512)],
        duration_s: 600,
        on_off_s: None,
        pattern: Pattern::Poisson,
    },
];

impl VtcSuite {
    /// The suite called `name` (underscores and hyphens are the same).
    pub fn by_name(name: &str) -> Option<&'static VtcSuite> {
        let n = name.replace('_', "-");
        VTC_SUITES.iter().find(|s| s.name == n)
    }

    pub fn names() -> Vec<&'static str> {
        VTC_SUITES.iter().map(|s| s.name).collect()
    }

    fn silent(&self, client: usize, t: f64) -> bool {
        client == 0
            && self
                .on_off_s
                .is_some_and(|p| (t / p as f64) as u64 % 2 == 1)
    }

    /// The suite's requests; tenants are `client-<i>`.
    pub fn trace(&self, seed: u64) -> Trace {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let d = self.duration_s as f64;
        let mut reqs: Vec<(f64, usize)> = Vec::new();
        match self.pattern {
            Pattern::Uniform => {
                for (i, &rate) in self.rates.iter().enumerate() {
                    let n = (rate * d) as usize;
                    let mut t = rng.random::<f64>() / rate;
                    for _ in 0..n {
                        t += 1.0 / rate;
                        if !self.silent(i, t) {
                            reqs.push((t, i));
                        }
                    }
                }
            }
            Pattern::Poisson => {
                let total: f64 = self.rates.iter().sum();
                let n = (total * d) as usize;
                let mut t = 0.0;
                for _ in 0..n {
                    t += -(1.0 - rng.random::<f64>()).ln() / total;
                    let mut u = rng.random::<f64>() * total;
                    let mut client = self.rates.len() - 1;
                    for (i, &r) in self.rates.iter().enumerate() {
                        if u < r {
                            client = i;
                            break;
                        }
                        u -= r;
                    }
                    if !self.silent(client, t) {
                        reqs.push((t, client));
                    }
                }
            }
        }
        reqs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let requests = reqs
            .into_iter()
            .enumerate()
            .map(|(k, (t, i))| {
                let (p, o) = self.lengths[i.min(self.lengths.len() - 1)];
                TraceRequest {
                    arrival: Duration::from_secs_f64(t),
                    tenant: format!("client-{i}"),
                    group: i,
                    prompt_tokens: p,
                    output_tokens: o,
                    prompt: PromptSource::Unique {
                        seed: seed.rotate_left(32) ^ k as u64,
                    },
                }
            })
            .collect();
        Trace {
            name: format!("vtc:{}", self.name),
            requests,
            duration: Some(Duration::from_secs(self.duration_s)),
        }
    }
}

/// The shared-prefix workload as a trace: `w`'s requests in their shuffled order, cycled, at
/// Poisson arrivals of `rate` per second for `duration`, drawn exactly as the live load generator
/// draws them, so a live run and a discrete-event run of one seed send the same sequence.
pub fn shared_prefix_trace(w: &SharedPrefix, rate: f64, duration: Duration, seed: u64) -> Trace {
    let items = w.items();
    let texts: Vec<Bytes> = items
        .iter()
        .map(|i| Bytes::from(i.prompt.clone()))
        .collect();
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut at = Duration::ZERO;
    let mut requests = Vec::new();
    if rate > 0.0 && !items.is_empty() {
        for (item, text) in items.iter().zip(&texts).cycle() {
            let u: f64 = rng.random();
            at += Duration::from_secs_f64(-(1.0 - u).ln() / rate);
            if at > duration {
                break;
            }
            requests.push(TraceRequest {
                arrival: at,
                tenant: item.tenant.clone(),
                group: item.group,
                prompt_tokens: (item.prompt.len() / 4) as u32,
                output_tokens: item.max_tokens,
                prompt: PromptSource::Text(text.clone()),
            });
        }
    }
    Trace {
        name: "synthetic:shared-prefix".into(),
        requests,
        duration: Some(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_suites_have_their_rates() {
        let s = VtcSuite::by_name("overload").unwrap();
        let t = s.trace(1);
        let n0 = t.requests.iter().filter(|r| r.tenant == "client-0").count();
        let n1 = t.requests.iter().filter(|r| r.tenant == "client-1").count();
        assert_eq!((n0, n1), (540, 1080));
        assert!(t.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        assert!(t.requests.iter().all(|r| r.prompt_tokens == 256));
        assert_eq!(t, s.trace(1));
        assert_ne!(t, s.trace(2));
    }

    #[test]
    fn on_off_silences_client_zero_every_other_minute() {
        let t = VtcSuite::by_name("on_off_less").unwrap().trace(3);
        for r in &t.requests {
            let minute = r.arrival.as_secs() / 60;
            if r.tenant == "client-0" {
                assert_eq!(minute % 2, 0, "{r:?}");
            }
        }
        let ones = t.requests.iter().filter(|r| r.tenant == "client-1").count();
        assert_eq!(ones, 1200);
    }

    #[test]
    fn poisson_short_long_mixes_by_rate() {
        let t = VtcSuite::by_name("poisson-short-long-2").unwrap().trace(5);
        let n = t.requests.len() as f64;
        let short = t.requests.iter().filter(|r| r.tenant == "client-0").count() as f64;
        assert!((short / n - 8.0 / 9.5).abs() < 0.03, "{}", short / n);
        let r1 = t.requests.iter().find(|r| r.tenant == "client-1").unwrap();
        assert_eq!((r1.prompt_tokens, r1.output_tokens), (32, 512));
        let last = t.requests.last().unwrap().arrival.as_secs_f64();
        assert!((last - 600.0).abs() < 30.0, "{last}");
    }

    #[test]
    fn shared_prefix_trace_cycles_items_at_poisson_times() {
        let w = SharedPrefix {
            groups: 2,
            prompts_per_group: 3,
            system_prompt_tokens: 40,
            question_tokens: 10,
            output_tokens: 5,
            tenants: vec!["a".into(), "b".into()],
            seed: 9,
        };
        let t = shared_prefix_trace(&w, 100.0, Duration::from_secs(1), 4);
        assert!(
            (60..=140).contains(&t.requests.len()),
            "{}",
            t.requests.len()
        );
        let items = w.items();
        for (k, r) in t.requests.iter().enumerate() {
            let item = &items[k % items.len()];
            assert_eq!(r.prompt_text(), item.prompt.as_bytes());
            assert_eq!(r.prompt_tokens, 50);
            assert_eq!(r.tenant, item.tenant);
        }
    }
}
