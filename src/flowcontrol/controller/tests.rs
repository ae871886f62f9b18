use super::*;

fn ms(v: u64) -> Timestamp {
    Timestamp::from_millis(v)
}

fn item(tenant: &str, priority: i32, bytes: u64) -> NewItem {
    NewItem {
        fairness_id: tenant.into(),
        priority,
        bytes,
        input_tokens: bytes / 4,
        ttl: None,
    }
}

fn band(fairness: Fairness) -> BandConfig {
    BandConfig {
        max_bytes: 0,
        max_requests: 0,
        ordering: Ordering::Fcfs,
        fairness,
    }
}

fn with_default(fairness: Fairness) -> FlowController {
    FlowController::new(ControllerConfig {
        default_band: band(fairness),
        ..Default::default()
    })
}

fn drain(c: &mut FlowController) -> Vec<(String, ItemId)> {
    std::iter::from_fn(|| c.dispatch(0.0))
        .map(|r| (r.fairness_id.to_string(), r.id))
        .collect()
}

#[test]
fn fcfs_in_arrival_order_and_only_below_the_ceiling() {
    let mut c = with_default(Fairness::GlobalStrict);
    let a = c.enqueue(item("x", 0, 10), ms(1)).unwrap();
    let b = c.enqueue(item("y", 0, 10), ms(2)).unwrap();
    let d = c.enqueue(item("x", 0, 10), ms(3)).unwrap();
    assert_eq!((c.len(), c.bytes()), (3, 30));
    assert_eq!(c.dispatch(1.0), None, "saturated: nothing leaves");
    assert_eq!(
        c.dispatch(f64::NAN),
        None,
        "an unknown saturation is not below the ceiling"
    );
    let r = c.dispatch(0.99).unwrap();
    assert_eq!((r.id, r.fairness_id.as_ref(), r.priority), (a, "x", 0));
    assert_eq!(r.enqueued_at, ms(1));
    assert_eq!(drain(&mut c), vec![("y".into(), b), ("x".into(), d)]);
    assert!(c.is_empty());
    assert_eq!(c.bytes(), 0);
    assert_eq!(c.flows().count(), 0);
}

#[test]
fn higher_priority_bands_go_first_and_a_saturated_pool_blocks_every_band() {
    let mut c = with_default(Fairness::GlobalStrict);
    let low = c.enqueue(item("t", -1, 1), ms(1)).unwrap();
    let mid = c.enqueue(item("t", 0, 1), ms(2)).unwrap();
    let high = c.enqueue(item("t", 10, 1), ms(3)).unwrap();
    assert_eq!(c.dispatch(1.5), None);
    let order: Vec<ItemId> = drain(&mut c).into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, vec![high, mid, low]);
}

#[test]
fn ceiling_from_the_usage_limit_policy() {
    let mut c = FlowController::new(ControllerConfig {
        ceiling: 0.5,
        ..Default::default()
    });
    c.enqueue(item("t", 0, 1), ms(1)).unwrap();
    assert_eq!(c.dispatch(0.5), None);
    assert!(c.dispatch(0.49).is_some());
}

#[test]
fn capacity_limits_refuse_with_the_limit_named() {
    let mut bands = BTreeMap::new();
    bands.insert(
        5,
        BandConfig {
            max_bytes: 100,
            max_requests: 2,
            ..band(Fairness::GlobalStrict)
        },
    );
    let mut c = FlowController::new(ControllerConfig {
        max_bytes: 1000,
        max_requests: 4,
        bands,
        ..Default::default()
    });
    c.enqueue(item("a", 5, 60), ms(0)).unwrap();
    assert_eq!(
        c.enqueue(item("a", 5, 50), ms(0)),
        Err(Rejected::Capacity(
            "priority band 5 maxBytes 100 would be exceeded".into()
        ))
    );
    c.enqueue(item("a", 5, 40), ms(0)).unwrap();
    assert_eq!(
        c.enqueue(item("a", 5, 0), ms(0)),
        Err(Rejected::Capacity(
            "priority band 5 maxRequests 2 reached".into()
        ))
    );
    assert_eq!(
        c.enqueue(item("b", 0, 950), ms(0)),
        Err(Rejected::Capacity("maxBytes 1000 would be exceeded".into()))
    );
    c.enqueue(item("b", 0, 1), ms(0)).unwrap();
    c.enqueue(item("b", 0, 1), ms(0)).unwrap();
    assert_eq!(
        c.enqueue(item("b", 0, 1), ms(0)),
        Err(Rejected::Capacity("maxRequests 4 reached".into()))
    );
    // A refused request leaves no trace.
    assert_eq!((c.len(), c.bytes()), (4, 102));
    // Room again after a dispatch.
    c.dispatch(0.0).unwrap();
    c.enqueue(item("b", 0, 1), ms(0)).unwrap();
}

