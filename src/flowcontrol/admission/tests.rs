use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::flowcontrol::controller::{BandConfig, Fairness};
use crate::flowcontrol::vtc::VtcParams;
use crate::scheduling::plugins::UtilizationFilter;
use crate::scheduling::{Endpoint, EndpointMetrics, EndpointState};

fn item(tenant: &str, priority: i32) -> NewItem {
    NewItem {
        fairness_id: tenant.into(),
        priority,
        bytes: 400,
        input_tokens: 100,
        ttl: None,
    }
}

fn ms(v: u64) -> Timestamp {
    Timestamp::from_millis(v)
}

/// One endpoint scraped at `at` with `waiting` queued requests.
fn snapshot(waiting: u64, at: Timestamp) -> EndpointSnapshot {
    EndpointSnapshot::new(vec![EndpointState {
        endpoint: Arc::new(Endpoint::new("a", "10.0.0.1".parse().unwrap(), 8000)),
        metrics: Arc::new(EndpointMetrics {
            waiting_queue_size: waiting,
            updated_at: Some(at),
            ..EndpointMetrics::default()
        }),
    }])
}

fn signal<'a>(
    snap: &'a EndpointSnapshot,
    d: &'a UtilizationFilter,
    now: Timestamp,
) -> PoolSignal<'a> {
    PoolSignal {
        snapshot: snap,
        detector: d,
        now,
    }
}

/// Polls until nothing more is released now; the ids released, in order.
fn drain(g: &mut Gate, pool: &PoolSignal<'_>) -> Vec<ItemId> {
    let mut out = Vec::new();
    while let Step::Dispatch(r) = g.poll(pool) {
        out.push(r.id);
    }
    out
}

fn queued_id(a: Arrival) -> ItemId {
    match a {
        Arrival::Queued(id) => id,
        other => panic!("expected Queued, got {other:?}"),
    }
}

fn vtc_config() -> ControllerConfig {
    ControllerConfig {
        default_band: BandConfig {
            fairness: Fairness::Vtc(VtcParams::default()),
            ..ControllerConfig::default().default_band
        },
        ..ControllerConfig::default()
    }
}

#[test]
fn legacy_admits_at_once_and_sheds_sheddable_when_saturated() {
    let d = UtilizationFilter::default();
    let snap = snapshot(10, ms(0));
    let pool = signal(&snap, &d, ms(1));
    let mut g = Gate::legacy();
    assert!(matches!(
        g.arrive(item("x", 0), &[0], &pool),
        Arrival::Admitted(_)
    ));
    let shed = g.arrive(item("x", -1), &[0], &pool);
    assert_eq!(shed, Arrival::Refused(Refusal::Shed));
    assert_eq!(Refusal::Shed.status(), 429);
    assert_eq!(
        Refusal::Shed.message(),
        "system saturated, sheddable request dropped"
    );
    // Not saturated: the sheddable one goes too.
    let idle = snapshot(0, ms(0));
    let pool = signal(&idle, &d, ms(1));
    assert!(matches!(
        g.arrive(item("x", -1), &[0], &pool),
        Arrival::Admitted(_)
    ));
    assert_eq!(g.poll(&pool), Step::Idle);
}

#[test]
fn holds_while_saturated_and_counts_requests_in_transit() {
    let d = UtilizationFilter::default();
    let mut g = Gate::new(ControllerConfig::default(), false);
    let busy = snapshot(5, ms(0));
    let pool = signal(&busy, &d, ms(10));
    let ids: Vec<ItemId> = (0..4)
        .map(|_| queued_id(g.arrive(item("x", 0), &[], &pool)))
        .collect();
    assert_eq!(g.poll(&pool), Step::Idle, "5 waiting of 5: saturated");
    // The queue drains to 2 waiting (0.4): released requests are not in the metrics yet, each
    // counts 1/5, so three go before the pool looks saturated.
    let draining = snapshot(2, ms(20));
    assert_eq!(drain(&mut g, &signal(&draining, &d, ms(20))), ids[..3]);
    // A scrape after their release makes them visible (and they are still 2 waiting).
    let seen = snapshot(2, ms(30));
    assert_eq!(drain(&mut g, &signal(&seen, &d, ms(30))), ids[3..]);
    assert_eq!(g.queued(), 0);
}

