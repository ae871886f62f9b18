//! A tolerant, zero-copy parser of the Prometheus text exposition format (0.0.4), as served by
//! vLLM, SGLang, trtllm-serve and Triton on `/metrics`.
//!
//! Why our own: `prometheus-parse` drops every name with a `:` (all of `vllm:*`) and cuts label
//! values at commas; `openmetrics-parser` fails a whole scrape on one odd line (see DESIGN.md).
//!
//! What it accepts: names with `:`; label values with `\\`, `\"` and `\n` escapes and any other
//! bytes (commas, `=`, `}`) inside the quotes; a trailing comma in the label set; `NaN`, `+Inf`,
//! `-Inf`; an optional integer timestamp; untyped samples; `# HELP` / `# TYPE` anywhere; CRLF line
//! ends; blank lines and leading blanks. A line that does not parse is skipped and counted in
//! [`ParseStats::bad_lines`]; it never fails the parse.
//!
//! Cost: the caller's [`Visitor::wants`] sees each sample's name before anything else is parsed,
//! so samples of families nobody asked for cost a newline search and a name scan, and nothing is
//! allocated. Names and label values are borrowed from the input; a label value is unescaped
//! (allocated) only when it contains a backslash and someone reads it.

use std::borrow::Cow;

/// The declared type of a family (`# TYPE name <type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"counter" => Self::Counter,
            b"gauge" => Self::Gauge,
            b"histogram" | b"gaugehistogram" => Self::Histogram,
            b"summary" => Self::Summary,
            b"untyped" | b"unknown" | b"info" | b"stateset" => Self::Untyped,
            _ => return None,
        })
    }
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The text between the braces, already validated; read it with [`Sample::labels`].
    labels: &'a str,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries one.
    pub timestamp: Option<i64>,
}

impl<'a> Sample<'a> {
    /// The labels in exposition order.
    pub fn labels(&self) -> Labels<'a> {
        Labels {
            rest: self.labels.as_bytes(),
            src: self.labels,
            pos: 0,
        }
    }

    /// The value of label `key`, unescaped.
    pub fn label(&self, key: &str) -> Option<Cow<'a, str>> {
        self.labels().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Whether label `key` is present with exactly `value` (compared after unescaping).
    pub fn has_label(&self, key: &str, value: &str) -> bool {
        self.labels().any(|(k, v)| k == key && v == value)
    }
}

/// Iterator over a sample's `(name, value)` label pairs. The label text was validated when the
/// sample was parsed, so iteration cannot fail.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    src: &'a str,
    rest: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        let mut i = self.pos;
        i = skip_blanks(b, i);
        if i < b.len() && b[i] == b',' {
            i = skip_blanks(b, i + 1);
        }
        if i >= b.len() {
            return None;
        }
        let name_start = i;
        while i < b.len() && is_label_char(b[i]) {
            i += 1;
        }
        let key = &self.src[name_start..i];
        i = skip_blanks(b, i);
        debug_assert_eq!(b.get(i), Some(&b'='));
        i = skip_blanks(b, i + 1);
        debug_assert_eq!(b.get(i), Some(&b'"'));
        let (end, escaped) = quoted_end(b, i + 1)?;
        let raw = &self.src[i + 1..end];
        self.pos = end + 1;
        let value = if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        Some((key, value))
    }
}

/// What the parser saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Non-blank lines, comments included.
    pub lines: usize,
    /// Samples handed to the visitor.
    pub samples: usize,
    /// Samples of families the visitor did not want (not parsed beyond their name).
    pub skipped: usize,
    /// Lines that did not parse (a bad name anywhere; anything malformed in a wanted sample).
    pub bad_lines: usize,
}

