//! Workloads as timed requests, and readers for the public traces they come from.
//!
//! A [`Trace`] is what both simulator modes replay: requests with an arrival time, a tenant, token
//! counts and a [`PromptSource`]. Prompt text is produced only when a request is sent, because an
//! hour of Mooncake prompts is hundreds of megabytes; every source is deterministic, so the same
//! trace always yields the same bytes, and the fake tokenizer (4 characters per token) turns them
//! back into exactly `prompt_tokens` tokens.
//!
//! Readers:
//! - [`read_mooncake`]: Mooncake JSONL (`timestamp` ms, `input_length`, `output_length`,
//!   `hash_ids` of 512-token blocks). Each block id becomes a fixed 512-token text, so requests whose
//!   ids agree share their text prefix and therefore their KV blocks.
//! - [`read_azure`]: Azure LLM inference CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`); no
//!   prefix information, so every prompt is private.
//! - [`read_vtc_results`]: the VTC artifact's per-request results (`req_time`, `adapter_dir` as the
//!   tenant, `prompt_len`, `output_len`); [`read_vtc_measurements`] also returns the latencies the
//!   paper measured, to check our fairness metric against theirs.
//!
//! Tenant-less traces get tenants by a [`TenantRule`].

use std::fmt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::load::Record;

/// Tokens per block in the Mooncake traces' `hash_ids`.
pub const MOONCAKE_BLOCK_TOKENS: u32 = 512;

/// Where a request's prompt text comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSource {
    /// Text given in full (synthetic workloads); shared by cheap clones.
    Text(Bytes),
    /// Block `i` is the fixed text of `ids[i]`, `block_tokens` tokens long; the prompt is cut to
    /// its length, so the last block may be partial.
    Blocks { ids: Vec<u64>, block_tokens: u32 },
    /// Text private to the request, drawn from `seed`.
    Unique { seed: u64 },
}

/// One request of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRequest {
    /// From the start of the run.
    pub arrival: Duration,
    pub tenant: String,
    /// Prompt group (shared-prefix workloads); 0 when the trace has none.
    pub group: usize,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub prompt: PromptSource,
}

