//! Objectives (request priority by name) and model rewrites, as InferenceObjective and
//! InferenceModelRewrite give them in Kubernetes; here they may also come from a static file.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::RngExt;

use crate::scheduling::SchedulerRng;

/// One weighted target of a rewrite rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteTarget {
    pub model: String,
    pub weight: u32,
}

/// A rule: when the incoming model is one of `exact` (or always, when `exact` is empty),
/// pick one of `targets` by weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteRule {
    pub exact: Vec<String>,
    pub targets: Vec<RewriteTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRewrite {
    pub name: String,
    pub rules: Vec<RewriteRule>,
}

/// The decision of a rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteDecision {
    pub rewrite_name: String,
    pub target: String,
}

#[derive(Default)]
pub struct Datastore {
    /// Objective name → priority (`None` when unset, which means 0).
    objectives: ArcSwap<HashMap<String, Option<i32>>>,
    /// In precedence order: the first (oldest) rewrite that matches wins.
    rewrites: ArcSwap<Vec<ModelRewrite>>,
    /// Every model the rewrites name (matched or targeted): label values known to be legitimate.
    models: ArcSwap<std::collections::HashSet<String>>,
}

impl Datastore {
    pub fn set_objectives(&self, objectives: HashMap<String, Option<i32>>) {
        self.objectives.store(Arc::new(objectives));
    }

    pub fn set_rewrites(&self, rewrites: Vec<ModelRewrite>) {
        let models = rewrites
            .iter()
            .flat_map(|rw| &rw.rules)
            .flat_map(|r| r.exact.iter().chain(r.targets.iter().map(|t| &t.model)))
            .cloned()
            .collect();
        self.models.store(Arc::new(models));
        self.rewrites.store(Arc::new(rewrites));
    }

    /// Whether the configured rewrites name `model` (so it is not a client's arbitrary value).
    pub fn knows_model(&self, model: &str) -> bool {
        self.models.load().contains(model)
    }

    /// The priority of the objective named `name`; 0 when unknown or unset, as in GIE.
    pub fn priority(&self, name: Option<&str>) -> i32 {
        name.and_then(|n| self.objectives.load().get(n).copied().flatten())
            .unwrap_or(0)
    }

    /// Applies the rewrites to `incoming`: a rule naming the model exactly beats a generic rule
    /// (one with no matches); among equals the first rewrite wins. Targets are chosen by weight.
    pub fn rewrite(&self, incoming: &str, rng: &mut SchedulerRng) -> Option<RewriteDecision> {
        let rewrites = self.rewrites.load();
        let mut generic: Option<(&ModelRewrite, &RewriteRule)> = None;
        let mut exact: Option<(&ModelRewrite, &RewriteRule)> = None;
        'outer: for rw in rewrites.iter() {
            for rule in &rw.rules {
                if rule.targets.is_empty() {
                    continue;
                }
                if rule.exact.iter().any(|m| m == incoming) {
                    exact = Some((rw, rule));
                    break 'outer;
                }
                if rule.exact.is_empty() && generic.is_none() {
                    generic = Some((rw, rule));
                }
            }
        }
        let (rw, rule) = exact.or(generic)?;
        let total: u64 = rule.targets.iter().map(|t| u64::from(t.weight)).sum();
        let target = if total == 0 {
            &rule.targets[rng.random_range(0..rule.targets.len())]
        } else {
            let mut x = rng.random_range(0..total);
            rule.targets
                .iter()
                .find(|t| {
                    let w = u64::from(t.weight);
                    if x < w {
                        true
                    } else {
                        x -= w;
                        false
                    }
                })
                .expect("x < total")
        };
        Some(RewriteDecision {
            rewrite_name: rw.name.clone(),
            target: target.model.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rw(name: &str, exact: &[&str], targets: &[(&str, u32)]) -> ModelRewrite {
        ModelRewrite {
            name: name.into(),
            rules: vec![RewriteRule {
                exact: exact.iter().map(|s| s.to_string()).collect(),
                targets: targets
                    .iter()
                    .map(|(m, w)| RewriteTarget {
                        model: m.to_string(),
                        weight: *w,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn priorities() {
        let d = Datastore::default();
        d.set_objectives(HashMap::from([
            ("sql-lora".to_string(), Some(2)),
            ("sheddable".to_string(), Some(-1)),
            ("unset".to_string(), None),
        ]));
        assert_eq!(d.priority(Some("sql-lora")), 2);
        assert_eq!(d.priority(Some("sheddable")), -1);
        assert_eq!(d.priority(Some("unset")), 0);
        assert_eq!(d.priority(Some("missing")), 0);
        assert_eq!(d.priority(None), 0);
    }

    #[test]
    fn exact_beats_generic_and_first_wins() {
        let d = Datastore::default();
        d.set_rewrites(vec![
            rw("generic", &[], &[("catch-all", 1)]),
            rw("first", &["m"], &[("a", 1)]),
            rw("second", &["m"], &[("b", 1)]),
        ]);
        let mut rng = SchedulerRng::seed_from_u64(1);
        assert_eq!(
            d.rewrite("m", &mut rng),
            Some(RewriteDecision {
                rewrite_name: "first".into(),
                target: "a".into()
            })
        );
        assert_eq!(d.rewrite("other", &mut rng).unwrap().target, "catch-all");
        d.set_rewrites(vec![rw("only", &["x"], &[("y", 1)])]);
        assert_eq!(d.rewrite("m", &mut rng), None);
    }

    #[test]
    fn weighted_targets() {
        let d = Datastore::default();
        d.set_rewrites(vec![rw(
            "split",
            &["m"],
            &[("v1", 90), ("v2", 10), ("never", 0)],
        )]);
        let mut rng = SchedulerRng::seed_from_u64(9);
        let mut v1 = 0;
        for _ in 0..1000 {
            match d.rewrite("m", &mut rng).unwrap().target.as_str() {
                "v1" => v1 += 1,
                "v2" => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert!((850..950).contains(&v1), "{v1}");
    }
}