#[test]
fn default_band_bytes_limit_is_gies_billion() {
    let mut c = with_default(Fairness::GlobalStrict);
    c.cfg.default_band.max_bytes = super::DEFAULT_BAND_MAX_BYTES;
    let mut c = FlowController::new(c.cfg.clone());
    c.enqueue(item("a", 0, 999_999_999), ms(0)).unwrap();
    assert!(c.enqueue(item("a", 0, 2), ms(0)).is_err());
    assert!(
        c.enqueue(item("a", 1, 2), ms(0)).is_ok(),
        "another band has its own limit"
    );
}

#[test]
fn ttl_expiry_and_request_deadlines() {
    let mut c = FlowController::new(ControllerConfig {
        default_ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    });
    let a = c.enqueue(item("a", 0, 1), ms(0)).unwrap();
    let mut own = item("b", 0, 1);
    own.ttl = Some(Duration::from_millis(300));
    let b = c.enqueue(own, ms(100)).unwrap();
    assert_eq!(c.next_deadline(), Some(ms(400)));
    assert!(c.expire(ms(399)).is_empty());
    let gone: Vec<ItemId> = c.expire(ms(400)).iter().map(|r| r.id).collect();
    assert_eq!(gone, vec![b]);
    assert_eq!(c.next_deadline(), Some(ms(1000)));
    let gone: Vec<ItemId> = c.expire(ms(5000)).iter().map(|r| r.id).collect();
    assert_eq!(gone, vec![a]);
    assert!(c.is_empty());
    assert_eq!(c.next_deadline(), None);
    // No TTL at all: waits until cancelled.
    let mut c = with_default(Fairness::GlobalStrict);
    c.enqueue(item("a", 0, 1), ms(0)).unwrap();
    assert_eq!(c.next_deadline(), None);
    assert!(c.expire(ms(u64::MAX / 2_000_000)).is_empty());
}

#[test]
fn edf_orders_by_deadline_and_no_deadline_last() {
    let mut c = FlowController::new(ControllerConfig {
        default_band: BandConfig {
            ordering: Ordering::Edf,
            ..band(Fairness::GlobalStrict)
        },
        ..Default::default()
    });
    let none = c.enqueue(item("a", 0, 1), ms(0)).unwrap();
    let mut late = item("a", 0, 1);
    late.ttl = Some(Duration::from_secs(10));
    let late = c.enqueue(late, ms(1)).unwrap();
    let mut soon = item("b", 0, 1);
    soon.ttl = Some(Duration::from_secs(1));
    let soon = c.enqueue(soon, ms(2)).unwrap();
    let order: Vec<ItemId> = drain(&mut c).into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, vec![soon, late, none]);
}

#[test]
fn cancel_removes_everything_the_item_held() {
    let mut c = FlowController::new(ControllerConfig {
        default_ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    });
    let a = c.enqueue(item("a", 0, 7), ms(0)).unwrap();
    let r = c.cancel(a).unwrap();
    assert_eq!((r.id, r.bytes), (a, 7));
    assert_eq!(c.cancel(a), None, "a second cancel finds nothing");
    assert!(c.is_empty());
    assert_eq!(c.bytes(), 0);
    assert_eq!(c.next_deadline(), None);
    assert_eq!(c.flows().count(), 0);
    assert_eq!(c.dispatch(0.0), None);
    assert!(c.expire(ms(10_000)).is_empty());
}

#[test]
fn round_robin_takes_turns_over_sorted_flows() {
    let mut c = with_default(Fairness::RoundRobin);
    for t in ["c", "a", "b", "a", "a", "c"] {
        c.enqueue(item(t, 0, 1), ms(0)).unwrap();
    }
    let order: Vec<String> = drain(&mut c).into_iter().map(|(t, _)| t).collect();
    assert_eq!(order, vec!["a", "b", "c", "a", "c", "a"]);
}

