//! Policies a run can name: any `EndpointPickerConfig` file, and baselines.
//!
//! | name | what it does |
//! |---|---|
//! | `gie-default`, `switchyard` | the default config (queue ×2, KV ×2, prefix ×3) |
//! | `random` | config: `random-picker` alone |
//! | `least-queue` | config: `queue-scorer` alone (fewest waiting requests, ties random) |
//! | `least-kv` | config: `kv-cache-utilization-scorer` alone |
//! | `round-robin` | pods in turn |
//! | `least-requests` | fewest requests this router has in flight on the pod |
//! | `sglang-cache-aware` | SGLang router's cache-aware policy |
//! | `dynamo-cost` | Dynamo KV router's cost: prefill blocks after overlap + active blocks |
//!
//! The config baselines run through Switchyard's scheduler like any config file. The others are
//! routers of their own with the state their real counterparts keep: SGLang's approximate
//! per-worker prefix tree of routed text, Dynamo's exact view of each engine's cached blocks (KV
//! events without delay) plus the blocks of the requests it routed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rand::RngExt;
use switchyard::config::{self, EndpointPickerConfig};
use switchyard::datalayer::engine::Engines;
use switchyard::flowcontrol::ControllerConfig;
use switchyard::prefix::BlockHasher;
use switchyard::runtime;
use switchyard::scheduling::plugins::UtilizationFilter;
use switchyard::scheduling::{SaturationDetector, SchedulerRng, Timestamp};

use crate::des::router::{
    Completion, PoolView, RouteError, RouteRequest, Routed, Router, SwitchyardRouter,
};
use crate::engine::BuildU64Hasher;

/// The EPP side of a policy.
pub struct EppParts {
    pub router: Box<dyn Router>,
    pub saturation: Arc<dyn SaturationDetector>,
    pub engines: Option<Engines>,
    pub flow_control: Option<ControllerConfig>,
}

/// Names and one-line descriptions of the baselines.
pub const BASELINES: &[(&str, &str)] = &[
    (
        "gie-default",
        "GIE's default config: queue ×2, KV ×2, prefix ×3",
    ),
    ("switchyard", "Switchyard's default config (= gie-default)"),
    ("random", "random-picker"),
    ("least-queue", "queue-scorer alone: fewest waiting requests"),
    (
        "least-kv",
        "kv-cache-utilization-scorer alone: most free KV",
    ),
    ("round-robin", "pods in turn"),
    (
        "least-requests",
        "fewest requests in flight from this router",
    ),
    (
        "sglang-cache-aware",
        "SGLang router: shortest queue when imbalanced (32 / 1.1), else best prefix match ≥ 0.5, else least loaded",
    ),
    (
        "dynamo-cost",
        "Dynamo KV router: min(prefill blocks after overlap + active blocks)",
    ),
];

const HEADER: &str =
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n";

fn single_plugin_config(plugin: &str) -> EndpointPickerConfig {
    let yaml = format!(
        "{HEADER}plugins:\n- type: {plugin}\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: {plugin}\n"
    );
    config::load_str(&yaml).expect("built-in baseline config is valid")
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading {path}: {source}")]
    Config {
        path: String,
        #[source]
        source: config::ConfigErrors,
    },
    #[error("unknown policy {0:?}: name a baseline ({names}) or an EndpointPickerConfig file", names = names())]
    Unknown(String),
}

fn names() -> String {
    BASELINES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a policy is.
#[derive(Debug, Clone)]
pub enum PolicyKind {
    /// Switchyard's scheduler with this configuration; `file` when it came from one.
    Config {
        config: Box<EndpointPickerConfig>,
        file: Option<std::path::PathBuf>,
    },
    RoundRobin,
    LeastRequests,
    SglangCacheAware,
    DynamoCost,
}

/// A named policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub label: String,
    pub kind: PolicyKind,
}

