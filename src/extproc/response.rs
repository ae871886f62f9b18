//! The response side: token usage from JSON bodies and SSE streams, and the rewrite of the model
//! name back to what the client asked for. Both work chunk by chunk and keep what they need across
//! chunk boundaries, so a `data:` line or a `"model":"…"` split by the network is still seen.

use memchr::memmem;
use serde_json::Value;

use crate::scheduling::Usage;

/// Longest SSE line kept across chunks; a longer one is dropped (bounded memory per stream).
const MAX_LINE: usize = 1 << 20;

fn u64_at(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Usage from an OpenAI `usage` object (chat/completions or Responses naming).
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

/// Usage in one JSON document: top-level `usage`, or a Responses-API `response.completed` event.
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

        #[test]
        fn usage_from_json_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = usage_from_json(&data);
        }
    }
}
