//! `switchyard-sim run` and `compare`: a workload, one or more policies, a simulated pool, and
//! the reports (terminal table, JSON, SVG charts).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard::flowcontrol::VtcParams;
use switchyard::flowcontrol::{BandConfig, ControllerConfig, Fairness};

use crate::baselines::{EppParts, Policy};
use crate::des::admission::Admission;
use crate::des::{self, DesOptions, DesOutcome, Epp};
use crate::report::{self, PolicyReport, RunFacts};
use crate::suites::{VtcSuite, shared_prefix_trace};
use crate::trace::{self, TenantRule, Trace};
use crate::workload::SharedPrefix;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    #[error("{0}")]
    Workload(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which workload, and how to shape it.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// `synthetic`, `vtc:<suite>`, `mooncake:<path>`, `azure:<path>` or `vtc-results:<path>`.
    pub workload: String,
    /// Synthetic: requests per second (Poisson) and seconds of arrivals.
    pub rate: f64,
    pub duration_s: f64,
    pub shared_prefix: SharedPrefix,
    /// Tenants for traces that have none, and the rule that assigns them.
    pub tenants: Option<u32>,
    pub tenant_rule: String,
    /// Keep only the first N requests.
    pub max_requests: Option<usize>,
    /// Keep only requests arriving before this many seconds.
    pub horizon_s: Option<f64>,
    /// Replay arrivals this many times faster.
    pub speed_up: f64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            workload: "synthetic".into(),
            rate: 22.0,
            duration_s: 60.0,
            shared_prefix: SharedPrefix::default(),
            tenants: None,
            tenant_rule: "round-robin".into(),
            max_requests: None,
            horizon_s: None,
            speed_up: 1.0,
        }
    }
}

/// The workload names and what they mean.
pub const WORKLOADS: &str =
    "synthetic | vtc:<suite> | mooncake:<path> | azure:<path> | vtc-results:<path>";

impl WorkloadSpec {
    /// Builds the trace; `seed` drives every random draw of generated workloads.
    pub fn trace(&self, seed: u64) -> Result<Trace, EvalError> {
        let (kind, arg) = self
            .workload
            .split_once(':')
            .unwrap_or((self.workload.as_str(), ""));
        let mut t = match kind {
            "synthetic" | "shared-prefix" => {
                if !(self.rate > 0.0 && self.rate.is_finite()) {
                    return Err(EvalError::Workload("--rate must be > 0".into()));
                }
                let mut w = self.shared_prefix.clone();
                w.seed = seed;
                shared_prefix_trace(
                    &w,
                    self.rate,
                    Duration::from_secs_f64(self.duration_s.max(0.0)),
                    seed,
                )
            }
            "vtc" => VtcSuite::by_name(arg)
                .ok_or_else(|| {
                    EvalError::Workload(format!(
                        "unknown VTC suite {arg:?} (one of {})",
                        VtcSuite::names().join(", ")
                    ))
                })?
                .trace(seed),
            "mooncake" => trace::read_mooncake(Path::new(arg))?,
            "azure" => trace::read_azure(Path::new(arg))?,
            "vtc-results" => trace::read_vtc_results(Path::new(arg))?,
            _ => {
                return Err(EvalError::Workload(format!(
                    "unknown workload {:?} ({WORKLOADS})",
                    self.workload
                )));
            }
        };
        if let Some(n) = self.tenants {
            t.assign_tenants(TenantRule::parse(&self.tenant_rule, n)?);
        }
        if self.speed_up != 1.0 {
            if !(self.speed_up > 0.0 && self.speed_up.is_finite()) {
                return Err(EvalError::Workload("--speed-up must be > 0".into()));
            }
            t.speed_up(self.speed_up);
        }
        if let Some(h) = self.horizon_s {
            t.cut_at(Duration::from_secs_f64(h.max(0.0)));
        }
        if let Some(n) = self.max_requests {
            t.truncate(n);
        }
        Ok(t)
    }
}

