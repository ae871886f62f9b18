//! The watch loop: one kube-runtime watcher per kind (with backoff, feeding a reflector store),
//! merged into one stream of ticks. After every batch of ticks the affected outputs are rebuilt
//! from the stores by the [`Reconciler`] and delivered into the [`Sink`]. A relist (after
//! `410 Gone` or a watch that could not resume) replaces a store wholesale at its end, so
//! deletions missed while disconnected disappear on the next rebuild.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use futures::stream::{self, BoxStream, SelectAll};
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DynamicObject, Resource};
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::client::{self, is_served};
use super::endpoints::ACTIVE_PORTS_ANNOTATION;
use super::reconcile::{PoolStatus, Reconciler};
use super::{Kind, KubeMetrics, KubernetesOptions, Target};
use crate::discovery::Sink;

/// What one watcher reported.
enum Tick {
    /// A (re)list started.
    Init(Kind),
    /// A list completed: the store now holds exactly what the server has.
    Listed(Kind),
    /// An object changed (or arrived during a list).
    Changed(Kind),
    /// The watcher failed and will retry after a backoff.
    Failed(Kind, String),
    /// The kind's CRD is not installed: nothing will come.
    NotInstalled(Kind),
}

fn tick<K>(kind: Kind, r: Result<watcher::Event<K>, watcher::Error>) -> Tick {
    match r {
        Ok(watcher::Event::Init) => Tick::Init(kind),
        Ok(watcher::Event::InitDone) => Tick::Listed(kind),
        Ok(watcher::Event::InitApply(_) | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
            Tick::Changed(kind)
        }
        Err(e) => Tick::Failed(kind, e.to_string()),
    }
}

/// A watcher with the default backoff (0.8 s doubling to 30 s, jittered) into `writer`'s store.
fn watch_kind<K>(
    kind: Kind,
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    strip: fn(&mut K),
) -> BoxStream<'static, Tick>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let events = watcher(api, config)
        .map_ok(move |e| e.modify(strip))
        .default_backoff();
    reflector::reflector(writer, events)
        .map(move |r| tick(kind, r))
        .boxed()
}

/// Only what the reconciler reads is kept of a pod: name, namespace, labels, the active-ports
/// annotation, the deletion timestamp, the IP and the conditions.
fn strip_pod(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.managed_fields = None;
    pod.metadata.owner_references = None;
    if let Some(a) = &mut pod.metadata.annotations {
        a.retain(|k, _| k == ACTIVE_PORTS_ANNOTATION);
    }
    if let Some(s) = pod.status.take() {
        pod.status = Some(PodStatus {
            pod_ip: s.pod_ip,
            conditions: s.conditions,
            ..Default::default()
        });
    }
}

fn strip_object(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    obj.metadata.annotations = None;
}

/// The watcher of an optional CRD: first asks the discovery API whether it is installed.
fn optional_kind(
    kind: Kind,
    client: kube::Client,
    namespace: String,
    resource: ApiResource,
) -> (Store<DynamicObject>, BoxStream<'static, Tick>) {
    let writer = Writer::new(resource.clone());
    let store = writer.as_reader();
    let s = stream::once(async move {
        if is_served(&client, &resource).await {
            let api = Api::namespaced_with(client, &namespace, &resource);
            watch_kind(kind, api, watcher::Config::default(), writer, strip_object)
        } else {
            stream::iter([Tick::NotInstalled(kind)]).boxed()
        }
    })
    .flatten()
    .boxed();
    (store, s)
}

#[derive(Default)]
struct KindState {
    lists: u64,
    synced: bool,
    dirty: bool,
}

struct Loop {
    rec: Reconciler,
    metrics: KubeMetrics,
    sink: Sink,
    pods: Store<Pod>,
    pool: Option<Store<DynamicObject>>,
    objectives: Option<Store<DynamicObject>>,
    rewrites: Option<Store<DynamicObject>>,
    kinds: HashMap<Kind, KindState>,
    pool_status: Option<PoolStatus>,
    /// The pool status last logged.
    logged_pool: Option<PoolStatus>,
    namespace: String,
}

