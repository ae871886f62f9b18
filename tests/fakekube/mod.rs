//! A stateful fake Kubernetes API server on loopback, for driving the real binary's Kubernetes
//! discovery without a cluster. It serves what kube-runtime's watcher uses, as the real one does:
//!
//! - LIST with `labelSelector`, `fieldSelector` (`metadata.name`, `metadata.namespace`), `limit`
//!   and `continue` (pages can be capped to exercise pagination), answering the collection's
//!   `resourceVersion`;
//! - WATCH (`watch=true`) from a `resourceVersion`: the events after it replayed from history,
//!   then live, as newline-delimited JSON; `BOOKMARK`s when `allowWatchBookmarks=true`; a
//!   resourceVersion older than the last compaction gets `200` and one `ERROR` event with a
//!   `410 Gone` status (the watch cache's "too old resource version"); `timeoutSeconds` ends the
//!   stream; a label-selector watch sees an object leaving (entering) the selector as DELETED
//!   (ADDED);
//! - discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`) listing the installed CRDs;
//!   uninstalling a CRD deletes its objects (DELETED events), closes its watches and 404s after;
//! - bearer-token authentication (401 otherwise);
//! - on demand: dropped watch connections (reset mid-stream), an unavailable server (503), a
//!   compaction, and a log of the requests made.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod objects;
mod selector;

pub use objects::{PodSpec, objective, pool, rewrite};
use selector::{FieldReq, Selector, fields_match, parse_fields};

pub const TOKEN: &str = "test-token-5f0c";

/// A resource type: group ("" for core), version, plural.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvr {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