impl Policy {
    /// A baseline name or a config file path.
    pub fn parse(spec: &str) -> Result<Self, PolicyError> {
        let config = |c: EndpointPickerConfig| PolicyKind::Config {
            config: Box::new(c),
            file: None,
        };
        let kind = match spec {
            "gie-default" | "switchyard" | "default" => config(config::default_config()),
            "random" => config(single_plugin_config("random-picker")),
            "least-queue" => config(single_plugin_config("queue-scorer")),
            "least-kv" => config(single_plugin_config("kv-cache-utilization-scorer")),
            "round-robin" => PolicyKind::RoundRobin,
            "least-requests" => PolicyKind::LeastRequests,
            "sglang-cache-aware" | "sglang" => PolicyKind::SglangCacheAware,
            "dynamo-cost" | "dynamo" => PolicyKind::DynamoCost,
            _ => {
                let path = Path::new(spec);
                if !path.is_file() {
                    return Err(PolicyError::Unknown(spec.to_string()));
                }
                let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
                    path: spec.to_string(),
                    source,
                })?;
                let cfg = config::load_str(&text).map_err(|source| PolicyError::Config {
                    path: spec.to_string(),
                    source,
                })?;
                let label = path
                    .file_stem()
                    .map_or_else(|| spec.to_string(), |s| s.to_string_lossy().into_owned());
                return Ok(Self {
                    label,
                    kind: PolicyKind::Config {
                        config: Box::new(cfg),
                        file: Some(path.to_path_buf()),
                    },
                });
            }
        };
        Ok(Self {
            label: spec.to_string(),
            kind,
        })
    }

    /// The configuration, for policies that are one.
    pub fn config(&self) -> Option<&EndpointPickerConfig> {
        match &self.kind {
            PolicyKind::Config { config, .. } => Some(config),
            _ => None,
        }
    }

    /// A fresh router (each run starts with empty state).
    pub fn router(&self) -> Box<dyn Router> {
        self.epp().router
    }

    /// Everything the EPP runs for this policy, fresh: the router, the saturation detector
    /// (the configuration's, else the default config's), the engine mappings the collector
    /// extracts with (none when the configuration disables collection) and the flow-control
    /// configuration (when its `flowControl` gate is on).
    pub fn epp(&self) -> EppParts {
        let default = config::default_config();
        let cfg: &EndpointPickerConfig = self.config().unwrap_or(&default);
        let (router, detector): (Box<dyn Router>, _) = match &self.kind {
            PolicyKind::Config { config, .. } => {
                let (r, d) = SwitchyardRouter::new(config);
                (Box::new(r), d)
            }
            PolicyKind::RoundRobin => (Box::new(RoundRobin::default()), None),
            PolicyKind::LeastRequests => (Box::new(LeastRequests::default()), None),
            PolicyKind::SglangCacheAware => (Box::new(SglangCacheAware::default()), None),
            PolicyKind::DynamoCost => (Box::new(DynamoCost::default()), None),
        };
        // As the server: the configured detector, else GIE's utilization detector defaults.
        let saturation = detector.unwrap_or_else(|| Arc::new(UtilizationFilter::default()));
        EppParts {
            router,
            saturation,
            engines: runtime::collector_config(cfg, &runtime::Flags::default())
                .map(|c| Engines::new(&c.extractor)),
            flow_control: runtime::flow_control_config(cfg),
        }
    }
}

/// Among `values`, the index of the smallest, ties broken uniformly at random.
fn argmin_random<T: PartialOrd + Copy>(
    values: impl Iterator<Item = T>,
    rng: &mut SchedulerRng,
) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    let mut ties = 0u32;
    for (i, v) in values.enumerate() {
        match best {
            Some((_, b)) if v > b => {}
            Some((_, b)) if v == b => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some((i, v));
                }
            }
            _ => {
                best = Some((i, v));
                ties = 1;
            }
        }
    }
    best.map(|(i, _)| i)
}

fn no_pods() -> RouteError {
    RouteError::Decision(switchyard::scheduling::DecisionError::NoCandidates)
}

