//! Arbitrary request bodies for every API path: parsing never panics, errors are 400s, and a model
//! rewrite of an accepted body parses back with the new model.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::extproc::error::Code;
use switchyard::extproc::openai::{parse, rewrite_model};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    for path in ["/v1/completions", "/v1/chat/completions", "/v1/responses", "/v1/conversations", "/v1/embeddings"] {
        match parse(&body, path) {
            Ok(p) => {
                let out = rewrite_model(&body, &p.model_span, "fuzz-target");
                let again = parse(&out, path).expect("a rewritten body still parses");
                assert_eq!(again.model, "fuzz-target");
            }
            Err(e) => assert_eq!(e.code, Code::BadRequest),
        }
    }
});