#[test]
fn a_first_token_makes_a_released_request_visible() {
    let d = UtilizationFilter::default();
    let mut g = Gate::new(ControllerConfig::default(), false);
    let snap = snapshot(4, ms(0));
    let pool = signal(&snap, &d, ms(5));
    let a = queued_id(g.arrive(item("x", 0), &[], &pool));
    let b = queued_id(g.arrive(item("x", 0), &[], &pool));
    assert_eq!(
        drain(&mut g, &pool),
        vec![a],
        "4/5 + one in transit = saturated"
    );
    assert!(!g.first_token(b), "b was never released");
    assert!(g.first_token(a), "a no longer counts, and b waits");
    assert_eq!(drain(&mut g, &pool), vec![b]);
}

#[test]
fn detectors_that_count_in_flight_requests_see_them_when_picked() {
    let d = UtilizationFilter::default();
    let snap = snapshot(4, ms(0));
    let pool = signal(&snap, &d, ms(5));
    for (visible, expect_second) in [(true, true), (false, false)] {
        let mut g = Gate::new(ControllerConfig::default(), visible);
        let a = queued_id(g.arrive(item("x", 0), &[], &pool));
        let b = queued_id(g.arrive(item("x", 0), &[], &pool));
        assert_eq!(drain(&mut g, &pool), vec![a]);
        g.picked(a, None);
        let second = drain(&mut g, &pool);
        assert_eq!(
            second == vec![b],
            expect_second,
            "visible_when_picked={visible}"
        );
    }
}

#[test]
fn expired_requests_are_evicted_one_poll_at_a_time_and_stay_counted_until_then() {
    let d = UtilizationFilter::default();
    let cfg = ControllerConfig {
        default_ttl: Some(Duration::from_secs(1)),
        ..ControllerConfig::default()
    };
    let mut g = Gate::new(cfg, false);
    let busy = snapshot(9, ms(0));
    let a = queued_id(g.arrive(item("x", 0), &[], &signal(&busy, &d, ms(0))));
    let b = queued_id(g.arrive(item("y", 0), &[], &signal(&busy, &d, ms(0))));
    assert_eq!(g.poll(&signal(&busy, &d, ms(10))), Step::WakeAt(ms(1000)));
    let Step::Evict(first, why) = g.poll(&signal(&busy, &d, ms(1000))) else {
        panic!("the deadline passed")
    };
    assert_eq!((first.id, why.status()), (a, 503));
    assert_eq!(
        why.message(),
        "request timed out in queue: waited 1000 ms, past its time to live"
    );
    assert_eq!(g.queued(), 1, "the second eviction is still to be reported");
    assert!(matches!(g.poll(&signal(&busy, &d, ms(1000))), Step::Evict(r, _) if r.id == b));
    assert_eq!(g.queued(), 0);
    assert_eq!(g.poll(&signal(&busy, &d, ms(1000))), Step::Idle);
}

#[test]
fn capacity_refusals_say_which_limit() {
    let d = UtilizationFilter::default();
    let busy = snapshot(9, ms(0));
    let pool = signal(&busy, &d, ms(0));
    let mut g = Gate::new(
        ControllerConfig {
            max_requests: 1,
            ..ControllerConfig::default()
        },
        false,
    );
    queued_id(g.arrive(item("x", 0), &[], &pool));
    let Arrival::Refused(r) = g.arrive(item("x", 0), &[], &pool) else {
        panic!("over maxRequests")
    };
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.message(),
        "request rejected by flow control: queue at capacity (maxRequests 1 reached)"
    );
}