// === impl RoundRobin ===

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Router for RoundRobin {
    fn route(
        &mut self,
        _req: &RouteRequest<'_>,
        pool: &PoolView<'_>,
        _rng: &mut SchedulerRng,
    ) -> Result<Routed, RouteError> {
        let n = pool.snapshot.len();
        if n == 0 {
            return Err(no_pods());
        }
        let p = self.next % n;
        self.next = self.next.wrapping_add(1);
        Ok(p.into())
    }

    fn complete(&mut self, _done: &Completion<'_>) {}
}

// === in-flight tracking ===

/// Requests this router has in flight, per pod.
#[derive(Debug, Default)]
struct InFlight {
    per_pod: Vec<u32>,
    pod_of: HashMap<usize, usize, BuildU64Hasher>,
}

impl InFlight {
    fn loads(&mut self, pods: usize) -> &[u32] {
        self.per_pod.resize(pods, 0);
        &self.per_pod
    }

    fn add(&mut self, id: usize, pod: usize) {
        self.per_pod[pod] += 1;
        self.pod_of.insert(id, pod);
    }

    fn remove(&mut self, id: usize) {
        if let Some(p) = self.pod_of.remove(&id) {
            self.per_pod[p] -= 1;
        }
    }
}

// === impl LeastRequests ===

#[derive(Debug, Default)]
pub struct LeastRequests {
    inflight: InFlight,
}

impl Router for LeastRequests {
    fn route(
        &mut self,
        req: &RouteRequest<'_>,
        pool: &PoolView<'_>,
        rng: &mut SchedulerRng,
    ) -> Result<Routed, RouteError> {
        let loads = self.inflight.loads(pool.snapshot.len());
        let p = argmin_random(loads.iter().copied(), rng).ok_or_else(no_pods)?;
        self.inflight.add(req.id, p);
        Ok(p.into())
    }

    fn complete(&mut self, done: &Completion<'_>) {
        self.inflight.remove(done.id);
    }
}

// === impl SglangCacheAware ===

/// The SGLang router's cache-aware policy (sgl-router / model gateway docs), with the thresholds
/// of its defaults except the relative balance threshold, 1.1 here.
///
/// Each worker's radix tree of routed text is approximated by the chained hashes of 64-character
/// blocks (GIE's block size), so matches are measured to within a block.
#[derive(Debug)]
pub struct SglangCacheAware {
    pub balance_abs_threshold: u32,
    pub balance_rel_threshold: f64,
    pub cache_threshold: f64,
    /// Tree size limit per worker, in characters (`max_tree_size`).
    pub max_tree_chars: usize,
    /// How often trees are trimmed to the limit (`eviction_interval`).
    pub eviction_interval_s: u64,
    trees: Vec<HashMap<u64, u64, BuildU64Hasher>>,
    inflight: InFlight,
    next_eviction: Timestamp,
    hashes: Vec<u64>,
}

/// Characters per tree block.
const SGLANG_BLOCK_CHARS: usize = 64;

impl Default for SglangCacheAware {
    fn default() -> Self {
        Self {
            balance_abs_threshold: 32,
            balance_rel_threshold: 1.1,
            cache_threshold: 0.5,
            max_tree_chars: 1 << 24,
            eviction_interval_s: 60,
            trees: Vec::new(),
            inflight: InFlight::default(),
            next_eviction: Timestamp::ZERO,
            hashes: Vec::new(),
        }
    }
}

impl SglangCacheAware {
    fn evict(&mut self, now: Timestamp) {
        if now < self.next_eviction {
            return;
        }
        self.next_eviction =
            now.saturating_add(std::time::Duration::from_secs(self.eviction_interval_s));
        let max_blocks = self.max_tree_chars / SGLANG_BLOCK_CHARS;
        for tree in &mut self.trees {
            if tree.len() <= max_blocks {
                continue;
            }
            let mut by_age: Vec<(u64, u64)> = tree.iter().map(|(&h, &t)| (t, h)).collect();
            by_age.sort_unstable();
            for (_, h) in &by_age[..tree.len() - max_blocks] {
                tree.remove(h);
            }
        }
    }
}

impl Router for SglangCacheAware {
    fn route(
        &mut self,
        req: &RouteRequest<'_>,
        pool: &PoolView<'_>,
        rng: &mut SchedulerRng,
    ) -> Result<Routed, RouteError> {
        let n = pool.snapshot.len();
        if n == 0 {
            return Err(no_pods());
        }
        self.trees.resize_with(n, Default::default);
        self.evict(pool.now);
        let loads = self.inflight.loads(n).to_vec();
        let (min, max) = (
            *loads.iter().min().expect("n > 0"),
            *loads.iter().max().expect("n > 0"),
        );
        let imbalanced = max - min > self.balance_abs_threshold
            && f64::from(max) > f64::from(min) * self.balance_rel_threshold;
        let text = &req.request.prompt;
        let hasher = BlockHasher::new((SGLANG_BLOCK_CHARS / 4) as u32, u32::MAX);
        hasher.hash_into(text, 0x7367_6c61_6e67, &mut self.hashes);
        let pick = if imbalanced {
            argmin_random(loads.iter().copied(), rng).expect("n > 0")
        } else {
            let matched: Vec<usize> = self
                .trees
                .iter()
                .map(|t| self.hashes.iter().take_while(|h| t.contains_key(h)).count())
                .collect();
            let best =
                argmin_random(matched.iter().map(|&m| std::cmp::Reverse(m)), rng).expect("n > 0");
            let chars = (matched[best] * SGLANG_BLOCK_CHARS).min(text.len());
            let ratio = if text.is_empty() {
                0.0
            } else {
                chars as f64 / text.len() as f64
            };
            if ratio >= self.cache_threshold {
                best
            } else {
                argmin_random(loads.iter().copied(), rng).expect("n > 0")
            }
        };
        let now = pool.now.as_nanos();
        let tree = &mut self.trees[pick];
        for &h in &self.hashes {
            tree.insert(h, now);
        }
        self.inflight.add(req.id, pick);
        Ok(pick.into())
    }

    fn complete(&mut self, done: &Completion<'_>) {
        self.inflight.remove(done.id);
    }
}

// === impl DynamoCost ===

/// Dynamo's KV router cost with its defaults (overlap weight 1, temperature 0):
/// `prefill blocks after overlap + active blocks`, the smallest wins. Overlap is read from the
/// engines' caches; prefill and active blocks are those of the requests this router sent.
#[derive(Debug, Default)]
pub struct DynamoCost {
    prefill: Vec<u64>,
    active: Vec<u64>,
    /// Per request: pod, its blocks, its uncached prefill blocks (0 once prefilled).
    requests: HashMap<usize, (usize, u64, u64), BuildU64Hasher>,
}

impl Router for DynamoCost {
    fn route(
        &mut self,
        req: &RouteRequest<'_>,
        pool: &PoolView<'_>,
        rng: &mut SchedulerRng,
    ) -> Result<Routed, RouteError> {
        let n = pool.snapshot.len();
        if n == 0 {
            return Err(no_pods());
        }
        self.prefill.resize(n, 0);
        self.active.resize(n, 0);
        let bs = u64::from(pool.block_size.max(1));
        let blocks = u64::from(req.prompt_tokens).div_ceil(bs);
        let new_prefill: Vec<u64> = (0..n)
            .map(|p| {
                let overlap = u64::from(pool.cache.cached_prefix_blocks(p, req.block_hashes));
                blocks.saturating_sub(overlap)
            })
            .collect();
        let cost = (0..n).map(|p| new_prefill[p] + self.prefill[p] + self.active[p]);
        let pick = argmin_random(cost, rng).expect("n > 0");
        self.prefill[pick] += new_prefill[pick];
        self.active[pick] += blocks;
        self.requests
            .insert(req.id, (pick, blocks, new_prefill[pick]));
        Ok(pick.into())
    }

    fn first_token(&mut self, id: usize) {
        if let Some((p, _, pre)) = self.requests.get_mut(&id) {
            self.prefill[*p] -= *pre;
            *pre = 0;
        }
    }

    fn complete(&mut self, done: &Completion<'_>) {
        if let Some((p, blocks, pre)) = self.requests.remove(&done.id) {
            self.prefill[p] -= pre;
            self.active[p] -= blocks;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_baseline_parses_and_unknown_names_fail() {
        for (name, _) in BASELINES {
            let p = Policy::parse(name).unwrap();
            assert_eq!(p.label, *name);
            let _ = p.router();
        }
        let e = Policy::parse("no-such-policy").unwrap_err().to_string();
        assert!(
            e.contains("round-robin") && e.contains("EndpointPickerConfig"),
            "{e}"
        );
    }

    #[test]
    fn config_baselines_have_the_scorer_they_are_named_for() {
        let lq = Policy::parse("least-queue").unwrap();
        let cfg = lq.config().unwrap();
        assert_eq!(cfg.profiles.len(), 1);
        let (s, w) = cfg.profiles[0].scorers[0];
        assert_eq!(cfg.plugin(s).spec.type_name(), "queue-scorer");
        assert_eq!(w, 1.0);
        let d = Policy::parse("gie-default").unwrap();
        assert_eq!(d.config().unwrap().profiles[0].scorers.len(), 3);
    }

    #[test]
    fn argmin_breaks_ties_at_random() {
        let mut rng = SchedulerRng::seed_from_u64(1);
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[argmin_random([2, 1, 1].into_iter(), &mut rng).unwrap()] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1] > 100 && seen[2] > 100, "{seen:?}");
        assert_eq!(argmin_random(std::iter::empty::<u32>(), &mut rng), None);
    }
}
