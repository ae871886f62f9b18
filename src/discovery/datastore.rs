//! Objectives (request priority by name) and model rewrites, as InferenceObjective and
//! InferenceModelRewrite give them in Kubernetes; here they may also come from a static file.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

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
    /// The object's `creationTimestamp` (Kubernetes); `None` for the static file, where the order
    /// of the list is the precedence.
    pub created: Option<SystemTime>,
}

/// GIE's precedence between rewrites (`modelrewritestore.go`): the oldest `creationTimestamp`
/// first, ties by name so the order is deterministic; rewrites without a timestamp keep their
/// given order, ahead of timestamped ones.
fn precedence(a: &ModelRewrite, b: &ModelRewrite) -> Ordering {
    match (a.created, b.created) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.name.cmp(&b.name)),
    }
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
    /// In precedence order (see [`precedence`]): the first rewrite that matches wins.
    rewrites: ArcSwap<Vec<ModelRewrite>>,
    /// Every model the rewrites name (matched or targeted): label values known to be legitimate.
    models: ArcSwap<std::collections::HashSet<String>>,
}

impl Datastore {
    pub fn set_objectives(&self, objectives: HashMap<String, Option<i32>>) {
        self.objectives.store(Arc::new(objectives));
    }

    /// Replaces the rewrites; they are kept in precedence order: oldest `created` first, those
    /// without a timestamp in the order given.
    pub fn set_rewrites(&self, mut rewrites: Vec<ModelRewrite>) {
        rewrites.sort_by(precedence);
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

    /// Applies the rewrites to `incoming` as GIE does (§4.3): a rule naming the model exactly
    /// beats a generic rule (one with no matches); among equals the rewrite first in precedence
    /// order wins, and within one rewrite its first matching rule. Targets are chosen by weight
    /// (uniformly when every weight is 0).
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
            created: None,
        }
    }

    fn at(mut r: ModelRewrite, secs: u64) -> ModelRewrite {
        r.created = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        r
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
    fn oldest_timestamp_wins_and_exact_still_beats_an_older_generic() {
        let d = Datastore::default();
        let mut rng = SchedulerRng::seed_from_u64(1);
        d.set_rewrites(vec![
            at(rw("young", &["m"], &[("young", 1)]), 300),
            at(rw("old-generic", &[], &[("generic", 1)]), 100),
            at(rw("b-tie", &["m"], &[("b", 1)]), 200),
            at(rw("a-tie", &["m"], &[("a", 1)]), 200),
        ]);
        let pick = |m: &str, rng: &mut SchedulerRng| d.rewrite(m, rng).unwrap().rewrite_name;
        assert_eq!(pick("m", &mut rng), "a-tie", "oldest exact, ties by name");
        assert_eq!(pick("other", &mut rng), "old-generic");
        d.set_rewrites(vec![
            at(rw("young", &["m"], &[("young", 1)]), 300),
            at(rw("b-tie", &["m"], &[("b", 1)]), 200),
        ]);
        assert_eq!(
            pick("m", &mut rng),
            "b-tie",
            "deleting the winner promotes the next"
        );
        assert_eq!(d.rewrite("other", &mut rng), None);
    }

    #[test]
    fn first_rule_within_a_rewrite_wins() {
        let d = Datastore::default();
        let mut two = rw("two", &["m"], &[("first", 1)]);
        two.rules.push(RewriteRule {
            exact: vec!["m".into()],
            targets: vec![RewriteTarget {
                model: "second".into(),
                weight: 1,
            }],
        });
        d.set_rewrites(vec![two]);
        let mut rng = SchedulerRng::seed_from_u64(3);
        assert_eq!(d.rewrite("m", &mut rng).unwrap().target, "first");
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