#[test]
fn global_strict_ignores_tenants() {
    let mut c = with_default(Fairness::GlobalStrict);
    for t in ["a", "a", "a", "b"] {
        c.enqueue(item(t, 0, 1), ms(0)).unwrap();
    }
    let order: Vec<String> = drain(&mut c).into_iter().map(|(t, _)| t).collect();
    assert_eq!(order, vec!["a", "a", "a", "b"]);
}

// === VTC on constructed schedules ===

const IN: u64 = 256;

/// A toy engine: `slots` requests run at once, each produces one output token per step and
/// finishes after `out` tokens. Output tokens are charged to the controller as they are
/// produced, as the server does from streamed usage. Returns each tenant's service
/// (input + 2·output tokens) after every step.
struct Toy {
    c: FlowController,
    running: Vec<(Arc<str>, u64)>,
    slots: usize,
    service: BTreeMap<String, f64>,
}

impl Toy {
    fn new(c: FlowController, slots: usize) -> Self {
        Self {
            c,
            running: Vec::new(),
            slots,
            service: BTreeMap::new(),
        }
    }

    fn step(&mut self, out: u64) {
        while self.running.len() < self.slots {
            let Some(r) = self.c.dispatch(0.0) else { break };
            *self.service.entry(r.fairness_id.to_string()).or_default() += IN as f64;
            self.running.push((r.fairness_id, out));
        }
        for (t, left) in &mut self.running {
            *left -= 1;
            self.c.charge(0, t, 0.0, 1);
            *self.service.entry(t.to_string()).or_default() += 2.0;
        }
        self.running.retain(|(_, left)| *left > 0);
    }

    fn service(&self, t: &str) -> f64 {
        self.service.get(t).copied().unwrap_or(0.0)
    }
}

fn vtc(p: VtcParams) -> FlowController {
    with_default(Fairness::Vtc(p))
}

#[test]
fn two_backlogged_tenants_stay_within_two_u() {
    // Tenant a sends 3× the requests of b; both stay backlogged throughout.
    let slots = 4;
    let out = 64;
    let mut toy = Toy::new(vtc(VtcParams::default()), slots);
    for i in 0..400 {
        toy.c.enqueue(item("a", 0, IN * 4), ms(i)).unwrap();
        if i % 3 == 0 {
            toy.c.enqueue(item("b", 0, IN * 4), ms(i)).unwrap();
        }
    }
    // U = max(w_p·L_input, w_q·M), M = tokens the running batch holds.
    let u = (IN as f64).max(2.0 * (slots as u64 * (IN + out)) as f64);
    let mut worst: f64 = 0.0;
    for _ in 0..2000 {
        toy.step(out);
        worst = worst.max((toy.service("a") - toy.service("b")).abs());
    }
    assert!(toy.service("b") > 10_000.0, "b was served");
    assert!(worst <= 2.0 * u, "service gap {worst} > 2U = {}", 2.0 * u);
    // FCFS on the same schedule drifts far past the bound: the property is VTC's doing.
    let mut fcfs = Toy::new(with_default(Fairness::GlobalStrict), slots);
    for i in 0..400 {
        fcfs.c.enqueue(item("a", 0, IN * 4), ms(i)).unwrap();
        if i % 3 == 0 {
            fcfs.c.enqueue(item("b", 0, IN * 4), ms(i)).unwrap();
        }
    }
    let mut fcfs_worst: f64 = 0.0;
    for _ in 0..2000 {
        fcfs.step(out);
        fcfs_worst = fcfs_worst.max((fcfs.service("a") - fcfs.service("b")).abs());
    }
    assert!(fcfs_worst > 4.0 * u, "FCFS gap {fcfs_worst}");
}

#[test]
fn a_tenant_returning_from_idle_cannot_bank_credit() {
    let mut toy = Toy::new(vtc(VtcParams::default()), 2);
    for i in 0..300 {
        toy.c.enqueue(item("busy", 0, IN * 4), ms(i)).unwrap();
    }
    for _ in 0..500 {
        toy.step(32);
    }
    let busy_counter = toy.c.counter(0, "busy").unwrap();
    assert!(busy_counter > 10_000.0);
    // The idle tenant arrives with many requests: it is lifted to the busy tenant's counter …
    for i in 0..100 {
        toy.c
            .enqueue(item("idle", 0, IN * 4), ms(1000 + i))
            .unwrap();
    }
    assert_eq!(toy.c.counter(0, "idle"), Some(busy_counter));
    // … so from now on the two share the engine instead of the newcomer taking it all.
    let (b0, i0) = (toy.service("busy"), toy.service("idle"));
    for _ in 0..500 {
        toy.step(32);
    }
    let (db, di) = (toy.service("busy") - b0, toy.service("idle") - i0);
    assert!(db > 0.0 && di > 0.0);
    let share = di / (db + di);
    assert!((0.4..=0.6).contains(&share), "newcomer share {share}");
}

