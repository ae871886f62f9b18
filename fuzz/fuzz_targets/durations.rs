//! Arbitrary strings as the duration and quantity flags and config fields take them: parsing
//! never panics, and a parsed duration renders to text that parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::decode::{format_duration, parse_go_duration, parse_quantity};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(d) = parse_go_duration(&s) {
        assert_eq!(parse_go_duration(&format_duration(d)), Ok(d), "{s:?}");
    }
    let _ = parse_quantity(&s);
});
