//! `process_*` metrics as the Go and Python Prometheus clients export them (CPU time, memory,
//! file descriptors, start time, threads), read from `/proc/self` at each scrape. On systems
//! without `/proc` the family is empty.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Registers with [`prometheus_client::registry::Registry::register_collector`].
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub threads: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on every Linux ABI).
const TICKS: f64 = 100.0;
const PAGE: f64 = 4096.0;

/// Parses `/proc/self/stat` (fields after the parenthesised command name), with the boot time
/// from `/proc/stat`'s `btime`.
pub fn parse_stat(stat: &str, btime: f64) -> Option<ProcessStats> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Some(ProcessStats {
        cpu_seconds: (num(14)? + num(15)?) / TICKS,
        threads: num(20)?,
        start_time_seconds: btime + num(22)? / TICKS,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * PAGE,
        ..ProcessStats::default()
    })
}

fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let btime = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let mut s = parse_stat(&stat, btime)?;
    s.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    s.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(s)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, v) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                s.threads,
            ),
        ] {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_by_position() {
        // A command name with spaces and parentheses must not shift the fields.
        let stat = "4242 (sw (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(stat, 1_700_000_000.0).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 7.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 123456789.0);
        assert_eq!(s.resident_bytes, 300.0 * 4096.0);
        assert_eq!(parse_stat("garbage", 0.0), None);
    }

    #[test]
    fn this_process_is_measured() {
        let s = read().expect("/proc is mounted on Linux");
        assert!(
            s.resident_bytes > 0.0 && s.open_fds > 0.0 && s.threads >= 1.0,
            "{s:?}"
        );
    }
}