#[test]
fn a_lifted_newcomer_alternates_with_the_busy_tenant() {
    // The same schedule with the counter reset shows what the lift prevents (LCF).
    let mut c = vtc(VtcParams::default());
    for i in 0..50 {
        c.enqueue(item("busy", 0, IN * 4), ms(i)).unwrap();
    }
    for _ in 0..20 {
        c.dispatch(0.0).unwrap();
    }
    c.charge(0, "busy", 0.0, 10_000);
    for i in 0..20 {
        c.enqueue(item("idle", 0, IN * 4), ms(100 + i)).unwrap();
    }
    // Lifted: the next dispatches alternate rather than all going to "idle".
    let next: Vec<String> = (0..6)
        .map(|_| c.dispatch(0.0).unwrap().fairness_id.to_string())
        .collect();
    assert!(
        next.iter().filter(|t| *t == "busy").count() >= 2,
        "{next:?}"
    );
}

#[test]
fn weights_divide_service() {
    let mut p = VtcParams::default();
    p.tenant_weights.insert("gold".into(), 2.0);
    let mut toy = Toy::new(vtc(p), 4);
    for i in 0..600 {
        toy.c.enqueue(item("gold", 0, IN * 4), ms(i)).unwrap();
        toy.c.enqueue(item("free", 0, IN * 4), ms(i)).unwrap();
    }
    for _ in 0..3000 {
        toy.step(64);
    }
    let ratio = toy.service("gold") / toy.service("free");
    assert!((1.8..=2.2).contains(&ratio), "gold/free = {ratio}");
}

#[test]
fn vtc_charges_input_at_dispatch_and_corrections_later() {
    let mut c = vtc(VtcParams::default());
    c.enqueue(item("a", 0, 400), ms(0)).unwrap();
    let r = c.dispatch(0.0).unwrap();
    assert_eq!(r.charged_input_tokens, 100);
    assert_eq!(c.counter(0, "a"), Some(100.0));
    // The engine reported 90 prompt tokens and 5 output tokens.
    c.charge(0, "a", -10.0, 5);
    assert_eq!(c.counter(0, "a"), Some(100.0));
    assert!(c.uses_vtc());
    assert!(!with_default(Fairness::RoundRobin).uses_vtc());
    // Non-VTC bands ignore charges.
    let mut rr = with_default(Fairness::RoundRobin);
    rr.enqueue(item("a", 0, 4), ms(0)).unwrap();
    rr.charge(0, "a", 1.0, 1);
    assert_eq!(rr.counter(0, "a"), None);
}

#[test]
fn the_rank_index_picks_what_a_scan_would() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
    for fairness in [Fairness::GlobalStrict, Fairness::Vtc(VtcParams::default())] {
        let mut c = with_default(fairness);
        let mut ids = Vec::new();
        for step in 0..5000u64 {
            match rng.random_range(0..10) {
                0..=4 => {
                    let t = format!("t{}", rng.random_range(0..12));
                    let mut it = item(&t, 0, rng.random_range(1..2000));
                    it.input_tokens = rng.random_range(1..500);
                    ids.push(c.enqueue(it, ms(step)).unwrap());
                }
                5 if !ids.is_empty() => {
                    let id = ids.swap_remove(rng.random_range(0..ids.len()));
                    c.cancel(id);
                }
                6 => {
                    let t = format!("t{}", rng.random_range(0..12));
                    c.charge(0, &t, 0.0, rng.random_range(0..300));
                }
                _ => {
                    let band = c.bands.get(&0);
                    // The scan: least (counter, head key) over backlogged flows.
                    let expected = band.and_then(|b| {
                        b.flows
                            .iter()
                            .map(|(t, f)| {
                                let counter = match &b.policy {
                                    Policy::Vtc(v) => v.counter(t),
                                    _ => 0.0,
                                };
                                (OrdF64(counter), Band::head_key(f), t.clone())
                            })
                            .min()
                            .map(|(_, _, t)| t)
                    });
                    let got = c.dispatch(0.0).map(|r| r.fairness_id);
                    assert_eq!(got, expected, "step {step}");
                }
            }
        }
    }
}