/// A workload: requests in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub name: String,
    pub requests: Vec<TraceRequest>,
    /// The workload's nominal length. Fairness windows span it; when `None` they span the
    /// arrivals, rounded up to 10 s.
    pub duration: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<String, TraceError> {
    std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn parse_err(path: &Path, line: usize, message: impl fmt::Display) -> TraceError {
    TraceError::Parse {
        path: path.display().to_string(),
        line,
        message: message.to_string(),
    }
}

impl Trace {
    /// Sorts by arrival, keeping the trace order of simultaneous arrivals.
    pub fn sort(&mut self) {
        self.requests.sort_by_key(|r| r.arrival);
    }

    /// Keeps the first `n` requests.
    pub fn truncate(&mut self, n: usize) {
        self.requests.truncate(n);
    }

    /// Keeps the requests that arrive before `horizon`.
    pub fn cut_at(&mut self, horizon: Duration) {
        self.requests.retain(|r| r.arrival < horizon);
        if let Some(d) = self.duration {
            self.duration = Some(d.min(horizon));
        }
    }

    /// Divides every arrival time by `factor` (2.0 replays twice as fast).
    pub fn speed_up(&mut self, factor: f64) {
        for r in &mut self.requests {
            r.arrival = Duration::from_secs_f64(r.arrival.as_secs_f64() / factor);
        }
        if let Some(d) = self.duration {
            self.duration = Some(Duration::from_secs_f64(d.as_secs_f64() / factor));
        }
    }

    /// Distinct tenants, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<&str> =
            self.requests.iter().map(|r| r.tenant.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// Assigns tenants by `rule` (for traces that have none).
    pub fn assign_tenants(&mut self, rule: TenantRule) {
        for (i, r) in self.requests.iter_mut().enumerate() {
            r.tenant = rule.tenant_of(i, &r.prompt);
        }
    }
}

// === text ===

/// SplitMix64: a tiny, fast, well-mixed generator for prompt text.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Appends `tokens` pseudo-words of exactly 4 bytes (3 letters and a space) drawn from `seed`.
pub fn push_text(out: &mut Vec<u8>, seed: u64, tokens: usize) {
    let mut s = seed;
    out.reserve(tokens * 4);
    for _ in 0..tokens {
        let x = splitmix(&mut s);
        out.extend_from_slice(&[
            b'a' + (x % 26) as u8,
            b'a' + ((x >> 16) % 26) as u8,
            b'a' + ((x >> 32) % 26) as u8,
            b' ',
        ]);
    }
}

/// Seed of a Mooncake block id's text; the same for every request that carries the id.
fn block_seed(id: u64) -> u64 {
    id.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x6D6F_6F6E_6361_6B65
}

impl TraceRequest {
    /// The prompt text: `prompt_tokens × 4` bytes, the same bytes every time.
    pub fn prompt_text(&self) -> Bytes {
        let len = self.prompt_tokens as usize * 4;
        match &self.prompt {
            PromptSource::Text(t) => t.clone(),
            PromptSource::Unique { seed } => {
                let mut v = Vec::new();
                push_text(&mut v, *seed, self.prompt_tokens as usize);
                Bytes::from(v)
            }
            PromptSource::Blocks { ids, block_tokens } => {
                let mut v = Vec::with_capacity(len);
                for &id in ids {
                    if v.len() >= len {
                        break;
                    }
                    let want = (*block_tokens as usize).min((len - v.len()).div_ceil(4));
                    push_text(&mut v, block_seed(id), want);
                }
                // A trace whose blocks cover fewer tokens than it claims: the rest is private.
                if v.len() < len {
                    let seed = ids.iter().fold(0x7072_6976_u64, |a, &b| {
                        a.rotate_left(13) ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    });
                    let rest = (len - v.len()).div_ceil(4);
                    push_text(&mut v, seed, rest);
                }
                v.truncate(len);
                Bytes::from(v)
            }
        }
    }
}

// === tenants ===

/// How tenant-less traces get tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRule {
    /// Request `i` belongs to `tenant-(i mod n)`.
    RoundRobin { tenants: u32 },
    /// `tenant-(hash(block id at index) mod n)`: requests that share that prefix block share a
    /// tenant, as when tenants own their system prompts. The last block stands in for shorter
    /// prompts; prompts without blocks fall back to round robin.
    HashBlock { tenants: u32, index: usize },
}

impl TenantRule {
    /// Parses `round-robin` or `hash-block[:INDEX]` (index 1 by default: block 0 is shared by
    /// every Mooncake request).
    pub fn parse(rule: &str, tenants: u32) -> Result<Self, TraceError> {
        if tenants == 0 {
            return Err(TraceError::Invalid("--tenants must be at least 1".into()));
        }
        match rule.split_once(':') {
            None if rule == "round-robin" => Ok(Self::RoundRobin { tenants }),
            None if rule == "hash-block" => Ok(Self::HashBlock { tenants, index: 1 }),
            Some(("hash-block", i)) => i
                .parse()
                .map(|index| Self::HashBlock { tenants, index })
                .map_err(|_| TraceError::Invalid(format!("bad block index in {rule:?}"))),
            _ => Err(TraceError::Invalid(format!(
                "unknown tenant rule {rule:?} (round-robin, hash-block[:INDEX])"
            ))),
        }
    }

    pub fn tenant_of(&self, i: usize, prompt: &PromptSource) -> String {
        let k = match *self {
            Self::RoundRobin { tenants } => i as u64 % u64::from(tenants),
            Self::HashBlock { tenants, index } => match prompt {
                PromptSource::Blocks { ids, .. } if !ids.is_empty() => {
                    let id = ids[index.min(ids.len() - 1)];
                    let mut s = id;
                    splitmix(&mut s) % u64::from(tenants)
                }
                _ => i as u64 % u64::from(tenants),
            },
        };
        format!("tenant-{k}")
    }
}

// === Mooncake ===

#[derive(Deserialize)]
struct MooncakeLine {
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    #[serde(default)]
    hash_ids: Vec<u64>,
}

/// Reads a Mooncake trace. Every request is tenant `default-flow` until tenants are assigned.
pub fn read_mooncake(path: &Path) -> Result<Trace, TraceError> {
    let text = read(path)?;
    let mut requests = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: MooncakeLine = serde_json::from_str(line).map_err(|e| parse_err(path, n + 1, e))?;
        if l.input_length == 0 {
            return Err(parse_err(path, n + 1, "input_length is 0"));
        }
        if !l.timestamp.is_finite() || l.timestamp < 0.0 {
            return Err(parse_err(path, n + 1, "timestamp must be ≥ 0 ms"));
        }
        requests.push(TraceRequest {
            arrival: Duration::from_secs_f64(l.timestamp / 1e3),
            tenant: switchyard::scheduling::DEFAULT_FAIRNESS_ID.to_string(),
            group: 0,
            prompt_tokens: l.input_length,
            output_tokens: l.output_length.max(1),
            prompt: PromptSource::Blocks {
                ids: l.hash_ids,
                block_tokens: MOONCAKE_BLOCK_TOKENS,
            },
        });
    }
    let mut t = Trace {
        name: format!("mooncake:{}", file_name(path)),
        requests,
        duration: None,
    };
    t.sort();
    Ok(t)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into(),
    )
}

