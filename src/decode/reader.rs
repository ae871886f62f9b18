//! Path-tracking readers over a decoded YAML tree. Decoding by hand rather than with
//! `deny_unknown_fields` lets one pass report every unknown field and bad value with its path,
//! where serde would stop at the first.

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::Diagnostics;

/// Renders a value for an error message, shortened so a huge blob cannot flood the log.
pub fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Reads the fields of one mapping and reports the ones nobody asked for.
pub struct Obj<'a> {
    pub path: String,
    map: Option<&'a Map<String, Value>>,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    /// `None` or `null` reads as an empty mapping; anything else that is not a mapping is an error.
    pub fn new(path: impl Into<String>, value: Option<&'a Value>, d: &mut Diagnostics) -> Self {
        let path = path.into();
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                d.error(&path, format!("must be a mapping, got {}", kind(other)));
                None
            }
        };
        Self {
            path,
            map,
            known: Vec::new(),
        }
    }

    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`, with `null` treated as absent.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map?.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.map
            .and_then(|m| m.get(key))
            .is_some_and(|v| !v.is_null())
    }

    /// Reports every field that no `get` asked for.
    pub fn finish(self, d: &mut Diagnostics) {
        let Some(map) = self.map else { return };
        for key in map.keys() {
            if !self.known.contains(&key.as_str()) {
                let mut known = self.known.clone();
                known.sort_unstable();
                known.dedup();
                d.error(
                    join(&self.path, key),
                    format!("unknown field (known fields: {})", known.join(", ")),
                );
            }
        }
    }

    pub fn string(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<String> {
        let v = self.get(key)?;
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                d.error(
                    self.at(key),
                    format!("must be a string, got {}", show(other)),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<bool> {
        let v = self.get(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                d.error(
                    self.at(key),
                    format!("must be true or false, got {}", show(other)),
                );
                None
            }
        }
    }

    pub fn f64(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<f64> {
        let v = self.get(key)?;
        match v.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                d.error(
                    self.at(key),
                    format!("must be a finite number, got {}", show(v)),
                );
                None
            }
        }
    }

    pub fn i64(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<i64> {
        let v = self.get(key)?;
        match int_of(v) {
            Some(x) => Some(x),
            None => {
                d.error(self.at(key), format!("must be an integer, got {}", show(v)));
                None
            }
        }
    }

    /// A non-negative integer.
    pub fn u64(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<u64> {
        let x = self.i64(key, d)?;
        match u64::try_from(x) {
            Ok(u) => Some(u),
            Err(_) => {
                d.error(self.at(key), format!("must be >= 0, got {x}"));
                None
            }
        }
    }

    /// A Go duration string such as `"200ms"` or `"1m30s"`.
    pub fn duration(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<Duration> {
        let v = self.get(key)?;
        let parsed = match v {
            Value::String(s) => parse_go_duration(s),
            _ => Err("must be a duration string such as \"200ms\" or \"60s\"".to_string()),
        };
        match parsed {
            Ok(dur) => Some(dur),
            Err(reason) => {
                d.error(self.at(key), format!("{reason}, got {}", show(v)));
                None
            }
        }
    }

    /// A byte count: an integer or a Kubernetes quantity such as `"10Gi"` or `"500M"`.
    pub fn quantity(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<u64> {
        let v = self.get(key)?;
        let parsed = match v {
            Value::Number(_) => int_of(v)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| {
                    "must be a non-negative integer or a quantity such as \"10Gi\"".to_string()
                }),
            Value::String(s) => parse_quantity(s),
            _ => Err("must be a non-negative integer or a quantity such as \"10Gi\"".to_string()),
        };
        match parsed {
            Ok(q) => Some(q),
            Err(reason) => {
                d.error(self.at(key), format!("{reason}, got {}", show(v)));
                None
            }
        }
    }

    /// A list.
    pub fn list(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<&'a Vec<Value>> {
        let v = self.get(key)?;
        match v {
            Value::Array(items) => Some(items),
            other => {
                d.error(self.at(key), format!("must be a list, got {}", show(other)));
                None
            }
        }
    }

    /// A number in [0, 1].
    pub fn unit_interval(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<f64> {
        let v = self.f64(key, d)?;
        if (0.0..=1.0).contains(&v) {
            Some(v)
        } else {
            d.error(self.at(key), format!("must be in [0, 1], got {v}"));
            None
        }
    }

    /// A number ≥ 0.
    pub fn non_negative(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<f64> {
        let v = self.f64(key, d)?;
        if v >= 0.0 {
            Some(v)
        } else {
            d.error(self.at(key), format!("must be >= 0, got {v}"));
            None
        }
    }

    /// An integer > 0 that fits in 32 bits.
    pub fn positive_u32(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<u32> {
        let v = self.i64(key, d)?;
        if v <= 0 || v > i64::from(u32::MAX) {
            d.error(self.at(key), format!("must be > 0, got {v}"));
            None
        } else {
            Some(v as u32)
        }
    }

    /// An integer > 0.
    pub fn positive_u64(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<u64> {
        let v = self.i64(key, d)?;
        if v <= 0 {
            d.error(self.at(key), format!("must be > 0, got {v}"));
            None
        } else {
            Some(v as u64)
        }
    }
}

/// An integer, also from a float with no fraction (YAML `2.0`).
pub fn int_of(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// Parses Go's `time.ParseDuration` syntax (non-negative only): a sequence of decimal numbers each
/// with a unit `ns`, `us`, `µs`, `ms`, `s`, `m` or `h`; a bare `0` is allowed.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err("must be a non-negative duration such as \"200ms\" or \"1m30s\"".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .map_err(|_| "must be a duration such as \"200ms\" or \"1m30s\"".to_string())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit in duration (use ns, us, ms, s, m or h)".into()),
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} in duration (use ns, us, ms, s, m or h)"
                ));
            }
        };
        total += value * nanos_per;
        rest = next;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err("duration is too large".into());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Parses a Kubernetes quantity into a whole number of units, rounding a fraction up as
/// `Quantity.Value()` does: `"10Gi"`, `"1.5G"`, `"500"`, `"1e3"`.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || "must be a non-negative integer or a quantity such as \"10Gi\"".to_string();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let (num, mult) = suffixes
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
        .unwrap_or((s, 1.0));
    if num.is_empty() || num.starts_with('-') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let total = (value * mult).ceil();
    if !total.is_finite() || total < 0.0 || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total as u64)
}

/// Renders a duration in Go's style (`200ms`, `1m30s`) for the effective-config printer.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns.is_multiple_of(1_000_000_000) {
        let s = ns / 1_000_000_000;
        let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if s > 0 || out.is_empty() {
            out.push_str(&format!("{s}s"));
        }
        out
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("3 days").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(
            parse_go_duration("1x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10Gi"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_quantity("500M"), Ok(500_000_000));
        assert_eq!(parse_quantity("1.5Ki"), Ok(1536));
        assert_eq!(parse_quantity("1e3"), Ok(1000));
        assert_eq!(parse_quantity("42"), Ok(42));
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("ten").is_err());
        assert!(parse_quantity("Gi").is_err());
    }

    #[test]
    fn obj_reports_unknown_fields_and_bad_types() {
        let v = json!({"a": 1, "b": "x", "c": true, "zzz": 0});
        let mut d = Diagnostics::default();
        let mut o = Obj::new("root", Some(&v), &mut d);
        assert_eq!(o.u64("a", &mut d), Some(1));
        assert_eq!(o.u64("b", &mut d), None);
        assert_eq!(o.string("c", &mut d), None);
        o.finish(&mut d);
        let msgs: Vec<String> = d.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            vec![
                "root.b: must be an integer, got \"x\"",
                "root.c: must be a string, got true",
                "root.zzz: unknown field (known fields: a, b, c)",
            ]
        );
    }

    #[test]
    fn obj_rejects_non_mapping_and_accepts_null() {
        let mut d = Diagnostics::default();
        Obj::new("p", Some(&json!([1])), &mut d).finish(&mut d);
        assert_eq!(d.errors[0].to_string(), "p: must be a mapping, got a list");
        let mut d = Diagnostics::default();
        Obj::new("p", Some(&Value::Null), &mut d).finish(&mut d);
        assert!(d.errors.is_empty());
    }

    #[test]
    fn durations_round_trip() {
        for s in ["200ms", "1m30s", "2h", "0s", "15us", "7ns", "1h0m5s"] {
            let d = parse_go_duration(s).unwrap();
            assert_eq!(parse_go_duration(&format_duration(d)).unwrap(), d, "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn show_truncates() {
        let long = Value::String("x".repeat(200));
        assert!(show(&long).ends_with("..."));
        assert!(show(&long).chars().count() <= 80);
    }
}
