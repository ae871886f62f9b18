//! The response side: token usage from JSON bodies and SSE streams, and the rewrite of the model
//! name back to what the client asked for. Both work chunk by chunk and keep what they need across
//! chunk boundaries, so a `data:` line or a `"model":"…"` split by the network is still seen.

use std::borrow::Cow;
use std::fmt;

use memchr::memmem;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::scheduling::Usage;

/// Longest SSE line kept across chunks; a longer one is dropped (bounded memory per stream).
const MAX_LINE: usize = 1 << 20;

// === typed, borrowed reading of usage ===
//
// A document is read in one pass into the few values wanted; everything else is skipped (still
// checked to be JSON). The rules are those of looking keys up in a parsed `serde_json::Value`,
// which this replaces: a repeated key counts with its last value, a number counts only as a
// non-negative integer that fits 64 bits, and a value of the wrong type is as good as absent.
// (One difference: a `Value` refuses documents nested over 128 deep; skipped values have no
// depth limit.)

/// The `visit_*` methods of a visitor for which any value but the one it looks for means
/// "absent": `Default` of its output, after skipping the value.
macro_rules! absent_unless_expected {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// Skips a map's remaining value, or fails; for `visit_map` of a visitor that wants no map.
fn skip_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A non-negative integer; `None` for any other value.
#[derive(Default)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Count, A::Error> {
                skip_map(a)?;
                Ok(Count(None))
            }
            absent_unless_expected!();
        }
        d.deserialize_any(V)
    }
}

/// `cached_tokens` of a `*_details` object; `None` for any other value.
#[derive(Default)]
struct Details(Option<u64>);

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Details;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Details, A::Error> {
                let mut cached = None;
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    if k == "cached_tokens" {
                        cached = a.next_value::<Count>()?.0;
                    } else {
                        a.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Details(cached))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Details, E> {
                Ok(Details(None))
            }
            absent_unless_expected!();
        }
        d.deserialize_any(V)
    }
}

/// An OpenAI `usage` object (chat/completions or Responses naming); `None` for any other value
/// and for an object with neither input nor output tokens.
#[derive(Default)]
struct UsageObject(Option<Usage>);