// === Azure ===

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the Unix epoch of `YYYY-MM-DD HH:MM:SS[.fraction]`.
fn parse_timestamp(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, mi, sec) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || !sec.is_finite() {
        return None;
    }
    Some((days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

/// Reads an Azure LLM inference trace; arrivals are relative to the first row. Every prompt is
/// private (the trace carries no prefix information).
pub fn read_azure(path: &Path) -> Result<Trace, TraceError> {
    let text = read(path)?;
    let mut lines = text.lines().enumerate();
    let (_, header) = lines
        .next()
        .ok_or_else(|| parse_err(path, 1, "empty file"))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| parse_err(path, 1, format!("no column {name}")))
    };
    let (ts, ctx, gen_col) = (
        col("TIMESTAMP")?,
        col("ContextTokens")?,
        col("GeneratedTokens")?,
    );
    let mut first = None;
    let mut requests = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| parse_err(path, n + 1, "too few columns"))
        };
        let at =
            parse_timestamp(get(ts)?).ok_or_else(|| parse_err(path, n + 1, "bad TIMESTAMP"))?;
        let base = *first.get_or_insert(at);
        let num = |i: usize, what: &str| {
            get(i)?
                .parse::<u32>()
                .map_err(|_| parse_err(path, n + 1, format!("bad {what}")))
        };
        let prompt_tokens = num(ctx, "ContextTokens")?.max(1);
        let output_tokens = num(gen_col, "GeneratedTokens")?.max(1);
        let index = requests.len() as u64;
        requests.push(TraceRequest {
            arrival: Duration::from_secs_f64((at - base).max(0.0)),
            tenant: switchyard::scheduling::DEFAULT_FAIRNESS_ID.to_string(),
            group: 0,
            prompt_tokens,
            output_tokens,
            prompt: PromptSource::Unique {
                seed: 0x617A_7572_6500_0000 ^ index,
            },
        });
    }
    let mut t = Trace {
        name: format!("azure:{}", file_name(path)),
        requests,
        duration: None,
    };
    t.sort();
    Ok(t)
}

// === VTC artifact ===

#[derive(Deserialize)]
struct VtcFile {
    config: VtcConfig,
    result: VtcResult,
}

#[derive(Deserialize)]
struct VtcConfig {
    duration: f64,
}

#[derive(Deserialize)]
struct VtcResult {
    total_time: f64,
    responses: Vec<VtcResponse>,
}

#[derive(Deserialize)]
struct VtcResponse {
    adapter_dir: String,
    prompt_len: u32,
    output_len: u32,
    req_time: f64,
    #[serde(default)]
    request_latency: f64,
    #[serde(default)]
    first_token_latency: f64,
}

fn read_vtc(path: &Path) -> Result<VtcFile, TraceError> {
    let text = read(path)?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| parse_err(path, 1, "empty file"))?;
    serde_json::from_str(line).map_err(|e| parse_err(path, 1, e))
}

/// Reads the requests of a VTC artifact result file (its first run). Prompts are private: the
/// artifact sent `"Hello " × prompt_len`, whose prefix sharing S-LoRA did not exploit.
pub fn read_vtc_results(path: &Path) -> Result<Trace, TraceError> {
    let f = read_vtc(path)?;
    let requests = f
        .result
        .responses
        .iter()
        .enumerate()
        .map(|(i, r)| TraceRequest {
            arrival: Duration::from_secs_f64(r.req_time.max(0.0)),
            tenant: r.adapter_dir.clone(),
            group: 0,
            prompt_tokens: r.prompt_len.max(1),
            output_tokens: r.output_len.max(1),
            prompt: PromptSource::Unique {
                seed: 0x7674_6300_0000_0000 ^ i as u64,
            },
        })
        .collect();
    let mut t = Trace {
        name: format!("vtc-results:{}", file_name(path)),
        requests,
        duration: (f.config.duration > 0.0).then(|| Duration::from_secs_f64(f.config.duration)),
    };
    t.sort();
    Ok(t)
}