pub(super) async fn run(
    client: kube::Client,
    opts: KubernetesOptions,
    metrics: KubeMetrics,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
) {
    let namespace = opts.namespace.clone();
    let mut streams: SelectAll<BoxStream<'static, Tick>> = SelectAll::new();
    let pods_writer = Writer::<Pod>::default();
    let pods = pods_writer.as_reader();
    let mut kinds = HashMap::from([(Kind::Pod, KindState::default())]);
    let (rec, pool, objectives, rewrites) = match &opts.target {
        Target::Pool { name, group } => {
            streams.push(watch_kind(
                Kind::Pod,
                Api::namespaced(client.clone(), &namespace),
                watcher::Config::default(),
                pods_writer,
                strip_pod,
            ));
            let resource = client::pool_resource(group);
            let writer = Writer::new(resource.clone());
            let pool = writer.as_reader();
            streams.push(watch_kind(
                Kind::Pool,
                Api::namespaced_with(client.clone(), &namespace, &resource),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                writer,
                strip_object,
            ));
            let (objectives, s) = optional_kind(
                Kind::Objective,
                client.clone(),
                namespace.clone(),
                client::objective_resource(),
            );
            streams.push(s);
            let (rewrites, s) = optional_kind(
                Kind::Rewrite,
                client.clone(),
                namespace.clone(),
                client::rewrite_resource(),
            );
            streams.push(s);
            for k in [Kind::Pool, Kind::Objective, Kind::Rewrite] {
                kinds.insert(k, KindState::default());
            }
            tracing::info!(
                pool = %name, %group, %namespace,
                "Kubernetes discovery: watching the InferencePool, its pods, objectives and model rewrites"
            );
            (
                Reconciler::for_pool(name, group, &namespace),
                Some(pool),
                Some(objectives),
                Some(rewrites),
            )
        }
        Target::Standalone { pool_name, spec } => {
            let selector: Vec<String> = spec
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            streams.push(watch_kind(
                Kind::Pod,
                Api::namespaced(client.clone(), &namespace),
                watcher::Config::default().labels(&selector.join(",")),
                pods_writer,
                strip_pod,
            ));
            tracing::info!(
                pool = %pool_name, %namespace, selector = %selector.join(","), ports = ?spec.target_ports,
                "Kubernetes discovery (standalone): watching the selected pods"
            );
            (
                Reconciler::standalone(pool_name, spec.clone(), &namespace),
                None,
                None,
                None,
            )
        }
    };
    let mut l = Loop {
        rec,
        metrics,
        sink,
        pods,
        pool,
        objectives,
        rewrites,
        kinds,
        pool_status: None,
        logged_pool: None,
        namespace,
    };
    loop {
        let next = tokio::select! {
            t = streams.next() => t,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(t) = next else {
            break;
        };
        l.handle(t);
        // Take every tick already waiting, then rebuild once.
        while let Some(Some(t)) = streams.next().now_or_never() {
            l.handle(t);
        }
        l.rebuild();
    }
    tracing::debug!("Kubernetes discovery stopped");
}

impl Loop {
    fn state(&mut self, kind: Kind) -> &mut KindState {
        self.kinds.entry(kind).or_default()
    }

    fn handle(&mut self, t: Tick) {
        match t {
            Tick::Init(kind) => {
                let st = self.state(kind);
                st.lists += 1;
                if st.lists > 1 {
                    self.metrics.relisted(kind);
                    tracing::info!(%kind, "relisting (the watch could not resume)");
                }
            }
            Tick::Listed(kind) => {
                let st = self.state(kind);
                st.synced = true;
                st.dirty = true;
                self.metrics.synced_now(kind);
            }
            Tick::Changed(kind) => self.state(kind).dirty = true,
            Tick::Failed(kind, error) => {
                self.metrics.restarted(kind);
                tracing::warn!(%kind, %error, "watch failed; retrying with backoff");
            }
            Tick::NotInstalled(kind) => {
                tracing::info!(
                    %kind,
                    "the {kind} CRD is not installed; not watching it (none apply)"
                );
                let st = self.state(kind);
                st.synced = true;
                st.dirty = true;
            }
        }
    }

    fn take_dirty(&mut self, kind: Kind) -> bool {
        self.kinds
            .get_mut(&kind)
            .is_some_and(|s| std::mem::take(&mut s.dirty))
    }

    fn rebuild(&mut self) {
        let pool_dirty = self.take_dirty(Kind::Pool);
        let pods_dirty = self.take_dirty(Kind::Pod);
        if pool_dirty || pods_dirty || self.pool_status.is_none() {
            let status = match &self.pool {
                Some(store) => {
                    let objs = store.state();
                    let (status, invalid) = self.rec.pool(objs.iter().map(AsRef::as_ref));
                    self.metrics.set_objects(Kind::Pool, objs.len(), invalid);
                    status
                }
                None => self.rec.pool(std::iter::empty()).0,
            };
            // Before the pool's first list an empty cache means "not known yet", not "absent".
            let pool_listed = self.kinds.get(&Kind::Pool).is_none_or(|k| k.synced);
            if pool_listed && self.logged_pool.as_ref() != Some(&status) {
                self.log_pool(&status);
                self.logged_pool = Some(status.clone());
            }
            let pods = self.pods.state();
            let eps = match status.spec() {
                Some(spec) => self.rec.endpoints(spec, pods.iter().map(AsRef::as_ref)),
                None => Vec::new(),
            };
            self.metrics.set_objects(Kind::Pod, pods.len(), 0);
            let before = self.sink.pool.snapshot().len();
            if before != eps.len() {
                tracing::info!(
                    pool = self.rec.pool_name(),
                    endpoints = eps.len(),
                    "endpoints changed"
                );
            }
            self.sink.pool.set_endpoints(eps);
            self.pool_status = Some(status);
        }
        if self.take_dirty(Kind::Objective)
            && let Some(store) = &self.objectives
        {
            let objs = store.state();
            let (objectives, invalid) = self.rec.objectives(objs.iter().map(AsRef::as_ref));
            self.metrics
                .set_objects(Kind::Objective, objs.len(), invalid);
            self.sink.datastore.set_objectives(objectives);
        }
        if self.take_dirty(Kind::Rewrite)
            && let Some(store) = &self.rewrites
        {
            let objs = store.state();
            let (rewrites, invalid) = self.rec.rewrites(objs.iter().map(AsRef::as_ref));
            self.metrics.set_objects(Kind::Rewrite, objs.len(), invalid);
            self.sink.datastore.set_rewrites(rewrites);
        }
        for p in self.rec.take_problems() {
            tracing::warn!(kind = %p.kind, name = %p.name, namespace = %self.namespace, "{}", p.message);
        }
        let synced = self
            .pool_status
            .as_ref()
            .and_then(PoolStatus::spec)
            .is_some()
            && self.kinds.values().all(|k| k.synced);
        if synced != self.sink.is_synced() {
            if synced {
                tracing::info!(
                    pool = self.rec.pool_name(),
                    endpoints = self.sink.pool.snapshot().len(),
                    "synced: serving"
                );
            } else {
                tracing::warn!(pool = self.rec.pool_name(), "not synced: NOT_SERVING");
            }
        }
        self.sink.set_synced(synced);
    }

    fn log_pool(&self, status: &PoolStatus) {
        let pool = self.rec.pool_name();
        match status {
            PoolStatus::Absent => tracing::warn!(
                %pool, namespace = %self.namespace,
                "InferencePool not found (or being deleted): no endpoints, NOT_SERVING until it exists"
            ),
            PoolStatus::Invalid => {}
            PoolStatus::Ready(spec) => tracing::info!(
                %pool, selector = ?spec.selector, ports = ?spec.target_ports,
                "InferencePool in force"
            ),
        }
    }
}