impl Gvr {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const PODS: Gvr = Gvr {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
};
pub const POOLS: Gvr = Gvr {
    group: "inference.networking.k8s.io",
    version: "v1",
    plural: "inferencepools",
    kind: "InferencePool",
};
pub const OBJECTIVES: Gvr = Gvr {
    group: "inference.networking.x-k8s.io",
    version: "v1alpha2",
    plural: "inferenceobjectives",
    kind: "InferenceObjective",
};
pub const REWRITES: Gvr = Gvr {
    group: "inference.networking.x-k8s.io",
    version: "v1alpha2",
    plural: "inferencemodelrewrites",
    kind: "InferenceModelRewrite",
};

#[derive(Clone)]
struct Event {
    rv: u64,
    kind: &'static str,
    object: Value,
    /// For MODIFIED: the object before, to decide what a selector watch sees.
    prev: Option<Value>,
}

enum Frame {
    Line(Bytes),
    /// Reset the connection mid-stream.
    Drop,
    /// End the stream cleanly.
    End,
}

struct Watcher {
    namespace: Option<String>,
    labels: Selector,
    fields: Vec<FieldReq>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Frame>,
}

struct Collection {
    installed: bool,
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Event>,
    watchers: Vec<Watcher>,
}

struct Inner {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    collections: BTreeMap<Gvr, Collection>,
    unavailable: bool,
    max_page: Option<usize>,
    requests: Vec<String>,
    next_uid: u64,
}

#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

// === requests ===

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn ok_json(v: Value) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// What a watcher with these selectors sees of `ev`, if anything.
fn visible(w: &Watcher, ev: &Event) -> Option<(&'static str, Value)> {
    let in_ns = |o: &Value| {
        w.namespace
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
    };
    let sel = |o: &Value| in_ns(o) && w.labels.matches(o) && fields_match(&w.fields, o);
    let now = sel(&ev.object);
    match (ev.kind, &ev.prev) {
        ("MODIFIED", Some(prev)) => match (sel(prev), now) {
            (true, true) => Some(("MODIFIED", ev.object.clone())),
            (false, true) => Some(("ADDED", ev.object.clone())),
            (true, false) => Some(("DELETED", ev.object.clone())),
            (false, false) => None,
        },
        (kind, _) => now.then(|| (kind, ev.object.clone())),
    }
}

pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    rfc3339(secs)
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (days-to-civil, proleptic Gregorian).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl FakeApi {
    /// Starts on `127.0.0.1:0` with the core pods resource and the InferencePool,
    /// InferenceObjective and InferenceModelRewrite CRDs installed.
    pub async fn start() -> FakeApi {
        let mut collections = BTreeMap::new();
        for gvr in [PODS, POOLS, OBJECTIVES, REWRITES] {
            collections.insert(
                gvr,
                Collection {
                    installed: true,
                    objects: BTreeMap::new(),
                    history: Vec::new(),
                    watchers: Vec::new(),
                },
            );
        }
        let inner = Arc::new(Mutex::new(Inner {
            rv: 1000,
            compacted: 0,
            collections,
            unavailable: false,
            max_page: None,
            requests: Vec::new(),
            next_uid: 1,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
        // Bookmarks every 300 ms to the watchers that asked for them.
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = stop_rx.wait_for(|s| *s) => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let mut g = inner.lock();
                let rv = g.rv;
                for (gvr, c) in g.collections.iter_mut() {
                    let obj = json!({"kind": gvr.kind, "apiVersion": gvr.api_version(),
                                     "metadata": {"resourceVersion": rv.to_string()}});
                    c.watchers.retain(|w| {
                        !w.bookmarks || w.tx.send(Frame::Line(event_line("BOOKMARK", &obj))).is_ok()
                    });
                }
            }
        });
        FakeApi {
            addr,
            inner,
            stop: Arc::new(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (plain http, bearer token) into `dir`.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
users:
- name: fake
  user:
    token: {TOKEN}
",
                self.url()
            ),
        )
        .unwrap();
        path
    }

    // === state changes ===

    fn emit(c: &mut Collection, ev: Event) {
        c.watchers.retain(|w| match visible(w, &ev) {
            Some((kind, obj)) => w.tx.send(Frame::Line(event_line(kind, &obj))).is_ok(),
            None => !w.tx.is_closed(),
        });
        c.history.push(ev);
    }

    /// Creates or replaces an object (`metadata.namespace` and `metadata.name` required). The
    /// server sets `resourceVersion`, and on creation `uid` and `creationTimestamp` (unless the
    /// object carries one). Returns the stored object.
    pub fn apply(&self, gvr: &Gvr, mut obj: Value) -> Value {
        let mut g = self.inner.lock();
        g.rv += 1;
        let rv = g.rv;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .expect("metadata.namespace")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let uid = g.next_uid;
        g.next_uid += 1;
        let c = g.collections.get_mut(gvr).expect("known resource");
        assert!(c.installed, "{} is not installed", gvr.kind);
        let prev = c.objects.get(&(ns.clone(), name.clone())).cloned();
        {
            let m = obj["metadata"].as_object_mut().unwrap();
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            match &prev {
                Some(p) => {
                    m.insert("uid".into(), p["metadata"]["uid"].clone());
                    m.entry("creationTimestamp")
                        .or_insert(p["metadata"]["creationTimestamp"].clone());
                }
                None => {
                    m.insert("uid".into(), json!(format!("uid-{uid}")));
                    m.entry("creationTimestamp").or_insert(json!(now_rfc3339()));
                }
            }
        }
        let o = obj.as_object_mut().unwrap();
        o.insert("apiVersion".into(), json!(gvr.api_version()));
        o.insert("kind".into(), json!(gvr.kind));
        c.objects.insert((ns, name), obj.clone());
        let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        Self::emit(
            c,
            Event {
                rv,
                kind,
                object: obj.clone(),
                prev,
            },
        );
        obj
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, gvr: &Gvr, ns: &str, name: &str) -> bool {
        let mut g = self.inner.lock();
        g.rv += 1;
        let rv = g.rv;
        let c = g.collections.get_mut(gvr).expect("known resource");
        let Some(mut obj) = c.objects.remove(&(ns.to_string(), name.to_string())) else {
            return false;
        };
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        Self::emit(
            c,
            Event {
                rv,
                kind: "DELETED",
                object: obj,
                prev: None,
            },
        );
        true
    }

    pub fn get(&self, gvr: &Gvr, ns: &str, name: &str) -> Option<Value> {
        let g = self.inner.lock();
        g.collections[gvr]
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Installs a CRD (its group version appears in discovery; list and watch work).
    pub fn install(&self, gvr: &Gvr) {
        let mut g = self.inner.lock();
        // Resource versions from before do not carry over.
        g.compacted = g.rv;
        g.collections.get_mut(gvr).unwrap().installed = true;
    }

    /// Uninstalls a CRD as the API server does: its objects are deleted (watchers see DELETED),
    /// its watches end, and it 404s from then on.
    pub fn uninstall(&self, gvr: &Gvr) {
        let names: Vec<(String, String)> = self.inner.lock().collections[gvr]
            .objects
            .keys()
            .cloned()
            .collect();
        for (ns, name) in names {
            self.delete(gvr, &ns, &name);
        }
        let mut g = self.inner.lock();
        let c = g.collections.get_mut(gvr).unwrap();
        c.installed = false;
        c.history.clear();
        for w in c.watchers.drain(..) {
            let _ = w.tx.send(Frame::End);
        }
    }

    /// Forgets the event history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut g = self.inner.lock();
        g.compacted = g.rv;
        for c in g.collections.values_mut() {
            c.history.clear();
        }
    }

    /// Resets every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        let mut g = self.inner.lock();
        for c in g.collections.values_mut() {
            for w in c.watchers.drain(..) {
                let _ = w.tx.send(Frame::Drop);
            }
        }
    }