#[test]
fn vtc_serves_the_tenant_with_less_service_first() {
    let d = UtilizationFilter::default();
    let mut g = Gate::new(vtc_config(), false);
    let busy = snapshot(9, ms(0));
    let pool = signal(&busy, &d, ms(1));
    for t in ["heavy", "heavy", "light"] {
        queued_id(g.arrive(item(t, 0), &[], &pool));
    }
    let idle = snapshot(0, ms(5));
    let pool = signal(&idle, &d, ms(5));
    // Equal counters: the first in tenant order goes first; its output then makes it the most
    // served, so the other tenant goes next even though heavy queued earlier.
    let Step::Dispatch(first) = g.poll(&pool) else {
        panic!("idle pool dispatches")
    };
    assert_eq!(&*first.fairness_id, "heavy");
    let charged = g.usage(
        first.id,
        Usage {
            prompt_tokens: 100,
            completion_tokens: 500,
            cached_tokens: 0,
        },
    );
    assert_eq!(charged.map(|c| c.service), Some(1000.0), "500 output × 2");
    let next: Vec<String> = std::iter::from_fn(|| match g.poll(&pool) {
        Step::Dispatch(r) => Some(r.fairness_id.to_string()),
        _ => None,
    })
    .collect();
    assert_eq!(next, vec!["light", "heavy"]);
    let c = g.controller().unwrap();
    assert!(c.counter(0, "heavy").unwrap() > c.counter(0, "light").unwrap());
}

#[test]
fn a_reload_keeps_queued_requests_in_order_with_their_counters() {
    let d = UtilizationFilter::default();
    let busy = snapshot(9, ms(0));
    let idle = snapshot(0, ms(2));
    // The same history on two gates, one of them reloaded while requests wait: "heavy" has been
    // served once, then heavy, light, light, heavy queue.
    let run = |reload: bool| {
        let mut g = Gate::new(vtc_config(), false);
        let pool = signal(&busy, &d, ms(1));
        let h = queued_id(g.arrive(item("heavy", 0), &[], &pool));
        assert!(matches!(g.poll(&signal(&idle, &d, ms(2))), Step::Dispatch(r) if r.id == h));
        g.usage(
            h,
            Usage {
                prompt_tokens: 100,
                completion_tokens: 50,
                cached_tokens: 0,
            },
        );
        g.complete(h);
        for t in ["heavy", "light", "light", "heavy"] {
            queued_id(g.arrive(item(t, 0), &[], &pool));
        }
        let counters = |g: &Gate| {
            let c = g.controller().unwrap();
            (c.counter(0, "heavy"), c.counter(0, "light"))
        };
        let before = counters(&g);
        if reload {
            g.reconfigure(Some(vtc_config()), false);
            assert_eq!(counters(&g), before, "counters survive");
            assert_eq!(g.queued(), 4);
        }
        drain(&mut g, &signal(&idle, &d, ms(3)))
    };
    let order = run(false);
    assert_eq!(order.len(), 4);
    assert_eq!(run(true), order, "same ids, same order");
}

#[test]
fn a_reload_evicts_what_no_longer_fits_and_releases_everything_without_flow_control() {
    let d = UtilizationFilter::default();
    let busy = snapshot(9, ms(0));
    let pool = signal(&busy, &d, ms(1));
    let mut g = Gate::new(ControllerConfig::default(), false);
    let ids: Vec<ItemId> = (0..3)
        .map(|_| queued_id(g.arrive(item("x", 0), &[], &pool)))
        .collect();
    g.reconfigure(
        Some(ControllerConfig {
            max_requests: 2,
            ..ControllerConfig::default()
        }),
        false,
    );
    let Step::Evict(r, why) = g.poll(&pool) else {
        panic!("the third no longer fits")
    };
    assert_eq!((r.id, why.status()), (ids[2], 503));
    assert_eq!(
        why.message(),
        "request evicted from the queue: it does not fit the reloaded flow-control \
         configuration (queue at capacity (maxRequests 2 reached))"
    );
    assert_eq!(g.poll(&pool), Step::Idle, "still saturated");
    g.reconfigure(None, false);
    assert!(!g.queues());
    assert_eq!(
        drain(&mut g, &pool),
        ids[..2],
        "no queue any more: released in order"
    );
    assert_eq!(g.queued(), 0);
}