/// Receives what the parser finds. Only [`Visitor::wants`] and [`Visitor::sample`] are required.
pub trait Visitor<'a> {
    /// Whether the samples (and `# TYPE`) of the metric named `name` are of interest. Must give the
    /// same answer for the same name throughout a parse (runs of a declined name are skipped).
    fn wants(&mut self, name: &str) -> bool;
    fn sample(&mut self, sample: Sample<'a>);
    /// A `# TYPE` line for a wanted name.
    fn type_hint(&mut self, _name: &'a str, _ty: MetricType) {}
}

/// Parses `input`, feeding wanted samples to `visitor`. Never fails; see [`ParseStats`].
pub fn parse<'a, V: Visitor<'a>>(input: &'a [u8], visitor: &mut V) -> ParseStats {
    let mut stats = ParseStats::default();
    let mut start = 0;
    let mut declined: &[u8] = &[];
    while start < input.len() {
        let end = memchr::memchr(b'\n', &input[start..]).map_or(input.len(), |i| start + i);
        let mut line = &input[start..end];
        start = end + 1;
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let i = skip_blanks(line, 0);
        if i == line.len() {
            continue;
        }
        stats.lines += 1;
        let line = &line[i..];
        if line[0] == b'#' {
            if comment(line, visitor).is_err() {
                stats.bad_lines += 1;
            }
            continue;
        }
        // Fast path: another sample of the family just declined (histogram buckets come in runs).
        let n = declined.len();
        if n > 0
            && line.len() > n
            && line.starts_with(declined)
            && matches!(line[n], b'{' | b' ' | b'\t')
        {
            stats.skipped += 1;
            continue;
        }
        match sample_line(line, visitor) {
            Line::Sample(s) => {
                stats.samples += 1;
                visitor.sample(s);
            }
            Line::Declined(name_len) => {
                stats.skipped += 1;
                declined = &line[..name_len];
            }
            Line::Bad => stats.bad_lines += 1,
        }
    }
    stats
}

/// A visitor that wants everything and keeps every sample; for tests, fuzzing and tools.
#[derive(Debug, Default)]
pub struct CollectAll<'a> {
    pub samples: Vec<Sample<'a>>,
    pub types: Vec<(&'a str, MetricType)>,
}

impl<'a> Visitor<'a> for CollectAll<'a> {
    fn wants(&mut self, _name: &str) -> bool {
        true
    }
    fn sample(&mut self, sample: Sample<'a>) {
        self.samples.push(sample);
    }
    fn type_hint(&mut self, name: &'a str, ty: MetricType) {
        self.types.push((name, ty));
    }
}

/// Parses everything; returns the samples and the stats.
pub fn parse_all(input: &[u8]) -> (CollectAll<'_>, ParseStats) {
    let mut c = CollectAll::default();
    let stats = parse(input, &mut c);
    (c, stats)
}

// === lines ===

/// `# TYPE name type`, `# HELP name text`, or any other comment (ignored). Only a TYPE line with a
/// bad name or unknown type for a wanted family is an error.
fn comment<'a, V: Visitor<'a>>(line: &'a [u8], visitor: &mut V) -> Result<(), ()> {
    let i = skip_blanks(line, 1);
    let Some(rest) = line[i..].strip_prefix(b"TYPE") else {
        return Ok(());
    };
    let i = skip_blanks(rest, 0);
    if i == 0 {
        return Ok(()); // "# TYPEfoo": a plain comment
    }
    let (name, n) = metric_name(rest, i).ok_or(())?;
    if !visitor.wants(name) {
        return Ok(());
    }
    let t = skip_blanks(rest, n);
    let mut e = t;
    while e < rest.len() && !is_blank(rest[e]) {
        e += 1;
    }
    if skip_blanks(rest, e) != rest.len() {
        return Err(());
    }
    let ty = MetricType::parse(&rest[t..e]).ok_or(())?;
    visitor.type_hint(name, ty);
    Ok(())
}

enum Line<'a> {
    Sample(Sample<'a>),
    /// Not wanted; the name is this long.
    Declined(usize),
    Bad,
}