    /// While unavailable every request gets 503 and open watches are dropped.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.lock().unavailable = unavailable;
        if unavailable {
            self.drop_watches();
        }
    }

    /// Caps the items per list page (the server may return fewer than `limit`, with `continue`).
    pub fn set_max_page(&self, n: Option<usize>) {
        self.inner.lock().max_page = n;
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().requests.clone()
    }

    pub fn open_watches(&self, gvr: &Gvr) -> usize {
        self.inner.lock().collections[gvr]
            .watchers
            .iter()
            .filter(|w| !w.tx.is_closed())
            .count()
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.drop_watches();
    }
}

// === HTTP ===

enum Route {
    CoreVersions,
    CoreResources,
    Groups,
    GroupResources(String, String),
    Collection(Gvr, Option<String>, Option<String>),
    NotFound,
}

fn route(path: &str, inner: &Inner) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let find = |group: &str, version: &str, plural: &str| {
        inner
            .collections
            .keys()
            .find(|g| g.group == group && g.version == version && g.plural == plural)
            .cloned()
    };
    let coll = |gvr: Option<Gvr>, ns: Option<&str>, name: Option<&str>| match gvr {
        Some(g) => Route::Collection(g, ns.map(Into::into), name.map(Into::into)),
        None => Route::NotFound,
    };
    match segs.as_slice() {
        ["api"] => Route::CoreVersions,
        ["api", "v1"] => Route::CoreResources,
        ["apis"] => Route::Groups,
        ["apis", g, v] => Route::GroupResources(g.to_string(), v.to_string()),
        ["api", "v1", "namespaces", ns, plural] => coll(find("", "v1", plural), Some(ns), None),
        ["api", "v1", "namespaces", ns, plural, name] => {
            coll(find("", "v1", plural), Some(ns), Some(name))
        }
        ["api", "v1", plural] => coll(find("", "v1", plural), None, None),
        ["apis", g, v, "namespaces", ns, plural] => coll(find(g, v, plural), Some(ns), None),
        ["apis", g, v, "namespaces", ns, plural, name] => {
            coll(find(g, v, plural), Some(ns), Some(name))
        }
        ["apis", g, v, plural] => coll(find(g, v, plural), None, None),
        _ => Route::NotFound,
    }
}

