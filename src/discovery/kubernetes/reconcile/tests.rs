//! The reconciler fed by hand: objects as the API server would send them, through a reflector
//! store where a relist matters.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use rand::SeedableRng;
use serde_json::{Value, json};

use super::*;
use crate::discovery::Datastore;
use crate::scheduling::SchedulerRng;

fn obj(name: &str, uid: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
    }))
    .unwrap()
}

fn aged(mut o: DynamicObject, ts: &str) -> DynamicObject {
    o.metadata.creation_timestamp = Some(serde_json::from_value(json!(ts)).unwrap());
    o
}

fn pool(ports: &[u16]) -> Value {
    json!({
        "selector": {"matchLabels": {"app": "vllm"}},
        "targetPorts": ports.iter().map(|p| json!({"number": p})).collect::<Vec<_>>(),
    })
}

fn pod(name: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "vllm"}, "resourceVersion": "1"},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap()
}

fn names(eps: &[Endpoint]) -> Vec<String> {
    eps.iter().map(|e| e.name.clone()).collect()
}

#[test]
fn pool_absent_valid_invalid_deleted_recreated() {
    let mut r = Reconciler::for_pool("p", objects::DEFAULT_POOL_GROUP, "ns");
    assert_eq!(r.pool([]).0, PoolStatus::Absent);

    let v1 = obj("p", "uid-1", pool(&[8000]));
    let (st, invalid) = r.pool([&v1]);
    assert_eq!(st.spec().unwrap().target_ports, vec![8000]);
    assert_eq!(invalid, 0);

    // 0 ports: rejected, the previous spec stays in force, reported once.
    let bad = obj("p", "uid-1", pool(&[]));
    let (st, invalid) = r.pool([&bad]);
    assert_eq!(st.spec().unwrap().target_ports, vec![8000]);
    assert_eq!(invalid, 1);
    let problems = r.take_problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].kind, Kind::Pool);
    assert_eq!(problems[0].name, "p");
    assert_eq!(
        problems[0].message,
        "invalid, keeping the previous valid spec: spec.targetPorts: must list 1 to 8 ports, got 0"
    );
    r.pool([&bad]);
    assert!(r.take_problems().is_empty(), "reported once");

    // Another pool's object (a server ignoring the field selector) is not ours.
    let other = obj("q", "uid-9", pool(&[9000]));
    assert_eq!(r.pool([&other]).0, PoolStatus::Absent);

    // Recreated (new uid) but invalid: nothing to keep.
    let bad2 = obj("p", "uid-2", pool(&[1, 2, 3, 4, 5, 6, 7, 8, 9]));
    assert_eq!(r.pool([&bad2]).0, PoolStatus::Invalid);
    assert_eq!(r.take_problems().len(), 1);

    // Fixed: in force again.
    let good2 = obj("p", "uid-2", pool(&[8000, 8001]));
    assert_eq!(
        r.pool([&good2]).0.spec().unwrap().target_ports,
        vec![8000, 8001]
    );

    // Being deleted counts as absent.
    let mut deleting = good2.clone();
    deleting.metadata.deletion_timestamp = v1.metadata.creation_timestamp.clone();
    assert_eq!(r.pool([&deleting]).0, PoolStatus::Absent);
}

#[test]
fn a_relist_drops_pods_deleted_while_disconnected() {
    let mut r = Reconciler::for_pool("p", objects::DEFAULT_POOL_GROUP, "ns");
    let p = obj("p", "u", pool(&[8000]));
    let spec = r.pool([&p]).0.spec().unwrap().clone();
    let mut writer: Writer<Pod> = Writer::default();
    let store = writer.as_reader();
    for e in [
        Event::Init,
        Event::InitApply(pod("a", "10.0.0.1")),
        Event::InitApply(pod("b", "10.0.0.2")),
        Event::InitDone,
    ] {
        writer.apply_watcher_event(&e);
    }
    let eps = r.endpoints(&spec, store.state().iter().map(AsRef::as_ref));
    assert_eq!(names(&eps), ["a-rank-0", "b-rank-0"]);
    // b was deleted while the watch was down; the relist does not mention it, and no Delete
    // event ever comes.
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitApply(pod("a", "10.0.0.1")));
    writer.apply_watcher_event(&Event::InitApply(pod("c", "10.0.0.3")));
    let during = r.endpoints(&spec, store.state().iter().map(AsRef::as_ref));
    assert_eq!(
        names(&during),
        ["a-rank-0", "b-rank-0"],
        "the old view holds until the list completes"
    );
    writer.apply_watcher_event(&Event::InitDone);
    let eps = r.endpoints(&spec, store.state().iter().map(AsRef::as_ref));
    assert_eq!(names(&eps), ["a-rank-0", "c-rank-0"]);
}

#[test]
fn pod_problems_are_reported_once_per_change() {
    let mut r = Reconciler::standalone(
        "epp",
        objects::PoolSpec {
            selector: BTreeMap::from([("app".into(), "vllm".into())]),
            target_ports: vec![8000],
            app_protocol: objects::AppProtocol::Http,
        },
        "ns",
    );
    let spec = r.pool([]).0.spec().unwrap().clone();
    let mut no_ip = pod("n", "10.0.0.1");
    no_ip.status.as_mut().unwrap().pod_ip = None;
    for _ in 0..3 {
        assert!(r.endpoints(&spec, [&no_ip]).is_empty());
    }
    let problems = r.take_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].message,
        "ready but has no status.podIP yet; skipped"
    );
    // It gets an IP, then loses it again: a new problem.
    assert_eq!(r.endpoints(&spec, [&pod("n", "10.0.0.1")]).len(), 1);
    r.endpoints(&spec, [&no_ip]);
    assert_eq!(r.take_problems().len(), 1);
}