#[test]
fn a_cancelled_request_leaves_the_queue() {
    let d = UtilizationFilter::default();
    let busy = snapshot(9, ms(0));
    let pool = signal(&busy, &d, ms(1));
    let mut g = Gate::new(ControllerConfig::default(), false);
    let a = queued_id(g.arrive(item("x", 0), &[], &pool));
    assert_eq!(g.cancel(a).map(|r| r.id), Some(a));
    assert_eq!(g.cancel(a), None);
    assert_eq!(g.queued(), 0);
}

#[test]
fn a_preview_tells_admit_queue_or_refuse_and_changes_nothing() {
    let d = UtilizationFilter::default();
    // Legacy: a sheddable request is shed while saturated, others go through.
    let busy = snapshot(9, ms(0));
    let pool = signal(&busy, &d, ms(1));
    let legacy = Gate::legacy();
    assert_eq!(
        legacy.preview(item("t", -1), &[0], &pool),
        (Preview::Refuse(Refusal::Shed), None)
    );
    assert_eq!(legacy.preview(item("t", 0), &[0], &pool).0, Preview::Admit);

    // Flow control under VTC with a saturated pool: "heavy" has been served, "light" not.
    let mut g = Gate::new(
        ControllerConfig {
            max_requests: 4,
            ..vtc_config()
        },
        false,
    );
    let heavy = queued_id(g.arrive(item("heavy", 0), &[], &pool));
    let idle = snapshot(0, ms(5));
    let Step::Dispatch(r) = g.poll(&signal(&idle, &d, ms(5))) else {
        panic!("idle pool dispatches")
    };
    assert_eq!(r.id, heavy);
    g.usage(
        heavy,
        Usage {
            prompt_tokens: 100,
            completion_tokens: 500,
            cached_tokens: 0,
        },
    );
    g.complete(heavy);
    for t in ["heavy", "heavy", "other"] {
        queued_id(g.arrive(item(t, 0), &[], &pool));
    }
    let before = format!("{g:?}");
    // "other" and "light" are lifted to heavy's counter on arrival (idle time is not banked):
    // heavy's head is oldest and goes first, its dispatch charge puts it behind, then "other"
    // (queued earlier) and "light" — ahead of heavy's second request.
    let (p, sat) = g.preview(item("light", 0), &[], &pool);
    assert_eq!(
        p,
        Preview::Queue {
            position: 2,
            queued: 3
        }
    );
    assert!(sat.is_some_and(|s| s >= 1.0), "{sat:?}");
    // A fourth queued request reaches maxRequests: the preview is the 429 arrival would give.
    queued_id(g.arrive(item("x", 0), &[], &pool));
    let before_full = format!("{g:?}");
    let (p, _) = g.preview(item("light", 0), &[], &pool);
    let Preview::Refuse(r) = p else {
        panic!("expected a refusal, got {p:?}")
    };
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.message(),
        "request rejected by flow control: queue at capacity (maxRequests 4 reached)"
    );
    assert_eq!(format!("{g:?}"), before_full);
    assert_ne!(before, before_full);

    // An idle pool: the arrival's own dispatch cycle lets it go (after those ahead of it).
    let mut g = Gate::new(vtc_config(), false);
    let before = format!("{g:?}");
    let (p, sat) = g.preview(item("t", 0), &[], &signal(&idle, &d, ms(5)));
    assert_eq!(p, Preview::Admit);
    assert_eq!(sat, Some(0.0));
    assert_eq!(format!("{g:?}"), before);
    assert_eq!(g.queued(), 0);
    queued_id(g.arrive(item("t", 0), &[], &pool));
    assert_eq!(g.queued(), 1);
}