fn resource_entry(gvr: &Gvr) -> Value {
    json!({
        "name": gvr.plural,
        "singularName": gvr.kind.to_lowercase(),
        "namespaced": true,
        "kind": gvr.kind,
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
    })
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut g = inner.lock();
    if g.requests.len() < 10_000 {
        g.requests.push(format!("{method} {uri}"));
    }
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if g.unavailable {
        return status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    if method != Method::GET {
        return status(405, "MethodNotAllowed", "this fake serves GET only");
    }
    let q = query(&uri);
    match route(uri.path(), &g) {
        Route::CoreVersions => ok_json(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        Route::CoreResources => ok_json(json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "v1", "resources": [resource_entry(&PODS)]})),
        Route::Groups => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (gvr, c) in &g.collections {
                if c.installed && !gvr.group.is_empty() {
                    let vs = groups.entry(gvr.group).or_default();
                    if !vs.contains(&gvr.version) {
                        vs.push(gvr.version);
                    }
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(name, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                        .collect();
                    json!({"name": name, "versions": versions.clone(), "preferredVersion": versions[0]})
                })
                .collect();
            ok_json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        Route::GroupResources(group, version) => {
            let resources: Vec<Value> = g
                .collections
                .iter()
                .filter(|(gvr, c)| c.installed && gvr.group == group && gvr.version == version)
                .map(|(gvr, _)| resource_entry(gvr))
                .collect();
            if resources.is_empty() {
                // The real server answers a bare 404 page here.
                return Response::builder()
                    .status(404)
                    .body(Body::from("404 page not found"))
                    .unwrap();
            }
            ok_json(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": format!("{group}/{version}"), "resources": resources}))
        }
        Route::NotFound => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
        Route::Collection(gvr, ns, name) => {
            if !g.collections[&gvr].installed {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            if let Some(name) = name {
                let Some(ns) = ns else {
                    return status(404, "NotFound", "not found");
                };
                return match g.collections[&gvr].objects.get(&(ns, name.clone())) {
                    Some(o) => ok_json(o.clone()),
                    None => status(
                        404,
                        "NotFound",
                        &format!("{} \"{name}\" not found", gvr.plural),
                    ),
                };
            }
            let labels = match Selector::parse(q.get("labelSelector").map_or("", String::as_str)) {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", &e),
            };
            let fields = match parse_fields(q.get("fieldSelector").map_or("", String::as_str)) {
                Ok(f) => f,
                Err(e) => return status(400, "BadRequest", &e),
            };
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                watch(&mut g, gvr, ns, labels, fields, &q)
            } else {
                list(&g, &gvr, ns.as_deref(), &labels, &fields, &q)
            }
        }
    }
}

fn list(
    g: &Inner,
    gvr: &Gvr,
    ns: Option<&str>,
    labels: &Selector,
    fields: &[FieldReq],
    q: &HashMap<String, String>,
) -> Response {
    let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let Some((rv, key)) = token.split_once('|') else {
                return status(400, "BadRequest", "invalid continue token");
            };
            let rv: u64 = rv.parse().unwrap_or(0);
            if rv < g.compacted {
                return status(410, "Expired", "The provided continue parameter is too old");
            }
            (rv, Some(key.to_string()))
        }
        None => (g.rv, None),
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let limit = match (limit, g.max_page) {
        (Some(l), Some(m)) => Some(l.min(m)),
        (l, m) => l.or(m),
    };
    let mut items = Vec::new();
    let mut more = None;
    for ((ons, oname), obj) in &g.collections[gvr].objects {
        let key = format!("{ons}/{oname}");
        if after.as_ref().is_some_and(|a| key <= *a) {
            continue;
        }
        if ns.is_some_and(|n| n != ons) || !labels.matches(obj) || !fields_match(fields, obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() == l) {
            more = Some(format!("{list_rv}|{}", items_last_key(&items)));
            break;
        }
        let mut item = obj.clone();
        if gvr.group.is_empty() {
            // Built-in types come without apiVersion/kind inside a list.
            let o = item.as_object_mut().unwrap();
            o.remove("apiVersion");
            o.remove("kind");
        }
        items.push((key, item));
    }
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(c) = more {
        meta["continue"] = json!(c);
    }
    ok_json(json!({
        "kind": format!("{}List", gvr.kind),
        "apiVersion": gvr.api_version(),
        "metadata": meta,
        "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    }))
}

fn items_last_key(items: &[(String, Value)]) -> String {
    items.last().map(|(k, _)| k.clone()).unwrap_or_default()
}

fn watch(
    g: &mut Inner,
    gvr: Gvr,
    ns: Option<String>,
    labels: Selector,
    fields: Vec<FieldReq>,
    q: &HashMap<String, String>,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let w = Watcher {
        namespace: ns,
        labels,
        fields,
        bookmarks: q.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
        tx,
    };
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let compacted = g.compacted;
    let c = g.collections.get_mut(&gvr).unwrap();
    if rv.is_empty() || rv == "0" {
        // From "any": the current objects as ADDED, then live.
        for obj in c.objects.values() {
            let ev = Event {
                rv: 0,
                kind: "ADDED",
                object: obj.clone(),
                prev: None,
            };
            if let Some((kind, o)) = visible(&w, &ev) {
                let _ = w.tx.send(Frame::Line(event_line(kind, &o)));
            }
        }
        c.watchers.push(w);
    } else {
        let from: u64 = match rv.parse() {
            Ok(v) => v,
            Err(_) => return status(400, "BadRequest", "invalid resourceVersion"),
        };
        if from < compacted {
            let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {from} ({compacted})")});
            let _ = w.tx.send(Frame::Line(event_line("ERROR", &gone)));
            let _ = w.tx.send(Frame::End);
        } else {
            for ev in c.history.iter().filter(|e| e.rv > from) {
                if let Some((kind, o)) = visible(&w, ev) {
                    let _ = w.tx.send(Frame::Line(event_line(kind, &o)));
                }
            }
            c.watchers.push(w);
        }
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let body = futures::stream::unfold((rx, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        let frame = tokio::time::timeout_at(deadline, rx.recv()).await;
        match frame {
            Ok(Some(Frame::Line(b))) => Some((Ok::<Bytes, std::io::Error>(b), (rx, false))),
            Ok(Some(Frame::Drop)) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "watch dropped by the test",
                )),
                (rx, true),
            )),
            Ok(Some(Frame::End)) | Ok(None) | Err(_) => None,
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(body))
        .unwrap()
}
