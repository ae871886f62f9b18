//! The Kubernetes source's state machine, free of I/O: given the objects in the watch caches it
//! says which pool spec is in force, which endpoints, objectives and model rewrites follow, and
//! which objects are invalid (each reported once while it stays the same). The watch loop calls it
//! after every change with the whole cache, never with single events, so missed deletions cannot
//! leave anything behind.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;

use super::Kind;
use super::endpoints::{self, PodNote};
use super::objects::{self, PoolSpec};
use crate::discovery::ModelRewrite;
use crate::scheduling::Endpoint;

/// Something wrong with one object, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    pub name: String,
    pub message: String,
}

/// What the pool object in the cache means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolStatus {
    /// No such pool, or it is being deleted.
    Absent,
    /// The pool exists but has never had a valid spec.
    Invalid,
    /// The spec in force (the last valid one when the current object is invalid).
    Ready(PoolSpec),
}

impl PoolStatus {
    pub fn spec(&self) -> Option<&PoolSpec> {
        match self {
            PoolStatus::Ready(s) => Some(s),
            _ => None,
        }
    }
}

enum Mode {
    Pool {
        name: String,
        group: String,
        /// The last valid spec and the uid of the object it came from.
        last_valid: Option<(Option<String>, PoolSpec)>,
    },
    Standalone {
        pool_name: String,
        spec: PoolSpec,
    },
}

pub struct Reconciler {
    mode: Mode,
    namespace: String,
    problems: Reporter,
}

/// Remembers the problems reported so far, by object, so each is logged once while it lasts.
#[derive(Default)]
struct Reporter {
    reported: HashMap<(Kind, String), String>,
    new_problems: Vec<Problem>,
}

impl Reporter {
    /// Replaces the known problems of `kind` with `now`, queueing the new ones for the log.
    /// Returns how many objects of that kind are invalid.
    fn report(&mut self, kind: Kind, now: Vec<Problem>) -> usize {
        self.reported
            .retain(|(k, name), _| *k != kind || now.iter().any(|p| &p.name == name));
        let n = now.len();
        for p in now {
            let key = (p.kind, p.name.clone());
            if self.reported.get(&key) != Some(&p.message) {
                self.reported.insert(key, p.message.clone());
                self.new_problems.push(p);
            }
        }
        n
    }
}

impl Reconciler {
    /// For the InferencePool `name` of API group `group` in `namespace`.
    pub fn for_pool(name: &str, group: &str, namespace: &str) -> Self {
        Self::new(
            Mode::Pool {
                name: name.into(),
                group: group.into(),
                last_valid: None,
            },
            namespace,
        )
    }

    /// Standalone: a fixed spec, no pool object, no objectives or rewrites.
    pub fn standalone(pool_name: &str, spec: PoolSpec, namespace: &str) -> Self {
        Self::new(
            Mode::Standalone {
                pool_name: pool_name.into(),
                spec,
            },
            namespace,
        )
    }

    fn new(mode: Mode, namespace: &str) -> Self {
        Self {
            mode,
            namespace: namespace.into(),
            problems: Reporter::default(),
        }
    }

    pub fn pool_name(&self) -> &str {
        match &self.mode {
            Mode::Pool { name, .. } => name,
            Mode::Standalone { pool_name, .. } => pool_name,
        }
    }

    /// Problems found since the last call that were not reported before.
    pub fn take_problems(&mut self) -> Vec<Problem> {
        std::mem::take(&mut self.problems.new_problems)
    }