#[test]
fn objectives_of_this_pool_only_and_garbage_skipped() {
    let mut r = Reconciler::for_pool("p", objects::DEFAULT_POOL_GROUP, "ns");
    let objs = [
        obj(
            "sheddable",
            "1",
            json!({"poolRef": {"name": "p"}, "priority": -1}),
        ),
        obj(
            "critical",
            "2",
            json!({"poolRef": {"name": "p", "group": "inference.networking.k8s.io"}, "priority": 10}),
        ),
        obj("unset", "3", json!({"poolRef": {"name": "p"}})),
        obj(
            "other-pool",
            "4",
            json!({"poolRef": {"name": "q"}, "priority": -5}),
        ),
        obj(
            "other-group",
            "5",
            json!({"poolRef": {"name": "p", "group": "example.com"}, "priority": -5}),
        ),
        obj(
            "absurd",
            "6",
            json!({"poolRef": {"name": "p"}, "priority": 1e40}),
        ),
        obj("no-spec-pool", "7", json!({"priority": 3})),
        obj("garbage", "8", json!("just a string")),
    ];
    let (o, invalid) = r.objectives(objs.iter());
    assert_eq!(
        o,
        HashMap::from([
            ("sheddable".to_string(), Some(-1)),
            ("critical".to_string(), Some(10)),
            ("unset".to_string(), None),
        ])
    );
    assert_eq!(invalid, 3);
    let mut bad: Vec<String> = r
        .take_problems()
        .into_iter()
        .map(|p| format!("{} {}: {}", p.kind, p.name, p.message))
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        [
            "InferenceObjective absurd: invalid, skipped: spec.priority: must be a 32-bit integer, got 1e+40",
            "InferenceObjective garbage: invalid, skipped: spec: must be an object, got a string",
            "InferenceObjective no-spec-pool: invalid, skipped: spec.poolRef: missing",
        ]
    );
    let d = Datastore::default();
    d.set_objectives(o);
    assert_eq!(d.priority(Some("sheddable")), -1);
    assert_eq!(d.priority(Some("other-pool")), 0);
}

#[test]
fn rewrites_follow_creation_time_and_deletion() {
    let mut r = Reconciler::for_pool("p", objects::DEFAULT_POOL_GROUP, "ns");
    let rule = |target: &str| {
        json!({"poolRef": {"name": "p"}, "rules": [
            {"matches": [{"model": {"type": "Exact", "value": "m"}}], "targets": [{"modelRewrite": target}]}
        ]})
    };
    let older = aged(
        obj("z-older", "1", rule("from-older")),
        "2026-01-01T00:00:00Z",
    );
    let newer = aged(
        obj("a-newer", "2", rule("from-newer")),
        "2026-02-01T00:00:00Z",
    );
    let generic = aged(
        obj(
            "generic",
            "3",
            json!({"poolRef": {"name": "p"}, "rules": [{"targets": [{"modelRewrite": "catch-all"}]}]}),
        ),
        "2025-01-01T00:00:00Z",
    );
    let empty = obj("empty", "4", json!({"poolRef": {"name": "p"}, "rules": []}));
    let other = obj(
        "other",
        "5",
        json!({"poolRef": {"name": "q"}, "rules": [{"targets": [{"modelRewrite": "x"}]}]}),
    );
    let d = Datastore::default();
    let mut rng = SchedulerRng::seed_from_u64(7);
    let (rw, invalid) = r.rewrites([&newer, &older, &generic, &empty, &other]);
    assert_eq!(invalid, 1);
    assert_eq!(rw.len(), 3);
    d.set_rewrites(rw);
    assert_eq!(d.rewrite("m", &mut rng).unwrap().target, "from-older");
    assert_eq!(d.rewrite("n", &mut rng).unwrap().target, "catch-all");
    // The oldest is deleted: the next oldest takes over.
    d.set_rewrites(r.rewrites([&newer, &generic]).0);
    assert_eq!(d.rewrite("m", &mut rng).unwrap().target, "from-newer");
    d.set_rewrites(r.rewrites([] as [&DynamicObject; 0]).0);
    assert_eq!(d.rewrite("m", &mut rng), None);
    let problems = r.take_problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].message,
        "invalid, skipped: spec.rules: must have at least one rule"
    );
}

#[test]
fn standalone_has_no_objectives_or_rewrites() {
    let mut r = Reconciler::standalone(
        "epp",
        objects::PoolSpec {
            selector: BTreeMap::from([("app".into(), "vllm".into())]),
            target_ports: vec![8000],
            app_protocol: objects::AppProtocol::Http,
        },
        "ns",
    );
    let o = obj(
        "x",
        "1",
        json!({"poolRef": {"name": "epp"}, "priority": -1}),
    );
    assert!(r.objectives([&o]).0.is_empty());
    assert!(r.rewrites([&o]).0.is_empty());
}