/// Which admission stage the EPP runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdmissionChoice {
    /// The policy's `flowControl` section when its gate is on, else none.
    #[default]
    Auto,
    PassThrough,
    /// Flow control with GIE's default policies: one band, global-strict, FCFS.
    Fcfs,
    /// Flow control with VTC fairness (input ×1, output ×2) in the default band.
    Vtc,
}

impl AdmissionChoice {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "pass-through" | "none" => Self::PassThrough,
            "fcfs" => Self::Fcfs,
            "vtc" => Self::Vtc,
            _ => return None,
        })
    }

    /// The admission stage for a policy whose configuration implies `configured` flow control;
    /// `visible_when_picked`: its saturation detector counts this EPP's in-flight requests.
    pub fn make(
        self,
        configured: Option<ControllerConfig>,
        visible_when_picked: bool,
    ) -> Admission {
        let with_fairness = |f: Fairness| ControllerConfig {
            default_band: BandConfig {
                fairness: f,
                ..ControllerConfig::default().default_band
            },
            ..ControllerConfig::default()
        };
        let v = visible_when_picked;
        match (self, configured) {
            (Self::Fcfs, _) => {
                Admission::flow_control("fcfs", with_fairness(Fairness::GlobalStrict), v)
            }
            (Self::Vtc, _) => Admission::flow_control(
                "vtc",
                with_fairness(Fairness::Vtc(VtcParams::default())),
                v,
            ),
            (Self::Auto, Some(cfg)) => Admission::flow_control("flow-control", cfg, v),
            _ => Admission::legacy(),
        }
    }
}

/// What describes a run besides its policies.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub mode: String,
    pub workload: String,
    pub requests: usize,
    pub tenants: usize,
    pub duration_s: Option<f64>,
    pub pods: usize,
    pub profile: String,
    pub kv_blocks: u32,
    pub seed: u64,
    pub scrape_interval_ms: f64,
}

/// One policy's results.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    pub admission: String,
    #[serde(flatten)]
    pub report: PolicyReport,
}

/// Everything `run` and `compare` write as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub run: RunInfo,
    pub policies: Vec<PolicyResult>,
}

impl Evaluation {
    pub fn reports(&self) -> Vec<PolicyReport> {
        self.policies.iter().map(|p| p.report.clone()).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }
}

impl RunInfo {
    pub fn new(mode: &str, trace: &Trace, opts: &DesOptions) -> Self {
        Self {
            mode: mode.into(),
            workload: trace.name.clone(),
            requests: trace.requests.len(),
            tenants: trace.tenants().len(),
            duration_s: trace.duration.map(|d| d.as_secs_f64()),
            pods: opts.pods,
            profile: opts.engine.profile.clone(),
            kv_blocks: opts.engine.num_gpu_blocks,
            seed: opts.seed,
            scrape_interval_ms: opts.scrape_interval.as_secs_f64() * 1e3,
        }
    }
}

/// Runs `policy` on `trace` in virtual time.
pub fn run_des(
    trace: &Trace,
    policy: &Policy,
    opts: &DesOptions,
    admission: AdmissionChoice,
) -> (PolicyResult, DesOutcome) {
    let EppParts {
        mut router,
        saturation,
        engines,
        flow_control,
    } = policy.epp();
    let mut adm = admission.make(flow_control, saturation.visible_when_picked());
    let outcome = des::simulate(
        trace,
        Epp {
            router: router.as_mut(),
            admission: &mut adm,
            saturation: saturation.as_ref(),
            engines: engines.as_ref(),
        },
        opts,
    );
    let report = PolicyReport::build(
        &policy.label,
        &outcome.records,
        RunFacts {
            prefix_hit_rate: outcome.prefix_hit_rate(),
            ideal_prefix_hit_rate: Some(outcome.ideal_prefix_hit_rate),
            preemptions: Some(outcome.preemptions()),
            engine_busy: Some(outcome.engine_busy()),
            horizon_s: trace.duration.map(|d| d.as_secs_f64()),
        },
    );
    (
        PolicyResult {
            admission: adm.name().to_string(),
            report,
        },
        outcome,
    )
}

