//! Arbitrary static endpoints files: parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = switchyard::discovery::parse_static_file(&String::from_utf8_lossy(data));
});