impl<'de> Deserialize<'de> for UsageObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UsageObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<UsageObject, A::Error> {
                let (mut prompt, mut input, mut completion, mut output) = (None, None, None, None);
                // prompt_tokens_details, prompt_token_details, input_tokens_details: the first
                // with a count wins.
                let mut details: [Option<u64>; 3] = [None; 3];
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    match k.as_ref() {
                        "prompt_tokens" => prompt = a.next_value::<Count>()?.0,
                        "input_tokens" => input = a.next_value::<Count>()?.0,
                        "completion_tokens" => completion = a.next_value::<Count>()?.0,
                        "output_tokens" => output = a.next_value::<Count>()?.0,
                        "prompt_tokens_details" => details[0] = a.next_value::<Details>()?.0,
                        "prompt_token_details" => details[1] = a.next_value::<Details>()?.0,
                        "input_tokens_details" => details[2] = a.next_value::<Details>()?.0,
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let prompt = prompt.or(input);
                let completion = completion.or(output);
                if prompt.is_none() && completion.is_none() {
                    return Ok(UsageObject(None));
                }
                Ok(UsageObject(Some(Usage {
                    prompt_tokens: prompt.unwrap_or(0),
                    completion_tokens: completion.unwrap_or(0),
                    cached_tokens: details.into_iter().flatten().next().unwrap_or(0),
                })))
            }
            fn visit_u64<E>(self, _: u64) -> Result<UsageObject, E> {
                Ok(UsageObject(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<UsageObject, E> {
                Ok(UsageObject(None))
            }
            absent_unless_expected!();
        }
        d.deserialize_any(V)
    }
}

/// What a response document says about usage: its top-level `usage`, its `type` and the
/// `usage` of its `response` object (a Responses-API event).
#[derive(Default)]
struct UsageDocument {
    usage: Option<Usage>,
    completed: bool,
    response_usage: Option<Usage>,
}

/// `response.usage` of a Responses-API event.
#[derive(Default)]
struct ResponseObject(Option<Usage>);

impl<'de> Deserialize<'de> for ResponseObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResponseObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<ResponseObject, A::Error> {
                let mut usage = None;
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    if k == "usage" {
                        usage = a.next_value::<UsageObject>()?.0;
                    } else {
                        a.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ResponseObject(usage))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ResponseObject, E> {
                Ok(ResponseObject(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<ResponseObject, E> {
                Ok(ResponseObject(None))
            }
            absent_unless_expected!();
        }
        d.deserialize_any(V)
    }
}

/// `true` for the string `response.completed`.
#[derive(Default)]
struct Completed(bool);

impl<'de> Deserialize<'de> for Completed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Completed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Completed, E> {
                Ok(Completed(v == "response.completed"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Completed, E> {
                Ok(Completed(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Completed, A::Error> {
                skip_map(a)?;
                Ok(Completed(false))
            }
            absent_unless_expected!();
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for UsageDocument {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UsageDocument;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<UsageDocument, A::Error> {
                let mut doc = UsageDocument::default();
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    match k.as_ref() {
                        "usage" => doc.usage = a.next_value::<UsageObject>()?.0,
                        "type" => doc.completed = a.next_value::<Completed>()?.0,
                        "response" => doc.response_usage = a.next_value::<ResponseObject>()?.0,
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(doc)
            }
            fn visit_u64<E>(self, _: u64) -> Result<UsageDocument, E> {
                Ok(UsageDocument::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<UsageDocument, E> {
                Ok(UsageDocument::default())
            }
            absent_unless_expected!();
        }
        d.deserialize_any(V)
    }
}

/// Usage in one JSON document: top-level `usage`, or a Responses-API `response.completed` event.
/// `None` for a document that is not valid JSON (or not UTF-8) or that carries no usage.
pub fn usage_from_json(doc: &[u8]) -> Option<Usage> {
    let text = simdutf8::basic::from_utf8(doc).ok()?;
    let d: UsageDocument = serde_json::from_str(text).ok()?;
    d.usage
        .or(if d.completed { d.response_usage } else { None })
}

/// Scans an SSE stream for usage, across chunk boundaries. The last usage seen wins, since
/// engines that report usage on every chunk report it cumulatively.
#[derive(Debug, Default)]
pub struct SseUsageScanner {
    carry: Vec<u8>,
    usage: Option<Usage>,
    overlong: bool,
}

impl SseUsageScanner {
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(nl);
            if self.carry.is_empty() {
                if !self.overlong {
                    self.line(line);
                }
            } else {
                self.carry.extend_from_slice(line);
                let full = std::mem::take(&mut self.carry);
                if !self.overlong {
                    self.line(&full);
                }
            }
            self.overlong = false;
            rest = &tail[1..];
        }
        if !rest.is_empty() && !self.overlong {
            if self.carry.len() + rest.len() > MAX_LINE {
                self.carry.clear();
                self.overlong = true;
            } else {
                self.carry.extend_from_slice(rest);
            }
        }
    }

    /// Ends the stream: a last line without a newline still counts.
    pub fn finish(&mut self) {
        if !self.carry.is_empty() {
            let last = std::mem::take(&mut self.carry);
            self.line(&last);
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            return;
        }
        // Only lines that can carry usage are decoded; token chunks are skipped cheaply.
        if memmem::find(data, b"\"usage\"").is_none() {
            return;
        }
        if let Some(u) = usage_from_json(data) {
            self.usage = Some(u);
        }
    }
}

/// Rewrites `"model":"<target>"` (also with a space after the colon) back to the client's model
/// name, holding back a possible partial match at the end of a chunk until the next one.
#[derive(Debug)]
pub struct ModelNameRewriter {
    patterns: [(Vec<u8>, Vec<u8>); 2],
    held: Vec<u8>,
}

impl ModelNameRewriter {
    /// `None` when the names are equal: nothing to rewrite.
    pub fn new(target: &str, incoming: &str) -> Option<Self> {
        if target == incoming {
            return None;
        }
        let t = serde_json::to_string(target).expect("string");
        let i = serde_json::to_string(incoming).expect("string");
        Some(Self {
            patterns: [
                (
                    format!("\"model\":{t}").into_bytes(),
                    format!("\"model\":{i}").into_bytes(),
                ),
                (
                    format!("\"model\": {t}").into_bytes(),
                    format!("\"model\": {i}").into_bytes(),
                ),
            ],
            held: Vec::new(),
        })
    }

    /// Rewrites `chunk`; at the end of the stream nothing is held back.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let data: Vec<u8> = if self.held.is_empty() {
            chunk.to_vec()
        } else {
            let mut d = std::mem::take(&mut self.held);
            d.extend_from_slice(chunk);
            d
        };
        let mut out = Vec::with_capacity(data.len() + 16);
        let mut pos = 0;
        loop {
            let next = self
                .patterns
                .iter()
                .filter_map(|(from, to)| {
                    memmem::find(&data[pos..], from).map(|at| (pos + at, from.len(), to))
                })
                .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, len, to)) => {
                    out.extend_from_slice(&data[pos..at]);
                    out.extend_from_slice(to);
                    pos = at + len;
                }
                None => break,
            }
        }
        let tail = &data[pos..];
        let hold = if end_of_stream {
            0
        } else {
            self.patterns
                .iter()
                .map(|(from, _)| longest_suffix_prefix(tail, from))
                .max()
                .unwrap_or(0)
        };
        out.extend_from_slice(&tail[..tail.len() - hold]);
        self.held = tail[tail.len() - hold..].to_vec();
        out
    }
}

/// Length of the longest proper prefix of `pattern` that ends `data`.
fn longest_suffix_prefix(data: &[u8], pattern: &[u8]) -> usize {
    let max = (pattern.len() - 1).min(data.len());
    (1..=max)
        .rev()
        .find(|&k| data[data.len() - k..] == pattern[..k])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_usage_both_namings() {
        let u = usage_from_json(
            br#"{"object":"text_completion","usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        )
        .unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 7,
                completion_tokens: 3,
                cached_tokens: 4
            }
        );
        let u = usage_from_json(
            br#"{"object":"response","usage":{"input_tokens":5,"output_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                cached_tokens: 0
            }
        );
        let u = usage_from_json(
            br#"{"type":"response.completed","response":{"usage":{"input_tokens":9,"output_tokens":1,"input_tokens_details":{"cached_tokens":8}}}}"#,
        )
        .unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 9,
                completion_tokens: 1,
                cached_tokens: 8
            }
        );
        assert!(usage_from_json(b"no healthy upstream").is_none());
        assert!(usage_from_json(br#"{"usage":null}"#).is_none());
    }

    #[test]
    fn sse_usage_split_across_chunks() {
        let stream = "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        // Every split point gives the same answer.
        for cut in 0..stream.len() {
            let mut s = SseUsageScanner::default();
            s.feed(&stream.as_bytes()[..cut]);
            s.feed(&stream.as_bytes()[cut..]);
            s.finish();
            assert_eq!(
                s.usage(),
                Some(Usage {
                    prompt_tokens: 7,
                    completion_tokens: 2,
                    cached_tokens: 0
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn sse_byte_by_byte_and_crlf_and_no_trailing_newline() {
        let stream = b"data: {}\r\ndata:{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":5}}";
        let mut s = SseUsageScanner::default();
        for b in stream {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.usage(), None, "the last line is not complete yet");
        s.finish();
        assert_eq!(s.usage().unwrap().completion_tokens, 5);
    }

    #[test]
    fn sse_last_usage_wins_and_garbage_is_ignored() {
        let mut s = SseUsageScanner::default();
        s.feed(b"data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n");
        s.feed(b"data: {\"usage\": broken\n");
        s.feed(b"data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\n");
        assert_eq!(s.usage().unwrap().completion_tokens, 9);
    }

    #[test]
    fn sse_overlong_line_is_dropped_not_buffered() {
        let mut s = SseUsageScanner::default();
        let big = vec![b'x'; MAX_LINE / 2 + 1];
        s.feed(b"data: ");
        s.feed(&big);
        s.feed(&big);
        assert!(s.carry.is_empty());
        s.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n");
        assert_eq!(s.usage().unwrap().prompt_tokens, 2);
    }

    #[test]
    fn rewriter_handles_every_split() {
        let body =
            r#"{"id":"x","model":"rewritten-model","choices":[],"x":{"model": "rewritten-model"}}"#;
        let want = r#"{"id":"x","model":"model-to-be-rewritten","choices":[],"x":{"model": "model-to-be-rewritten"}}"#;
        for cut in 0..=body.len() {
            let mut r = ModelNameRewriter::new("rewritten-model", "model-to-be-rewritten").unwrap();
            let mut out = r.feed(&body.as_bytes()[..cut], false);
            out.extend(r.feed(&body.as_bytes()[cut..], true));
            assert_eq!(std::str::from_utf8(&out).unwrap(), want, "cut at {cut}");
        }
    }

    #[test]
    fn rewriter_byte_by_byte_and_noop() {
        let body = br#"data: {"model":"t"}\n\ndata: {"model":"t"}\n\n"#;
        let mut r = ModelNameRewriter::new("t", "client-name").unwrap();
        let mut out = Vec::new();
        for (i, b) in body.iter().enumerate() {
            out.extend(r.feed(std::slice::from_ref(b), i + 1 == body.len()));
        }
        assert_eq!(
            out,
            br#"data: {"model":"client-name"}\n\ndata: {"model":"client-name"}\n\n"#.to_vec()
        );
        assert!(ModelNameRewriter::new("same", "same").is_none());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// The `serde_json::Value` lookups `usage_from_json` used to do, as the reference.
    mod reference {
        use crate::scheduling::Usage;
        use serde_json::Value;

        fn u64_at(v: &Value, key: &str) -> Option<u64> {
            v.get(key).and_then(Value::as_u64)
        }

        fn usage_of(u: &Value) -> Option<Usage> {
            if !u.is_object() {
                return None;
            }
            let prompt = u64_at(u, "prompt_tokens").or_else(|| u64_at(u, "input_tokens"));
            let completion = u64_at(u, "completion_tokens").or_else(|| u64_at(u, "output_tokens"));
            if prompt.is_none() && completion.is_none() {
                return None;
            }
            let cached = [
                "prompt_tokens_details",
                "prompt_token_details",
                "input_tokens_details",
            ]
            .iter()
            .find_map(|k| u.get(*k).and_then(|d| u64_at(d, "cached_tokens")))
            .unwrap_or(0);
            Some(Usage {
                prompt_tokens: prompt.unwrap_or(0),
                completion_tokens: completion.unwrap_or(0),
                cached_tokens: cached,
            })
        }

        pub fn usage_from_json(doc: &[u8]) -> Option<Usage> {
            let v: Value = serde_json::from_slice(doc).ok()?;
            if let Some(u) = v.get("usage").and_then(usage_of) {
                return Some(u);
            }
            if v.get("type").and_then(Value::as_str) == Some("response.completed") {
                return v
                    .get("response")
                    .and_then(|r| r.get("usage"))
                    .and_then(usage_of);
            }
            None
        }
    }

    /// JSON text built from the keys the reader looks for, with values of every type, repeated
    /// keys, and now and then a broken tail.
    fn usage_doc() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("usage"),
            Just("type"),
            Just("response"),
            Just("prompt_tokens"),
            Just("input_tokens"),
            Just("completion_tokens"),
            Just("output_tokens"),
            Just("prompt_tokens_details"),
            Just("prompt_token_details"),
            Just("input_tokens_details"),
            Just("cached_tokens"),
            Just("other"),
        ];
        let leaf = prop_oneof![
            (0u64..50).prop_map(|n| n.to_string()),
            Just("-3".to_string()),
            Just("2.5".to_string()),
            Just("18446744073709551616".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("\"response.completed\"".to_string()),
            Just("\"x\"".to_string()),
            Just("[1,{\"a\":2}]".to_string()),
        ];
        let value = leaf.prop_recursive(4, 40, 6, move |inner| {
            proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                let body: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            })
        });
        (
            value,
            prop_oneof![8 => Just(""), 1 => Just(" x"), 1 => Just("}")],
        )
            .prop_map(|(v, tail)| format!("{v}{tail}"))
    }

    proptest! {
        /// However the network splits a stream, the scanner finds the same usage as in one piece.
        #[test]
        fn sse_usage_is_split_invariant(
            lines in proptest::collection::vec("[ -~]{0,40}", 0..8),
            usage in proptest::option::of((0u64..100_000, 0u64..100_000)),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut text = String::new();
            for l in &lines {
                text.push_str("data: ");
                text.push_str(l);
                text.push('\n');
            }
            if let Some((p, c)) = usage {
                text.push_str(&format!("data: {{\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c}}}}}\n"));
            }
            let bytes = text.as_bytes();
            let mut whole = SseUsageScanner::default();
            whole.feed(bytes);
            whole.finish();
            let mut split = SseUsageScanner::default();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut last = 0;
            for p in points {
                split.feed(&bytes[last..p]);
                last = p;
            }
            split.feed(&bytes[last..]);
            split.finish();
            prop_assert_eq!(whole.usage(), split.usage());
            if let Some((p, c)) = usage {
                prop_assert_eq!(whole.usage(), Some(Usage { prompt_tokens: p, completion_tokens: c, cached_tokens: 0 }));
            }
        }

        /// The rewrite back does not depend on chunk boundaries, and bytes outside the pattern are kept.
        #[test]
        fn model_rewrite_is_split_invariant(
            parts in proptest::collection::vec(prop_oneof![
                Just("\"model\":\"tgt\"".to_string()),
                Just("\"model\": \"tgt\"".to_string()),
                "[ -~]{0,12}",
            ], 0..10),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let text: String = parts.concat();
            let bytes = text.as_bytes();
            let mut one = ModelNameRewriter::new("tgt", "in").unwrap();
            let want = one.feed(bytes, true);
            let mut r = ModelNameRewriter::new("tgt", "in").unwrap();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut got = Vec::new();
            let mut last = 0;
            for p in points {
                got.extend(r.feed(&bytes[last..p], false));
                last = p;
            }
            got.extend(r.feed(&bytes[last..], true));
            prop_assert_eq!(got, want);
        }

        /// The one-pass reader agrees with looking the keys up in a parsed `serde_json::Value`
        /// (the reader it replaced), repeated keys and wrong types included.
        #[test]
        fn usage_reader_agrees_with_value_lookups(doc in usage_doc()) {
            prop_assert_eq!(usage_from_json(doc.as_bytes()), reference::usage_from_json(doc.as_bytes()), "{}", doc);
        }

        #[test]
        fn usage_from_json_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = usage_from_json(&data);
        }
    }
}
