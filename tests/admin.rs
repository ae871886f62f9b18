//! The admin API against the real binary (and, for seeded random choices, the in-process
//! server): `Explain` picks what the request path picks and changes nothing, `GetState` follows
//! scrapes, reloads and endpoint changes, `WatchState` delivers a change, and
//! `--emit-endpoint-scores` carries the same totals `Explain` reports.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::*;
use common::*;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use rand::SeedableRng;
use switchyard::admin::proto::admin_client::AdminClient;
use switchyard::admin::proto::scrape_health::Status as ScrapeStatus;
use switchyard::admin::proto::{
    ExplainRequest, ExplainResponse, GetStateRequest, Header, State, WatchStateRequest,
    explain_request::Input,
};
use switchyard::scheduling::{Request, SchedulerRng};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const HEADER: &str =
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n";

async fn admin(addr: SocketAddr) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn get_state(c: &mut AdminClient<Channel>) -> State {
    c.get_state(GetStateRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// Polls GetState until `cond` holds; panics with `what` and the last state after 15 s.
async fn state_where(
    c: &mut AdminClient<Channel>,
    what: &str,
    cond: impl Fn(&State) -> bool,
) -> State {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = get_state(c).await;
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scrape_status(s: &State, name: &str) -> Option<ScrapeStatus> {
    let e = s.endpoints.iter().find(|e| e.name == name)?;
    ScrapeStatus::try_from(e.scrape.as_ref()?.status).ok()
}

/// What a request or an explain may not change: everything in the state but the metrics' ages
/// and the time of the answer.
fn without_ages(mut s: State) -> State {
    s.at_unix_ms = 0;
    for e in &mut s.endpoints {
        if let Some(m) = &mut e.metrics {
            m.age_ms = None;
        }
        if let Some(h) = &mut e.scrape {
            h.last_success_age_ms = None;
        }
    }
    s
}

/// `/metrics` without the data layer's families, which move with every scrape.
fn request_side_metrics(text: &str) -> Vec<String> {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or(text);
    body.lines()
        .filter(|l| {
            // The pool gauges and the process's own CPU and memory move by themselves.
            !l.contains("inference_pool_")
                && !l.contains("inference_extension_model_server_")
                && !l.contains("process_")
                // Explain runs the real (timed) plugins: their durations count it. Follow-up:
                // an untimed plugin set for Explain.
                && !l.contains("inference_extension_plugin_duration_seconds")
        })
        .map(str::to_string)
        .collect()
}

/// Sends one completion through ext_proc and returns the headers Switchyard set. The stream is
/// dropped unanswered, which releases what the request held.
async fn route(addr: SocketAddr, body: &[u8], headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut s = Stream::open(&mut client).await;
    let mut hs = vec![(":path", "/v1/completions")];
    hs.extend_from_slice(headers);
    s.send(headers_msg(&hs, false)).await;
    s.send(body_msg(body, true)).await;
    let r = tokio::time::timeout(TIMEOUT, s.recv())
        .await
        .expect("routed in time")
        .expect("a response");
    set_headers(&r)
}

fn explain_request(prompt: &str, tenant: &str) -> ExplainRequest {
    ExplainRequest {
        input: Some(Input::Prompt(prompt.into())),
        model: "m".into(),
        headers: vec![Header {
            name: "x-gateway-inference-fairness-id".into(),
            value: tenant.into(),
        }],
        seed: Some(1),
        ..Default::default()
    }
}

/// The primary profile's total per endpoint address.
fn totals(r: &ExplainResponse) -> BTreeMap<String, f64> {
    let live = r.live.as_ref().unwrap();
    let p = live.profiles.iter().find(|p| p.primary).unwrap();
    p.endpoints
        .iter()
        .filter_map(|e| Some((e.address.clone(), e.total?)))
        .collect()
}

#[tokio::test]
async fn explain_agrees_with_the_real_pick_and_changes_no_state() {
    // Idle queues (the VTC detector is not saturated), distinct KV use: distinct totals.
    let mut pods = Vec::new();
    for (i, kv) in [0.7, 0.1, 0.4].into_iter().enumerate() {
        pods.push(metrics_server(&format!("127.0.0.{}", 61 + i), vllm_page(0, kv)).await);
    }
    let list = pods
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let vtc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/vtc.yaml")).unwrap();
    let p = Proc::start(&[
        "--static-endpoints",
        &list,
        "--secure-serving=false",
        "--config-text",
        &vtc,
        "--emit-endpoint-scores",
    ]);
    let mut c = admin(p.admin.expect("admin listening")).await;
    let names: Vec<String> = pods.iter().map(ToString::to_string).collect();
    state_where(&mut c, "every endpoint scraped", |s| {
        names
            .iter()
            .all(|n| scrape_status(s, n) == Some(ScrapeStatus::Ok))
    })
    .await;

    // A first request teaches the prefix index and charges the tenant.
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(8);
    let body = serde_json::to_vec(&serde_json::json!({"model": "m", "prompt": prompt})).unwrap();
    let tenant = [("x-gateway-inference-fairness-id", "tenant-a")];
    let first = route(p.grpc, &body, &tenant).await;
    let first_pick = header(&first, "x-gateway-destination-endpoint")
        .unwrap()
        .to_string();
    assert_eq!(
        first_pick,
        pods[1].to_string(),
        "the emptiest KV cache wins"
    );

    let settled = state_where(&mut c, "the first request released", |s| {
        s.endpoints
            .iter()
            .all(|e| e.inflight.is_some_and(|l| l.requests == 0))
            && s.flow_control
                .as_ref()
                .is_some_and(|f| !f.vtc_counters.is_empty())
    })
    .await;
    let before_state = without_ages(settled);
    let before_metrics = request_side_metrics(&p.metrics_text().await);
    assert!(before_state.prefix_index.unwrap().entries > 0);

    let e = c
        .explain(explain_request(&prompt, "tenant-a"))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(without_ages(get_state(&mut c).await), before_state);
    assert_eq!(
        request_side_metrics(&p.metrics_text().await),
        before_metrics
    );

    // The explanation: admitted by flow control, the prefix found where the first request went.
    let live = e.live.as_ref().unwrap();
    let a = live.admission.as_ref().unwrap();
    assert_eq!(a.mode, "flow-control");
    assert_eq!(
        a.decision,
        switchyard::admin::proto::admission::Decision::Admit as i32
    );
    let facts = live
        .endpoints
        .iter()
        .find(|f| f.address == first_pick)
        .unwrap();
    let prefix = live.prefix.as_ref().unwrap();
    assert!(prefix.total_blocks > 0);
    assert_eq!(facts.prefix_matched_blocks, prefix.total_blocks);
    let profile = &live.profiles[0];
    let best = &profile.endpoints[0];
    assert_eq!(best.pick_rank, 1);
    let prefix_score = best
        .scores
        .iter()
        .find(|s| s.scorer == "prefix-cache-scorer")
        .unwrap();
    assert_eq!((prefix_score.raw, prefix_score.weighted), (1.0, 3.0));
    let sum: f64 = best.scores.iter().map(|s| s.weighted).sum();
    assert_eq!(Some(sum), best.total);

    // The real request, on the same pool: the same pick, and the scores header carries the
    // totals Explain reported.
    let second = route(p.grpc, &body, &tenant).await;
    let pick = header(&second, "x-gateway-destination-endpoint").unwrap();
    assert_eq!(
        live.outcome.as_ref().unwrap().targets,
        vec![pick.to_string()]
    );
    let scores: BTreeMap<String, f64> = header(&second, "x-gateway-destination-endpoint-scores")
        .expect("--emit-endpoint-scores")
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(scores, totals(&e));
}

#[tokio::test]
async fn get_state_follows_scrapes_reloads_and_endpoint_changes_and_watch_state_delivers_them() {
    let dir = std::env::temp_dir().join(format!("switchyard-admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let up = metrics_server("127.0.0.71", vllm_page(3, 0.25)).await;
    let other = metrics_server("127.0.0.73", vllm_page(1, 0.5)).await;
    // Nothing listens on port 9 of 127.0.0.72: every scrape is refused.
    let down: SocketAddr = "127.0.0.72:9".parse().unwrap();
    let endpoints: PathBuf = dir.join("endpoints.yaml");
    let write_endpoints = |eps: &[SocketAddr]| {
        let mut text = String::from("endpoints:\n");
        for e in eps {
            text.push_str(&format!("- {{address: {}, port: {}}}\n", e.ip(), e.port()));
        }
        std::fs::write(&endpoints, text).unwrap();
    };
    write_endpoints(&[up, down]);
    let config = dir.join("config.yaml");
    let weights = |q: u32| {
        format!(
            "{HEADER}plugins:\n- type: queue-scorer\n- type: kv-cache-utilization-scorer\n\
             schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n    \
             weight: {q}\n  - pluginRef: kv-cache-utilization-scorer\n"
        )
    };
    std::fs::write(&config, weights(1)).unwrap();
    let p = Proc::start(&[
        "--static-endpoints-file",
        endpoints.to_str().unwrap(),
        "--static-endpoints-reload-interval",
        "100ms",
        "--config-file",
        config.to_str().unwrap(),
        "--config-reload-interval",
        "100ms",
        "--secure-serving=false",
    ]);
    let mut c = admin(p.admin.unwrap()).await;

    // Scrapes: the live endpoint's page, the dead one failing to connect.
    let s = state_where(&mut c, "one endpoint ok and one failing", |s| {
        scrape_status(s, &up.to_string()) == Some(ScrapeStatus::Ok)
            && scrape_status(s, &down.to_string()) == Some(ScrapeStatus::Failing)
    })
    .await;
    let ok = s
        .endpoints
        .iter()
        .find(|e| e.name == up.to_string())
        .unwrap();
    let m = ok.metrics.as_ref().unwrap();
    assert_eq!((m.waiting_requests, m.kv_cache_usage), (3, 0.25));
    assert!(m.age_ms.is_some());
    let bad = s
        .endpoints
        .iter()
        .find(|e| e.name == down.to_string())
        .unwrap();
    let h = bad.scrape.as_ref().unwrap();
    assert!(h.consecutive_failures >= 1);
    assert_eq!(h.last_error_reason, "connect");
    assert_eq!(bad.metrics.as_ref().unwrap().age_ms, None, "never scraped");
    let cfg = s.config.unwrap();
    assert_eq!(cfg.origin, format!("file:{}", config.display()));
    assert_eq!((cfg.reloads_succeeded, cfg.reloads_failed), (0, 0));
    assert!(cfg.last_reload_failure.is_none());

    // WatchState: the first state at once, then one after the pool changes.
    let mut watch = c
        .watch_state(WatchStateRequest {
            min_interval_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.endpoints.len(), 2);

    // An invalid configuration is refused and reported; the one in force stays.
    std::fs::write(
        &config,
        format!("{HEADER}plugins:\n- type: no-such-plugin\n"),
    )
    .unwrap();
    let s = state_where(&mut c, "the failed reload", |s| {
        s.config.as_ref().is_some_and(|c| c.reloads_failed == 1)
    })
    .await;
    let c1 = s.config.unwrap();
    assert_eq!(c1.hash, cfg.hash);
    let failure = c1.last_reload_failure.unwrap();
    assert!(
        failure.errors.iter().any(|e| e.contains("no-such-plugin")),
        "{failure:?}"
    );
    // A valid one replaces it: new hash, new load time, the failure still on record.
    std::fs::write(&config, weights(4)).unwrap();
    let s = state_where(&mut c, "the good reload", |s| {
        s.config.as_ref().is_some_and(|c| c.reloads_succeeded == 1)
    })
    .await;
    let c2 = s.config.unwrap();
    assert_ne!(c2.hash, cfg.hash);
    assert!(c2.loaded_at_unix_ms >= cfg.loaded_at_unix_ms);
    assert!(c2.last_reload_failure.is_some());
    let e = c
        .explain(explain_request("hello", "t"))
        .await
        .unwrap()
        .into_inner();
    let scorers = &e.live.unwrap().profiles[0].scorers;
    assert_eq!(scorers[0].weight, 4.0, "the reloaded weights are explained");

    // Endpoint changes: the dead endpoint leaves, another joins.
    write_endpoints(&[up, other]);
    let changed = tokio::time::timeout(TIMEOUT, async {
        while let Some(s) = watch.next().await {
            let s = s.unwrap();
            if s.endpoints.iter().any(|e| e.name == other.to_string()) {
                return s;
            }
        }
        panic!("the watch ended")
    })
    .await
    .expect("WatchState delivers the membership change");
    assert!(!changed.endpoints.iter().any(|e| e.name == down.to_string()));
    let s = state_where(&mut c, "the new endpoint scraped", |s| {
        scrape_status(s, &other.to_string()) == Some(ScrapeStatus::Ok)
    })
    .await;
    assert_eq!(s.endpoints.len(), 2);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn explain_matches_the_scheduler_for_the_same_snapshot_and_seed() {
    // Random choices everywhere: an exploring affinity filter and a weighted random picker.
    let config = format!(
        "{HEADER}plugins:\n- type: prefix-cache-affinity-filter\n  parameters: {{explorationProbability: 0.5, affinityThreshold: 0.1}}\n\
         - type: queue-scorer\n- type: kv-cache-utilization-scorer\n- type: prefix-cache-scorer\n\
         - type: weighted-random-picker\n  parameters: {{maxNumOfEndpoints: 2}}\n\
         schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: prefix-cache-affinity-filter\n\
         \x20 - pluginRef: queue-scorer\n  - pluginRef: kv-cache-utilization-scorer\n\
         \x20 - pluginRef: prefix-cache-scorer\n  - pluginRef: weighted-random-picker\n"
    );
    let h = Harness::start(Setup {
        config: Some(config),
        ..Default::default()
    })
    .await;
    h.set_pods(&[(0, 0.1), (4, 0.2), (1, 0.9), (2, 0.5)]);
    let prompt = "Tell me a story about a switchyard. ".repeat(6);
    // Teach the prefix index one endpoint, so the affinity filter has someone to keep.
    let body = serde_json::to_vec(&serde_json::json!({"model": "m", "prompt": prompt})).unwrap();
    route(h.addr, &body, &[]).await;

    let rt = h.live.runtime();
    let snapshot = h.pool.snapshot();
    let mut request = Request::new("explain", "m");
    request.prompt = prompt.clone().into();
    request.body_size = body.len();
    let all: Vec<usize> = (0..snapshot.len()).collect();
    let mut distinct = std::collections::HashSet::new();
    for seed in 0..40 {
        let mut req = explain_request(&prompt, "default-flow");
        req.headers.clear();
        req.seed = Some(seed);
        let e = switchyard::admin::explain::explain(&h.live, &req).unwrap();
        assert_eq!(e.seed, seed);
        let targets = e.live.unwrap().outcome.unwrap().targets;

        let now = h.clock.now();
        let state = rt.scheduler.prepare(&request, &snapshot, &all, now);
        let result = rt
            .scheduler
            .schedule(
                &request,
                &snapshot,
                &all,
                &state,
                now,
                &mut SchedulerRng::seed_from_u64(seed),
            )
            .unwrap();
        let want: Vec<String> = result
            .targets()
            .iter()
            .map(|t| snapshot.get(t.index).endpoint.host_port().to_string())
            .collect();
        assert_eq!(targets, want, "seed {seed}");
        distinct.insert(targets);
    }
    assert!(distinct.len() > 1, "the seeds exercise the random choices");
    h.stop().await;
}

#[tokio::test]
async fn endpoint_scores_are_sent_only_when_asked() {
    for emit in [false, true] {
        let h = Harness::start(Setup {
            config: Some(HERMETIC_CONFIG.to_string()),
            flags: switchyard::runtime::Flags {
                emit_endpoint_scores: emit,
                ..Setup::default().flags
            },
            ..Default::default()
        })
        .await;
        h.set_pods(&[(0, 0.1), (3, 0.5)]);
        let set = route(h.addr, br#"{"model":"m","prompt":"hi"}"#, &[]).await;
        let scores = header(&set, "x-gateway-destination-endpoint-scores");
        if emit {
            let s = scores.expect("scores header");
            assert!(s.starts_with(&format!("{}:8000=", pod_ip(0))), "{s}");
            assert_eq!(s.split(',').count(), 2);
        } else {
            assert_eq!(scores, None);
        }
        h.stop().await;
    }
}
