//! OpenAI-style request bodies, parsed once and never re-serialised.
//!
//! The body is decoded a single time into borrowed raw slices. The prompt the prefix index hashes
//! is a zero-copy slice of the body wherever the JSON needs no unescaping, and a model rewrite
//! replaces just the bytes of the `model` value. (The Go EPP decodes every body twice and
//! re-marshals it with sorted keys; on long prompts that is its largest cost.)

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::InferenceError;

/// The API a request path addresses, decided by path suffix in GIE's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Conversations,
    Responses,
    ChatCompletions,
    Completions,
    Embeddings,
}

impl ApiKind {
    pub fn from_path(path: &str) -> Self {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let path = path.trim_end_matches('/');
        if path.ends_with("/conversations") {
            Self::Conversations
        } else if path.ends_with("/responses") {
            Self::Responses
        } else if path.ends_with("/chat/completions") {
            Self::ChatCompletions
        } else if path.ends_with("/embeddings") {
            Self::Embeddings
        } else {
            // `/completions` and anything unknown.
            Self::Completions
        }
    }
}

/// What the request path needs from a body.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedBody {
    pub kind: ApiKind,
    /// The `model` the client asked for.
    pub model: String,
    /// Byte range of the `model` value (quotes included) in the body.
    pub model_span: Range<usize>,
    /// `"stream": true`.
    pub stream: bool,
    pub cache_salt: Option<String>,
    /// Bytes prefix hashing reads; a slice of the body when possible.
    pub prompt: Bytes,
}

/// The fields we look at; everything else is skipped (but still checked to be valid JSON).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    items: Option<&'a RawValue>,
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    cache_salt: Option<&'a RawValue>,
}

/// Where `raw` sits inside `body`: both borrow the same buffer.
fn span_of(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// A JSON string's content: zero-copy when it has no escapes, else unescaped into a buffer of
/// its raw size (escapes only shrink). `None` where serde_json would refuse it as a `String`
/// (a lone UTF-16 surrogate).
fn string_bytes(body: &Bytes, raw: &RawValue) -> Option<Bytes> {
    if !raw.get().starts_with('"') {
        return None;
    }
    let span = span_of(body, raw);
    let inner = span.start + 1..span.end - 1;
    match find_backslash(&body[inner.clone()]) {
        None => Some(body.slice(inner)),
        Some(first) => unescape(&body[inner], first).map(Bytes::from),
    }
}

/// The content of a JSON string that serde_json has already checked (valid UTF-8, valid escape
/// letters and hex digits), `first` being the offset of its first backslash. Surrogate escapes
/// must pair as serde_json requires of a `String`; else `None`.
fn unescape(raw: &[u8], first: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    let mut at = first;
    loop {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        let (&letter, tail) = rest.get(1..)?.split_first()?;
        rest = tail;
        match letter {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let n = hex4(rest)?;
                rest = &rest[4..];
                let c = match n {
                    0xDC00..=0xDFFF => return None,
                    0xD800..=0xDBFF => {
                        let low = rest.strip_prefix(b"\\u").and_then(hex4)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        rest = &rest[6..];
                        0x1_0000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    _ => u32::from(n),
                };
                let c = char::from_u32(c)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            _ => return None,
        }
        match find_backslash(rest) {
            Some(next) => at = next,
            None => {
                out.extend_from_slice(rest);
                return Some(out);
            }
        }
    }
}

/// Offset of the first backslash in `s`. Escapes in prompts come every few dozen bytes (line
/// breaks, quotes), so the first 32 bytes are searched a word at a time, where a vectorised
/// search costs more to set up than it saves; memchr takes over after them.
fn find_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);
    let mut i = 0;
    while i + 8 <= s.len().min(32) {
        let Ok(word) = <[u8; 8]>::try_from(&s[i..i + 8]) else {
            break;
        };
        // A zero byte of `x` is a backslash of `word`; the lowest flagged byte is exact.
        let x = u64::from_le_bytes(word) ^ BACKSLASHES;
        let found = x.wrapping_sub(ONES) & !x & HIGH;
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr(b'\\', &s[i..]).map(|p| i + p)
}

/// The value of four hex digits at the start of `s`.
fn hex4(s: &[u8]) -> Option<u16> {
    s.get(..4)?.iter().try_fold(0u16, |n, &b| {
        let d = (b as char).to_digit(16)?;
        Some(n << 4 | d as u16)
    })
}

fn non_empty_array(raw: &RawValue) -> bool {
    let s = raw.get();
    s.starts_with('[') && s[1..].trim_start() != "]"
}

/// Parses an OpenAI request body for the API named by `path`.
pub fn parse(body: &Bytes, path: &str) -> Result<ParsedBody, InferenceError> {
    let kind = ApiKind::from_path(path);
    // Valid UTF-8 (the rule) is read as text, so serde_json does not check the prompt's UTF-8
    // a second time; anything else is left to serde_json, which decides and words the error as
    // it always did.
    let fields: Result<Fields<'_>, _> = match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    let fields = fields.map_err(|e| {
        InferenceError::bad_request(format!("error unmarshaling request body: {e}"))
    })?;

    let model_raw = fields
        .model
        .filter(|m| m.get().starts_with('"'))
        .ok_or_else(|| InferenceError::bad_request("model not found in request body"))?;
    let model: String = serde_json::from_str(model_raw.get())
        .map_err(|_| InferenceError::bad_request("model not found in request body"))?;
    let model_span = span_of(body, model_raw);

    let prompt = match kind {
        ApiKind::Conversations => match fields.items {
            Some(items) if non_empty_array(items) => body.slice(span_of(body, items)),
            _ => {
                return Err(InferenceError::bad_request(
                    "invalid conversations request: must have valid items field",
                ));
            }
        },
        ApiKind::Responses => {
            let Some(input) = fields.input.filter(|i| !is_null(i)) else {
                return Err(InferenceError::bad_request(
                    "invalid responses request: must have valid input field",
                ));
            };
            // Instructions and tools come before the input in what the model sees, so they are
            // part of the prefix. This API is rare enough that joining them costs nothing.
            let parts: Vec<&RawValue> = [fields.instructions, fields.tools, Some(input)]
                .into_iter()
                .flatten()
                .filter(|r| !is_null(r))
                .collect();
            if parts.len() == 1 {
                body.slice(span_of(body, input))
            } else {
                let mut buf = BytesMut::new();
                for p in parts {
                    buf.extend_from_slice(p.get().as_bytes());
                }
                buf.freeze()
            }
        }
        ApiKind::ChatCompletions => match fields.messages {
            Some(m) if non_empty_array(m) => body.slice(span_of(body, m)),
            _ => {
                return Err(InferenceError::bad_request(
                    "invalid chat completions request: must have valid messages field",
                ));
            }
        },
        ApiKind::Completions => {
            let Some(p) = fields.prompt.filter(|p| !is_null(p)) else {
                return Err(InferenceError::bad_request(
                    "invalid completions request: must have valid prompt field",
                ));
            };
            completion_prompt(body, p).ok_or_else(|| {
                InferenceError::bad_request(
                    "invalid completions request: prompt must be a string, a list of strings or token ids",
                )
            })?
        }
        ApiKind::Embeddings => match fields.input.filter(|i| !is_null(i)) {
            Some(input) => body.slice(span_of(body, input)),
            None => {
                return Err(InferenceError::bad_request(
                    "invalid embeddings request: must have valid input field",
                ));
            }
        },
    };

    let stream = fields.stream.is_some_and(|s| s.get() == "true");
    let cache_salt = fields
        .cache_salt
        .and_then(|s| serde_json::from_str::<String>(s.get()).ok());
    Ok(ParsedBody {
        kind,
        model,
        model_span,
        stream,
        cache_salt,
        prompt,
    })
}

