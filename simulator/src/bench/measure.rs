//! What the benchmark reads from the processes it runs, and the closed-loop driver.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::gateway::{Gateway, GatewayRequest};

/// Peak resident memory (`VmHWM`) of a process in bytes; `None` without `/proc`.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_hwm(&status)
}

fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Latencies in microseconds, 1 µs to 100 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 100_000_000)
}

/// What one closed-loop run saw.
#[derive(Debug)]
pub struct RunResult {
    pub ok: u64,
    pub errors: u64,
    /// The first error's text, for the report.
    pub first_error: Option<String>,
    pub wall: Duration,
    /// Client-observed time from sending the request to its last response byte.
    pub e2e: Histogram<u64>,
    /// Time from opening the ext_proc stream to the pick and the whole body released (built-in
    /// gateway only): what the EPP adds before the request can leave for the model server.
    pub pick: Histogram<u64>,
    /// Response body messages the EPP saw per request (sum).
    pub response_messages: u64,
}

/// A fixed set of requests, sent round-robin.
#[derive(Clone)]
pub struct Requests {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub bodies: Arc<Vec<Bytes>>,
}

/// `concurrency` clients, each sending its next request when one finishes, until `duration` is
/// over; the requests still in flight then finish and are counted.
pub async fn closed_loop(
    gateway: &Gateway,
    direct: Option<String>,
    requests: &Requests,
    concurrency: usize,
    duration: Duration,
) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (gateway, direct, requests, next) = (
            gateway.clone(),
            direct.clone(),
            requests.clone(),
            next.clone(),
        );
        clients.spawn(async move {
            let mut r = RunResult {
                ok: 0,
                errors: 0,
                first_error: None,
                wall: Duration::ZERO,
                e2e: histogram(),
                pick: histogram(),
                response_messages: 0,
            };
            while start.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed) % requests.bodies.len();
                let req = GatewayRequest {
                    path: requests.path.clone(),
                    headers: requests.headers.clone(),
                    body: requests.bodies[i].clone(),
                };
                match gateway.send(req, direct.as_deref()).await {
                    Ok(out) if out.status == 200 => {
                        r.ok += 1;
                        let _ = r.e2e.record(micros(out.e2e));
                        if let Some(p) = out.pick {
                            let _ = r.pick.record(micros(p));
                        }
                        r.response_messages += u64::from(out.response_messages);
                    }
                    Ok(out) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| {
                            format!(
                                "status {}: {}",
                                out.status,
                                String::from_utf8_lossy(&out.body[..out.body.len().min(200)])
                            )
                        });
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            r
        });
    }
    let mut total = RunResult {
        ok: 0,
        errors: 0,
        first_error: None,
        wall: Duration::ZERO,
        e2e: histogram(),
        pick: histogram(),
        response_messages: 0,
    };
    while let Some(r) = clients.join_next().await {
        let r = r.expect("client task");
        total.ok += r.ok;
        total.errors += r.errors;
        total.first_error = total.first_error.or(r.first_error);
        total.e2e.add(&r.e2e).expect("same bounds");
        total.pick.add(&r.pick).expect("same bounds");
        total.response_messages += r.response_messages;
    }
    total.wall = start.elapsed();
    total
}

/// `taskset -a -p -c <cpus> <pid>`: pins every thread of a process. An error names the reason.
pub fn pin(pid: u32, cpus: &str) -> Result<(), String> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The 1-minute load average from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(vm_hwm(status), Some(1234 * 1024));
        assert_eq!(vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn our_own_peak_rss_is_readable() {
        let rss = peak_rss_bytes(std::process::id()).expect("/proc/self/status");
        assert!(rss > 1 << 20, "{rss}");
    }
}
