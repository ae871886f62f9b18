use std::time::Duration;

use super::*;
use crate::flowcontrol::controller::{BandConfig, Fairness, Ordering};
use crate::scheduling::plugins::UtilizationFilter;
use crate::scheduling::{Endpoint, EndpointMetrics};

fn detector() -> Arc<dyn SaturationDetector> {
    Arc::new(UtilizationFilter {
        queue_depth_threshold: 5,
        kv_cache_util_threshold: 0.8,
        metrics_staleness_threshold: Duration::from_secs(3600),
        headroom: 0.0,
    })
}

struct Fixture {
    pool: Arc<EndpointPool>,
    clock: Clock,
    fc: Arc<FlowControl>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    fn new(endpoints: usize, cfg: ControllerConfig) -> Self {
        let pool = Arc::new(EndpointPool::new());
        pool.set_endpoints(
            (0..endpoints)
                .map(|i| Endpoint::new(format!("e{i}"), [127, 0, 0, 1].into(), 8000 + i as u16))
                .collect(),
        );
        let clock = Clock::new();
        let fc = FlowControl::new(
            Some(cfg),
            pool.clone(),
            detector(),
            clock,
            FlowControlMetrics::new(),
            "pool",
        );
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(fc.clone().run(rx));
        let f = Self {
            pool,
            clock,
            fc,
            stop,
            task,
        };
        f.set_queues(0);
        f
    }