/// `prompt` as GIE hashes it: the text; a list of strings joined with spaces; token ids as written.
fn completion_prompt(body: &Bytes, p: &RawValue) -> Option<Bytes> {
    let s = p.get();
    if s.starts_with('"') {
        return string_bytes(body, p);
    }
    if !s.starts_with('[') {
        return None;
    }
    let items: Vec<&RawValue> = serde_json::from_str(s).ok()?;
    if items.is_empty() {
        return None;
    }
    if items.iter().all(|i| i.get().starts_with('"')) {
        if items.len() == 1 {
            return string_bytes(body, items[0]);
        }
        let mut buf = BytesMut::new();
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                buf.extend_from_slice(b" ");
            }
            buf.extend_from_slice(&string_bytes(body, item)?);
        }
        return Some(buf.freeze());
    }
    // Token ids (or lists of them): hash the JSON as written.
    Some(body.slice(span_of(body, p)))
}

/// The body with its `model` value replaced by `target`; every other byte unchanged.
pub fn rewrite_model(body: &[u8], model_span: &Range<usize>, target: &str) -> Bytes {
    let quoted = serde_json::to_string(target).expect("a string always serialises");
    let mut out = BytesMut::with_capacity(body.len() - model_span.len() + quoted.len());
    out.extend_from_slice(&body[..model_span.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[model_span.end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(body: &str, path: &str) -> Result<ParsedBody, InferenceError> {
        parse(&Bytes::copy_from_slice(body.as_bytes()), path)
    }

    #[test]
    fn path_kinds() {
        assert_eq!(ApiKind::from_path("/v1/completions"), ApiKind::Completions);
        assert_eq!(
            ApiKind::from_path("/v1/chat/completions?x=1"),
            ApiKind::ChatCompletions
        );
        assert_eq!(ApiKind::from_path("/v1/responses"), ApiKind::Responses);
        assert_eq!(
            ApiKind::from_path("/v1/conversations"),
            ApiKind::Conversations
        );
        assert_eq!(ApiKind::from_path("/v1/embeddings/"), ApiKind::Embeddings);
        assert_eq!(ApiKind::from_path("/generate"), ApiKind::Completions);
    }

    #[test]
    fn completion_prompt_is_zero_copy_slice() {
        let body = Bytes::from_static(
            br#"{"max_tokens":100,"model":"m1","prompt":"hello world","temperature":0}"#,
        );
        let r = parse(&body, "/v1/completions").unwrap();
        assert_eq!(r.model, "m1");
        assert_eq!(&body[r.model_span.clone()], br#""m1""#);
        assert_eq!(&r.prompt[..], b"hello world");
        // Same allocation: the prompt points into the body.
        assert!(
            r.prompt.as_ptr() >= body.as_ptr()
                && r.prompt.as_ptr() < body.as_ptr().wrapping_add(body.len())
        );
        assert!(!r.stream);
    }

    #[test]
    fn escaped_prompt_is_unescaped() {
        let r = p(
            r#"{"model":"m","prompt":"a\"b\nc\u00e9"}"#,
            "/v1/completions",
        )
        .unwrap();
        assert_eq!(&r.prompt[..], "a\"b\ncé".as_bytes());
    }

    #[test]
    fn prompt_lists_and_token_ids() {
        let r = p(r#"{"model":"m","prompt":["ab","cd"]}"#, "/v1/completions").unwrap();
        assert_eq!(&r.prompt[..], b"ab cd");
        let r = p(r#"{"model":"m","prompt":[1, 2, 3]}"#, "/v1/completions").unwrap();
        assert_eq!(&r.prompt[..], b"[1, 2, 3]");
        assert_eq!(
            p(r#"{"model":"m","prompt":[]}"#, "/v1/completions")
                .unwrap_err()
                .to_string(),
            "inference error: BadRequest - invalid completions request: prompt must be a string, a list of strings or token ids"
        );
    }

    #[test]
    fn chat_hashes_raw_messages() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"cache_salt":"s1"}"#;
        let r = p(body, "/v1/chat/completions").unwrap();
        assert_eq!(&r.prompt[..], br#"[{"role":"user","content":"hi"}]"#);
        assert!(r.stream);
        assert_eq!(r.cache_salt.as_deref(), Some("s1"));
    }

    #[test]
    fn responses_include_instructions_and_tools() {
        let r = p(
            r#"{"model":"m","instructions":"be brief","input":"q"}"#,
            "/v1/responses",
        )
        .unwrap();
        assert_eq!(&r.prompt[..], br#""be brief""q""#);
        let r = p(
            r#"{"model":"m","input":[{"role":"user"}]}"#,
            "/v1/responses",
        )
        .unwrap();
        assert_eq!(&r.prompt[..], br#"[{"role":"user"}]"#);
    }

    #[test]
    fn errors_have_gie_messages() {
        let cases = [
            (
                r#"{"prompt":"hello world"}"#,
                "/v1/completions",
                "inference error: BadRequest - model not found in request body",
            ),
            (
                r#"{"model":7,"prompt":"x"}"#,
                "/v1/completions",
                "inference error: BadRequest - model not found in request body",
            ),
            (
                r#"{"model":"m"}"#,
                "/v1/completions",
                "inference error: BadRequest - invalid completions request: must have valid prompt field",
            ),
            (
                r#"{"model":"m","messages":[]}"#,
                "/v1/chat/completions",
                "inference error: BadRequest - invalid chat completions request: must have valid messages field",
            ),
            (
                r#"{"model":"m"}"#,
                "/v1/chat/completions",
                "inference error: BadRequest - invalid chat completions request: must have valid messages field",
            ),
            (
                r#"{"model":"m"}"#,
                "/v1/responses",
                "inference error: BadRequest - invalid responses request: must have valid input field",
            ),
            (
                r#"{"model":"m","items":[]}"#,
                "/v1/conversations",
                "inference error: BadRequest - invalid conversations request: must have valid items field",
            ),
            (
                r#"{"model":"m"}"#,
                "/v1/embeddings",
                "inference error: BadRequest - invalid embeddings request: must have valid input field",
            ),
        ];
        for (body, path, want) in cases {
            assert_eq!(p(body, path).unwrap_err().to_string(), want, "{body}");
        }
    }

    #[test]
    fn invalid_json_is_bad_request() {
        let e = p("no healthy upstream", "/v1/completions").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "inference error: BadRequest - error unmarshaling request body: expected ident"
            ),
            "{e}"
        );
        let e = p(r#"{"model":"m","prompt":"x"} trailing"#, "/v1/completions").unwrap_err();
        assert!(e.to_string().contains("trailing characters"), "{e}");
        let e = p("[1,2]", "/v1/completions").unwrap_err();
        assert!(
            e.to_string().contains("error unmarshaling request body"),
            "{e}"
        );
    }

    #[test]
    fn backslashes_are_found_at_every_offset() {
        for len in 0..80 {
            for at in 0..=len {
                let mut s = vec![b'a'; len];
                // Bytes whose difference from a backslash could fool a word-wise search.
                for (i, b) in s.iter_mut().enumerate() {
                    *b = [b'a', b']', b'[', 0xdc, 0x5d][i % 5];
                }
                let want = (at < len).then_some(at);
                if at < len {
                    s[at] = b'\\';
                    if at + 1 < len {
                        s[at + 1] = b'\\';
                    }
                }
                assert_eq!(find_backslash(&s), want, "len {len} at {at}");
            }
        }
    }

    #[test]
    fn invalid_utf8_is_decided_by_serde_json_as_before() {
        // In a field Switchyard reads: refused, with serde_json's words.
        let e = parse(
            &Bytes::from_static(b"{\"model\":\"m\",\"prompt\":\"a\xffb\"}"),
            "/v1/completions",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "inference error: BadRequest - error unmarshaling request body: invalid unicode code point at line 1 column 25"
        );
        // In a field it skips: accepted, as serde_json always did.
        let r = parse(
            &Bytes::from_static(b"{\"model\":\"m\",\"user\":\"\xff\",\"prompt\":\"ab\"}"),
            "/v1/completions",
        )
        .unwrap();
        assert_eq!(&r.prompt[..], b"ab");
    }

    #[test]
    fn rewrite_touches_only_the_model_value() {
        let body = br#"{ "prompt" : "x",  "model":"model-to-be-rewritten", "n":1 }"#;
        let b = Bytes::from_static(body);
        let r = parse(&b, "/v1/completions").unwrap();
        let out = rewrite_model(body, &r.model_span, "rewritten-\"model\"");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "prompt" : "x",  "model":"rewritten-\"model\"", "n":1 }"#
        );
        let again = parse(&out, "/v1/completions").unwrap();
        assert_eq!(again.model, "rewritten-\"model\"");
    }

    #[test]
    fn escaped_model_name_decodes() {
        let r = p(r#"{"model":"a\/b","prompt":"x"}"#, "/v1/completions").unwrap();
        assert_eq!(r.model, "a/b");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic the parser: they parse or give a 400.
        /// The prompt is unescaped exactly as serde_json decodes a `String`, and refused where it
        /// refuses one (surrogates that do not pair).
        #[test]
        fn unescape_agrees_with_serde_json(
            pieces in proptest::collection::vec(prop_oneof![
                "[a-z \u{e9}\u{65e5}]{0,6}",
                Just("\\n".to_string()),
                Just("\\\"".to_string()),
                Just("\\\\".to_string()),
                Just("\\/".to_string()),
                Just("\\b\\f\\r\\t".to_string()),
                any::<u16>().prop_map(|u| format!("\\u{u:04x}")),
                (0xD800u16..0xDC00, 0xDC00u16..0xE000).prop_map(|(h, l)| format!("\\u{h:04X}\\u{l:04x}")),
            ], 0..12),
        ) {
            let raw = format!("\"{}\"", pieces.concat());
            let body = Bytes::from(format!(r#"{{"model":"m","prompt":{raw}}}"#));
            let want = serde_json::from_str::<String>(&raw).ok();
            let got = parse(&body, "/v1/completions").ok().map(|p| p.prompt);
            match want {
                Some(w) if !w.is_empty() => prop_assert_eq!(got.as_deref(), Some(w.as_bytes())),
                Some(_) => {}
                None => prop_assert!(got.is_none(), "{raw}"),
            }
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), path in "[/a-z]{0,24}") {
            let body = Bytes::from(data);
            if let Err(e) = parse(&body, &path) {
                prop_assert_eq!(e.code, crate::extproc::error::Code::BadRequest);
            }
        }

        /// A rewritten body parses back with the new model and the same prompt.
        #[test]
        fn rewrite_round_trips(model in "\\PC{0,16}", target in "\\PC{0,16}", prompt in "\\PC{0,64}") {
            let doc = serde_json::json!({"model": model, "prompt": prompt, "n": 1});
            let body = Bytes::from(serde_json::to_vec(&doc).unwrap());
            let p = parse(&body, "/v1/completions").unwrap();
            prop_assert_eq!(&p.model, &model);
            let out = rewrite_model(&body, &p.model_span, &target);
            let again = parse(&out, "/v1/completions").unwrap();
            prop_assert_eq!(again.model, target);
            prop_assert_eq!(again.prompt, p.prompt);
        }
    }
}