/// What the VTC paper measured in one run: a record per served request (aborted requests are
/// left out, as the paper's plots do) and the run's `total_time` in seconds.
pub fn read_vtc_measurements(path: &Path) -> Result<(Vec<Record>, f64), TraceError> {
    let f = read_vtc(path)?;
    let records = f
        .result
        .responses
        .iter()
        .filter(|r| r.first_token_latency >= 0.0)
        .map(|r| Record {
            tenant: r.adapter_dir.clone(),
            group: 0,
            sent_at_ms: r.req_time * 1e3,
            status: 200,
            ttft_ms: Some(r.first_token_latency * 1e3),
            e2e_ms: r.request_latency * 1e3,
            prompt_tokens: u64::from(r.prompt_len),
            output_tokens: u64::from(r.output_len),
            cached_tokens: 0,
            endpoint: None,
            error: None,
        })
        .collect();
    Ok((records, f.result.total_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_prompts_share_exactly_their_common_blocks() {
        let a = TraceRequest {
            arrival: Duration::ZERO,
            tenant: "t".into(),
            group: 0,
            prompt_tokens: 1000,
            output_tokens: 1,
            prompt: PromptSource::Blocks {
                ids: vec![0, 1],
                block_tokens: 512,
            },
        };
        let mut b = a.clone();
        b.prompt = PromptSource::Blocks {
            ids: vec![0, 2, 3],
            block_tokens: 512,
        };
        b.prompt_tokens = 1100;
        let (ta, tb) = (a.prompt_text(), b.prompt_text());
        assert_eq!(ta.len(), 4000);
        assert_eq!(tb.len(), 4400);
        assert_eq!(ta[..2048], tb[..2048]);
        assert_ne!(ta[2048..2112], tb[2048..2112]);
        assert_eq!(ta, a.prompt_text(), "deterministic");
        assert!(
            ta.chunks(4)
                .all(|w| w[3] == b' ' && w[..3].iter().all(u8::is_ascii_lowercase))
        );
    }

    #[test]
    fn short_block_lists_are_padded_privately() {
        let r = TraceRequest {
            arrival: Duration::ZERO,
            tenant: "t".into(),
            group: 0,
            prompt_tokens: 600,
            output_tokens: 1,
            prompt: PromptSource::Blocks {
                ids: vec![7],
                block_tokens: 512,
            },
        };
        assert_eq!(r.prompt_text().len(), 2400);
    }

    #[test]
    fn timestamps_parse_across_midnight() {
        let a = parse_timestamp("2023-11-16 23:59:59.5").unwrap();
        let b = parse_timestamp("2023-11-17 00:00:00.25").unwrap();
        assert!((b - a - 0.75).abs() < 1e-6);
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0.0));
        assert!(parse_timestamp("2023-13-01 00:00:00").is_none());
        assert!(parse_timestamp("nonsense").is_none());
    }

    #[test]
    fn tenant_rules() {
        let blocks = |ids: Vec<u64>| PromptSource::Blocks {
            ids,
            block_tokens: 512,
        };
        let rr = TenantRule::parse("round-robin", 3).unwrap();
        assert_eq!(rr.tenant_of(4, &blocks(vec![0])), "tenant-1");
        let hb = TenantRule::parse("hash-block", 5).unwrap();
        assert_eq!(
            hb,
            TenantRule::HashBlock {
                tenants: 5,
                index: 1
            }
        );
        let x = hb.tenant_of(0, &blocks(vec![0, 42, 7]));
        assert_eq!(x, hb.tenant_of(99, &blocks(vec![0, 42, 8])));
        // Different second blocks spread over tenants.
        let spread: std::collections::BTreeSet<String> = (0..200)
            .map(|i| hb.tenant_of(0, &blocks(vec![0, i])))
            .collect();
        assert_eq!(spread.len(), 5);
        assert!(TenantRule::parse("hash-block:x", 2).is_err());
        assert!(TenantRule::parse("nope", 2).is_err());
        assert!(TenantRule::parse("round-robin", 0).is_err());
    }
}