/// Gives policies that share a label distinct ones (`name`, `name#2`, …).
pub fn unique_labels(policies: &mut [Policy]) {
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for p in policies {
        let n = seen.entry(p.label.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            p.label = format!("{}#{n}", p.label);
        }
    }
}

/// Runs every policy on `trace` in virtual time; `progress` hears each policy's wall time.
pub fn compare_des(
    trace: &Trace,
    policies: &[Policy],
    opts: &DesOptions,
    admission: AdmissionChoice,
    mut progress: impl FnMut(&PolicyResult, &DesOutcome, Duration),
) -> Evaluation {
    let mut results = Vec::new();
    for p in policies {
        let started = Instant::now();
        let (r, outcome) = run_des(trace, p, opts, admission);
        progress(&r, &outcome, started.elapsed());
        results.push(r);
    }
    Evaluation {
        run: RunInfo::new("des", trace, opts),
        policies: results,
    }
}

/// A file name for a policy label.
fn file_stem(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `report.json`, `ttft.svg` and `service-<policy>.svg` into `dir`; returns the paths.
pub fn write_outputs(dir: &Path, eval: &Evaluation) -> Result<Vec<PathBuf>, EvalError> {
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| EvalError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok::<_, EvalError>(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| EvalError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let reports = eval.reports();
    let mut out = vec![
        write(dir.join("report.json"), eval.to_json())?,
        write(dir.join("ttft.svg"), report::ttft_cdf_svg(&reports))?,
    ];
    for r in &reports {
        out.push(write(
            dir.join(format!("service-{}.svg", file_stem(&r.policy))),
            report::service_svg(r),
        )?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        let mut s = WorkloadSpec {
            workload: "vtc:overload".into(),
            ..Default::default()
        };
        assert_eq!(s.trace(1).unwrap().requests.len(), 1620);
        s.max_requests = Some(10);
        assert_eq!(s.trace(1).unwrap().requests.len(), 10);
        s.workload = "vtc:nope".into();
        assert!(
            s.trace(1)
                .unwrap_err()
                .to_string()
                .contains("overload-multi")
        );
        s.workload = "bogus".into();
        assert!(s.trace(1).is_err());
        let syn = WorkloadSpec {
            rate: 10.0,
            duration_s: 2.0,
            tenants: Some(3),
            ..Default::default()
        };
        let t = syn.trace(7).unwrap();
        assert_eq!(t.tenants(), vec!["tenant-0", "tenant-1", "tenant-2"]);
        assert_eq!(t.duration, Some(Duration::from_secs(2)));
    }

    #[test]
    fn admission_follows_the_flow_control_gate() {
        let plain = Policy::parse("gie-default").unwrap().epp().flow_control;
        assert!(plain.is_none());
        assert_eq!(
            AdmissionChoice::Auto.make(plain, false).name(),
            "pass-through"
        );
        assert_eq!(AdmissionChoice::Fcfs.make(None, false).name(), "fcfs");
        assert_eq!(AdmissionChoice::Vtc.make(None, false).name(), "vtc");
        let gated = switchyard::config::load_str(
            "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nfeatureGates: [flowControl]\nplugins:\n- type: queue-scorer\n",
        )
        .unwrap();
        let p = Policy {
            label: "g".into(),
            kind: crate::baselines::PolicyKind::Config {
                config: Box::new(gated),
                file: None,
            },
        };
        let fc = p.epp().flow_control;
        assert!(fc.is_some());
        assert_eq!(
            AdmissionChoice::Auto.make(fc.clone(), false).name(),
            "flow-control"
        );
        assert_eq!(
            AdmissionChoice::PassThrough.make(fc, false).name(),
            "pass-through"
        );
    }

    #[test]
    fn labels_are_made_unique() {
        let mut ps = vec![
            Policy::parse("random").unwrap(),
            Policy::parse("random").unwrap(),
            Policy::parse("round-robin").unwrap(),
        ];
        unique_labels(&mut ps);
        let l: Vec<&str> = ps.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(l, vec!["random", "random#2", "round-robin"]);
        assert_eq!(file_stem("a/b c#2"), "a_b_c_2");
    }
}