    /// The pool as the cache has it. An invalid object keeps the last valid spec of the same
    /// object in force; a missing or deleting object clears it. Standalone: always ready.
    pub fn pool<'a>(
        &mut self,
        pools: impl IntoIterator<Item = &'a DynamicObject>,
    ) -> (PoolStatus, usize) {
        let (name, last_valid) = match &mut self.mode {
            Mode::Standalone { spec, .. } => return (PoolStatus::Ready(spec.clone()), 0),
            Mode::Pool {
                name, last_valid, ..
            } => (name.clone(), last_valid),
        };
        let obj = pools
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(name.as_str()));
        let Some(obj) = obj.filter(|o| o.metadata.deletion_timestamp.is_none()) else {
            *last_valid = None;
            self.problems.report(Kind::Pool, Vec::new());
            return (PoolStatus::Absent, 0);
        };
        let uid = obj.metadata.uid.clone();
        match objects::pool_spec(obj) {
            Ok(spec) => {
                *last_valid = Some((uid, spec.clone()));
                self.problems.report(Kind::Pool, Vec::new());
                (PoolStatus::Ready(spec), 0)
            }
            Err(reason) => {
                let kept = match last_valid {
                    Some((u, spec)) if *u == uid => Some(spec.clone()),
                    _ => None,
                };
                let message = match kept {
                    Some(_) => format!("invalid, keeping the previous valid spec: {reason}"),
                    None => format!("invalid, no endpoints until it is fixed: {reason}"),
                };
                let invalid = self.problems.report(
                    Kind::Pool,
                    vec![Problem {
                        kind: Kind::Pool,
                        name,
                        message,
                    }],
                );
                match kept {
                    Some(spec) => (PoolStatus::Ready(spec), invalid),
                    None => {
                        *last_valid = None;
                        (PoolStatus::Invalid, invalid)
                    }
                }
            }
        }
    }

    /// The endpoints of the pods in the cache under `spec`.
    pub fn endpoints<'a>(
        &mut self,
        spec: &PoolSpec,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Vec<Endpoint> {
        let mut notes: Vec<PodNote> = Vec::new();
        let eps = endpoints::endpoints(spec, &self.namespace, pods, &mut notes);
        let problems = notes
            .into_iter()
            .map(|n| Problem {
                kind: Kind::Pod,
                name: n.pod,
                message: n.message,
            })
            .collect();
        self.problems.report(Kind::Pod, problems);
        eps
    }

    /// The objectives of this pool, by name (`None`: priority unset). Objects naming another
    /// pool (or group) are not ours; invalid ones are reported and skipped.
    pub fn objectives<'a>(
        &mut self,
        objs: impl IntoIterator<Item = &'a DynamicObject>,
    ) -> (HashMap<String, Option<i32>>, usize) {
        let Mode::Pool { name, group, .. } = &self.mode else {
            return (HashMap::new(), 0);
        };
        let (name, group) = (name.clone(), group.clone());
        let mut out = HashMap::new();
        let mut problems = Vec::new();
        for obj in objs {
            let Some(obj_name) = live_name(obj) else {
                continue;
            };
            match objects::objective(obj) {
                Ok(o) if o.pool_ref.names(&name, &group) => {
                    out.insert(obj_name.to_string(), o.priority);
                }
                Ok(_) => {}
                Err(reason) => problems.push(Problem {
                    kind: Kind::Objective,
                    name: obj_name.to_string(),
                    message: format!("invalid, skipped: {reason}"),
                }),
            }
        }
        let invalid = self.problems.report(Kind::Objective, problems);
        (out, invalid)
    }

    /// The model rewrites of this pool (the datastore orders them by age).
    pub fn rewrites<'a>(
        &mut self,
        objs: impl IntoIterator<Item = &'a DynamicObject>,
    ) -> (Vec<ModelRewrite>, usize) {
        let Mode::Pool { name, group, .. } = &self.mode else {
            return (Vec::new(), 0);
        };
        let (name, group) = (name.clone(), group.clone());
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for obj in objs {
            let Some(obj_name) = live_name(obj) else {
                continue;
            };
            match objects::rewrite(obj) {
                Ok(r) if r.pool_ref.names(&name, &group) => {
                    let created = obj
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(objects::system_time);
                    out.push(r.into_model_rewrite(obj_name.to_string(), created));
                }
                Ok(_) => {}
                Err(reason) => problems.push(Problem {
                    kind: Kind::Rewrite,
                    name: obj_name.to_string(),
                    message: format!("invalid, skipped: {reason}"),
                }),
            }
        }
        // Deterministic before the datastore's stable sort, whatever the cache's order.
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let invalid = self.problems.report(Kind::Rewrite, problems);
        (out, invalid)
    }
}

/// The name of an object that is not being deleted.
fn live_name(obj: &DynamicObject) -> Option<&str> {
    if obj.metadata.deletion_timestamp.is_some() {
        return None;
    }
    obj.metadata.name.as_deref().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests;