/// A sample line.
fn sample_line<'a, V: Visitor<'a>>(line: &'a [u8], visitor: &mut V) -> Line<'a> {
    match sample_fields(line, visitor) {
        Ok(Ok(s)) => Line::Sample(s),
        Ok(Err(name_len)) => Line::Declined(name_len),
        Err(()) => Line::Bad,
    }
}

/// `Ok(Err(name_len))` when the visitor does not want the sample.
#[allow(clippy::type_complexity)]
fn sample_fields<'a, V: Visitor<'a>>(
    line: &'a [u8],
    visitor: &mut V,
) -> Result<Result<Sample<'a>, usize>, ()> {
    let (name, mut i) = metric_name(line, 0).ok_or(())?;
    match line.get(i) {
        Some(b'{') | Some(b' ') | Some(b'\t') => {}
        _ => return Err(()),
    }
    if !visitor.wants(name) {
        return Ok(Err(i));
    }
    let mut labels = "";
    i = skip_blanks(line, i);
    if line.get(i) == Some(&b'{') {
        let close = label_set_end(line, i + 1).ok_or(())?;
        labels = std::str::from_utf8(&line[i + 1..close]).map_err(|_| ())?;
        i = close + 1;
    }
    // Go's expfmt accepts `name{...}value` without a blank; so do we.
    let v = skip_blanks(line, i);
    let mut e = v;
    while e < line.len() && !is_blank(line[e]) {
        e += 1;
    }
    let value = parse_value(&line[v..e]).ok_or(())?;
    let t = skip_blanks(line, e);
    let mut timestamp = None;
    if t < line.len() {
        let mut te = t;
        while te < line.len() && !is_blank(line[te]) {
            te += 1;
        }
        if skip_blanks(line, te) != line.len() {
            return Err(());
        }
        let ts = std::str::from_utf8(&line[t..te]).map_err(|_| ())?;
        timestamp = Some(ts.parse::<i64>().map_err(|_| ())?);
    }
    Ok(Ok(Sample {
        name,
        labels,
        value,
        timestamp,
    }))
}

/// A metric name starting at `i`: `[a-zA-Z_:][a-zA-Z0-9_:]*`. Returns it and the index after it.
fn metric_name(b: &[u8], i: usize) -> Option<(&str, usize)> {
    let first = *b.get(i)?;
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b':') {
        return None;
    }
    let mut e = i + 1;
    while e < b.len() && is_metric_char(b[e]) {
        e += 1;
    }
    // ASCII by construction.
    std::str::from_utf8(&b[i..e]).ok().map(|s| (s, e))
}

/// Validates a label set starting just after `{`; returns the index of the closing `}`.
fn label_set_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = skip_blanks(b, i);
        match *b.get(i)? {
            b'}' => return Some(i),
            c if c.is_ascii_alphabetic() || c == b'_' => {}
            _ => return None,
        }
        while i < b.len() && is_label_char(b[i]) {
            i += 1;
        }
        i = skip_blanks(b, i);
        if *b.get(i)? != b'=' {
            return None;
        }
        i = skip_blanks(b, i + 1);
        if *b.get(i)? != b'"' {
            return None;
        }
        let (end, _) = quoted_end(b, i + 1)?;
        i = skip_blanks(b, end + 1);
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => return Some(i),
            _ => return None,
        }
    }
}

/// The index of the closing quote of a value starting at `i`, and whether it has escapes.
fn quoted_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        let j = memchr::memchr2(b'"', b'\\', &b[i..])? + i;
        if b[j] == b'"' {
            return Some((j, escaped));
        }
        escaped = true;
        if j + 1 >= b.len() {
            return None;
        }
        i = j + 2;
    }
}

/// `\\` → `\`, `\"` → `"`, `\n` → newline; any other escaped character is kept as is.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A sample value: a float, `NaN`, `+Inf`, `-Inf` (Rust's float syntax accepts these, in any case).
fn parse_value(b: &[u8]) -> Option<f64> {
    if b.is_empty() {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse::<f64>().ok()
}

/// Bit 0: may continue a label name (`[a-zA-Z0-9_]`); bit 1: may continue a metric name (also `:`).
static NAME_CHARS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b == b'_' {
            t[c] = 3;
        } else if b == b':' {
            t[c] = 2;
        }
        c += 1;
    }
    t
};

#[inline]
fn is_label_char(c: u8) -> bool {
    NAME_CHARS[c as usize] & 1 != 0
}

#[inline]
fn is_metric_char(c: u8) -> bool {
    NAME_CHARS[c as usize] & 2 != 0
}

#[inline]
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

#[inline]
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