    /// Publishes fresh metrics with `queue` waiting on every endpoint.
    fn set_queues(&self, queue: u64) {
        for e in self.pool.snapshot().endpoints() {
            self.pool.update_metrics(
                &e.endpoint.name,
                Arc::new(EndpointMetrics {
                    waiting_queue_size: queue,
                    updated_at: Some(self.clock.now()),
                    ..Default::default()
                }),
            );
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

fn models() -> ModelLabels {
    ModelLabels {
        model_name: "m".into(),
        target_model_name: "m".into(),
    }
}

fn item(tenant: &str) -> NewItem {
    NewItem {
        fairness_id: tenant.into(),
        priority: 0,
        bytes: 100,
        input_tokens: 25,
        ttl: None,
    }
}

async fn outcome(t: &mut Ticket) -> Outcome {
    tokio::time::timeout(Duration::from_secs(5), t.wait())
        .await
        .expect("an outcome within 5 s")
}

#[tokio::test]
async fn an_unsaturated_pool_dispatches_at_enqueue() {
    let f = Fixture::new(2, ControllerConfig::default());
    let mut t = f.fc.enqueue(item("a"), &models()).unwrap();
    assert!(matches!(t.try_outcome(), Some(Outcome::Dispatched(_))));
    assert_eq!(f.fc.queued(), 0);
    f.stop().await;
}

#[tokio::test]
async fn a_saturated_pool_holds_requests_until_metrics_drop() {
    let f = Fixture::new(2, ControllerConfig::default());
    f.set_queues(10); // saturation 2.0
    let mut t = f.fc.enqueue(item("a"), &models()).unwrap();
    assert_eq!(t.try_outcome(), None);
    assert_eq!(f.fc.queued(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(f.fc.queued(), 1, "still saturated");
    f.set_queues(0);
    match outcome(&mut t).await {
        Outcome::Dispatched(r) => assert_eq!(r.fairness_id.as_ref(), "a"),
        o => panic!("{o:?}"),
    }
    assert_eq!(f.fc.queued(), 0);
    f.stop().await;
}

#[tokio::test]
async fn ttl_expiry_evicts_without_a_metrics_change() {
    let f = Fixture::new(
        1,
        ControllerConfig {
            default_ttl: Some(Duration::from_millis(50)),
            ..Default::default()
        },
    );
    f.set_queues(10);
    let started = Instant::now();
    let mut t = f.fc.enqueue(item("a"), &models()).unwrap();
    match outcome(&mut t).await {
        Outcome::Refused(Refusal::Expired(waited)) => {
            assert!(waited >= Duration::from_millis(50))
        }
        o => panic!("{o:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(f.fc.queued(), 0);
    f.stop().await;
}

#[tokio::test]
async fn capacity_rejects_with_the_controllers_reason() {
    let f = Fixture::new(
        1,
        ControllerConfig {
            max_requests: 1,
            ..Default::default()
        },
    );
    f.set_queues(10);
    let _t = f.fc.enqueue(item("a"), &models()).unwrap();
    let e = f.fc.enqueue(item("b"), &models()).err().unwrap();
    assert_eq!(
        e.message(),
        "request rejected by flow control: queue at capacity (maxRequests 1 reached)"
    );
    f.stop().await;
}

#[tokio::test]
async fn dropping_a_ticket_removes_the_request() {
    let f = Fixture::new(1, ControllerConfig::default());
    f.set_queues(10);
    let t = f.fc.enqueue(item("a"), &models()).unwrap();
    let mut keep = f.fc.enqueue(item("b"), &models()).unwrap();
    assert_eq!(f.fc.queued(), 2);
    drop(t);
    assert_eq!(f.fc.queued(), 1);
    f.set_queues(0);
    match outcome(&mut keep).await {
        Outcome::Dispatched(r) => assert_eq!(r.fairness_id.as_ref(), "b"),
        o => panic!("{o:?}"),
    }
    f.stop().await;
}

#[tokio::test]
async fn released_requests_count_until_the_next_scrape_shows_them() {
    // One endpoint, queue threshold 5: each released request adds 1/5 until metrics refresh.
    let f = Fixture::new(1, ControllerConfig::default());
    let mut tickets: Vec<Ticket> = (0..8)
        .map(|_| f.fc.enqueue(item("a"), &models()).unwrap())
        .collect();
    let released = tickets
        .iter_mut()
        .map(|t| t.try_outcome().is_some())
        .filter(|&d| d)
        .count();
    assert_eq!(released, 5, "0, 0.2, 0.4, 0.6, 0.8 are under 1.0");
    assert_eq!(f.fc.queued(), 3);
    // The next scrape shows an empty queue again (the pod took them into its batch).
    tokio::time::sleep(Duration::from_millis(2)).await;
    f.set_queues(0);
    for t in &mut tickets[5..] {
        assert!(matches!(outcome(t).await, Outcome::Dispatched(_)));
    }
    f.stop().await;
}

#[tokio::test]
async fn an_idle_controller_does_no_work_on_scrapes() {
    let f = Fixture::new(4, ControllerConfig::default());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = f.fc.background_cycles();
    for _ in 0..200 {
        f.set_queues(0);
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        f.fc.background_cycles(),
        before,
        "woken while nothing waits"
    );
    // While something waits, scrapes do wake it.
    f.set_queues(10);
    let _t = f.fc.enqueue(item("a"), &models()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = f.fc.background_cycles();
    f.set_queues(10);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(f.fc.background_cycles() > waiting);
    f.stop().await;
}

#[tokio::test]
async fn shutdown_resolves_waiters() {
    let f = Fixture::new(1, ControllerConfig::default());
    f.set_queues(10);
    let mut t = f.fc.enqueue(item("a"), &models()).unwrap();
    let _ = f.stop.send(true);
    assert_eq!(outcome(&mut t).await, Outcome::Refused(Refusal::Shutdown));
    let _ = f.task.await;
}

#[tokio::test]
async fn admissions_charge_vtc_from_usage() {
    let cfg = ControllerConfig {
        default_band: BandConfig {
            max_bytes: 0,
            max_requests: 0,
            ordering: Ordering::Fcfs,
            fairness: Fairness::Vtc(crate::flowcontrol::VtcParams {
                charge_uncached_input_only: true,
                ..Default::default()
            }),
        },
        ..Default::default()
    };
    let f = Fixture::new(1, cfg);
    let mut t = f.fc.enqueue(item("a"), &models()).unwrap();
    let Some(Outcome::Dispatched(r)) = t.try_outcome() else {
        panic!("dispatched at enqueue")
    };
    let counter = |fc: &FlowControl| {
        let st = fc.state.lock();
        st.gate.controller().unwrap().counter(0, "a").unwrap()
    };
    assert_eq!(counter(&f.fc), 25.0, "estimate charged at dispatch");
    let mut adm = Admission::new(f.fc.clone(), &r);
    adm.picked(Some(0.8)); // the index says 80 % is cached: charge 5
    assert!((counter(&f.fc) - 5.0).abs() < 1e-9);
    // Streaming usage: cumulative, charged by difference.
    adm.usage(Usage {
        prompt_tokens: 30,
        completion_tokens: 2,
        cached_tokens: 10,
    });
    assert!((counter(&f.fc) - (20.0 + 4.0)).abs() < 1e-9);
    adm.usage(Usage {
        prompt_tokens: 30,
        completion_tokens: 5,
        cached_tokens: 10,
    });
    assert!((counter(&f.fc) - (20.0 + 10.0)).abs() < 1e-9);
    adm.complete();
    adm.complete();
    drop(adm);
    f.stop().await;
}

#[tokio::test]
async fn a_request_whose_pod_answers_stops_counting_as_queued() {
    let f = Fixture::new(1, ControllerConfig::default());
    let mut tickets: Vec<Ticket> = (0..7)
        .map(|_| f.fc.enqueue(item("a"), &models()).unwrap())
        .collect();
    let released: Vec<ItemId> = tickets
        .iter_mut()
        .filter_map(|t| match t.try_outcome() {
            Some(Outcome::Dispatched(r)) => Some(r.id),
            _ => None,
        })
        .collect();
    assert_eq!(released.len(), 5);
    // No scrape yet: the first token of one released request makes room for exactly one more.
    f.fc.with_gate(|g| g.first_token(released[0]));
    assert!(matches!(
        outcome(&mut tickets[5]).await,
        Outcome::Dispatched(_)
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(f.fc.queued(), 1);
    f.fc.with_gate(|g| g.first_token(released[1]));
    assert!(matches!(
        outcome(&mut tickets[6]).await,
        Outcome::Dispatched(_)
    ));
    f.stop().await;
}
